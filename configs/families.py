"""The one name of each model family, and everything derived from it.

`recommender`, `forecaster` and `bidder` are the CLI nouns; the registered model, the config file,
the Feast feature service, the MLflow family tag and the Serve deployment are spelled from them
here and nowhere else. The HTTP endpoint is the family's verb (`/recommend`), declared once beside
the name because clients call it.
"""

from __future__ import annotations

from dataclasses import dataclass

REGISTERED_MODEL_PREFIX = "tradewind-"


@dataclass(frozen=True)
class FamilyName:
    name: str  # the CLI noun: tradewind train <name>
    endpoint: str  # POST /<endpoint>
    domain: str  # models/<domain>/: the family's algorithms and its served model

    @property
    def registered_model(self) -> str:
        return REGISTERED_MODEL_PREFIX + self.name

    @property
    def config_name(self) -> str:
        """configs/<config_name>.yaml"""
        return self.name

    @property
    def feature_service(self) -> str:
        return self.name

    @property
    def tracking_tag(self) -> str:
        return self.name

    @property
    def deployment(self) -> str:
        """The Ray Serve deployment's name."""
        return self.name.capitalize()


RECOMMENDER = FamilyName("recommender", endpoint="recommend", domain="recommendation")
FORECASTER = FamilyName("forecaster", endpoint="forecast", domain="forecasting")
BIDDER = FamilyName("bidder", endpoint="bid", domain="bidding")

FAMILY_NAMES: dict[str, FamilyName] = {family.name: family for family in (RECOMMENDER, FORECASTER, BIDDER)}
BY_ENDPOINT: dict[str, FamilyName] = {family.endpoint: family for family in FAMILY_NAMES.values()}
