"""Where everything listens: one object the launcher, the Envoy generator and the tests share.

``Topology.local`` gives the fixed, documented ports of ``make run``; ``Topology.ephemeral``
gives free ports for a test session, so tests never collide with a running stack.
"""

from __future__ import annotations

import socket
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from mesh.settings import SERVICES, ServiceSpec

HOST = "127.0.0.1"


@dataclass(frozen=True)
class Instance:
    """One process of a service."""

    spec: ServiceSpec
    index: int
    grpc_port: int
    metrics_port: int

    @property
    def name(self) -> str:
        return f"{self.spec.package}-{self.index}"


@dataclass(frozen=True)
class SeaweedPorts:
    master: int
    master_grpc: int
    volume: int
    volume_grpc: int
    filer: int
    filer_grpc: int
    s3: int
    s3_grpc: int


@dataclass(frozen=True)
class Topology:
    data_dir: Path
    postgres_port: int
    replica_port: int  # the streaming replica (hot standby) of that Postgres
    redis_port: int
    redis_cluster_ports: tuple[int, int]  # the other two nodes when REDIS_CLUSTER=1
    redis_bus_ports: tuple[int, int, int]  # the three nodes' cluster bus
    seaweed: SeaweedPorts
    edge_port: int
    internal_port: int
    edge_admin_port: int
    internal_admin_port: int
    media_port: int  # the media edge (nginx): the CDN stand-in in front of storage
    media_metrics_port: int  # its hit/miss/bytes counters for Prometheus
    instances: tuple[Instance, ...]

    def instances_of(self, service: str) -> tuple[Instance, ...]:
        return tuple(i for i in self.instances if i.spec.name == service)

    @classmethod
    def local(cls, data_dir: Path, counts: Mapping[str, int]) -> Topology:
        """The ports of ``make run``; instance k of a service adds 100·k to its default ports."""
        instances = tuple(
            Instance(spec, k, spec.grpc_port + 100 * k, spec.metrics_port + 100 * k)
            for spec in SERVICES
            for k in range(counts.get(spec.name, 1))
        )
        return cls(
            data_dir=data_dir,
            postgres_port=54320,
            replica_port=54321,
            redis_port=63790,
            redis_cluster_ports=(63791, 63792),
            redis_bus_ports=(63793, 63794, 63795),
            seaweed=SeaweedPorts(9333, 19333, 9340, 19340, 8888, 18888, 8333, 18333),
            edge_port=8080,
            internal_port=8081,
            edge_admin_port=9901,
            internal_admin_port=9902,
            media_port=8090,
            media_metrics_port=9155,
            instances=instances,
        )

    @classmethod
    def ephemeral(cls, data_dir: Path, counts: Mapping[str, int]) -> Topology:
        """Free ports for every listener (a test session next to a running ``make run``)."""
        n_instances = sum(counts.get(s.name, 1) for s in SERVICES)
        ports = iter(free_ports(8 + 8 + 6 + 2 * n_instances))
        instances = tuple(
            Instance(spec, k, next(ports), next(ports))
            for spec in SERVICES
            for k in range(counts.get(spec.name, 1))
        )
        return cls(
            data_dir=data_dir,
            postgres_port=next(ports),
            replica_port=next(ports),
            redis_port=next(ports),
            redis_cluster_ports=(next(ports), next(ports)),
            redis_bus_ports=(next(ports), next(ports), next(ports)),
            seaweed=SeaweedPorts(*(next(ports) for _ in range(8))),
            edge_port=next(ports),
            internal_port=next(ports),
            edge_admin_port=next(ports),
            internal_admin_port=next(ports),
            media_port=next(ports),
            media_metrics_port=next(ports),
            instances=instances,
        )


def free_ports(n: int) -> list[int]:
    """``n`` distinct ports that were free on 127.0.0.1 a moment ago."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((HOST, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()
