"""Overload: each endpoint offered 1x, 2x, 4x its measured maximum, open loop: what is accepted,
what is refused (503), and how fast each answers.

Per endpoint, first the maximum: closed loops (benchmarks/serving.py's request bodies, every
worker waiting for its answer) at `--max-concurrency` levels (4,8,16,32) for `--probe-seconds`
each, climbing until accepted answers (200s) per second stop growing by 5%; the best level's
200s per second is the maximum, and the level is printed (a worker refused with 503 sends again at
once, so refusals cost the server some of its capacity there too). The unloaded p99 is a closed loop of
one worker. Then each `--multiples` of the maximum is offered open loop
(benchmarks/load_generator.py, Poisson arrivals by default) for `--seconds`: requests are sent on
their schedule whatever the answers take, and latency counts from each one's intended send time.

Each row (printed, and `--json PATH`: a list) has endpoint, multiple, offered_rps, accepted_rps
(200s per second), refused_rps (503s per second), goodput_ratio (accepted_rps over the maximum),
p99_accepted_ms, p99_refused_ms, unloaded_p99_ms, errors (neither 200 nor 503: other statuses,
timeouts, refused connections), n_accepted, n_refused, the 95% intervals of the three p99s
(`*_ci95_low`/`*_ci95_high`: seeded percentile bootstrap over the requests, as every benchmark
here), retry_after_share (share of the 503s that carried Retry-After; null when there was no 503)
and generator_limited (over
1% of the sends late: the generator, not the server, fell behind). Rates divide by the time from
the first send to the last answer (at least `--seconds`), so a queue drained after the sends stop
is not counted as throughput. The table marks issue #14's targets per row: goodput_ratio >= 0.90,
p99_refused_ms <= 50, p99_accepted_ms <= 3x unloaded, each met or MISSED.

/bid requests carry a `timestamp` on campaign days of their own (far-future dates not used yet in
the data folder's pacing state), at most `--bids-per-day` (100) offered per day so that no day's
budget runs out: 20 days for the probes, then days of their own per multiple. After each multiple
the campaign's pacing on its days (GET /campaigns/{id}/pacing) must count as many reservations as
bids accepted: a refused bid reserves no budget. Fewer is inconclusive (an accepted bid of 0
reserves nothing either).

    tradewind --data-dir DIR benchmark overload --multiples 1,2,4 --seconds 30 --json overload.json

The application is started as `tradewind benchmark serving` starts it (or `--url` measures one
already running, loopback only); with API keys it sends `Authorization: Bearer <key>`. Load goes
through `--client raw` (default; benchmarks/raw_http.py, little CPU per request on the shared
cores) or `--client httpx` (the earlier client, to compare), in the probes and the open loops.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import math
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.load_generator import (
    OpenLoopRun,
    add_open_loop_options,
    comma_numbers,
    open_loop,
    open_loop_options,
    poster,
)
from benchmarks.serving import (
    API_KEY_ENV,
    PATHS,
    SERVING_CONFIG_HELP,
    api_headers,
    request_makers,
    serving_target,
)
from configs import InputError
from training.evaluation.intervals import quantile_interval

ENDPOINTS = ("recommend", "forecast", "bid")
# from 4: a level past an endpoint's admission limit (8 each in configs/serving.yaml) spends the
# server's time refusing resends and understates the maximum, so the probe starts under it
MAX_LEVELS = "4,8,16,32"
GROWTH = 1.05  # a level whose 200s per second beat the best so far by less: throughput stopped growing
GOODPUT_TARGET = 0.90
REFUSAL_P99_TARGET_MS = 50.0
ACCEPTED_P99_TARGET = 3.0  # x the unloaded p99
# /bid's campaign days: far in the future, so no real traffic or earlier test shares them
FIRST_BID_DAY = datetime(2200, 1, 1, 12, tzinfo=UTC)
PROBE_DAYS = 20  # the probes' bids spread over this many days
BIDS_PER_DAY = 100  # offered bids per campaign day at most, so that no day's budget runs out


# ---------------------------------------------------------------------------------------------
# the maximum and the unloaded p99 (closed loop)


@dataclass
class ClosedRun:
    concurrency: int
    statuses: list[int] = field(default_factory=list)
    latencies_ms: list[float] = field(default_factory=list)
    wall_s: float = 0.0

    @property
    def accepted_rps(self) -> float:
        return sum(status == 200 for status in self.statuses) / self.wall_s if self.wall_s else 0.0

    def accepted_ms(self) -> np.ndarray:
        return np.array(
            [ms for ms, status in zip(self.latencies_ms, self.statuses, strict=True) if status == 200]
        )


async def closed_loop(
    url: str,
    path: str,
    body: Callable[[], dict[str, Any]],
    concurrency: int,
    seconds: float,
    headers: dict[str, str] | None = None,
    client: str = "raw",
) -> ClosedRun:
    """`concurrency` workers each POST, wait for the answer, and POST again, for `seconds`.
    `client`: "raw" or "httpx" (benchmarks/load_generator.py's `poster`)."""
    run = ClosedRun(concurrency)
    async with poster(client, url, concurrency, 30.0, headers) as post:
        # the clock starts once the client is up: its start-up is not the run's time
        started = time.perf_counter()
        deadline = started + seconds

        async def worker() -> None:
            while time.perf_counter() < deadline:
                payload = body()
                sent = time.perf_counter()
                status, _ = await post(path, payload)
                run.latencies_ms.append((time.perf_counter() - sent) * 1000.0)
                run.statuses.append(status)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        run.wall_s = time.perf_counter() - started
    return run


@dataclass(frozen=True)
class Maximum:
    rps: float  # 200s per second at the best level
    concurrency: int  # that level
    by_level: dict[int, float]  # every level tried: 200s per second
    unloaded_p99_ms: float
    unloaded_ci95: tuple[float, float]


def measure_maximum(
    url: str,
    path: str,
    body: Callable[[], dict[str, Any]],
    levels: Sequence[int],
    seconds: float,
    headers: dict[str, str] | None = None,
    client: str = "raw",
) -> Maximum:
    """The unloaded p99 (one worker), then the closed-loop levels in order until 200s per second
    stop growing by `GROWTH`; the maximum is the best level's."""
    alone = asyncio.run(closed_loop(url, path, body, 1, seconds, headers, client))
    unloaded = alone.accepted_ms()
    if not len(unloaded):
        seen = ", ".join(f"{status}: {count}" for status, count in sorted(Counter(alone.statuses).items()))
        raise RuntimeError(f"{path}: no request answered 200 at concurrency 1 (statuses {seen or 'none'})")
    by_level: dict[int, float] = {}
    for level in sorted(levels):
        before = max(by_level.values(), default=0.0)
        closed = closed_loop(url, path, body, level, seconds, headers, client)
        by_level[level] = asyncio.run(closed).accepted_rps
        if before and by_level[level] < GROWTH * before:
            break
    best_level = max(by_level, key=lambda level: by_level[level])
    best = by_level[best_level]
    if best <= 0:
        raise RuntimeError(f"{path}: no request answered 200 at concurrency {', '.join(map(str, by_level))}")
    interval = quantile_interval(unloaded, 0.99)
    return Maximum(
        best, best_level, by_level, float(np.percentile(unloaded, 99)), (interval.low, interval.high)
    )


# ---------------------------------------------------------------------------------------------
# one multiple, open loop


@dataclass
class OverloadRow:
    endpoint: str
    multiple: float
    offered_rps: float
    accepted_rps: float  # 200s per second
    refused_rps: float  # 503s per second
    goodput_ratio: float  # accepted_rps / the measured maximum
    p99_accepted_ms: float | None  # None: nothing of that kind
    p99_refused_ms: float | None
    unloaded_p99_ms: float
    errors: int  # neither 200 nor 503: other statuses, timeouts, refused connections
    n_accepted: int
    n_refused: int
    p99_accepted_ci95_low: float | None
    p99_accepted_ci95_high: float | None
    p99_refused_ci95_low: float | None
    p99_refused_ci95_high: float | None
    unloaded_p99_ci95_low: float | None
    unloaded_p99_ci95_high: float | None
    retry_after_share: float | None  # None: no 503, or the generator does not record the header
    generator_limited: bool

    def targets(self) -> list[tuple[str, bool | None]]:
        """Issue #14's targets: (name, met); None when the row has nothing to judge it on."""
        refused = None if self.p99_refused_ms is None else self.p99_refused_ms <= REFUSAL_P99_TARGET_MS
        accepted = (
            None
            if self.p99_accepted_ms is None
            else self.p99_accepted_ms <= ACCEPTED_P99_TARGET * self.unloaded_p99_ms
        )
        return [
            (f"goodput>={GOODPUT_TARGET:.2f}", self.goodput_ratio >= GOODPUT_TARGET),
            (f"p99 refused<={REFUSAL_P99_TARGET_MS:g}ms", refused),
            (f"p99 accepted<={ACCEPTED_P99_TARGET:g}x unloaded", accepted),
        ]


def _finite(value: float) -> float | None:
    """NaN (no sample) as None: the JSON stays standard."""
    return None if value is None or not math.isfinite(value) else round(float(value), 3)


def overload_row(endpoint: str, multiple: float, maximum: Maximum, run: OpenLoopRun) -> OverloadRow:
    """The row of one open-loop run at `multiple` x the maximum."""
    duration = max(run.wall_s, run.seconds)
    accepted, refused = run.latencies_ms(200), run.latencies_ms(503)
    refusals = [outcome for outcome in run.outcomes if outcome.status == 503]
    # the generator records whether a 503 carried Retry-After once it keeps that header
    flags = [getattr(outcome, "retry_after", None) for outcome in refusals]
    retry_after = None if not flags or None in flags else sum(map(bool, flags)) / len(flags)
    accepted_ci, refused_ci = quantile_interval(accepted, 0.99), quantile_interval(refused, 0.99)
    return OverloadRow(
        endpoint=endpoint,
        multiple=multiple,
        offered_rps=round(run.offered_rps, 3),
        accepted_rps=round(len(accepted) / duration, 3),
        refused_rps=round(len(refused) / duration, 3),
        goodput_ratio=round(len(accepted) / duration / maximum.rps, 4),
        p99_accepted_ms=_finite(np.percentile(accepted, 99)) if len(accepted) else None,
        p99_refused_ms=_finite(np.percentile(refused, 99)) if len(refused) else None,
        unloaded_p99_ms=round(maximum.unloaded_p99_ms, 3),
        errors=sum(outcome.status not in (200, 503) for outcome in run.outcomes),
        n_accepted=len(accepted),
        n_refused=len(refused),
        p99_accepted_ci95_low=_finite(accepted_ci.low),
        p99_accepted_ci95_high=_finite(accepted_ci.high),
        p99_refused_ci95_low=_finite(refused_ci.low),
        p99_refused_ci95_high=_finite(refused_ci.high),
        unloaded_p99_ci95_low=_finite(maximum.unloaded_ci95[0]),
        unloaded_p99_ci95_high=_finite(maximum.unloaded_ci95[1]),
        retry_after_share=None if retry_after is None else round(retry_after, 4),
        generator_limited=run.generator_limited,
    )


# ---------------------------------------------------------------------------------------------
# /bid: budget reserved only for accepted bids


class BidDays:
    """/bid's campaign days, each fresh (a day whose pacing state already counts bids, from an
    earlier run on this data folder, is passed over), and the bodies spread over them."""

    def __init__(self, url: str, campaign_id: str, headers: dict[str, str] | None) -> None:
        self.url, self.campaign_id, self.headers = url, campaign_id, headers
        self.next_moment = FIRST_BID_DAY

    def states(self, timestamps: Sequence[str]) -> list[dict[str, Any]]:
        """GET /campaigns/{id}/pacing of each day."""
        import httpx

        with httpx.Client(base_url=self.url, headers=self.headers, timeout=30.0) as client:
            answers = []
            for timestamp in timestamps:
                response = client.get(
                    f"/campaigns/{self.campaign_id}/pacing", params={"timestamp": timestamp}
                )
                response.raise_for_status()
                answers.append(dict(response.json()))
        return answers

    def fresh(self, count: int) -> list[str]:
        days: list[str] = []
        while len(days) < count:
            wanted = [(self.next_moment + timedelta(days=i)).isoformat() for i in range(count - len(days))]
            self.next_moment += timedelta(days=len(wanted))
            days += [
                day for day, state in zip(wanted, self.states(wanted), strict=True) if not state.get("bids")
            ]
        return days

    @staticmethod
    def spread(body: Callable[[], dict[str, Any]], days: Sequence[str]) -> Callable[[], dict[str, Any]]:
        """`body` with its `timestamp` on each of `days` in turn."""
        turn = itertools.cycle(days)
        return lambda: {**body(), "timestamp": next(turn)}


def bid_check(n_accepted: int, n_refused: int, states: Sequence[dict[str, Any]]) -> str:
    """The line printed: the days' reservations against the bids accepted, met, MISSED or
    inconclusive (fewer reservations: an accepted bid of 0 reserves nothing, so a refused bid that
    reserved could hide behind it)."""
    reservations = sum(int(state.get("bids", 0)) for state in states)
    spent_out = sum(float(state.get("remaining", 1.0)) <= 0 for state in states)
    line = (
        f"reservations {reservations}, bids accepted {n_accepted}, refused {n_refused} over "
        f"{len(states)} campaign day(s) from {states[0].get('day') if states else '-'}; "
        f"budget spent out on {spent_out}"
    )
    if reservations == n_accepted:
        return f"met: {line}"
    if reservations > n_accepted:
        return f"MISSED: budget reserved for refused or failed bids: {line}"
    reason = "bids of 0, or a day's budget ran out (lower --bids-per-day)" if spent_out else "bids of 0"
    return f"inconclusive: {n_accepted - reservations} accepted bids reserved nothing ({reason}): {line}"


# ---------------------------------------------------------------------------------------------
# the run


def run_endpoint(
    url: str,
    endpoint: str,
    body: Callable[[], dict[str, Any]],
    args: argparse.Namespace,
    headers: dict[str, str] | None,
) -> tuple[list[OverloadRow], list[str]]:
    """The maximum, then every multiple open loop; the rows and the /bid checks printed."""
    path = PATHS[endpoint]
    client = args.open_loop["client"]  # --client: the probes' closed loops use it too
    days: BidDays | None = None
    if endpoint == "bid":
        campaign = body().get("campaign_id")
        if not campaign:
            raise RuntimeError(
                "/bid: GET /models shows no champion's example request (no campaign to bid for)"
            )
        days = BidDays(url, str(campaign), headers)
        bid_body = body
        body = days.spread(bid_body, days.fresh(PROBE_DAYS))

    if args.warmup_seconds > 0:  # connections, batch queues, caches: not measured
        asyncio.run(closed_loop(url, path, body, 4, args.warmup_seconds, headers, client))
    maximum = measure_maximum(url, path, body, args.levels, args.probe_seconds, headers, client)
    tried = ", ".join(f"{level}: {rps:.1f}" for level, rps in maximum.by_level.items())
    print(
        f"{path}: maximum {maximum.rps:.1f} rps accepted at concurrency {maximum.concurrency} "
        f"(200s per second by level: {tried}); unloaded p99 {maximum.unloaded_p99_ms:.2f} ms",
        flush=True,
    )
    rows, checks = [], []
    for multiple in args.multiple_list:
        rate = multiple * maximum.rps
        offered_body, run_days = body, []
        if days is not None:  # days enough that no day's budget runs out (the check needs that)
            run_days = days.fresh(max(1, math.ceil(rate * args.seconds / args.bids_per_day)))
            offered_body = days.spread(bid_body, run_days)
        run = asyncio.run(
            open_loop(url, path, offered_body, rate, args.seconds, headers=headers, **args.open_loop)
        )
        row = overload_row(endpoint, multiple, maximum, run)
        rows.append(row)
        limited = ", generator-limited" if row.generator_limited else ""
        print(
            f"  {endpoint} x{multiple:g} ({rate:.1f} rps offered): {row.n_accepted} accepted, "
            f"{row.n_refused} refused, {row.errors} errors{limited}",
            flush=True,
        )
        if days is not None:
            line = bid_check(row.n_accepted, row.n_refused, days.states(run_days))
            checks.append(f"/bid x{multiple:g}: {line}")
            print(f"  {checks[-1]}", flush=True)
    return rows, checks


def format_rows(rows: list[OverloadRow]) -> str:
    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value:.1f}"

    def interval(low: float | None, high: float | None) -> str:
        return "-" if low is None or high is None else f"[{low:.1f}, {high:.1f}]"

    header = (
        f"{'endpoint':<10} {'x':>4} {'offered':>8} {'accepted':>8} {'refused':>8} {'errors':>6} "
        f"{'goodput':>7} {'p99 acc ms':>10} {'95% CI':>15} {'p99 ref ms':>10} {'95% CI':>15} "
        f"{'unloaded':>8} {'R-A':>5}  targets"
    )
    lines = [
        "open loop at multiples of the measured maximum (rates per second; latency from the intended "
        "send time; unloaded: p99 ms at concurrency 1; R-A: share of 503s with Retry-After)",
        header,
        "-" * len(header),
    ]
    for row in rows:
        verdicts = [
            f"{name} {'n/a' if met is None else 'met' if met else 'MISSED'}" for name, met in row.targets()
        ]
        if row.generator_limited:
            verdicts.append("generator-limited")
        share = "-" if row.retry_after_share is None else f"{row.retry_after_share:.2f}"
        lines.append(
            f"{row.endpoint:<10} {row.multiple:>4g} {row.offered_rps:>8.1f} {row.accepted_rps:>8.1f} "
            f"{row.refused_rps:>8.1f} {row.errors:>6} {row.goodput_ratio:>7.2f} "
            f"{ms(row.p99_accepted_ms):>10} "
            f"{interval(row.p99_accepted_ci95_low, row.p99_accepted_ci95_high):>15} "
            f"{ms(row.p99_refused_ms):>10} "
            f"{interval(row.p99_refused_ci95_low, row.p99_refused_ci95_high):>15} "
            f"{row.unloaded_p99_ms:>8.1f} {share:>5}  " + ", ".join(verdicts)
        )
    return "\n".join(lines)


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="tradewind benchmark overload", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--url", help="measure a server already running on loopback (default: start one)")
    parser.add_argument(
        "--data-dir", type=Path, help="data folder to serve from (default: platform settings)"
    )
    parser.add_argument(
        "--prepare-scale", type=float, help="first run `tradewind demo --scale N` into --data-dir"
    )
    parser.add_argument(
        "--api-key",
        help=f"with --url: the key sent as Authorization: Bearer (default ${API_KEY_ENV}); "
        "a server started here gets a key of its own",
    )
    parser.add_argument("--serving-config", help=SERVING_CONFIG_HELP)
    parser.add_argument(
        "--multiples", default="1,2,4", help="offered load, multiples of the measured maximum (1,2,4)"
    )
    parser.add_argument(
        "--endpoints", default=",".join(ENDPOINTS), help="subset of recommend,forecast,bid (all)"
    )
    parser.add_argument("--seconds", type=float, default=30.0, help="open loop: seconds per multiple (30)")
    parser.add_argument(
        "--max-concurrency",
        default=MAX_LEVELS,
        help=f"closed-loop levels for the maximum, climbed until 200s per second stop growing ({MAX_LEVELS})",
    )
    parser.add_argument(
        "--probe-seconds",
        type=float,
        default=10.0,
        help="seconds per maximum level and for the unloaded p99 (10)",
    )
    parser.add_argument(
        "--warmup-seconds",
        type=float,
        default=3.0,
        help="closed loop of 4 per endpoint first, not measured (3)",
    )
    add_open_loop_options(parser)
    parser.set_defaults(arrivals="poisson")
    # the generator's help names its own default (constant); here overload arrives as Poisson
    parser._option_string_actions[
        "--arrivals"
    ].help = "open loop: Poisson arrivals drawn from --seed (default) or constant"
    parser.add_argument(
        "--bids-per-day",
        type=int,
        default=BIDS_PER_DAY,
        help="/bid: offered bids per campaign day at most (%(default)d); more days when more are offered",
    )
    parser.add_argument("--json", type=Path, help="write the rows as a JSON list here")
    args = parser.parse_args(list(argv))
    args.multiple_list = comma_numbers("--multiples", args.multiples, float)
    args.levels = [int(level) for level in comma_numbers("--max-concurrency", args.max_concurrency, int)]
    args.endpoint_list = [name.strip() for name in args.endpoints.split(",") if name.strip()]
    unknown = sorted(set(args.endpoint_list) - set(ENDPOINTS))
    if unknown or not args.endpoint_list:
        raise InputError(
            f"--endpoints: unknown {', '.join(unknown) or '(none given)'} (known: {', '.join(ENDPOINTS)})"
        )
    if not args.multiple_list or any(not 0 < multiple <= 100 for multiple in args.multiple_list):
        raise InputError(f"--multiples: each must be above 0 and at most 100, got {args.multiples!r}")
    if not args.levels or any(not 1 <= level <= 1024 for level in args.levels):
        raise InputError(
            f"--max-concurrency: each level must be between 1 and 1024, got {args.max_concurrency!r}"
        )
    for name, value in (("--seconds", args.seconds), ("--probe-seconds", args.probe_seconds)):
        if value <= 0:
            raise InputError(f"{name}: must be positive, got {value:g}")
    if args.bids_per_day < 1:
        raise InputError(f"--bids-per-day: must be 1 or more, got {args.bids_per_day}")
    if args.warmup_seconds < 0:
        raise InputError(f"--warmup-seconds: must be 0 or more, got {args.warmup_seconds:g}")
    args.open_loop = open_loop_options(args)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    rows: list[OverloadRow] = []
    checks: list[str] = []
    with serving_target(args) as (url, settings):
        # --api-key, $TRADEWIND_API_KEY, or the key of the app serving_target started
        headers = api_headers(args)
        makers = request_makers(settings, url, headers=headers)
        for endpoint in args.endpoint_list:
            endpoint_rows, endpoint_checks = run_endpoint(url, endpoint, makers[endpoint], args, headers)
            rows += endpoint_rows
            checks += endpoint_checks
    print()
    print(format_rows(rows))
    for line in checks:
        print(line)
    if args.json:
        args.json.write_text(json.dumps([asdict(row) for row in rows], indent=2))
        print(f"wrote {args.json}")
    return 0 if rows else 1


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except InputError as error:  # a bad option value: one line, as `tradewind benchmark overload` prints
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
