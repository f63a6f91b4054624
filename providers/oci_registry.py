"""Reading tags from an OCI distribution (v2) registry, for the ECR source and its poller.

The wire protocol, auth challenges (a ``Bearer realm=…`` token service or HTTP basic) and
the manifest media types are python-dxf's; this module adds what Conveyor needs on top: the
registry from settings, secrets read from files at each use (so a rotated secret needs no
restart) and never echoed, the digest checked against the bytes received, and failures a
person can act on, each saying whether trying again could help.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit

import requests
from dxf import DXF, DXFBase
from dxf.exceptions import DXFAuthInsecureError, DXFUnauthorizedError
from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from providers.base import ActionFailed

ENV_PREFIX = "CONVEYOR_ECR_"

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
IMAGE_MANIFESTS = frozenset({DOCKER_MANIFEST, OCI_MANIFEST})
INDEXES = frozenset({DOCKER_MANIFEST_LIST, OCI_INDEX})
# An index's size is its largest image's (as ECR reports it); past this many entries the
# rest are not fetched, so one huge index cannot make every poll slow.
MAX_INDEX_ENTRIES = 32
MAX_CONFIG_BYTES = 1024 * 1024
# Registries answer these when the fault is theirs or passing: worth another try.
RETRYABLE_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})


class RegistrySettings(BaseSettings):
    """The registry ECR sources read (``CONVEYOR_ECR_*``).

    Secrets are named by file, never given by value, so they stay out of definitions,
    process listings and the settings' own repr.
    """

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore")

    registry_url: str | None = Field(
        default=None, description="scheme://host[:port] of the registry, e.g. https://reg:5000"
    )
    # The AWS account id the output names as RegistryId (ECR's registry id is one).
    registry_id: str = "000000000000"
    username: str | None = None
    password_file: Path | None = None
    # A ready bearer token, sent as is (for registries whose tokens are issued elsewhere).
    token_file: Path | None = None
    # A CA bundle to verify the registry's TLS certificate with, instead of the system's.
    ca_bundle: Path | None = None
    timeout_seconds: float = Field(default=30.0, gt=0)

    @field_validator("registry_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        # The value is never repeated in these messages: a URL may carry a secret.
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError("not an http:// or https:// URL")
        if "@" in parts.netloc:
            raise ValueError(
                "credentials do not belong in the URL: use "
                f"{ENV_PREFIX}USERNAME and {ENV_PREFIX}PASSWORD_FILE"
            )
        if parts.path.strip("/") or parts.query or parts.fragment:
            raise ValueError("give scheme://host[:port] only, without a path or query")
        return f"{parts.scheme}://{parts.netloc}"

    @property
    def host(self) -> str:
        """host[:port], as an image reference names the registry."""
        return urlsplit(self.require_url()).netloc

    def require_url(self) -> str:
        if not self.registry_url:
            raise ActionFailed(
                f"no container registry is configured: set {ENV_PREFIX}REGISTRY_URL on the "
                "workers (e.g. https://registry.example.com or http://127.0.0.1:5000)"
            )
        return self.registry_url


def load_settings() -> RegistrySettings:
    """The workers' ``CONVEYOR_ECR_*`` settings, or a failure naming each bad one (and never
    its value, which may hold a secret)."""
    try:
        return RegistrySettings()
    except ValidationError as exc:
        problems = "; ".join(
            f"{ENV_PREFIX}{'.'.join(str(p) for p in error['loc']).upper()}: "
            f"{str(error['msg']).removeprefix('Value error, ')}"
            for error in exc.errors(include_input=False, include_url=False)
        )
        raise ActionFailed(f"invalid registry settings: {problems}") from None


@dataclass(frozen=True)
class ResolvedImage:
    """What a tag pointed at when it was read."""

    repository: str
    tag: str
    digest: str
    media_type: str
    # Compressed layers and config of the image; an index's largest image. None if unknown.
    size_bytes: int | None
    # The image config's ``created`` (build time), when the manifest names a config.
    created: datetime | None


def _read_secret(path: Path, setting: str) -> str:
    # Messages name the path and the reason, never the contents.
    try:
        secret = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or type(exc).__name__
        raise ActionFailed(f"cannot read {ENV_PREFIX}{setting} ({path}): {reason}") from exc
    if not secret:
        raise ActionFailed(f"{ENV_PREFIX}{setting} ({path}) is empty")
    return secret


class RegistryClient:
    """One registry, as configured; one :class:`DXF` per repository read."""

    def __init__(self, settings: RegistrySettings) -> None:
        self.settings = settings
        self.url = settings.require_url()
        self._insecure = self.url.startswith("http://")
        self._username = settings.username
        self._password: str | None = None
        self._token: str | None = None
        if settings.password_file is not None:
            self._password = _read_secret(settings.password_file, "PASSWORD_FILE")
        if settings.token_file is not None:
            self._token = _read_secret(settings.token_file, "TOKEN_FILE")
        if self._password is not None and not self._username:
            raise ActionFailed(
                f"{ENV_PREFIX}PASSWORD_FILE is set but {ENV_PREFIX}USERNAME is not: "
                "a registry password needs its user name"
            )

    @property
    def _has_credentials(self) -> bool:
        return self._password is not None or self._token is not None

    def _auth(self, dxf: DXFBase, response: requests.Response) -> None:
        """Answer a 401 challenge (Bearer realm or Basic) with the configured credentials."""
        if self._token is not None:
            dxf.token = self._token
            return
        dxf.authenticate(self._username, self._password, response=response, actions=["pull"])

    def _dxf(self, repository: str) -> DXF:
        verify: bool | str = str(self.settings.ca_bundle) if self.settings.ca_bundle else True
        dxf = DXF(
            self.settings.host,
            repository,
            auth=self._auth,
            insecure=self._insecure,
            tlsverify=verify,
            timeout=self.settings.timeout_seconds,
        )
        if self._token is not None:
            dxf.token = self._token  # a ready token needs no challenge first
        return dxf

    def digest_of(self, repository: str, tag: str) -> str:
        """The digest ``tag`` points at now: one HEAD, for pollers."""
        with self._dxf(repository) as dxf:
            try:
                digest, _ = dxf.head_manifest_and_response(tag)
            except Exception as exc:
                raise self._failure(exc, dxf, repository, tag) from exc
        if not digest:
            # No Docker-Content-Digest on a HEAD: the full read computes it from the bytes.
            return self.resolve(repository, tag).digest
        return str(digest)

    def resolve(self, repository: str, tag: str) -> ResolvedImage:
        """What ``tag`` points at: its manifest's digest and media type, size and age."""
        with self._dxf(repository) as dxf:
            try:
                manifest, response = self._manifest(dxf, tag)
                digest = _checked_digest(response, self.url, repository, tag)
                media_type = _media_type(manifest, response)
                size, created = self._size_and_created(dxf, manifest, media_type)
            except ActionFailed:
                raise
            except Exception as exc:
                raise self._failure(exc, dxf, repository, tag) from exc
        return ResolvedImage(repository, tag, digest, media_type, size, created)

    @staticmethod
    def _manifest(dxf: DXF, reference: str) -> tuple[dict[str, Any], requests.Response]:
        _, response = dxf.get_manifest_and_response(reference)
        try:
            manifest = json.loads(response.content)
        except ValueError:
            manifest = None
        if not isinstance(manifest, dict):
            raise ActionFailed(f"the registry's manifest for {reference!r} is not a JSON object")
        return manifest, response

    def _size_and_created(
        self, dxf: DXF, manifest: dict[str, Any], media_type: str
    ) -> tuple[int | None, datetime | None]:
        if media_type in IMAGE_MANIFESTS:
            return _image_size(manifest), self._created(dxf, manifest)
        if media_type in INDEXES:
            sizes: list[int] = []
            for entry in _entries(manifest)[:MAX_INDEX_ENTRIES]:
                child, _ = self._manifest(dxf, str(entry["digest"]))
                size = _image_size(child)
                if size is not None:
                    sizes.append(size)
            return (max(sizes) if sizes else None), None
        return None, None  # schema 1 and artifacts of other types: no sizes to add up

    @staticmethod
    def _created(dxf: DXF, manifest: dict[str, Any]) -> datetime | None:
        config = manifest.get("config")
        if not isinstance(config, dict) or not isinstance(config.get("digest"), str):
            return None
        if not isinstance(config.get("size"), int) or config["size"] > MAX_CONFIG_BYTES:
            return None
        body = b"".join(cast(Iterable[bytes], dxf.pull_blob(config["digest"])))
        try:
            created = json.loads(body).get("created")
            return datetime.fromisoformat(str(created).replace("Z", "+00:00")).astimezone(UTC)
        except (ValueError, AttributeError, TypeError):
            return None  # an artifact's config, or one without a build time

    def _failure(self, exc: Exception, dxf: DXF, repository: str, tag: str) -> ActionFailed:
        """A registry error as a message for a person, with whether to try again."""
        where = f"at {self.url}"
        if isinstance(exc, DXFAuthInsecureError):
            return ActionFailed(
                f"the registry {where} asks for credentials, and they are sent over https "
                f"only: set {ENV_PREFIX}REGISTRY_URL to its https:// address"
            )
        if isinstance(exc, requests.exceptions.SSLError):
            return ActionFailed(
                f"TLS with the registry {where} failed ({_reason(exc)}); if it uses a private "
                f"CA, point {ENV_PREFIX}CA_BUNDLE at that CA's certificate"
            )
        if isinstance(exc, requests.ConnectionError | requests.Timeout):
            return ActionFailed(
                f"the registry {where} is unreachable ({_reason(exc)})", retryable=True
            )
        status = _status(exc)
        if status in (401, 403):
            if not self._has_credentials:
                return ActionFailed(
                    f"the registry {where} refused access to repository '{repository}' without "
                    f"credentials: set {ENV_PREFIX}USERNAME and {ENV_PREFIX}PASSWORD_FILE "
                    f"(or {ENV_PREFIX}TOKEN_FILE)"
                )
            user = f" for user '{self._username}'" if self._username else ""
            return ActionFailed(
                f"the registry {where} refused the configured credentials{user} "
                f"(HTTP {status}) for repository '{repository}'"
            )
        if status == 404:
            if not self._repository_exists(dxf):
                return ActionFailed(f"repository '{repository}' not found {where}")
            return ActionFailed(f"image tag '{tag}' not found in repository '{repository}' {where}")
        if status is not None:
            return ActionFailed(
                f"the registry {where} answered HTTP {status} reading '{repository}:{tag}'",
                retryable=status in RETRYABLE_STATUS,
            )
        return ActionFailed(
            f"reading '{repository}:{tag}' from the registry {where} failed: "
            f"{type(exc).__name__}: {exc}"
        )

    @staticmethod
    def _repository_exists(dxf: DXF) -> bool:
        """A missing tag and a missing repository both answer 404 on the manifest; the
        tags list tells them apart (NAME_UNKNOWN). When it cannot tell, blame the tag."""
        try:
            dxf.list_aliases()
        except requests.HTTPError as exc:
            return _status(exc) != 404
        except Exception:
            return True
        return True


