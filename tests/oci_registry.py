"""A real OCI registry for tests: Debian's ``docker-registry`` (the reference distribution
server) on a free loopback port, with its own config and storage, optionally behind TLS and
htpasswd basic auth; and pushing images to it with python-dxf, a registry client library.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import json
import secrets
import ssl
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import bcrypt
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID
from dxf import DXF, DXFBase

from providers.oci_registry import DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST
from tests.helpers import wait_for
from workers import devstack
from workers.devstack import Service

REGISTRY_INSTALL = (
    "install Debian's docker-registry package, the reference OCI distribution server "
    "(apt-get install docker-registry; `make install` does it when run as root)"
)


@dataclass
class Registry:
    service: Service
    url: str  # scheme://127.0.0.1:port
    host: str  # 127.0.0.1:port
    ca_bundle: Path | None = None
    username: str | None = None
    password: str | None = None
    tokens: TokenServer | None = None

    def client(self, repository: str) -> DXF:
        """A python-dxf client for ``repository`` with this registry's credentials."""

        def auth(dxf: DXFBase, response: requests.Response) -> None:
            dxf.authenticate(self.username, self.password, response=response)

        return DXF(
            self.host,
            repository,
            auth=auth if self.username else None,
            insecure=self.url.startswith("http://"),
            tlsverify=str(self.ca_bundle) if self.ca_bundle else True,
            timeout=30,
        )

    def stop(self) -> None:
        self.service.stop()
        if self.tokens is not None:
            self.tokens.stop()


def _self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 (its own CA) and its key."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "conveyor-test-registry")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "registry.crt", directory / "registry.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


class TokenServer:
    """The registry's token service (``auth: token``), as Docker Hub's or Harbor's are: a
    client sent to ``realm`` by a ``Bearer`` challenge trades HTTP basic credentials for a
    JWT (ES256, the registry's certificate in ``x5c``) granting the scopes it asked for."""

    service = "conveyor-test-registry"
    issuer = "conveyor-test-issuer"

    def __init__(self, cert: Path, key: Path, credentials: tuple[str, str]) -> None:
        loaded = serialization.load_pem_private_key(key.read_bytes(), password=None)
        assert isinstance(loaded, ec.EllipticCurvePrivateKey)
        self._key = loaded
        self._x5c = base64.b64encode(
            x509.load_pem_x509_certificate(cert.read_bytes()).public_bytes(
                serialization.Encoding.DER
            )
        ).decode()
        self._basic = "Basic " + base64.b64encode(":".join(credentials).encode()).decode()
        self.scopes: list[str] = []  # every scope a token was issued for
        self.refused = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                query = parse_qs(urlsplit(self.path).query)
                if self.headers.get("Authorization") != server._basic:
                    server.refused += 1
                    self.send_response(401)
                    self.end_headers()
                    return
                scopes = query.get("scope", [])
                server.scopes.extend(scopes)
                body = json.dumps({"token": server.mint(scopes)}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        self._httpd.socket = context.wrap_socket(self._httpd.socket, server_side=True)
        self.realm = f"https://127.0.0.1:{self._httpd.server_address[1]}/token"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()

    def mint(self, scopes: list[str], *, lifetime: int = 300) -> str:
        """A token for ``repository:<name>:<actions>`` scopes, every action granted."""
        access = []
        for scope in scopes:
            kind, name, actions = scope.rsplit(":", 2) if scope.count(":") >= 2 else (scope, "", "")
            access.append({"type": kind, "name": name, "actions": actions.split(",")})
        now = int(time.time())
        claims = {
            "iss": self.issuer,
            "sub": "conveyor-test",
            "aud": self.service,
            "iat": now,
            "nbf": now - 5,
            "exp": now + lifetime,
            "jti": secrets.token_hex(8),
            "access": access,
        }
        header = {"typ": "JWT", "alg": "ES256", "x5c": [self._x5c]}
        signing_input = (
            f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
        )
        r, s = decode_dss_signature(
            self._key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256()))
        )
        return f"{signing_input}.{_b64url(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(5)


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def start_registry(
    workdir: Path,
    *,
    tls: bool = False,
    credentials: tuple[str, str] | None = None,
    token_auth: bool = False,
) -> Registry:
    """Start ``docker-registry serve`` on a free port. ``credentials`` turn on htpasswd
    (bcrypt) basic auth, or with ``token_auth`` a token service (:class:`TokenServer`) that
    takes them; python-dxf sends credentials over TLS only, so both go with ``tls``."""
    binary = devstack.resolve_binary("docker-registry", REGISTRY_INSTALL)
    workdir.mkdir(parents=True, exist_ok=True)
    port = devstack.free_port()
    http: dict[str, Any] = {"addr": f"127.0.0.1:{port}", "secret": "conveyor-test-only"}
    ca_bundle = None
    if tls:
        cert, key = _self_signed(workdir)
        http["tls"] = {"certificate": str(cert), "key": str(key)}
        ca_bundle = cert
    config: dict[str, Any] = {
        "version": 0.1,
        "log": {"level": "info", "accesslog": {"disabled": False}},
        "storage": {
            "filesystem": {"rootdirectory": str(workdir / "storage")},
            "delete": {"enabled": True},
        },
        "http": http,
    }
    tokens = None
    if token_auth:
        assert tls and credentials, "token auth needs tls and credentials"
        tokens = TokenServer(cert, key, credentials)
        config["auth"] = {
            "token": {
                "realm": tokens.realm,
                "service": tokens.service,
                "issuer": tokens.issuer,
                "rootcertbundle": str(cert),
            }
        }
    elif credentials:
        user, password = credentials
        hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=5)).decode()
        htpasswd = workdir / "htpasswd"
        htpasswd.write_text(f"{user}:{hashed}\n")
        config["auth"] = {"htpasswd": {"realm": "conveyor-test", "path": str(htpasswd)}}
    config_path = workdir / "config.yml"
    # JSON is YAML: no YAML writer needed for the registry's config.
    config_path.write_text(json.dumps(config, indent=2))
    scheme = "https" if tls else "http"
    service = devstack.start_process(
        "docker-registry", [binary, "serve", str(config_path)], None, workdir / "registry.log"
    )
    service.url = f"{scheme}://127.0.0.1:{port}"
    registry = Registry(
        service,
        service.url,
        f"127.0.0.1:{port}",
        ca_bundle,
        username=credentials[0] if credentials else None,
        password=credentials[1] if credentials else None,
        tokens=tokens,
    )

    def answers() -> bool:
        if service.process is not None and service.process.poll() is not None:
            raise devstack.ServiceUnavailable(
                f"docker-registry exited with {service.process.returncode}:\n{service.tail()}"
            )
        try:
            requests.get(
                service.url + "/v2/", timeout=1, verify=str(ca_bundle) if ca_bundle else True
            )
        except requests.RequestException:
            return False
        return devstack.listens(service)

    try:
        wait_for(answers, 20, interval=0.1, message=f"docker-registry on {service.url}")
    except BaseException:
        registry.stop()
        raise
    return registry


