"""Latency of the serving endpoints against Ray Serve's own floor (a bare echo deployment).

An async load generator (`--client raw`, default: benchmarks/raw_http.py, a bare asyncio HTTP/1.1
client that costs the shared cores little; `--client httpx`: httpx, to compare) sends real requests
to POST /recommend, /forecast, /bid and to the bare echo application at several concurrency levels,
each level bounded by a request count and a time limit, loopback only (any other target is
refused). It prints p50/p95/p99 latency and requests per second per endpoint and level, the ratios
against echo at the same concurrency, and the issue's targets (/recommend p99 <= 1.5x echo, /bid
p99 <= 1.2x echo, rps >= 0.7x echo) as met or missed. `--json PATH` writes one object per endpoint
and level with the keys endpoint, concurrency, requests, errors, p50_ms, p95_ms, p99_ms, rps,
rss_mb (resident memory of all the serving processes after the run, MB), and n, n_of ("requests"),
ci95_of ("p99_ms"), ci95_low, ci95_high: the seeded bootstrap 95% interval of p99 over the level's
requests.

The closed loop hides tail latency under load (coordinated omission): `--open-loop-rates 50,100`
adds open-loop levels (benchmarks/load_generator.py: requests sent at that fixed rate for
`--seconds`, latency from each one's intended send time). Every row also has mode ("closed"/"open"),
offered_rps (null when closed), achieved_rps, status_200/4xx/503/other, max_ms, late_sends and
generator_limited; open rows have concurrency null. `--concurrency none`: no closed loop.

By default it starts configs/serving.yaml itself on a free loopback port, for the data folder of
the platform settings (or --data-dir), serving whatever holds `champion` there. The /recommend
target needs a catalogue of at least 10,000 products: the default marketplace has 1,000 per unit
of scale, so prepare a data folder with 10,000 products (and the default 5,000 shoppers: a 10x
world, 30 million rows, takes hours to train on 2 cores) first, e.g.

    tradewind benchmark serving --data-dir /tmp/tw-bench --prepare-scale 1 --prepare-products 10000 \
        --json serving.json

which runs the demo with that catalogue into --data-dir before measuring (later runs leave out the
--prepare options and measure the folder as it is). A smaller
catalogue is measured and reported as such. `--url http://127.0.0.1:8000` measures a server
already running (`tradewind serve`) instead. /bid requests reserve budget in the data folder's
pacing state like any bid; the budget running out does not stop them (a spent campaign bids 0).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import json
import os
import random
import re
import socket
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np

from benchmarks.load_generator import (
    STATUS_CLASSES,
    OpenLoopRun,
    add_open_loop_options,
    comma_numbers,
    open_loop,
    open_loop_options,
    poster,
    status_class,
)
from configs import InputError
from configs.families import FAMILY_NAMES
from training.evaluation.intervals import quantile_interval

ENDPOINTS = ("echo", "recommend", "forecast", "bid")
PATHS = {"echo": "/echo", **{family.endpoint: f"/{family.endpoint}" for family in FAMILY_NAMES.values()}}
P99_TARGETS = {"recommend": 1.5, "bid": 1.2}
RPS_TARGET = 0.7
MIN_CATALOGUE = 10_000
SERVING_CONFIG_HELP = (
    "Serve config to start (default configs/serving.yaml; serving-haproxy: HAProxy in front; "
    "serving-split: models as deployments of their own; or a path)"
)
API_KEY_ENV = "TRADEWIND_API_KEY"  # the key for --url (a server started here makes its own)


@dataclass
class Row:
    endpoint: str
    concurrency: int | None  # closed loop: the workers; open loop: None (the rate sets the load)
    requests: int
    errors: int  # answers other than 200 and 503, and requests with no HTTP answer
    p50_ms: float  # the latencies are those of the answered requests (200): a 503 is admission
    p95_ms: float  # control refusing at once, counted in `status_503`, not a fast answer
    p99_ms: float
    rps: float  # answered (200) per second (= achieved_rps)
    rss_mb: float = 0.0
    mode: str = "closed"  # "closed": each worker waits for its answer; "open": a fixed arrival rate
    offered_rps: float | None = None  # open loop: the arrival rate asked for
    achieved_rps: float = 0.0
    status_200: int = 0
    status_4xx: int = 0
    status_503: int = 0
    status_other: int = 0  # other statuses, and no HTTP answer (timeout, refused connection)
    max_ms: float = 0.0
    late_sends: int = 0  # open loop: sends more than the bound behind their intended time
    generator_limited: bool = False  # open loop: late sends over 1%: the generator, not the server
    # the sample behind p99: every request's latency, bootstrapped (seeded)
    n: int = 0
    n_of: str = "requests"
    ci95_of: str = "p99_ms"
    ci95_low: float = float("nan")
    ci95_high: float = float("nan")


def loopback_only(url: str) -> None:
    """Refuse any target that is not this machine's loopback interface."""
    host = urlparse(url).hostname
    if not host:
        raise ValueError(f"--url: no host in {url!r}")
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, None)}
    except socket.gaierror as error:
        raise ValueError(f"--url: cannot resolve {host!r}: {error}") from None
    outside = [address for address in addresses if not ipaddress.ip_address(address).is_loopback]
    if outside:
        raise ValueError(f"--url: {host!r} resolves to {', '.join(sorted(outside))}: only loopback targets")


