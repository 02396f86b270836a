"""The retraining pipeline's guarantees, on a real tiny world (ingest, features, Feast, MLflow) with
a toy family whose holdout error is known: the gate promotes a better challenger and refuses a worse
one, a corrupt or insane challenger never becomes champion, runs of a model never overlap, the same
partition twice is done once, and a retrain killed mid-way leaves the champion where it was."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from marketplace_worlds import build_world
from retrain_toys import TRUE_SLOPE, LineConfig, LineFamily

from configs.settings import MlflowSettings, Settings
from tracking.registry import CHAMPION, previous_alias, version_for_alias
from tracking.runs import tracking_client
from training.pipeline import train
from training.retrain import (
    DECISION_TAG,
    STEP_TAG,
    GateConfig,
    RetrainConfig,
    RetrainLocked,
    ledger_entries,
    next_partition,
    retrain,
    retrain_lock,
    sanity_problems,
)

# the most partitions one test takes (each test has a copy of the world of its own)
HELD_DAYS = 2
BAD = {"shrink": 0.9}  # a tenth of the least-squares slope
GOOD = {"shrink": 0.0}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny marketplace whose last days wait in raw/ as daily partitions: built once and never
    written to (each test works on a copy)."""
    settings = Settings(data_dir=tmp_path_factory.mktemp("retrain-world") / "data")
    build_world(settings, hold_back_days=HELD_DAYS)
    return settings.root


