"""Per-campaign budget pacing state for /bid, kept atomically and persisted.

A bid is *reserved* before it is answered: in one atomic step the store checks
`spent + reserved + bid <= budget`, clips the bid to what is left, and adds it to `reserved`. The
exchange's outcome (`POST /bid/outcome`) settles the reservation: the reserved amount is released
and the real cost (never more than the bid) is added to `spent`, with the win and click counted.
A reservation never settled (an outcome lost on the way) stops counting after `ttl_s`. So however
many requests run at once, on however many replicas, the bids answered for a campaign's day never
add up to more than its daily budget.

Embedded mode keeps the state in SQLite under the data folder (WAL, `BEGIN IMMEDIATE`, so
replicas in several processes serialise on the file); scale-out keeps it in Redis, where each
step is one Lua script (Redis runs a script atomically). Both survive a replica restart.

Reservations are stamped with `clock()`, wall-clock seconds by default: the stamp is shared by
every replica process (and, for Redis, every node), so it must be a clock they all agree on. Tests
pass a clock of their own to expire reservations without waiting.
"""

from __future__ import annotations

import sqlite3
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

from configs import InputError
from configs.settings import Settings

Clock = Callable[[], float]  # seconds; reservations older than ttl_s by this clock expire

PACING_FILE = "pacing.db"


@dataclass(frozen=True)
class CampaignDay:
    """A campaign's pacing state for one market-local day."""

    campaign_id: str
    day: str  # market-local date, YYYY-MM-DD
    budget: float
    spent: float = 0.0
    reserved: float = 0.0
    bids: int = 0  # reservations made (answered bids above zero)
    settled: int = 0
    wins: int = 0
    clicks: int = 0

    @property
    def remaining(self) -> float:
        return max(0.0, self.budget - self.spent - self.reserved)

    def as_dict(self) -> dict[str, float | int | str]:
        return {**asdict(self), "remaining": self.remaining}


@dataclass(frozen=True)
class Reservation:
    reservation_id: str | None  # None when nothing was left to reserve (bid 0)
    amount: float
    state: CampaignDay


class UnknownReservation(LookupError):
    """The outcome names a reservation that does not exist, expired, or was settled already."""


class PacingStore(Protocol):
    def state(self, campaign_id: str, day: str, budget: float) -> CampaignDay: ...

    def reserve(self, campaign_id: str, day: str, budget: float, bid: float) -> Reservation: ...

    def settle(
        self, campaign_id: str, reservation_id: str, won: bool, cost: float, clicked: bool
    ) -> CampaignDay: ...


def pacing_store(settings: Settings, ttl_s: float, clock: Clock = time.time) -> PacingStore:
    """The store for the platform's mode: SQLite under the data folder, or Redis in scale-out."""
    if settings.mode == "scaleout":
        return RedisPacingStore(settings.scaleout.redis_url, ttl_s, clock)
    return SqlitePacingStore(settings.root / "serving" / PACING_FILE, ttl_s, clock)


_SCHEMA = """
CREATE TABLE IF NOT EXISTS campaign_day (
    campaign_id TEXT NOT NULL, day TEXT NOT NULL, budget REAL NOT NULL,
    spent REAL NOT NULL DEFAULT 0, reserved REAL NOT NULL DEFAULT 0,
    bids INTEGER NOT NULL DEFAULT 0, settled INTEGER NOT NULL DEFAULT 0,
    wins INTEGER NOT NULL DEFAULT 0, clicks INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (campaign_id, day)
);
CREATE TABLE IF NOT EXISTS reservation (
    reservation_id TEXT PRIMARY KEY, campaign_id TEXT NOT NULL, day TEXT NOT NULL,
    amount REAL NOT NULL, created REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS reservation_by_day ON reservation (campaign_id, day, created);
"""
_COLUMNS = "campaign_id, day, budget, spent, reserved, bids, settled, wins, clicks"