async def measure(
    url: str,
    path: str,
    bodies: Callable[[], dict[str, Any]],
    concurrency: int,
    requests: int,
    seconds: float,
    headers: dict[str, str] | None = None,
    client: str = "raw",
) -> Row:
    """Closed loop: `concurrency` workers each POST and wait for the answer, until `requests` were
    sent or `seconds` passed. `client`: "raw" or "httpx" (benchmarks/load_generator.py's `poster`)."""
    latencies: list[float] = []
    statuses: list[int] = []
    sent = 0
    deadline = float("inf")  # set once the client is up: its start-up is not the level's time

    async with poster(client, url, concurrency, 30.0, headers) as post:

        async def worker() -> None:
            nonlocal sent
            while sent < requests and time.perf_counter() < deadline:
                sent += 1
                body = bodies()
                started = time.perf_counter()
                status, _ = await post(path, body)
                latencies.append(time.perf_counter() - started)
                statuses.append(status)

        started = time.perf_counter()
        deadline = started + seconds
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - started
    rps = sum(status == 200 for status in statuses) / wall
    return latency_row(
        path.strip("/"), np.array(latencies) * 1000.0, statuses, concurrency=concurrency, rps=rps
    )


def latency_row(endpoint: str, values_ms: np.ndarray, statuses: Sequence[int], **fields: Any) -> Row:
    """A row's latency figures and p99 interval from the answered (200) requests' latencies (ms), and
    its status counts from every request."""
    answered = np.asarray([status == 200 for status in statuses], dtype=bool)
    if len(answered) == len(values_ms):
        values_ms = np.asarray(values_ms)[answered]
    p50, p95, p99, top = (
        (float(np.percentile(values_ms, q)) for q in (50, 95, 99, 100)) if len(values_ms) else (0.0,) * 4
    )
    interval = quantile_interval(values_ms, 0.99)
    counts = Counter(status_class(status) for status in statuses)
    fields.setdefault("achieved_rps", fields.get("rps", 0.0))
    return Row(
        endpoint=endpoint,
        requests=len(statuses),
        errors=sum(status not in (200, 503) for status in statuses),
        p50_ms=p50,
        p95_ms=p95,
        p99_ms=p99,
        max_ms=top,
        **{f"status_{name}": counts[name] for name in STATUS_CLASSES},
        n=interval.n,
        ci95_low=interval.low,
        ci95_high=interval.high,
        **fields,
    )


