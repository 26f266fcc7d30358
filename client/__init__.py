"""Client for the served recommender: numpy + tritonclient.grpc only (no torch/NVTabular)."""
from .grpc_client import Recommendation, RecommendationError, RecommenderClient, format_table

__all__ = ["RecommenderClient", "Recommendation", "RecommendationError", "format_table"]
