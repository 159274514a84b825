"""Per-user rate limiting at the edge: one user's burst is cut off with 429, nobody else's is."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from stack.launcher import Stack
from tests.helpers import Http, sign_up


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
