"""The retraining schedule: configs/schedule.yaml, when jobs are due, the runner's records and retries,
and the crontab / systemd output. Jobs here run a tiny Python script instead of `tradewind retrain`
(a real retrain takes minutes); the script exits with the codes it is given, one per call."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from configs import ConfigError, load_config, validate_config
from configs.settings import Settings
from training.schedule import (
    Job,
    ScheduleConfig,
    crontab_text,
    job_state,
    latest_occurrence,
    read_history,
    retrain_argv,
    systemd_units,
    tick,
)

SCRIPT = """
import json, sys
from pathlib import Path
state = Path(sys.argv[1])
codes = json.loads(state.read_text())
code = codes.pop(0) if codes else 0
state.write_text(json.dumps(codes))
print(f"fake job {sys.argv[2]} exits {code}")
sys.exit(code)
"""


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data")


def fake_job(tmp_path: Path, codes: list[int], **fields: object) -> tuple[Job, Path]:
    """A job whose every step runs the script; it exits with `codes` in turn, then 0."""
    script = tmp_path / "job.py"
    script.write_text(SCRIPT)
    state = tmp_path / f"codes-{fields.get('name', 'job')}.json"
    state.write_text(json.dumps(codes))
    command = [sys.executable, str(script), str(state), "{model}"]
    job = Job.model_validate(
        {
            "model": "forecaster",
            "cadence": "0 2 * * *",
            "command": command,
            "monitor_command": command,
            **fields,
        }
    )
    return job, state


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def clock(moment: datetime) -> Callable[[], datetime]:
    return lambda: moment


def test_shipped_schedule_is_valid_and_runs_the_real_retrain(settings: Settings) -> None:
    from training.schedule import load_schedule

    schedule = load_schedule()
    assert {job.model for job in schedule.jobs} == {"forecaster", "bidder", "recommender"}
    job = schedule.job("forecaster")
    argv = retrain_argv(settings, job)
    # the default command is the real `tradewind retrain MODEL` on the runner's data folder
    assert argv[1:] == ["-m", "cli", "--data-dir", str(settings.root), "retrain", "forecaster"]


def test_bad_schedule_fails_naming_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"jobs\.0\.cadence"):
        validate_config(
            {"jobs": [{"model": "forecaster", "cadence": "every night"}]}, ScheduleConfig, "s.yaml"
        )
    with pytest.raises(ConfigError, match=r"unknown key 'jobs\.0\.retry'"):
        validate_config(
            {"jobs": [{"model": "bidder", "cadence": "daily", "retry": 2}]}, ScheduleConfig, "s.yaml"
        )
    with pytest.raises(ConfigError, match="job names must be unique"):
        validate_config(
            {"jobs": [{"model": "bidder", "cadence": "daily"}, {"model": "bidder", "cadence": "weekly"}]},
            ScheduleConfig,
            "s.yaml",
        )
    path = tmp_path / "schedule.yaml"
    path.write_text("timezone: Mars/Olympus\njobs: []\n")
    with pytest.raises(ConfigError, match=r"timezone.*unknown time zone"):
        load_config(path, ScheduleConfig)


def test_due_is_the_latest_occurrence_at_or_before_now() -> None:
    daily = Job(model="forecaster", cadence="0 2 * * *")
    assert latest_occurrence(daily, at("2026-12-01T10:00:00"), "UTC") == at("2026-12-01T02:00:00")
    assert latest_occurrence(daily, at("2026-12-01T02:00:00"), "UTC") == at("2026-12-01T02:00:00")
    assert latest_occurrence(daily, at("2026-12-01T01:59:00"), "UTC") == at("2026-11-30T02:00:00")
    weekly = Job(model="recommender", cadence="weekly")  # Monday 00:00; 2026-12-01 is a Tuesday
    assert latest_occurrence(weekly, at("2026-12-01T10:00:00"), "UTC") == at("2026-11-30T00:00:00")
    # a cadence in another time zone: 02:00 in Berlin is 01:00 UTC in winter
    assert latest_occurrence(daily, at("2026-12-01T10:00:00"), "Europe/Berlin") == at("2026-12-01T01:00:00")

    history: list[dict] = []
    state = job_state(daily, history, at("2026-12-01T10:00:00"), "UTC")
    assert state.due and state.failures == 0  # never run: the latest occurrence is caught up
    done = {"job": "forecaster", "scheduled_for": state.occurrence.isoformat(), "status": "succeeded"}
    assert not job_state(daily, [done], at("2026-12-01T23:59:00"), "UTC").due
    assert job_state(daily, [done], at("2026-12-02T02:00:00"), "UTC").due


def test_failure_is_recorded_with_its_log_and_retried_next_tick(settings: Settings, tmp_path: Path) -> None:
    job, _ = fake_job(tmp_path, [1, 0])
    schedule = ScheduleConfig(jobs=[job])
    lines: list[str] = []
    first = tick(settings, schedule, now=clock(at("2026-12-01T02:00:30")), report=lines.append)
    assert [record["status"] for record in first] == ["failed"]
    record = first[0]
    assert record["exit_code"] == 1 and record["scheduled_for"] == at("2026-12-01T02:00:00").isoformat()
    log = Path(record["log"])
    assert log.parent == settings.root / "schedule" / "logs"
    assert "fake job forecaster exits 1" in log.read_text()
    assert any("failed" in line and "retried next tick" in line for line in lines)

    # the runner survived the crash: the next tick runs the same occurrence again, and it succeeds
    second = tick(settings, schedule, now=clock(at("2026-12-01T02:01:30")))
    assert [(r["status"], r["attempt"], r["scheduled_for"]) for r in second] == [
        ("succeeded", 2, record["scheduled_for"])
    ]
    assert [r["status"] for r in read_history(settings)] == ["failed", "succeeded"]
    # succeeded: not due again until the next occurrence
    assert tick(settings, schedule, now=clock(at("2026-12-01T02:02:30"))) == []
    assert tick(settings, schedule, now=clock(at("2026-12-01T23:59:00"))) == []
    third = tick(settings, schedule, now=clock(at("2026-12-02T02:00:10")))
    assert [(r["status"], r["attempt"]) for r in third] == [("succeeded", 1)]


def test_retries_are_bounded_per_occurrence(settings: Settings, tmp_path: Path) -> None:
    job, _ = fake_job(tmp_path, [2, 2, 2, 2], retries=1)
    schedule = ScheduleConfig(jobs=[job])
    statuses = []
    for minute in range(4):
        moment = at("2026-12-01T02:00:00") + timedelta(minutes=minute, seconds=5)
        statuses += [record["status"] for record in tick(settings, schedule, now=clock(moment))]
    assert statuses == ["failed", "failed"]  # the first attempt and one retry, then it waits
    state = job_state(job, read_history(settings), at("2026-12-01T03:00:00"), "UTC")
    assert not state.due and "gave up" in state.summary
    # the next occurrence starts afresh
    assert job_state(job, read_history(settings), at("2026-12-02T02:00:00"), "UTC").due


def test_locked_exit_is_not_a_failure_and_is_retried(settings: Settings, tmp_path: Path) -> None:
    job, _ = fake_job(tmp_path, [3, 3, 3, 3, 0], retries=0)
    schedule = ScheduleConfig(jobs=[job])
    statuses = []
    for minute in range(5):
        moment = at("2026-12-01T02:00:00") + timedelta(minutes=minute, seconds=5)
        statuses += [record["status"] for record in tick(settings, schedule, now=clock(moment))]
    # with no retries allowed, four "locked" exits still leave the job due: it succeeds on the fifth
    assert statuses == ["locked", "locked", "locked", "locked", "succeeded"]


def test_drift_job_retrains_only_when_monitoring_says_so(settings: Settings, tmp_path: Path) -> None:
    # monitor exits 0 (no retrain needed): the occurrence is done without retraining
    quiet, quiet_codes = fake_job(tmp_path, [0], name="quiet", when="drift")
    # monitor exits 4 (retrain advised), then the retrain step exits 0
    drifted, drifted_codes = fake_job(tmp_path, [4, 0], name="drifted", when="drift")
    records = tick(settings, ScheduleConfig(jobs=[quiet, drifted]), now=clock(at("2026-12-01T02:00:05")))
    by_job = {record["job"]: record for record in records}
    assert by_job["quiet"]["status"] == "skipped"
    assert [step["step"] for step in by_job["quiet"]["steps"]] == ["monitor"]
    assert by_job["drifted"]["status"] == "succeeded"
    assert [(step["step"], step["exit_code"]) for step in by_job["drifted"]["steps"]] == [
        ("monitor", 4),
        ("retrain", 0),
    ]
    assert json.loads(quiet_codes.read_text()) == [] and json.loads(drifted_codes.read_text()) == []


def test_a_hanging_step_is_killed_and_counts_as_failed(settings: Settings, tmp_path: Path) -> None:
    sleeper = tmp_path / "sleep.py"
    sleeper.write_text("import time\ntime.sleep(60)\n")
    job = Job(model="bidder", cadence="daily", command=[sys.executable, str(sleeper)], timeout_minutes=1 / 60)
    (record,) = tick(settings, ScheduleConfig(jobs=[job]), now=clock(at("2026-12-01T00:00:05")))
    assert record["status"] == "timeout" and record["exit_code"] is None
    assert record["seconds"] < 30
    assert "killed after" in Path(record["log"]).read_text()


def test_crontab_and_systemd_name_every_job(settings: Settings) -> None:
    from training.schedule import load_schedule

    schedule = load_schedule()
    crontab = crontab_text(settings, schedule)
    tick_lines = [line for line in crontab.splitlines() if not line.startswith("#")]
    assert len(tick_lines) == 1 and tick_lines[0].startswith("* * * * * ")
    assert "schedule run --once" in tick_lines[0] and str(settings.root) in tick_lines[0]
    units = systemd_units(settings, schedule)
    service, timer = units["tradewind-schedule.service"], units["tradewind-schedule.timer"]
    assert "ExecStart=" in service and "schedule run --once" in service
    assert "OnCalendar=*-*-* *:*:00" in timer and "Persistent=true" in timer
    for job in schedule.jobs:
        assert f"job {job.name}:" in crontab and f"'{job.cadence}'" in crontab
        assert f"job {job.name}:" in service


def test_cli_run_once_records_and_exits_nonzero_on_failure(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cli.app import app

    job, _ = fake_job(tmp_path, [5])
    schedule_file = tmp_path / "schedule.yaml"
    schedule_file.write_text(json.dumps({"jobs": [job.model_dump()]}))  # JSON is YAML
    monkeypatch.setenv("TRADEWIND_DATA_DIR", str(settings.root))
    runner = CliRunner()
    failed = runner.invoke(app, ["schedule", "run", "--once", "--config", str(schedule_file)])
    assert failed.exit_code == 1, failed.output
    assert "exit 5" in failed.output and "retried next tick" in failed.output
    succeeded = runner.invoke(app, ["schedule", "run", "--once", "--config", str(schedule_file)])
    assert succeeded.exit_code == 0, succeeded.output
    assert [r["status"] for r in read_history(settings)] == ["failed", "succeeded"]
    status = runner.invoke(app, ["schedule", "status", "--config", str(schedule_file)])
    assert status.exit_code == 0 and "succeeded" in status.output


def test_a_command_that_cannot_start_fails_and_the_next_job_still_runs(
    settings: Settings, tmp_path: Path
) -> None:
    broken = Job(model="bidder", cadence="daily", command=[str(tmp_path / "no-such-program")])
    fine, _ = fake_job(tmp_path, [0], name="fine", cadence="daily")
    records = tick(settings, ScheduleConfig(jobs=[broken, fine]), now=clock(at("2026-12-01T00:00:05")))
    assert [(r["job"], r["status"], r["exit_code"]) for r in records] == [
        ("bidder", "failed", 127),
        ("fine", "succeeded", 0),
    ]
    assert "cannot start" in Path(records[0]["log"]).read_text()


HOLD_LOCK = """
import fcntl, sys
handle = open(sys.argv[1], "a+")
fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
print("held", flush=True)
sys.stdin.read()  # holds the lock until the test kills this process
"""


def test_a_second_runner_does_nothing_while_the_first_holds_runner_lock(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import subprocess

    from cli.app import app
    from training.schedule import schedule_dir

    job, state = fake_job(tmp_path, [0], cadence="hourly")
    schedule_file = tmp_path / "schedule.yaml"
    schedule_file.write_text(json.dumps({"jobs": [job.model_dump()]}))
    monkeypatch.setenv("TRADEWIND_DATA_DIR", str(settings.root))
    lock = schedule_dir(settings) / "runner.lock"
    lock.parent.mkdir(parents=True)
    first = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(lock)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert first.stdout is not None and first.stdout.readline().strip() == "held"
        second = CliRunner().invoke(app, ["schedule", "run", "--once", "--config", str(schedule_file)])
        assert second.exit_code == 0, second.output
        assert "another `tradewind schedule run` holds the runner lock: nothing done" in second.output
        assert read_history(settings) == [] and json.loads(state.read_text()) == [0], "the job did not run"
    finally:
        first.kill()  # the kernel drops a dead process's flock: no stale lock
        first.wait(timeout=30)
    after = CliRunner().invoke(app, ["schedule", "run", "--once", "--config", str(schedule_file)])
    assert after.exit_code == 0, after.output
    assert [record["status"] for record in read_history(settings)] == ["succeeded"]
    assert lock.read_text() != "", "the runner wrote its pid into the lock"


def test_run_forever_waits_while_another_runner_holds_the_lock(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import training.schedule as schedule

    job, _ = fake_job(tmp_path, [0], cadence="hourly")
    said: list[str] = []
    holder = schedule.runner_lock(settings)
    assert holder.__enter__() is True  # the first runner

    class Stop(Exception):
        pass

    sleeps: list[float] = []
    real_sleep = schedule.time.sleep

    def wake(seconds: float) -> None:
        if seconds < 0.5:  # a step's polling (time.sleep is the one of every module), not the runner's
            real_sleep(seconds)
            return
        # the runner's wait for the next minute: the first runner ends in the first one
        sleeps.append(seconds)
        if len(sleeps) == 1:
            holder.__exit__(None, None, None)
            return
        raise Stop

    monkeypatch.setattr(schedule.time, "sleep", wake)
    with pytest.raises(Stop):
        schedule.run_forever(settings, ScheduleConfig(jobs=[job]), report=said.append)
    assert said[1] == "another schedule runner holds the lock: waiting"
    assert len(sleeps) == 2 and all(0 < seconds <= 60.5 for seconds in sleeps)
    assert any("exit 0" in line and "succeeded" in line for line in said[2:]), said
    assert [record["status"] for record in read_history(settings)] == ["succeeded"]
