"""The X.509-SVID certificate profile, CSRs and chain verification."""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from mesh.errors import IdentityError
from mesh.identity import SpiffeId, certs

IDENT = SpiffeId("cluster.local", "default", "sleep")


@pytest.fixture(scope="module")
def signer() -> certs.Signer:
    key = certs.generate_key()
    return certs.Signer(certs.create_root("cluster.local", key), key)


def _leaf(signer: certs.Signer, **kwargs: object) -> x509.Certificate:
    key = certs.generate_key()
    return certs.issue_svid(IDENT, key.public_key(), signer, **kwargs)  # type: ignore[arg-type]


def test_leaf_profile(signer: certs.Signer) -> None:
    now = certs.utcnow()
    leaf = _leaf(signer, now=now)
    assert isinstance(leaf.public_key(), ec.EllipticCurvePublicKey)
    assert leaf.public_key().curve.name == "secp256r1"  # type: ignore[union-attr]
    assert leaf.subject == x509.Name([])
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert san.critical
    assert san.value.get_values_for_type(x509.UniformResourceIdentifier) == [IDENT.uri]
    assert len(list(san.value)) == 1
    eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(eku) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    usage = leaf.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.digital_signature and not usage.key_cert_sign and not usage.crl_sign
    assert not leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    backdate = now - leaf.not_valid_before_utc
    assert dt.timedelta(minutes=1) <= backdate <= dt.timedelta(minutes=3)
    lifetime = leaf.not_valid_after_utc - now
    assert abs(lifetime - dt.timedelta(hours=24)) < dt.timedelta(seconds=2)


def test_short_lifetime(signer: certs.Signer) -> None:
    now = certs.utcnow()
    leaf = _leaf(signer, now=now, lifetime=dt.timedelta(minutes=1))
    assert abs((leaf.not_valid_after_utc - now) - dt.timedelta(minutes=1)) < dt.timedelta(seconds=2)


def test_clamp_lifetime() -> None:
    assert certs.clamp_lifetime(None) == certs.DEFAULT_LIFETIME
    assert certs.clamp_lifetime(dt.timedelta(0)) == certs.DEFAULT_LIFETIME
    assert certs.clamp_lifetime(dt.timedelta(minutes=5)) == dt.timedelta(minutes=5)
    with pytest.raises(IdentityError):
        certs.clamp_lifetime(dt.timedelta(seconds=10))
    with pytest.raises(IdentityError):
        certs.clamp_lifetime(dt.timedelta(days=91))


def test_root_profile(signer: certs.Signer) -> None:
    root = signer.cert
    assert root.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert root.extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign
    assert root.not_valid_after_utc - root.not_valid_before_utc > dt.timedelta(days=3600)


def test_csr_round_trip() -> None:
    key = certs.generate_key()
    pem = certs.build_csr(key, IDENT)
    csr = x509.load_pem_x509_csr(pem.encode())
    assert csr.subject == x509.Name([])
    assert csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).critical
    ident, public = certs.csr_identity(pem)
    assert ident == IDENT
    assert public.public_numbers() == key.public_key().public_numbers()


def test_csr_rejects_rsa_and_missing_san() -> None:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.hazmat.primitives.serialization import Encoding

    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    san = x509.SubjectAlternativeName([x509.UniformResourceIdentifier(IDENT.uri)])
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([]))
        .add_extension(san, critical=True)
        .sign(rsa_key, hashes.SHA256())
    )
    with pytest.raises(IdentityError, match="P-256"):
        certs.csr_identity(csr.public_bytes(Encoding.PEM).decode())
    ec_key = certs.generate_key()
    bare = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([]))
        .sign(ec_key, hashes.SHA256())
    )
    with pytest.raises(IdentityError, match="subjectAltName"):
        certs.csr_identity(bare.public_bytes(Encoding.PEM).decode())


def test_verify_chain(signer: certs.Signer) -> None:
    leaf = _leaf(signer)
    assert certs.verify_chain([leaf], [signer.cert]) == IDENT
    assert certs.verify_chain([leaf, signer.cert], [signer.cert]) == IDENT


def test_verify_chain_with_intermediate(signer: certs.Signer) -> None:
    ikey = certs.generate_key()
    inter = certs.create_intermediate("cluster.local", ikey, signer.cert, signer.key)
    leaf = _leaf(certs.Signer(inter, ikey))
    assert certs.verify_chain([leaf, inter], [signer.cert]) == IDENT
    with pytest.raises(IdentityError):
        certs.verify_chain([leaf], [signer.cert])


def test_verify_chain_rejects_other_root_and_expired(signer: certs.Signer) -> None:
    other_key = certs.generate_key()
    other = certs.create_root("cluster.local", other_key)
    leaf = _leaf(signer)
    with pytest.raises(IdentityError, match="trusted root"):
        certs.verify_chain([leaf], [other])
    now = certs.utcnow()
    expired = _leaf(
        signer, not_before=now - dt.timedelta(hours=2), not_after=now - dt.timedelta(hours=1)
    )
    with pytest.raises(IdentityError, match="expired"):
        certs.verify_chain([expired], [signer.cert])
