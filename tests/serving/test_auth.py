"""API keys (serving/auth.py): the ring on its own, then over real Serve HTTP (the serving world)."""

from __future__ import annotations

import asyncio
import logging
import stat
from pathlib import Path
from typing import Any

import httpx
import pytest
from tiny_world import BudgetDay, ServingWorld

from configs import InputError
from serving.auth import (
    ANY_SCOPE,
    ENV_VARIABLE,
    SCOPES,
    ApiKey,
    AuthRefused,
    AuthSettings,
    CallerGuard,
    KeyRing,
    add_key,
    ensure_embedded_key,
    key_hash,
    parse_env_keys,
    route_scope,
)

HEX = "ab" * 32


def bearer(key: str) -> str:
    return f"Bearer {key}"


def refused(ring: KeyRing, header: str | None, scope: str) -> AuthRefused:
    with pytest.raises(AuthRefused) as caught:
        ring.check(header, scope)
    return caught.value


# ---------------------------------------------------------------------------------------------
# keys on disk and in the environment


def test_a_key_file_holds_only_hashes_and_the_ring_accepts_the_key(tmp_path: Path) -> None:
    path = tmp_path / "serving" / "api_keys.yaml"
    key = add_key(path, "shop", ["recommend", "forecast"])
    other = add_key(path, "exchange", ["bid", "bid:outcome"])

    text = path.read_text()
    assert key not in text and other not in text
    assert key_hash(key) in text and key_hash(other) in text
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    ring = KeyRing.load(AuthSettings(keys_file=str(path)), tmp_path / "elsewhere", environ={})
    assert ring.names == ["exchange", "shop"]
    assert ring.check(bearer(key), "forecast") == "shop"
    assert ring.check(bearer(other), "bid:outcome") == "exchange"


def test_the_default_keys_file_is_under_the_data_folder(tmp_path: Path) -> None:
    key = add_key(tmp_path / "serving" / "api_keys.yaml", "ops", ["bid"])
    ring = KeyRing.load(AuthSettings(), tmp_path, environ={})
    assert ring.check(bearer(key), "bid") == "ops"


def test_a_name_given_twice_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "keys.yaml"
    add_key(path, "shop", ["recommend"])
    with pytest.raises(InputError, match="'shop' is given twice"):
        add_key(path, "shop", ["bid"])
    with pytest.raises(InputError, match="'shop' is given twice"):
        KeyRing.load(AuthSettings(keys_file=str(path)), tmp_path, environ={ENV_VARIABLE: f"shop:bid:{HEX}"})


def test_the_embedded_key_is_made_once_with_every_scope(tmp_path: Path) -> None:
    path = tmp_path / "serving" / "api_keys.yaml"
    key = ensure_embedded_key(path)
    assert key is not None and key.startswith("tw_") and len(key) > 40
    stored = path.read_text()
    assert ensure_embedded_key(path) is None
    assert path.read_text() == stored
    ring = KeyRing.load(AuthSettings(), tmp_path, environ={})
    assert [ring.check(bearer(key), scope) for scope in SCOPES] == ["embedded"] * len(SCOPES)


def test_environment_keys_parse_with_colon_scopes_and_star() -> None:
    keys = parse_env_keys(f" ci:recommend+bid:outcome:{HEX} , ops:*:{'cd' * 32},")
    assert keys == [
        ApiKey("ci", frozenset({"recommend", "bid:outcome"}), HEX),
        ApiKey("ops", frozenset(SCOPES), "cd" * 32),
    ]
    assert parse_env_keys("") == [] and parse_env_keys(None) == []


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (f"ci:recommend:{HEX},broken", "entry 2 (name 'broken'): expected name:scope+scope:sha256hex"),
        (f"ci:recommend+bids:{HEX}", "entry 1 (name 'ci'): unknown scope 'bids'"),
        ("ci:recommend:tw_ThisIsAPlainKeyPastedByMistake", "entry 1 (name 'ci'): sha256 must be 64"),
        (f"c i:recommend:{HEX}", "entry 1: name 'c i' is not 1-64 letters"),
    ],
)
def test_a_malformed_environment_entry_is_one_line_naming_variable_and_entry(
    value: str, message: str
) -> None:
    with pytest.raises(InputError) as caught:
        parse_env_keys(value)
    text = str(caught.value)
    assert text.startswith(f"{ENV_VARIABLE}: ") and message in text and "\n" not in text
    assert "tw_ThisIsAPlainKey" not in text  # what sits where a hash belongs is never echoed


