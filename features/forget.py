"""The right to be forgotten: remove one user from everything Tradewind keeps, and prove it.

`forget_user(settings, user_id, requested_by=..., reason=...)` (the `tradewind forget-user` verb):

1. adds the user to the **forgotten list** (`<data>/privacy/forgotten.jsonl`) first, so serving stops
   using what the registered models hold about them at once (their history is pickled inside the
   recommender: serving answers a forgotten user exactly as an unknown one, a cold start);
2. deletes the user's entity keys from the **Feast online store** (SQLite or Redis, through Feast's own
   store object, its connection and its entity key encoding: `features/forget_online.py`);
3. rewrites, atomically (temporary file, then `os.replace`), every parquet/CSV file that holds the
   user's rows: the **offline feature tables** keyed by user, the **contract tables** with a
   `user_id` column, their **raw** copies (so that ingesting again cannot bring the user back), the
   **quarantine** and the simulator's **ground truth**. A row whose `user_id` is required (the user
   themselves, their events) is deleted. A row where `user_id` is optional, an auction, is the
   advertiser's record of a bid: it stays, with `user_id` cleared, as for any viewer the marketplace
   does not know;
4. appends an **audit record** to `<data>/privacy/audit.jsonl`: when, who asked, why, and how many
   rows or keys went from each place. It never holds the plain id (an audit log that names a
   forgotten user would itself be data about them): users are named by a keyed digest
   (HMAC-SHA256 with `<data>/privacy/digest.key`, made on first use), which lets the operator check
   whether a given id was forgotten without the log being reversible by trying ids.

Forgetting is idempotent: a second call removes nothing, reports zeros and is audited as such.
A user id found nowhere is not an error: the request is audited with zero counts and the id still
goes on the forgotten list, since a model trained earlier may hold it even when no table does.

Not touched: aggregates that merely count the user (market and product popularity features) until
the next `tradewind features build` recomputes them from the cleaned contract tables; the MLflow
history (run artifacts, registered model versions hold the user's interactions and, possibly, their
id in an input example): rewriting them would falsify the record of what a model was trained on; the
forgotten list keeps serving from using it, and versions trained after the forget never saw it.
Each real data set (`<data>/datasets/<name>/`) is a workspace of its own: forget there with
`--data-dir`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl

from configs.settings import Settings
from features.contract import TABLES
from features.forget_online import USER_COLUMN, OnlineStoreKeys, user_views
from features.transforms.build import feature_table_path
from features.transforms.specs import FEATURE_TABLES
from models.terminal_progress import progress_on_terminal

logger = logging.getLogger(__name__)

PRIVACY_DIR = "privacy"
AUDIT_FILE = "audit.jsonl"
FORGOTTEN_FILE = "forgotten.jsonl"
KEY_FILE = "digest.key"


def privacy_dir(settings: Settings) -> Path:
    return settings.root / PRIVACY_DIR


def audit_path(settings: Settings) -> Path:
    return privacy_dir(settings) / AUDIT_FILE


def forgotten_path(settings: Settings) -> Path:
    return privacy_dir(settings) / FORGOTTEN_FILE


# ---------------------------------------------------------------------------------------------
# digests: how the forgotten list and the audit name a user without keeping the id


def _digest_key(settings: Settings, create: bool) -> bytes | None:
    """The secret of the keyed digest (32 bytes, owner-only file); made once when `create`."""
    path = privacy_dir(settings) / KEY_FILE
    if not path.exists():
        if not create:
            return None
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{KEY_FILE}.{os.getpid()}.tmp")
        descriptor = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(secrets.token_hex(32) + "\n")
        try:
            os.link(tmp, path)  # appears whole, and only if no other process made one first
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    text = path.read_text().strip()
    if not re.fullmatch(r"[0-9a-f]{64}", text):
        raise ValueError(f"{path}: not a digest key (64 hex digits); restore it from a backup of privacy/")
    return bytes.fromhex(text)


def _digest(key: bytes, user_id: str) -> str:
    return hmac.new(key, user_id.encode("utf-8"), hashlib.sha256).hexdigest()


def user_digest(settings: Settings, user_id: str) -> str:
    """The keyed digest that names `user_id` in the forgotten list and the audit log."""
    key = _digest_key(settings, create=True)
    if key is None:  # cannot happen: create=True makes it
        raise FileNotFoundError(f"{privacy_dir(settings) / KEY_FILE}: no digest key")
    return _digest(key, user_id)


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    records = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}: line {number} is not JSON ({error.msg})") from None
    return records


def _append_jsonl(path: Path, record: dict[str, Any]) -> None:
    """One line per write on an O_APPEND file, flushed to disk: readers see whole lines."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        os.write(descriptor, (json.dumps(record, sort_keys=True) + "\n").encode("utf-8"))
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def forgotten_digests(settings: Settings) -> frozenset[str]:
    return frozenset(record["user_digest"] for record in _read_jsonl(forgotten_path(settings)))


def audit_records(settings: Settings) -> list[dict[str, Any]]:
    return _read_jsonl(audit_path(settings))


