"""The shared Redis connection (mesh/redismux.py) against the real Valkey: many concurrent
callers get their own replies, a caller that gives up does not shift the others' replies, and a
broken connection fails its callers and is replaced by the next call."""

from __future__ import annotations

import asyncio
import itertools

import pytest
import redis.exceptions
from redis.crc import key_slot

from mesh.clients import redis_client
from mesh.redismux import SharedConnection
from stack.launcher import Stack


def run_shared(stack: Stack, body) -> object:
    async def main() -> object:
        fallback = redis_client(stack.settings.redis_url)
        shared = SharedConnection(stack.settings.redis_url, fallback)
        try:
            return await body(shared)
        finally:
            shared.close()
            await fallback.aclose()

    return asyncio.run(main())


def test_concurrent_callers_each_get_their_own_reply(stack: Stack) -> None:
    async def body(shared: SharedConnection) -> list:
        return await asyncio.gather(*(shared.execute("ECHO", f"caller-{i}") for i in range(500)))

    assert run_shared(stack, body) == [f"caller-{i}".encode() for i in range(500)]


def served_here(stack: Stack, name: str) -> str:
    """A key named after ``name`` that the node at REDIS_URL serves itself: any key on one node;
    on a cluster one whose hash slot is that node's (the shared connection is one node's)."""
    if not stack.settings.redis_cluster:
        return name
    node = redis.Redis.from_url(stack.settings.redis_url)
    try:
        nodes = node.execute_command("CLUSTER", "NODES").decode()
    finally:
        node.close()
    myself = next(line.split() for line in nodes.splitlines() if "myself" in line)
    ranges = [tuple(map(int, r.split("-"))) if "-" in r else (int(r), int(r)) for r in myself[8:]]
    return next(
        key
        for key in (f"{name}:{{{n}}}" for n in itertools.count())
        if any(lo <= key_slot(key.encode()) <= hi for lo, hi in ranges)
    )


def test_a_caller_that_gives_up_drops_the_connection_and_the_next_call_gets_a_new_one(
    stack: Stack,
) -> None:
    """A socket that stopped answering must not be written to again (redis-py drops it too):
    the callers still waiting on it fail at once, and later calls reconnect."""

    nothing, other = served_here(stack, "redismux:nothing"), served_here(stack, "redismux:other")

    async def body(shared: SharedConnection) -> tuple:
        first_id = await shared.execute("CLIENT", "ID")
        # BLPOP holds the connection for 2 s; its caller gives up long before the reply
        waiting = asyncio.ensure_future(shared.execute("BLPOP", nothing, 2))
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.2):
                await shared.execute("BLPOP", other, 2)
        with pytest.raises(redis.exceptions.ConnectionError):
            await waiting  # failed with the dropped connection, not left hanging
        return first_id, await shared.execute("CLIENT", "ID")

    first_id, second_id = run_shared(stack, body)
    assert second_id != first_id  # a new connection


def test_errors_are_redis_pys_and_a_lost_connection_is_replaced(stack: Stack) -> None:
    nothing = served_here(stack, "redismux:nothing")

    async def body(shared: SharedConnection) -> bytes:
        with pytest.raises(redis.exceptions.ResponseError):
            await shared.execute("NOSUCHCOMMAND")
        with pytest.raises(redis.exceptions.NoScriptError):  # typed as redis-py types them
            await shared.execute("EVALSHA", "0" * 40, 0)
        own_id = await shared.execute("CLIENT", "ID")
        pending = asyncio.create_task(shared.execute("BLPOP", nothing, 5))
        killer = redis_client(stack.settings.redis_url)  # that node, where the connection is
        try:  # connecting takes round trips: the BLPOP is written by then
            await killer.execute_command("CLIENT", "KILL", "ID", own_id)
        finally:
            await killer.aclose()
        with pytest.raises(redis.exceptions.ConnectionError):
            await pending
        return await shared.execute("ECHO", "again")

    assert run_shared(stack, body) == b"again"
