"""The serving parts that need no Ray: the config file, pacing atomicity across processes (SQLite)
and threads (Redis), reservations expiring on an injected clock, the market-local day, the
benchmark's loopback guard. The Redis checks fail under CI when Redis is absent (redis_test_db)."""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import yaml
from scaleout_services import RedisDb

from configs import ConfigError, InputError
from serving.pacing import (
    PacingStore,
    RedisPacingStore,
    SqlitePacingStore,
    UnknownReservation,
    redis_client,
)
from serving.reference import local_day
from serving.settings import MODEL_DEPLOYMENTS, load_serving_config

SERVE_CONFIGS = ("serving", "serving-split")  # models in the ingress; models as deployments


def recommender_settings(config: dict) -> dict:
    """The recommender's user_config: a section of the Ingress's (answering: ingress) or its own
    deployment's (answering: deployments)."""
    deployments = config["applications"][0]["deployments"]
    if config["applications"][0]["args"]["answering"] == "ingress":
        return next(d for d in deployments if d["name"] == "Ingress")["user_config"]["recommender"]
    return next(d for d in deployments if d["name"] == "Recommender")["user_config"]


@pytest.mark.parametrize("name", SERVE_CONFIGS)
def test_serving_config_is_a_valid_ray_serve_config_naming_our_deployments(name: str) -> None:
    config = load_serving_config(name)
    from ray.serve.schema import ServeDeploySchema

    schema = ServeDeploySchema.model_validate(config)
    names = {deployment.name for app in schema.applications for deployment in app.deployments}
    in_ingress = config["applications"][0]["args"]["answering"] == "ingress"
    assert names == ({"Ingress", "Echo"} if in_ingress else {"Ingress", "Echo", *MODEL_DEPLOYMENTS.values()})
    import serving.app
    import serving.endpoints
    import serving.ingress

    defined = {
        "Echo": serving.app.Echo,
        "Ingress": serving.ingress.Ingress,
        **{name: getattr(serving.endpoints, name) for name in MODEL_DEPLOYMENTS.values()},
    }
    for deployment in names:  # every configured deployment exists under that name in the code
        assert defined[deployment].name == deployment
    recommender = recommender_settings(config)
    assert recommender["batching"]["max_batch_size"] >= 1
    assert recommender["challenger_share"] == pytest.approx(0.1)
    assert recommender["max_in_flight"] >= 1


def _write(path: Path, config: dict) -> Path:
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.parametrize(
    ("name", "where"),
    [
        ("serving", r"deployments\[0\]\.user_config\.recommender"),
        ("serving-split", r"deployments\[1\]\.user_config"),
    ],
)
def test_a_wrong_key_in_the_serving_config_is_named(name: str, where: str, tmp_path: Path) -> None:
    config = load_serving_config(name)
    recommender = recommender_settings(config)
    recommender["challenger_shar"] = 0.2
    with pytest.raises(
        ConfigError, match=rf"serving\.yaml: applications\[0\]\.{where}: unknown key 'challenger_shar'"
    ):
        load_serving_config(_write(tmp_path / "serving.yaml", config))
    recommender.pop("challenger_shar")
    recommender["challenger_share"] = 1.5
    with pytest.raises(ConfigError, match="challenger_share"):
        load_serving_config(_write(tmp_path / "serving.yaml", config))
    recommender["challenger_share"] = 0.1
    config["applications"][0]["deployments"][0]["num_replicaz"] = 2  # Ray's own schema refuses it too
    with pytest.raises(ConfigError, match="num_replicaz"):
        load_serving_config(_write(tmp_path / "serving.yaml", config))


def test_a_model_deployment_beside_in_ingress_answering_is_refused(tmp_path: Path) -> None:
    """With answering: ingress the models are no deployments: Ray would refuse the file with a
    trace; the config check names the deployment instead."""
    config = load_serving_config("serving")
    config["applications"][0]["deployments"].append({"name": "Bidder", "num_replicas": 2})
    with pytest.raises(ConfigError, match=r"deployments\[1\]: Bidder is no deployment of its own"):
        load_serving_config(_write(tmp_path / "serving.yaml", config))