class ForgottenUsers:
    """The forgotten list as a serving replica holds it: read at start, then `refresh()` (run in the
    background) re-reads it when the file has changed. A refresh that fails keeps the last copy."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._key: bytes | None = None
        self._digests: frozenset[str] = frozenset()
        self._stamp: tuple[int, int] | None = None
        self.loaded_at: datetime | None = None
        self.error: str | None = None
        self.refresh()

    def refresh(self) -> None:
        path = forgotten_path(self.settings)
        try:
            stat = path.stat() if path.exists() else None
            stamp = (stat.st_mtime_ns, stat.st_size) if stat else None
            if stamp == self._stamp and self.loaded_at is not None:
                return
            key = _digest_key(self.settings, create=False) if stamp else None
            if stamp and key is None:
                raise FileNotFoundError(f"{privacy_dir(self.settings) / KEY_FILE}: the digest key is missing")
            self._key, self._digests = key, forgotten_digests(self.settings) if key else frozenset()
            self._stamp, self.loaded_at, self.error = stamp, datetime.now(UTC), None
        except Exception as error:  # a refresh must never take the replica down: keep the last copy
            self.error = f"{type(error).__name__}: {error}"
            logger.warning("forgotten users refresh failed, keeping the last copy: %s", self.error)

    def __len__(self) -> int:
        return len(self._digests)

    def __contains__(self, user_id: object) -> bool:
        if self._key is None or not isinstance(user_id, str):
            return False
        return _digest(self._key, user_id) in self._digests

    def anonymised(self, request: dict[str, Any]) -> dict[str, Any]:
        """The request as serving hands it to the model: a forgotten user's id is dropped, so the
        model answers exactly as for a user it never saw (a cold start), with no online lookup."""
        if request.get(USER_COLUMN) in self:
            return {**request, USER_COLUMN: None}
        return request

    def status(self) -> dict[str, Any]:
        return {
            "forgotten_users": len(self),
            "loaded_at": self.loaded_at.isoformat() if self.loaded_at else None,
            "error": self.error,
        }


# ---------------------------------------------------------------------------------------------
# the report


@dataclass(frozen=True)
class Removal:
    place: str  # e.g. "contract/events/generated.parquet", "online/user_activity"
    count: int
    unit: str  # "rows deleted", "rows with user_id cleared", "online keys deleted"


@dataclass
class ForgetReport:
    user_digest: str
    requested_by: str
    reason: str
    already_forgotten: bool
    removals: list[Removal] = field(default_factory=list)
    places_checked: int = 0
    audit_path: Path | None = None

    @property
    def total(self) -> int:
        return sum(removal.count for removal in self.removals)

    def counts(self) -> dict[str, int]:
        return {removal.place: removal.count for removal in self.removals}

    @property
    def status(self) -> str:
        if self.total:
            return "removed"
        return "already_forgotten" if self.already_forgotten else "not_found"

    def __str__(self) -> str:
        lines = [f"user {self.user_digest[:16]}... (digest): {self.status}"]
        lines += [f"  {removal.place}: {removal.count:,} {removal.unit}" for removal in self.removals]
        lines.append(f"  {self.total:,} rows and keys removed from {self.places_checked} places checked")
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# files


def _matches(user_id: str) -> pl.Expr:
    return (pl.col(USER_COLUMN).cast(pl.String) == user_id).fill_null(False)


def _read(path: Path, lazy: bool) -> Any:
    if path.suffix == ".csv":  # as ingest reads it: text, so no value is reinterpreted
        return pl.scan_csv(path, infer_schema=False) if lazy else pl.read_csv(path, infer_schema=False)
    return pl.scan_parquet(path) if lazy else pl.read_parquet(path)


def _replace(path: Path, frame: pl.DataFrame) -> None:
    """Write beside the file, then rename over it: a reader sees the old file or the new one."""
    tmp = path.with_name(f".{path.name}.forget.tmp")
    if path.suffix == ".csv":
        frame.write_csv(tmp)
    else:
        frame.write_parquet(tmp)
    os.replace(tmp, path)


def forget_in_file(path: Path, user_id: str, clear: bool) -> int:
    """Delete the user's rows from one file (or, with `clear`, blank their `user_id`); rows affected."""
    if USER_COLUMN not in _read(path, lazy=True).collect_schema().names():
        return 0
    hits = _read(path, lazy=True).select(_matches(user_id).sum()).collect().item()
    if not hits:
        return 0
    frame = _read(path, lazy=False)
    if clear:
        column = frame.schema[USER_COLUMN]
        frame = frame.with_columns(
            pl.when(_matches(user_id))
            .then(pl.lit(None, dtype=column))
            .otherwise(pl.col(USER_COLUMN))
            .alias(USER_COLUMN)
        )
    else:
        frame = frame.filter(~_matches(user_id))
    _replace(path, frame)
    return int(hits)


@dataclass(frozen=True)
class FileTarget:
    path: Path
    label: str
    clear: bool  # blank user_id instead of deleting the row


