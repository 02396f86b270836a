"""The model deployments of the Tradewind Ray Serve application, one per endpoint.

`ModelEndpoint` holds what every endpoint does (served models by alias from the MLflow registry,
online features, batched answers, the champion/challenger split); `Recommender`, `Forecaster` and
`Bidder` are the three deployments, the bidder with the campaign's pacing state around its model.
`serving/ingress.py` calls them over their handles; `serving/app.py` binds them into the application.
"""

import asyncio
import logging
import random
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar

from pydantic import ValidationError
from ray import serve

from configs.families import BIDDER, FORECASTER, RECOMMENDER, FamilyName
from configs.settings import Settings
from serving.admission import Deadline, InFlight
from serving.online import OnlineFeatures
from serving.registry_models import LoadedModel, Poller, ServedModels, limit_registry_calls
from serving.schemas import MODEL_REQUESTS, PacingState, field_of_message, refusal_status
from serving.settings import EndpointSettings, endpoint_settings
from tracking.registry import CHALLENGER, CHAMPION

logger = logging.getLogger("tradewind.serving")

# what a model's answer must contain, per endpoint (checked on its smoke request before a swap)
ANSWER_KEYS = {
    RECOMMENDER.endpoint: ("items", "cold_start"),
    FORECASTER.endpoint: ("market", "forecasts"),
    BIDDER.endpoint: ("bid",),
}


