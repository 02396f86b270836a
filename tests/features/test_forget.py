"""`forget_user` (the right to be forgotten) on a copy of the tiny marketplace: before, the user is
in the contract, raw, quarantine and feature tables, the online store and a trained recommender;
after, nowhere, the audit says how much went from where, and serving answers them with a cold start."""

from __future__ import annotations

import json
import re
import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from configs.settings import Settings
from features.forget import (
    ForgetReport,
    ForgottenUsers,
    audit_path,
    audit_records,
    forget_user,
    forgotten_path,
    user_digest,
)
from features.forget_online import online_keys
from features.ingest import ingest
from features.store import apply_definitions, online_features
from features.tables import read_table
from models.recommendation.served import ServedRecommender
from training.recommender.family import FAMILY

# the families' shrunk test configs (tests/ has no __init__.py: import it as pytest would)
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "training"))
from tiny_configs import tiny_recommender_config

USER_VIEW_PREFIXES = ("user_activity__", "user_category_affinity__")


@dataclass
class ForgetWorld:
    settings: Settings  # the copy, where the user is forgotten
    original: Settings  # the session's tiny marketplace: never written to
    model: ServedRecommender  # trained on the data before the forget
    user: str
    market: str
    before: dict[str, int]  # rows and keys of the user per place, counted before the forget
    replica_view: ForgottenUsers  # a serving replica's list, loaded before the forget
    report: ForgetReport


def user_rows(path: Path, user: str) -> int:
    """Rows of a parquet file with the user in any text column."""
    frame = pl.scan_parquet(path)
    text = [name for name, dtype in frame.collect_schema().items() if dtype == pl.String]
    if not text:
        return 0
    return frame.filter(pl.any_horizontal(pl.col(text) == user)).select(pl.len()).collect().item()


def rows_with_user(root: Path, user: str) -> dict[str, int]:
    found = {str(path.relative_to(root)): user_rows(path, user) for path in sorted(root.rglob("*.parquet"))}
    return {place: rows for place, rows in found.items() if rows}


def request_for(user: str, market: str) -> dict[str, Any]:
    return {"user_id": user, "market": market, "k": 5, "exclude": [], "explain": False}


def served_answer(settings: Settings, model: ServedRecommender, request: dict[str, Any]) -> dict[str, Any]:
    """What the Recommender deployment does per request: prepare (the forgotten list), the model's
    online entities, Feast's online store, then the model's answer."""
    from serving.endpoints import Recommender

    endpoint = object.__new__(Recommender.func_or_class)  # the deployment's class, without Ray or MLflow
    endpoint.forgotten = ForgottenUsers(settings)
    prepared = endpoint.prepare(request).model_request
    entities = model.online_entities(prepared)
    online = online_features(settings, model.feature_service, entities) if entities else None
    return model.answer(prepared, online)


def user_online_values(settings: Settings, model: ServedRecommender, user: str, market: str) -> list[Any]:
    entities = model.online_entities(request_for(user, market))  # the model still knows the user
    columns = online_features(settings, model.feature_service, entities)
    return [
        value for name, values in columns.items() if name.startswith(USER_VIEW_PREFIXES) for value in values
    ]


@pytest.fixture(scope="module")
def world(tiny_marketplace: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ForgetWorld]:
    config = tiny_recommender_config()
    training_set = FAMILY.training_set(tiny_marketplace, config)
    model = FAMILY.fit(training_set, config, FAMILY.default_params(config), None).python_model.served
    assert isinstance(model, ServedRecommender)

    copy = tmp_path_factory.mktemp("forget") / "data"
    shutil.copytree(tiny_marketplace.root, copy)
    settings = Settings(data_dir=copy)
    apply_definitions(settings)  # the copied registry's feature views read the copy's tables

    # a user with history in the model, events, auctions and a quarantined row: every kind of place
    contract = settings.contract_dir
    quarantined = set(pl.read_parquet(settings.quarantine_dir / "events").get_column("user_id").drop_nulls())
    in_auctions = set(read_table(contract, "auctions").get_column("user_id").drop_nulls())
    warm = np.diff(model.history.indptr) > 0
    candidates = sorted(
        user for user, row in model.user_index.items() if warm[row] and user in quarantined & in_auctions
    )
    assert candidates, "the tiny marketplace has no user in every kind of place"
    user = candidates[0]
    market = read_table(contract, "users").filter(pl.col("user_id") == user).get_column("market_id").item()
    before = {**rows_with_user(settings.root, user), **online_keys(settings, user)}
    replica_view = ForgottenUsers(settings)
    report = forget_user(settings, user, requested_by="test-suite", reason="erasure request", progress=False)
    yield ForgetWorld(settings, tiny_marketplace, model, user, market, before, replica_view, report)


