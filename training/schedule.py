"""Scheduled retraining: configs/schedule.yaml and `tradewind schedule run|status|crontab|systemd`.

A job names a model, a cadence (a cron expression, or `hourly`, `daily` = 00:00, `weekly` = Monday
00:00, in the config's time zone) and `when`: `always` runs `tradewind retrain MODEL` at every
occurrence; `drift` runs `tradewind monitor MODEL --exit-code` first and retrains only when it says
so (exit 4), recording the occurrence as `skipped` otherwise.

The runner (`tradewind schedule run`, or `--once` for cron and systemd timers) wakes each minute and
runs the jobs that are due, one at a time, each step as a subprocess, so a crashing or hanging job
(it is killed after `timeout_minutes`) never takes the runner down. A job is due while its latest
occurrence (the last cadence time at or before now) has not succeeded and has failed at most
`retries` times; so a failed run is retried on the next tick, and a runner started after a missed
occurrence catches up on the latest one (only that one). Exit code 3 from `tradewind retrain` means
another retrain of the model holds its lock: recorded as `locked`, not a failure, retried next tick.

Every attempt is a line of `<data>/schedule/history.jsonl`: job, model, occurrence, attempt, status
(succeeded | skipped | failed | timeout | locked), exit code, duration, the log file under
`<data>/schedule/logs/` (the steps' whole output, kept) and, for the default commands, the MLflow run
id and status of each step's run (`retrain-<model>`, `monitor-<model>`). A lock file keeps two runners
(a cron tick while the last one still works) from running at once.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter
from pydantic import Field, field_validator, model_validator

from configs import PROJECT_ROOT, StrictModel, config_path, load_config
from configs.settings import Settings

CONFIG_NAME = "schedule"
CADENCE_ALIASES = {"hourly": "0 * * * *", "daily": "0 0 * * *", "weekly": "0 0 * * 1"}
LOCKED_EXIT = 3  # `tradewind retrain`: another retrain of the model holds the lock
RETRAIN_ADVISED_EXIT = 4  # `tradewind monitor --exit-code`: drift or error change says retrain
COMMAND_NOT_STARTED_EXIT = 127  # the step's program could not be started (as a shell reports it)
# statuses that close an occurrence, and those that count against its retries
DONE = ("succeeded", "skipped")
FAILED = ("failed", "timeout")
Status = Literal["succeeded", "skipped", "failed", "timeout", "locked"]


class Job(StrictModel):
    """One scheduled job of configs/schedule.yaml."""

    name: str = ""  # default: the model
    model: Literal["recommender", "forecaster", "bidder"]
    cadence: str  # cron expression (minute hour day-of-month month day-of-week) or hourly/daily/weekly
    when: Literal["always", "drift"] = "always"
    retries: int = Field(3, ge=0)  # failed attempts retried per occurrence, one a tick
    timeout_minutes: float = Field(240.0, gt=0)  # a step running longer is killed and counts as failed
    # argv overrides ("{model}" is replaced); default `tradewind retrain MODEL` / `tradewind monitor
    # MODEL --exit-code` in this environment, on the runner's data folder
    command: list[str] | None = None
    monitor_command: list[str] | None = None

    @field_validator("cadence")
    @classmethod
    def _valid_cadence(cls, value: str) -> str:
        expression = CADENCE_ALIASES.get(value.strip(), value.strip())
        if not croniter.is_valid(expression):
            raise ValueError(
                "not a cron expression (minute hour day month weekday) nor one of "
                + ", ".join(CADENCE_ALIASES)
            )
        return value.strip()

    @model_validator(mode="after")
    def _default_name(self) -> Job:
        if not self.name:
            object.__setattr__(self, "name", self.model)
        return self

    @property
    def expression(self) -> str:
        return CADENCE_ALIASES.get(self.cadence, self.cadence)


class ScheduleConfig(StrictModel):
    """configs/schedule.yaml."""

    timezone: str = "UTC"  # the cadences' time zone
    jobs: list[Job] = Field(default_factory=list)

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"unknown time zone {value!r} (an IANA name such as UTC or Europe/Berlin)"
            ) from None
        return value

    @model_validator(mode="after")
    def _unique_names(self) -> ScheduleConfig:
        names = [job.name for job in self.jobs]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise ValueError(f"job names must be unique: {', '.join(repeated)} (set `name:` on each)")
        return self

    def job(self, name: str) -> Job:
        for job in self.jobs:
            if job.name == name:
                return job
        raise LookupError(f"no job {name!r} in the schedule (jobs: {', '.join(j.name for j in self.jobs)})")


def load_schedule(path: str | Path | None = None) -> ScheduleConfig:
    return load_config(path or CONFIG_NAME, ScheduleConfig)


# ---------------------------------------------------------------------------------------------
# when a job is due


def schedule_dir(settings: Settings) -> Path:
    return settings.root / "schedule"


def history_path(settings: Settings) -> Path:
    return schedule_dir(settings) / "history.jsonl"


def read_history(settings: Settings) -> list[dict[str, Any]]:
    path = history_path(settings)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _append_history(settings: Settings, record: Mapping[str, Any]) -> None:
    path = history_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        handle.write(json.dumps(dict(record), sort_keys=True) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def latest_occurrence(job: Job, now: datetime, timezone: str) -> datetime:
    """The last cadence time at or before `now`, in UTC."""
    local = now.astimezone(ZoneInfo(timezone))
    # croniter's get_prev is strictly before its start: start a second later so `now` itself counts
    previous = croniter(job.expression, local + timedelta(seconds=1)).get_prev(datetime)
    return previous.astimezone(UTC)


def next_occurrence(job: Job, now: datetime, timezone: str) -> datetime:
    local = now.astimezone(ZoneInfo(timezone))
    return croniter(job.expression, local).get_next(datetime).astimezone(UTC)


@dataclass(frozen=True)
class JobState:
    job: Job
    occurrence: datetime  # the latest scheduled time at or before now
    due: bool
    failures: int  # failed attempts of this occurrence
    attempts: int  # all attempts of this occurrence (locked ones included)
    last: Mapping[str, Any] | None  # the job's latest record, any occurrence

    @property
    def summary(self) -> str:
        if self.due:
            if self.failures:
                return f"due: retry {self.failures} of {self.job.retries} after a failure"
            return "due"
        if self.failures > self.job.retries:
            return f"gave up on this occurrence after {self.failures} failures: waits for the next one"
        return "done for this occurrence"


def job_state(job: Job, history: Sequence[Mapping[str, Any]], now: datetime, timezone: str) -> JobState:
    occurrence = latest_occurrence(job, now, timezone)
    mine = [record for record in history if record.get("job") == job.name]
    this = [record for record in mine if record.get("scheduled_for") == occurrence.isoformat()]
    done = any(record.get("status") in DONE for record in this)
    failures = sum(record.get("status") in FAILED for record in this)
    due = not done and failures <= job.retries
    return JobState(job, occurrence, due, failures, len(this), mine[-1] if mine else None)


# ---------------------------------------------------------------------------------------------
# running a job


def tradewind_argv(settings: Settings, *args: str) -> list[str]:
    """`tradewind --data-dir <data> ARGS` with this environment's interpreter."""
    return [sys.executable, "-m", "cli", "--data-dir", str(settings.root), *args]