def test_a_malformed_keys_file_names_file_and_entry_without_echoing_the_hash_field(tmp_path: Path) -> None:
    path = tmp_path / "keys.yaml"
    path.write_text("keys:\n  - {name: shop, scopes: [recommend], sha256: tw_secretPastedHere}\n")
    with pytest.raises(InputError) as caught:
        KeyRing.load(AuthSettings(keys_file=str(path)), tmp_path, environ={})
    assert str(caught.value).startswith(f"{path}: keys[0] (name 'shop'): sha256 must be 64")
    assert "tw_secretPastedHere" not in str(caught.value)
    path.write_text("keys:\n  - {name: shop, scopes: recommend, sha256: x}\n")
    with pytest.raises(InputError, match=r"keys\[0\] \(name 'shop'\): scopes must be a non-empty list"):
        KeyRing.load(AuthSettings(keys_file=str(path)), tmp_path, environ={})


# ---------------------------------------------------------------------------------------------
# checking a request


def test_no_key_or_an_unknown_key_is_401_with_a_bearer_challenge() -> None:
    key = "tw_known"
    ring = KeyRing.of([ApiKey("shop", frozenset({"recommend"}), key_hash(key))])
    for header in (None, "", key, "Basic dXNlcjpwYXNz", "Bearer ", bearer("tw_other")):
        refusal = refused(ring, header, "recommend")
        assert (refusal.status, refusal.headers) == (401, {"WWW-Authenticate": "Bearer"}), header
    assert ring.check(f"bearer  {key} ", "recommend") == "shop"  # the scheme is case-insensitive


def test_a_key_outside_its_scopes_is_403_naming_the_key_not_showing_it() -> None:
    key = "tw_recommend_only"
    ring = KeyRing.of([ApiKey("shop", frozenset({"recommend"}), key_hash(key))])
    for scope in ("forecast", "bid", "bid:outcome"):
        refusal = refused(ring, bearer(key), scope)
        assert refusal.status == 403 and "'shop'" in refusal.detail and scope in refusal.detail
        assert key not in refusal.detail
    assert ring.check(bearer(key), ANY_SCOPE) == "shop"


def test_past_its_rate_a_key_gets_429_with_retry_after_in_whole_seconds() -> None:
    now = [100.0]
    keys = [
        ApiKey("shop", frozenset(SCOPES), key_hash("tw_a")),
        ApiKey("other", frozenset(SCOPES), key_hash("tw_b")),
    ]
    ring = KeyRing.of(keys, AuthSettings(rate_per_s=0.4, burst=2), clock=lambda: now[0])

    assert [ring.check(bearer("tw_a"), "bid") for _ in range(2)] == ["shop", "shop"]
    refusal = refused(ring, bearer("tw_a"), "bid")
    assert refusal.status == 429 and refusal.headers == {"Retry-After": "3"}  # 1 token at 0.4/s: 2.5 s
    assert ring.check(bearer("tw_b"), "bid") == "other"  # a bucket per key
    now[0] += 2.0
    assert refused(ring, bearer("tw_a"), "bid").headers == {"Retry-After": "1"}  # 0.5 s left, rounded up
    now[0] += 0.5
    assert ring.check(bearer("tw_a"), "bid") == "shop"
    # a refused request spends no token: one more refusal, then the next token is 2.5 s away
    assert refused(ring, bearer("tw_a"), "bid").headers == {"Retry-After": "3"}


def test_keys_are_never_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    path = tmp_path / "keys.yaml"
    embedded = ensure_embedded_key(path)
    scoped = add_key(path, "shop", ["recommend"])
    ring = KeyRing.load(AuthSettings(keys_file=str(path), rate_per_s=1, burst=1), tmp_path, environ={})
    ring.check(bearer(scoped), "recommend")
    for scope in ("recommend", "bid"):  # past the rate, then outside the scope
        refused(ring, bearer(scoped), scope)
    status, _ = asyncio.run(
        guarded(ring, "POST", "/bid", {b"authorization": bearer(scoped).encode()}, [b"{}"])
    )
    assert status == 403
    text = "\n".join(record.getMessage() for record in caplog.records)
    assert "'shop'" in text and "embedded" in text  # names are logged
    assert embedded is not None and embedded not in text and scoped not in text
    assert key_hash(scoped) not in text


# ---------------------------------------------------------------------------------------------
# the ASGI guard without Serve (chunked bodies: no Content-Length to refuse early)


