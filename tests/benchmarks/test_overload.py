"""`tradewind benchmark overload` against a tiny Starlette server on 127.0.0.1 that admits at most
`limit` requests at once and refuses the rest with 503 + Retry-After, so what the benchmark counts
(accepted, refused, errors, /bid reservations) is checked against what the server did. Each run
lasts a few seconds; no figure depends on the machine's speed."""

from __future__ import annotations

import asyncio
import json
import math
import socket
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields
from pathlib import Path

import polars as pl
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from typer.testing import CliRunner

from benchmarks.load_generator import OpenLoopRun, Outcome, open_loop
from benchmarks.overload import FIRST_BID_DAY, Maximum, bid_check, overload_row
from configs import InputError
from configs.settings import Settings

ROW_KEYS = {
    "endpoint",
    "multiple",
    "offered_rps",
    "accepted_rps",
    "refused_rps",
    "goodput_ratio",
    "p99_accepted_ms",
    "p99_refused_ms",
    "unloaded_p99_ms",
    "errors",
    "n_accepted",
    "n_refused",
    "p99_accepted_ci95_low",
    "p99_accepted_ci95_high",
    "p99_refused_ci95_low",
    "p99_refused_ci95_high",
    "unloaded_p99_ci95_low",
    "unloaded_p99_ci95_high",
    "retry_after_share",
    "generator_limited",
}


class AdmissionServer:
    """Admits `limit` POSTs at once (each takes `delay_s`), refuses the rest at once with 503 and
    Retry-After; counts both per request `timestamp` (the /bid day; None for the others). GET
    /models answers like the app's (the champions' example requests); GET .../pacing counts as
    reservations the bids accepted on that day, plus `seeded` ones."""

    def __init__(self, limit: int, delay_s: float, key: str | None = None) -> None:
        self.limit, self.delay_s, self.key = limit, delay_s, key
        self.in_flight = 0
        self.accepted: Counter[str | None] = Counter()
        self.refused: Counter[str | None] = Counter()
        self.days: list[str | None] = []  # in the order first seen
        self.seeded: Counter[str] = Counter()
        self.headers_seen: set[str | None] = set()
        routes = [
            Route("/models", self.models, methods=["GET"]),
            Route("/campaigns/{campaign_id}/pacing", self.pacing, methods=["GET"]),
            *(Route(f"/{name}", self.post, methods=["POST"]) for name in ("recommend", "forecast", "bid")),
        ]
        self.app = Starlette(routes=routes)

    async def post(self, request: Request) -> Response:
        day = (await request.json()).get("timestamp")
        self.headers_seen.add(request.headers.get("authorization"))
        if self.key and request.headers.get("authorization") != f"Bearer {self.key}":
            return JSONResponse({"detail": "unknown key"}, status_code=401)
        if day not in self.days:
            self.days.append(day)
        if self.in_flight >= self.limit:
            self.refused[day] += 1
            return JSONResponse({"detail": "overloaded"}, status_code=503, headers={"Retry-After": "1"})
        self.in_flight += 1  # one event loop: no lock needed between the check and the count
        try:
            await asyncio.sleep(self.delay_s)  # the work the server is busy with
        finally:
            self.in_flight -= 1
        self.accepted[day] += 1
        return JSONResponse({"ok": True})

    async def models(self, request: Request) -> Response:
        def champion(example: dict) -> dict:
            return {"variants": {"champion": {"example_request": example}}}

        bid = {"campaign_id": "c1", "request": {"exchange": "x", "floor_price": 0.1}}
        return JSONResponse({"recommend": champion({}), "forecast": champion({}), "bid": champion(bid)})

    async def pacing(self, request: Request) -> Response:
        day = request.query_params.get("timestamp")
        bids = self.accepted[day] + self.seeded[day]
        return JSONResponse({"campaign_id": request.path_params["campaign_id"], "bids": bids, "day": day})