class RequestRefused(ValueError):
    """A request the endpoint answers with a 4xx: `field` names what is wrong."""

    def __init__(self, field: str, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.field = field
        self.status = status


@dataclass
class Prepared:
    model_request: dict[str, Any]
    context: Any = None


class ModelEndpoint:
    """One endpoint's deployment: served models by alias, online features, batched answers."""

    family: ClassVar[FamilyName]  # the endpoint and the registered model follow from its name

    def __init__(self, settings: Settings, registered_model: str | None = None) -> None:
        from tracking.runs import configure_tracking

        logging.getLogger("tradewind").setLevel(logging.INFO)
        self.settings = settings
        self.endpoint = self.family.endpoint
        self.config = EndpointSettings()
        self.replica = _replica_name()
        self.in_flight = InFlight()
        limit_registry_calls(self.config.registry_timeout_s, self.config.registry_retries)
        configure_tracking(settings)
        self.features = OnlineFeatures(settings)
        self.models = ServedModels(registered_model or self.family.registered_model, self._smoke_check)
        self.models.poll()  # the first load happens before the replica takes traffic
        self._poller = Poller(f"poll-{self.endpoint}", self.models.poll, lambda: self.config.poll_interval_s)
        self._poller.start()

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        self.config = endpoint_settings(user_config, f"{type(self).__name__} user_config")
        limit_registry_calls(self.config.registry_timeout_s, self.config.registry_retries)
        aliases = (self.config.alias, self.config.challenger_alias)
        if self.models.aliases != aliases:
            self.models.aliases = aliases
            self.models.poll()
        self._batched.set_max_batch_size(self.config.batching.max_batch_size)
        self._batched.set_batch_wait_timeout_s(self.config.batching.batch_wait_timeout_s)

    def __del__(self) -> None:
        poller = getattr(self, "_poller", None)
        if poller is not None:
            poller.stop()

    # -- hooks for endpoints that add state around the model (the bidder) --------------------------
    def prepare(self, request: dict[str, Any]) -> Prepared:
        return Prepared(request)

    def finish(self, answer: dict[str, Any], prepared: Prepared) -> dict[str, Any]:
        return answer

    # -- the request path ---------------------------------------------------------------------
    def _choose(self) -> tuple[str, LoadedModel | None]:
        models = self.models.models
        challenger = models.get(self.config.challenger_alias)
        if (
            challenger is not None
            and self.config.challenger_share > 0
            and random.random() < self.config.challenger_share
        ):
            return CHALLENGER, challenger
        return CHAMPION, models.get(self.config.alias)

    def _answer_many(self, calls: list[tuple[dict[str, Any], Deadline | None]]) -> list[dict[str, Any]]:
        results: list[dict[str, Any] | None] = [None] * len(calls)
        chosen: list[tuple[int, str, LoadedModel, Prepared, list[dict] | None]] = []
        now = time.time()
        for index, (request, deadline) in enumerate(calls):
            if deadline is not None and deadline.passed(self.config.deadline_ms, now):
                # its caller has given up: no model work, no budget reserved
                results[index] = _failure(
                    503, "deadline", "the caller's deadline passed before the model ran", retry_after=0
                )
                continue
            variant, model = self._choose()
            if model is None:
                results[index] = _failure(503, "model", self._not_loaded_message())
                continue
            try:
                prepared = self.prepare(request)
                entities = (
                    model.python_model.online_entities(prepared.model_request)
                    if model.feature_service
                    else None
                )
                chosen.append((index, variant, model, prepared, entities or None))
            except RequestRefused as refused:
                results[index] = _failure(refused.status, refused.field, str(refused))
            except ValueError as error:  # malformed (422) or an id the data does not hold (404)
                message = str(error)
                results[index] = _failure(refusal_status(message), field_of_message(message, "body"), message)
        try:
            online = self._online_for([(model, entities) for _, _, model, _, entities in chosen])
        except Exception as error:  # the online store is down: these requests cannot be answered now
            logger.exception("online features unavailable")
            online = None
            for index, *_ in chosen:
                results[index] = _failure(
                    503, "features", f"online features unavailable: {type(error).__name__}"
                )
        if online is not None:
            for (index, variant, model, prepared, _), features in zip(chosen, online, strict=True):
                results[index] = self._answer_one(variant, model, prepared, features)
        return [result for result in results if result is not None]

    def _online_for(self, wanted: list[tuple[LoadedModel, list[dict] | None]]) -> list[dict | None]:
        """Online features per request: one Feast call per feature service in the batch."""
        online: list[dict | None] = [None] * len(wanted)
        services = {model.feature_service for model, rows in wanted if rows}
        for service in services:
            members = [
                i for i, (model, rows) in enumerate(wanted) if rows and model.feature_service == service
            ]
            fetched = self.features.fetch_many(service, [wanted[i][1] or [] for i in members])
            for i, columns in zip(members, fetched, strict=True):
                online[i] = columns
        return online

    def _answer_one(
        self, variant: str, model: LoadedModel, prepared: Prepared, online: dict | None
    ) -> dict[str, Any]:
        try:
            answer = model.python_model.answer(prepared.model_request, online)
            answer = self.finish(answer, prepared)
        except RequestRefused as refused:
            return _failure(refused.status, refused.field, str(refused))
        except ValueError as error:  # the contract's way of saying "bad input": names the field
            message = str(error)
            return _failure(refusal_status(message), field_of_message(message, "body"), message)
        except Exception as error:  # a bug: logged with its trace, answered as JSON
            logger.exception("%s version %s failed on a request", model.name, model.version)
            return _failure(
                500, "model", f"internal error in {model.name} v{model.version}: {type(error).__name__}"
            )
        return {
            "answer": answer,
            "variant": variant,
            "model": {"name": model.name, "version": model.version, "replica": self.replica},
        }

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.002)
    async def _batched(self, calls: list[tuple[dict[str, Any], Deadline | None]]) -> list[dict[str, Any]]:
        return await asyncio.to_thread(self._answer_many, calls)

    async def handle(self, request: dict[str, Any], deadline: Deadline | None = None) -> dict[str, Any]:
        """One request: refused at once (503, Retry-After) when `max_in_flight` are being answered."""
        if not self.in_flight.try_enter(self.config.max_in_flight):
            return _failure(503, "load", self.overloaded_message(), retry_after=self.config.retry_after_s)
        try:
            return await self._batched((request, deadline))
        finally:
            self.in_flight.leave()

    def overloaded_message(self) -> str:
        return f"/{self.endpoint} is answering {self.config.max_in_flight} requests: try again later"

    def early_refusal(self) -> tuple[int, str] | None:
        """(Retry-After, why) when this endpoint is full now: the ingress's gate asks before it reads
        the body; `handle` checks again (the check that counts)."""
        if self.in_flight.refuses(self.config.max_in_flight):
            return self.config.retry_after_s, self.overloaded_message()
        return None

    def _not_loaded_message(self) -> str:
        reason = self.models.last_error or "not loaded yet"
        return f"no model loaded for {self.models.registered_model}@{self.config.alias}: {reason}"

    def _smoke_check(self, model: LoadedModel) -> dict[str, Any]:
        """A candidate answers its own smoke request through the real path, or is not swapped in."""
        smoke = model.python_model.smoke_request()
        try:
            validated = MODEL_REQUESTS[self.endpoint].model_validate(smoke).model_dump(mode="json")
        except ValidationError as error:
            raise ValueError(
                f"smoke request does not fit the {self.endpoint} request schema: {error}"
            ) from None
        entities = model.python_model.online_entities(validated) if model.feature_service else None
        online = self.features.fetch(model.feature_service, entities) if entities else None
        answer = model.python_model.answer(validated, online)
        missing = [
            key for key in ANSWER_KEYS[self.endpoint] if not isinstance(answer, dict) or key not in answer
        ]
        if missing:
            raise ValueError(f"smoke answer lacks {missing}")
        return self.example_request(validated)

    def example_request(self, model_request: dict[str, Any]) -> dict[str, Any]:
        """What a client would send to get this model request answered."""
        return model_request

    def status(self) -> dict[str, Any]:
        return {
            "endpoint": self.endpoint,
            **self.models.status(),
            "alias": self.config.alias,
            "challenger_share": self.config.challenger_share,
            "poll_interval_s": self.config.poll_interval_s,
            "batching": self.config.batching.model_dump(),
            "admission": {
                "max_in_flight": self.config.max_in_flight,
                "in_flight": self.in_flight.count,
                "refused": self.in_flight.refused,
                "deadline_ms": self.config.deadline_ms,
            },
        }


