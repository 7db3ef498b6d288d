"""HTTPS for the fake API server, as every real cluster serves it: a certificate authority made
for the test, a server certificate for 127.0.0.1 and localhost signed by it, and a client
certificate (kubeadm's admin: CN kubernetes-admin, O system:masters).

With client certificates on, the server asks each client for one (and accepts a connection
without: a real API server never refuses the handshake, tokens authenticate too); a request to
the API that carries neither a certificate signed by the CA nor a bearer token is refused 401
Unauthorized, as a server that allows no anonymous requests answers. The admin routes under
/fake/ stay open.

Files of ``Pki`` are PEM, kept in one folder a test names, so it can write kubeconfigs of its
own (certificates inline or as paths, another CA's to be refused)."""

from __future__ import annotations

import base64
import dataclasses
import datetime
import ipaddress
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.kube_fake.faults import ADMIN_PREFIX
from tests.kube_fake.meta import Obj

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
CLIENT_NAME = "kubernetes-admin"


@dataclasses.dataclass(frozen=True)
class Pki:
    folder: Path

    @property
    def ca_cert(self) -> Path:
        return self.folder / "ca.crt"

    @property
    def server_cert(self) -> Path:
        return self.folder / "server.crt"

    @property
    def server_key(self) -> Path:
        return self.folder / "server.key"

    @property
    def client_cert(self) -> Path:
        return self.folder / "client.crt"

    @property
    def client_key(self) -> Path:
        return self.folder / "client.key"


def _name(common: str, org: str | None = None) -> x509.Name:
    parts = [x509.NameAttribute(NameOID.COMMON_NAME, common)]
    if org:
        parts.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
    return x509.Name(parts)


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )


def _signed(
    subject: x509.Name,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Name,
    issuer_key: ec.EllipticCurvePrivateKey,
    extensions: list[tuple[x509.ExtensionType, bool]],
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
    )
    for extension, critical in extensions:
        builder = builder.add_extension(extension, critical=critical)
    return builder.sign(issuer_key, hashes.SHA256())


def make_pki(folder: Path, name: str = "kube-fake-ca") -> Pki:
    """A CA named ``name`` and the server's and a client's certificates it signs, in
    ``folder`` (made; files already there are replaced)."""
    folder.mkdir(parents=True, exist_ok=True)
    pki = Pki(folder)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name(name)
    ca = _signed(
        ca_name,
        ca_key,
        ca_name,
        ca_key,
        [
            (x509.BasicConstraints(ca=True, path_length=None), True),
            (x509.KeyUsage(False, False, False, False, False, True, True, False, False), True),
        ],
    )
    leaf_usage = x509.KeyUsage(True, False, True, False, False, False, False, False, False)
    server_key = ec.generate_private_key(ec.SECP256R1())
    server = _signed(
        _name("kube-apiserver"),
        server_key,
        ca_name,
        ca_key,
        [
            (x509.BasicConstraints(ca=False, path_length=None), True),
            (leaf_usage, True),
            (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False),
            (
                x509.SubjectAlternativeName(
                    [
                        x509.DNSName("localhost"),
                        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                    ]
                ),
                False,
            ),
        ],
    )
    client_key = ec.generate_private_key(ec.SECP256R1())
    client = _signed(
        _name(CLIENT_NAME, "system:masters"),
        client_key,
        ca_name,
        ca_key,
        [
            (x509.BasicConstraints(ca=False, path_length=None), True),
            (leaf_usage, True),
            (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), False),
        ],
    )
    pem = serialization.Encoding.PEM
    pki.ca_cert.write_bytes(ca.public_bytes(pem))
    pki.server_cert.write_bytes(server.public_bytes(pem))
    pki.client_cert.write_bytes(client.public_bytes(pem))
    for path, key in ((pki.server_key, server_key), (pki.client_key, client_key)):
        path.touch(mode=0o600)
        path.write_bytes(_pem_key(key))
    return pki


def server_context(pki: Pki, *, client_certs: bool) -> ssl.SSLContext:
    """The server's TLS: its certificate; with ``client_certs``, a client's certificate is
    asked for and checked against the CA when given."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(pki.server_cert, pki.server_key)
    if client_certs:
        context.load_verify_locations(cafile=pki.ca_cert)
        context.verify_mode = ssl.CERT_OPTIONAL
    return context


def client_context(ca_pem: str) -> ssl.SSLContext:
    """A client's TLS trusting only the CA of ``ca_pem`` (the admin knobs' requests)."""
    return ssl.create_default_context(cadata=ca_pem)


def _data(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def secure(config: Obj, pki: Pki, *, client_certs: bool, inline: bool = True) -> Obj:
    """``config`` (a kubeconfig of one cluster and user) trusting ``pki``'s CA; with
    ``client_certs`` its user is the client certificate (no token). ``inline``: the PEM files
    as ``*-data`` (base64, as kubeadm and cloud CLIs write them), else as paths."""
    cluster = config["clusters"][0]["cluster"]
    user = config["users"][0]["user"]
    if inline:
        cluster["certificate-authority-data"] = _data(pki.ca_cert)
    else:
        cluster["certificate-authority"] = str(pki.ca_cert)
    if client_certs:
        user.pop("token", None)
        if inline:
            user["client-certificate-data"] = _data(pki.client_cert)
            user["client-key-data"] = _data(pki.client_key)
        else:
            user["client-certificate"] = str(pki.client_cert)
            user["client-key"] = str(pki.client_key)
    return config


def certificates_or_tokens() -> Callable[..., Awaitable[web.StreamResponse]]:
    """The authenticator of a server with client certificates on (see the module's text)."""

    @web.middleware
    async def authenticated(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith(ADMIN_PREFIX) or request.headers.get("Authorization"):
            return await handler(request)  # a wrong token is `bearer_tokens`'s to refuse
        transport = request.transport
        peer = transport.get_extra_info("peercert") if transport is not None else None
        if peer:  # given, and signed by the CA (the handshake checked it)
            return await handler(request)
        status = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": "Unauthorized",
            "reason": "Unauthorized",
            "code": 401,
        }
        return web.json_response(status, status=401)

    return authenticated
