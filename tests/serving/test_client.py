"""serving.client against httpx.MockTransport (no server: what is sent, how answers and failures are
read, when it retries), then once against the real served app of tests/serving (marked slow)."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from serving.client import (
    AsyncTradewindClient,
    Bid,
    DeadlineExceeded,
    Overloaded,
    RateLimited,
    RequestRefused,
    ServerError,
    TradewindClient,
    TradewindUnavailable,
    Unauthorized,
)

SERVED_BY = {"name": "tradewind-recommender", "version": 3, "replica": "r1"}
DAY = {
    "campaign_id": "c1",
    "day": "2026-12-05",
    "budget": 100.0,
    "spent": 2.0,
    "reserved": 0.5,
    "bids": 4,
    "settled": 3,
    "wins": 2,
    "clicks": 1,
    "remaining": 97.5,
}


class FakeTime:
    """A clock that moves only when the client sleeps: retries and deadlines without real waits."""

    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


class Server:
    """A MockTransport handler answering from a script (one entry per call, the last repeated),
    keeping every request it saw."""

    def __init__(self, *answers: httpx.Response | Exception | Callable[[httpx.Request], httpx.Response]):
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers[min(len(self.requests), len(self.answers)) - 1]
        if isinstance(answer, Exception):
            raise answer
        return answer(request) if callable(answer) else answer

    def body(self, index: int = -1) -> dict[str, Any]:
        return json.loads(self.requests[index].content)


def ok(body: Any) -> httpx.Response:
    return httpx.Response(200, json=body)


def busy(retry_after: str | None = None) -> httpx.Response:
    headers = {"Retry-After": retry_after} if retry_after is not None else {}
    return httpx.Response(503, json={"detail": "overloaded: try again"}, headers=headers)


def client_of(server: Server, time: FakeTime | None = None, **options: Any) -> TradewindClient:
    time = time or FakeTime()
    return TradewindClient(
        "http://tradewind.test",
        transport=httpx.MockTransport(server),
        sleep=time.sleep,
        clock=time.clock,
        rng=random.Random(7),
        **options,
    )


# ---------------------------------------------------------------------------------------------
# what each method sends, and its answer typed


def test_recommend_sends_its_body_and_reads_items_with_reasons() -> None:
    answer = {
        "items": [
            {"product_id": "p1", "score": 0.9, "reasons": [{"feature": "affinity", "contribution": 0.4}]},
            {"product_id": "p2", "score": None, "reasons": [{"feature": "trending", "contribution": 0.1}]},
        ],
        "cold_start": False,
        "variant": "champion",
        "model": SERVED_BY,
    }
    server = Server(ok(answer))
    with client_of(server) as client:
        top = client.recommend("u1", "US", k=2, exclude=["p9"], explain=True)
    sent = server.requests[0]
    assert (sent.method, sent.url.path) == ("POST", "/recommend")
    assert server.body() == {"user_id": "u1", "market": "US", "k": 2, "exclude": ["p9"], "explain": True}
    assert [item.product_id for item in top.items] == ["p1", "p2"]
    assert top.items[0].reasons is not None and top.items[0].reasons[0].feature == "affinity"
    assert top.items[1].score is None  # a NaN score arrives as null
    assert (top.cold_start, top.variant, top.model.version, top.model.replica) == (False, "champion", 3, "r1")


def test_forecast_sends_sorted_quantiles_and_gathers_each_point_quantiles() -> None:
    points = [
        {"product_id": "p1", "date": "2026-12-06", "mean": 3.0, "p10": 1.0, "p90": 5.5},
        {"product_id": "p1", "date": "2026-12-07", "mean": 2.0, "p10": 0.0, "p90": None},
    ]
    answer = {"market": "DE", "forecasts": points, "variant": "challenger", "model": SERVED_BY}
    server = Server(ok(answer))
    with client_of(server) as client:
        forecast = client.forecast(["p1"], "DE", horizon=2, quantiles=(0.9, 0.1))
    assert server.requests[0].url.path == "/forecast"
    assert server.body() == {"product_ids": ["p1"], "market": "DE", "horizon": 2, "quantiles": [0.1, 0.9]}
    assert forecast.market == "DE" and forecast.variant == "challenger"
    assert forecast.forecasts[0].quantiles == {"p10": 1.0, "p90": 5.5}
    assert forecast.forecasts[1].quantiles == {"p10": 0.0, "p90": None}
    assert forecast.forecasts[0].mean == 3.0 and forecast.forecasts[1].date == "2026-12-07"


def test_bid_sends_campaign_request_and_timestamp_and_reads_the_reservation() -> None:
    answer = {
        "bid": 0.8,
        "pctr": 0.02,
        "lambda": 0.025,
        "model_bid": 0.8,
        "reservation_id": "res-1",
        "day": "2026-12-05",
        "remaining": 99.2,
        "variant": "champion",
        "model": {**SERVED_BY, "name": "tradewind-bidder"},
    }
    server = Server(ok(answer))
    with client_of(server) as client:
        bid = client.bid("c1", {"exchange": "x1", "floor_price": 0.1}, timestamp="2026-12-05T12:00:00+00:00")
    assert server.requests[0].url.path == "/bid"
    assert server.body() == {
        "campaign_id": "c1",
        "request": {"exchange": "x1", "floor_price": 0.1},
        "timestamp": "2026-12-05T12:00:00Z",
    }
    assert isinstance(bid, Bid)
    assert (bid.bid, bid.reservation_id, bid.remaining, bid.lambda_) == (0.8, "res-1", 99.2, 0.025)


def test_bid_outcome_sends_the_settlement_and_reads_the_campaign_day() -> None:
    server = Server(ok(DAY))
    with client_of(server) as client:
        day = client.bid_outcome("c1", "res-1", won=True, cost=0.5, clicked=True)
    assert server.requests[0].url.path == "/bid/outcome"
    assert server.body() == {
        "campaign_id": "c1",
        "reservation_id": "res-1",
        "won": True,
        "cost": 0.5,
        "clicked": True,
    }
    assert (day.spent, day.wins, day.clicks, day.remaining) == (2.0, 2, 1, 97.5)


def test_pacing_models_and_healthz_are_gets_read_into_their_types() -> None:
    status = {
        "recommend": {
            "endpoint": "recommend",
            "registered_model": "tradewind-recommender",
            "variants": {"champion": {"alias": "champion", "version": 3, "example_request": {"k": 1}}},
            "registry_reachable": True,
            "last_error": None,
            "rejected": {"2": "smoke answer lacks ['items']"},
            "alias": "champion",
            "batching": {"max_batch_size": 8},
        },
        "bid": {"endpoint": "bid", "last_error": "deployment not answering: TimeoutError"},
    }

    def route(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/models":
            return ok(status)
        if request.url.path == "/healthz":
            return ok({"status": "ok"})
        return ok({**DAY, "time_fraction": 0.5, "market": "US"})

    server = Server(route)
    with client_of(server) as client:
        pacing = client.pacing("c 1/x", timestamp="2026-12-05T12:00:00+00:00")
        models = client.models()
        health = client.healthz()
    assert server.requests[0].url.raw_path.startswith(b"/campaigns/c%201%2Fx/pacing?")
    assert server.requests[0].url.params["timestamp"] == "2026-12-05T12:00:00+00:00"
    assert all(request.method == "GET" for request in server.requests)
    assert (pacing.time_fraction, pacing.market, pacing.budget) == (0.5, "US", 100.0)
    assert models["recommend"].variants["champion"].version == 3
    assert models["recommend"].rejected == {"2": "smoke answer lacks ['items']"}
    assert models["bid"].registered_model is None and "not answering" in (models["bid"].last_error or "")
    assert health.status == "ok"


# ---------------------------------------------------------------------------------------------
# headers: the key and the deadline


def test_the_key_goes_as_a_bearer_and_no_header_is_sent_without_one() -> None:
    server = Server(ok({"status": "ok"}))
    with client_of(server, api_key="tw_secret") as client:
        client.healthz()
    with client_of(server) as client:
        client.healthz()
    assert server.requests[0].headers["authorization"] == "Bearer tw_secret"
    assert "authorization" not in server.requests[1].headers
    assert "x-deadline-ms" not in server.requests[1].headers  # no deadline given, none sent


def test_the_deadline_goes_as_a_header_and_bounds_each_attempts_own_timeout() -> None:
    server = Server(ok({"status": "ok"}))
    with client_of(server, deadline_ms=250, timeout_s=10.0) as client:
        client.healthz()
        client.healthz(deadline_ms=40)  # the call's own deadline wins over the client's
    first, second = server.requests
    assert first.headers["x-deadline-ms"] == "250" and second.headers["x-deadline-ms"] == "40"
    assert first.extensions["timeout"]["read"] == pytest.approx(0.25)  # never waits past the deadline
    assert second.extensions["timeout"]["connect"] == pytest.approx(0.04)


# ---------------------------------------------------------------------------------------------
# retries: /recommend, /forecast and GETs only; never a bid


def test_recommend_retries_a_503_after_its_retry_after() -> None:
    answer = {"items": [], "cold_start": True, "variant": "champion", "model": SERVED_BY}
    server, time = Server(busy("2"), busy("1.5"), ok(answer)), FakeTime()
    with client_of(server, time, retries=3) as client:
        top = client.recommend("u1", "US")
    assert len(server.requests) == 3
    assert time.slept == [2.0, 1.5]  # what the server asked for, not the client's own backoff
    assert top.cold_start is True


def test_forecast_retries_connection_errors_with_jittered_exponential_backoff() -> None:
    answer = {"market": "DE", "forecasts": [], "variant": "champion", "model": SERVED_BY}
    refused = httpx.ConnectError("connection refused")
    server, time = Server(refused, refused, httpx.Response(502), ok(answer)), FakeTime()
    with client_of(server, time, retries=3, backoff_s=0.1, max_backoff_s=0.15) as client:
        assert client.forecast(["p1"], "DE").market == "DE"
    assert len(server.requests) == 4
    caps = [0.1, 0.15, 0.15]  # 0.1 * 2**n, capped
    assert len(time.slept) == 3 and all(
        0.0 <= slept <= cap for slept, cap in zip(time.slept, caps, strict=True)
    )
    assert len(set(time.slept)) == 3  # jittered, not a fixed schedule


def test_bid_is_sent_once_on_a_503_even_with_retries_left() -> None:
    server, time = Server(busy("0"), ok(DAY)), FakeTime()
    with client_of(server, time, retries=5) as client, pytest.raises(Overloaded) as raised:
        client.bid("c1", {"exchange": "x1"})
    assert len(server.requests) == 1 and time.slept == []
    assert raised.value.retry_after == 0.0 and raised.value.attempts == 1
    assert str(raised.value) == "POST /bid: 503 overloaded: try again"


def test_bid_outcome_is_sent_once_on_a_connection_error() -> None:
    server = Server(httpx.ConnectError("connection reset\nby peer"), ok(DAY))
    with client_of(server, retries=5) as client, pytest.raises(TradewindUnavailable) as raised:
        client.bid_outcome("c1", "res-1", won=False)
    assert len(server.requests) == 1
    assert str(raised.value) == "POST /bid/outcome: ConnectError: connection reset by peer"


def test_the_deadline_bounds_the_retries_and_each_attempt_says_what_is_left() -> None:
    server, time = Server(busy("0.4")), FakeTime()
    with client_of(server, time, retries=10, deadline_ms=1000) as client, pytest.raises(Overloaded) as raised:
        client.recommend("u1", "US")
    # sent at 0, 0.4 and 0.8 s; a fourth wait would end at 1.2 s, past the deadline: no sleep, no send
    assert [request.headers["x-deadline-ms"] for request in server.requests] == ["1000", "600", "200"]
    assert time.slept == [0.4, 0.4] and time.now < 1.0
    assert raised.value.attempts == 3 and raised.value.status == 503


def test_retries_run_out_into_the_last_failure() -> None:
    server, time = Server(busy()), FakeTime()
    with client_of(server, time, retries=2) as client, pytest.raises(Overloaded) as raised:
        client.recommend("u1", "US")
    assert len(server.requests) == 3 and len(time.slept) == 2
    assert raised.value.retry_after is None and raised.value.attempts == 3


def test_a_read_timeout_at_the_deadline_is_deadline_exceeded() -> None:
    time = FakeTime()

    def slow(request: httpx.Request) -> httpx.Response:
        time.now += 0.1  # the whole deadline spent waiting for the answer
        raise httpx.ReadTimeout("timed out", request=request)

    server = Server(slow)
    with client_of(server, time, deadline_ms=100, retries=3) as client, pytest.raises(DeadlineExceeded):
        client.recommend("u1", "US")
    assert len(server.requests) == 1


# ---------------------------------------------------------------------------------------------
# failures: one exception per class, one line naming endpoint, status, reason (and field)


@pytest.mark.parametrize(
    ("response", "kind", "message", "field"),
    [
        (
            httpx.Response(
                422,
                json={"detail": [{"loc": ["body", "k"], "msg": "Input should be <= 100", "type": "x"}]},
            ),
            RequestRefused,
            "POST /recommend: 422 k: Input should be <= 100",
            "k",
        ),
        (
            httpx.Response(
                422, json={"detail": [{"loc": ["body", "market"], "msg": "market: unknown market 'ZZ'"}]}
            ),
            RequestRefused,
            "POST /recommend: 422 market: market: unknown market 'ZZ'",
            "market",
        ),
        (
            httpx.Response(401, json={"detail": "missing API key"}),
            Unauthorized,
            "POST /recommend: 401 missing API key",
            None,
        ),
        (
            httpx.Response(403, json={"detail": "key lacks scope recommend"}),
            Unauthorized,
            "POST /recommend: 403 key lacks scope recommend",
            None,
        ),
        (
            httpx.Response(429, json={"detail": "rate exceeded"}),
            RateLimited,
            "POST /recommend: 429 rate exceeded",
            None,
        ),
        (
            httpx.Response(413, text="Request Entity\nToo Large"),
            RequestRefused,
            "POST /recommend: 413 Request Entity Too Large",
            None,
        ),
        (
            httpx.Response(500, json={"detail": "internal error: KeyError"}),
            ServerError,
            "POST /recommend: 500 internal error: KeyError",
            None,
        ),
    ],
)
def test_an_error_answer_is_its_class_of_failure_in_one_line(
    response: httpx.Response, kind: type[Exception], message: str, field: str | None
) -> None:
    server = Server(response)
    with client_of(server, retries=3) as client, pytest.raises(kind) as raised:
        client.recommend("u1", "ZZ")
    assert str(raised.value) == message
    assert getattr(raised.value, "field", None) == field
    assert len(server.requests) == 1  # none of these is retried


def test_an_unknown_campaign_names_the_field_the_server_named() -> None:
    detail = [{"loc": ["body", "campaign_id"], "msg": "unknown campaign 'nope'", "type": "value_error"}]
    server = Server(httpx.Response(404, json={"detail": detail}))
    with client_of(server) as client, pytest.raises(RequestRefused) as raised:
        client.pacing("nope")
    assert (raised.value.status, raised.value.field) == (404, "campaign_id")
    assert str(raised.value) == "GET /campaigns/nope/pacing: 404 campaign_id: unknown campaign 'nope'"


def test_a_body_the_schema_refuses_is_never_sent() -> None:
    server = Server(ok({}))
    with client_of(server) as client:
        with pytest.raises(RequestRefused) as refused_k:
            client.recommend("u1", "US", k=0)
        with pytest.raises(RequestRefused) as refused_quantile:
            client.forecast(["p1"], "US", quantiles=(0.5, 1.5))
    assert server.requests == []
    assert refused_k.value.status is None and refused_k.value.field == "k"
    assert refused_quantile.value.field == "quantiles" and "1.5" in str(refused_quantile.value)


def test_an_answer_of_the_wrong_shape_is_a_server_error_not_a_validation_trace() -> None:
    server = Server(ok({"items": "nope"}))
    with client_of(server) as client, pytest.raises(ServerError) as raised:
        client.recommend("u1", "US")
    assert str(raised.value).startswith("POST /recommend: 200 answer not understood:")
    assert "\n" not in str(raised.value)


# ---------------------------------------------------------------------------------------------
# the async twin drives the same plan


def test_the_async_client_retries_recommend_and_sends_bid_once() -> None:
    answer = {"items": [], "cold_start": True, "variant": "champion", "model": SERVED_BY}
    server = Server(busy("0.5"), ok(answer))
    bids = Server(busy("0"))
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    async def run() -> None:
        options: dict[str, Any] = {"api_key": "k", "sleep": sleep, "retries": 2}
        async with AsyncTradewindClient(
            "http://t", transport=httpx.MockTransport(server), **options
        ) as client:
            assert (await client.recommend("u1", "US")).cold_start is True
        async with AsyncTradewindClient("http://t", transport=httpx.MockTransport(bids), **options) as client:
            with pytest.raises(Overloaded):
                await client.bid("c1", {})

    asyncio.run(run())
    assert len(server.requests) == 2 and slept == [0.5] and len(bids.requests) == 1
    assert server.requests[0].headers["authorization"] == "Bearer k"


def test_the_async_client_bounds_a_whole_attempt_by_the_deadline() -> None:
    seen: list[httpx.Request] = []

    async def never(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        await asyncio.Event().wait()  # a server that accepted the request and never answers
        raise AssertionError("unreachable")

    async def run() -> float:
        transport = httpx.MockTransport(never)
        async with AsyncTradewindClient("http://t", deadline_ms=50, transport=transport) as client:
            started = asyncio.get_running_loop().time()
            with pytest.raises(DeadlineExceeded) as raised:
                await client.recommend("u1", "US")
            assert str(raised.value).startswith("POST /recommend: no answer in time")
            return asyncio.get_running_loop().time() - started

    waited = asyncio.run(run())
    assert len(seen) == 1 and 0.04 <= waited < 1.0  # no retry once the deadline has gone


# ---------------------------------------------------------------------------------------------
# the demo shows each endpoint through the client


def test_the_demo_sends_each_champion_example_through_the_client_and_shows_refusals() -> None:
    from rich.console import Console

    from serving.demo import show_endpoints

    examples = {
        "recommend": {"user_id": "u1", "market": "US", "k": 2, "exclude": [], "explain": False},
        "forecast": {"product_ids": ["p1"], "market": "US", "horizon": 1, "quantiles": [0.5]},
        "bid": {"campaign_id": "c1", "request": {"exchange": "x1"}},
    }
    status = {
        endpoint: {
            "endpoint": endpoint,
            "registered_model": f"tradewind-{endpoint}",
            "variants": {"champion": {"alias": "champion", "version": 1, "example_request": example}},
            "registry_reachable": True,
        }
        for endpoint, example in examples.items()
    }
    point = {"product_id": "p1", "date": "2026-12-06", "mean": 2.0, "p50": 2.0}
    answers = {
        "/models": ok(status),
        "/recommend": ok(
            {
                "items": [{"product_id": "p1", "score": 1.0}],
                "cold_start": False,
                "variant": "champion",
                "model": SERVED_BY,
            }
        ),
        "/forecast": ok({"market": "US", "forecasts": [point], "variant": "champion", "model": SERVED_BY}),
        "/bid": httpx.Response(
            404, json={"detail": [{"loc": ["body", "campaign_id"], "msg": "unknown campaign 'c1'"}]}
        ),
    }
    server = Server(lambda request: answers[request.url.path])
    console = Console(record=True, width=200)
    with client_of(server) as client:
        shown = show_endpoints(client, console)
    sent = [json.loads(request.content) for request in server.requests[1:]]
    assert sent == [*list(examples.values())[:2], {**examples["bid"], "timestamp": None}]  # null: now
    assert shown["recommend"][1] == 200
    assert shown["recommend"][2]["items"] == [{"product_id": "p1", "score": 1.0}]  # no field it lacked
    assert shown["forecast"][2]["forecasts"] == [point]  # shown as the server sent it
    assert shown["bid"][1] == 404
    assert shown["bid"][2] == {"detail": "POST /bid: 404 campaign_id: unknown campaign 'c1'"}
    printed = console.export_text()
    assert "POST /forecast  ->  200" in printed and "POST /bid  ->  404" in printed


# ---------------------------------------------------------------------------------------------
# the real app


@pytest.mark.slow
def test_each_endpoint_through_the_client_against_the_served_app(serving_world: Any, budget_day: Any) -> None:
    world = serving_world
    with TradewindClient(world.url, api_key=world.api_key, timeout_s=30.0, deadline_ms=30_000) as client:
        assert client.healthz().status == "ok"
        models = client.models()
        assert {"recommend", "forecast", "bid"} <= set(models)
        assert models["recommend"].variants["champion"].version >= 1

        top = client.recommend(world.users[0], world.markets[0], k=3)
        assert len(top.items) == 3 and top.model.name == "tradewind-recommender"

        forecast = client.forecast([world.products[0]], world.markets[0], horizon=2, quantiles=(0.5,))
        assert len(forecast.forecasts) == 2 and set(forecast.forecasts[0].quantiles) == {"p50"}

        bid = client.bid(budget_day.campaign_id, {}, timestamp=budget_day.timestamp)
        assert bid.bid > 0 and bid.reservation_id
        pacing = client.pacing(budget_day.campaign_id, timestamp=budget_day.timestamp)
        assert pacing.bids == 1 and pacing.reserved == pytest.approx(bid.bid)

        settled = client.bid_outcome(budget_day.campaign_id, bid.reservation_id, won=True, cost=bid.bid / 2)
        assert settled.spent == pytest.approx(bid.bid / 2) and settled.reserved == pytest.approx(0.0)

        with pytest.raises(RequestRefused) as unknown:
            client.bid_outcome(budget_day.campaign_id, bid.reservation_id, won=True)  # settled already
        assert (unknown.value.status, unknown.value.field) == (404, "reservation_id")
