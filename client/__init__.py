"""Client for the served recommender: numpy + tritonclient + tenacity only (no torch/NVTabular)."""
from .connection import TLS, RetryPolicy
from .control import ModelControl, ModelControlError
from .grpc_client import (AsyncRecommenderClient, Recommendation, RecommendationError,
                          RecommenderClient, build_inputs, format_table)

__all__ = ["RecommenderClient", "AsyncRecommenderClient", "Recommendation", "RecommendationError",
           "format_table", "build_inputs", "ModelControl", "ModelControlError", "RetryPolicy", "TLS"]