def retrain_argv(settings: Settings, job: Job) -> list[str]:
    if job.command is not None:
        return [part.replace("{model}", job.model) for part in job.command]
    return tradewind_argv(settings, "retrain", job.model)


def monitor_argv(settings: Settings, job: Job) -> list[str]:
    if job.monitor_command is not None:
        return [part.replace("{model}", job.model) for part in job.monitor_command]
    return tradewind_argv(settings, "monitor", job.model, "--exit-code")


def run_step(argv: Sequence[str], log: Any, timeout_s: float, env: Mapping[str, str]) -> int | None:
    """Run one step with its output appended to `log`; its exit code, or None if it timed out (then
    it and its children are killed). Ctrl-C on the runner stops the step too."""
    log.write(f"$ {' '.join(argv)}\n")
    log.flush()
    try:
        process = subprocess.Popen(
            list(argv),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=PROJECT_ROOT,
            env=dict(env),
            start_new_session=True,  # its own process group: a timeout kills its children as well
        )
    except OSError as error:  # a command that cannot start is a failed step, as a shell says 127
        log.write(f"[tradewind schedule] cannot start {argv[0]}: {error}\n")
        return COMMAND_NOT_STARTED_EXIT
    try:
        return process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        _stop(process)
        log.write(f"\n[tradewind schedule] killed after {timeout_s:.0f} s (timeout_minutes)\n")
        return None
    except BaseException:
        _stop(process)
        raise


