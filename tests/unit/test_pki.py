"""The mesh CA's certificates: who may serve, and the names they carry."""

from __future__ import annotations

from pathlib import Path

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from mesh import pki


def _cert(pki_dir: Path, identity: pki.Identity) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pki.files(pki_dir, identity).cert.read_bytes())


def test_only_servers_may_serve_and_only_the_listener_has_its_name(tmp_path: Path) -> None:
    pki.ensure_pki(tmp_path)
    for identity in pki.IDENTITIES:
        cert = _cert(tmp_path, identity)
        usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        assert ExtendedKeyUsageOID.CLIENT_AUTH in usages
        assert (ExtendedKeyUsageOID.SERVER_AUTH in usages) == (identity in pki.SERVERS)
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        dns = names.get_values_for_type(x509.DNSName)
        assert (pki.INTERNAL_NAME in dns) == (identity == pki.INTERNAL)
    assert pki.DEVELOPER not in pki.SERVERS and pki.IMPORTER not in pki.SERVERS
    # the CA is kept across runs; leaves are issued afresh
    ca = (tmp_path / "ca.pem").read_bytes()
    leaf = pki.files(tmp_path, pki.DEVELOPER).cert.read_bytes()
    pki.ensure_pki(tmp_path)
    assert (tmp_path / "ca.pem").read_bytes() == ca
    assert pki.files(tmp_path, pki.DEVELOPER).cert.read_bytes() != leaf