class SqlitePacingStore:
    def __init__(self, path: Path, ttl_s: float, clock: Clock = time.time) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.ttl_s = ttl_s
        self.clock = clock
        # one connection per replica, used by one thread at a time; other processes are kept out by
        # SQLite's own lock, which BEGIN IMMEDIATE takes before the first read
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, timeout=10.0, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)

    def _row(self, campaign_id: str, day: str, budget: float) -> CampaignDay:
        self._db.execute(
            "INSERT INTO campaign_day (campaign_id, day, budget) VALUES (?, ?, ?) "
            "ON CONFLICT (campaign_id, day) DO UPDATE SET budget = excluded.budget",
            (campaign_id, day, budget),
        )
        row = self._db.execute(
            f"SELECT {_COLUMNS} FROM campaign_day WHERE campaign_id = ? AND day = ?", (campaign_id, day)
        ).fetchone()
        return CampaignDay(*row)

    def _expire(self, campaign_id: str, day: str) -> None:
        cutoff = self.clock() - self.ttl_s
        (stale,) = self._db.execute(
            "SELECT COALESCE(SUM(amount), 0) FROM reservation "
            "WHERE campaign_id = ? AND day = ? AND created < ?",
            (campaign_id, day, cutoff),
        ).fetchone()
        if stale:
            self._db.execute(
                "DELETE FROM reservation WHERE campaign_id = ? AND day = ? AND created < ?",
                (campaign_id, day, cutoff),
            )
            self._db.execute(
                "UPDATE campaign_day SET reserved = MAX(0, reserved - ?) WHERE campaign_id = ? AND day = ?",
                (stale, campaign_id, day),
            )

    def _transaction(self) -> sqlite3.Connection:
        self._db.execute("BEGIN IMMEDIATE")
        return self._db

    def state(self, campaign_id: str, day: str, budget: float) -> CampaignDay:
        with self._lock:
            self._transaction()
            try:
                self._expire(campaign_id, day)
                state = self._row(campaign_id, day, budget)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return state

    def reserve(self, campaign_id: str, day: str, budget: float, bid: float) -> Reservation:
        with self._lock:
            self._transaction()
            try:
                self._expire(campaign_id, day)
                state = self._row(campaign_id, day, budget)
                amount = min(max(bid, 0.0), state.remaining)
                reservation_id = None
                if amount > 0.0:
                    reservation_id = uuid.uuid4().hex
                    self._db.execute(
                        "INSERT INTO reservation VALUES (?, ?, ?, ?, ?)",
                        (reservation_id, campaign_id, day, amount, self.clock()),
                    )
                    self._db.execute(
                        "UPDATE campaign_day SET reserved = reserved + ?, bids = bids + 1 "
                        "WHERE campaign_id = ? AND day = ?",
                        (amount, campaign_id, day),
                    )
                    state = self._row(campaign_id, day, budget)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return Reservation(reservation_id, amount, state)

    def settle(
        self, campaign_id: str, reservation_id: str, won: bool, cost: float, clicked: bool
    ) -> CampaignDay:
        with self._lock:
            self._transaction()
            try:
                found = self._db.execute(
                    "SELECT day, amount FROM reservation WHERE reservation_id = ? AND campaign_id = ?",
                    (reservation_id, campaign_id),
                ).fetchone()
                if found is None:
                    raise UnknownReservation(
                        f"reservation_id: no open reservation {reservation_id!r} for campaign "
                        f"{campaign_id!r} (unknown, expired or already settled)"
                    )
                day, amount = found
                if won and cost > amount + 1e-9:
                    raise ValueError(f"cost: {cost} is more than the bid reserved ({amount})")
                paid = cost if won else 0.0
                self._db.execute("DELETE FROM reservation WHERE reservation_id = ?", (reservation_id,))
                self._db.execute(
                    "UPDATE campaign_day SET reserved = MAX(0, reserved - ?), spent = spent + ?, "
                    "settled = settled + 1, wins = wins + ?, clicks = clicks + ? "
                    "WHERE campaign_id = ? AND day = ?",
                    (amount, paid, int(won), int(won and clicked), campaign_id, day),
                )
                row = self._db.execute(
                    f"SELECT {_COLUMNS} FROM campaign_day WHERE campaign_id = ? AND day = ?",
                    (campaign_id, day),
                ).fetchone()
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return CampaignDay(*row)


# KEYS[1] campaign-day hash, KEYS[2] its reservations (sorted set: score = created time),
# KEYS[3] reservation amounts (hash id -> amount). ARGV: budget, bid, now, ttl, id
_REDIS_RESERVE = """
local function expire()
  local cutoff = tonumber(ARGV[3]) - tonumber(ARGV[4])
  local stale = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', cutoff)
  local total = 0
  for _, id in ipairs(stale) do
    total = total + tonumber(redis.call('HGET', KEYS[3], id) or '0')
    redis.call('HDEL', KEYS[3], id)
  end
  if #stale > 0 then
    redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', cutoff)
    local reserved = tonumber(redis.call('HGET', KEYS[1], 'reserved') or '0') - total
    if reserved < 0 then reserved = 0 end
    redis.call('HSET', KEYS[1], 'reserved', tostring(reserved))
  end
end
redis.call('HSET', KEYS[1], 'budget', ARGV[1])
expire()
local spent = tonumber(redis.call('HGET', KEYS[1], 'spent') or '0')
local reserved = tonumber(redis.call('HGET', KEYS[1], 'reserved') or '0')
local remaining = tonumber(ARGV[1]) - spent - reserved
if remaining < 0 then remaining = 0 end
local amount = tonumber(ARGV[2])
if amount > remaining then amount = remaining end
if amount > 0 and ARGV[5] ~= '' then
  redis.call('HSET', KEYS[1], 'reserved', tostring(reserved + amount))
  redis.call('HINCRBY', KEYS[1], 'bids', 1)
  redis.call('ZADD', KEYS[2], ARGV[3], ARGV[5])
  redis.call('HSET', KEYS[3], ARGV[5], tostring(amount))
else
  amount = 0
end
redis.call('EXPIRE', KEYS[1], 172800)
redis.call('EXPIRE', KEYS[2], 172800)
redis.call('EXPIRE', KEYS[3], 172800)
return tostring(amount)
"""

