"""The open-loop load generator against a tiny loopback server started here: the rate it offers,
latency counted from each request's intended send time (a stall shows in the requests queued
behind it, where the closed loop hides it), status counts, late sends, and the serving benchmark's
open-loop rows and option errors. Each run lasts a second or two."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from benchmarks.load_generator import arrival_times, open_loop, status_class
from configs import InputError
from configs.settings import Settings


class _Server(ThreadingHTTPServer):
    """Answers POSTs one at a time (one lock: a single worker) after `delay_s`; the request numbered
    `stall_at` (1-based, counted across the server's life) first stalls `stall_s`, so everything
    behind it queues. The JSON body's `status` is the status answered (default 200). GET answers
    like the serving app's /models, for the serving benchmark."""

    daemon_threads = True

    def __init__(self, delay_s: float, stall_at: int = 0, stall_s: float = 0.0) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.delay_s, self.stall_at, self.stall_s = delay_s, stall_at, stall_s
        self.lock = threading.Lock()
        self.received = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as a real server
    disable_nagle_algorithm = True  # headers and body go out at once, not 40 ms apart (delayed ACK)
    server: _Server

    def do_GET(self) -> None:
        champion = {"variants": {"champion": {"describe": {"catalogue_size": 10}, "example_request": {}}}}
        self._answer(200, {"recommend": champion, "forecast": champion, "bid": champion})

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
        with self.server.lock:
            self.server.received += 1
            if self.server.received == self.server.stall_at:
                time.sleep(self.server.stall_s)  # the stall itself is what is measured
            time.sleep(self.server.delay_s)
        self._answer(int(body.get("status", 200)), {"ok": True})

    def _answer(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


@contextmanager
def _serve(server: _Server) -> Iterator[_Server]:
    # the socket listens from the constructor on: no wait for readiness
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.fixture
def slow_server() -> Iterator[_Server]:
    with _serve(_Server(delay_s=0.02)) as server:
        yield server


def _ok() -> dict:
    return {}


def test_the_achieved_rate_follows_the_offered_rate_and_latency_includes_the_server_delay(
    slow_server: _Server,
) -> None:
    run = asyncio.run(open_loop(slow_server.url, "/echo", _ok, rate=40, seconds=2.0))
    assert len(run.outcomes) == 80 == slow_server.received
    assert run.status_counts() == {"200": 80, "4xx": 0, "503": 0, "other": 0}
    # the sends kept the offered rate, or the run says the generator fell behind (a shared, busy
    # machine can starve it: the row is then marked, never silently slow)
    sent = np.array([outcome.intended_s + outcome.lag_s for outcome in run.outcomes])
    assert run.generator_limited or (len(sent) - 1) / np.ptp(sent) == pytest.approx(40, rel=0.25)
    latencies = run.latencies_ms()
    assert latencies.min() >= 20.0  # never faster than the server's own delay
    intended = np.array([outcome.intended_s for outcome in run.outcomes])
    assert np.allclose(np.diff(intended), 1 / 40)  # constant spacing


def test_a_stall_shows_in_the_open_loop_tail_and_hides_in_the_closed_loop() -> None:
    """Coordinated omission: the server stalls 600 ms once. The closed loop (one worker) waits it
    out and sends nothing meanwhile, so one slow request in hundreds: p99 stays near the delay. The
    open loop keeps sending, and the requests due during the stall carry their wait."""
    from benchmarks.serving import measure

    stall_ms = 600.0
    with _serve(_Server(delay_s=0.005, stall_at=20, stall_s=stall_ms / 1000)) as server:
        closed = asyncio.run(measure(server.url, "/echo", _ok, 1, 10**6, 2.0))
    with _serve(_Server(delay_s=0.005, stall_at=20, stall_s=stall_ms / 1000)) as server:
        opened = asyncio.run(open_loop(server.url, "/echo", _ok, rate=50, seconds=2.0))
    assert closed.max_ms >= stall_ms  # the closed loop saw the stall in one request ...
    assert closed.requests > 100 and closed.p99_ms < stall_ms / 3  # ... and its p99 hides it
    latencies = opened.latencies_ms()
    # the ~30 requests due during the stall queued behind it: each counts its wait from its
    # intended time, so well over 1% of the requests are slow and p99 is near the whole stall
    assert (latencies > stall_ms / 3).sum() >= 10
    assert np.percentile(latencies, 99) >= 0.8 * stall_ms
    # and that wait was spent at the server (after the send), not in the generator falling behind
    waited_ms = [1000 * (outcome.latency_s - outcome.lag_s) for outcome in opened.outcomes]
    assert sum(wait > stall_ms / 3 for wait in waited_ms) >= 10


@pytest.mark.parametrize("client", ["raw", "httpx"])
def test_statuses_are_counted_by_class(client: str) -> None:
    answers = iter([200, 503, 404, 200, 500, 429, 503, 200] * 5)

    def body() -> dict:
        return {"status": next(answers)}

    with _serve(_Server(delay_s=0.001)) as server:
        run = asyncio.run(open_loop(server.url, "/bid", body, rate=40, seconds=1.0, client=client))
    assert run.status_counts() == {"200": 15, "4xx": 10, "503": 10, "other": 5}
    assert len(run.latencies_ms(503)) == 10
    assert [status_class(status) for status in (200, 201, 302, 400, 499, 503, 504, 0)] == [
        "200",
        "other",
        "other",
        "4xx",
        "4xx",
        "503",
        "other",
        "other",
    ]


@pytest.mark.parametrize("client", ["raw", "httpx"])
def test_no_answer_counts_as_other(client: str) -> None:
    server = _Server(delay_s=0.0)
    url = server.url
    server.server_close()  # nothing listens there any more: the connection is refused
    run = asyncio.run(open_loop(url, "/echo", _ok, rate=20, seconds=0.5, client=client))
    assert run.status_counts() == {"200": 0, "4xx": 0, "503": 0, "other": 10}
    assert run.achieved_rps == 0.0


def test_too_few_slots_make_late_sends_and_the_run_generator_limited(slow_server: _Server) -> None:
    # 2 open requests at most, each taking 20 ms: 100 per second at best, 200 offered
    run = asyncio.run(open_loop(slow_server.url, "/echo", _ok, rate=200, seconds=0.5, max_in_flight=2))
    assert run.peak_in_flight == 2
    assert run.late_sends > 0.5 * len(run.outcomes)
    assert run.generator_limited
    # the wait for a slot is in the latency, from the intended time
    lags = np.array([outcome.lag_s for outcome in run.outcomes])
    assert (run.latencies_ms() >= lags * 1000.0 + 20.0 - 1e-6).all()


def test_poisson_arrivals_are_seeded_and_keep_the_mean_rate() -> None:
    first = arrival_times(100.0, 100.0, "poisson", seed=3)
    assert np.array_equal(first, arrival_times(100.0, 100.0, "poisson", seed=3))
    assert not np.array_equal(first, arrival_times(100.0, 100.0, "poisson", seed=4))
    assert len(first) == pytest.approx(10_000, rel=0.03)
    assert first[0] == 0.0 and first[-1] < 100.0 and (np.diff(first) > 0).all()
    gaps = np.diff(first)
    assert gaps.std() == pytest.approx(gaps.mean(), rel=0.05)  # exponential: sd equals mean
    assert len(arrival_times(50.0, 2.0)) == 100
    with pytest.raises(ValueError, match="arrivals must be one of"):
        arrival_times(10.0, 1.0, "bursty")


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """A data folder with the users the serving benchmark's /recommend bodies pick from."""
    from features.tables import write_partition

    settings = Settings(data_dir=tmp_path / "data")
    users = pl.DataFrame({"user_id": [f"u{index}" for index in range(20)], "market_id": ["US", "DE"] * 10})
    write_partition(users, settings.contract_dir, "users", "stub")
    return settings.root


def test_the_serving_benchmark_writes_open_loop_rows(
    slow_server: _Server, data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from benchmarks.serving import main

    out = tmp_path / "rows.json"
    arguments = ["--url", slow_server.url, "--data-dir", str(data_dir), "--endpoints", "echo,bid"]
    arguments += ["--concurrency", "2", "--requests", "30", "--open-loop-rates", "20", "--seconds", "1"]
    assert main([*arguments, "--warmup", "2", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())
    assert [(row["mode"], row["endpoint"]) for row in rows] == [
        ("closed", "echo"),
        ("closed", "bid"),
        ("open", "echo"),
        ("open", "bid"),
    ]
    for row in rows:
        assert row["status_200"] == row["requests"] == row["n"] > 0
        assert row["status_4xx"] == row["status_503"] == row["status_other"] == row["errors"] == 0
        assert row["ci95_of"] == "p99_ms" and row["ci95_low"] <= row["p99_ms"] <= row["ci95_high"] + 0.01
        assert row["p50_ms"] <= row["p99_ms"] <= row["max_ms"]
        assert row["p50_ms"] >= 20.0
    for row in rows[2:]:
        assert row["concurrency"] is None and row["offered_rps"] == 20.0
        assert row["requests"] == 20 and row["achieved_rps"] == pytest.approx(20.0, rel=0.2)
        # a shared machine may delay a send; whether the row says so follows the 1% rule
        assert row["generator_limited"] is (row["late_sends"] > 0.01 * row["requests"])
    assert rows[0]["offered_rps"] is None and rows[0]["late_sends"] == 0
    printed = capsys.readouterr().out
    assert "closed loop" in printed and "open loop" in printed
    assert f"[{rows[2]['ci95_low']:.2f}, {rows[2]['ci95_high']:.2f}]" in printed


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--open-loop-rates", "50,fast"], "--open-loop-rates: 'fast' is not a number"),
        (["--open-loop-rates", "0"], "--open-loop-rates: each rate must be above 0"),
        (["--concurrency", "1,x"], "--concurrency: 'x' is not a whole number"),
        (["--concurrency", "none"], "--concurrency none needs --open-loop-rates"),
        (["--open-loop-rates", "10", "--late-ms", "-1"], "--late-ms: must be positive"),
    ],
)
def test_bad_open_loop_options_give_one_line_and_exit_2(options: list[str], message: str) -> None:
    from benchmarks.serving import parse_args
    from cli.app import app

    with pytest.raises(InputError, match=message):
        parse_args(options)
    result = CliRunner().invoke(app, ["benchmark", "serving", *options])
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], result.output
    assert "Traceback" not in result.output


def test_the_client_option_reaches_both_loops_and_defaults_to_raw(
    slow_server: _Server, data_dir: Path, tmp_path: Path
) -> None:
    from benchmarks.serving import main, parse_args

    assert parse_args([]).open_loop["client"] == "raw"
    assert parse_args(["--client", "httpx"]).open_loop["client"] == "httpx"
    with pytest.raises(ValueError, match="client must be one of raw, httpx"):
        asyncio.run(open_loop(slow_server.url, "/echo", _ok, rate=10, seconds=0.2, client="curl"))
    # the httpx path still measures side by side: the same rows from the same server
    out = tmp_path / "rows.json"
    arguments = ["--url", slow_server.url, "--data-dir", str(data_dir), "--endpoints", "echo"]
    arguments += ["--concurrency", "2", "--requests", "10", "--open-loop-rates", "20", "--seconds", "0.5"]
    assert main([*arguments, "--warmup", "2", "--client", "httpx", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())
    assert [(row["mode"], row["status_200"]) for row in rows] == [("closed", 10), ("open", 10)]


def test_help_documents_the_open_loop() -> None:
    from cli.app import app

    result = CliRunner().invoke(app, ["benchmark", "serving", "--help"])
    assert result.exit_code == 0
    assert "--open-loop-rates" in result.output and "intended send time" in result.output
    assert "--client" in result.output
