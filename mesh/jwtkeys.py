"""The access-token signing keys (Ed25519) and the JWKS Envoy verifies tokens with.

activity_svc signs with the current private key; Envoy's jwt_authn filter reads the public
halves of the current and the previous key as a local JWKS file, and picks one by the token's
``kid``. Rotating makes the current key the previous one and a new key current, so tokens signed
before the rotation stay valid until they expire and nobody is signed out. Locally the launcher
creates the first key on first run under ``.data/jwt/``.
"""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from mesh.keyfiles import ensure_secret_file

ALGORITHM = "EdDSA"


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def ensure_signing_key(path: Path) -> None:
    """Creates an Ed25519 private key at ``path`` (mode 0600) unless one is there."""
    ensure_secret_file(
        path,
        lambda: Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )


def load_signing_key(path: Path) -> Ed25519PrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{path}: expected an Ed25519 private key (PKCS#8 PEM)")
    return key


def public_jwk(key: Ed25519PrivateKey) -> dict[str, str]:
    """The public JWK of ``key``; ``kid`` is its RFC 7638 thumbprint."""
    x = _b64url(
        key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    )
    canonical = json.dumps({"crv": "Ed25519", "kty": "OKP", "x": x}, separators=(",", ":"))
    kid = _b64url(hashlib.sha256(canonical.encode()).digest())
    return {"kty": "OKP", "crv": "Ed25519", "x": x, "kid": kid, "alg": ALGORITHM, "use": "sig"}


def rotate_signing_key(current: Path, previous: Path) -> str:
    """Makes ``current`` the previous key (replacing the one before it, whose tokens have
    expired if the last rotation was more than a token lifetime ago) and a new key current;
    returns the new key's ``kid``."""
    previous.parent.mkdir(parents=True, exist_ok=True)
    current.replace(previous)
    ensure_signing_key(current)
    return public_jwk(load_signing_key(current))["kid"]


def write_jwks(private_key_file: Path, jwks_file: Path, previous_key_file: Path | None) -> None:
    """Writes the JWKS of the current key and, when the file exists, the previous one."""
    jwks_file.parent.mkdir(parents=True, exist_ok=True)
    files = [private_key_file]
    if previous_key_file is not None and previous_key_file.exists():
        files.append(previous_key_file)
    jwks = {"keys": [public_jwk(load_signing_key(f)) for f in files]}
    jwks_file.write_text(json.dumps(jwks, indent=2) + "\n")