def test_before_the_forget_the_user_is_everywhere(world: ForgetWorld) -> None:
    # counted on the untouched original, which has the same content as the copy had
    original = rows_with_user(world.original.root, world.user)
    for place in (
        "contract/users/generated.parquet",
        "contract/events/generated.parquet",
        "contract/auctions/generated.parquet",
        "raw/events/generated.parquet",
        "quarantine/events/generated.parquet",
        "features/user_activity.parquet",
        "features/user_category_affinity.parquet",
        "ground_truth/users.parquet",
    ):
        assert original.get(place, 0) > 0, place
    assert original == {key: rows for key, rows in world.before.items() if "/" in key}
    assert world.before["user_activity"] == 1 and world.before["user_category_affinity"] >= 1
    assert any(
        value is not None
        for value in user_online_values(world.original, world.model, world.user, world.market)
    )
    assert (
        served_answer(world.original, world.model, request_for(world.user, world.market))["cold_start"]
        is False
    )


def test_after_the_forget_no_file_and_no_online_key_holds_the_user(world: ForgetWorld) -> None:
    assert rows_with_user(world.settings.root, world.user) == {}
    for path in world.settings.root.rglob("*.csv"):
        assert world.user not in path.read_text(), path
    assert online_keys(world.settings, world.user) == {"user_activity": 0, "user_category_affinity": 0}
    assert all(
        value is None for value in user_online_values(world.settings, world.model, world.user, world.market)
    )
    # deleted for real: the SQLite file keeps no copy of the key in free pages
    assert world.user.encode() not in (world.settings.feast_dir / "online_store.db").read_bytes()
    # the original is untouched
    assert rows_with_user(world.original.root, world.user)
    assert world.user.encode() in (world.original.feast_dir / "online_store.db").read_bytes()


def test_the_report_counts_what_was_there(world: ForgetWorld) -> None:
    report = world.report
    assert report.status == "removed" and not report.already_forgotten
    counts = report.counts()
    assert counts["online/user_activity"] == world.before["user_activity"]
    assert counts["online/user_category_affinity"] == world.before["user_category_affinity"]
    for place, rows in world.before.items():
        if place.startswith("features/"):
            assert counts[place.removesuffix(".parquet")] == rows
        elif "/" in place:
            assert counts[place] == rows, place
    units = {removal.place: removal.unit for removal in report.removals}
    # an auction is the advertiser's record: kept, with the viewer's id cleared
    assert units["contract/auctions/generated.parquet"] == "rows with user_id cleared"
    assert units["contract/events/generated.parquet"] == "rows deleted"
    auctions = read_table(world.settings.contract_dir, "auctions")
    assert auctions.height == read_table(world.original.contract_dir, "auctions").height
    assert auctions.get_column("user_id").null_count() == (
        read_table(world.original.contract_dir, "auctions").get_column("user_id").null_count()
        + counts["contract/auctions/generated.parquet"]
    )


def test_the_audit_names_the_user_by_digest_only(world: ForgetWorld) -> None:
    digest = user_digest(world.settings, world.user)
    record = next(record for record in audit_records(world.settings) if record["user_digest"] == digest)
    assert record["status"] == "removed" and record["error"] is None
    assert record["requested_by"] == "test-suite" and record["reason"] == "erasure request"
    assert record["removed"] == world.report.counts() and record["total_removed"] == world.report.total > 0
    for path in (audit_path(world.settings), forgotten_path(world.settings)):
        assert world.user not in path.read_text(), path
    assert json.loads(forgotten_path(world.settings).read_text().splitlines()[0])["user_digest"] == digest


def test_serving_answers_a_forgotten_user_as_an_unknown_one(world: ForgetWorld) -> None:
    request = request_for(world.user, world.market)
    answer = served_answer(world.settings, world.model, request)
    assert answer["cold_start"] is True and answer["items"]
    unknown = served_answer(world.settings, world.model, {**request, "user_id": "never-seen-user"})
    assert answer == unknown
    # a replica that loaded the list before the forget picks it up on its next background refresh
    assert world.user not in world.replica_view
    world.replica_view.refresh()
    assert world.user in world.replica_view and "never-seen-user" not in world.replica_view
    assert world.replica_view.anonymised(request)["user_id"] is None


def test_ingesting_the_raw_files_again_does_not_bring_the_user_back(world: ForgetWorld) -> None:
    report = ingest(world.settings, world.settings.raw_dir, progress=False)
    assert report.rows_in == report.accepted + report.quarantined
    assert rows_with_user(world.settings.contract_dir, world.user) == {}
    assert rows_with_user(world.settings.quarantine_dir, world.user) == {}