@pytest.fixture
def settings(world: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """A copy of the world (its partitions, ledger and locks the test's own) with a registry of its own."""
    from features.store import apply_definitions

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    shutil.copytree(world, tmp_path / "data")
    settings = Settings(
        data_dir=tmp_path / "data", mlflow=MlflowSettings(tracking_uri=f"sqlite:///{tmp_path / 'm.db'}")
    )
    apply_definitions(settings)  # the copied Feast registry's views read the copy's feature tables
    assert ledger_entries(settings) == [] and next_partition(settings, "forecaster") is not None
    return settings


def _champion(family: LineFamily) -> int | None:
    held = version_for_alias(family.registered_model, CHAMPION)
    return held.version if held else None


def test_gate_promotes_a_better_challenger_and_refuses_a_worse_one(settings: Settings) -> None:
    family = LineFamily()
    first = train(settings, family, LineConfig(), params=BAD)
    assert _champion(family) == first.version.version

    partition = next_partition(settings, "forecaster")
    better = retrain(settings, family, config=LineConfig(), params=GOOD)
    assert better.partition == partition, "takes the oldest raw partition not ingested yet"
    assert better.decision == "promoted", better.reasons
    assert better.challenger_score < better.champion_score
    assert _champion(family) == better.challenger_version
    assert (
        version_for_alias(family.registered_model, previous_alias(CHAMPION)).version == first.version.version
    )
    assert (settings.contract_dir / "events" / f"{partition}.parquet").exists(), "the partition was ingested"

    worse = retrain(settings, family, config=LineConfig(), params=BAD)
    assert worse.partition != partition
    assert worse.decision == "refused", worse.reasons
    assert worse.challenger_score > worse.champion_score
    assert _champion(family) == better.challenger_version, "a refused challenger leaves the champion"

    client = tracking_client()
    refused = client.get_model_version(family.registered_model, str(worse.challenger_version))
    assert refused.tags["tradewind.gate"] == "refused"
    parent = client.get_run(worse.run_id)
    assert parent.data.tags[DECISION_TAG] == "refused"
    assert parent.data.metrics["gate.champion"] == pytest.approx(worse.champion_score)
    assert parent.data.metrics["gate.challenger"] == pytest.approx(worse.challenger_score)
    assert [artifact.path for artifact in client.list_artifacts(worse.run_id)] == ["gate.json"]
    children = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{worse.run_id}'")
    assert [child.info.run_name for child in children] == ["challenger-forecaster"]


def test_a_challenger_must_beat_the_champion_by_the_margin(settings: Settings) -> None:
    family = LineFamily()
    train(settings, family, LineConfig(), params={"shrink": 0.02})
    strict = RetrainConfig(gate=GateConfig(margin=0.5))
    result = retrain(settings, family, config=LineConfig(), params=GOOD, retrain_config=strict)
    assert result.decision == "refused"
    assert 0 < result.champion_score - result.challenger_score < 0.5 * result.champion_score
    assert "margin 50.00%" in result.reasons[0]


def test_the_same_partition_twice_is_done_once(settings: Settings) -> None:
    family = LineFamily()
    train(settings, family, LineConfig(), params=BAD)
    partition = next_partition(settings, "forecaster") or "generated"
    first = retrain(settings, family, config=LineConfig(), params=GOOD, partition=partition)
    versions = len(tracking_client().search_model_versions(f"name = '{family.registered_model}'"))
    again = retrain(settings, family, config=LineConfig(), params=GOOD, partition=partition)
    assert again.decision == "skipped"
    assert first.run_id in again.reasons[0] and first.decision in again.reasons[0]
    assert len(tracking_client().search_model_versions(f"name = '{family.registered_model}'")) == versions
    assert _champion(family) == first.champion_version
    forced = retrain(settings, family, config=LineConfig(), params=GOOD, partition=partition, force=True)
    assert forced.decision == "refused", "the same model again is no better than itself"
    decisions = [entry["decision"] for entry in ledger_entries(settings, "forecaster", finished_only=True)]
    assert decisions == ["promoted", "refused"]


def test_a_challenger_that_answers_nan_is_refused(settings: Settings) -> None:
    family = LineFamily()
    champion = train(settings, family, LineConfig(), params=BAD).version.version
    # fine on the holdout, NaN on its smoke request: only the gate's sanity check can catch it
    result = retrain(settings, family, config=LineConfig(), params={"shrink": 0.0, "nan_from": 1.0})
    assert result.decision == "refused"
    assert "non-finite value at answer.y" in result.reasons[0]
    assert _champion(family) == champion


def test_a_step_that_fails_leaves_the_champion_and_says_which_step(settings: Settings) -> None:
    family = LineFamily()
    champion = train(settings, family, LineConfig(), params=BAD).version.version
    with pytest.raises(ValueError, match="NaN"):  # the shared flow refuses a NaN metric
        retrain(settings, family, config=LineConfig(), params={"shrink": 0.0, "nan": True})
    assert _champion(family) == champion
    (started,) = ledger_entries(settings, "forecaster")
    client = tracking_client()
    failed = client.get_run(started["run_id"])
    assert failed.info.status == "FAILED" and failed.data.tags[STEP_TAG] == "train"
    assert next_partition(settings, "forecaster") == started["partition"], "the failed partition is retried"


def test_a_corrupt_challenger_artifact_is_refused_and_the_champion_stays(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    import training.retrain as retrain_module

    family = LineFamily()
    champion = train(settings, family, LineConfig(), params=BAD).version.version

    def train_then_corrupt(*args: object, **kwargs: object) -> object:
        result = train(*args, **kwargs)
        # the registered files of the new version, as the artifact store holds them
        uri = tracking_client().get_model_version_download_uri(
            family.registered_model, result.version.version
        )
        local = Path(uri.removeprefix("file://"))
        pickled = next(local.rglob("python_model.pkl"))
        pickled.write_bytes(b"not a pickle")
        return result

    monkeypatch.setattr(retrain_module, "train", train_then_corrupt)
    result = retrain(settings, family, config=LineConfig(), params=GOOD)
    assert result.decision == "refused"
    assert "does not load" in result.reasons[0]
    assert _champion(family) == champion


def test_two_runs_of_one_model_never_overlap(settings: Settings) -> None:
    with retrain_lock(settings, "forecaster"), pytest.raises(RetrainLocked, match="already running"):
        retrain(settings, LineFamily(), config=LineConfig())
    # another model is not held up
    with retrain_lock(settings, "forecaster"), retrain_lock(settings, "other"):
        pass


def test_a_retrain_killed_mid_way_leaves_the_champion_and_the_next_run_succeeds(
    settings: Settings, tmp_path: Path
) -> None:
    family = LineFamily()
    champion = train(settings, family, LineConfig(), params=BAD).version.version
    flag = tmp_path / "block"
    flag.touch()
    script = Path(__file__).with_name("retrain_toys.py")
    root = Path(__file__).resolve().parents[2]
    environment = {**os.environ, "PYTHONPATH": f"{root}{os.pathsep}{script.parent}"}
    child = subprocess.Popen(
        [
            sys.executable,
            str(script),
            str(settings.data_dir),
            settings.mlflow.tracking_uri,
            "--block-in-fit",
            str(flag),
        ],
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 120
        while not flag.with_suffix(".fitting").exists():
            assert child.poll() is None, child.stdout.read().decode()[-2000:]
            assert time.monotonic() < deadline, "the child retrain never reached its train step"
            time.sleep(0.1)
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
    assert _champion(family) == champion, "a killed retrain leaves the champion"
    assert ledger_entries(settings, "forecaster", finished_only=True) == [], "an unfinished run is not done"
    (started,) = ledger_entries(settings, "forecaster")

    flag.unlink()
    result = retrain(settings, family, config=LineConfig(), params=GOOD)
    assert result.decision == "promoted", result.reasons
    assert result.partition == started["partition"], "the next run takes the killed run's partition again"
    killed = tracking_client().search_runs(
        [tracking_client().get_run(result.run_id).info.experiment_id],
        "tags.`tradewind.retrain.killed` = 'true'",
    )
    assert len(killed) == 1 and killed[0].info.status == "KILLED"


def test_a_challenger_slower_than_the_smoke_limit_is_refused(settings: Settings) -> None:
    family = LineFamily()
    champion = train(settings, family, LineConfig(), params=BAD).version.version
    # better on the holdout, but its smoke answer takes 0.2 s against a 0.05 s limit
    quick = RetrainConfig(gate=GateConfig(smoke_timeout_s=0.05))
    slow = {**GOOD, "answer_seconds": 0.2}
    result = retrain(settings, family, config=LineConfig(), params=slow, retrain_config=quick)
    assert result.decision == "refused"
    assert re.search(r"smoke request took 0\.2\d\d s, over the 0\.05 s limit", result.reasons[0]), (
        result.reasons
    )
    assert _champion(family) == champion
    run = tracking_client().get_run(result.run_id)
    assert run.data.metrics["gate.smoke_seconds"] >= 0.2


def test_the_smoke_limit_is_what_refuses_a_slow_answer() -> None:
    from retrain_toys import Line

    slow = Line(TRUE_SLOPE, answer_seconds=0.1)
    problems, seconds = sanity_problems(slow, timeout_s=0.05)
    assert seconds is not None and seconds >= 0.1
    assert problems == [f"smoke request took {seconds:.3f} s, over the 0.05 s limit"]
    assert sanity_problems(slow, timeout_s=5.0)[0] == [], "the same answer within the limit is sane"


def test_the_cli_exits_3_with_one_line_while_another_retrain_holds_the_lock(tmp_path: Path) -> None:
    data = tmp_path / "data"
    held = Settings(data_dir=data)
    environment = {**os.environ, "TRADEWIND_DATA_DIR": str(data)}
    environment.pop("MLFLOW_TRACKING_URI", None)
    tradewind = Path(sys.executable).with_name("tradewind")
    with retrain_lock(held, "forecaster") as lock:
        busy = subprocess.run(
            [str(tradewind), "retrain", "forecaster"], env=environment, capture_output=True, text=True
        )
    assert busy.returncode == 3, busy.stderr
    assert busy.stdout == "" and "Traceback" not in busy.stderr
    pid = lock["state"]["pid"]
    assert busy.stderr.splitlines() == [
        f'error: a retrain of forecaster is already running ({{"pid": {pid}, "started": '
        f'"{lock["state"]["started"]}"}}); try again later'
    ]
