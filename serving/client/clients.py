"""The sync and async clients: the same methods, one retry plan (`serving.client.plan`)."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from datetime import datetime

import httpx

from configs import InputError
from serving.client.plan import A, Call, Calls, Policy, Wait, parse, plan
from serving.responses import (
    Bid,
    CampaignDay,
    EndpointStatus,
    Forecast,
    Health,
    ModelsStatus,
    Pacing,
    Recommendation,
)
from serving.schemas import AuctionValue


class _Base:
    def __init__(
        self,
        base_url: str,
        api_key: str | None,
        timeout_s: float,
        deadline_ms: float | None,
        retries: int,
        backoff_s: float,
        max_backoff_s: float,
        clock: Callable[[], float],
        rng: random.Random | None,
    ) -> None:
        if retries < 0 or timeout_s <= 0 or (deadline_ms is not None and deadline_ms <= 0):
            raise InputError(
                f"retries must be >= 0, timeout_s and deadline_ms > 0; got retries={retries}, "
                f"timeout_s={timeout_s}, deadline_ms={deadline_ms}"
            )
        self.base_url = base_url.rstrip("/")
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.policy = Policy(
            timeout_s, deadline_ms, retries, backoff_s, max_backoff_s, clock, rng or random.Random()
        )


class TradewindClient(_Base):
    """The sync client; each phase of an attempt (connect, write, each read) is bounded by
    min(timeout_s, what is left of the deadline). `transport` (e.g. httpx.MockTransport) and
    `sleep`/`clock`/`rng` are injectable for tests; `deadline_ms` is every call's default (each
    method takes its own)."""

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        timeout_s: float = 10.0,
        deadline_ms: float | None = None,
        retries: int = 3,
        transport: httpx.BaseTransport | None = None,
        *,
        backoff_s: float = 0.05,
        max_backoff_s: float = 1.0,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        super().__init__(
            base_url, api_key, timeout_s, deadline_ms, retries, backoff_s, max_backoff_s, clock, rng
        )
        self.sleep = sleep
        self.http = httpx.Client(base_url=self.base_url, headers=self.headers, transport=transport)

    def __enter__(self) -> TradewindClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.http.close()

    def _run(self, call: Call, deadline_ms: float | None) -> httpx.Response:
        steps = plan(self.http, call, self.policy, deadline_ms)
        step = next(steps)
        while True:
            try:
                if isinstance(step, Wait):
                    self.sleep(step.seconds)
                    step = steps.send(None)
                    continue
                try:
                    outcome: httpx.Response | Exception = self.http.send(step.request)
                except httpx.TransportError as error:
                    outcome = error
                step = steps.send(outcome)
            except StopIteration as done:
                return done.value

    def _answer(self, spec: tuple[Call, type[A]], deadline_ms: float | None) -> A:
        call, model = spec
        return parse(model, call, self._run(call, deadline_ms))

    def recommend(
        self,
        user_id: str,
        market: str,
        k: int = 10,
        exclude: Iterable[str] = (),
        explain: bool = False,
        *,
        deadline_ms: float | None = None,
    ) -> Recommendation:
        return self._answer(Calls.recommend(user_id, market, k, exclude, explain), deadline_ms)

    def forecast(
        self,
        product_ids: Sequence[str],
        market: str,
        horizon: int = 7,
        quantiles: Sequence[float] = (0.1, 0.5, 0.9),
        *,
        deadline_ms: float | None = None,
    ) -> Forecast:
        return self._answer(Calls.forecast(product_ids, market, horizon, quantiles), deadline_ms)

    def bid(
        self,
        campaign_id: str,
        request: Mapping[str, AuctionValue],
        timestamp: datetime | str | None = None,
        *,
        deadline_ms: float | None = None,
    ) -> Bid:
        """Sent once, never retried (a retry could reserve budget twice)."""
        return self._answer(Calls.bid(campaign_id, request, timestamp), deadline_ms)

    def bid_outcome(
        self,
        campaign_id: str,
        reservation_id: str,
        won: bool,
        cost: float = 0.0,
        clicked: bool = False,
        *,
        deadline_ms: float | None = None,
    ) -> CampaignDay:
        """Sent once, never retried (settling twice is refused: the first one may have settled)."""
        return self._answer(Calls.bid_outcome(campaign_id, reservation_id, won, cost, clicked), deadline_ms)

    def pacing(
        self, campaign_id: str, timestamp: datetime | str | None = None, *, deadline_ms: float | None = None
    ) -> Pacing:
        return self._answer(Calls.pacing(campaign_id, timestamp), deadline_ms)

    def models(self, *, deadline_ms: float | None = None) -> dict[str, EndpointStatus]:
        return self._answer((Call("GET", "/models", True), ModelsStatus), deadline_ms).root

    def healthz(self, *, deadline_ms: float | None = None) -> Health:
        return self._answer((Call("GET", "/healthz", True), Health), deadline_ms)


class AsyncTradewindClient(_Base):
    """`TradewindClient` on httpx.AsyncClient: the same methods, awaited, the same retry plan; each
    attempt as a whole is bounded by min(timeout_s, what is left of the deadline)."""

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        timeout_s: float = 10.0,
        deadline_ms: float | None = None,
        retries: int = 3,
        transport: httpx.AsyncBaseTransport | None = None,
        *,
        backoff_s: float = 0.05,
        max_backoff_s: float = 1.0,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        limits: httpx.Limits | None = None,
    ) -> None:
        super().__init__(
            base_url, api_key, timeout_s, deadline_ms, retries, backoff_s, max_backoff_s, clock, rng
        )
        self.sleep = sleep
        self.http = httpx.AsyncClient(
            base_url=self.base_url, headers=self.headers, transport=transport, limits=limits or httpx.Limits()
        )

    async def __aenter__(self) -> AsyncTradewindClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self.http.aclose()

    async def _run(self, call: Call, deadline_ms: float | None) -> httpx.Response:
        steps = plan(self.http, call, self.policy, deadline_ms)
        step = next(steps)
        while True:
            try:
                if isinstance(step, Wait):
                    await self.sleep(step.seconds)
                    step = steps.send(None)
                    continue
                # httpx bounds each phase (connect, each read...); here the attempt as a whole
                bound = step.request.extensions["timeout"]["read"]
                try:
                    outcome: httpx.Response | Exception = await asyncio.wait_for(
                        self.http.send(step.request), bound
                    )
                except httpx.TransportError as error:
                    outcome = error
                except TimeoutError:
                    outcome = httpx.ReadTimeout(f"no answer in {bound:g} s", request=step.request)
                step = steps.send(outcome)
            except StopIteration as done:
                return done.value

    async def _answer(self, spec: tuple[Call, type[A]], deadline_ms: float | None) -> A:
        call, model = spec
        return parse(model, call, await self._run(call, deadline_ms))

    async def recommend(
        self,
        user_id: str,
        market: str,
        k: int = 10,
        exclude: Iterable[str] = (),
        explain: bool = False,
        *,
        deadline_ms: float | None = None,
    ) -> Recommendation:
        return await self._answer(Calls.recommend(user_id, market, k, exclude, explain), deadline_ms)

    async def forecast(
        self,
        product_ids: Sequence[str],
        market: str,
        horizon: int = 7,
        quantiles: Sequence[float] = (0.1, 0.5, 0.9),
        *,
        deadline_ms: float | None = None,
    ) -> Forecast:
        return await self._answer(Calls.forecast(product_ids, market, horizon, quantiles), deadline_ms)

    async def bid(
        self,
        campaign_id: str,
        request: Mapping[str, AuctionValue],
        timestamp: datetime | str | None = None,
        *,
        deadline_ms: float | None = None,
    ) -> Bid:
        return await self._answer(Calls.bid(campaign_id, request, timestamp), deadline_ms)

    async def bid_outcome(
        self,
        campaign_id: str,
        reservation_id: str,
        won: bool,
        cost: float = 0.0,
        clicked: bool = False,
        *,
        deadline_ms: float | None = None,
    ) -> CampaignDay:
        spec = Calls.bid_outcome(campaign_id, reservation_id, won, cost, clicked)
        return await self._answer(spec, deadline_ms)

    async def pacing(
        self, campaign_id: str, timestamp: datetime | str | None = None, *, deadline_ms: float | None = None
    ) -> Pacing:
        return await self._answer(Calls.pacing(campaign_id, timestamp), deadline_ms)

    async def models(self, *, deadline_ms: float | None = None) -> dict[str, EndpointStatus]:
        return (await self._answer((Call("GET", "/models", True), ModelsStatus), deadline_ms)).root

    async def healthz(self, *, deadline_ms: float | None = None) -> Health:
        return await self._answer((Call("GET", "/healthz", True), Health), deadline_ms)