def _replica_name() -> str:
    try:
        return serve.get_replica_context().replica_id.unique_id
    except Exception:  # outside a replica (a unit test calling the class directly)
        return "local"


def _failure(status: int, field: str, message: str, retry_after: int | None = None) -> dict[str, Any]:
    error: dict[str, Any] = {"status": status, "field": field, "message": message}
    if retry_after is not None:
        error["retry_after"] = retry_after
    return {"error": error}


@serve.deployment(ray_actor_options={"num_cpus": 0.1})
class Recommender(ModelEndpoint):
    """Recommendations; a user on the forgotten list (`tradewind forget-user`) is answered as an
    unknown user, whatever the loaded model's pickle still holds about them. The list is re-read in
    the background every `poll_interval_s` (a stat() when it has not changed)."""

    family = RECOMMENDER

    def __init__(self, settings: Settings, registered_model: str | None = None) -> None:
        from features.forget import ForgottenUsers

        self.forgotten = ForgottenUsers(settings)  # read before the replica takes traffic
        super().__init__(settings, registered_model)
        self._forgotten_poller = Poller(
            "forgotten-refresh", self.forgotten.refresh, lambda: self.config.poll_interval_s
        )
        self._forgotten_poller.start()

    def __del__(self) -> None:
        super().__del__()
        poller = getattr(self, "_forgotten_poller", None)
        if poller is not None:
            poller.stop()

    def prepare(self, request: dict[str, Any]) -> Prepared:
        return Prepared(self.forgotten.anonymised(request))

    def example_request(self, model_request: dict[str, Any]) -> dict[str, Any]:
        # /models shows it: never the id of a forgotten user the model happens to use as its example
        if model_request.get("user_id") in self.forgotten:
            return {**model_request, "user_id": "forgotten-user"}
        return model_request

    def status(self) -> dict[str, Any]:
        return {**super().status(), "privacy": self.forgotten.status()}


@serve.deployment(ray_actor_options={"num_cpus": 0.1})
class Forecaster(ModelEndpoint):
    family = FORECASTER


