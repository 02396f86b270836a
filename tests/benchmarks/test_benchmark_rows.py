"""Every benchmark's JSON rows carry the sample behind their headline (n, n_of) and its seeded
bootstrap 95% interval (ci95_of, ci95_low, ci95_high), and the printed table shows both. Each
benchmark runs on its smallest setting; the figures themselves are not judged here."""

from __future__ import annotations

import importlib.util
import json
import math
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import yaml
from sales_files import write_sales_csv

from configs.settings import Settings

IPINYOU = Path(__file__).resolve().parents[3] / "shared" / "data" / "ipinyou-2259"
INTERVAL_KEYS = {"n", "n_of", "ci95_of", "ci95_low", "ci95_high"}


def _assert_interval(row: dict, headline: str, n_of: str) -> None:
    assert set(row) >= INTERVAL_KEYS, row
    assert row["n_of"] == n_of and row["ci95_of"] == headline
    assert isinstance(row["n"], int) and row["n"] > 0
    low, value, high = row["ci95_low"], row[headline], row["ci95_high"]
    assert math.isfinite(low) and math.isfinite(high)
    # a percentile interval of the figure brackets the figure (up to rounding of the printed ones)
    assert low - 0.01 <= value <= high + 0.01, row


def test_forecaster_rows_carry_series_and_a_mase_interval(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from benchmarks.forecaster import main

    path = write_sales_csv(tmp_path / "sales.csv", series=6)
    out = tmp_path / "rows.json"
    arguments = ["--dataset", str(path), "--keys", "sku", "--date", "day", "--quantity", "units"]
    assert main([*arguments, "--horizon", "7", "--models", "seasonal_naive", "--json", str(out)]) == 0
    (row,) = json.loads(out.read_text())
    _assert_interval(row, "mase", "series")
    assert row["n"] == 6
    header, _, line = capsys.readouterr().out.strip().splitlines()[-3:]
    assert header.split()[-4:] == ["series", "mase", "95%", "CI"]
    assert line.endswith(f"6  [{row['ci95_low']:.3f}, {row['ci95_high']:.3f}]")


def test_recommender_rows_carry_users_and_an_ndcg_interval(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from benchmarks.recommender import main

    rng = np.random.default_rng(0)
    count = 2000
    users = rng.integers(0, 60, count)
    items = (users * 7 + rng.integers(0, 12, count)) % 50  # each user keeps to a few items
    path = tmp_path / "events.csv"
    pl.DataFrame(
        {"user_id": users, "item_id": items, "timestamp": np.sort(rng.integers(0, 10**6, count))}
    ).write_csv(path)
    out = tmp_path / "rows.json"
    arguments = ["--dataset", str(path), "--threads", "1", "--latency-repeats", "5", "--json", str(out)]
    assert main(arguments) == 0
    rows = json.loads(out.read_text())
    assert {row["model"] for row in rows} >= {"most-popular", "ease", "item-knn"}
    for row in rows:
        _assert_interval(row, "ndcg@10", "users")
    printed = capsys.readouterr().out
    ease = next(row for row in rows if row["model"] == "ease")
    shown = rf"\s{ease['n']}\s+\[{ease['ci95_low']:.4f}, {ease['ci95_high']:.4f}\]\s"
    assert re.search(shown, printed), printed
    assert "ndcg@10 95% CI" in printed


def _tiny_bidder_config(path: Path) -> Path:
    """tests/training/tiny_configs.py's bidder config as a YAML file for `--config`."""
    source = Path(__file__).resolve().parents[1] / "training" / "tiny_configs.py"
    spec = importlib.util.spec_from_file_location("tiny_configs_for_benchmarks", source)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    path.write_text(yaml.safe_dump(module.TINY_BIDDER))
    return path


@pytest.mark.slow
def test_bidder_rows_carry_campaign_days_and_a_pct_of_optimum_interval(
    tiny_marketplace: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from benchmarks.bidder import main

    out = tmp_path / "rows.json"
    config = _tiny_bidder_config(tmp_path / "bidder.yaml")
    arguments = ["--sources", "synthetic", "--data-dir", str(tiny_marketplace.root), "--config", str(config)]
    assert main([*arguments, "--quick", "--episodes", "20", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())
    assert {row["policy"] for row in rows} >= {"linear", "dqn", "hindsight_optimum"}
    for row in rows:
        _assert_interval(row, "pct_of_optimum", "campaign-days")
    assert len({row["n"] for row in rows}) == 1  # every row is over the same held-out days
    printed = capsys.readouterr().out
    assert printed.splitlines()[0].split()[-4:] == ["n", "pct", "95%", "CI"]
    assert "95% CI [" in printed and "campaign-days" in printed


@pytest.mark.realdata
@pytest.mark.slow
@pytest.mark.skipif(not (IPINYOU / "test.log.txt").exists(), reason="iPinYou logs not in ../shared/data")
def test_bidder_rows_on_ipinyou_are_over_its_test_days(tmp_path: Path) -> None:
    from benchmarks.bidder import main

    out = tmp_path / "rows.json"
    assert main(["--sources", "ipinyou", "--quick", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())
    for row in rows:
        _assert_interval(row, "pct_of_optimum", "campaign-days")
        assert row["n"] == 4  # 2013-10-22..25


class _Stub(BaseHTTPRequestHandler):
    """A loopback server answering like the serving app's routes, instantly: the benchmarks'
    measuring and reporting run end to end without Ray."""

    def do_GET(self) -> None:
        champion = {"variants": {"champion": {"describe": {"catalogue_size": 10}, "example_request": {}}}}
        self._answer({"recommend": champion, "forecast": champion, "bid": champion})

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self._answer({"ok": True})

    def _answer(self, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def stub_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """(url of the stub, a data folder with the users the load generator picks from)."""
    from features.tables import write_partition

    settings = Settings(data_dir=tmp_path / "data")
    users = pl.DataFrame({"user_id": [f"u{index}" for index in range(20)], "market_id": ["US", "DE"] * 10})
    write_partition(users, settings.contract_dir, "users", "stub")
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Stub)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", settings.root
    server.shutdown()
    server.server_close()
    thread.join()


def test_serving_rows_carry_requests_and_a_p99_interval(
    stub_server: tuple[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from benchmarks.serving import main

    url, data_dir = stub_server
    out = tmp_path / "rows.json"
    arguments = ["--url", url, "--data-dir", str(data_dir), "--endpoints", "echo,bid", "--concurrency", "1,4"]
    assert main([*arguments, "--requests", "150", "--seconds", "5", "--warmup", "5", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())
    assert [(row["endpoint"], row["concurrency"]) for row in rows] == [
        ("echo", 1),
        ("bid", 1),
        ("echo", 4),
        ("bid", 4),
    ]
    for row in rows:
        _assert_interval(row, "p99_ms", "requests")
        assert row["n"] == row["requests"] <= 150  # the level's request count, or what its time allowed
    printed = capsys.readouterr().out
    assert "p99 95% CI" in printed
    assert f"[{rows[0]['ci95_low']:.2f}, {rows[0]['ci95_high']:.2f}]" in printed


def test_soak_report_and_windows_carry_requests_and_a_p99_interval(
    stub_server: tuple[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from benchmarks.soak import main

    url, data_dir = stub_server
    out = tmp_path / "soak.json"
    arguments = ["--url", url, "--data-dir", str(data_dir), "--endpoint", "echo", "--minutes", "0.05"]
    arguments += ["--window-s", "1", "--probe-seconds", "1", "--probe-concurrency", "2", "--share", "0.2"]
    assert main([*arguments, "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    _assert_interval(report, "p99_ms", "requests")
    assert report["n"] == report["requests"]
    for window in report["windows"]:
        _assert_interval(window, "p99_ms", "requests")
        assert window["n"] == window["requests"]
    assert sum(window["n"] for window in report["windows"]) == report["n"]
    printed = capsys.readouterr().out
    assert (
        f"(95% CI [{report['ci95_low']:.1f}, {report['ci95_high']:.1f}] over {report['n']} requests)"
        in printed
    )


@pytest.mark.slow
def test_feature_store_rows_carry_runs_or_requests_and_intervals_where_drawn(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from benchmarks.feature_store_bench import main

    out = tmp_path / "stages.json"
    arguments = ["--data-dir", str(tmp_path / "data"), "--users", "40", "--products", "30", "--days", "20"]
    arguments += ["--campaigns", "4", "--training-rows", "200", "--online-requests", "40", "--json", str(out)]
    assert main(arguments) == 0
    rows = json.loads(out.read_text())
    once = [row for row in rows if row["n_of"] == "runs"]
    assert len(once) == 7 and all(row["n"] == 1 and row["ci95_low"] is None for row in once)
    (lookups,) = [row for row in rows if row["n_of"] == "requests"]
    _assert_interval(lookups, "median_ms", "requests")
    assert lookups["n"] == 40
    assert "95% CI" in capsys.readouterr().out