def test_a_late_delivery_with_the_users_rows_is_taken_in_without_them(
    world: ForgetWorld, tmp_path: Path
) -> None:
    # the user's events and auctions as they first arrived, delivered again as a new partition;
    # the delivery sits outside the data folder, which other tests search for the user
    late = tmp_path / "late-delivery"
    expected = {}
    for table in ("events", "auctions"):
        original = pl.read_parquet(world.original.raw_dir / table / "generated.parquet")
        rows = original.filter(pl.col("user_id") == world.user)
        expected[table] = rows.height
        (late / table).mkdir(parents=True)
        rows.write_parquet(late / table / "late.parquet")
    assert expected["events"] > 0 and expected["auctions"] > 0
    report = ingest(world.settings, late, progress=False)
    by_table = {result.table: result for result in report.results}
    assert by_table["events"].forgotten == expected["events"], "required user id: the rows are dropped"
    assert by_table["auctions"].forgotten == 0
    assert by_table["auctions"].forgotten_cleared == expected["auctions"], "optional id: cleared"
    assert report.rows_in == report.accepted + report.quarantined + report.forgotten
    assert rows_with_user(world.settings.contract_dir, world.user) == {}
    assert rows_with_user(world.settings.quarantine_dir, world.user) == {}


def test_forgetting_twice_removes_nothing_and_is_audited(world: ForgetWorld) -> None:
    again = forget_user(world.settings, world.user, requested_by="test-suite", reason="again", progress=False)
    assert again.status == "already_forgotten" and again.total == 0 and again.places_checked > 0
    digest = user_digest(world.settings, world.user)
    records = [record for record in audit_records(world.settings) if record["user_digest"] == digest]
    assert [record["status"] for record in records][-1] == "already_forgotten"
    assert records[-1]["removed"] == {} and len(records) >= 2


def test_unknown_and_empty_ids(world: ForgetWorld) -> None:
    unknown = forget_user(
        world.settings, "no-such-user", requested_by="test-suite", reason="typo?", progress=False
    )
    assert unknown.status == "not_found" and unknown.total == 0
    assert audit_records(world.settings)[-1]["status"] == "not_found"
    assert "no-such-user" in ForgottenUsers(world.settings)
    for empty in ("", "   "):
        with pytest.raises(ValueError, match="user_id: must be a non-empty id"):
            forget_user(world.settings, empty, requested_by="test-suite", reason="empty", progress=False)


def test_the_cli_prints_counts_per_place_and_one_line_for_bad_input(
    world: ForgetWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cli.app import app

    monkeypatch.setenv("TRADEWIND_DATA_DIR", str(world.settings.root))
    monkeypatch.setattr("cli.reports.console.width", 200)
    runner = CliRunner()
    other = sorted(set(read_table(world.settings.contract_dir, "users").get_column("user_id")))[0]
    events = read_table(world.settings.contract_dir, "events").filter(pl.col("user_id") == other).height
    result = runner.invoke(app, ["forget-user", other, "--reason", "asked by mail", "--requested-by", "dpo"])
    assert result.exit_code == 0, result.output
    assert re.search(rf"contract/events/generated\.parquet\s+│\s+{events:,} │ rows deleted", result.output)
    assert audit_records(world.settings)[-1]["requested_by"] == "dpo"
    again = runner.invoke(app, ["forget-user", other])
    assert again.exit_code == 0 and "forgotten before: nothing left to remove" in again.output
    empty = runner.invoke(app, ["forget-user", ""])
    lines = [line for line in empty.output.splitlines() if line.strip()]
    assert empty.exit_code == 2 and lines == ["error: user_id: must be a non-empty id, got ''"]


def test_a_failed_step_is_audited_and_running_again_finishes(contract_data_dir: Any) -> None:
    settings = contract_data_dir(
        {
            "users": [{"user_id": "u1", "market_id": "US"}, {"user_id": "u2", "market_id": "US"}],
            "events": [{"event_id": "e1", "user_id": "u1"}, {"event_id": "e2", "user_id": "u2"}],
        }
    )
    broken = settings.raw_dir / "events" / "late.parquet"
    broken.parent.mkdir(parents=True)
    broken.write_bytes(b"not parquet")
    with pytest.raises(pl.exceptions.PolarsError):
        forget_user(settings, "u1", requested_by="test-suite", reason="erasure", progress=False)
    failed = audit_records(settings)[-1]
    assert failed["status"] == "failed" and failed["error"].startswith("raw/events/late.parquet: ")
    assert failed["removed"] == {"contract/users/test.parquet": 1, "contract/events/test.parquet": 1}
    assert "u1" in ForgottenUsers(settings)  # listed before any file was touched

    broken.unlink()
    pl.DataFrame({"event_id": ["e3"], "user_id": ["u1"]}).write_parquet(broken)
    finished = forget_user(settings, "u1", requested_by="test-suite", reason="erasure", progress=False)
    assert finished.status == "removed" and finished.counts() == {"raw/events/late.parquet": 1}
    assert read_table(settings.contract_dir, "users").get_column("user_id").to_list() == ["u2"]
