"""The served OpenAPI is truthful: schemathesis, every check, against the real Serve app over loopback.

What the schema calls valid is answered (2xx, or 404 for an id the data does not hold), what it
calls invalid is refused, every status and header a route gives is documented, every body matches
its response model. The run is derandomized (a fixed seed) with a bounded number of examples per
operation, so it is repeatable and stays under a minute on a 2-core machine.
"""

from __future__ import annotations

from typing import Any

import pytest
from tiny_world import ServingWorld

# what `st run --config-file` would read from a schemathesis.toml
CONFIG: dict[str, Any] = {
    "seed": 14,
    "cache": {"enabled": False},  # no .schemathesis/ crash store left in the checkout
    "generation": {"max-examples": 25, "deterministic": True, "database": "none"},
    # 503 is the documented refusal of overload and of a passed caller deadline (X-Deadline-Ms, which
    # the fuzzer sets too), with Retry-After: an answer by design, not a server error. 500 still fails.
    # 413 (a body over the size limit) refuses a request as surely as a 422: not in the default list
    "checks": {
        "not_a_server_error": {"expected-statuses": ["2xx", "3xx", "4xx", "503"]},
        "negative_data_rejection": {
            "expected-statuses": [
                "400",
                "401",
                "403",
                "404",
                "405",
                "406",
                "409",
                "413",
                "415",
                "422",
                "428",
                "429",
                "5xx",
            ]
        },
    },
}


# `ensure_resource_availability` takes any 404 from a consumer of a just-created resource as the
# resource lost. A reservation (made by POST /bid) is settled once: its first /bid/outcome is
# answered, every later one is 404 by design (documented: "unknown, expired or settled"), and the
# stateful phase sends several outcomes per reservation (seen: 200, then 404 for the same id).
SETTLED_ONCE = ["ensure_resource_availability"]


def _known_ids(world: ServingWorld) -> dict[str, Any]:
    """The world's own ids, drawn half the time in place of random strings: without them every
    well-formed request would stop at its 404 and the model's own limits would go unchecked."""
    pools = {
        "markets": world.markets,
        "products": world.products,
        "users": world.users,
        "campaigns": list(world.campaigns),
    }
    bound = {
        "body.market": "markets",
        "body.product_ids[*]": "products",
        "body.exclude[*]": "products",
        "body.user_id": "users",
        "body.campaign_id": "campaigns",
        "path.campaign_id": "campaigns",
    }
    return {
        "dictionaries": {name: {"values": sorted(values)} for name, values in pools.items()},
        "parameters": {key: {"dictionary": name, "probability": 0.5} for key, name in bound.items()},
    }


def _run(url: str, api_key: str | None, known: dict[str, Any]) -> tuple[int, list[str]]:
    """(scenarios run, one line per failed check) of a schemathesis run with `--checks all`
    (`st run --config-file <CONFIG as TOML> URL/openapi.json --checks all`)."""
    import schemathesis
    from schemathesis.config import SchemathesisConfig
    from schemathesis.engine import events, from_schema

    config = SchemathesisConfig.from_dict({**CONFIG, **known})
    project = config.projects.override
    # every check but one; `ignored_auth` (a request without the key must get 401) once the app checks keys
    excluded = [*SETTLED_ONCE, *([] if api_key else ["ignored_auth"])]
    project.checks.update(included_check_names=["all"], excluded_check_names=excluded)
    if api_key:
        project.update(headers={"Authorization": f"Bearer {api_key}"})
    schema = schemathesis.openapi.from_url(f"{url}/openapi.json", config=config)
    scenarios, failures = 0, []
    for event in from_schema(schema).execute():
        if isinstance(event, events.ScenarioFinished | events.FuzzScenarioFinished):
            scenarios += 1
            failures.extend(_failed_checks(event.recorder))
        elif isinstance(event, events.NonFatalError | events.FatalError):
            failures.append(f"error: {getattr(event, 'label', '')} {getattr(event, 'value', event)}")
    return scenarios, sorted(set(failures))


def _failed_checks(recorder: Any) -> list[str]:
    lines = []
    for case_id, checks in recorder.checks.items():
        for check in checks:
            if check.failure_info is None:
                continue
            failure = check.failure_info.failure
            case = recorder.cases[case_id].value
            interaction = recorder.interactions.get(case_id)
            response = interaction.response if interaction is not None else None
            answer = f"{response.status_code} {response.content[:200]!r}" if response is not None else "-"
            # the one header worth showing (never the Authorization one: a key is never printed)
            deadline = (case.headers or {}).get("X-Deadline-Ms")
            lines.append(
                f"{recorder.label}: {check.name}: {failure.title} "
                f"({' '.join(str(failure.message).split())[:300]}) "
                f"sent {case.method} {case.formatted_path} query={case.query} X-Deadline-Ms={deadline!r} "
                f"{str(case.body)[:200]} -> {answer}"
            )
    return lines


def test_schemathesis_finds_no_failure_with_every_check(serving_world: ServingWorld) -> None:
    world = serving_world
    scenarios, failures = _run(world.url, getattr(world, "api_key", None) or None, _known_ids(world))
    assert scenarios > 0
    assert failures == [], "\n".join(failures)


