"""Client-side helpers for tests: a small JSON-over-HTTP client, polling, and test users."""

from __future__ import annotations

import http.client
import json
import random
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import redis

if TYPE_CHECKING:
    from stack.launcher import Stack

T = TypeVar("T")

# a well-formed id that names nothing: requests with it must answer 404
UNKNOWN_ID = "0196d5a0-0000-7000-8000-000000000000"


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def random_address() -> str:
    return f"10.{random.randrange(256)}.{random.randrange(256)}.{random.randrange(1, 255)}"


class Http:
    """One keep-alive HTTP/1.1 connection to the edge; JSON in, Response out.

    Each client is its own client address: it sends X-Forwarded-For, which the test stack's edge
    believes from loopback (TRUSTED_PROXIES), so per-address limits see separate clients as the
    edge would in production. ``client_address`` picks the address; ``None``: a random one."""

    def __init__(
        self, port: int, host: str = "127.0.0.1", client_address: str | None = None
    ) -> None:
        self.host, self.port = host, port
        self.client_address = client_address or random_address()
        self.conn = http.client.HTTPConnection(host, port, timeout=10)

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        token: str | None = None,
        headers: dict[str, str] | None = None,
        raw: bytes | None = None,
    ) -> Response:
        send_headers = {
            "content-type": "application/json",
            "x-forwarded-for": self.client_address,
            **(headers or {}),
        }
        if token:
            send_headers["authorization"] = f"Bearer {token}"
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        for attempt in (1, 2):
            try:
                self.conn.request(method, path, body=data, headers=send_headers)
                r = self.conn.getresponse()
                return Response(r.status, {k.lower(): v for k, v in r.getheaders()}, r.read())
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                # the server closed an idle keep-alive connection: reconnect once
                self.conn.close()
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=10)
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def get(self, path: str, **kw: Any) -> Response:
        return self.request("GET", path, **kw)

    def post(self, path: str, body: Any = None, **kw: Any) -> Response:
        return self.request("POST", path, body, **kw)

    def close(self) -> None:
        self.conn.close()


def eventually(check: Callable[[], T], timeout: float = 5.0, interval: float = 0.05) -> T:
    """Polls ``check`` until it returns a truthy value without raising; returns that value."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = check()
            if result:
                return result
            last: BaseException | None = AssertionError(f"{check} returned {result!r}")
        except AssertionError as e:
            last = e
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {timeout}s: {last}")
        time.sleep(interval)  # poll interval, bounded by the deadline above


def unique_handle(prefix: str = "u") -> str:
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


@dataclass(frozen=True)
class SignedUpUser:
    user_id: str
    handle: str
    password: str
    token: str


def sign_up(http: Http, prefix: str = "u", password: str = "correct horse") -> SignedUpUser:
    handle = unique_handle(prefix)
    r = http.post("/v1/users", {"handle": handle, "password": password, "display_name": handle})
    assert r.status == 200, r.body
    body = r.json()
    return SignedUpUser(body["user"]["user_id"], handle, password, body["access_token"])


def sign_up_many(port: int, n: int, prefix: str = "u") -> list[SignedUpUser]:
    """``n`` new users, signed up in parallel (Argon2 makes sign-up deliberately slow)."""
    return in_parallel(port, [lambda http: sign_up(http, prefix)] * n)


def in_parallel(port: int, calls: list[Callable[[Http], T]], workers: int = 16) -> list[T]:
    """Runs each call with its own edge connection, concurrently; results in call order."""

    def run(call: Callable[[Http], T]) -> T:
        http = Http(port)
        try:
            return call(http)
        finally:
            http.close()

    with ThreadPoolExecutor(max_workers=min(workers, len(calls) or 1)) as pool:
        return list(pool.map(run, calls))


def walk(http: Http, path: str, plural: str, page_size: int, **kw: Any) -> list[dict]:
    """Every item of a paged list, following ``next_page_token`` to the end."""
    items: list[dict] = []
    token = ""
    for _ in range(1000):
        r = http.get(f"{path}?page_size={page_size}&page_token={token}", **kw)
        assert r.status == 200, r.body
        body = r.json()
        items += body[plural]
        token = body["next_page_token"]
        if not token:
            return items
    raise AssertionError(f"{path} never ended")


def valkey(stack: Stack, **kw: Any) -> redis.Redis:
    """A client of the stack's Valkey: one node, or the cluster (REDIS_CLUSTER=1), whose
    client routes each key to its node and FLUSHALL to every primary."""
    if stack.settings.redis_cluster:
        return redis.RedisCluster.from_url(stack.settings.redis_url, **kw)  # type: ignore[return-value]
    return redis.Redis.from_url(stack.settings.redis_url, **kw)
