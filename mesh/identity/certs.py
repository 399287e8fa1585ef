"""The X.509-SVID profile: keys, CSRs, issuing, chain verification with SPIFFE-id extraction."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from mesh.errors import IdentityError
from mesh.identity.spiffe import Identity, NodeId, SpiffeId, parse_identity

DEFAULT_LIFETIME = dt.timedelta(hours=24)
MIN_LIFETIME = dt.timedelta(minutes=1)
MAX_LIFETIME = dt.timedelta(days=90)
BACKDATE = dt.timedelta(minutes=2)
ROOT_LIFETIME = dt.timedelta(days=3650)
INTERMEDIATE_LIFETIME = dt.timedelta(days=365)

PrivateKey = ec.EllipticCurvePrivateKey


def utcnow() -> dt.datetime:
    """The current time, timezone-aware."""
    return dt.datetime.now(dt.UTC)


def generate_key() -> PrivateKey:
    """A fresh ECDSA P-256 key."""
    return ec.generate_private_key(ec.SECP256R1())


def key_to_pem(key: PrivateKey) -> bytes:
    """PKCS#8 PEM, unencrypted (callers protect the file mode)."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def key_from_pem(data: bytes) -> PrivateKey:
    """Load a P-256 private key from PEM."""
    key = serialization.load_pem_private_key(data, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise IdentityError("private key is not an ECDSA key")
    return key


def cert_to_pem(cert: x509.Certificate) -> str:
    """One certificate as a PEM string."""
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def certs_from_pem(data: str | bytes) -> list[x509.Certificate]:
    """Every certificate in a PEM bundle, in order."""
    raw = data.encode() if isinstance(data, str) else data
    try:
        return x509.load_pem_x509_certificates(raw)
    except ValueError as exc:
        raise IdentityError(f"invalid PEM certificate bundle: {exc}") from exc


def build_csr(key: PrivateKey, identity: Identity) -> str:
    """A PEM CSR with an empty subject and one critical URI SAN, as ztunnel sends."""
    san = x509.SubjectAlternativeName([x509.UniformResourceIdentifier(identity.uri)])
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([]))
        .add_extension(san, critical=True)
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM).decode()


def csr_identity(csr_pem: str) -> tuple[Identity, ec.EllipticCurvePublicKey]:
    """The SPIFFE id (workload or node) and P-256 key a CSR asks for; checks its signature."""
    try:
        csr = x509.load_pem_x509_csr(csr_pem.encode())
    except ValueError as exc:
        raise IdentityError(f"invalid CSR: {exc}") from exc
    if not csr.is_signature_valid:
        raise IdentityError("CSR signature is invalid")
    public = csr.public_key()
    if not isinstance(public, ec.EllipticCurvePublicKey) or public.curve.name != "secp256r1":
        raise IdentityError("CSR key must be ECDSA P-256")
    try:
        san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound as exc:
        raise IdentityError("CSR has no subjectAltName") from exc
    uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    if len(uris) != 1:
        raise IdentityError(f"CSR must carry exactly one URI SAN, found {len(uris)}")
    return parse_identity(uris[0]), public


def _ski(public: ec.EllipticCurvePublicKey) -> x509.SubjectKeyIdentifier:
    return x509.SubjectKeyIdentifier.from_public_key(public)