def open_loop_row(endpoint: str, run: OpenLoopRun) -> Row:
    return latency_row(
        endpoint,
        run.latencies_ms(),
        [outcome.status for outcome in run.outcomes],
        concurrency=None,
        rps=run.achieved_rps,
        mode="open",
        offered_rps=run.offered_rps,
        late_sends=run.late_sends,
        generator_limited=run.generator_limited,
    )


def serving_rss_mb() -> tuple[float, dict[str, float]]:
    """Resident memory of Ray Serve's processes (replicas, proxy, controller), total and by title."""
    import psutil

    by_title: dict[str, float] = {}
    for process in psutil.process_iter(["cmdline", "memory_info"]):
        try:
            title = " ".join(process.info["cmdline"] or [])
            memory = process.info["memory_info"]
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        if memory is None or not title.startswith("ray::"):
            continue
        if not any(kind in title for kind in ("ServeReplica", "ProxyActor", "ServeController")):
            continue
        name = title.split()[0]
        by_title[name] = by_title.get(name, 0.0) + memory.rss / 2**20
    return sum(by_title.values()), by_title


def request_makers(
    settings: Any, url: str, seed: int = 0, headers: dict[str, str] | None = None
) -> dict[str, Callable[[], dict[str, Any]]]:
    """Request bodies: /recommend for real users of the data folder in their home market; /forecast
    and /bid vary the example request each champion answered before it was swapped in (GET /models),
    so every request is one the served model knows how to answer."""

    from features.tables import read_table

    rng = random.Random(seed)
    users = read_table(settings.contract_dir, "users").select("user_id", "market_id").rows()
    status = models_status(url, headers)

    def example(endpoint: str) -> dict[str, Any]:
        champion = status.get(endpoint, {}).get("variants", {}).get("champion") or {}
        return dict(champion.get("example_request") or {})

    forecast_example, bid_example = example("forecast"), example("bid")

    def recommend() -> dict[str, Any]:
        user, market = rng.choice(users)
        return {"user_id": user, "market": market, "k": 10}

    def forecast() -> dict[str, Any]:
        return forecast_example

    def bid() -> dict[str, Any]:
        context = dict(bid_example.get("request") or {})
        context["hour"] = rng.randrange(24)
        return {**bid_example, "request": context}

    return {"echo": recommend, "recommend": recommend, "forecast": forecast, "bid": bid}


def models_status(url: str, headers: dict[str, str] | None) -> dict[str, Any]:
    """GET /models (any valid key); a refusal is one line, not a KeyError later."""
    import httpx

    response = httpx.get(f"{url}/models", headers=headers, timeout=30.0)
    if response.status_code != 200:
        raise InputError(f"{url}/models answered {response.status_code}: {response.text[:200]} (--api-key?)")
    return response.json()


def api_headers(args: argparse.Namespace) -> dict[str, str] | None:
    """The Authorization header of `args.api_key` (--api-key, $TRADEWIND_API_KEY or the key of the
    app `serving_target` started), None without one."""
    key = getattr(args, "api_key", None) or os.environ.get(API_KEY_ENV)
    return {"Authorization": f"Bearer {key}"} if key else None


def catalogue_size(url: str, headers: dict[str, str] | None = None) -> int | None:
    facts = models_status(url, headers).get("recommend", {})
    described = facts.get("variants", {}).get("champion", {}).get("describe", {})
    for key in ("catalogue_size", "catalogue", "products", "items"):
        if isinstance(described.get(key), int):
            return int(described[key])
    return None