async def guarded(
    ring: KeyRing, method: str, path: str, headers: dict[bytes, bytes], chunks: list[bytes]
) -> tuple[int, bytes]:
    seen: dict[str, Any] = {}

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        message = await receive()
        seen["body"] = message["body"]
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": message["body"]})

    messages = [
        {"type": "http.request", "body": chunk, "more_body": i < len(chunks) - 1}
        for i, chunk in enumerate(chunks)
    ]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return messages.pop(0)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": method, "path": path, "headers": list(headers.items())}
    await CallerGuard(app, lambda: ring)(scope, receive, send)
    return sent[0]["status"], b"".join(message.get("body", b"") for message in sent[1:])


def test_the_guard_refuses_a_chunked_body_over_the_limit_and_passes_one_within() -> None:
    key = "tw_k"
    ring = KeyRing.of([ApiKey("shop", frozenset(SCOPES), key_hash(key))], AuthSettings(max_body_bytes=10))
    auth = {b"authorization": bearer(key).encode()}
    status, body = asyncio.run(guarded(ring, "POST", "/recommend", auth, [b"123456", b"78901"]))
    assert status == 413 and b"over the limit of 10 bytes" in body
    assert asyncio.run(guarded(ring, "POST", "/recommend", auth, [b"12345", b"67890"])) == (
        200,
        b"1234567890",
    )
    status, body = asyncio.run(guarded(ring, "POST", "/recommend", {}, [b"{}"]))
    assert status == 401 and body == b'{"detail": "missing API key: send `Authorization: Bearer <key>`"}'


def test_each_route_needs_its_scope() -> None:
    assert route_scope("POST", "/recommend") == "recommend"
    assert route_scope("POST", "/forecast") == "forecast"
    assert route_scope("POST", "/bid") == "bid"
    assert route_scope("POST", "/bid/outcome") == "bid:outcome"
    assert route_scope("GET", "/campaigns/c-1/pacing") == "bid"
    assert route_scope("GET", "/models") == ANY_SCOPE
    assert route_scope("GET", "/nowhere") == ANY_SCOPE
    assert [route_scope("GET", path) for path in ("/healthz", "/docs", "/openapi.json")] == [None] * 3
    assert route_scope("POST", "/healthz") == ANY_SCOPE  # only the GET is open


# ---------------------------------------------------------------------------------------------
# over real Serve HTTP: the serving world's app accepts its all-scope key and a `recommend` key


