"""A rolling restart (`python -m stack restart SERVICE`): each instance of a service replaced in
turn while clients keep calling it through the edge; none of their calls fails."""

from __future__ import annotations

import collections
import threading

from stack.launcher import Stack
from tests.helpers import Http, sign_up

CLIENTS = 8
PACE_SECONDS = 0.1  # each client ~10 calls/s: under the test stack's per-address limit


def test_a_rolling_restart_of_two_instances_fails_no_client_call(edge: Http, stack: Stack) -> None:
    assert len(stack.topo.instances_of("activity")) == 2
    user = sign_up(edge, "steady")
    statuses: collections.Counter[int] = collections.Counter()
    done = threading.Event()

    def client() -> None:
        http = Http(stack.topo.edge_port)
        while not done.is_set():
            statuses[http.get(f"/v1/users/{user.user_id}").status] += 1
            done.wait(PACE_SECONDS)  # the pace of the load; returns at once when it is over
        http.close()

    threads = [threading.Thread(target=client) for _ in range(CLIENTS)]
    for t in threads:
        t.start()
    try:
        before = {i.name: stack.services[i.name].pid for i in stack.topo.instances_of("activity")}
        stack.rolling_restart("activity")
        after = {i.name: stack.services[i.name].pid for i in stack.topo.instances_of("activity")}
    finally:
        done.set()
        for t in threads:
            t.join()
    assert all(before[name] != after[name] for name in before)  # every instance replaced
    assert statuses[200] > CLIENTS * 20 and set(statuses) == {200}, dict(statuses)