def _table_files(base: Path, tables: dict[str, bool], prefix: str, clear_optional: bool) -> list[FileTarget]:
    """`<base>/<table>/*.{parquet,csv}` and flat `<base>/<table>.{parquet,csv}` of the given tables."""
    found = []
    for table, optional in tables.items():
        candidates = sorted((base / table).glob("*.parquet")) + sorted((base / table).glob("*.csv"))
        candidates += [base / f"{table}{suffix}" for suffix in (".parquet", ".csv")]
        for path in candidates:
            if path.is_file():
                found.append(
                    FileTarget(path, f"{prefix}/{path.relative_to(base)}", clear_optional and optional)
                )
    return found


def file_targets(settings: Settings) -> list[FileTarget]:
    """Every file that may hold a user's rows, with what to do with them."""
    # table -> whether its user_id may be empty (then the row is kept with user_id cleared)
    user_tables = {
        name: schema.column(USER_COLUMN).nullable
        for name, schema in TABLES.items()
        if USER_COLUMN in schema.column_names
    }
    targets = [
        FileTarget(feature_table_path(settings.feature_dir, name), f"features/{name}", clear=False)
        for name, spec in FEATURE_TABLES.items()
        if USER_COLUMN in spec.keys
    ]
    targets = [target for target in targets if target.path.is_file()]
    targets += _table_files(settings.contract_dir, user_tables, "contract", clear_optional=True)
    targets += _table_files(settings.raw_dir, user_tables, "raw", clear_optional=True)
    # quarantined rows are kept only to be looked at: a forgotten user's go entirely
    quarantined = {name: False for name in user_tables}
    targets += _table_files(settings.quarantine_dir, quarantined, "quarantine", clear_optional=False)
    if settings.truth_dir.is_dir():
        for path in sorted(settings.truth_dir.rglob("*.parquet")):
            targets.append(FileTarget(path, f"ground_truth/{path.relative_to(settings.truth_dir)}", False))
    return targets


# ---------------------------------------------------------------------------------------------
# the whole job


def _registry_exists(settings: Settings) -> bool:
    from features.store import REGISTRY_FILE

    return settings.mode == "scaleout" or (settings.feast_dir / REGISTRY_FILE).exists()


def forget_user(
    settings: Settings,
    user_id: str,
    *,
    requested_by: str,
    reason: str,
    progress: bool = True,
) -> ForgetReport:
    """Remove `user_id` from the online store, feature tables, contract, raw, quarantine and ground
    truth files, put it on the forgotten list serving consults, and audit it (see the module doc).

    An empty id is a ValueError. An id found nowhere is audited with zero counts (status
    `not_found`) and still put on the forgotten list; a second call for the same id removes nothing
    (status `already_forgotten`). If a step fails, the audit records what was removed so far with
    status `failed` and the error is raised: running it again finishes the job.
    """
    if not isinstance(user_id, str) or not user_id.strip():
        raise ValueError(f"user_id: must be a non-empty id, got {user_id!r}")
    from rich.progress import Progress

    digest = user_digest(settings, user_id)
    already = digest in forgotten_digests(settings)
    started = datetime.now(UTC)
    if not already:  # first, so that serving stops using what models hold about the user at once
        _append_jsonl(forgotten_path(settings), {"user_digest": digest, "forgotten_at": started.isoformat()})
    report = ForgetReport(digest, requested_by, reason, already, audit_path=audit_path(settings))
    error: BaseException | None = None
    place = "online store"  # the step running when an error stops the job
    try:
        steps: list[tuple[str, str, Callable[[], int]]] = []
        if _registry_exists(settings):
            from feast.infra.provider import get_provider

            from features.store import feature_store

            store = feature_store(settings)
            online = get_provider(store.config).online_store
            for view in user_views(store):
                keys = OnlineStoreKeys(store, view, online)
                steps.append((f"online/{view.name}", "online keys deleted", lambda k=keys: k.delete(user_id)))
        for target in file_targets(settings):
            unit = "rows with user_id cleared" if target.clear else "rows deleted"
            steps.append(
                (target.label, unit, lambda t=target: forget_in_file(t.path, user_id, clear=t.clear))
            )
        # rich writes to stdout
        with Progress(disable=not progress_on_terminal(sys.stdout, progress), transient=True) as bar:
            task = bar.add_task("forget user", total=len(steps))
            for place, unit, step in steps:
                bar.update(task, description=f"forget user: {place}")
                count = step()
                report.places_checked += 1
                if count:
                    report.removals.append(Removal(place, count, unit))
                bar.advance(task)
    except BaseException as failure:
        error = failure
        raise
    finally:
        _append_jsonl(
            audit_path(settings),
            {
                "at": started.isoformat(),
                "finished_at": datetime.now(UTC).isoformat(),
                "action": "forget_user",
                "user_digest": digest,
                "status": "failed" if error is not None else report.status,
                "error": f"{place}: {type(error).__name__}: {error}" if error is not None else None,
                "requested_by": requested_by,
                "reason": reason,
                "removed": report.counts(),
                "total_removed": report.total,
                "places_checked": report.places_checked,
                "mode": settings.mode,
                "host": socket.gethostname(),
            },
        )
    return report