def _blob(dxf: DXF, data: bytes) -> dict[str, Any]:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    dxf.push_blob(data=iter([data]), digest=digest)
    return {"digest": digest, "size": len(data)}


def push_image(
    registry: Registry,
    repository: str,
    tag: str,
    *,
    content: bytes,
    created: str = "2024-05-06T07:08:09Z",
    media_type: str = OCI_MANIFEST,
    platform: str = "amd64",
) -> tuple[str, bytes]:
    """Push a one-layer image under ``tag``: (the manifest's digest, its bytes)."""
    manifest = _image_manifest(registry, repository, content, created, media_type, platform)
    with registry.client(repository) as dxf:
        dxf.set_manifest(tag, manifest.decode())
    return "sha256:" + hashlib.sha256(manifest).hexdigest(), manifest


def _image_manifest(
    registry: Registry,
    repository: str,
    content: bytes,
    created: str,
    media_type: str,
    platform: str,
) -> bytes:
    docker = media_type == DOCKER_MANIFEST
    config = json.dumps(
        {"architecture": platform, "os": "linux", "created": created, "rootfs": {"type": "layers"}}
    ).encode()
    with registry.client(repository) as dxf:
        layer = _blob(dxf, content)
        cfg = _blob(dxf, config)
    layer["mediaType"] = (
        "application/vnd.docker.image.rootfs.diff.tar.gzip"
        if docker
        else "application/vnd.oci.image.layer.v1.tar+gzip"
    )
    cfg["mediaType"] = (
        "application/vnd.docker.container.image.v1+json"
        if docker
        else "application/vnd.oci.image.config.v1+json"
    )
    return json.dumps(
        {"schemaVersion": 2, "mediaType": media_type, "config": cfg, "layers": [layer]}
    ).encode()


def push_index(
    registry: Registry, repository: str, tag: str, images: dict[str, bytes]
) -> tuple[str, list[int]]:
    """Push an OCI index of one image per platform (name -> layer content) under ``tag``:
    (the index's digest, each image's compressed size: layer plus config)."""
    entries, sizes = [], []
    for platform, content in images.items():
        manifest = _image_manifest(
            registry, repository, content, "2024-01-01T00:00:00Z", OCI_MANIFEST, platform
        )
        digest = "sha256:" + hashlib.sha256(manifest).hexdigest()
        parsed = json.loads(manifest)
        sizes.append(parsed["layers"][0]["size"] + parsed["config"]["size"])
        with registry.client(repository) as dxf:
            dxf.set_manifest(digest, manifest.decode())
        entries.append(
            {
                "mediaType": OCI_MANIFEST,
                "digest": digest,
                "size": len(manifest),
                "platform": {"architecture": platform, "os": "linux"},
            }
        )
    index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}).encode()
    with registry.client(repository) as dxf:
        dxf.set_manifest(tag, index.decode())
    return "sha256:" + hashlib.sha256(index).hexdigest(), sizes
