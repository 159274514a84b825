"""The mesh's own certificate authority and the identities it issues, for mutual TLS between
Envoy and every service.

Under ``$DATA_DIR/pki/``: ``ca.pem`` and ``ca-key.pem`` (made once, ten years), and for each
identity ``NAME.pem`` and ``NAME-key.pem``, issued afresh by every start of the stack (valid 30
days; rotation is re-running). An identity is a SPIFFE ID in a URI SAN
(``spiffe://tiktok.local/svc/activity``); certificates also name ``localhost`` and 127.0.0.1,
so a tool that dials a local port verifies the server by the address it dialled. Only servers
(the services, the internal listener) get the serverAuth usage, and only the internal listener
is named ``envoy-internal.tiktok.local``, the name services verify it by. In production any
SPIFFE-style CA can issue the same files.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from mesh.keyfiles import ensure_secret_file
from mesh.settings import SERVICES

TRUST_DOMAIN = "tiktok.local"
CA_DAYS = 3650
LEAF_DAYS = 30


@dataclass(frozen=True)
class Identity:
    name: str  # the file stem: developer.pem, developer-key.pem
    path: str  # the SPIFFE path: developer, svc/activity

    @property
    def spiffe_id(self) -> str:
        return f"spiffe://{TRUST_DOMAIN}/{self.path}"


SERVICE_IDENTITIES = {s.name: Identity(s.name, f"svc/{s.name}") for s in SERVICES}
EDGE = Identity("envoy-edge", "envoy/edge")
INTERNAL = Identity("envoy-internal", "envoy/internal")
# grpcurl and the like on service ports: health, reflection and public methods, as nobody
DEVELOPER = Identity("developer", "developer")
# operators' bulk tools: the internal UploadVideo, on behalf of a user they name
IMPORTER = Identity("importer", "tool/importer")
IDENTITIES = (*SERVICE_IDENTITIES.values(), EDGE, INTERNAL, DEVELOPER, IMPORTER)
# the identities that serve TLS (the others only connect): only their certificates may be
# presented by a server, so a developer or importer key cannot pose as a service
SERVERS = (*SERVICE_IDENTITIES.values(), INTERNAL)
# the name services verify the internal listener by (grpc.ssl_target_name_override): only its
# certificate carries it, so no other mesh identity can stand in for the listener
INTERNAL_NAME = f"envoy-internal.{TRUST_DOMAIN}"


@dataclass(frozen=True)
class Files:
    """Where one identity's certificate and key are, and the CA that vouches for them."""

    ca: Path
    cert: Path
    key: Path


def files(pki_dir: Path, identity: Identity) -> Files:
    return Files(
        pki_dir / "ca.pem", pki_dir / f"{identity.name}.pem", pki_dir / f"{identity.name}-key.pem"
    )


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _write(path: Path, data: bytes, mode: int) -> None:
    """Replaces ``path`` atomically: a process reading it sees the old file or the new one."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    tmp.replace(path)


_CA_USAGE = x509.KeyUsage(
    digital_signature=False,
    content_commitment=False,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=False,
    key_cert_sign=True,
    crl_sign=True,
    encipher_only=False,
    decipher_only=False,
)


def _ca_certificate(key: ec.EllipticCurvePrivateKey) -> bytes:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{TRUST_DOMAIN} mesh CA")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_CA_USAGE, critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


def ensure_ca(pki_dir: Path) -> None:
    """Makes the CA on first run (its key mode 0600); an existing CA is kept."""
    key_file = pki_dir / "ca-key.pem"
    ensure_secret_file(key_file, lambda: _pem_key(ec.generate_private_key(ec.SECP256R1())))
    cert_file = pki_dir / "ca.pem"
    if not cert_file.exists():
        _write(cert_file, _ca_certificate(_load_key(key_file)), 0o644)


def _load_key(path: Path) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"{path}: expected an EC private key")
    return key


def issue(pki_dir: Path, identity: Identity, days: int = LEAF_DAYS) -> Files:
    """Issues ``identity`` a new key and certificate from the CA (which must exist)."""
    ca_key = _load_key(pki_dir / "ca-key.pem")
    ca_cert = x509.load_pem_x509_certificate((pki_dir / "ca.pem").read_bytes())
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    sans: list[x509.GeneralName] = [
        x509.UniformResourceIdentifier(identity.spiffe_id),
        x509.DNSName("localhost"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
    ]
    if identity == INTERNAL:
        sans.append(x509.DNSName(INTERNAL_NAME))
    usages = [ExtendedKeyUsageOID.CLIENT_AUTH]
    if identity in SERVERS:
        usages.append(ExtendedKeyUsageOID.SERVER_AUTH)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, identity.name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    out = files(pki_dir, identity)
    _write(out.key, _pem_key(key), 0o600)
    _write(out.cert, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    return out


def ensure_pki(pki_dir: Path) -> None:
    """The CA (kept) and a fresh certificate for every identity of the mesh."""
    pki_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(pki_dir, 0o700)
    ensure_ca(pki_dir)
    for identity in IDENTITIES:
        issue(pki_dir, identity)
