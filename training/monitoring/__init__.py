"""Drift and live-accuracy monitoring of the serving champions: `tradewind monitor MODEL`.

- `psi`: the population stability index, once for features and predictions;
- `drift`: PSI of every feature of a family's Feast feature service, latest window vs the one before;
- `live`: per family, what the champion predicts now (prediction drift) and its error on the actuals
  that arrived since it was trained (live accuracy);
- `monitor`: the two together, the retrain decision and its reasons, one MLflow run per call.

Thresholds and windows: configs/monitoring.yaml.
"""

from training.monitoring.config import MonitoringConfig, load_monitoring_config
from training.monitoring.monitor import MonitorResult, NoChampion, monitor

__all__ = ["MonitorResult", "MonitoringConfig", "NoChampion", "load_monitoring_config", "monitor"]