@contextmanager
def serving(server: AdmissionServer) -> Iterator[str]:
    import uvicorn

    # the socket listens before the thread starts: no wait for readiness
    sock = socket.socket()
    # headers and body go out at once, not 40 ms apart (Nagle against delayed ACK); Linux hands
    # the option on to every accepted connection
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(1024)
    config = uvicorn.Config(server.app, log_level="warning", lifespan="off", loop="asyncio", http="h11")
    runner = uvicorn.Server(config)
    thread = threading.Thread(target=runner.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        runner.should_exit = True
        thread.join(timeout=10)
        sock.close()


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """A data folder with the users the /recommend bodies pick from."""
    from features.tables import write_partition

    settings = Settings(data_dir=tmp_path / "data")
    users = pl.DataFrame({"user_id": [f"u{index}" for index in range(20)], "market_id": ["US", "DE"] * 10})
    write_partition(users, settings.contract_dir, "users", "stub")
    return settings.root


def _maximum(rps: float) -> Maximum:
    return Maximum(rps, 2, {2: rps}, 10.0, (9.0, 11.0))


def test_accepted_refused_and_errors_are_what_the_server_did() -> None:
    # 2 admitted at once, 50 ms each: 40 per second at most; 100 offered, so many are refused
    server = AdmissionServer(limit=2, delay_s=0.05)
    with serving(server) as url:
        run = asyncio.run(open_loop(url, "/recommend", dict, 100.0, 2.0, arrivals="poisson", seed=1))
    row = overload_row("recommend", 2.5, _maximum(40.0), run)
    assert row.n_accepted == server.accepted[None] > 0
    assert row.n_refused == server.refused[None] > 0
    assert row.errors == 0 and row.n_accepted + row.n_refused == len(run.outcomes)
    duration = max(run.wall_s, run.seconds)
    assert row.accepted_rps == pytest.approx(row.n_accepted / duration, abs=1e-3)
    assert row.refused_rps == pytest.approx(row.n_refused / duration, abs=1e-3)
    assert row.goodput_ratio == pytest.approx(row.accepted_rps / 40.0, abs=1e-3)
    # an accepted request took the server's 50 ms at least, from its intended send time
    assert row.p99_accepted_ms is not None and row.p99_accepted_ms >= 50.0
    assert row.p99_refused_ms is not None and row.p99_refused_ms > 0.0
    assert row.p99_refused_ci95_low is not None and row.p99_refused_ci95_high is not None
    assert row.p99_refused_ci95_low <= row.p99_refused_ms <= row.p99_refused_ci95_high + 1e-3
    assert set(json.loads(json.dumps(row.__dict__))) == ROW_KEYS


@pytest.mark.parametrize("client", ["raw", "httpx"])
def test_each_outcome_records_whether_its_answer_carried_retry_after(client: str) -> None:
    # 1 admitted at once, 50 ms each, 60 offered per second: most are refused, with Retry-After
    server = AdmissionServer(limit=1, delay_s=0.05)
    with serving(server) as url:
        run = asyncio.run(open_loop(url, "/forecast", dict, 60.0, 1.0, client=client))
    refusals = [outcome for outcome in run.outcomes if outcome.status == 503]
    answers = [outcome for outcome in run.outcomes if outcome.status == 200]
    assert len(refusals) == sum(server.refused.values()) > 0
    assert len(answers) == sum(server.accepted.values()) > 0
    assert all(outcome.retry_after for outcome in refusals)
    assert not any(outcome.retry_after for outcome in answers)  # the 200s carry no Retry-After
    assert overload_row("forecast", 1.0, _maximum(20.0), run).retry_after_share == 1.0


def test_no_answer_is_an_error_not_a_refusal() -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there: every connection is refused
    run = asyncio.run(open_loop(f"http://127.0.0.1:{port}", "/bid", dict, 20.0, 0.5))
    row = overload_row("bid", 1.0, _maximum(20.0), run)
    assert (row.n_accepted, row.n_refused, row.errors) == (0, 0, 10)
    assert row.p99_accepted_ms is None and row.p99_refused_ms is None and row.accepted_rps == 0.0
    assert [met for _, met in row.targets()] == [False, None, None]


@dataclass(frozen=True)
class _Answer:
    """An outcome as a generator that does not keep the Retry-After header records it."""

    intended_s: float
    lag_s: float
    latency_s: float
    status: int


@dataclass(frozen=True)
class _Refusal(_Answer):
    """An outcome as a generator that keeps the Retry-After header records it."""

    retry_after: bool = False


# whether benchmarks/load_generator.py records Retry-After (its Outcome's `retry_after`)
GENERATOR_KEEPS_RETRY_AFTER = "retry_after" in {field.name for field in fields(Outcome)}


def test_retry_after_share_counts_the_refusals_that_carried_it() -> None:
    run = OpenLoopRun(10.0, 1.0, "constant", 0.01, 10)
    run.outcomes = [_Refusal(i / 10, 0.0, 0.002, 503, i % 4 != 0) for i in range(8)]  # type: ignore[misc]
    run.outcomes.append(_Refusal(0.9, 0.0, 0.02, 200))  # type: ignore[arg-type]
    run.wall_s = 1.0
    assert overload_row("forecast", 1.0, _maximum(10.0), run).retry_after_share == 0.75
    # a generator that does not record the header: unknown, not 0
    run.outcomes = [_Answer(0.0, 0.0, 0.002, 503), _Answer(0.1, 0.0, 0.02, 200)]  # type: ignore[list-item]
    assert overload_row("forecast", 1.0, _maximum(10.0), run).retry_after_share is None


def test_targets_are_judged_per_row() -> None:
    run = OpenLoopRun(10.0, 1.0, "constant", 0.01, 10)
    # 9 accepted at 25 ms (2.5x the unloaded 10 ms), one refused at 60 ms, within 1 s
    run.outcomes = [Outcome(i / 10, 0.0, 0.025, 200) for i in range(9)] + [Outcome(0.9, 0.0, 0.06, 503)]
    run.wall_s = 1.0
    row = overload_row("recommend", 1.0, _maximum(10.0), run)
    assert row.goodput_ratio == pytest.approx(0.9)
    assert [met for _, met in row.targets()] == [True, False, True]


def test_bid_check_compares_reservations_with_accepted_bids() -> None:
    days = [{"bids": 3, "day": "2200-01-01", "remaining": 5.0}, {"bids": 2, "remaining": 1.0}]
    assert bid_check(5, 3, days).startswith(
        "met: reservations 5, bids accepted 5, refused 3 over 2 campaign day"
    )
    assert bid_check(4, 3, days).startswith("MISSED: budget reserved for refused")
    assert bid_check(6, 3, days).startswith("inconclusive: 1 accepted bids reserved nothing (bids of 0)")
    spent = [{"bids": 3, "remaining": 0.0}]
    assert "a day's budget ran out" in bid_check(4, 0, spent) and "budget spent out on 1" in bid_check(
        4, 0, spent
    )


def test_the_cli_writes_a_row_per_multiple_and_checks_bid_reservations(
    data_dir: Path, tmp_path: Path
) -> None:
    from cli.app import app

    server = AdmissionServer(limit=2, delay_s=0.05)
    # an earlier run's bids on the first day: the benchmark must pass that day over
    server.seeded[FIRST_BID_DAY.isoformat()] = 3
    out = tmp_path / "overload.json"
    with serving(server) as url:
        arguments = ["benchmark", "overload", "--url", url, "--data-dir", str(data_dir), "--endpoints", "bid"]
        arguments += [
            "--multiples",
            "1,2",
            "--seconds",
            "2",
            "--probe-seconds",
            "1",
            "--max-concurrency",
            "2,4",
        ]
        arguments += [
            "--warmup-seconds",
            "0",
            "--bids-per-day",
            "20",
            "--api-key",
            "k-test",
            "--json",
            str(out),
        ]
        result = CliRunner().invoke(app, arguments)
    assert result.exit_code == 0, result.output
    rows = json.loads(out.read_text())
    assert [(row["endpoint"], row["multiple"]) for row in rows] == [("bid", 1.0), ("bid", 2.0)]
    assert all(set(row) == ROW_KEYS for row in rows)
    # 20 days for the probes, then days of their own per multiple (20 bids offered per day at most),
    # none of them the seeded one; the server saw each day first in that order
    assert FIRST_BID_DAY.isoformat() not in server.days
    maximum = rows[0]["offered_rps"]
    assert maximum > 0 and rows[1]["offered_rps"] == pytest.approx(2 * maximum, rel=1e-3)
    per_multiple = [math.ceil(row["offered_rps"] * 2 / 20) for row in rows]
    assert per_multiple[1] >= 2  # the 2x run spreads its bids over several days
    assert len(server.days) == 20 + sum(per_multiple)
    first = 20
    for row, count in zip(rows, per_multiple, strict=True):
        days = server.days[first : first + count]
        first += count
        accepted = sum(server.accepted[day] for day in days)
        refused = sum(server.refused[day] for day in days)
        assert (row["n_accepted"], row["n_refused"], row["errors"]) == (accepted, refused, 0)
        assert row["goodput_ratio"] == pytest.approx(row["accepted_rps"] / maximum, abs=1e-3)
        assert row["unloaded_p99_ms"] >= 50.0  # the server's own 50 ms
    assert rows[1]["n_refused"] > 0  # twice what 2 at once can serve
    assert server.headers_seen == {"Bearer k-test"}
    # every 503 of this server carries Retry-After: the share is 1 once the generator records it
    assert rows[1]["retry_after_share"] == (1.0 if GENERATOR_KEEPS_RETRY_AFTER else None)
    assert "\n/bid x1: met: reservations" in result.output
    assert "\n/bid x2: met: reservations" in result.output
    assert "goodput>=0.90" in result.output and "p99 refused<=50ms" in result.output


def test_a_wrong_key_fails_in_one_line_naming_the_statuses(data_dir: Path) -> None:
    from cli.app import app

    server = AdmissionServer(limit=2, delay_s=0.01, key="right")
    with serving(server) as url:
        arguments = [
            "benchmark",
            "overload",
            "--url",
            url,
            "--data-dir",
            str(data_dir),
            "--endpoints",
            "forecast",
        ]
        arguments += ["--probe-seconds", "0.3", "--warmup-seconds", "0", "--api-key", "wrong"]
        result = CliRunner().invoke(app, arguments)
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert (
        len(lines) == 1 and "/forecast: no request answered 200 at concurrency 1 (statuses 401: " in lines[0]
    )
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--multiples", "1,x"], "--multiples: 'x' is not a number"),
        (["--multiples", "0"], "--multiples: each must be above 0"),
        (["--endpoints", "echo"], "--endpoints: unknown echo"),
        (["--max-concurrency", "8,0"], "--max-concurrency: each level must be between 1 and 1024"),
        (["--seconds", "-1"], "--seconds: must be positive"),
    ],
)
def test_bad_options_give_one_line_and_exit_2(options: list[str], message: str) -> None:
    from benchmarks.overload import parse_args
    from cli.app import app

    with pytest.raises(InputError, match=message):
        parse_args(options)
    result = CliRunner().invoke(app, ["benchmark", "overload", *options])
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], result.output