@serve.deployment(ray_actor_options={"num_cpus": 0.1})
class Bidder(ModelEndpoint):
    """The bidder plus the campaign's pacing state: state in, bid reserved atomically out."""

    family = BIDDER

    def __init__(self, settings: Settings, registered_model: str | None = None) -> None:
        from serving.pacing import pacing_store
        from serving.reference import ReferenceData, refreshed

        self.reference = refreshed(settings, ReferenceData())
        self.pacing = pacing_store(settings, EndpointSettings().reservation_ttl_s)
        super().__init__(settings, registered_model)
        self._reference_poller = Poller(
            "reference-refresh",
            lambda: setattr(self, "reference", refreshed(self.settings, self.reference)),
            lambda: self.config.reference_refresh_s,
        )
        self._reference_poller.start()

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        super().reconfigure(user_config)
        self.pacing.ttl_s = self.config.reservation_ttl_s

    def example_request(self, model_request: dict[str, Any]) -> dict[str, Any]:
        return {"campaign_id": model_request["campaign_id"], "request": model_request["request"]}

    def _campaign_day(self, campaign_id: str, moment: datetime | None) -> tuple[Any, str, float]:
        from serving.reference import local_day

        campaign = self.reference.campaign(campaign_id)
        day, fraction = local_day(moment or datetime.now(UTC), campaign.timezone)
        return campaign, day, fraction

    def prepare(self, request: dict[str, Any]) -> Prepared:
        moment = datetime.fromisoformat(request["timestamp"]) if request.get("timestamp") else None
        if moment is not None and moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        campaign, day, fraction = self._campaign_day(request["campaign_id"], moment)
        local = (moment or datetime.now(UTC)).astimezone(campaign.timezone)
        context = dict(request["request"])
        # the policy works in the campaign market's local time: fill it in when the exchange did not
        context.setdefault("hour", local.hour)
        context.setdefault("weekday", local.isoweekday())
        state = self.pacing.state(campaign.campaign_id, day, campaign.daily_budget)
        pacing = PacingState(
            budget=state.budget,
            spent=min(state.budget, state.spent + state.reserved),  # open reservations count as spent
            time_fraction=fraction,
            recent_win_rate=state.wins / state.settled if state.settled else 0.0,
            recent_cpc=(state.spent / state.clicks) if state.clicks else 0.0,
            recent_ctr=(state.clicks / state.wins) if state.wins else 0.0,
        )
        model_request = {
            "campaign_id": campaign.campaign_id,
            "state": pacing.model_dump(),
            "request": context,
        }
        return Prepared(model_request, (campaign, day))

    def finish(self, answer: dict[str, Any], prepared: Prepared) -> dict[str, Any]:
        campaign, day = prepared.context
        wanted = float(answer.get("bid", 0.0))
        reservation = self.pacing.reserve(campaign.campaign_id, day, campaign.daily_budget, wanted)
        return {
            **answer,
            "bid": reservation.amount,
            "model_bid": wanted,
            "reservation_id": reservation.reservation_id,
            "day": day,
            "remaining": reservation.state.remaining,
        }

    def _settle(self, outcome: dict[str, Any]) -> dict[str, Any]:
        from serving.pacing import UnknownReservation

        try:
            state = self.pacing.settle(
                outcome["campaign_id"],
                outcome["reservation_id"],
                outcome["won"],
                outcome["cost"],
                outcome["clicked"],
            )
        except UnknownReservation as error:
            return _failure(404, "reservation_id", str(error))
        except ValueError as error:  # a cost above what was reserved: conflicts with the reservation
            return _failure(409, field_of_message(str(error), "cost"), str(error))
        return {"answer": state.as_dict()}

    async def outcome(self, outcome: dict[str, Any]) -> dict[str, Any]:
        return await asyncio.to_thread(self._settle, outcome)

    def _state(self, query: dict[str, Any]) -> dict[str, Any]:
        campaign_id = query["campaign_id"]
        moment = datetime.fromisoformat(query["timestamp"]) if query.get("timestamp") else None
        if moment is not None and moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        try:
            campaign, day, fraction = self._campaign_day(campaign_id, moment)
        except ValueError as error:
            return _failure(404, "campaign_id", str(error))
        state = self.pacing.state(campaign.campaign_id, day, campaign.daily_budget)
        return {"answer": {**state.as_dict(), "time_fraction": fraction, "market": campaign.market_id}}

    async def pacing_state(self, query: dict[str, Any]) -> dict[str, Any]:
        return await asyncio.to_thread(self._state, query)

    def status(self) -> dict[str, Any]:
        return {
            **super().status(),
            "pacing_store": type(self.pacing).__name__,
            "reference_data": {
                "campaigns": len(self.reference.campaigns),
                "loaded_at": self.reference.loaded_at.isoformat() if self.reference.loaded_at else None,
                "error": self.reference.error,
            },
        }
