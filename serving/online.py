"""Online features from the Feast online store, one `FeatureStore` per replica.

A batch of requests becomes one `get_online_features` call per feature service (the entity rows
of all requests together); each request gets back its own slice of the columns, named
`<view>__<feature>` as in training. Feature service definitions are read from the Feast registry
once and kept (they only change with `feast apply`).
"""

from __future__ import annotations

import threading
from typing import Any

from configs.settings import Settings


class OnlineFeatures:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._store: Any = None
        self._services: dict[str, Any] = {}
        self._lock = threading.Lock()

    def _service(self, name: str) -> Any:
        with self._lock:
            if self._store is None:
                from features.store import feature_store

                self._store = feature_store(self.settings)
            if name not in self._services:
                self._services[name] = self._store.get_feature_service(name)
            return self._store, self._services[name]

    def fetch(self, service_name: str, entity_rows: list[dict[str, Any]]) -> dict[str, list[Any]]:
        from features.store import online_features

        store, service = self._service(service_name)
        return online_features(self.settings, service, entity_rows, store=store)

    def fetch_many(
        self, service_name: str, requests_rows: list[list[dict[str, Any]]]
    ) -> list[dict[str, list[Any]]]:
        """One Feast call for the entity rows of several requests; each request's own columns back."""
        rows = [row for request_rows in requests_rows for row in request_rows]
        if not rows:
            return [{} for _ in requests_rows]
        columns = self.fetch(service_name, rows)
        sliced, start = [], 0
        for request_rows in requests_rows:
            end = start + len(request_rows)
            sliced.append({name: values[start:end] for name, values in columns.items()})
            start = end
        return sliced
