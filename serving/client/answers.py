"""The typed answers the client parses: defined once, in `serving/responses.py` (the OpenAPI
document declares the same models)."""

from serving.responses import (
    Answer,
    Bid,
    CampaignDay,
    EndpointStatus,
    Forecast,
    ForecastPoint,
    Health,
    ModelsStatus,
    Pacing,
    Reason,
    Recommendation,
    RecommendedItem,
    ServedBy,
    ServedVariant,
)

__all__ = [
    "Answer",
    "Bid",
    "CampaignDay",
    "EndpointStatus",
    "Forecast",
    "ForecastPoint",
    "Health",
    "ModelsStatus",
    "Pacing",
    "Reason",
    "Recommendation",
    "RecommendedItem",
    "ServedBy",
    "ServedVariant",
]
