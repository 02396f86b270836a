"""Who may call the serving endpoints: API keys, stored hashed, each with a name and scopes.

    Authorization: Bearer <key>  ->  sha256(key)  ->  (name, scopes)  ->  scope of the route?  ->  rate?

Keys come from a keys file (YAML, `<data>/serving/api_keys.yaml` by default, hashed entries only)
and from the environment variable TRADEWIND_API_KEYS (`name:scope+scope:sha256hex,...`, hashed
too). The key itself is shown once, when it is made (`add_key`, `ensure_embedded_key`), and is never
stored, logged or put in a message: only its name is.

`KeyRing.check` answers a request's Authorization header for a scope: the key's name, or
`AuthRefused` (401 no or unknown key, 403 outside the key's scopes, 429 past the key's rate).
`CallerGuard` is the ASGI middleware that applies it (and the body size limit, 413) to every route
of the ingress but the open ones (/healthz and the API docs), before FastAPI reads the body.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import secrets
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field

from configs import InputError, StrictModel
from configs.families import BIDDER, FORECASTER, RECOMMENDER

logger = logging.getLogger("tradewind.serving.auth")

SCOPES = ("recommend", "forecast", "bid", "bid:outcome")
ENV_VARIABLE = "TRADEWIND_API_KEYS"
EMBEDDED = "embedded"  # the key `tradewind serve` makes on its first start
KEY_PREFIX = "tw_"
KEYS_FILE = Path("serving") / "api_keys.yaml"  # under the data folder
_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_SHA256 = re.compile(r"[0-9a-f]{64}")
# any valid key, whatever its scopes (GET /models); None in ROUTE_SCOPES means "open to anyone"
ANY_SCOPE = "*"
OPEN = None


class AuthSettings(StrictModel):
    """`args.auth` of the tradewind application in configs/serving.yaml."""

    # null: <data folder>/serving/api_keys.yaml; a relative path counts from the data folder
    keys_file: str | None = None
    # token bucket per key and ingress replica: `burst` requests at once, then `rate_per_s`
    rate_per_s: float = Field(1000.0, gt=0.0)
    burst: int = Field(2000, ge=1)
    max_body_bytes: int = Field(65536, ge=1)


@dataclass(frozen=True)
class ApiKey:
    """A key as stored: its name, scopes and the sha256 of the key (never the key)."""

    name: str
    scopes: frozenset[str]
    sha256: str


class AuthRefused(Exception):
    """A request refused before any model work: HTTP `status`, a `detail` naming at most the key's
    name, and the headers the status calls for (WWW-Authenticate, Retry-After)."""

    def __init__(self, status: int, detail: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.headers = dict(headers or {})


def new_key() -> str:
    """A fresh key: 256 random bits, URL-safe."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def key_hash(key: str) -> str:
    # No salt and no slow hash: a salt (and key stretching) protects secrets people choose, which
    # can be guessed from a list; these keys are 256 random bits, which no table or brute force
    # covers. Unsalted, the hash is also the lookup key of a request: one dict access per call.
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def keys_path(auth: AuthSettings, root: Path) -> Path:
    """The keys file of `auth` for the data folder `root`."""
    if auth.keys_file is None:
        return root / KEYS_FILE
    path = Path(auth.keys_file).expanduser()
    return path if path.is_absolute() else root / path


# ---------------------------------------------------------------------------------------------
# where keys come from: the keys file and the environment


