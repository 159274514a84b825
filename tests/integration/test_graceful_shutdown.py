"""Load balancing and graceful shutdown: two activity_svc instances behind Envoy; stopping one
while clients call costs the clients nothing."""

from __future__ import annotations

import signal
import threading
import urllib.request
from collections import Counter
from collections.abc import Callable

import grpc

from stack.launcher import Stack
from tests.helpers import Http, eventually, random_address, sign_up, unique_handle
from tiktok.v1 import activity_pb2, activity_pb2_grpc


def _requests_per_host(stack: Stack, cluster: str) -> Counter[str]:
    url = f"http://127.0.0.1:{stack.topo.edge_admin_port}/clusters"
    with urllib.request.urlopen(url, timeout=5) as r:
        text = r.read().decode()
    counts: Counter[str] = Counter()
    for line in text.splitlines():
        parts = line.split("::")
        if len(parts) == 4 and parts[0] == cluster and parts[2] == "rq_total":
            counts[parts[1]] += int(parts[3])
    return counts


def test_calls_are_spread_over_both_instances(edge: Http, stack: Stack) -> None:
    user = sign_up(edge)
    before = _requests_per_host(stack, "activity")
    for _ in range(40):
        assert edge.get(f"/v1/users/{user.user_id}").status == 200
    after = _requests_per_host(stack, "activity")
    served = {host: after[host] - before.get(host, 0) for host in after}
    assert len(served) == 2
    assert all(n > 0 for n in served.values()), served


class Load:
    """Client threads calling through the edge until stopped; every failure is recorded."""

    def __init__(self, stack: Stack, user_id: str) -> None:
        self.stack = stack
        self.user_id = user_id
        self.done = 0
        self.errors: list[str] = []
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.threads = [
            threading.Thread(target=self._loop, args=(work,), daemon=True)
            for work in (self._rest_get, self._rest_get, self._grpc_get, self._grpc_get,
                         self._rest_sign_up)
        ]  # fmt: skip

    def _rest_get(self, http: Http, stub: activity_pb2_grpc.ActivityServiceStub) -> None:
        http.client_address = random_address()  # see _grpc_get
        r = http.get(f"/v1/users/{self.user_id}")
        if r.status != 200:
            raise AssertionError(f"GET user: {r.status} {r.body[:200]!r}")

    def _grpc_get(self, http: Http, stub: activity_pb2_grpc.ActivityServiceStub) -> None:
        # as many clients: the per-address limits are not what this load is about
        client = (("x-forwarded-for", random_address()),)
        stub.GetUser(activity_pb2.GetUserRequest(user_id=self.user_id), metadata=client, timeout=10)

    def _rest_sign_up(self, http: Http, stub: activity_pb2_grpc.ActivityServiceStub) -> None:
        http.client_address = random_address()  # a new client each time, as for _grpc_get
        r = http.post("/v1/users", {"handle": unique_handle("load"), "password": "correct horse"})
        if r.status != 200:
            raise AssertionError(f"sign-up: {r.status} {r.body[:200]!r}")

    def _loop(self, work: Callable[..., None]) -> None:
        http = Http(self.stack.topo.edge_port)
        with grpc.insecure_channel(f"127.0.0.1:{self.stack.topo.edge_port}") as channel:
            stub = activity_pb2_grpc.ActivityServiceStub(channel)
            while not self.stop.is_set():
                try:
                    work(http, stub)
                    with self.lock:
                        self.done += 1
                except Exception as e:  # noqa: BLE001 - every failure is the finding
                    with self.lock:
                        self.errors.append(repr(e)[:300])
        http.close()

    def __enter__(self) -> Load:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=30)

    def wait_for_more(self, n: int, timeout: float = 30) -> None:
        target = self.done + n
        eventually(lambda: self.done >= target, timeout=timeout)


def test_sigterm_to_one_of_two_instances_costs_clients_no_error(edge: Http, stack: Stack) -> None:
    user = sign_up(edge)
    victim = stack.services["activity_svc-0"]
    try:
        with Load(stack, user.user_id) as load:
            load.wait_for_more(200)
            victim.send(signal.SIGTERM)
            assert victim.wait(timeout=20), "the instance did not stop within its grace period"
            assert victim.popen is not None and victim.popen.returncode == 0
            load.wait_for_more(300)  # the survivor carries on alone
        assert load.errors == [], load.errors[:5]
        assert load.done > 500
    finally:
        stack.restart_service("activity_svc-0")
        eventually(lambda: _both_healthy(stack), timeout=15)


def _both_healthy(stack: Stack) -> bool:
    url = f"http://127.0.0.1:{stack.topo.edge_admin_port}/clusters"
    with urllib.request.urlopen(url, timeout=5) as r:
        lines = [ln for ln in r.read().decode().splitlines() if ln.startswith("activity::")]
    flags = [ln.split("::")[3] for ln in lines if ln.split("::")[2] == "health_flags"]
    return len(flags) == 2 and all(f == "healthy" for f in flags)