def show_metrics(port: int, wait_s: float = 20.0) -> None:
    """Ray's Prometheus endpoint: Tradewind's per-endpoint/variant series beside Ray Serve's own."""
    import httpx

    deadline = time.monotonic() + wait_s
    lines: list[str] = []
    while time.monotonic() < deadline:  # Ray exports metrics every few seconds
        try:
            text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5.0).text
        except httpx.HTTPError:
            text = ""
        lines = [line for line in text.splitlines() if line.startswith("ray_tradewind_requests_total")]
        if lines:
            break
        time.sleep(1.0)
    serve_series = len({line.split("{")[0] for line in text.splitlines() if line.startswith("ray_serve_")})
    print(f"\nPrometheus (http://127.0.0.1:{port}/metrics): {serve_series} ray_serve_* series;")
    for line in lines or ["(no ray_tradewind_requests_total yet)"]:
        tags = dict(re.findall(r'(endpoint|variant|status)="([^"]*)"', line))
        shown = ", ".join(f"{key}={value}" for key, value in tags.items()) or line
        print(f"  ray_tradewind_requests_total {shown}: {line.rsplit(' ', 1)[-1]}")


def format_rows(rows: list[Row]) -> str:
    """The closed-loop table, then the open-loop one; each row against echo at the same load."""
    closed = [row for row in rows if row.mode == "closed"]
    opened = [row for row in rows if row.mode == "open"]
    return "\n\n".join(
        table
        for table in (format_closed(closed) if closed else "", format_open(opened) if opened else "")
        if table
    )


def format_closed(rows: list[Row]) -> str:
    echo = {row.concurrency: row for row in rows if row.endpoint == "echo"}
    header = (
        f"{'endpoint':<10} {'conc':>4} {'requests':>8} {'503':>5} {'errors':>6} {'p50 ms':>8} {'p95 ms':>8} "
        f"{'p99 ms':>8} {'p99 95% CI':>17} {'rps':>8} {'p99/echo':>8} {'rps/echo':>8}  targets"
    )
    lines = [
        "closed loop (each worker waits for its answer before sending again; latencies and rps of the "
        "answered requests, 503: refused by admission control)",
        header,
        "-" * len(header),
    ]
    for row in rows:
        floor = echo.get(row.concurrency)
        p99_ratio = row.p99_ms / floor.p99_ms if floor and floor.p99_ms else float("nan")
        rps_ratio = row.rps / floor.rps if floor and floor.rps else float("nan")
        verdicts = []
        if row.endpoint != "echo" and floor:
            if row.endpoint in P99_TARGETS:
                limit = P99_TARGETS[row.endpoint]
                verdicts.append(f"p99<={limit}x {'met' if p99_ratio <= limit else 'MISSED'}")
            verdicts.append(f"rps>={RPS_TARGET}x {'met' if rps_ratio >= RPS_TARGET else 'MISSED'}")
        interval = f"[{row.ci95_low:.2f}, {row.ci95_high:.2f}]"
        lines.append(
            f"{row.endpoint:<10} {row.concurrency:>4} {row.requests:>8} {row.status_503:>5} {row.errors:>6} "
            f"{row.p50_ms:>8.2f} "
            f"{row.p95_ms:>8.2f} {row.p99_ms:>8.2f} {interval:>17} {row.rps:>8.1f} {p99_ratio:>8.2f} "
            f"{rps_ratio:>8.2f}  " + ", ".join(verdicts)
        )
    return "\n".join(lines)