def _checked(name: Any, scopes: Any, sha256: Any, where: str) -> ApiKey:
    """One entry, or InputError naming `where` and the field (the hash field's value is never
    echoed: a key pasted there by mistake must not end up in a terminal or a log)."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise InputError(f"{where}: name {name!r} is not 1-64 letters, digits, '_', '.' or '-'")
    if isinstance(scopes, str) or not isinstance(scopes, list | tuple) or not scopes:
        raise InputError(f"{where} (name {name!r}): scopes must be a non-empty list of {', '.join(SCOPES)}")
    for scope in scopes:
        if scope not in SCOPES:
            raise InputError(
                f"{where} (name {name!r}): unknown scope {scope!r}, expected one of {', '.join(SCOPES)}"
            )
    if not isinstance(sha256, str) or not _SHA256.fullmatch(sha256):
        raise InputError(
            f"{where} (name {name!r}): sha256 must be 64 lowercase hex digits, the hash of the key "
            "(never the key itself)"
        )
    return ApiKey(name, frozenset(scopes), sha256)


def read_keys_file(path: Path) -> list[ApiKey]:
    """The keys of a keys file (none when it does not exist)."""
    if not path.exists():
        return []
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError:
        raise InputError(
            f"{path}: not valid YAML (expected `keys:` with name, scopes, sha256 per key)"
        ) from None
    if data is None:
        return []
    if not isinstance(data, dict) or set(data) != {"keys"} or not isinstance(data["keys"], list | None):
        raise InputError(f"{path}: expected one top-level key `keys:` holding a list of entries")
    keys = []
    for index, entry in enumerate(data["keys"] or []):
        where = f"{path}: keys[{index}]"
        if not isinstance(entry, dict) or set(entry) != {"name", "scopes", "sha256"}:
            found = sorted(entry) if isinstance(entry, dict) else type(entry).__name__
            raise InputError(f"{where}: expected exactly the fields name, scopes, sha256 (got {found})")
        keys.append(_checked(entry["name"], entry["scopes"], entry["sha256"], where))
    return keys


def parse_env_keys(value: str | None) -> list[ApiKey]:
    """TRADEWIND_API_KEYS: `name:scope+scope:sha256hex` entries separated by commas (`*` for every
    scope). A scope may hold a colon (`bid:outcome`): the name ends at the first colon, the hash
    starts after the last."""
    keys = []
    for position, entry in enumerate((value or "").split(","), start=1):
        entry = entry.strip()
        if not entry:
            continue
        where = f"{ENV_VARIABLE}: entry {position}"
        name, _, rest = entry.partition(":")
        scopes, _, sha256 = rest.rpartition(":")
        if not scopes:
            raise InputError(
                f"{where} (name {name!r}): expected name:scope+scope:sha256hex (e.g. ci:recommend+bid:<hex>)"
            )
        listed = list(SCOPES) if scopes == "*" else scopes.split("+")
        keys.append(_checked(name, listed, sha256, where))
    return keys


def _unique(keys: Iterable[ApiKey]) -> dict[str, ApiKey]:
    by_hash: dict[str, ApiKey] = {}
    names: set[str] = set()
    for key in keys:
        if key.name in names:
            raise InputError(f"API keys: the name {key.name!r} is given twice (keys file, {ENV_VARIABLE})")
        if key.sha256 in by_hash:
            raise InputError(f"API keys: {key.name!r} and {by_hash[key.sha256].name!r} are the same key")
        names.add(key.name)
        by_hash[key.sha256] = key
    return by_hash


def _write_keys(path: Path, keys: list[ApiKey]) -> None:
    """The keys file, replaced atomically and readable by its owner only (hashes, but still the
    list of who may call)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    entries = [{"name": key.name, "scopes": sorted(key.scopes), "sha256": key.sha256} for key in keys]
    text = (
        "# Tradewind API keys: sha256 of each key, never the key (shown once, when made).\n"
        "# tradewind serve keys add NAME --scopes recommend,bid   adds one.\n"
    ) + yaml.safe_dump({"keys": entries}, sort_keys=False)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".api_keys.")
    try:
        with os.fdopen(handle, "w") as out:
            out.write(text)
        os.chmod(temporary, 0o600)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def add_key(path: Path, name: str, scopes: Iterable[str]) -> str:
    """A new key named `name` with `scopes`, its hash added to the keys file `path` (made when
    missing); returns the key, which is stored nowhere."""
    keys = read_keys_file(path)
    key = new_key()
    entry = _checked(name, list(scopes), key_hash(key), f"{path}: new key")
    _unique([*keys, entry])
    _write_keys(path, [*keys, entry])
    logger.info("API key %r added to %s (scopes %s)", name, path, ", ".join(sorted(entry.scopes)))
    return key


