"""The recommender's YAML config (configs/recommender.yaml), validated: data and splits, retrieval,
the LambdaRank ranker, serve-time rules and evaluation."""

from __future__ import annotations

from pydantic import Field

from configs import StrictModel


class EventWeightsConfig(StrictModel):
    purchase: float = Field(1.0, gt=0)
    add_to_cart: float = Field(0.0, ge=0)
    view: float = Field(0.0, ge=0)


class DataConfig(StrictModel):
    event_weights: EventWeightsConfig = EventWeightsConfig()
    holdout_days: int = Field(28, ge=1)
    ranker_label_days: int = Field(28, ge=1)
    validation_share: float = Field(0.2, gt=0, lt=1)
    max_label_users: int | None = Field(4000, ge=10)


class TwoTowerRetrieverConfig(StrictModel):
    enabled: bool = False
    epochs: int = Field(4, ge=1)
    embedding_dim: int = Field(32, ge=4)
    temperature: float = Field(0.2, gt=0)


class RetrievalConfig(StrictModel):
    candidates_per_retriever: int = Field(40, ge=1)
    ease_l2: float = Field(200.0, gt=0)
    knn_neighbours: int = Field(100, ge=1)
    popular_half_life_days: float = Field(30.0, gt=0)
    content: bool = True
    two_tower: TwoTowerRetrieverConfig = TwoTowerRetrieverConfig()


class RankerConfig(StrictModel):
    n_estimators: int = Field(100, ge=1)
    learning_rate: float = Field(0.08, gt=0)
    num_leaves: int = Field(15, ge=2)
    min_child_samples: int = Field(50, ge=1)
    monotone_retrieval: bool = True
    report_every: int = Field(10, ge=1)


class ServingConfig(StrictModel):
    default_k: int = Field(10, ge=1)
    max_per_category: int | None = Field(None, ge=1)


class EvaluationConfig(StrictModel):
    k: int = Field(10, ge=1)
    curve_max_k: int = Field(50, ge=1)
    oracle: bool = True


class RecommenderConfig(StrictModel):
    data: DataConfig = DataConfig()
    retrieval: RetrievalConfig = RetrievalConfig()
    ranker: RankerConfig = RankerConfig()
    serving: ServingConfig = ServingConfig()
    evaluation: EvaluationConfig = EvaluationConfig()
    threads: int = Field(1, ge=1)
    seed: int = 42
