"""Rate limits at the edge: one user's or one address's burst is cut off with 429 (Retry-After,
the JSON error body), nobody else's is."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from stack.launcher import Stack
from tests.helpers import UNKNOWN_ID, Http, Response, random_address, sign_up


def _burst(stack: Stack, path: str, token: str | None, n: int) -> list[int]:
    def one(_: int) -> int:
        client = Http(stack.topo.edge_port)
        try:
            return client.get(path, token=token).status
        finally:
            client.close()

    with ThreadPoolExecutor(max_workers=16) as pool:
        return list(pool.map(one, range(n)))


def test_a_user_over_the_limit_gets_429_with_a_json_error(edge: Http, stack: Stack) -> None:
    hog, bystander = sign_up(edge), sign_up(edge)
    path = f"/v1/users/{hog.user_id}"
    burst = stack.settings.rate_limit_burst
    statuses = _burst(stack, path, hog.token, burst * 3)
    assert 429 in statuses and 200 in statuses
    r = edge.get(path, token=hog.token)
    if r.status == 429:
        assert r.json()["code"] == 8
    # another user and anonymous callers have their own budget
    assert edge.get(path, token=bystander.token).status == 200
    assert set(_burst(stack, path, None, burst * 2)) == {200}


def _burst_from(stack: Stack, address: str, calls: int, send: Callable[[Http], Response]) -> list:
    """``calls`` requests from one client address, 16 at a time; their responses."""

    def one(_: int) -> Response:
        client = Http(stack.topo.edge_port, client_address=address)
        try:
            return send(client)
        finally:
            client.close()

    with ThreadPoolExecutor(max_workers=16) as pool:
        return list(pool.map(one, range(calls)))


def _assert_limited(replies: list[Response]) -> None:
    limited = [r for r in replies if r.status == 429]
    assert limited and any(r.status != 429 for r in replies)
    assert limited[0].headers["retry-after"] == "1"
    assert limited[0].json()["code"] == 8


def test_anonymous_requests_are_limited_per_client_address(edge: Http, stack: Stack) -> None:
    user = sign_up(edge)
    path = f"/v1/users/{user.user_id}"
    address = random_address()
    flood = _burst_from(
        stack, address, stack.settings.anon_rate_limit_burst * 2, lambda h: h.get(path)
    )
    _assert_limited(flood)
    # another address, and a signed-in user at the flooding address, are not held back
    assert Http(stack.topo.edge_port).get(path).status == 200
    same_address = Http(stack.topo.edge_port, client_address=address)
    assert same_address.get(path, token=user.token).status == 200


def test_the_client_address_is_the_rightmost_one_no_trusted_proxy_added(stack: Stack) -> None:
    user_path = "/v1/users/" + UNKNOWN_ID
    spoofed, real = random_address(), random_address()
    burst = stack.settings.anon_rate_limit_burst
    # a client prepends addresses of its own choosing; the proxy appends the one it saw
    _assert_limited(_burst_from(stack, f"{spoofed}, {real}", burst * 2, lambda h: h.get(user_path)))
    # a refill tick may give a few tokens back, never a burst's worth
    after = [r.status for r in _burst_from(stack, real, 50, lambda h: h.get(user_path))]
    assert 429 in after
    assert {r.status for r in _burst_from(stack, spoofed, 50, lambda h: h.get(user_path))} == {404}


def test_sign_ins_are_limited_per_address_with_or_without_a_token(stack: Stack) -> None:
    http = Http(stack.topo.edge_port)
    user = sign_up(http)
    address = random_address()
    # malformed sign-ins are cheap for the service, but the edge counts every attempt
    attempt = {"handle": "x", "password": "whatever1"}
    flood = _burst_from(
        stack,
        address,
        stack.settings.signin_rate_limit_burst * 2,
        lambda h: h.post("/v1/sessions", attempt, token=user.token),
    )
    _assert_limited(flood)
    assert {r.status for r in flood} == {400, 429}
    # reads from that address are another bucket
    assert (
        Http(stack.topo.edge_port, client_address=address).get(f"/v1/users/{user.user_id}").status
        == 200
    )