def ensure_embedded_key(path: Path) -> str | None:
    """First start: an all-scope key named `embedded`, its hash stored in a new keys file `path`;
    returns the key, once. None when the keys file exists already."""
    if path.exists():
        return None
    return add_key(path, EMBEDDED, SCOPES)


def caller_key(name: str, scopes: Iterable[str] = SCOPES) -> tuple[str, ApiKey]:
    """A fresh key for a process that starts serving for itself (tests, demo, benchmarks): (the
    key, its stored form). The stored form is handed to the application; the key is never written."""
    key = new_key()
    return key, _checked(name, list(scopes), key_hash(key), f"key {name!r}")


# ---------------------------------------------------------------------------------------------
# the ring: checking a request


@dataclass
class _Bucket:
    tokens: float
    updated: float


@dataclass
class KeyRing:
    """The keys an ingress replica accepts, and each key's token bucket (per replica: with n
    ingress replicas a key may reach n times its rate)."""

    keys: Mapping[str, ApiKey]  # by sha256
    settings: AuthSettings = field(default_factory=AuthSettings)
    clock: Callable[[], float] = time.monotonic
    _buckets: dict[str, _Bucket] = field(default_factory=dict, repr=False)

    @classmethod
    def of(cls, keys: Iterable[ApiKey], settings: AuthSettings | None = None, **options: Any) -> KeyRing:
        return cls(_unique(keys), settings or AuthSettings(), **options)

    @classmethod
    def load(
        cls,
        settings: AuthSettings,
        root: Path,
        extra: Iterable[ApiKey] = (),
        environ: Mapping[str, str] | None = None,
    ) -> KeyRing:
        """The keys of the keys file, of TRADEWIND_API_KEYS and `extra`; InputError (one line) for a
        malformed entry or a name given twice."""
        environ = os.environ if environ is None else environ
        path = keys_path(settings, root)
        ring = cls.of([*read_keys_file(path), *parse_env_keys(environ.get(ENV_VARIABLE)), *extra], settings)
        if ring.keys:
            logger.info("API keys accepted: %s", ", ".join(sorted(key.name for key in ring.keys.values())))
        else:
            logger.warning(
                "no API keys (%s, %s): every request but /healthz is refused with 401; "
                "`tradewind serve` makes one on its first start",
                path,
                ENV_VARIABLE,
            )
        return ring

    @property
    def names(self) -> list[str]:
        return sorted(key.name for key in self.keys.values())

    def check(self, authorization_header: str | None, scope: str) -> str:
        """The name of the key in `authorization_header` (`Bearer <key>`) when it holds `scope`
        (ANY_SCOPE: any key) and is within its rate; AuthRefused otherwise."""
        challenge = {"WWW-Authenticate": "Bearer"}
        scheme, _, presented = (authorization_header or "").strip().partition(" ")
        if scheme.lower() != "bearer" or not presented.strip():
            raise AuthRefused(401, "missing API key: send `Authorization: Bearer <key>`", challenge)
        # looked up by hash: the comparison that decides never touches the key itself, so its
        # timing tells nothing about a stored key
        key = self.keys.get(key_hash(presented.strip()))
        if key is None:
            raise AuthRefused(401, "unknown API key", challenge)
        if scope != ANY_SCOPE and scope not in key.scopes:
            raise AuthRefused(403, f"key {key.name!r} lacks the scope {scope!r}")
        wait_s = self._take(key.name)
        if wait_s > 0:
            raise AuthRefused(
                429,
                f"key {key.name!r} is past its rate ({self.settings.rate_per_s:g} requests/s)",
                {"Retry-After": str(max(1, math.ceil(wait_s)))},
            )
        return key.name

    def _take(self, name: str) -> float:
        """One token from the key's bucket: 0 when there was one, else the seconds until there is."""
        now = self.clock()
        bucket = self._buckets.get(name)
        if bucket is None:
            bucket = self._buckets[name] = _Bucket(float(self.settings.burst), now)
        rate = self.settings.rate_per_s
        bucket.tokens = min(float(self.settings.burst), bucket.tokens + (now - bucket.updated) * rate)
        bucket.updated = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return 0.0
        return (1.0 - bucket.tokens) / rate


