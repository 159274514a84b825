"""Security benchmark (issue 15), load from wrk (C), figures as ratios within one run:

1. Sign-ins per second on the default stack (OWASP-minimum Argon2id, the default limits): wrk,
   8 connections, valid credentials, from one address.
2. Feed p99 at ~100 calls/s (signed-in readers, paced) during a flood of ~200 sign-ins/s from
   one address (each a different unknown handle, so every one that got through would cost a
   password hash) / the same without the flood; rounds interleaved. The default limits answer
   the flood.
3. REST feed throughput (a replayed cursor, 10 hydrated items) with mutual TLS on the internal
   hops / the same with MESH_TLS=0: two stacks one after the other, limits lifted (capacity is
   what is compared), rounds interleaved within each.

    python -m bench.security        (make bench)
"""

from __future__ import annotations

import json
import statistics
import urllib.request
from concurrent.futures import ThreadPoolExecutor

from bench.common import (
    LOAD_ENV,
    RESULTS,
    lua,
    paced_feed_script,
    readers_with_a_feed,
    run_on_own_stack,
    wrk,
)
from stack.launcher import Stack
from tests.helpers import Http, SignedUpUser, sign_up

ROUNDS = 3
SECONDS = 10


def sign_in_script(handle: str, password: str) -> str:
    body = json.dumps({"handle": handle, "password": password})
    return (
        'wrk.method = "POST"\n'
        'wrk.headers["Content-Type"] = "application/json"\n'
        f"wrk.body = {json.dumps(body)}\n"
    )


# ~200 sign-ins/s: 22 connections, each one attempt every 100 ms (plus its latency), each for a
# new handle
FLOOD = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local n = 0
function delay() return 100 end
function request()
  n = n + 1
  local handle = "flood" .. math.random(1, 1e9) .. "_" .. n
  local body = '{"handle":"' .. handle .. '","password":"guess-' .. n .. '"}'
  return wrk.format(nil, nil, nil, body)
end
"""


def measure_sign_ins(stack: Stack, user: SignedUpUser) -> dict:
    url = f"http://127.0.0.1:{stack.topo.edge_port}/v1/sessions"
    with lua(sign_in_script(user.handle, user.password)) as script:
        wrk(url, 3, 8, 2, script)  # warm up
        runs = [wrk(url, SECONDS, 8, 2, script) for _ in range(ROUNDS)]
    ok_rates = [(r["requests"] - r["non_2xx"]) / SECONDS for r in runs]
    return {
        "runs": runs,
        "sign_ins_per_s": round(statistics.median(ok_rates), 1),
        "limited_share": round(
            statistics.median(r["non_2xx"] / max(r["requests"], 1) for r in runs), 3
        ),
    }


def measure_feed_during_flood(stack: Stack, readers: list[SignedUpUser]) -> dict:
    base = f"http://127.0.0.1:{stack.topo.edge_port}"
    feed_url = f"{base}/v1/feed?kind=following&page_size=10"
    quiet, flooded, floods = [], [], []
    tokens = [r.token for r in readers]
    with lua(paced_feed_script(tokens)) as feed, lua(FLOOD) as flood, ThreadPoolExecutor(1) as pool:
        wrk(feed_url, 3, 10, 1, feed)  # warm up
        for _ in range(ROUNDS):
            quiet.append(wrk(feed_url, SECONDS, 10, 1, feed))
            reached = sign_ins_served(stack)
            flooding = pool.submit(wrk, f"{base}/v1/sessions", SECONDS + 2, 22, 1, flood)
            flooded.append(wrk(feed_url, SECONDS, 10, 1, feed))
            floods.append(flooding.result())
            floods[-1]["reached_the_service_per_s"] = round(
                (sign_ins_served(stack) - reached) / (SECONDS + 2), 1
            )
    quiet_p99 = statistics.median(r["p99_ms"] for r in quiet)
    flooded_p99 = statistics.median(r["p99_ms"] for r in flooded)
    return {
        "quiet": quiet,
        "flooded": flooded,
        "flood": floods,
        "flood_per_s": round(statistics.median(r["req_per_s"] for r in floods), 1),
        # what the edge let through, to be hashed (and answered 401: unknown handles)
        "flood_reached_service_per_s": statistics.median(
            r["reached_the_service_per_s"] for r in floods
        ),
        "p99_quiet_ms": quiet_p99,
        "p99_flooded_ms": flooded_p99,
        "p99_ratio": round(flooded_p99 / quiet_p99, 2),
    }


def sign_ins_served(stack: Stack) -> float:
    """CreateSession calls activity_svc has answered so far (its Prometheus histogram)."""
    total = 0.0
    for inst in stack.topo.instances_of("activity"):
        url = f"http://127.0.0.1:{inst.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as r:
            for line in r.read().decode().splitlines():
                if line.startswith("grpc_server_handling_seconds_count{") and (
                    'method="/tiktok.v1.ActivityService/CreateSession"' in line
                ):
                    total += float(line.rsplit(" ", 1)[1])
    return total


def feed_throughput(stack: Stack) -> list[dict]:
    """REST feed at a replayed cursor (the same page, hydrated, from its memo), saturated."""
    edge = Http(stack.topo.edge_port)
    reader = readers_with_a_feed(edge, 1)[0]
    first = edge.get("/v1/feed?kind=following&page_size=5", token=reader.token).json()
    url = (
        f"http://127.0.0.1:{stack.topo.edge_port}/v1/feed?kind=following&page_size=5"
        f"&cursor={first['next_cursor']}"
    )
    with lua(f'wrk.headers["Authorization"] = "Bearer {reader.token}"\n') as script:
        wrk(url, 3, 32, 2, script)  # warm up
        return [wrk(url, SECONDS, 32, 2, script) for _ in range(ROUNDS)]


def on_the_defaults(stack: Stack) -> dict:
    # every sign-up first: the load comes from one address, whose sign-in bucket the
    # measurements then empty
    edge = Http(stack.topo.edge_port)
    user, readers = sign_up(edge, "signin"), readers_with_a_feed(edge, 10)
    return {
        "sign_ins": measure_sign_ins(stack, user),
        "flood": measure_feed_during_flood(stack, readers),
    }


def main() -> None:
    results = run_on_own_stack("security", on_the_defaults)
    runs = {}
    for tls in ("1", "0"):
        env = LOAD_ENV | {"MESH_TLS": tls}
        runs[tls] = run_on_own_stack(
            f"security-mesh-tls-{tls}", lambda s: {"runs": feed_throughput(s)}, env
        )
    with_tls, without = (statistics.median(r["req_per_s"] for r in runs[t]["runs"]) for t in "10")
    results["mtls"] = {
        "feed_req_per_s_mtls": with_tls,
        "feed_req_per_s_plaintext": without,
        "ratio": round(with_tls / without, 3),
    }
    (RESULTS / "security.json").write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results["mtls"], indent=2))


if __name__ == "__main__":
    main()