# KEYS as above; ARGV: id, won (0/1), cost, clicked (0/1). Returns -1 unknown, -2 cost above bid.
_REDIS_SETTLE = """
local amount = redis.call('HGET', KEYS[3], ARGV[1])
if not amount then return -1 end
amount = tonumber(amount)
local won = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
if won == 1 and cost > amount + 1e-9 then return -2 end
redis.call('HDEL', KEYS[3], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
local reserved = tonumber(redis.call('HGET', KEYS[1], 'reserved') or '0') - amount
if reserved < 0 then reserved = 0 end
redis.call('HSET', KEYS[1], 'reserved', tostring(reserved))
if won == 1 then
  redis.call('HINCRBYFLOAT', KEYS[1], 'spent', cost)
  redis.call('HINCRBY', KEYS[1], 'wins', 1)
  redis.call('HINCRBY', KEYS[1], 'clicks', tonumber(ARGV[4]))
end
redis.call('HINCRBY', KEYS[1], 'settled', 1)
return 1
"""


def redis_client(connection: str) -> Any:
    """A client for `scaleout.redis_url`: Feast's connection string (`host:port[,db=N][,password=..]
    [,ssl=true]`, the form the online store shares) or a `redis://` URL."""
    import redis

    if "://" in connection:
        return redis.Redis.from_url(connection, decode_responses=True)
    nodes = [part for part in connection.split(",") if "=" not in part]
    if len(nodes) != 1 or ":" not in nodes[0]:
        raise InputError(
            f"scaleout.redis_url: {connection!r} must name one host:port (pacing state does not use "
            "Redis Cluster), e.g. 127.0.0.1:6379,db=0"
        )
    host, _, port = nodes[0].rpartition(":")
    options: dict[str, Any] = {}
    for part in connection.split(","):
        key, found, value = part.partition("=")
        if not found:
            continue
        if key == "db" and value.isdigit():
            options["db"] = int(value)
        elif key in ("password", "username"):
            options[key] = value
        elif key == "ssl" and value.lower() in ("true", "false"):
            options["ssl"] = value.lower() == "true"
        else:
            raise InputError(
                f"scaleout.redis_url: {part!r} in {connection!r} is not understood "
                "(expected db=<number>, password=, username= or ssl=true|false)"
            )
    if not port.isdigit():
        raise InputError(f"scaleout.redis_url: port {port!r} in {connection!r} is not a number")
    return redis.Redis(host=host, port=int(port), decode_responses=True, **options)


class RedisPacingStore:
    def __init__(self, redis_url: str, ttl_s: float, clock: Clock = time.time) -> None:
        self._redis = redis_client(redis_url)
        self.ttl_s = ttl_s
        self.clock = clock
        self._reserve = self._redis.register_script(_REDIS_RESERVE)
        self._settle = self._redis.register_script(_REDIS_SETTLE)

    @staticmethod
    def _keys(campaign_id: str, day: str) -> list[str]:
        base = f"tradewind:pacing:{{{campaign_id}}}:{day}"  # one hash slot per campaign (Redis Cluster)
        return [base, f"{base}:open", f"{base}:amounts"]

    def _read(self, campaign_id: str, day: str) -> CampaignDay:
        values = self._redis.hgetall(self._keys(campaign_id, day)[0])
        return CampaignDay(
            campaign_id,
            day,
            float(values.get("budget", 0.0)),
            float(values.get("spent", 0.0)),
            float(values.get("reserved", 0.0)),
            int(values.get("bids", 0)),
            int(values.get("settled", 0)),
            int(values.get("wins", 0)),
            int(values.get("clicks", 0)),
        )

    def state(self, campaign_id: str, day: str, budget: float) -> CampaignDay:
        self._reserve(keys=self._keys(campaign_id, day), args=[budget, 0.0, self.clock(), self.ttl_s, ""])
        return self._read(campaign_id, day)

    def reserve(self, campaign_id: str, day: str, budget: float, bid: float) -> Reservation:
        reservation_id = uuid.uuid4().hex
        amount = float(
            self._reserve(
                keys=self._keys(campaign_id, day),
                args=[budget, max(bid, 0.0), self.clock(), self.ttl_s, reservation_id],
            )
        )
        if amount <= 0.0:
            reservation_id = None
        # the reservation id carries its day, so settling finds the keys without a lookup
        return Reservation(
            f"{day}.{reservation_id}" if reservation_id else None, amount, self._read(campaign_id, day)
        )

    def settle(
        self, campaign_id: str, reservation_id: str, won: bool, cost: float, clicked: bool
    ) -> CampaignDay:
        day, _, inner = reservation_id.partition(".")
        result = (
            int(self._settle(keys=self._keys(campaign_id, day), args=[inner, int(won), cost, int(clicked)]))
            if inner
            else -1
        )
        if result == -1:
            raise UnknownReservation(
                f"reservation_id: no open reservation {reservation_id!r} for campaign {campaign_id!r} "
                "(unknown, expired or already settled)"
            )
        if result == -2:
            raise ValueError(f"cost: {cost} is more than the bid reserved")
        return self._read(campaign_id, day)
