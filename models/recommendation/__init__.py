"""Recommendation: retrieval (baselines, two-tower), LightGBM re-ranking, cold start, serving rules.

Every model follows one interface (`Recommender`): `fit(interactions) -> self`,
`score(user_idx) -> users x items`, `recommend(user_idx, k, exclude) -> item indices`. Nothing
here knows about MLflow, Feast or Ray.

Tradewind's own model is one retrieve-and-rank stack (`retrieval.py`: retrievers, candidates,
back-fill) with the LambdaRank ranker (`ranker.py`): served as `served.ServedRecommender`, trained by
training/recommender/, and fitted on interactions alone by `hybrid.RerankedHybrid` (the benchmarks).
"""

from models.recommendation.base import NO_ITEM, Recommender, top_k_items
from models.recommendation.baselines import EASE, ItemKNN, MostPopular
from models.recommendation.candidate_index import CandidateIndex, ExactCandidateIndex
from models.recommendation.cold_start import AttributeSimilarity, PopularInMarket
from models.recommendation.hybrid import RerankedHybrid
from models.recommendation.interactions import Interactions
from models.recommendation.ranker import LambdaRankRanker
from models.recommendation.rules import ServingRules

# the two-tower model imports torch (a second or more); import it from its module when needed:
# from models.recommendation.two_tower import TwoTower, TwoTowerConfig

__all__ = [
    "EASE",
    "NO_ITEM",
    "AttributeSimilarity",
    "CandidateIndex",
    "ExactCandidateIndex",
    "Interactions",
    "ItemKNN",
    "LambdaRankRanker",
    "MostPopular",
    "PopularInMarket",
    "Recommender",
    "RerankedHybrid",
    "ServingRules",
    "top_k_items",
]