def create_root(
    trust_domain: str, key: PrivateKey, now: dt.datetime | None = None
) -> x509.Certificate:
    """A self-signed root CA certificate for the trust domain."""
    now = now or utcnow()
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, trust_domain),
            x509.NameAttribute(NameOID.COMMON_NAME, f"ambient root CA {trust_domain}"),
        ]
    )
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + ROOT_LIFETIME)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(_ca_key_usage(), critical=True)
        .add_extension(_ski(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )


def create_intermediate(
    trust_domain: str,
    key: PrivateKey,
    root: x509.Certificate,
    root_key: PrivateKey,
    now: dt.datetime | None = None,
) -> x509.Certificate:
    """An intermediate CA certificate signed by the root."""
    now = now or utcnow()
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, trust_domain),
            x509.NameAttribute(NameOID.COMMON_NAME, f"ambient intermediate CA {trust_domain}"),
        ]
    )
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(root.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(min(now + INTERMEDIATE_LIFETIME, root.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_ca_key_usage(), critical=True)
        .add_extension(_ski(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(root_key.public_key()),
            critical=False,
        )
        .sign(root_key, hashes.SHA256())
    )


def _ca_key_usage() -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=True,
        crl_sign=True,
        encipher_only=False,
        decipher_only=False,
    )


def clamp_lifetime(requested: dt.timedelta | None) -> dt.timedelta:
    """CA TTL rules: none or <= 0 means 24 h; below 1 min or above 90 days is an error."""
    if requested is None or requested <= dt.timedelta(0):
        return DEFAULT_LIFETIME
    if requested < MIN_LIFETIME:
        raise IdentityError(f"validity {requested} is shorter than the minimum {MIN_LIFETIME}")
    if requested > MAX_LIFETIME:
        raise IdentityError(f"validity {requested} exceeds the maximum {MAX_LIFETIME}")
    return requested


@dataclass(frozen=True, slots=True)
class Signer:
    """A CA certificate and key that sign leaves."""

    cert: x509.Certificate
    key: PrivateKey


def issue_svid(
    identity: Identity,
    public_key: ec.EllipticCurvePublicKey,
    signer: Signer,
    lifetime: dt.timedelta = DEFAULT_LIFETIME,
    now: dt.datetime | None = None,
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
) -> x509.Certificate:
    """Sign an X.509-SVID leaf: empty subject, critical URI SAN, EKU server+client auth.

    A node identity gets client auth only: it authenticates the ztunnel to the CA and can never
    serve HBONE.
    """
    now = now or utcnow()
    start = not_before or now - BACKDATE
    end = not_after or now + lifetime
    end = min(end, signer.cert.not_valid_after_utc)
    usage = x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=True,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=False,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )
    purposes = [ExtendedKeyUsageOID.CLIENT_AUTH]
    if not isinstance(identity, NodeId):
        purposes.insert(0, ExtendedKeyUsageOID.SERVER_AUTH)
    eku = x509.ExtendedKeyUsage(purposes)
    san = x509.SubjectAlternativeName([x509.UniformResourceIdentifier(identity.uri)])
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([]))
        .issuer_name(signer.cert.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(usage, critical=True)
        .add_extension(eku, critical=False)
        .add_extension(san, critical=True)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(signer.key.public_key()),
            critical=False,
        )
        .sign(signer.key, hashes.SHA256())
    )


def leaf_identity(cert: x509.Certificate) -> Identity:
    """The single SPIFFE URI SAN of a leaf certificate (workload or node)."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound as exc:
        raise IdentityError("certificate has no subjectAltName") from exc
    uris = [u for u in san.get_values_for_type(x509.UniformResourceIdentifier)]
    if len(uris) != 1:
        raise IdentityError(f"certificate must carry exactly one URI SAN, found {len(uris)}")
    return parse_identity(uris[0])


def svid_identity(cert: x509.Certificate) -> SpiffeId:
    """The workload SPIFFE id of a leaf; a node certificate is refused."""
    identity = leaf_identity(cert)
    if not isinstance(identity, SpiffeId):
        raise IdentityError(f"{identity} is a node identity, not a workload's")
    return identity


def svid_identity_der(der: bytes) -> SpiffeId:
    """The SPIFFE id of a DER leaf, as ``ssl`` hands peer certificates over."""
    return svid_identity(x509.load_der_x509_certificate(der))


def verify_chain(
    chain: list[x509.Certificate],
    roots: list[x509.Certificate],
    now: dt.datetime | None = None,
) -> Identity:
    """Verify leaf-first ``chain`` up to one of ``roots`` and return the leaf's SPIFFE id."""
    if not chain:
        raise IdentityError("empty certificate chain")
    now = now or utcnow()
    root_der = {r.public_bytes(serialization.Encoding.DER) for r in roots}
    path = list(chain)
    if path[-1].public_bytes(serialization.Encoding.DER) not in root_der:
        issuer = _find_issuer(path[-1], roots)
        if issuer is None:
            raise IdentityError("certificate chain does not lead to a trusted root")
        path.append(issuer)
    for index, cert in enumerate(path):
        if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
            raise IdentityError(f"certificate {index} in the chain is expired or not yet valid")
        if index > 0:
            constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
            if not constraints.ca:
                raise IdentityError(f"certificate {index} in the chain is not a CA")
            try:
                path[index - 1].verify_directly_issued_by(cert)
            except (ValueError, TypeError) as exc:
                raise IdentityError(f"certificate {index - 1} is not signed by its issuer") from exc
            except Exception as exc:
                raise IdentityError(f"certificate {index - 1} has an invalid signature") from exc
    leaf_constraints = path[0].extensions.get_extension_for_class(x509.BasicConstraints).value
    if leaf_constraints.ca:
        raise IdentityError("leaf certificate is a CA")
    return leaf_identity(path[0])


def _find_issuer(cert: x509.Certificate, roots: list[x509.Certificate]) -> x509.Certificate | None:
    for root in roots:
        if root.subject != cert.issuer:
            continue
        try:
            cert.verify_directly_issued_by(root)
        except Exception:
            continue
        return root
    return None