class FakeClock:
    """The pacing stores' clock, moved by the test: a reservation's age without waiting for it."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


MakeStore = Callable[..., PacingStore]


@pytest.fixture(params=["sqlite", "redis"])
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> MakeStore:
    """`make_store(ttl_s=..., clock=...)`: the embedded store in a file of the test's own, or the
    scale-out store in a Redis db of the test's own (redis_test_db: fails under CI without Redis)."""
    if request.param == "sqlite":
        return lambda **kwargs: SqlitePacingStore(tmp_path / "pacing.db", **kwargs)
    db = request.getfixturevalue("redis_test_db")
    return lambda **kwargs: RedisPacingStore(db.feast_connection, **kwargs)


def _hammer(path: str, rounds: int, bid: float, results: multiprocessing.Queue) -> None:
    store = SqlitePacingStore(Path(path), ttl_s=600)
    results.put([store.reserve("C1", "2026-03-29", 1.0, bid).amount for _ in range(rounds)])


def test_reservations_from_several_processes_never_exceed_the_budget(tmp_path: Path) -> None:
    path = tmp_path / "pacing.db"
    context = multiprocessing.get_context("fork")  # the same code in 4 processes, no re-import
    results = context.Queue()
    workers = [context.Process(target=_hammer, args=(str(path), 40, 0.013, results)) for _ in range(4)]
    for worker in workers:
        worker.start()
    amounts = [amount for _ in workers for amount in results.get(timeout=120)]
    for worker in workers:
        worker.join(timeout=60)
    assert len(amounts) == 160
    assert sum(amounts) <= 1.0 + 1e-9
    assert sum(amounts) == pytest.approx(1.0)  # 160 x 0.013 asked: the whole budget went, no more
    state = SqlitePacingStore(path, ttl_s=600).state("C1", "2026-03-29", 1.0)
    assert state.reserved == pytest.approx(1.0) and state.remaining == 0.0


def test_redis_reservations_from_many_threads_never_exceed_the_budget(redis_test_db: RedisDb) -> None:
    store = RedisPacingStore(redis_test_db.feast_connection, ttl_s=600)
    with ThreadPoolExecutor(8) as pool:
        amounts = list(pool.map(lambda _: store.reserve("C1", "2026-03-29", 1.0, 0.013).amount, range(160)))
    assert sum(amounts) <= 1.0 + 1e-9 and sum(amounts) == pytest.approx(1.0)
    state = store.state("C1", "2026-03-29", 1.0)
    assert state.reserved == pytest.approx(1.0) and state.bids == sum(amount > 0 for amount in amounts)
    # the state is in the test's own db (the connection string's `db=`), under the pacing keys
    assert redis_test_db.client.hget("tradewind:pacing:{C1}:2026-03-29", "bids") == str(state.bids).encode()


def test_settling_releases_the_reservation_and_counts_the_cost(make_store: MakeStore) -> None:
    store = make_store(ttl_s=600)
    won = store.reserve("C1", "2026-01-05", 10.0, 4.0)
    lost = store.reserve("C1", "2026-01-05", 10.0, 4.0)
    clipped = store.reserve("C1", "2026-01-05", 10.0, 4.0)
    assert (won.amount, lost.amount, clipped.amount) == (4.0, 4.0, pytest.approx(2.0))
    assert clipped.state.remaining == 0.0 and store.reserve("C1", "2026-01-05", 10.0, 4.0).amount == 0.0
    with pytest.raises(ValueError, match="cost"):
        store.settle("C1", won.reservation_id, True, 5.0, False)
    state = store.settle("C1", won.reservation_id, True, 3.0, True)
    state = store.settle("C1", lost.reservation_id, False, 0.0, False)
    assert (state.spent, state.reserved, state.wins, state.clicks, state.settled, state.bids) == (
        3.0,
        pytest.approx(2.0),
        1,
        1,
        2,
        3,
    )
    with pytest.raises(UnknownReservation, match="reservation_id"):
        store.settle("C1", won.reservation_id, True, 3.0, False)
    assert store.state("C1", "2026-01-06", 10.0).spent == 0.0  # a new local day starts afresh


