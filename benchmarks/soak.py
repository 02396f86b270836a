"""Soak: one endpoint at 80% of its measured maximum throughput for minutes, open loop.

First short closed-loop probes (as `benchmark overload` measures them) give the endpoint's unloaded
p99 (one client) and its maximum (200s per second, so fast refusals do not count as throughput,
climbing the `--probe-concurrency` levels while it grows); then an open-loop rate limiter sends
requests on a fixed schedule at `--share` (0.8) of it for `--minutes` (10), whatever the answers
take, loopback only. A
request's latency counts from the moment the schedule says it is due, so a server falling behind
shows in the figures instead of slowing the sender down. At most `--max-in-flight` requests are
open at once: a due request beyond that is counted as `skipped` (the server is not keeping up).

It reports the requests sent, errors by status (`0 no answer`: timeout, refused or dropped connection),
p50/p99 latency and throughput per `--window-s` (30 s) window over time, each window's p99 against
the unloaded p99 with issue #14's target (p99 <= 2x unloaded per window) met or MISSED, and the
resident memory (RSS) of every serving process (GCS, raylet, Serve controller, proxy, replicas, Ray
workers and agents) at the start and the end: growth in MB and % per process and in total.
`--json PATH` writes all of it as one object, with n, n_of, ci95_of, ci95_low and ci95_high: the
seeded bootstrap 95% interval of p99 over the requests (of the soak, and of each window).

    tradewind benchmark soak --minutes 10 --endpoint recommend --json soak.json

By default it starts configs/serving.yaml itself for the platform's data folder (or --data-dir;
`--prepare-scale N` runs `tradewind demo --scale N` into it first), as `tradewind benchmark
serving` does; `--url http://127.0.0.1:8000` soaks a server already running instead.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np

from benchmarks.overload import MAX_LEVELS, measure_maximum
from benchmarks.serving import (
    API_KEY_ENV,
    PATHS,
    SERVING_CONFIG_HELP,
    api_headers,
    measure,
    request_makers,
    serving_target,
)
from configs import InputError
from training.evaluation.intervals import quantile_interval

SOAKED = ("recommend", "forecast", "bid", "echo")
P99_TARGET = 2.0  # x the unloaded p99, per window (issue #14)
RAY_DAEMONS = ("gcs_server", "raylet")


@dataclass
class Window:
    start_s: float  # from the start of the soak
    requests: int
    errors: int
    p50_ms: float
    p99_ms: float
    rps: float
    rss_mb: float | None = None  # all serving processes, sampled as the window closed
    p99_vs_unloaded: float = float("nan")  # p99_ms / the unloaded p99
    target_met: bool = False  # p99_vs_unloaded <= P99_TARGET
    # p99's seeded bootstrap interval over the window's requests
    n: int = 0
    n_of: str = "requests"
    ci95_of: str = "p99_ms"
    ci95_low: float = float("nan")
    ci95_high: float = float("nan")


@dataclass
class ProcessMemory:
    pid: int
    title: str
    start_mb: float | None  # None: the process did not exist at the start
    end_mb: float | None  # None: it had gone by the end

    @property
    def growth_mb(self) -> float | None:
        if self.start_mb is None or self.end_mb is None:
            return None
        return self.end_mb - self.start_mb


@dataclass
class SoakReport:
    endpoint: str
    minutes: float
    max_rps: float  # 200s per second of the probe
    target_rps: float
    unloaded_p99_ms: float  # closed loop, one client, before the soak
    achieved_rps: float
    requests: int
    skipped: int
    statuses: dict[str, int]
    errors: dict[str, int]
    p50_ms: float
    p99_ms: float
    windows: list[Window]
    memory_start_mb: float
    memory_end_mb: float
    processes: list[ProcessMemory] = field(default_factory=list)
    # p99's seeded bootstrap interval over every request of the soak
    n: int = 0
    n_of: str = "requests"
    ci95_of: str = "p99_ms"
    ci95_low: float = float("nan")
    ci95_high: float = float("nan")

    @property
    def memory_growth_mb(self) -> float:
        return self.memory_end_mb - self.memory_start_mb

    @property
    def memory_growth_pct(self) -> float:
        return 100.0 * self.memory_growth_mb / self.memory_start_mb if self.memory_start_mb else float("nan")

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["memory_growth_mb"] = round(self.memory_growth_mb, 1)
        data["memory_growth_pct"] = round(self.memory_growth_pct, 2)
        data["processes"] = [
            {**asdict(process), "growth_mb": process.growth_mb} for process in self.processes
        ]
        return data


# ---------------------------------------------------------------------------------------------
# the serving processes and their memory


def serving_processes(url: str) -> dict[int, str]:
    """Every process of the Ray instance that serves `url`, pid -> title: the process listening on
    the port is Serve's proxy, a Ray worker; its raylet's parent started the instance (`ray start`,
    or the driver that ran ray.init), and the Ray processes below that parent are the instance's
    (other Ray instances on the machine are not counted). When the listener cannot be found, every
    Ray process of the machine."""
    import psutil

    port = urlparse(url).port or 80
    root: Any = None
    try:
        listeners = [
            connection.pid
            for connection in psutil.net_connections(kind="tcp")
            if connection.laddr and connection.laddr.port == port and connection.status == psutil.CONN_LISTEN
        ]
    except psutil.AccessDenied:
        listeners = []
    for pid in listeners:
        try:
            process = psutil.Process(pid)
            for ancestor in [process, *process.parents()]:
                if ancestor.name() == "raylet":
                    root = ancestor.parent()
                    break
        except psutil.Error:
            continue
        if root is not None:
            break
    candidates = root.children(recursive=True) if root is not None else list(psutil.process_iter())
    found: dict[int, str] = {}
    for process in candidates:
        try:
            title = _ray_title(process.name(), process.cmdline())
        except psutil.Error:
            continue
        if title:
            found[process.pid] = title
    return found


def _ray_title(name: str, cmdline: list[str]) -> str | None:
    if name in RAY_DAEMONS:
        return name
    command = " ".join(cmdline)
    if command.startswith("ray::"):
        # a worker's title names the task it runs now (`ray::ServeController.listen_for_change`)
        return command.split()[0].split(".")[0]
    if "/ray/" in command and command.split()[0].rsplit("/", 1)[-1].startswith("python"):
        script = next((part for part in cmdline[1:] if part.endswith(".py")), None)
        return f"ray {Path(script).name}" if script else None
    return None


def resident_mb(pids: Sequence[int]) -> dict[int, float]:
    """RSS in MB of each of `pids` still running."""
    import psutil

    memory: dict[int, float] = {}
    for pid in pids:
        try:
            memory[pid] = psutil.Process(pid).memory_info().rss / 2**20
        except psutil.Error:
            continue
    return memory


def process_table(
    start: dict[int, str], end: dict[int, str], before: dict[int, float], after: dict[int, float]
) -> list[ProcessMemory]:
    titles = {**start, **end}
    rows = [
        ProcessMemory(pid, titles[pid], before.get(pid), after.get(pid))
        for pid in sorted(titles, key=lambda pid: (titles[pid], pid))
    ]
    return [row for row in rows if row.start_mb is not None or row.end_mb is not None]


# ---------------------------------------------------------------------------------------------
# the open-loop run


@dataclass
class Sent:
    due_s: float  # when the schedule said it was due, from the start of the soak
    latency_s: float
    status: str  # "200", "503", ... or "0 no answer" (timeout, refused or dropped connection)


async def open_loop(
    url: str,
    path: str,
    bodies: Callable[[], dict[str, Any]],
    rate: float,
    seconds: float,
    max_in_flight: int,
    on_window: Callable[[int], None] | None = None,
    window_s: float = 30.0,
    headers: dict[str, str] | None = None,
) -> tuple[list[Sent], int]:
    """Send requests due every 1/rate s for `seconds`; (every request sent, how many were skipped
    because `max_in_flight` were still open). `on_window(index)` runs (in a thread) as each
    window of `window_s` closes. Requests go through the generator's light client (`poster`)."""
    from benchmarks.load_generator import poster

    sent: list[Sent] = []
    skipped = 0
    tasks: set[asyncio.Task] = set()
    samples: list[asyncio.Task] = []
    async with poster("raw", url, max_in_flight, 30.0, headers) as post:

        async def one(due_s: float, due_at: float) -> None:
            code, _ = await post(path, bodies())
            status = str(code) if code else "0 no answer"
            sent.append(Sent(due_s, time.perf_counter() - due_at, status))

        started = time.perf_counter()
        total = math.floor(seconds * rate)
        window = 0
        for index in range(total):
            due_s = index / rate
            due_at = started + due_s
            delay = due_at - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            if on_window is not None and due_s >= (window + 1) * window_s:
                # sampled beside the schedule, not in its way
                samples.append(asyncio.create_task(asyncio.to_thread(on_window, window)))
                window += 1
            if len(tasks) >= max_in_flight:
                skipped += 1
                continue
            task = asyncio.create_task(one(due_s, due_at))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        if tasks:
            await asyncio.wait(tasks, timeout=35.0)
        if on_window is not None:
            await asyncio.gather(*samples)
            await asyncio.to_thread(on_window, window)
    return sent, skipped