def as_key(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_no_key_or_a_wrong_key_is_401_and_healthz_and_docs_stay_open(serving_world: ServingWorld) -> None:
    world = serving_world
    body = {"user_id": world.users[0], "market": world.markets[0], "k": 3}
    with httpx.Client(base_url=world.url, timeout=30.0) as anonymous:
        for headers in ({}, as_key("tw_not-a-key-of-this-app"), {"Authorization": world.api_key}):
            response = anonymous.post("/recommend", json=body, headers=headers)
            assert response.status_code == 401, response.text
            assert response.headers["www-authenticate"] == "Bearer"
            assert set(response.json()) == {"detail"}
        assert anonymous.get("/models").status_code == 401
        assert anonymous.get("/nowhere").status_code == 401  # which routes exist is not told either
        assert anonymous.get("/healthz").json() == {"status": "ok"}
        assert anonymous.get("/openapi.json").status_code == 200
        assert anonymous.get("/docs").status_code == 200


def test_a_key_answers_in_its_scope_and_gets_403_outside_it(serving_world: ServingWorld) -> None:
    world = serving_world
    limited = as_key(world.recommend_key)
    body = {"user_id": world.users[0], "market": world.markets[0], "k": 3}
    answered = world.client.post("/recommend", json=body, headers=limited)
    assert answered.status_code == 200, answered.text
    assert len(answered.json()["items"]) == 3
    assert world.client.get("/models", headers=limited).status_code == 200  # any key
    forecast = {"product_ids": world.products[:1], "market": world.markets[0], "horizon": 1}
    for method, path, payload in (
        ("POST", "/forecast", forecast),
        ("POST", "/bid", {}),
        ("POST", "/bid/outcome", {}),
        ("GET", f"/campaigns/{next(iter(world.campaigns))}/pacing", None),
    ):
        refusal = world.client.request(method, path, json=payload, headers=limited)
        assert refusal.status_code == 403, (path, refusal.text)
        assert refusal.json() == {"detail": f"key 'recommend-only' lacks the scope '{path_scope(path)}'"}
        assert world.recommend_key not in refusal.text


def path_scope(path: str) -> str:
    return route_scope("GET" if path.endswith("/pacing") else "POST", path) or ""


def test_a_body_over_the_limit_is_413_whether_or_not_its_length_is_sent(serving_world: ServingWorld) -> None:
    world = serving_world
    limit = AuthSettings().max_body_bytes  # configs/serving.yaml keeps the default
    big = b'{"user_id": "' + b"u" * limit + b'", "market": "US", "k": 3}'
    sized = world.client.post("/recommend", content=big, headers={"content-type": "application/json"})
    assert sized.status_code == 413, sized.text
    assert sized.json() == {"detail": f"request body of {len(big)} bytes is over the limit of {limit} bytes"}
    chunked = world.client.post(
        "/recommend", content=iter([big[:limit], big[limit:]]), headers={"content-type": "application/json"}
    )
    assert chunked.status_code == 413, chunked.text
    assert chunked.json() == {"detail": f"request body is over the limit of {limit} bytes"}


def test_a_refused_bid_reserves_nothing(serving_world: ServingWorld, budget_day: BudgetDay) -> None:
    world = serving_world
    bid = budget_day.bid({"hour": 12})
    with httpx.Client(base_url=world.url, timeout=30.0) as anonymous:
        assert anonymous.post("/bid", json=bid).status_code == 401
    assert world.client.post("/bid", json=bid, headers=as_key(world.recommend_key)).status_code == 403
    padded = {**bid, "request": {"hour": 12, "note": "x" * AuthSettings().max_body_bytes}}
    assert world.client.post("/bid", json=padded).status_code == 413
    state = budget_day.pacing(world.client)
    assert (state["spent"], state["reserved"], state["bids"]) == (0.0, 0.0, 0), state

    accepted = world.client.post("/bid", json=bid)  # the same bid with the world's key is answered
    assert accepted.status_code == 200, accepted.text
    assert budget_day.pacing(world.client)["bids"] == 1


# ---------------------------------------------------------------------------------------------
# `tradewind serve`: the embedded key on the first start, printed once; --add-key


@pytest.fixture
def data_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A data folder of the test's own, embedded mode, no keys in the environment; `serve run`
    replaced by a stand-in that records its call (serving itself is tested above and end to end)."""
    monkeypatch.setenv("TRADEWIND_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("TRADEWIND_MODE", raising=False)
    monkeypatch.delenv(ENV_VARIABLE, raising=False)
    monkeypatch.setattr("serving.deploy.serve_run", lambda settings, config: 0)
    return tmp_path / "data"


def test_the_first_serve_prints_the_embedded_key_once_and_stores_its_hash(data_folder: Path) -> None:
    from typer.testing import CliRunner

    from cli.app import app

    runner = CliRunner()
    first = runner.invoke(app, ["serve"])
    assert first.exit_code == 0, first.output
    (line,) = [line for line in first.output.splitlines() if line.startswith("API key: ")]
    key = line.removeprefix("API key: ")
    path = data_folder / "serving" / "api_keys.yaml"
    assert str(path) in first.output.replace("\n", "")
    assert key not in path.read_text() and key_hash(key) in path.read_text()
    ring = KeyRing.load(AuthSettings(), data_folder, environ={})
    assert [ring.check(bearer(key), scope) for scope in SCOPES] == ["embedded"] * 4

    again = runner.invoke(app, ["serve"])
    assert again.exit_code == 0 and "API key" not in again.output and key not in again.output


def test_no_embedded_key_when_keys_come_from_the_environment(
    data_folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from cli.app import app

    monkeypatch.setenv(ENV_VARIABLE, f"ops:*:{HEX}")
    result = CliRunner().invoke(app, ["serve"])
    assert result.exit_code == 0 and "API key" not in result.output
    assert not (data_folder / "serving" / "api_keys.yaml").exists()


def test_serve_add_key_prints_a_scoped_key_once_and_refuses_a_bad_scope_in_one_line(
    data_folder: Path,
) -> None:
    from typer.testing import CliRunner

    from cli.app import app

    runner = CliRunner()
    added = runner.invoke(app, ["serve", "--add-key", "shop", "--scopes", "recommend,bid"])
    assert added.exit_code == 0, added.output
    key = added.output.strip().splitlines()[-1]
    ring = KeyRing.load(AuthSettings(), data_folder, environ={})
    assert ring.check(bearer(key), "bid") == "shop"
    assert refused(ring, bearer(key), "forecast").status == 403

    wrong = runner.invoke(app, ["serve", "--add-key", "ops", "--scopes", "recommend,bids"])
    assert wrong.exit_code == 2
    assert "unknown scope 'bids'" in wrong.output and len(wrong.output.strip().splitlines()) == 1
