"""Open-loop HTTP load: requests sent on a fixed arrival schedule, whatever the answers take.

A closed loop (N workers, each waiting for its answer before sending the next) slows down with the
server, so a stall delays the requests that would have been sent during it instead of showing in
their latency (coordinated omission). Here every request has an intended send time from the
schedule, fixed before the run; it is sent then as its own asyncio task whether or not the earlier
ones have answered, and its latency counts from that intended time to its answer, so a request
queued behind a stall carries the whole wait.

Schedules: `constant` (one request every 1/rate s) or `poisson` (exponential gaps of mean 1/rate,
drawn from `seed`: the same seed gives the same schedule). All requests go through one client
whose connection pool holds `max_in_flight` connections (default 1,000), so below that many open
requests nothing waits client-side for a connection. The client is `raw` (benchmarks/raw_http.py,
default: a bare asyncio HTTP/1.1 client, a small fraction of httpx's CPU per request, which matters
when the generator shares the server's cores) or `httpx` (httpx.AsyncClient, the earlier path, kept
to compare); `poster` gives either to the closed loops of the serving and overload benchmarks too.
A request that finds `max_in_flight` already open waits for a slot instead of being dropped; its
send is late. A send more than `late_bound_s` (default 10 ms) behind its intended time counts as a
late send: the generator, not the server, fell behind (slots used up, or its own event loop too
busy). When more than 1% of the sends are late, the run is `generator_limited` and its figures say
more about the generator than about the server.

    run = asyncio.run(open_loop("http://127.0.0.1:8000", "/echo", body, rate=50, seconds=10))
    run.achieved_rps, run.status_counts(), run.latencies_ms(), run.late_sends
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from configs import InputError

ARRIVALS = ("constant", "poisson")
MAX_IN_FLIGHT = 1000
LATE_BOUND_S = 0.010
GENERATOR_LIMITED_SHARE = 0.01  # more late sends than this: the generator limited the run
TIMEOUT_S = 30.0
STATUS_CLASSES = ("200", "4xx", "503", "other")
CLIENTS = ("raw", "httpx")

# POST a JSON body to a path: (status, whether the answer carried Retry-After); status 0 when no
# HTTP answer came (timeout, refused or broken connection)
Post = Callable[[str, Any], Awaitable[tuple[int, bool]]]


def arrival_times(rate: float, seconds: float, arrivals: str = "constant", seed: int = 0) -> np.ndarray:
    """Intended send times (s from the start) of every request due within `seconds` at `rate`."""
    if rate <= 0 or seconds <= 0:
        raise ValueError(f"rate and seconds must be positive, got rate={rate}, seconds={seconds}")
    if arrivals == "constant":
        return np.arange(int(np.floor(rate * seconds))) / rate
    if arrivals == "poisson":
        rng = np.random.default_rng(seed)
        # draw more gaps than the mean needs (a few standard deviations), then cut at `seconds`
        expected = rate * seconds
        gaps = rng.exponential(1.0 / rate, int(expected + 6.0 * np.sqrt(expected) + 10))
        times = np.concatenate([[0.0], np.cumsum(gaps)[:-1]])
        return times[times < seconds]
    raise ValueError(f"arrivals must be one of {', '.join(ARRIVALS)}, got {arrivals!r}")


def status_class(status: int) -> str:
    """The class a status is counted in: 200, 4xx, 503 or other (other 2xx/3xx/5xx; 0: no answer)."""
    if status == 200 or status == 503:
        return str(status)
    if 400 <= status < 500:
        return "4xx"
    return "other"


@dataclass(frozen=True)
class Outcome:
    """One request: when it was due, how late it was sent, when it was answered, and how."""

    intended_s: float  # from the start of the run
    lag_s: float  # actual send - intended send
    latency_s: float  # answer (or failure) - intended send
    status: int  # HTTP status; 0 when no HTTP answer came (timeout, refused connection)
    retry_after: bool = False  # the answer carried Retry-After (a 503's or 429's advice)


@dataclass
class OpenLoopRun:
    offered_rps: float
    seconds: float
    arrivals: str
    late_bound_s: float
    max_in_flight: int
    outcomes: list[Outcome] = field(default_factory=list)
    wall_s: float = 0.0  # from the start until the last answer
    peak_in_flight: int = 0

    @property
    def late_sends(self) -> int:
        return sum(outcome.lag_s > self.late_bound_s for outcome in self.outcomes)

    @property
    def generator_limited(self) -> bool:
        return self.late_sends > GENERATOR_LIMITED_SHARE * max(len(self.outcomes), 1)

    @property
    def achieved_rps(self) -> float:
        """HTTP answers (any status) per second, from the start until the last answer."""
        answered = sum(outcome.status != 0 for outcome in self.outcomes)
        return answered / max(self.wall_s, self.seconds)

    def status_counts(self) -> dict[str, int]:
        counts = dict.fromkeys(STATUS_CLASSES, 0)
        for outcome in self.outcomes:
            counts[status_class(outcome.status)] += 1
        return counts

    def latencies_ms(self, status: int | None = None) -> np.ndarray:
        """Latency from the intended send time of every request (or those answered `status`), ms."""
        chosen = [o.latency_s for o in self.outcomes if status is None or o.status == status]
        return np.asarray(chosen, dtype=np.float64) * 1000.0


async def open_loop(
    url: str,
    path: str,
    body: Callable[[], dict[str, Any]],
    rate: float,
    seconds: float,
    *,
    arrivals: str = "constant",
    seed: int = 0,
    late_bound_s: float = LATE_BOUND_S,
    max_in_flight: int = MAX_IN_FLIGHT,
    timeout_s: float = TIMEOUT_S,
    headers: dict[str, str] | None = None,
    client: str = "raw",
) -> OpenLoopRun:
    """POST `body()` to `url + path` on the schedule of `arrival_times`; returns once every request
    has answered or failed (each within `timeout_s`). `client`: "raw" or "httpx" (see `poster`)."""
    schedule = arrival_times(rate, seconds, arrivals, seed)
    run = OpenLoopRun(rate, seconds, arrivals, late_bound_s, max_in_flight)
    slots = asyncio.Semaphore(max_in_flight)
    in_flight = 0
    async with poster(client, url, max_in_flight, timeout_s, headers) as post:
        # the clock starts once the client is up: its start-up is not the run's time
        start = time.perf_counter()

        async def one(intended_s: float) -> None:
            nonlocal in_flight
            payload = body()
            async with slots:
                sent = time.perf_counter()
                in_flight += 1
                run.peak_in_flight = max(run.peak_in_flight, in_flight)
                status, retry_after = await post(path, payload)
                answered = time.perf_counter()
                in_flight -= 1
            intended = start + intended_s
            outcome = Outcome(intended_s, sent - intended, answered - intended, status, retry_after)
            run.outcomes.append(outcome)

        tasks = []
        for intended_s in schedule:
            delay = start + intended_s - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(float(intended_s))))
        await asyncio.gather(*tasks)
        run.wall_s = time.perf_counter() - start
    run.outcomes.sort(key=lambda outcome: outcome.intended_s)
    return run


@contextlib.asynccontextmanager
async def poster(
    client: str, url: str, max_connections: int, timeout_s: float, headers: dict[str, str] | None
) -> AsyncIterator[Post]:
    """A `Post` over a pool of `max_connections` keep-alive connections to `url`, closed on exit.
    "raw": benchmarks/raw_http.py (little CPU per request); "httpx": httpx.AsyncClient (the earlier
    generator, to compare). Either way a failure is status 0, never an exception."""
    if client == "raw":
        from benchmarks.raw_http import RawClient, RawHTTPError

        async with RawClient(
            url, max_connections=max_connections, timeout_s=timeout_s, headers=headers
        ) as raw:

            async def post_raw(path: str, payload: Any) -> tuple[int, bool]:
                try:
                    response = await raw.post(path, payload)
                except RawHTTPError:
                    return 0, False
                return response.status, "retry-after" in response.headers

            yield post_raw
        return
    if client != "httpx":
        raise ValueError(f"client must be one of {', '.join(CLIENTS)}, got {client!r}")
    import httpx

    limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
    async with httpx.AsyncClient(base_url=url, timeout=timeout_s, limits=limits, headers=headers) as http:

        async def post_httpx(path: str, payload: Any) -> tuple[int, bool]:
            try:
                response = await http.post(path, json=payload)
            except httpx.HTTPError:
                return 0, False
            return response.status_code, "retry-after" in response.headers

        yield post_httpx


def add_open_loop_options(parser: argparse.ArgumentParser) -> None:
    """The generator's own options (--arrivals, --seed, --late-ms, --max-in-flight, --client), for
    every benchmark that offers load open-loop; `open_loop_options` checks them."""
    parser.add_argument(
        "--arrivals",
        choices=ARRIVALS,
        default="constant",
        help="open loop: constant spacing (default) or Poisson arrivals drawn from --seed",
    )
    parser.add_argument("--seed", type=int, default=0, help="open loop: seed of the Poisson arrivals")
    parser.add_argument(
        "--late-ms",
        type=float,
        default=LATE_BOUND_S * 1000,
        help="open loop: a send more than this behind its intended time is late (default %(default)g); "
        "over 1%% late marks the row generator-limited",
    )
    parser.add_argument(
        "--max-in-flight",
        type=int,
        default=MAX_IN_FLIGHT,
        help="open loop: open requests (and pooled connections) at most; a send beyond waits and is late "
        "(default %(default)d)",
    )
    parser.add_argument(
        "--client",
        choices=CLIENTS,
        default="raw",
        help="HTTP client of the closed and open loops: raw (default; a bare asyncio HTTP/1.1 client, "
        "little CPU per request) or httpx (the earlier one, to compare)",
    )


def open_loop_options(args: argparse.Namespace) -> dict[str, Any]:
    """`open_loop`'s keyword arguments from the options `add_open_loop_options` added."""
    if args.late_ms <= 0:
        raise InputError(f"--late-ms: must be positive, got {args.late_ms:g}")
    if not 1 <= args.max_in_flight <= 10_000:
        raise InputError(f"--max-in-flight: must be between 1 and 10000, got {args.max_in_flight}")
    return {
        "arrivals": args.arrivals,
        "seed": args.seed,
        "late_bound_s": args.late_ms / 1000.0,
        "max_in_flight": args.max_in_flight,
        "client": args.client,
    }