def test_the_soak_offers_80_percent_of_the_accepted_maximum_and_judges_each_window(
    data_dir: Path, tmp_path: Path
) -> None:
    """benchmarks/soak.py against the same server: its maximum counts 200s only (the probe's 8
    clients find 2 admitted at once: most of their answers are fast 503s), and each window's p99 is
    set against the unloaded p99 with the 2x target."""
    from benchmarks.soak import P99_TARGET, main

    server = AdmissionServer(limit=2, delay_s=0.05)
    out = tmp_path / "soak.json"
    with serving(server) as url:
        arguments = ["--url", url, "--data-dir", str(data_dir), "--endpoint", "forecast", "--minutes", "0.05"]
        arguments += [
            "--window-s",
            "1",
            "--probe-seconds",
            "1",
            "--probe-concurrency",
            "8",
            "--json",
            str(out),
        ]
        assert main(arguments) == 0
    report = json.loads(out.read_text())
    # 2 at once, 50 ms each: 40 answered 200 per second at most, whatever the 503s add; and not far
    # below (the probe's 200s per second: not discounted again by the share of 503s)
    assert 20.0 <= report["max_rps"] <= 40.0 * 1.05
    assert report["target_rps"] == pytest.approx(0.8 * report["max_rps"], rel=0.01)
    assert report["unloaded_p99_ms"] >= 50.0  # one client: the server's own 50 ms, never less
    assert report["windows"]
    for window in report["windows"]:
        ratio = window["p99_ms"] / report["unloaded_p99_ms"]
        assert window["p99_vs_unloaded"] == pytest.approx(ratio, abs=0.01)
        assert window["target_met"] is (window["p99_ms"] <= P99_TARGET * report["unloaded_p99_ms"])