def percentiles(latencies_s: list[float]) -> tuple[float, float]:
    if not latencies_s:
        return 0.0, 0.0
    values = np.array(latencies_s) * 1000.0
    return float(np.percentile(values, 50)), float(np.percentile(values, 99))


def p99_interval(latencies_s: list[float]) -> dict[str, float | int]:
    """n, ci95_low and ci95_high of p99 (ms) over these requests, rounded like the figures."""
    interval = quantile_interval(np.array(latencies_s) * 1000.0, 0.99)
    return {"n": interval.n, "ci95_low": round(interval.low, 2), "ci95_high": round(interval.high, 2)}


def windows_of(
    sent: list[Sent], window_s: float, rss_by_window: dict[int, float], unloaded_p99_ms: float
) -> list[Window]:
    grouped: dict[int, list[Sent]] = {}
    for request in sent:
        grouped.setdefault(int(request.due_s // window_s), []).append(request)
    windows = []
    for index in sorted(grouped):
        members = grouped[index]
        # the latencies of the answered requests: a 503 is admission control refusing at once
        answered = [request.latency_s for request in members if request.status == "200"]
        p50, p99 = percentiles(answered)
        errors = sum(request.status != "200" for request in members)
        rss = rss_by_window.get(index)
        windows.append(
            Window(
                index * window_s,
                len(members),
                errors,
                round(p50, 2),
                round(p99, 2),
                len(members) / window_s,
                rss,
                round(p99 / unloaded_p99_ms, 3) if unloaded_p99_ms else float("nan"),
                bool(unloaded_p99_ms) and bool(answered) and p99 <= P99_TARGET * unloaded_p99_ms,
                **p99_interval(answered),
            )
        )
    return windows


def soak(url: str, settings: Any, args: argparse.Namespace) -> SoakReport:
    path = PATHS[args.endpoint]
    headers = api_headers(args)
    bodies = request_makers(settings, url, headers=headers)[args.endpoint]
    print(f"warming {path} ...", flush=True)
    asyncio.run(measure(url, path, bodies, 4, 50, 30.0, headers))
    # the maximum as `benchmark overload` measures it: 200s per second (fast 503s are not
    # throughput), climbing the levels while it still grows; a level past the admission limit
    # spends the server's time on refusals and would understate it
    maximum = measure_maximum(url, path, bodies, args.probe_levels, args.probe_seconds, headers)
    max_rps = maximum.rps
    target = args.share * max_rps
    levels = ", ".join(f"{level}: {rps:.1f}" for level, rps in maximum.by_level.items())
    print(
        f"unloaded p99 {maximum.unloaded_p99_ms:.1f} ms (concurrency 1); maximum: {max_rps:.1f} rps "
        f"answered 200 at concurrency {maximum.concurrency} ({levels}); "
        f"soaking at {args.share:.0%} = {target:.1f} rps for {args.minutes:g} min",
        flush=True,
    )

    titles = serving_processes(url)
    start_memory = resident_mb(list(titles))
    rss_by_window: dict[int, float] = {}

    def sample(window: int) -> None:
        current = serving_processes(url)
        titles.update(current)
        total = sum(resident_mb(list(current)).values())
        rss_by_window[window] = round(total, 1)
        print(f"  window {window}: serving processes {total:,.0f} MB", flush=True)

    seconds = args.minutes * 60.0
    sent, skipped = asyncio.run(
        open_loop(url, path, bodies, target, seconds, args.max_in_flight, sample, args.window_s, headers)
    )
    end_titles = serving_processes(url)
    end_memory = resident_mb(list(end_titles))
    statuses = Counter(request.status for request in sent)
    p50, p99 = percentiles([request.latency_s for request in sent if request.status == "200"])
    return SoakReport(
        endpoint=args.endpoint,
        minutes=args.minutes,
        max_rps=round(max_rps, 2),
        target_rps=round(target, 2),
        unloaded_p99_ms=round(maximum.unloaded_p99_ms, 2),
        achieved_rps=round(len(sent) / seconds, 2) if seconds else 0.0,
        requests=len(sent),
        skipped=skipped,
        statuses=dict(sorted(statuses.items())),
        errors={status: count for status, count in sorted(statuses.items()) if status != "200"},
        p50_ms=round(p50, 2),
        p99_ms=round(p99, 2),
        windows=windows_of(sent, args.window_s, rss_by_window, maximum.unloaded_p99_ms),
        memory_start_mb=round(sum(start_memory.values()), 1),
        memory_end_mb=round(sum(end_memory.values()), 1),
        processes=process_table(
            {pid: titles[pid] for pid in start_memory}, end_titles, start_memory, end_memory
        ),
        **p99_interval([request.latency_s for request in sent]),
    )


def format_report(report: SoakReport) -> str:
    error_count = sum(report.errors.values())
    lines = [
        f"/{report.endpoint}: {report.requests} requests in {report.minutes:g} min at "
        f"{report.target_rps:.1f} rps target ({report.achieved_rps:.1f} achieved; max measured "
        f"{report.max_rps:.1f}), "
        f"{error_count} errors ({100.0 * error_count / max(report.requests, 1):.2f}%), "
        f"{report.skipped} skipped, p50 {report.p50_ms:.1f} ms, p99 {report.p99_ms:.1f} ms "
        f"(95% CI [{report.ci95_low:.1f}, {report.ci95_high:.1f}] over {report.n} requests)",
        f"statuses: {', '.join(f'{status}: {count}' for status, count in report.statuses.items()) or '-'}",
        f"unloaded p99 {report.unloaded_p99_ms:.1f} ms (concurrency 1); target per window: "
        f"p99 <= {P99_TARGET:g}x unloaded, met in {sum(w.target_met for w in report.windows)} "
        f"of {len(report.windows)} windows",
        "",
        f"{'window s':>9} {'requests':>8} {'errors':>6} {'p50 ms':>8} {'p99 ms':>8} {'p99 95% CI':>17} "
        f"{'rps':>7} {'RSS MB':>8} {'p99/unl':>7}  target",
    ]
    for window in report.windows:
        rss = f"{window.rss_mb:,.0f}" if window.rss_mb is not None else "-"
        interval = f"[{window.ci95_low:.1f}, {window.ci95_high:.1f}]"
        lines.append(
            f"{window.start_s:>9.0f} {window.requests:>8} {window.errors:>6} {window.p50_ms:>8.1f} "
            f"{window.p99_ms:>8.1f} {interval:>17} {window.rps:>7.1f} {rss:>8} "
            f"{window.p99_vs_unloaded:>7.2f}  p99<={P99_TARGET:g}x {'met' if window.target_met else 'MISSED'}"
        )
    lines += [
        "",
        f"serving processes resident memory: {report.memory_start_mb:,.0f} MB at the start, "
        f"{report.memory_end_mb:,.0f} MB at the end: {report.memory_growth_mb:+,.1f} MB "
        f"({report.memory_growth_pct:+.1f}%)",
        f"{'pid':>8} {'process':<48} {'start MB':>9} {'end MB':>9} {'growth MB':>10} {'growth %':>9}",
    ]
    for process in report.processes:
        start = f"{process.start_mb:,.1f}" if process.start_mb is not None else "(new)"
        end = f"{process.end_mb:,.1f}" if process.end_mb is not None else "(gone)"
        growth = process.growth_mb
        percent = (
            f"{100.0 * growth / process.start_mb:+.1f}" if growth is not None and process.start_mb else "-"
        )
        lines.append(
            f"{process.pid:>8} {process.title[:48]:<48} {start:>9} {end:>9} "
            f"{(f'{growth:+,.1f}' if growth is not None else '-'):>10} {percent:>9}"
        )
    return "\n".join(lines)


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="tradewind benchmark soak", description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="soak a server already running on loopback (default: start one)")
    parser.add_argument(
        "--api-key",
        help=f"with --url: the key sent as Authorization: Bearer (default ${API_KEY_ENV}); "
        "a server started here gets a key of its own",
    )
    parser.add_argument(
        "--data-dir", type=Path, help="data folder to serve from (default: platform settings)"
    )
    parser.add_argument(
        "--prepare-scale", type=float, help="first run `tradewind demo --scale N` into --data-dir"
    )
    parser.add_argument("--serving-config", help=SERVING_CONFIG_HELP)
    parser.add_argument(
        "--endpoint", default="recommend", choices=SOAKED, help="endpoint to soak (recommend)"
    )
    parser.add_argument("--minutes", type=float, default=10.0, help="length of the soak (10)")
    parser.add_argument(
        "--share", type=float, default=0.8, help="share of the measured maximum to send (0.8)"
    )
    parser.add_argument("--window-s", type=float, default=30.0, help="latency window (30 s)")
    parser.add_argument(
        "--probe-seconds", type=float, default=10.0, help="length of the maximum probe (10 s)"
    )
    parser.add_argument(
        "--probe-concurrency",
        default=MAX_LEVELS,
        help=f"closed-loop levels of the maximum probe, climbed while 200s per second grow ({MAX_LEVELS})",
    )
    parser.add_argument("--max-in-flight", type=int, default=256, help="open requests at most (256)")
    parser.add_argument("--json", type=Path, help="write the report as one JSON object here")
    args = parser.parse_args(list(argv))
    if args.minutes <= 0 or args.minutes > 24 * 60:
        parser.error("--minutes must be above 0 and at most 1440")
    if not 0 < args.share <= 1:
        parser.error("--share must be above 0 and at most 1")
    if args.window_s <= 0 or args.probe_seconds <= 0:
        parser.error("--window-s and --probe-seconds must be positive")
    try:
        args.probe_levels = [int(level) for level in str(args.probe_concurrency).split(",") if level.strip()]
    except ValueError:
        parser.error(f"--probe-concurrency: whole numbers, comma-separated, got {args.probe_concurrency!r}")
    if not args.probe_levels or not all(1 <= level <= 1024 for level in args.probe_levels):
        parser.error("--probe-concurrency levels must be 1..1024")
    if not 1 <= args.max_in_flight <= 4096:
        parser.error("--max-in-flight must be 1..4096")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    with serving_target(args) as (url, settings):
        report = soak(url, settings, args)
    print()
    print(format_report(report))
    if args.json:
        args.json.write_text(json.dumps(report.as_dict(), indent=2))
        print(f"wrote {args.json}")
    return 0 if report.requests else 1


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except InputError as error:  # a bad option value: one line, as `tradewind benchmark soak` prints
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