def _status(exc: BaseException) -> int | None:
    if isinstance(exc, DXFUnauthorizedError):  # raised for a 401 without the response
        return 401
    response = getattr(exc, "response", None)
    status = getattr(response, "status_code", None)
    return status if isinstance(status, int) else None


def _reason(exc: BaseException) -> str:
    """A short, secret-free reason: the innermost cause's class and words, no URL dumps."""
    inner: BaseException = exc
    while (deeper := inner.__cause__ or inner.__context__) is not None:
        inner = deeper
    text = str(inner).split(": ")[-1] if str(inner) else ""
    return f"{type(inner).__name__}: {text}" if text else type(inner).__name__


def _checked_digest(response: requests.Response, url: str, repository: str, tag: str) -> str:
    """The digest of the manifest bytes received; a registry that names another one is
    refused, so the revision recorded is the content that was read."""
    computed = "sha256:" + hashlib.sha256(response.content).hexdigest()
    named = response.headers.get("Docker-Content-Digest")
    if named and named.startswith("sha256:") and named != computed:
        raise ActionFailed(
            f"the registry at {url} named digest {named} for '{repository}:{tag}' but sent a "
            f"manifest whose digest is {computed}"
        )
    return named or computed


def _media_type(manifest: dict[str, Any], response: requests.Response) -> str:
    declared = manifest.get("mediaType")
    if isinstance(declared, str) and declared:
        return declared
    header = response.headers.get("Content-Type", "").split(";")[0].strip()
    if header and header != "application/json":
        return header
    # An OCI manifest may leave mediaType out; its shape says which it is.
    return OCI_INDEX if "manifests" in manifest else OCI_MANIFEST


def _entries(index: dict[str, Any]) -> list[dict[str, Any]]:
    entries = index.get("manifests")
    if not isinstance(entries, list):
        return []
    return [e for e in entries if isinstance(e, dict) and isinstance(e.get("digest"), str)]


def _image_size(manifest: dict[str, Any]) -> int | None:
    layers = manifest.get("layers")
    if not isinstance(layers, list):
        return None
    sizes = [layer.get("size") for layer in layers if isinstance(layer, dict)]
    config = manifest.get("config")
    if isinstance(config, dict):
        sizes.append(config.get("size"))
    return sum(s for s in sizes if isinstance(s, int))
