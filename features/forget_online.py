"""The Feast online store's part of forgetting a user: find and delete the user's entity keys.

Feast 0.67 has no API that deletes one entity, only whole tables or every key of a join-key set: the
keys are found and deleted through Feast's own store object (its SQLite connection or Redis client)
and Feast's entity key encoding. `features/forget.py` runs it as one step of `forget_user`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

from configs.settings import Settings

USER_COLUMN = "user_id"  # the join key that names a user in every user-keyed feature view


def _glob_escape(raw: bytes) -> bytes:
    return re.sub(rb"([*?\[\]\\])", rb"\\\1", raw)


class OnlineStoreKeys:
    """The user's entity keys in one feature view of the online store, found and deleted through
    the store object Feast itself uses (its SQLite connection or Redis client) and Feast's key format."""

    def __init__(self, store: Any, view: Any, online: Any | None = None) -> None:
        from feast.infra.provider import get_provider

        self.store = store  # feast.FeatureStore
        self.view = view  # feast.FeatureView
        # one store object (one connection) for finding and deleting, shareable across views
        self.online = online if online is not None else get_provider(store.config).online_store

    def _user_value(self, user_id: str) -> bytes:
        """How Feast encodes the user id inside any entity key (type, length, bytes)."""
        from feast.infra.key_encoding_utils import serialize_entity_key, serialize_entity_key_prefix
        from feast.protos.feast.types.EntityKey_pb2 import EntityKey
        from feast.protos.feast.types.Value_pb2 import Value

        version = self.store.config.entity_key_serialization_version
        alone = serialize_entity_key(
            EntityKey(join_keys=[USER_COLUMN], entity_values=[Value(string_val=user_id)]), version
        )
        return alone[len(serialize_entity_key_prefix([USER_COLUMN], version)) :]

    def _is_users(self, serialized: bytes, user_id: str) -> bool:
        from feast.infra.key_encoding_utils import deserialize_entity_key

        key = deserialize_entity_key(serialized, self.store.config.entity_key_serialization_version)
        values = dict(zip(key.join_keys, key.entity_values, strict=True))
        return USER_COLUMN in values and values[USER_COLUMN].string_val == user_id

    def find(self, user_id: str) -> list[bytes]:
        """The stored keys (as the backend names them) that belong to the user."""
        return [key for key, _ in self._candidates(user_id)]

    def _candidates(self, user_id: str) -> Iterator[tuple[bytes, Callable[[], None]]]:
        from feast.infra.online_stores.redis import RedisOnlineStore
        from feast.infra.online_stores.sqlite import SqliteOnlineStore

        online = self.online
        config = self.store.config
        needle = self._user_value(user_id)
        if isinstance(online, SqliteOnlineStore):
            from feast.infra.online_stores.helpers import compute_table_id

            connection = online._get_conn(config)
            table = compute_table_id(
                config.project, self.view, config.registry.enable_online_feature_view_versioning
            )
            quoted = '"' + table.replace('"', '""') + '"'
            exists = connection.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)
            ).fetchone()
            if not exists:
                return
            rows = connection.execute(
                f"SELECT DISTINCT entity_key FROM {quoted} WHERE instr(entity_key, ?) > 0", (needle,)
            ).fetchall()
            for (key,) in rows:
                if self._is_users(bytes(key), user_id):
                    yield bytes(key), lambda key=key: self._sqlite_delete(connection, quoted, key)
        elif isinstance(online, RedisOnlineStore):
            from feast.infra.key_encoding_utils import serialize_entity_key_prefix

            client = online._get_client(config.online_store)
            project = config.project.encode("utf-8")
            prefix = serialize_entity_key_prefix(self.view.join_keys, config.entity_key_serialization_version)
            # what Feast's own RedisOnlineStore.delete_entity_values scans, narrowed to the user
            pattern = _glob_escape(prefix) + b"*" + _glob_escape(needle) + b"*" + _glob_escape(project)
            for key in client.scan_iter(match=pattern, count=1000):
                if key.endswith(project) and self._is_users(key[: -len(project)], user_id):
                    yield key, lambda key=key: client.delete(key)
        else:
            raise NotImplementedError(
                f"online store {type(online).__name__}: forgetting a user is implemented for the "
                "sqlite and redis online stores"
            )

    @staticmethod
    def _sqlite_delete(connection: Any, quoted_table: str, key: Any) -> None:
        connection.execute(f"DELETE FROM {quoted_table} WHERE entity_key = ?", (key,))

    def delete(self, user_id: str) -> int:
        """Delete the user's keys (all features of each key); how many keys went."""
        from feast.infra.online_stores.sqlite import SqliteOnlineStore

        sqlite = isinstance(self.online, SqliteOnlineStore)
        if sqlite:
            connection = self.online._get_conn(self.store.config)
            # overwrite deleted content on disk, not just unlink it from the b-tree
            connection.execute("PRAGMA secure_delete = ON")
        found = list(self._candidates(user_id))
        for _, delete in found:
            delete()
        if sqlite:
            connection.commit()
        return len(found)


def user_views(store: Any) -> list[Any]:
    """The registered feature views keyed by user (alone or with other keys)."""
    return sorted(
        (view for view in store.list_feature_views() if USER_COLUMN in view.join_keys),
        key=lambda view: view.name,
    )


def online_keys(settings: Settings, user_id: str) -> dict[str, int]:
    """How many of the user's entity keys each user-keyed view still has in the online store."""
    from feast.infra.provider import get_provider

    from features.store import feature_store

    store = feature_store(settings)
    online = get_provider(store.config).online_store
    return {view.name: len(OnlineStoreKeys(store, view, online).find(user_id)) for view in user_views(store)}