def format_open(rows: list[Row]) -> str:
    echo = {row.offered_rps: row for row in rows if row.endpoint == "echo"}
    header = (
        f"{'endpoint':<10} {'offered':>7} {'achieved':>8} {'requests':>8} {'200':>6} {'4xx':>5} {'503':>5} "
        f"{'other':>5} {'p50 ms':>8} {'p99 ms':>8} {'p99 95% CI':>17} {'max ms':>8} {'late':>5} "
        f"{'p99/echo':>8}  note"
    )
    lines = [
        "open loop (requests sent at the offered rate; latency from each one's intended send time)",
        header,
        "-" * len(header),
    ]
    for row in rows:
        floor = echo.get(row.offered_rps)
        p99_ratio = row.p99_ms / floor.p99_ms if floor and floor.p99_ms else float("nan")
        note = "generator-limited (late sends > 1%)" if row.generator_limited else ""
        interval = f"[{row.ci95_low:.2f}, {row.ci95_high:.2f}]"
        lines.append(
            f"{row.endpoint:<10} {row.offered_rps or 0:>7.1f} {row.achieved_rps:>8.1f} {row.requests:>8} "
            f"{row.status_200:>6} {row.status_4xx:>5} {row.status_503:>5} {row.status_other:>5} "
            f"{row.p50_ms:>8.2f} {row.p99_ms:>8.2f} {interval:>17} {row.max_ms:>8.1f} {row.late_sends:>5} "
            f"{p99_ratio:>8.2f}  {note}"
        )
    return "\n".join(lines)


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="tradewind benchmark serving", description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="measure a server already running on loopback (default: start one)")
    parser.add_argument(
        "--api-key",
        help=f"with --url: the key sent as Authorization: Bearer (default ${API_KEY_ENV}); "
        "a server started here gets a key of its own",
    )
    parser.add_argument(
        "--data-dir", type=Path, help="data folder to serve from (default: platform settings)"
    )
    parser.add_argument("--serving-config", help=SERVING_CONFIG_HELP)
    parser.add_argument(
        "--prepare-scale", type=float, help="first run `tradewind demo --scale N` into --data-dir"
    )
    parser.add_argument(
        "--prepare-products",
        type=int,
        help="with --prepare-scale: the catalogue size before scaling (10000: the 10,000-product world)",
    )
    parser.add_argument(
        "--concurrency",
        default="1,8,32",
        help="closed-loop levels, comma-separated workers (default 1,8,32); 'none': no closed loop",
    )
    parser.add_argument("--requests", type=int, default=2000, help="closed loop: at most this many per level")
    parser.add_argument(
        "--seconds",
        type=float,
        default=15.0,
        help="closed loop: at most this long per level; open: this long",
    )
    parser.add_argument(
        "--open-loop-rates",
        default="",
        help="open-loop levels, comma-separated requests per second (e.g. 50,100): each sends requests "
        "at that fixed arrival rate for --seconds whether or not earlier ones have answered, and counts "
        "latency from each one's intended send time (no coordinated omission); run after the closed loop",
    )
    add_open_loop_options(parser)
    parser.add_argument("--warmup", type=int, default=50, help="requests per endpoint before measuring")
    parser.add_argument(
        "--endpoints", default=",".join(ENDPOINTS), help="subset of echo,recommend,forecast,bid"
    )
    parser.add_argument("--json", type=Path, help="write the rows as a JSON list here")
    args = parser.parse_args(list(argv))
    closed = "" if args.concurrency.strip().lower() == "none" else args.concurrency
    args.levels = [int(level) for level in comma_numbers("--concurrency", closed, int)]
    args.rates = comma_numbers("--open-loop-rates", args.open_loop_rates, float)
    args.endpoint_list = [name.strip() for name in args.endpoints.split(",") if name.strip()]
    unknown = sorted(set(args.endpoint_list) - set(ENDPOINTS))
    if unknown:
        raise InputError(f"--endpoints: unknown {', '.join(unknown)} (known: {', '.join(ENDPOINTS)})")
    if any(level < 1 or level > 1024 for level in args.levels):
        raise InputError(f"--concurrency: each level must be between 1 and 1024, got {args.concurrency!r}")
    if any(not 0 < rate <= 10_000 for rate in args.rates):
        raise InputError(
            f"--open-loop-rates: each rate must be above 0 and at most 10000, got {args.open_loop_rates!r}"
        )
    if not args.levels and not args.rates:
        raise InputError("--concurrency none needs --open-loop-rates: nothing to measure")
    for name, value in (("--requests", args.requests), ("--seconds", args.seconds)):
        if value <= 0:
            raise InputError(f"{name}: must be positive, got {value:g}")
    args.open_loop = open_loop_options(args)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    with serving_target(args) as (url, settings):
        rows = run(url, settings, args)
    return 0 if rows else 1


