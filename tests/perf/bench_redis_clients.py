"""CPU per Redis round trip through each client the request path could use, in one run.

The gateway's request path sends one batch of script calls per round trip (an EVALSHA of the rate
limit, the cache lookup...). This measures, on the same Redis and the same machine, the CPU the
gateway's process spends per EVALSHA round trip, with 32 concurrent callers (as under the
benchmark's load), through:

- redis-py asyncio, ``Redis`` over a ``BlockingConnectionPool`` (what the store used before),
- redis-py asyncio, ``Redis`` over the default ``ConnectionPool``,
- a bare redis-py ``Connection`` per caller (no pool, retry or event hooks),
- coredis,
- valkey-glide (its Rust core's threads are counted: they are the process's CPU too),
- ``app.store.pipe.RedisPipe``: one multiplexed connection, hiredis parser (what the store uses).

    .venv/bin/python -m tests.perf.bench_redis_clients [--calls 300] [--rounds 3] [--redis URL]

Without --redis it starts a redis-server of its own on a free loopback port. Rounds alternate the
clients so that a change in the machine's other load falls on all alike; it prints each client's
median CPU per call and its ratio to RedisPipe's.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

import uvloop

from app.store.pipe import RedisPipe
from tests.support import RedisProcess

SCRIPT = "return redis.call('INCR', KEYS[1])"
CALLERS = 32

Call = Callable[[str], Awaitable[Any]]


async def _measure(call: Call, calls_each: int) -> float:
    """CPU microseconds per call, with CALLERS concurrent callers."""
    for _ in range(50):
        await call("warm")

    async def caller(i: int) -> None:
        key = f"bench:clients:{i}"
        for _ in range(calls_each):
            await call(key)

    started = time.process_time()
    await asyncio.gather(*(caller(i) for i in range(CALLERS)))
    return (time.process_time() - started) / (CALLERS * calls_each) * 1e6


async def redis_py_blocking_pool(url: str, sha: str, calls: int) -> float:
    import redis.asyncio as aioredis
    pool = aioredis.BlockingConnectionPool.from_url(url, max_connections=64, timeout=1, socket_timeout=1)
    client = aioredis.Redis.from_pool(pool)
    try:
        return await _measure(lambda key: client.evalsha(sha, 1, key), calls)
    finally:
        await client.aclose()


async def redis_py_pool(url: str, sha: str, calls: int) -> float:
    import redis.asyncio as aioredis
    client = aioredis.Redis.from_url(url, max_connections=64)
    try:
        return await _measure(lambda key: client.evalsha(sha, 1, key), calls)
    finally:
        await client.aclose()


async def redis_py_connection(url: str, sha: str, calls: int) -> float:
    from redis.asyncio.connection import Connection
    from redis.asyncio.connection import parse_url
    options = parse_url(url)
    free: list[Connection] = []
    made: list[Connection] = []

    async def call(key: str) -> Any:
        connection = free.pop() if free else None
        if connection is None:
            connection = Connection(host=options["host"], port=options["port"])
            made.append(connection)
        try:
            await connection.send_packed_command(connection.pack_command("EVALSHA", sha, 1, key),
                                                 check_health=False)
            return await connection.read_response()
        finally:
            free.append(connection)

    try:
        return await _measure(call, calls)
    finally:
        for connection in made:
            await connection.disconnect()


async def coredis_client(url: str, sha: str, calls: int) -> float:
    import coredis
    client = coredis.Redis.from_url(url, max_connections=64)
    async with client:
        return await _measure(lambda key: client.evalsha(sha, [key]), calls)


async def valkey_glide(url: str, sha: str, calls: int) -> float:
    from glide import GlideClient, GlideClientConfiguration, NodeAddress, Script
    from redis.asyncio.connection import parse_url
    options = parse_url(url)
    client = await GlideClient.create(GlideClientConfiguration([NodeAddress(options["host"], options["port"])]))
    script = Script(SCRIPT)
    try:
        return await _measure(lambda key: client.invoke_script(script, keys=[key]), calls)
    finally:
        await client.close()


async def redis_pipe(url: str, sha: str, calls: int) -> float:
    pipe = RedisPipe(url)
    try:
        return await _measure(lambda key: pipe.execute([("EVALSHA", sha, 1, key)]), calls)
    finally:
        await pipe.close()


CLIENTS = {
    "redis-py, BlockingConnectionPool": redis_py_blocking_pool,
    "redis-py, ConnectionPool": redis_py_pool,
    "redis-py, bare Connection": redis_py_connection,
    "coredis": coredis_client,
    "valkey-glide": valkey_glide,
    "RedisPipe (app/store/pipe.py)": redis_pipe,
}


async def run(url: str, calls: int, rounds: int) -> dict[str, float]:
    import redis.asyncio as aioredis
    admin = aioredis.Redis.from_url(url)
    sha = await admin.script_load(SCRIPT)
    figures: dict[str, list[float]] = {name: [] for name in CLIENTS}
    try:
        for round_ in range(rounds):
            order = list(CLIENTS) if round_ % 2 == 0 else list(reversed(CLIENTS))
            for name in order:
                figures[name].append(await CLIENTS[name](url, sha, calls))
    finally:
        await admin.delete(*[f"bench:clients:{i}" for i in range(CALLERS)], "warm")
        await admin.aclose()
    return {name: statistics.median(values) for name, values in figures.items()}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.perf.bench_redis_clients",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=300, help="calls per caller per round (32 callers)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--redis", help="a Redis URL (default: a redis-server of its own)")
    args = parser.parse_args()
    if args.redis:
        medians = uvloop.run(run(args.redis, args.calls, args.rounds))
    else:
        with RedisProcess() as server:
            medians = uvloop.run(run(server.url, args.calls, args.rounds))
    ours = medians["RedisPipe (app/store/pipe.py)"]
    print(f"CPU per EVALSHA round trip, {CALLERS} concurrent callers, median of {args.rounds} rounds:")
    print("| client | CPU us/call | vs RedisPipe |")
    print("|---|---:|---:|")
    for name, value in medians.items():
        print(f"| {name} | {value:.1f} | {value / ours:.2f}x |")


if __name__ == "__main__":
    main()