def comma_numbers(option: str, text: str, kind: type[int] | type[float]) -> list[float]:
    """A comma-separated option's values (levels, rates, multiples); one line naming the option and
    the value when one is not a number."""
    values = []
    for part in (part.strip() for part in text.split(",")):
        if not part:
            continue
        try:
            values.append(kind(part))
        except ValueError:
            expected = "a whole number" if kind is int else "a number"
            raise InputError(f"{option}: {part!r} is not {expected} (comma-separated, e.g. 1,8,32)") from None
    return values


# ---------------------------------------------------------------------------------------------
# what the generator itself costs: `python -m benchmarks.load_generator --rate 400 --seconds 3`


def _fixed_answer_server(port_out: Any) -> None:
    """A child process answering every request with the same small 200 (no parsing beyond the
    framing): the server's cost stays out of the generator's CPU figure."""
    answer = b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{"ok":true}'

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    (
                        int(line[15:])
                        for line in head.split(b"\r\n")
                        if line.lower().startswith(b"content-length:")
                    ),
                    0,
                )
                await reader.readexactly(length)
                writer.write(answer)
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    async def serve() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", 0, backlog=1024)
        port_out.send(server.sockets[0].getsockname()[1])
        await server.serve_forever()

    asyncio.run(serve())


async def _closed_requests(client: str, url: str, body: dict[str, Any], requests: int, workers: int) -> int:
    """`requests` POSTs by `workers` closed-loop workers; the number answered 200."""
    remaining, answered = requests, 0
    async with poster(client, url, workers, TIMEOUT_S, None) as post:

        async def worker() -> None:
            nonlocal remaining, answered
            while remaining > 0:
                remaining -= 1
                status, _ = await post("/echo", body)
                answered += status == 200

        await asyncio.gather(*(worker() for _ in range(workers)))
    return answered


