"""Tradewind's Ray Serve application: /recommend, /forecast, /bid from the MLflow registry.

- `serving.app`: the FastAPI ingress, one deployment per endpoint, the bare echo, app builders;
- `serving.registry_models`: models by alias, polled and hot-swapped after a smoke request;
- `serving.online`: Feast online features per replica, one lookup per batch;
- `serving.pacing`: per-campaign budget state (SQLite embedded, Redis scale-out), atomic;
- `serving.reference`: markets and campaigns cached per replica, refreshed in the background;
- `serving.settings` / `serving.deploy`: configs/serving.yaml, validated, and started locally;
- `serving.demo`: what `tradewind demo` ends with.
"""
