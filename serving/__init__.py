"""Tradewind's Ray Serve application: /recommend, /forecast, /bid from the MLflow registry.

- `serving.app`: the application builders (the import paths of configs/serving.yaml) and the bare echo;
- `serving.endpoints`: one deployment per family (`Recommender`, `Forecaster`, `Bidder`) on one base;
- `serving.ingress`: the FastAPI ingress: routes, one error shape, metrics;
- `serving.registry_models`: models by alias, polled and hot-swapped after a smoke request;
- `serving.online`: Feast online features per replica, one lookup per batch;
- `serving.pacing`: per-campaign budget state (SQLite embedded, Redis scale-out), atomic;
- `serving.reference`: markets and campaigns cached per replica, refreshed in the background;
- `serving.settings` / `serving.deploy`: configs/serving.yaml, validated, and started locally;
- `serving.demo`: what `tradewind demo` ends with.
"""
