"""Access keys and the principals they belong to: the principals file, keys from settings,
and the key ring the API looks signatures' keys up in.

The file (``CONVEYOR_AUTH_PRINCIPALS_FILE``, YAML or JSON)::

    principals:
      - name: alice
        roles: [admin]
        keys:
          - accessKeyId: AKIA...
            secretAccessKey: ...              # or, encrypted at rest:
          - accessKeyId: AKIA...
            secretAccessKeyEncrypted: gAAAA... # Fernet, CONVEYOR_AUTH_KEY_ENCRYPTION_KEY

SigV4 is an HMAC keyed by the secret, so the server needs the secret itself: it cannot be
hashed, only encrypted. The file holds secrets either way, so one readable by group or
others is refused, as ssh refuses such a private key. It is read again when it changes
(mtime, size or inode), so adding a key needs no restart; a change that does not load
(invalid, unreadable, an alias bomb) is logged as an ERROR and the keys already loaded stay
in force, while a file that is deleted takes its keys with it (revoked at once; the
settings' keys remain; logged as an ERROR). At start, either is an error.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import secrets
import stat
import string
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from cryptography.fernet import Fernet, InvalidToken
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator

from engine.auth.principals import Principal, Role
from engine.definition.loading import GuardedLoader
from engine.errors import ConveyorError

log = logging.getLogger(__name__)

MAX_FILE_BYTES = 1024 * 1024
PRINCIPALS_FILE = "principals file"
# IAM's user-name characters; the name appears in AccessDenied messages' user ARN.
NAME_PATTERN = r"^[\w+=,.@-]{1,64}$"
ACCESS_KEY_PATTERN = r"^[A-Za-z0-9]{16,128}$"
ADMIN_PRINCIPAL = "admin"
WORKERS_PRINCIPAL = "conveyor-workers"
WORKER_ROLES = frozenset({Role.OPERATOR, Role.JOB_WORKER})
HANDLERS_PRINCIPAL = "conveyor-handlers"
HANDLER_ROLES = frozenset({Role.JOB_WORKER})


class KeyConfigError(ConveyorError):
    """The principals file or the auth settings are unusable; the message says where."""

    aws_code = "InvalidConfiguration"


# ---------------------------------------------------------------------------- the file


class KeyEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)

    access_key_id: str = Field(alias="accessKeyId", pattern=ACCESS_KEY_PATTERN)
    secret_access_key: SecretStr | None = Field(default=None, alias="secretAccessKey")
    secret_access_key_encrypted: str | None = Field(default=None, alias="secretAccessKeyEncrypted")

    @model_validator(mode="after")
    def _one_secret(self) -> KeyEntry:
        if (self.secret_access_key is None) == (self.secret_access_key_encrypted is None):
            raise ValueError("give exactly one of secretAccessKey, secretAccessKeyEncrypted")
        if self.secret_access_key is not None and not self.secret_access_key.get_secret_value():
            raise ValueError("secretAccessKey must not be empty")
        return self


class PrincipalEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)

    name: str = Field(pattern=NAME_PATTERN)
    roles: list[Role] = Field(min_length=1)
    keys: list[KeyEntry] = Field(default_factory=list)


class PrincipalsFile(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    principals: list[PrincipalEntry] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique(self) -> PrincipalsFile:
        names: set[str] = set()
        key_ids: set[str] = set()
        for i, p in enumerate(self.principals):
            if p.name in names:
                raise ValueError(f"principals[{i}].name: {p.name!r} appears twice")
            names.add(p.name)
            for j, k in enumerate(p.keys):
                if k.access_key_id in key_ids:
                    raise ValueError(
                        f"principals[{i}].keys[{j}].accessKeyId: "
                        f"{k.access_key_id!r} belongs to two entries"
                    )
                key_ids.add(k.access_key_id)
        return self


def _path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def parse_principals(text: str, source: str) -> PrincipalsFile:
    """The file's text, validated; KeyConfigError naming every problem by its path. YAML is
    read with the definitions' guard (aliases counted expanded, no repeated keys): whatever
    the file holds, a reload refuses it instead of failing the requests that trigger it."""
    try:
        data: Any = json.loads(text)
    except RecursionError:
        raise KeyConfigError(f"{source}: nested too deeply") from None
    except ValueError:
        try:
            data = yaml.load(text, Loader=GuardedLoader)
        except RecursionError:
            raise KeyConfigError(f"{source}: nested too deeply") from None
        except MemoryError:
            raise KeyConfigError(f"{source}: too large once read") from None
        except yaml.YAMLError as exc:
            raise KeyConfigError(f"{source}: not valid JSON or YAML: {exc}") from None
    if data is None:
        data = {}
    try:
        return PrincipalsFile.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors()[:20]:
            where = _path(tuple(err["loc"])) or "(top level)"
            msg = "required" if err["type"] == "missing" else err["msg"]
            msg = msg.removeprefix("Value error, ")
            problems.append(f"{where}: {msg}" if err["loc"] else msg)
        raise KeyConfigError(f"{source}: " + "; ".join(problems)) from None


def read_private(path: Path, what: str) -> str:
    """A file that holds secrets: refused if group or others may read or write it."""
    try:
        st = path.stat()
        if st.st_mode & 0o077:
            raise KeyConfigError(
                f"{what} {path} is accessible by group or others (mode "
                f"{stat.S_IMODE(st.st_mode):04o}); it holds secrets: chmod 600 {path}"
            )
        with path.open("rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        hint = (
            f" (`conveyor keys create --principal admin --role admin --file {path}` makes "
            "it with a first key)"
            if what == PRINCIPALS_FILE
            else ""
        )
        raise KeyConfigError(f"{what} {path} does not exist{hint}") from None
    except OSError as exc:
        raise KeyConfigError(f"cannot read {what} {path}: {exc.strerror}") from None
    if len(data) > MAX_FILE_BYTES:
        raise KeyConfigError(f"{what} {path} is larger than {MAX_FILE_BYTES} bytes")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise KeyConfigError(f"{what} {path} is not UTF-8 (byte {exc.start})") from None


# ---------------------------------------------------------------------------- encryption


def new_encryption_key() -> str:
    """A fresh key for ``CONVEYOR_AUTH_KEY_ENCRYPTION_KEY``."""
    return Fernet.generate_key().decode()


def fernet(key: str) -> Fernet:
    try:
        return Fernet(key.strip().encode())
    except ValueError:
        raise KeyConfigError(
            "the key-encryption key must be 32 url-safe base64-encoded bytes "
            "(make one with `conveyor keys new-encryption-key`)"
        ) from None


def encrypt_secret(secret: str, key: str) -> str:
    return fernet(key).encrypt(secret.encode()).decode()


# ---------------------------------------------------------------------------- the key ring


@dataclass(frozen=True)
class Identity:
    principal: Principal
    access_key: str
    secret: str = field(repr=False)


@dataclass(frozen=True)
class AuthSources:
    """Where keys come from: the settings' admin and workers' keys, the file, the
    key-encryption key."""

    principals_file: Path | None = None
    encryption_key: str | None = field(default=None, repr=False)
    static: tuple[Identity, ...] = ()

    @classmethod
    def from_settings(cls, settings: Any) -> AuthSources:
        static: list[Identity] = []
        pairs = (
            (
                ADMIN_PRINCIPAL,
                frozenset({Role.ADMIN}),
                settings.auth_admin_access_key_id,
                settings.auth_admin_secret_access_key,
                "CONVEYOR_AUTH_ADMIN",
            ),
            (
                WORKERS_PRINCIPAL,
                WORKER_ROLES,
                settings.api_access_key_id,
                settings.api_secret_access_key,
                "CONVEYOR_API",
            ),
            (
                HANDLERS_PRINCIPAL,
                HANDLER_ROLES,
                settings.api_handler_access_key_id,
                settings.api_handler_secret_access_key,
                "CONVEYOR_API_HANDLER",
            ),
        )
        for name, roles, key_id, secret, env in pairs:
            if (key_id is None) != (secret is None):
                raise KeyConfigError(
                    f"set both {env}_ACCESS_KEY_ID and {env}_SECRET_ACCESS_KEY, or neither"
                )
            if key_id is not None and secret is not None:
                if not re.match(ACCESS_KEY_PATTERN, key_id):
                    raise KeyConfigError(f"{env}_ACCESS_KEY_ID must be 16-128 letters or digits")
                static.append(Identity(Principal(name, roles), key_id, secret.get_secret_value()))
        encryption_key = None
        if settings.auth_key_encryption_key is not None:
            encryption_key = settings.auth_key_encryption_key.get_secret_value()
        elif settings.auth_key_encryption_key_file is not None:
            path = settings.auth_key_encryption_key_file
            encryption_key = read_private(path, "key-encryption key file").strip()
        return cls(settings.auth_principals_file, encryption_key, tuple(static))


class KeyRing:
    """Access key id -> :class:`Identity`, from :class:`AuthSources`; the file is read again
    when it changes. Thread-safe (the API looks keys up from its worker threads)."""

    def __init__(self, sources: AuthSources) -> None:
        self.sources = sources
        self._lock = threading.Lock()
        self._stamp: tuple[int, int, int] | None = None
        self._by_key: dict[str, Identity] = {}
        self._secrets: dict[str, str] = {}
        self._load()  # a bad file at start is an error, not a log line

    @property
    def configured(self) -> bool:
        return bool(self.lookup_all())

    def lookup(self, access_key: str) -> Identity | None:
        return self.lookup_all().get(access_key)

    def secrets(self) -> Mapping[str, str]:
        """Access key id -> secret, what :func:`engine.auth.sigv4.verify` looks keys up in."""
        self.lookup_all()
        return self._secrets

    def lookup_all(self) -> Mapping[str, Identity]:
        path = self.sources.principals_file
        if path is not None and self._file_stamp(path) != self._stamp:
            with self._lock:
                if self._file_stamp(path) != self._stamp:
                    self._reload(path)
        return self._by_key

    def _reload(self, path: Path) -> None:
        """Read the changed file again. Its keys are revoked if it is gone; a version that
        does not load is logged and the keys already loaded stay in force (a half-written
        or mistyped edit must not lock everyone out, nor fail every request)."""
        try:
            self._load()
        except KeyConfigError as exc:
            self._stamp = self._file_stamp(path)  # report it once per change
            if self._stamp is None and not path.exists():
                self._install({i.access_key: i for i in self.sources.static}, None)
                log.error(
                    "principals file %s is gone: its keys are revoked, only the settings' "
                    "keys remain (%d)",
                    path,
                    len(self._by_key),
                )
            else:
                log.error("principals file not reloaded, old keys kept: %s", exc.message)
        except Exception:
            self._stamp = self._file_stamp(path)
            log.exception("principals file %s not reloaded, old keys kept", path)

    @staticmethod
    def _file_stamp(path: Path) -> tuple[int, int, int] | None:
        try:
            st = path.stat()
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def _load(self) -> None:
        path = self.sources.principals_file
        by_key = {i.access_key: i for i in self.sources.static}
        stamp = None
        if path is not None:
            stamp = self._file_stamp(path)
            text = read_private(path, PRINCIPALS_FILE)
            for i, entry in enumerate(parse_principals(text, str(path)).principals):
                principal = Principal(entry.name, frozenset(entry.roles))
                for j, key in enumerate(entry.keys):
                    where = f"{path}: principals[{i}].keys[{j}]"
                    if key.access_key_id in by_key:
                        raise KeyConfigError(
                            f"{where}.accessKeyId: {key.access_key_id!r} is also set in "
                            "the settings (CONVEYOR_AUTH_ADMIN_... or CONVEYOR_API_...)"
                        )
                    secret = self._secret(key, where)
                    by_key[key.access_key_id] = Identity(principal, key.access_key_id, secret)
        self._install(by_key, stamp)

    def _install(self, by_key: dict[str, Identity], stamp: tuple[int, int, int] | None) -> None:
        self._by_key = by_key
        self._secrets = {k: i.secret for k, i in by_key.items()}
        self._stamp = stamp

    def _secret(self, key: KeyEntry, where: str) -> str:
        if key.secret_access_key is not None:
            return key.secret_access_key.get_secret_value()
        if self.sources.encryption_key is None:
            raise KeyConfigError(
                f"{where}.secretAccessKeyEncrypted: no key-encryption key is configured "
                "(CONVEYOR_AUTH_KEY_ENCRYPTION_KEY or ..._FILE)"
            )
        try:
            token = (key.secret_access_key_encrypted or "").encode()
            return fernet(self.sources.encryption_key).decrypt(token).decode()
        except InvalidToken:
            raise KeyConfigError(
                f"{where}.secretAccessKeyEncrypted: does not decrypt with the configured "
                "key-encryption key"
            ) from None


# ---------------------------------------------------------------------------- new keys

_KEY_ALPHABET = string.ascii_uppercase + string.digits
_SECRET_ALPHABET = string.ascii_letters + string.digits + "+/"


def generate_key_pair() -> tuple[str, str]:
    """An AWS-shaped pair: ``AKIA`` + 16 upper-case letters or digits, a 40-character
    secret."""
    key_id = "AKIA" + "".join(secrets.choice(_KEY_ALPHABET) for _ in range(16))
    secret = "".join(secrets.choice(_SECRET_ALPHABET) for _ in range(40))
    return key_id, secret


def add_key(
    path: Path,
    principal: str,
    roles: list[Role],
    *,
    encryption_key: str | None = None,
) -> tuple[str, str]:
    """Generate a key for ``principal`` (created with ``roles`` if new; its roles replaced
    by ``roles`` if given) and write it to the file (created 0600, replaced atomically); the
    new (access key id, secret)."""
    if path.exists():
        current = parse_principals(read_private(path, PRINCIPALS_FILE), str(path))
    else:
        current = PrincipalsFile()
    key_id, secret = generate_key_pair()
    entry: dict[str, Any] = {"accessKeyId": key_id}
    if encryption_key:
        entry["secretAccessKeyEncrypted"] = encrypt_secret(secret, encryption_key)
    else:
        entry["secretAccessKey"] = secret
    data = current.model_dump(mode="json", by_alias=True, exclude_none=True)
    for p in data["principals"]:
        for k in p["keys"]:
            if "secretAccessKey" in k:  # model_dump masks SecretStr
                k["secretAccessKey"] = _plain_secret(current, k["accessKeyId"])
    found = next((p for p in data["principals"] if p["name"] == principal), None)
    if found is None:
        if not roles:
            raise KeyConfigError(f"principal {principal!r} is new: give it at least one --role")
        found = {"name": principal, "roles": [], "keys": []}
        data["principals"].append(found)
    if roles:
        found["roles"] = [r.value for r in roles]
    found["keys"].append(entry)
    parse_principals(json.dumps(data), str(path))  # the name's pattern, uniqueness
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        if path.exists():  # root adding a key keeps the file the API's user's
            owner = path.stat()
            with contextlib.suppress(PermissionError):
                os.fchown(f.fileno(), owner.st_uid, owner.st_gid)
        json.dump(data, f, indent=2)
        f.write("\n")
    os.replace(tmp, path)
    return key_id, secret


def _plain_secret(current: PrincipalsFile, key_id: str) -> str:
    for p in current.principals:
        for k in p.keys:
            if k.access_key_id == key_id and k.secret_access_key is not None:
                return k.secret_access_key.get_secret_value()
    raise KeyError(key_id)
