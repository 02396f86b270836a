"""The demand forecasting family: `tradewind train forecaster` and `tradewind tune forecaster`.

Units per product x market per market-local day are forecast `horizon` days ahead: the
`series.top_n` biggest sellers by the global LightGBM (`models.forecasting.GlobalLightGBM`: direct
horizon buckets, Tweedie, conformal quantiles), every other listed series by seasonal naive, so
serving knows every listed pair. Where each job lives:

- `config.py`: the validated YAML config (`configs/forecaster.yaml`), `ForecasterConfig`.
- `data.py`: the training set from the contract (daily units on a gap-free grid, price, promotion,
  FX, category, holidays; cut at the last day over in every market), lineage, the oracle's truth.
- `fit.py`: the rolling-origin backtest (what tuning reports), the final fit, the served model;
  the Ray executor for Prophet.
- `evaluate.py`: baselines (seasonal naive, the oracle, Prophet on Ray), breakdowns, reconciled
  errors, holiday and last-fold figures, feature contributions.
- `gate.py`: the retraining gate: the champion's served forecasts against the challenger's
  procedure refit at the champion's origin, on the days since.
- `monitor.py`: the champion's live accuracy and prediction drift.
- `family.py`: `FAMILY`, the record the train/tune flow, retraining, monitoring and the CLI use.

The served model (`models.forecasting.served.ServedForecaster`) lives with the model: it holds the
forecast from the last origin, so `answer` slices arrays.
"""
