"""Serving over real HTTP: Ray Serve on 127.0.0.1 (one per session), test models from MLflow.

Each test sets up what it checks: bids go to a campaign-day of its own (`budget_day`), a test that
needs a version or an alias registers or sets it, and a test that moves the champion first waits
until the app serves what the registry says. So each passes alone and in any order."""

from __future__ import annotations

import contextlib
import threading
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import served_models
from polling import wait_until
from tiny_world import RECOMMENDER, BudgetDay, ServingWorld

pytestmark = pytest.mark.slow


def models_status(world: ServingWorld) -> dict[str, Any]:
    response = world.client.get("/models")
    assert response.status_code == 200, response.text
    return response.json()


class Loop:
    """A client sending /recommend in a loop on a thread; every response is kept."""

    def __init__(self, world: ServingWorld) -> None:
        self.world = world
        self.responses: list[tuple[int, dict[str, Any]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(base_url=self.world.url, headers=self.world.headers, timeout=30.0) as client:
            while not self._stop.is_set():
                response = client.post(
                    "/recommend",
                    json={"user_id": self.world.users[0], "market": self.world.markets[0], "k": 5},
                )
                self.responses.append((response.status_code, response.json()))

    def __enter__(self) -> Loop:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def versions(self) -> set[int]:
        return {body["model"]["version"] for status, body in self.responses if status == 200}

    def failures(self) -> list[tuple[int, dict[str, Any]]]:
        return [(status, body) for status, body in self.responses if status != 200]


# ---------------------------------------------------------------------------------------------
# each endpoint


def test_endpoints_answer_from_registered_models(serving_world: ServingWorld, budget_day: BudgetDay) -> None:
    world, client = serving_world, serving_world.client
    assert client.get("/healthz").json() == {"status": "ok"}

    known, unknown = world.users[0], "nobody-ever"
    warm = client.post(
        "/recommend", json={"user_id": known, "market": world.markets[0], "k": 4, "explain": True}
    )
    assert warm.status_code == 200, warm.text
    body = warm.json()
    assert len(body["items"]) == 4 and body["cold_start"] is False
    assert body["variant"] == "champion" and body["model"]["name"] == RECOMMENDER
    assert all(item["reasons"] for item in body["items"])
    excluded = body["items"][0]["product_id"]
    again = client.post(
        "/recommend", json={"user_id": known, "market": world.markets[0], "k": 4, "exclude": [excluded]}
    ).json()
    assert excluded not in {item["product_id"] for item in again["items"]}
    cold = client.post("/recommend", json={"user_id": unknown, "market": world.markets[0]})
    assert cold.status_code == 200 and cold.json()["cold_start"] is True and len(cold.json()["items"]) == 10

    forecast = client.post(
        "/forecast",
        json={
            "product_ids": world.products[:2],
            "market": world.markets[0],
            "horizon": 3,
            "quantiles": [0.9, 0.1],
        },
    )
    assert forecast.status_code == 200, forecast.text
    rows = forecast.json()["forecasts"]
    assert len(rows) == 6 and all({"p10", "p90", "mean", "date"} <= set(row) for row in rows)

    campaign = budget_day.campaign_id
    bid = client.post("/bid", json=budget_day.bid({"hour": 9, "floor_price": 0.2}))
    assert bid.status_code == 200, bid.text
    answer = bid.json()
    # the test bidder asks 7% of the daily budget; nothing was spent on this campaign-day before
    assert answer["bid"] == pytest.approx(0.07 * budget_day.budget) and answer["reservation_id"]
    # the test bidder echoes the online features it was given: the online store's row for the campaign
    from features.store import online_features

    market = world.campaigns[campaign][0]
    stored = online_features(world.settings, "bidder", [{"campaign_id": campaign, "market_id": market}])
    expected = {name: values[0] for name, values in stored.items()}
    assert answer["online"] == expected
    assert sum(value is not None for value in expected.values()) > 5  # real values, not an empty row

    echo = client.post("/echo", json={"user_id": known, "k": 4})  # the benchmark's floor: the body back
    assert echo.status_code == 200 and echo.json() == {"user_id": known, "k": 4}

    docs = client.get("/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/recommend", "/forecast", "/bid", "/bid/outcome", "/healthz", "/models"} <= set(paths)

    status = models_status(world)
    assert set(status) == {"recommend", "forecast", "bid"}
    for endpoint in status.values():
        assert endpoint["registry_reachable"] is True
        assert endpoint["variants"]["champion"]["version"] >= 1
        assert endpoint["variants"]["champion"]["loaded_at"]


# ---------------------------------------------------------------------------------------------
# bad input: 4xx naming the field, never a 5xx


def _named_fields(response: httpx.Response) -> set[str]:
    detail = response.json()["detail"]
    assert isinstance(detail, list), detail
    return {str(part) for item in detail for part in item["loc"]}


def test_bad_inputs_get_4xx_naming_the_field(serving_world: ServingWorld) -> None:
    world, client = serving_world, serving_world.client
    market, product, campaign = world.markets[0], world.products[0], next(iter(world.campaigns))
    cases: list[tuple[str, Any, str]] = [
        ("/recommend", {"market": market}, "user_id"),
        ("/recommend", {"user_id": "u", "market": market, "k": 0}, "k"),
        ("/recommend", {"user_id": "u", "market": market, "k": 10_000}, "k"),
        ("/recommend", {"user_id": 12, "market": market}, "user_id"),
        ("/recommend", {"user_id": "u", "market": "ZZ"}, "market"),  # the model's ValueError
        ("/recommend", {"user_id": "u", "market": market, "colour": "red"}, "colour"),
        ("/recommend", {"user_id": "u", "market": market, "exclude": "p1"}, "exclude"),
        ("/forecast", {"product_ids": [], "market": market}, "product_ids"),
        ("/forecast", {"product_ids": ["no-such-product"], "market": market}, "product_ids"),
        ("/forecast", {"product_ids": [product], "market": market, "horizon": 0}, "horizon"),
        ("/forecast", {"product_ids": [product], "market": market, "horizon": 30}, "horizon"),  # > trained
        ("/forecast", {"product_ids": [product], "market": market, "quantiles": [1.5]}, "quantiles"),
        ("/forecast", {"product_ids": [product], "market": "ZZ"}, "market"),
        ("/bid", {"campaign_id": "no-such-campaign", "request": {}}, "campaign_id"),
        ("/bid", {"campaign_id": campaign}, "request"),
        ("/bid", {"campaign_id": campaign, "request": {"slot": [1, 2]}}, "slot"),
        ("/bid/outcome", {"campaign_id": campaign, "reservation_id": "r", "won": True, "cost": -1}, "cost"),
        ("/bid/outcome", {"campaign_id": campaign, "reservation_id": "nope", "won": False}, "reservation_id"),
    ]
    for path, body, field in cases:
        response = client.post(path, json=body)
        assert 400 <= response.status_code < 500, (path, body, response.status_code, response.text)
        assert field in _named_fields(response), (path, body, response.text)
        assert field in response.text

    # not JSON at all, the wrong content, a wrong method, an unknown path: 4xx, still JSON
    for response in (
        client.post("/recommend", content=b"{not json", headers={"content-type": "application/json"}),
        client.post("/forecast", content=b"[1, 2, 3]", headers={"content-type": "application/json"}),
        client.post("/bid", content=b"\xff\xfe", headers={"content-type": "application/json"}),
        client.get("/recommend"),
        client.post("/nowhere", json={}),
    ):
        assert 400 <= response.status_code < 500, response.text
        assert "detail" in response.json()


def test_outcomes_settle_once_and_never_above_the_bid(
    serving_world: ServingWorld, budget_day: BudgetDay
) -> None:
    client = serving_world.client
    bid = client.post("/bid", json=budget_day.bid({"hour": 3})).json()
    assert bid["bid"] > 0 and bid["reservation_id"], bid
    reservation = {"campaign_id": budget_day.campaign_id, "reservation_id": bid["reservation_id"]}
    too_much = client.post("/bid/outcome", json={**reservation, "won": True, "cost": bid["bid"] * 2 + 1})
    assert too_much.status_code == 409 and "cost" in _named_fields(too_much)  # conflicts with the reservation
    settled = client.post("/bid/outcome", json={**reservation, "won": False})
    assert settled.status_code == 200, settled.text
    again = client.post("/bid/outcome", json={**reservation, "won": False})
    assert again.status_code == 404 and "reservation_id" in _named_fields(again)
    state = budget_day.pacing(client)  # settled once, as lost: nothing spent, nothing held
    assert (state["bids"], state["settled"], state["wins"], state["spent"], state["reserved"]) == (
        1,
        1,
        0,
        0,
        0,
    )


# ---------------------------------------------------------------------------------------------
# the registry: live promotion, challenger split, bad versions, registry unreachable


def _served(world: ServingWorld, endpoint: str = "recommend", alias: str = "champion") -> int | None:
    variant = models_status(world)[endpoint]["variants"].get(alias)
    return variant["version"] if variant else None


def serving_the_champion(world: ServingWorld) -> int:
    """The recommender's champion version, once the app serves it and no challenger: the state a
    test that moves aliases starts from, whatever the tests before it did."""
    from tracking.registry import tracking_client, version_for_alias

    if version_for_alias(RECOMMENDER, "challenger") is not None:
        tracking_client().delete_registered_model_alias(RECOMMENDER, "challenger")
    champion = version_for_alias(RECOMMENDER, "champion").version
    wait_until(
        lambda: _served(world) == champion and _served(world, alias="challenger") is None,
        what=f"the app to serve champion version {champion} and no challenger",
    )
    return champion


def polls_after(world: ServingWorld, moment: datetime, polls: int = 2) -> None:
    """Wait until the recommender's replica has polled the registry `polls` times after `moment`:
    the second one started after the first ended, so it read aliases set before `moment`."""
    seen: set[str] = set()

    def enough() -> bool:
        checked = models_status(world)["recommend"]["last_checked"]
        if checked and datetime.fromisoformat(checked) > moment:
            seen.add(checked)
        return len(seen) >= polls

    wait_until(enough, what=f"{polls} registry polls")


def test_live_promotion_is_picked_up_without_failed_requests(serving_world: ServingWorld) -> None:
    from tracking.registry import promote

    world = serving_world
    before = serving_the_champion(world)
    new = world.register(
        RECOMMENDER, world.recommender("v2"), served_models.TinyRecommender.input_example(), "recommender"
    )
    with Loop(world) as loop:
        wait_until(lambda: len(loop.responses) >= 5, what="the client loop to start")
        promote(RECOMMENDER, new)
        wait_until(lambda: new in loop.versions(), what=f"version {new} to answer")
        seen = len(loop.responses)
        wait_until(lambda: len(loop.responses) >= seen + 5, what="more answers after the swap")
    assert loop.failures() == []
    assert {before, new} <= loop.versions()
    # once swapped, only the new version answers (no challenger exists yet)
    last = [body["model"]["version"] for _, body in loop.responses[-5:]]
    assert last == [new] * 5
    assert _served(world) == new


def test_challenger_gets_its_share_and_is_named(serving_world: ServingWorld) -> None:
    from tracking.registry import set_alias, tracking_client

    world = serving_world
    champion = serving_the_champion(world)
    previous = world.register(  # a version of the test's own to challenge the champion
        RECOMMENDER,
        world.recommender("challenger"),
        served_models.TinyRecommender.input_example(),
        "recommender",
    )
    set_alias(RECOMMENDER, "challenger", previous)
    try:
        wait_until(lambda: _served(world, alias="challenger") == previous, what="the challenger to load")
        variants: dict[str, set[int]] = {}
        for _ in range(40):
            body = world.client.post("/recommend", json={"user_id": "u", "market": world.markets[0]}).json()
            variants.setdefault(body["variant"], set()).add(body["model"]["version"])
        # the test config sends half of the requests to the challenger: 40 all one way is ~1e-12
        assert variants == {"champion": {champion}, "challenger": {previous}}
    finally:
        tracking_client().delete_registered_model_alias(RECOMMENDER, "challenger")
    wait_until(lambda: _served(world, alias="challenger") is None, what="the challenger to retire")


def _corrupt_model_files(world: ServingWorld, version: int) -> None:
    from tracking.registry import tracking_client

    location = tracking_client().get_model_version_download_uri(RECOMMENDER, str(version))
    folder = Path(location.removeprefix("file://"))
    pickles = list(folder.rglob("python_model.pkl"))
    assert pickles, f"no python_model.pkl under {folder}"
    for path in pickles:
        path.write_bytes(b"not a pickle")


def test_a_model_that_cannot_load_or_answer_is_never_swapped_in(serving_world: ServingWorld) -> None:
    from datetime import UTC

    from tracking.registry import promote

    world = serving_world
    serving = serving_the_champion(world)
    broken = world.register(
        RECOMMENDER,
        world.recommender("broken", served_models.BrokenAnswer),
        served_models.TinyRecommender.input_example(),
        "recommender",
    )
    unloadable = world.register(
        RECOMMENDER,
        world.recommender("unloadable"),
        served_models.TinyRecommender.input_example(),
        "recommender",
    )
    _corrupt_model_files(world, unloadable)
    with Loop(world) as loop:
        for bad, reason in ((broken, "ZeroDivisionError"), (unloadable, "version")):
            promote(RECOMMENDER, bad)
            status = wait_until(
                lambda bad=bad: models_status(world)["recommend"]["rejected"].get(str(bad)),
                what=f"version {bad} to be rejected",
            )
            assert reason in status
            assert _served(world) == serving
            assert models_status(world)["recommend"]["last_error"]
        promote(RECOMMENDER, serving)  # roll back: the alias and the served version agree again
        rolled_back = datetime.now(UTC)
        polls_after(world, rolled_back)  # answers go on through polls that read the rolled-back alias
        seen = len(loop.responses)
        wait_until(lambda: len(loop.responses) >= seen + 5, what="answers after the rollback")
    assert loop.failures() == []
    assert loop.versions() == {serving}
    rejected = models_status(world)["recommend"]["rejected"]
    assert "ZeroDivisionError" in rejected[str(broken)]
    assert "UnpicklingError" in rejected[str(unloadable)] or "pickle" in rejected[str(unloadable)].lower()


def test_registry_unreachable_keeps_serving_the_last_model(serving_world: ServingWorld) -> None:
    world = serving_world
    store = Path(world.settings.mlflow_tracking_uri.removeprefix("sqlite:///"))
    serving = serving_the_champion(world)
    header = store.read_bytes()[:100]
    with Loop(world) as loop:
        # a database file that no longer reads as one: every registry query fails, as with a server down
        with store.open("r+b") as file:
            file.write(b"\x00" * 100)
        try:
            # each endpoint polls on its own clock: wait until every one has noticed
            wait_until(
                lambda: all(
                    endpoint["registry_reachable"] is False for endpoint in models_status(world).values()
                ),
                what="every endpoint to report the registry unreachable",
            )
            status = models_status(world)
            assert "unreachable" in status["recommend"]["last_error"]
            seen = len(loop.responses)
            wait_until(lambda: len(loop.responses) >= seen + 5, what="answers while the registry is down")
        finally:
            with store.open("r+b") as file:
                file.write(header)
        wait_until(
            lambda: models_status(world)["recommend"]["registry_reachable"] is True,
            what="the registry to be reachable again",
        )
    assert loop.failures() == []
    assert loop.versions() == {serving}


# ---------------------------------------------------------------------------------------------
# bid pacing persisted across a restart (concurrency on two replicas: test_pacing_served)


def test_pacing_state_survives_a_restart(serving_world: ServingWorld, budget_day: BudgetDay) -> None:
    import ray

    client = serving_world.client
    # the day's budget all reserved (the bidder asks 7% of it each time), two bids won at their full
    # price, one clicked; the other reservations stay open (the session's TTL is an hour)
    answers: list[dict[str, Any]] = []
    while not answers or answers[-1]["bid"] > 0.0:
        answers.append(client.post("/bid", json=budget_day.bid()).json())
        assert len(answers) <= 20, "the budget never ran out"
    for answer, clicked in zip(answers[:2], (True, False), strict=True):
        outcome = {"reservation_id": answer["reservation_id"], "won": True, "cost": answer["bid"]}
        response = client.post(
            "/bid/outcome", json={"campaign_id": budget_day.campaign_id, **outcome, "clicked": clicked}
        )
        assert response.status_code == 200, response.text
    before = budget_day.pacing(client)
    assert (before["wins"], before["clicks"], before["bids"]) == (2, 1, len(answers) - 1)
    assert before["spent"] > 0 and before["reserved"] > 0
    old = answers[-1]["model"]["replica"]
    # the replica's process is killed, as a crash would; Serve starts a new one (the bidder answers
    # inside the Ingress replica with configs/serving.yaml, in a Bidder replica with serving-split)
    (actor,) = [
        named["name"]
        for named in ray.util.list_named_actors(all_namespaces=True)
        if named["namespace"] == "serve"
        and named["name"].startswith("SERVE_REPLICA::tradewind#")
        and named["name"].endswith(f"#{old}")
    ]
    ray.kill(ray.get_actor(actor, namespace="serve"), no_restart=True)

    def new_replica_answers() -> dict[str, Any] | None:
        try:
            response = client.post("/bid", json=budget_day.bid(), timeout=10.0)
        except httpx.HTTPError:  # a request that reached the dead replica before Serve noticed
            return None
        if response.status_code != 200:
            return None
        body = response.json()
        return body if body["model"]["replica"] != old else None

    first = wait_until(new_replica_answers, timeout_s=120, what="a new bidder replica")
    after = budget_day.pacing(client)
    kept = ("spent", "reserved", "bids", "settled", "wins", "clicks", "budget")
    assert {key: after[key] for key in kept} == pytest.approx({key: before[key] for key in kept}), (
        before,
        after,
        first,
        stored_pacing(serving_world, budget_day.campaign_id, after["day"]),
    )
    assert first["bid"] == 0.0  # the restored state still holds the spent and reserved budget


def stored_pacing(world: ServingWorld, campaign_id: str, day: str) -> dict[str, Any]:
    """The data folder's SQLite pacing rows of one campaign-day, read directly (for a failure's message)."""
    import sqlite3

    with contextlib.closing(sqlite3.connect(world.settings.root / "serving" / "pacing.db")) as db:
        key = (campaign_id, day)
        return {
            "campaign_day": db.execute(
                "SELECT * FROM campaign_day WHERE campaign_id = ? AND day = ?", key
            ).fetchall(),
            "reservations": db.execute(
                "SELECT amount, created FROM reservation WHERE campaign_id = ? AND day = ? ORDER BY created",
                key,
            ).fetchall(),
        }