# ---------------------------------------------------------------------------------------------
# the HTTP side: which scope each route needs, and the ASGI middleware

# (method, path) -> scope; paths not listed need a valid key of any scope (GET /models, and a 404
# is not handed to a caller without a key either)
ROUTE_SCOPES: dict[tuple[str, str], str | None] = {
    ("POST", f"/{RECOMMENDER.endpoint}"): "recommend",
    ("POST", f"/{FORECASTER.endpoint}"): "forecast",
    ("POST", f"/{BIDDER.endpoint}"): "bid",
    ("POST", f"/{BIDDER.endpoint}/outcome"): "bid:outcome",
    ("GET", "/healthz"): OPEN,
    ("GET", "/docs"): OPEN,
    ("GET", "/docs/oauth2-redirect"): OPEN,
    ("GET", "/redoc"): OPEN,
    ("GET", "/openapi.json"): OPEN,
}
_PACING = re.compile(r"/campaigns/[^/]+/pacing")


def route_scope(method: str, path: str) -> str | None:
    """The scope a request needs; None for the open routes."""
    method = "GET" if method == "HEAD" else method
    if (method, path) in ROUTE_SCOPES:
        return ROUTE_SCOPES[(method, path)]
    if method == "GET" and _PACING.fullmatch(path):
        return "bid"
    return ANY_SCOPE


Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


class CallerGuard:
    """ASGI middleware: every request but the open routes shows a key with the route's scope, within
    its rate, and a body of at most `max_body_bytes` (Content-Length first, then the body read),
    before the app (and FastAPI's body parsing) sees it. Refusals are JSON `{"detail": ...}`.

    `ring` is asked for the replica's KeyRing at each request (the ingress instance holds it)."""

    def __init__(
        self, app: Callable[[Scope, Receive, Send], Awaitable[None]], ring: Callable[[], KeyRing]
    ) -> None:
        self.app = app
        self.ring = ring

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path, root = scope["path"], scope.get("root_path", "")
        if root and path.startswith(root):  # Serve's route prefix
            path = path[len(root) :] or "/"
        needed = route_scope(scope["method"], path)
        if needed is OPEN:
            await self.app(scope, receive, send)
            return
        ring = self.ring()
        headers = dict(scope.get("headers") or [])
        limit = ring.settings.max_body_bytes
        try:
            _check_length(headers.get(b"content-length"), limit)
            name = ring.check(headers.get(b"authorization", b"").decode("latin-1"), needed)
            body, closed = await _read_body(receive, limit)
        except AuthRefused as refusal:
            logger.debug("refused %s %s: %s", scope["method"], path, refusal.detail)
            await _refuse(send, refusal)
            return
        scope.setdefault("state", {})["api_key_name"] = name
        await self.app(scope, _replay(body, closed, receive), send)


def _check_length(value: bytes | None, limit: int) -> None:
    if value is not None and value.strip().isdigit() and int(value) > limit:
        raise AuthRefused(413, f"request body of {int(value)} bytes is over the limit of {limit} bytes")


async def _read_body(receive: Receive, limit: int) -> tuple[bytes, bool]:
    """The whole body (at most `limit` bytes, else 413), and whether the client went away."""
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return b"".join(chunks), True
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise AuthRefused(413, f"request body is over the limit of {limit} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks), False


def _replay(body: bytes, closed: bool, receive: Receive) -> Receive:
    given = False

    async def replayed() -> dict[str, Any]:
        nonlocal given
        if not given:
            given = True
            if closed:
                return {"type": "http.disconnect"}
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed


async def _refuse(send: Send, refusal: AuthRefused) -> None:
    payload = json.dumps({"detail": refusal.detail}).encode("utf-8")
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    headers += [
        (name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in refusal.headers.items()
    ]
    await send({"type": "http.response.start", "status": refusal.status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})
