"""Platform settings: where Tradewind keeps its data and which engines it talks to.

`mode: embedded` (the default) keeps everything in local files: SQLite for the Feast online store
and MLflow, parquet for the offline store, local Ray. `mode: scaleout` points the same code at
Redis, PostgreSQL and a Ray cluster. Nothing else in the code branches on the mode.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from configs import StrictModel, data_home, load_config, validate_config


class MlflowSettings(StrictModel):
    tracking_uri: str | None = None
    experiment: str = "tradewind"


class ScaleoutSettings(StrictModel):
    redis_url: str = "127.0.0.1:6379"
    # the Feast SQL registry's database
    postgres_url: str = "postgresql+psycopg://tradewind:tradewind@127.0.0.1:5432/tradewind"
    # the MLflow tracking server's backend store (`mlflow server --backend-store-uri`): a database
    # of its own, beside the registry's
    mlflow_backend_store_uri: str = "postgresql+psycopg://tradewind:tradewind@127.0.0.1:5432/tradewind_mlflow"
    mlflow_tracking_uri: str = "http://127.0.0.1:5000"
    ray_address: str = "auto"


class Settings(StrictModel):
    mode: Literal["embedded", "scaleout"] = "embedded"
    data_dir: Path = Path("data")
    mlflow: MlflowSettings = MlflowSettings()
    scaleout: ScaleoutSettings = ScaleoutSettings()

    @property
    def root(self) -> Path:
        """The data folder, absolute: relative paths count from the project root in a checkout,
        from the user's data folder when installed (`configs.data_home`)."""
        path = self.data_dir if self.data_dir.is_absolute() else data_home() / self.data_dir
        return path.resolve()

    def for_dataset(self, name: str) -> Settings:
        """A workspace of its own for a real data set, so it never mixes with the simulator's."""
        return self.model_copy(update={"data_dir": self.root / "datasets" / name})

    @property
    def raw_dir(self) -> Path:
        """Files as they arrive (simulator output, real-data loaders), before validation."""
        return self.root / "raw"

    @property
    def contract_dir(self) -> Path:
        """Validated contract tables: what every pipeline reads."""
        return self.root / "contract"

    @property
    def quarantine_dir(self) -> Path:
        """Rejected rows with their reason, one file per table."""
        return self.root / "quarantine"

    @property
    def truth_dir(self) -> Path:
        """The simulator's ground truth: for evaluation only, never a feature."""
        return self.root / "ground_truth"

    @property
    def feature_dir(self) -> Path:
        """Feature tables (parquet) that Feast's offline store reads."""
        return self.root / "features"

    @property
    def feast_dir(self) -> Path:
        """Feast's registry and SQLite online store in embedded mode."""
        return self.root / "feast"

    @property
    def mlflow_tracking_uri(self) -> str:
        if os.environ.get("MLFLOW_TRACKING_URI"):
            return os.environ["MLFLOW_TRACKING_URI"]
        if self.mlflow.tracking_uri:
            return self.mlflow.tracking_uri
        if self.mode == "scaleout":
            return self.scaleout.mlflow_tracking_uri
        return f"sqlite:///{self.root / 'mlflow' / 'mlflow.db'}"

    @property
    def ray_address(self) -> str | None:
        """The Ray cluster that training and serving use: `scaleout.ray_address` in scale-out mode,
        None in embedded mode (each run starts a local Ray of its own)."""
        return self.scaleout.ray_address if self.mode == "scaleout" else None

    @property
    def mlflow_artifact_root(self) -> Path:
        return self.root / "mlflow" / "artifacts"


def load_settings(path: str | Path = "platform") -> Settings:
    """Read `configs/platform.yaml`; TRADEWIND_DATA_DIR and TRADEWIND_MODE override the file."""
    settings = load_config(path, Settings)
    overrides: dict[str, object] = {}
    if os.environ.get("TRADEWIND_DATA_DIR"):
        overrides["data_dir"] = Path(os.environ["TRADEWIND_DATA_DIR"])
    if os.environ.get("TRADEWIND_MODE"):
        overrides["mode"] = os.environ["TRADEWIND_MODE"]
    if overrides:
        source = f"{path} with environment overrides ({', '.join(f'{k}={v}' for k, v in overrides.items())})"
        settings = validate_config({**settings.model_dump(), **overrides}, Settings, source)
    return settings