# ---------------------------------------------------------------------------------------------
# the document itself, without a server


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    from serving.ingress import api

    return api.openapi()


def _schema(document: dict[str, Any], name: str) -> dict[str, Any]:
    return document["components"]["schemas"][name]


def test_every_route_declares_its_answer_and_its_refusals(document: dict[str, Any]) -> None:
    model_routes = {("post", "/recommend"), ("post", "/forecast"), ("post", "/bid")}
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            responses = operation["responses"]
            assert "$ref" in str(responses["200"]["content"]["application/json"]["schema"]), (path, method)
            if path == "/healthz":
                assert set(responses) == {"200"} and "security" not in operation
                continue
            assert {"401", "413", "429"} <= set(responses), (path, method, sorted(responses))
            assert operation["security"][0].keys() == {"bearer"}
            assert "WWW-Authenticate" in responses["401"]["headers"]
            assert "Retry-After" in responses["429"]["headers"]
            if (method, path) in model_routes:
                assert {"403", "404", "422", "503"} <= set(responses), (path, sorted(responses))
                assert "Retry-After" in responses["503"]["headers"]
                assert [p["name"] for p in operation["parameters"]] == ["X-Deadline-Ms"]
    assert document["components"]["securitySchemes"]["bearer"] == {
        **document["components"]["securitySchemes"]["bearer"],
        "type": "http",
        "scheme": "bearer",
    }
    scopes = {
        path: ops["post"]["security"][0]["bearer"] for path, ops in document["paths"].items() if "post" in ops
    }
    assert scopes == {
        "/recommend": ["recommend"],
        "/forecast": ["forecast"],
        "/bid": ["bid"],
        "/bid/outcome": ["bid:outcome"],
    }


def test_request_constraints_are_the_ones_serving_enforces(document: dict[str, Any]) -> None:
    from pydantic import ValidationError

    from serving.schemas import ForecastRequest

    quantiles = _schema(document, "ForecastRequest")["properties"]["quantiles"]
    assert quantiles["items"] == {"type": "number", "exclusiveMinimum": 0.0, "exclusiveMaximum": 1.0}
    assert quantiles["uniqueItems"] is True
    for refused in ([0.0], [1.0], [0.5, 0.5], [-0.1]):
        with pytest.raises(ValidationError):
            ForecastRequest(product_ids=["p"], market="US", quantiles=refused)
    assert ForecastRequest(product_ids=["p"], market="US", quantiles=[0.9, 1e-9]).quantiles == [1e-9, 0.9]
    k = _schema(document, "RecommendRequest")["properties"]["k"]
    assert (k["minimum"], k["maximum"]) == (1, 100)


def test_a_forecast_point_is_documented_as_sent(document: dict[str, Any]) -> None:
    point = _schema(document, "ForecastPoint")
    assert set(point["properties"]) == {"product_id", "date", "mean"}  # quantiles are p10, p50... keys
    assert "^p[0-9]+$" in point["patternProperties"]


@pytest.mark.parametrize(
    ("message", "status"),
    [
        ("market: unknown market 'ZZ' (known: DE, US)", 404),
        ("product_ids: unknown product 'p9' in market 'US'", 404),
        ("campaign_id: unknown campaign 'c9' (3 campaigns known)", 404),
        ("horizon: 30 is above the trained maximum 14", 422),
        ("unknown market", 422),  # names no field: not the contract's lookup message
    ],
)
def test_an_unknown_id_is_not_found_and_anything_else_unprocessable(message: str, status: int) -> None:
    from serving.schemas import refusal_status

    assert refusal_status(message) == status


def test_the_served_document_narrows_requests_to_what_the_served_model_answers(
    serving_world: ServingWorld,
) -> None:
    """The tiny forecaster answers horizons up to 14 days: the served /openapi.json says so, where the
    static document allows what any forecaster could (366)."""
    from serving.schemas import MAX_HORIZON

    served = serving_world.client.get("/openapi.json").json()
    horizon = served["components"]["schemas"]["ForecastRequest"]["properties"]["horizon"]
    assert horizon["maximum"] == 14 < MAX_HORIZON


def test_request_limits_narrow_a_copy_and_two_models_keep_what_both_answer() -> None:
    from serving.responses import tightest, with_request_limits

    document = {
        "components": {
            "schemas": {
                "ForecastRequest": {
                    "properties": {
                        "horizon": {"type": "integer", "maximum": 366},
                        "quantiles": {"type": "array", "items": {"type": "number"}},
                    }
                }
            }
        }
    }
    both = tightest(
        {"horizon": {"maximum": 28}, "quantiles": {"items": {"enum": [0.1, 0.5, 0.9]}}},
        {"horizon": {"maximum": 14}, "quantiles": {"items": {"enum": [0.5, 0.9, 0.95]}}},
    )
    narrowed = with_request_limits(document, {"ForecastRequest": both})
    properties = narrowed["components"]["schemas"]["ForecastRequest"]["properties"]
    assert properties["horizon"]["maximum"] == 14
    assert properties["quantiles"]["items"]["enum"] == [0.5, 0.9]
    # the cached document itself is left as it was
    assert document["components"]["schemas"]["ForecastRequest"]["properties"]["horizon"]["maximum"] == 366