def _stop(process: subprocess.Popen) -> None:
    for sig, wait_s in ((signal.SIGTERM, 30.0), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=wait_s)
            return
        except subprocess.TimeoutExpired:
            continue


def mlflow_run(settings: Settings, run_name: str, started: datetime) -> dict[str, str] | None:
    """The id and status of the newest MLflow run named `run_name` started since `started`."""
    try:
        from tracking.runs import configure_tracking, tracking_client

        experiment = configure_tracking(settings)
        runs = tracking_client().search_runs(
            [experiment],
            filter_string=f"attributes.run_name = '{run_name}' "
            f"and attributes.start_time >= {int(started.timestamp() * 1000)}",
            order_by=["attributes.start_time DESC"],
            max_results=1,
        )
    except Exception as error:  # the record is written without it; the log says why
        return {"error": f"{type(error).__name__}: {error}"}
    if not runs:
        return None
    return {"run_id": runs[0].info.run_id, "status": runs[0].info.status}


def run_job(
    settings: Settings, job: Job, occurrence: datetime, attempt: int, now: Callable[[], datetime]
) -> dict[str, Any]:
    """One attempt of `job` for `occurrence`: its steps as subprocesses; the history record."""
    started = now()
    logs = schedule_dir(settings) / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    log_path = logs / f"{job.name}-{started:%Y%m%dT%H%M%S}Z-{attempt}.log"
    env = {**os.environ, "TRADEWIND_DATA_DIR": str(settings.root)}
    timeout_s = job.timeout_minutes * 60
    steps: list[dict[str, Any]] = []
    status: Status = "failed"
    clock = time.perf_counter()
    with log_path.open("w") as log:
        log.write(
            f"[tradewind schedule] job {job.name}, occurrence {occurrence.isoformat()}, attempt {attempt}\n"
        )
        plan = [("monitor", monitor_argv(settings, job))] if job.when == "drift" else []
        plan.append(("retrain", retrain_argv(settings, job)))
        for step, argv in plan:
            step_started = now()
            step_clock = time.perf_counter()
            code = run_step(argv, log, timeout_s, env)
            entry: dict[str, Any] = {
                "step": step,
                "argv": list(argv),
                "exit_code": code,
                "seconds": round(time.perf_counter() - step_clock, 3),
            }
            if (job.command is None and step == "retrain") or (
                job.monitor_command is None and step == "monitor"
            ):
                entry["mlflow"] = mlflow_run(settings, f"{step}-{job.model}", step_started)
            steps.append(entry)
            if code is None:
                status = "timeout"
                break
            if step == "monitor":
                if code == 0:
                    status = "skipped"  # monitoring says the champion is fine
                    break
                if code != RETRAIN_ADVISED_EXIT:
                    status = "failed"
                    break
                continue
            status = "succeeded" if code == 0 else "locked" if code == LOCKED_EXIT else "failed"
    last = steps[-1]
    return {
        "job": job.name,
        "model": job.model,
        "when": job.when,
        "scheduled_for": occurrence.isoformat(),
        "attempt": attempt,
        "started": started.isoformat(),
        "seconds": round(time.perf_counter() - clock, 3),
        "status": status,
        "exit_code": last["exit_code"],
        "step": last["step"],
        "log": str(log_path),
        "mlflow_run_id": (last.get("mlflow") or {}).get("run_id"),
        "mlflow_status": (last.get("mlflow") or {}).get("status"),
        "steps": steps,
    }


@contextmanager
def runner_lock(settings: Settings) -> Iterator[bool]:
    """Hold `<data>/schedule/runner.lock`; yields False (and holds nothing) if another runner has it."""
    path = schedule_dir(settings) / "runner.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            handle.seek(0)
            handle.truncate()
            handle.write(str(os.getpid()))
            handle.flush()
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def tick(
    settings: Settings,
    config: ScheduleConfig,
    now: Callable[[], datetime] | None = None,
    report: Callable[[str], None] = print,
) -> list[dict[str, Any]]:
    """Run every job due now, one at a time; returns the records written (empty: nothing was due)."""
    clock = now or (lambda: datetime.now(UTC))
    moment = clock()
    history = read_history(settings)
    records = []
    for job in config.jobs:
        state = job_state(job, history, moment, config.timezone)
        if not state.due:
            continue
        report(f"{job.name}: {state.summary} (occurrence {state.occurrence:%Y-%m-%d %H:%M} UTC), running")
        record = run_job(settings, job, state.occurrence, state.attempts + 1, clock)
        _append_history(settings, record)
        history.append(record)
        records.append(record)
        report(describe_record(record, job_state(job, history, moment, config.timezone)))
    return records


