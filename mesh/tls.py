"""Mutual TLS on the mesh's gRPC: credentials from an identity's files, and who a peer is.

Every service port and the internal Envoy listener take only TLS connections whose client
certificate the mesh CA issued (``mesh.pki``). On a service port, what a caller may do depends
on its identity (``PeerPolicy``): the two Envoys may call every method and assert the user
(``x-user-id``, ``x-session-id``); the developer identity may call health, reflection and the
public methods, as an anonymous caller; anyone else is refused. Which service may call which
method through the internal listener is Envoy's RBAC (stack/envoy_config.py).

``MESH_TLS=0`` turns all of it off (plaintext, every caller trusted): only for measuring what
TLS costs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import grpc

from mesh import pki
from mesh.errors import PermissionDenied

# peers that assert the user: the edge (from the verified JWT) and the internal listener (from
# the calling service, itself admitted by RBAC)
PROXIES = frozenset({pki.EDGE.spiffe_id, pki.INTERNAL.spiffe_id})


def _material(pki_dir: Path, identity: pki.Identity) -> tuple[bytes, bytes, bytes]:
    f = pki.files(pki_dir, identity)
    return f.ca.read_bytes(), f.cert.read_bytes(), f.key.read_bytes()


def server_credentials(pki_dir: Path, identity: pki.Identity) -> grpc.ServerCredentials:
    """TLS as ``identity``, requiring a client certificate from the mesh CA."""
    ca, cert, key = _material(pki_dir, identity)
    return grpc.ssl_server_credentials(
        [(key, cert)], root_certificates=ca, require_client_auth=True
    )


def channel_credentials(pki_dir: Path, identity: pki.Identity) -> grpc.ChannelCredentials:
    """TLS as ``identity`` to a server whose certificate the mesh CA issued."""
    ca, cert, key = _material(pki_dir, identity)
    return grpc.ssl_channel_credentials(ca, private_key=key, certificate_chain=cert)


def peer_id(context: grpc.aio.ServicerContext[Any, Any]) -> str | None:
    """The SPIFFE ID of the peer's verified certificate; None without one (plaintext)."""
    values = list(context.auth_context().get("peer_spiffe_id") or ())
    return values[0].decode() if values else None


class PeerPolicy:
    """Who may call what on a service port, by the peer's certificate."""

    def __init__(self, public_methods: frozenset[str]) -> None:
        self.public_methods = public_methods

    def admit(self, method: str, context: grpc.aio.ServicerContext[Any, Any]) -> bool:
        """Whether the call may go ahead asserting a user (True) or only as an anonymous
        caller (False); PERMISSION_DENIED when it may not go ahead at all."""
        peer = peer_id(context)
        if peer in PROXIES:
            return True
        if peer == pki.DEVELOPER.spiffe_id and method in self.public_methods:
            return False
        raise PermissionDenied(
            f"{peer or 'a peer without a mesh certificate'} may not call {method} on a service"
            " port: services call each other through the internal listener"
        )
