"""The test session's stack: the same launcher as `make run`, on free ports in a temp dir, with
two activity_svc instances so load balancing and graceful shutdown can be proven."""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterator
from pathlib import Path

import grpc
import pytest

from mesh import pki
from stack.launcher import Stack, ephemeral_env, mesh_channel
from stack.topology import Topology
from tests.browser import browser, new_page  # noqa: F401 - fixtures for the browser tests
from tests.helpers import Http

INSTANCES = {"activity": 2}
# low enough that a test can exhaust one user's bucket quickly, high enough for normal tests
TEST_ENV = {
    "RATE_LIMIT_PER_SECOND": "20",
    "RATE_LIMIT_BURST": "40",
    # the test clients send X-Forwarded-For from loopback, each its own client address; an
    # anonymous client gets a burst of 200, then 20/s (what polling with eventually() takes),
    # so a flood's bucket does not refill within a test
    "TRUSTED_PROXIES": "127.0.0.1/32",
    "ANON_RATE_LIMIT_PER_SECOND": "20",
    "ANON_RATE_LIMIT_BURST": "200",
    "LOG_LEVEL": "INFO",
    # small enough that a test can fill the media edge's cache ten times over
    "MEDIA_CACHE_MAX_BYTES": str(32 * 1024 * 1024),
}


def session_env() -> dict[str, str]:
    """The environment of every stack a test starts."""
    return ephemeral_env() | TEST_ENV


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    data_dir = tmp_path_factory.mktemp("stack")
    topo = Topology.ephemeral(Path(data_dir), INSTANCES)
    s = Stack(topo, session_env(), durable=False)
    s.start()
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture
def edge(stack: Stack) -> Iterator[Http]:
    client = Http(stack.topo.edge_port)
    yield client
    client.close()


@pytest.fixture(scope="session")
def edge_channel(stack: Stack) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(f"127.0.0.1:{stack.topo.edge_port}") as channel:
        yield channel


InternalChannels = Callable[[pki.Identity], grpc.Channel]


@pytest.fixture(scope="session")
def internal(stack: Stack) -> Iterator[InternalChannels]:
    """Channels to the internal listener as a mesh identity (mutual TLS): ``internal(pki.X)``.
    A test module names the identity its calls need in its own ``internal_channel`` fixture,
    as RBAC allows each method only to its callers."""
    channels: dict[str, grpc.Channel] = {}

    def channel(identity: pki.Identity) -> grpc.Channel:
        if identity.name not in channels:
            target = f"127.0.0.1:{stack.topo.internal_port}"
            channels[identity.name] = mesh_channel(stack.settings, target, identity)
        return channels[identity.name]

    yield channel
    for c in channels.values():
        c.close()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Each phase's report on the test item (``item.rep_call``): fixtures see whether it failed."""
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report