def describe_record(record: Mapping[str, Any], after: JobState) -> str:
    """One line on an attempt: what ran, how it ended, what happens next, where the log is."""
    status = record["status"]
    where = f"log {record['log']}"
    if record.get("mlflow_run_id"):
        where += f", MLflow run {record['mlflow_run_id']} ({record.get('mlflow_status')})"
    job = after.job
    head = f"{job.name}: {record['step']} exit {record['exit_code']} in {record['seconds']:.1f} s: {status}"
    if status in FAILED:
        if after.due:
            return f"{head}; retried next tick (retry {after.failures} of {job.retries}); {where}"
        return f"{head}; no retries left for this occurrence; {where}"
    if status == "locked":
        return f"{head}: another retrain of {job.model} holds the lock; retried next tick; {where}"
    return f"{head}; {where}"


def run_forever(
    settings: Settings, config: ScheduleConfig, report: Callable[[str], None] = print
) -> None:  # pragma: no cover - the loop around `tick`, which the tests drive directly
    report(f"schedule runner: {len(config.jobs)} jobs, waking every minute (Ctrl-C stops)")
    while True:
        with runner_lock(settings) as held:
            if held:
                tick(settings, config, report=report)
            else:
                report("another schedule runner holds the lock: waiting")
        now = time.time()
        time.sleep(60 - now % 60 + 0.5)


# ---------------------------------------------------------------------------------------------
# crontab and systemd


def _tradewind_command() -> str:
    script = Path(sys.executable).parent / "tradewind"
    return str(script) if script.exists() else f"{sys.executable} -m cli"


def _schedule_option(path: str | Path | None) -> str:
    return f" --config {config_path(path).resolve()}" if path is not None else ""


def job_lines(config: ScheduleConfig) -> list[str]:
    return [
        f"job {job.name}: {job.when} -> tradewind "
        f"{'monitor then retrain' if job.when == 'drift' else 'retrain'} {job.model}, "
        f"cadence '{job.cadence}' ({config.timezone}), {job.retries} retries, "
        f"timeout {job.timeout_minutes:g} min"
        for job in config.jobs
    ]


def crontab_text(settings: Settings, config: ScheduleConfig, schedule_path: str | Path | None = None) -> str:
    """A crontab: one line ticking the runner every minute; the jobs and cadences as comments.

    Cron only ticks: the runner decides what is due, so retries, history, drift checks and the lock
    work the same under cron as under `tradewind schedule run`."""
    data = settings.root
    command = (
        f"mkdir -p {schedule_dir(settings)} && cd {PROJECT_ROOT} && "
        f"{_tradewind_command()} --data-dir {data} schedule run --once"
        f"{_schedule_option(schedule_path)} >> {schedule_dir(settings) / 'cron.log'} 2>&1"
    )
    lines = [
        "# Tradewind scheduled retraining (configs/schedule.yaml)",
        "# install: tradewind schedule crontab | crontab -  (this replaces the crontab: merge by hand)",
        "# cron wakes the runner every minute; it runs the jobs that are due, one at a time, records them in",
        f"# {history_path(settings)} and retries a failed one on the next tick.",
        *(f"#   {line}" for line in job_lines(config)),
        f"* * * * * {command}",
    ]
    return "\n".join(lines) + "\n"


def systemd_units(
    settings: Settings, config: ScheduleConfig, schedule_path: str | Path | None = None
) -> dict[str, str]:
    """`tradewind-schedule.service` (one tick) and `tradewind-schedule.timer` (every minute)."""
    jobs = "\n".join(f"# {line}" for line in job_lines(config))
    service = f"""[Unit]
Description=Tradewind scheduled retraining: run the jobs of configs/schedule.yaml that are due
After=network-online.target
{jobs}

[Service]
Type=oneshot
WorkingDirectory={PROJECT_ROOT}
Environment=TRADEWIND_DATA_DIR={settings.root}
ExecStart={_tradewind_command()} schedule run --once{_schedule_option(schedule_path)}
"""
    timer = """[Unit]
Description=Tick the Tradewind schedule runner every minute

[Timer]
OnCalendar=*-*-* *:*:00
Persistent=true
AccuracySec=1s

[Install]
WantedBy=timers.target
"""
    return {"tradewind-schedule.service": service, "tradewind-schedule.timer": timer}