def test_unsettled_reservations_expire_after_the_ttl(make_store: MakeStore) -> None:
    clock = FakeClock()
    store = make_store(ttl_s=60.0, clock=clock)
    lost = store.reserve("C1", "d", 1.0, 1.0)  # its outcome never comes
    assert lost.amount == 1.0
    assert store.reserve("C1", "d", 1.0, 1.0).amount == 0.0

    clock.advance(59.0)  # still within the TTL: the budget stays held
    assert store.reserve("C1", "d", 1.0, 1.0).amount == 0.0
    assert store.state("C1", "d", 1.0).reserved == 1.0

    clock.advance(2.0)  # 61 s old: released, and the budget goes to the next bid
    again = store.reserve("C1", "d", 1.0, 1.0)
    assert again.amount == 1.0 and again.state.reserved == 1.0 and again.state.spent == 0.0
    with pytest.raises(UnknownReservation, match="expired"):  # an outcome arriving too late
        store.settle("C1", lost.reservation_id, True, 0.5, False)
    assert store.settle("C1", again.reservation_id, True, 0.5, False).spent == 0.5


def test_a_redis_url_in_feast_form_names_its_db_and_a_wrong_one_is_named() -> None:
    assert redis_client("127.0.0.1:6379,db=7").connection_pool.connection_kwargs["db"] == 7
    assert redis_client("redis://127.0.0.1:6379/3").connection_pool.connection_kwargs["db"] == 3
    with pytest.raises(InputError, match=r"scaleout\.redis_url: 'dbx=2'"):
        redis_client("127.0.0.1:6379,dbx=2")
    with pytest.raises(InputError, match="one host:port"):
        redis_client("a:1,b:2")


def test_market_local_day_and_fraction_across_daylight_saving() -> None:
    berlin = ZoneInfo("Europe/Berlin")
    # 2026-03-29 has 23 hours in Berlin: noon local (10:00 UTC) is 11 of 23 hours in
    day, fraction = local_day(datetime(2026, 3, 29, 10, 0, tzinfo=UTC), berlin)
    assert day == "2026-03-29" and fraction == pytest.approx(11 / 23)
    day, fraction = local_day(datetime(2026, 3, 28, 23, 30, tzinfo=UTC), berlin)
    assert day == "2026-03-29" and fraction == pytest.approx(0.5 / 23)
    tokyo_day, _ = local_day(datetime(2026, 3, 28, 16, 0, tzinfo=UTC), ZoneInfo("Asia/Tokyo"))
    assert tokyo_day == "2026-03-29"


def test_the_benchmark_refuses_any_target_off_loopback() -> None:
    from benchmarks.serving import loopback_only, main

    loopback_only("http://127.0.0.1:8000")
    loopback_only("http://localhost:8000")
    with pytest.raises(ValueError, match="only loopback"):
        loopback_only("http://10.1.2.3:8000")
    with pytest.raises(InputError, match="only loopback"):  # the CLI prints it as one line, exit 2
        main(["--url", "http://192.0.2.7:8000"])


class _DyingReplicas:
    """A deployment handle whose first `deaths` calls die with their replica, as a killed one does."""

    def __init__(self, deaths: int) -> None:
        self.deaths = deaths
        self.calls = 0

    def __getattr__(self, method: str) -> _DyingReplicas:
        return self

    def remote(self, payload: Any) -> Any:
        from ray.exceptions import ActorDiedError

        async def answer() -> dict[str, Any]:
            self.calls += 1
            if self.calls <= self.deaths:
                raise ActorDiedError()
            return {"answer": payload}

        return answer()


def test_only_repeatable_calls_are_asked_again_when_their_replica_dies() -> None:
    import asyncio

    from ray.exceptions import ActorDiedError

    from serving.ingress import call_deployment

    for endpoint in ("recommend", "forecast"):
        handle = _DyingReplicas(deaths=1)
        assert asyncio.run(call_deployment(handle, endpoint, "handle", {"k": 1})) == {"answer": {"k": 1}}
        assert handle.calls == 2
        twice = _DyingReplicas(deaths=2)  # once only: a second death is the caller's error
        with pytest.raises(ActorDiedError):
            asyncio.run(call_deployment(twice, endpoint, "handle", {}))
        assert twice.calls == 2
    # a bid or an outcome may have reserved or settled budget before the replica died: never resent
    for method in ("handle", "outcome"):
        handle = _DyingReplicas(deaths=1)
        with pytest.raises(ActorDiedError):
            asyncio.run(call_deployment(handle, "bid", method, {}))
        assert handle.calls == 1