def client_cpu(
    rate: float, seconds: float, requests: int, workers: int, clients: tuple[str, ...] = CLIENTS
) -> list[dict[str, Any]]:
    """This process's CPU (time.process_time) per request, by client, against a fixed-answer server
    in a child process: a closed loop of `requests` by `workers` (as fast as the server answers),
    then an open loop at `rate` for `seconds` (and whether it kept up)."""
    import multiprocessing

    body = {"user_id": "u1", "market": "US", "k": 10}
    receive, send = multiprocessing.Pipe(duplex=False)
    child = multiprocessing.get_context("spawn").Process(
        target=_fixed_answer_server, args=(send,), daemon=True
    )
    child.start()
    try:
        url = f"http://127.0.0.1:{receive.recv()}"
        figures = []
        for client in clients:
            asyncio.run(_closed_requests(client, url, body, 200, workers))  # imports, first connections
            cpu, wall = time.process_time(), time.perf_counter()
            ok = asyncio.run(_closed_requests(client, url, body, requests, workers))
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
            figures.append(
                {
                    "client": client,
                    "loop": f"closed x{workers}",
                    "requests": requests,
                    "ok": ok,
                    "rps": round(requests / wall, 1),
                    "cpu_ms_per_request": round(1000.0 * cpu / requests, 3),
                }
            )
            cpu = time.process_time()
            run = asyncio.run(open_loop(url, "/echo", lambda: body, rate, seconds, client=client))
            cpu = time.process_time() - cpu
            figures.append(
                {
                    "client": client,
                    "loop": f"open {rate:g} rps",
                    "requests": len(run.outcomes),
                    "ok": run.status_counts()["200"],
                    "cpu_ms_per_request": round(1000.0 * cpu / max(len(run.outcomes), 1), 3),
                    "p50_ms": round(float(np.percentile(run.latencies_ms(), 50)), 2),
                    "late_sends": run.late_sends,
                    "generator_limited": run.generator_limited,
                }
            )
        return figures
    finally:
        child.kill()
        child.join()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="the generator's own CPU per request, by client")
    parser.add_argument("--requests", type=int, default=2000, help="closed loop: requests per client (2000)")
    parser.add_argument("--workers", type=int, default=8, help="closed loop: workers (8)")
    parser.add_argument("--rate", type=float, default=200.0, help="open loop: requests per second (200)")
    parser.add_argument("--seconds", type=float, default=3.0, help="open loop: seconds per client (3)")
    cli = parser.parse_args()
    for figure in client_cpu(cli.rate, cli.seconds, cli.requests, cli.workers):
        print(", ".join(f"{key} {value}" for key, value in figure.items()))
