"""Scheduled retraining: new data in, a challenger trained, and promotion only past a gate.

`retrain(settings, family)` is one MLflow parent run of five steps, each a child of it or a tag on it:

1. **ingest** the next raw partition (`raw/<table>/<partition>.parquet`, the oldest not yet in the
   contract tables, or the one named) against the data contract: bad rows go to quarantine;
2. **features**: rebuild the feature tables and materialize the online store incrementally;
3. **train** a challenger with the shared flow (`training.pipeline.train`, never promoting);
4. **gate**: load the challenger and the champion back from the registry, as serving would, check the
   challenger is sane (it loads, answers its smoke request within the time limit, with finite
   numbers only), and score both on the same latest holdout (`Family.compare_on_holdout`);
5. **promote**: move `champion` to the challenger only if it is better by the configured margin.

Why it is safe to run every night:
- the champion alias is moved in the last step only, so a crash or a kill anywhere before leaves
  it where it was (serving keeps serving it);
- a lock per model (an OS file lock under `<data>/retrain/`, released by the kernel when its
  process dies, so a killed run never leaves a stale lock) stops two runs from overlapping;
- a finished run is written to a ledger keyed by model, partition, the partition's content and
  the configs: running the same partition again reports the earlier decision and does nothing
  (`force` retrains anyway). A run that did not finish is not in the ledger, so the next tick
  retries it; the run it left RUNNING in MLflow is marked KILLED then.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import math
import os
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from configs import StrictModel, load_config
from configs.settings import Settings
from tracking.registry import CHAMPION, RegisteredVersion, load_served_model, promote, version_for_alias
from tracking.runs import log_metrics, tracked_run, tracking_client
from training.pipeline import Family, HoldoutComparison, NoHoldout, load_family_config, train

Decision = Literal["promoted", "refused", "skipped"]
DECISION_TAG = "tradewind.retrain.decision"
STEP_TAG = "tradewind.retrain.step"  # the step a run was in when it ended; failed runs keep it
PARTITION_TAG = "tradewind.retrain.partition"

logger = logging.getLogger(__name__)


class GateConfig(StrictModel):
    """When a challenger may replace the champion."""

    # relative improvement of the holdout metric the challenger needs (0.01: 1% better)
    margin: float = Field(0.01, ge=0.0, lt=1.0)
    # the challenger must answer its smoke request within this, once loaded from the registry
    smoke_timeout_s: float = Field(2.0, gt=0.0)


class RetrainConfig(StrictModel):
    """configs/retrain.yaml: the gate, with overrides per model."""

    gate: GateConfig = GateConfig()
    models: dict[Literal["recommender", "forecaster", "bidder"], GateConfig] = Field(default_factory=dict)

    def gate_for(self, command: str) -> GateConfig:
        return self.models.get(command, self.gate)  # type: ignore[call-overload]


class RetrainLocked(RuntimeError):
    """Another retrain of the same model holds the lock."""


@dataclass(frozen=True)
class GateDecision:
    promote: bool
    reasons: tuple[str, ...]
    comparison: HoldoutComparison | None = None
    smoke_seconds: float | None = None


@dataclass(frozen=True)
class RetrainResult:
    model: str
    partition: str | None
    decision: Decision
    reasons: tuple[str, ...]
    run_id: str | None
    champion_version: int | None  # serving's champion after the run
    challenger_version: int | None
    champion_score: float | None = None
    challenger_score: float | None = None
    metric: str | None = None
    seconds: float = 0.0
    extra: Mapping[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------
# locking and the ledger


def retrain_dir(settings: Settings) -> Path:
    folder = settings.root / "retrain"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@contextmanager
def retrain_lock(settings: Settings, command: str) -> Iterator[dict[str, Any]]:
    """Hold `<data>/retrain/<command>.lock` for the block; RetrainLocked if another process has it.

    Yields what the previous holder left in the file (its pid and run id), which is how a run that
    was killed is found and closed by the next one. The lock is `flock`, so it dies with its process.
    """
    path = retrain_dir(settings) / f"{command}.lock"
    handle = path.open("a+")
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            raise RetrainLocked(
                f"a retrain of {command} is already running ({holder}); try again later"
            ) from None
        handle.seek(0)
        previous = _parse_lock(handle.read())
        state = {"pid": os.getpid(), "started": datetime.now(UTC).isoformat()}
        _write_lock(handle, state)
        yield {"previous": previous, "state": state, "write": lambda: _write_lock(handle, state)}
        _write_lock(handle, {})
    finally:
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()


def _parse_lock(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text) if text.strip() else {}
    except json.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def _write_lock(handle: Any, state: Mapping[str, Any]) -> None:
    handle.seek(0)
    handle.truncate()
    handle.write(json.dumps(dict(state)) if state else "")
    handle.flush()


def _ledger_path(settings: Settings) -> Path:
    return retrain_dir(settings) / "ledger.jsonl"


def ledger_entries(
    settings: Settings, command: str | None = None, *, finished_only: bool = False
) -> list[dict[str, Any]]:
    """The ledger's lines, oldest first: `status` "started" when a run took its partition, "finished"
    with its decision when it ended; a started line with no finished one is a run that died."""
    path = _ledger_path(settings)
    if not path.exists():
        return []
    entries = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [
        entry
        for entry in entries
        if (command is None or entry.get("model") == command)
        and (not finished_only or entry.get("status", "finished") == "finished")
    ]


def _append_ledger(settings: Settings, entry: Mapping[str, Any]) -> None:
    with _ledger_path(settings).open("a") as handle:
        handle.write(json.dumps(dict(entry), sort_keys=True) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def _digest(*parts: bytes) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part)
    return digest.hexdigest()


def partition_digest(settings: Settings, partition: str | None) -> str:
    """The content of a raw partition (every table's file), or of the contract tables when none."""
    if partition is None:
        from features.tables import snapshot

        return str(snapshot(settings.contract_dir)["digest"])
    files = sorted(settings.raw_dir.glob(f"*/{partition}.*"))
    return _digest(*(path.parent.name.encode() + path.read_bytes() for path in files))


def next_partition(settings: Settings, command: str) -> str | None:
    """The partition `command`'s next retrain takes: one whose last retrain of this model started and
    never finished (it was killed or failed), else the oldest dated raw partition not yet ingested;
    None when neither exists (the retrain then trains on the contract tables as they are)."""
    from features.simulator.partitions import DAILY_TABLES, raw_partitions

    last_status: dict[str, str] = {}
    for entry in ledger_entries(settings, command):
        if entry.get("partition"):
            last_status[entry["partition"]] = entry.get("status", "finished")
    waiting = raw_partitions(settings.raw_dir)
    unfinished = [name for name in waiting if last_status.get(name) == "started"]
    if unfinished:
        return unfinished[0]
    ingested = {
        path.stem for table in DAILY_TABLES for path in (settings.contract_dir / table).glob("*.parquet")
    }
    fresh = [name for name in waiting if name not in ingested]
    return fresh[0] if fresh else None


# ---------------------------------------------------------------------------------------------
# the gate


def _finite_numbers(value: Any, where: str = "answer") -> list[str]:
    """Paths of the numbers in an answer that are NaN or infinite."""
    if isinstance(value, bool):
        return []
    if isinstance(value, int | float):
        return [] if math.isfinite(value) else [where]
    if isinstance(value, Mapping):
        return [bad for key, item in value.items() for bad in _finite_numbers(item, f"{where}.{key}")]
    if isinstance(value, list | tuple):
        return [bad for index, item in enumerate(value) for bad in _finite_numbers(item, f"{where}[{index}]")]
    return []


def sanity_problems(model: Any, timeout_s: float) -> tuple[list[str], float | None]:
    """Why a loaded model may not serve: its smoke request fails, is slow, or gives non-finite numbers."""
    started = time.perf_counter()
    try:
        answer = model.answer(model.smoke_request())
    except Exception as error:  # any failure to answer is a reason to refuse, and is reported
        return [f"smoke request failed: {type(error).__name__}: {error}"], None
    seconds = time.perf_counter() - started
    problems = [f"non-finite value at {path}" for path in _finite_numbers(answer)][:5]
    if seconds > timeout_s:
        problems.append(f"smoke request took {seconds:.3f} s, over the {timeout_s:g} s limit")
    return problems, seconds


def run_gate(
    family: Family,
    challenger: RegisteredVersion,
    challenger_params: Mapping[str, Any],
    training_set: Any,
    config: Any,
    gate: GateConfig,
) -> GateDecision:
    """Decide whether `challenger` replaces the champion; never raises for a bad challenger."""
    try:
        challenger_model = load_served_model(challenger.uri)
    except Exception as error:
        return GateDecision(
            False, (f"challenger {challenger.uri} does not load: {type(error).__name__}: {error}",)
        )
    problems, smoke_seconds = sanity_problems(challenger_model, gate.smoke_timeout_s)
    if problems:
        return GateDecision(
            False, tuple(f"challenger {challenger.uri}: {p}" for p in problems), None, smoke_seconds
        )
    champion = version_for_alias(family.registered_model, CHAMPION)
    if champion is None:
        return GateDecision(
            True, ("no champion yet: the sane challenger becomes the first",), None, smoke_seconds
        )
    if champion.version == challenger.version:
        return GateDecision(
            False, (f"version {challenger.version} is already the champion",), None, smoke_seconds
        )
    try:
        champion_model = load_served_model(champion.uri)
    except Exception as error:
        reason = (
            f"champion {champion.uri} does not load ({type(error).__name__}: {error}); "
            "the sane challenger replaces it"
        )
        return GateDecision(True, (reason,), None, smoke_seconds)
    try:
        comparison = family.compare_on_holdout(
            champion_model, challenger_model, challenger_params, training_set, config
        )
    except NoHoldout as missing:  # no evidence the challenger is better: the champion stays
        return GateDecision(False, (f"no holdout to compare on: {missing}",), None, smoke_seconds)
    except Exception as error:  # e.g. a champion older than today's feature code: refuse, keep serving it
        reason = (
            f"the holdout comparison failed ({type(error).__name__}: {error}); the champion stays "
            f"(`tradewind train {family.name} --promote` replaces it by hand)"
        )
        logger.exception("retrain %s: holdout comparison failed", family.name)
        return GateDecision(False, (reason,), None, smoke_seconds)
    if not math.isfinite(comparison.challenger):
        reason = f"the challenger's {comparison.metric} on the holdout is {comparison.challenger}"
        return GateDecision(False, (reason,), comparison, smoke_seconds)
    if not math.isfinite(comparison.champion):  # a champion gone bad: any sane, scored challenger beats it
        reason = (
            f"the champion's {comparison.metric} on the holdout is {comparison.champion}; "
            "the challenger replaces it"
        )
        return GateDecision(True, (reason,), comparison, smoke_seconds)
    gain = comparison.improvement()
    verdict = (
        f"{comparison.metric} on {comparison.holdout}: challenger {comparison.challenger:.5g} vs champion "
        f"{comparison.champion:.5g} ({gain:+.2%}, margin {gate.margin:.2%})"
    )
    return GateDecision(gain >= gate.margin, (verdict,), comparison, smoke_seconds)


# ---------------------------------------------------------------------------------------------
# the pipeline


def _config_digest(config: Any, gate: GateConfig, params: Mapping[str, Any] | None, use_tuned: bool) -> str:
    chosen = json.dumps({"params": dict(params or {}), "tuned": use_tuned}, sort_keys=True, default=str)
    return _digest(config.model_dump_json().encode(), gate.model_dump_json().encode(), chosen.encode())


def _close_killed_run(previous: Mapping[str, Any]) -> None:
    run_id = previous.get("run_id")
    if not run_id:
        return
    client = tracking_client()
    try:
        run = client.get_run(run_id)
    except Exception:
        return
    if run.info.status == "RUNNING":
        client.set_tag(run_id, "tradewind.retrain.killed", "true")
        client.set_terminated(run_id, status="KILLED")
        logger.warning("retrain run %s of pid %s did not finish: marked KILLED", run_id, previous.get("pid"))


def retrain(
    settings: Settings,
    family: Family,
    *,
    partition: str | None = None,
    config: Any = None,
    retrain_config: RetrainConfig | None = None,
    force: bool = False,
    use_tuned: bool = False,
    params: Mapping[str, Any] | None = None,
) -> RetrainResult:
    """Ingest the next partition, train a challenger and promote it only past the gate (see module)."""
    from features.ingest import ingest
    from features.store import materialize
    from features.transforms import build_feature_tables

    started = time.perf_counter()
    config = config if config is not None else load_family_config(family)
    retrain_config = retrain_config or load_config("retrain", RetrainConfig)
    gate = retrain_config.gate_for(family.name)
    with retrain_lock(settings, family.name) as lock:
        from tracking.runs import configure_tracking

        configure_tracking(settings)
        _close_killed_run(lock["previous"])
        partition = partition or next_partition(settings, family.name)
        if partition is not None and not any(settings.raw_dir.glob(f"*/{partition}.*")):
            raise FileNotFoundError(f"{settings.raw_dir}: no raw files for partition {partition!r}")
        key = {
            "model": family.name,
            "partition": partition,
            "partition_digest": partition_digest(settings, partition),
            "config_digest": _config_digest(config, gate, params, use_tuned),
        }
        if not force:
            for entry in reversed(ledger_entries(settings, family.name, finished_only=True)):
                if all(entry.get(name) == value for name, value in key.items()):
                    champion = version_for_alias(family.registered_model, CHAMPION)
                    return RetrainResult(
                        family.name,
                        partition,
                        "skipped",
                        (
                            f"partition {partition} already retrained in run {entry['run_id']}: "
                            f"{entry['decision']}",
                        ),
                        entry["run_id"],
                        champion.version if champion else None,
                        entry.get("challenger_version"),
                        seconds=time.perf_counter() - started,
                    )
        tags = {PARTITION_TAG: partition or "none"}
        with tracked_run(settings, f"retrain-{family.name}", family.name, tags=tags) as parent:
            import mlflow

            lock["state"]["run_id"] = parent.info.run_id
            lock["write"]()
            _append_ledger(settings, {**key, "status": "started", "run_id": parent.info.run_id})

            def step(name: str) -> None:
                mlflow.set_tag(STEP_TAG, name)
                logger.info("retrain %s: %s", family.name, name)

            if partition is not None:
                step("ingest")
                report = ingest(settings, settings.raw_dir, partition=partition)
                log_metrics(
                    {
                        "ingest": {
                            "rows_in": report.rows_in,
                            "accepted": report.accepted,
                            "quarantined": report.quarantined,
                        }
                    }
                )
            step("features")
            build_feature_tables(settings)
            materialize(settings, incremental=True)
            step("train")
            training_set = family.training_set(settings, config)
            result = train(
                settings,
                family,
                config,
                params=params,
                use_tuned=use_tuned,
                promote_policy="never",
                training_set=training_set,
                run_name=f"challenger-{family.name}",
                nested=True,
            )
            challenger = result.version
            assert challenger is not None  # train registers unless told not to
            step("gate")
            decision = run_gate(family, challenger, result.params, training_set, config, gate)
            if decision.comparison is not None:
                comparison = decision.comparison
                scores = {
                    "champion": comparison.champion,
                    "challenger": comparison.challenger,
                    "improvement": comparison.improvement(),
                    **comparison.details,
                }
                # a NaN score is a reason in gate.json, not a metric (the shared logger refuses NaN)
                log_metrics({"gate": {name: value for name, value in scores.items() if math.isfinite(value)}})
            if decision.smoke_seconds is not None:
                log_metrics({"gate": {"smoke_seconds": decision.smoke_seconds}})
            mlflow.log_dict(
                {
                    "reasons": list(decision.reasons),
                    "comparison": asdict(decision.comparison) if decision.comparison else None,
                    "challenger": challenger.uri,
                    "gate": gate.model_dump(),
                },
                "gate.json",
            )
            verdict: Decision = "promoted" if decision.promote else "refused"
            if decision.promote:
                step("promote")
                promote(family.registered_model, challenger.version, CHAMPION)
            client = tracking_client()
            client.set_model_version_tag(
                family.registered_model, str(challenger.version), "tradewind.gate", verdict
            )
            mlflow.set_tag(DECISION_TAG, verdict)
            mlflow.set_tag(STEP_TAG, "done")
            champion = version_for_alias(family.registered_model, CHAMPION)
            entry = {
                **key,
                "status": "finished",
                "decision": verdict,
                "run_id": parent.info.run_id,
                "challenger_version": challenger.version,
                "champion_version": champion.version if champion else None,
                "reasons": list(decision.reasons),
                "finished": datetime.now(UTC).isoformat(),
            }
            _append_ledger(settings, entry)
            comparison = decision.comparison
            return RetrainResult(
                family.name,
                partition,
                verdict,
                decision.reasons,
                parent.info.run_id,
                champion.version if champion else None,
                challenger.version,
                comparison.champion if comparison else None,
                comparison.challenger if comparison else None,
                comparison.metric if comparison else None,
                time.perf_counter() - started,
            )
