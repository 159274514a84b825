"""What every benchmark shares: its own stack on free ports in a temp dir, and its results file."""

from __future__ import annotations

import json
import os
import re
import subprocess
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from activity_svc.credentials import TokenIssuer
from mesh.jwtkeys import load_signing_key
from mesh.settings import Settings
from stack.launcher import Stack, ephemeral_env
from stack.topology import Topology
from tests.helpers import Http, SignedUpUser, sign_up
from tests.videos import clip, publish

RESULTS = Path(__file__).parent / "results"

# no per-user rate limit and no log line per RPC: neither is part of what is measured
LOAD_ENV = {
    "RATE_LIMIT_PER_SECOND": "1000000",
    "RATE_LIMIT_BURST": "1000000",
    "ANON_RATE_LIMIT_PER_SECOND": "1000000",
    "ANON_RATE_LIMIT_BURST": "1000000",
    "SIGNIN_RATE_LIMIT_PER_SECOND": "1000000",
    "SIGNIN_RATE_LIMIT_BURST": "1000000",
    "ANON_FEED_SESSIONS_PER_MINUTE": "1000000000",
    "LOG_LEVEL": "WARNING",
}


def run_on_own_stack(
    name: str,
    run: Callable[[Stack], dict],
    env: Mapping[str, str] | None = None,
    instances: Mapping[str, int] | None = None,
    *,
    durable: bool = False,
) -> dict:
    """Starts a stack, runs ``run`` on it, stops it; writes results/<name>.json and prints it.
    ``durable``: commits flushed before they are acknowledged, as ``make run`` (benchmarks of
    speed run without, as the test stacks do)."""
    with tempfile.TemporaryDirectory() as tmp:
        # BENCH_DATA_DIR: keep the stack's data and logs there, to look at afterwards
        data_dir = Path(os.environ.get("BENCH_DATA_DIR") or tmp)
        topo = Topology.ephemeral(data_dir, dict(instances or {}))
        stack = Stack(topo, ephemeral_env() | dict(env or {}), durable=durable)
        stack.start()
        try:
            results = run(stack)
        finally:
            stack.stop()
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    return results


def wrk(url: str, seconds: int, connections: int, threads: int = 2, script: str = "") -> dict:
    """One wrk run (C, from the Debian package): throughput, p99 and the responses that were
    not 2xx/3xx, as wrk reports them."""
    argv = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency", url]
    if script:
        argv[1:1] = ["-s", script]
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    rps = float(_find(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p99 = _find(r"99%\s+([\d.]+)(us|ms|s)\b", out)
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[p99.group(2)]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    total = int(_find(r"(\d+) requests in", out).group(1))
    return {
        "req_per_s": rps,
        "p99_ms": round(float(p99.group(1)) * scale, 2),
        "requests": total,
        "non_2xx": int(errors.group(1)) if errors else 0,
    }


@contextmanager
def lua(text: str) -> Iterator[str]:
    """A wrk script (Lua) in a temporary file, for ``wrk(..., script=path)``."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(text)
    try:
        yield f.name
    finally:
        os.unlink(f.name)


def _find(pattern: str, text: str) -> re.Match[str]:
    match = re.search(pattern, text)
    if match is None:
        raise RuntimeError(f"wrk output without {pattern!r}:\n{text}")
    return match


def paced_feed_script(tokens: list[str]) -> str:
    """~10 calls/s per connection, each connection one reader (round robin over tokens)."""
    listed = ", ".join(json.dumps(t) for t in tokens)
    return f"""
local tokens = {{{listed}}}
local i = 0
function setup(thread) i = i + 1; thread:set("token", tokens[(i % #tokens) + 1]) end
function init(args) wrk.headers["Authorization"] = "Bearer " .. token end
function delay() return 100 end
"""


def readers_with_a_feed(edge: Http, count: int) -> list[SignedUpUser]:
    """``count`` new readers following one new creator of 12 clips (a following feed to read)."""
    creator = sign_up(edge, "creator")
    for _ in range(12):
        publish(edge, creator, clip())
    readers = [sign_up(edge, "reader") for _ in range(count)]
    for reader in readers:
        edge.post("/v1/follows", {"followee_id": creator.user_id}, token=reader.token)
    return readers


# load generators' tokens belong to no stored session (they never refresh or sign out)
BENCH_SESSION = "00000000-0000-7000-8000-00000000be9c"


def token_issuer(settings: Settings) -> TokenIssuer:
    """Issues access tokens the stack's edge accepts (hour-long), for load generators."""
    return TokenIssuer(
        load_signing_key(settings.jwt_private_key_file),
        settings.jwt_issuer,
        settings.jwt_audience,
        3600,
    )
