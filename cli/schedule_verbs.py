"""`tradewind schedule run|status|crontab|systemd` (training/schedule.py does the work)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from cli.reports import console
from configs.settings import load_settings

ScheduleOption = Annotated[
    Path | None, typer.Option("--config", help="Schedule config (default: configs/schedule.yaml).")
]


def schedule_run(
    once: Annotated[
        bool, typer.Option("--once", help="Run what is due now and exit (for cron/systemd).")
    ] = False,
    config: ScheduleOption = None,
) -> None:
    """Run due jobs one at a time as subprocesses; a failed one is retried next tick (see history.jsonl)."""
    from training.schedule import FAILED, load_schedule, run_forever, runner_lock, tick

    settings = load_settings()
    schedule = load_schedule(config)
    if not once:
        run_forever(settings, schedule, report=console.print)
        return
    with runner_lock(settings) as held:
        if not held:
            console.print("another `tradewind schedule run` holds the runner lock: nothing done")
            return
        records = tick(settings, schedule, report=console.print)
    if not records:
        console.print("no job due")
    if any(record["status"] in FAILED for record in records):
        raise typer.Exit(1)


def schedule_status(config: ScheduleOption = None) -> None:
    """Each job's cadence, latest and next occurrence, state and last run."""
    from datetime import UTC, datetime

    from training.schedule import job_state, load_schedule, next_occurrence, read_history

    settings = load_settings()
    schedule = load_schedule(config)
    history = read_history(settings)
    now = datetime.now(UTC)
    console.print(f"schedule: {len(schedule.jobs)} jobs, cadences in {schedule.timezone}; times below in UTC")
    for job in schedule.jobs:
        state = job_state(job, history, now, schedule.timezone)
        last = state.last
        last_text = (
            f"last run {last['status']} (exit {last['exit_code']}) at {last['started'][:16]}, "
            f"log {last['log']}"
            if last
            else "never run"
        )
        console.print(
            f"{job.name}: {job.when} retrain of {job.model} at '{job.cadence}'; "
            f"occurrence {state.occurrence:%Y-%m-%d %H:%M}: {state.summary}; {last_text}; "
            f"next {next_occurrence(job, now, schedule.timezone):%Y-%m-%d %H:%M}",
            soft_wrap=True,
        )


def schedule_crontab(config: ScheduleOption = None) -> None:
    """Print a crontab that ticks `tradewind schedule run --once` every minute (`... | crontab -`)."""
    from training.schedule import crontab_text, load_schedule

    sys.stdout.write(crontab_text(load_settings(), load_schedule(config), config))


def schedule_systemd(
    config: ScheduleOption = None,
    output_dir: Annotated[
        Path | None, typer.Option(help="Write the two unit files here instead of printing them.")
    ] = None,
) -> None:
    """Print (or write) tradewind-schedule.service and .timer: a oneshot tick every minute."""
    from training.schedule import load_schedule, systemd_units

    units = systemd_units(load_settings(), load_schedule(config), config)
    for name, text in units.items():
        if output_dir is not None:
            output_dir.mkdir(parents=True, exist_ok=True)
            (output_dir / name).write_text(text)
            console.print(f"wrote {output_dir / name}")
        else:
            sys.stdout.write(f"# ---- {name}\n{text}\n")
    if output_dir is not None:
        console.print(
            "install: copy both to /etc/systemd/system/, then systemctl enable --now tradewind-schedule.timer"
        )
