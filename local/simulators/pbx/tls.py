"""Throw-away certificates for the PBX simulator's HTTPS mode (``PbxSimulator(tls=...)``).

A CA of its own (not a public one) is what a client's CA-bundle setting is tested against.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

__all__ = ["TlsFiles", "make_self_signed"]


@dataclass(frozen=True)
class TlsFiles:
    """PEM files for the HTTPS mode.

    ``cert_path`` holds the server certificate followed by its CA (the chain the server
    sends), ``key_path`` the server key, ``ca_path`` the CA certificate alone: give
    ``ca_path`` (or ``cert_path``) to a client as its CA bundle.
    """

    cert_path: Path
    key_path: Path
    ca_path: Path


def make_self_signed(tmpdir: str | Path, hostname: str = "127.0.0.1") -> TlsFiles:
    """Create a throw-away CA and a server certificate for ``hostname`` in ``tmpdir``.

    The server certificate has CN ``hostname`` and SANs for ``hostname``, 127.0.0.1 and
    ``localhost``.  A separate CA (rather than one self-signed leaf) keeps strict verifiers
    (Python 3.13's ``VERIFY_X509_STRICT``) happy.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    out = Path(tmpdir)
    out.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    not_before, not_after = now - dt.timedelta(days=1), now + dt.timedelta(days=30)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "callvault PBX simulator CA")])
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ca_ski, critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    try:
        host_ip = ipaddress.ip_address(hostname)
        if str(host_ip) != "127.0.0.1":
            sans.append(x509.IPAddress(host_ip))
    except ValueError:
        if hostname != "localhost":
            sans.append(x509.DNSName(hostname))
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    ca_pem = ca_cert.public_bytes(serialization.Encoding.PEM)
    files = TlsFiles(out / "pbx-cert.pem", out / "pbx-key.pem", out / "pbx-ca.pem")
    files.ca_path.write_bytes(ca_pem)
    files.cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM) + ca_pem)
    files.key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return files