@contextlib.contextmanager
def serving_target(args: argparse.Namespace) -> Iterator[tuple[str, Any]]:
    """(url, settings) to measure: `args.url` (InputError unless it is loopback), or
    configs/serving.yaml started here on a free loopback port and shut down at the end. Uses
    `args.url`, `args.data_dir` and `args.prepare_scale`; sets `args.metrics_port` and `args.api_key`
    (the started app's own key: no key set-up needed) when it starts serving."""
    from configs.settings import load_settings

    if args.url:
        try:
            loopback_only(args.url)
        except ValueError as error:
            raise InputError(str(error)) from None
    settings = load_settings()
    if args.data_dir:
        settings = settings.model_copy(update={"data_dir": args.data_dir.resolve()})
    if args.prepare_scale:
        from cli.demo import run_demo

        run_demo(settings, scale=args.prepare_scale, products=getattr(args, "prepare_products", None))
    if args.url:
        yield args.url.rstrip("/"), settings
        return
    from ray import serve

    from serving.deploy import free_port, start_serving
    from serving.settings import SERVING_CONFIG

    config = getattr(args, "serving_config", None) or SERVING_CONFIG
    print(f"starting configs/{config} for {settings.root} ...", flush=True)
    args.metrics_port = free_port()
    serving = start_serving(settings, config=config, metrics_port=args.metrics_port)
    url, args.api_key = serving.url, serving.api_key
    try:
        yield url, settings
    finally:
        serve.shutdown()


def run(url: str, settings: Any, args: argparse.Namespace) -> list[Row]:
    headers = api_headers(args)
    client = args.open_loop["client"]  # --client: the closed loop uses the open loop's client too
    makers = request_makers(settings, url, headers=headers)
    size = catalogue_size(url, headers)
    if "recommend" in args.endpoint_list:
        note = "unknown" if size is None else f"{size:,}"
        flag = (
            ""
            if size is not None and size >= MIN_CATALOGUE
            else f" (below the {MIN_CATALOGUE:,} the target asks)"
        )
        print(f"recommender catalogue: {note} products{flag}")
    for name in args.endpoint_list:  # warm every path (connections, batch queues, caches)
        asyncio.run(measure(url, PATHS[name], makers[name], 4, args.warmup, 30.0, headers, client))
    rows: list[Row] = []
    for level in args.levels:
        for name in args.endpoint_list:
            row = asyncio.run(
                measure(url, PATHS[name], makers[name], level, args.requests, args.seconds, headers, client)
            )
            row.endpoint = name
            rows.append(row)
            print(
                f"  {name} x{level}: {row.requests} requests, p99 {row.p99_ms:.2f} ms, {row.rps:.0f} rps",
                flush=True,
            )
    for rate in args.rates:
        for name in args.endpoint_list:
            load = open_loop(
                url, PATHS[name], makers[name], rate, args.seconds, headers=headers, **args.open_loop
            )
            row = open_loop_row(name, asyncio.run(load))
            rows.append(row)
            limited = ", generator-limited" if row.generator_limited else ""
            print(
                f"  {name} at {rate:g} rps: {row.requests} requests, {row.achieved_rps:.1f} rps answered, "
                f"p99 {row.p99_ms:.2f} ms, {row.late_sends} late sends{limited}",
                flush=True,
            )
    total, by_title = serving_rss_mb()
    for row in rows:
        row.rss_mb = round(total, 1)
    print()
    print(format_rows(rows))
    print(f"\nserving processes resident memory after the run: {total:,.0f} MB")
    for title, mb in sorted(by_title.items()):
        print(f"  {title}: {mb:,.0f} MB")
    if getattr(args, "metrics_port", None):
        show_metrics(args.metrics_port)
    if args.json:
        args.json.write_text(json.dumps([asdict(row) for row in rows], indent=2))
        print(f"wrote {args.json}")
    return rows


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except InputError as error:  # a bad option value: one line, as `tradewind benchmark serving` prints
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
