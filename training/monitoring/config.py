"""configs/monitoring.yaml, validated: windows, PSI settings, thresholds, live-accuracy settings."""

from __future__ import annotations

from pydantic import Field, model_validator

from configs import StrictModel, load_config

CONFIG_NAME = "monitoring"


class Windows(StrictModel):
    current_days: int = Field(7, ge=1)
    reference_days: int = Field(28, ge=1)


class PsiSettings(StrictModel):
    bins: int = Field(10, ge=2, le=100)
    epsilon: float = Field(1e-4, gt=0.0, lt=0.01)
    min_rows: int = Field(200, ge=1)
    max_rows: int = Field(200_000, ge=100)


class PsiThresholds(StrictModel):
    warn: float = Field(0.1, gt=0.0)
    alert: float = Field(0.25, gt=0.0)

    @model_validator(mode="after")
    def _ordered(self) -> PsiThresholds:
        if self.alert < self.warn:
            raise ValueError(f"alert ({self.alert}) must not be below warn ({self.warn})")
        return self


class Thresholds(StrictModel):
    feature_psi: PsiThresholds = PsiThresholds()
    prediction_psi: PsiThresholds = PsiThresholds()
    error_change: float = Field(0.10, gt=0.0)


class LiveSettings(StrictModel):
    min_observations: int = Field(100, ge=1)
    max_users: int = Field(400, ge=1)
    seed: int = 0


class MonitoringConfig(StrictModel):
    windows: Windows = Windows()
    psi: PsiSettings = PsiSettings()
    thresholds: Thresholds = Thresholds()
    live: LiveSettings = LiveSettings()


def load_monitoring_config(path: str | None = None) -> MonitoringConfig:
    return load_config(path or CONFIG_NAME, MonitoringConfig)
