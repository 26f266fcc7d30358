"""Client for the served recommender: numpy + tritonclient only (no torch/NVTabular)."""
from .grpc_client import (AsyncRecommenderClient, Recommendation, RecommendationError,
                          RecommenderClient, build_inputs, format_table)

__all__ = ["RecommenderClient", "AsyncRecommenderClient", "Recommendation", "RecommendationError",
           "format_table", "build_inputs"]
