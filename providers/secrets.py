"""A local stand-in for Parameter Store and Secrets Manager, and masking of what it hands out.

Builds name parameters and secrets the way they do on AWS (``env.parameter-store``,
``env.secrets-manager``, EnvironmentVariables of type PARAMETER_STORE / SECRETS_MANAGER);
the values come from one file the operator points ``CONVEYOR_SECRETS_FILE`` at::

    parameters:
      /prod/db/user: app
    secrets:
      prod/db: '{"password": "s3cr3t"}'    # a JSON string, or a mapping
      api-token: plain-value

Secrets come from settings, never from definitions; every value handed out is remembered by
the :class:`Masker` the build log goes through, so none of them is ever written out.
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO, cast

from providers.buildspec import BuildspecError, load_text_tree

SETTING = "CONVEYOR_SECRETS_FILE"
MASK = "***"
# Shorter values are not masked: one or two characters would garble every line of the log,
# and a value that short protects nothing.
MIN_MASKED_LENGTH = 3
MAX_SECRETS_FILE_BYTES = 4 * 1024 * 1024


class SecretNotFound(LookupError):
    """A parameter or secret a build names is not in the secrets source.

    The message names what was asked for and never a value.
    """


@dataclass(frozen=True)
class SecretReference:
    """``secret-id[:json-key[:version-stage[:version-id]]]``, as CodeBuild takes it."""

    secret_id: str
    json_key: str = ""
    version_stage: str = ""
    version_id: str = ""

    @classmethod
    def parse(cls, reference: str) -> SecretReference:
        parts = reference.split(":")
        # An ARN holds colons of its own: arn:aws:secretsmanager:region:account:secret:name
        head = 7 if reference.startswith("arn:") else 1
        if len(parts) < head or len(parts) > head + 3:
            raise SecretNotFound(
                f"{reference!r} is not a secret reference "
                "(secret-id:json-key:version-stage:version-id)"
            )
        rest = [*parts[head:], "", "", ""]
        return cls(":".join(parts[:head]), rest[0], rest[1], rest[2])


@dataclass(frozen=True)
class SecretsSource:
    parameters: Mapping[str, str] = field(default_factory=dict)
    secrets: Mapping[str, Any] = field(default_factory=dict)
    origin: str | None = None  # the file it was read from, for messages

    @classmethod
    def load(cls, path: str | Path | None) -> SecretsSource:
        """The source in ``path`` (JSON or YAML); an empty one when none is configured."""
        if not path:
            return cls()
        file = Path(path)
        try:
            if file.stat().st_size > MAX_SECRETS_FILE_BYTES:
                raise SecretNotFound(
                    f"{SETTING} {file} is larger than {MAX_SECRETS_FILE_BYTES} bytes"
                )
            tree = load_text_tree(file.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as exc:
            raise SecretNotFound(f"{SETTING} {file} cannot be read: {exc}") from exc
        except BuildspecError as exc:
            raise SecretNotFound(f"{SETTING} {file} is not valid JSON or YAML") from exc
        if tree is None:
            tree = {}
        if not isinstance(tree, dict) or set(tree) - {"parameters", "secrets"}:
            raise SecretNotFound(
                f"{SETTING} {file} must be a mapping with 'parameters' and/or 'secrets'"
            )
        parameters = tree.get("parameters") or {}
        secrets = tree.get("secrets") or {}
        if not isinstance(parameters, dict) or not all(
            isinstance(v, str) for v in parameters.values()
        ):
            raise SecretNotFound(f"{SETTING} {file}: 'parameters' must map names to values")
        if not isinstance(secrets, dict):
            raise SecretNotFound(f"{SETTING} {file}: 'secrets' must map secret ids to values")
        return cls(parameters, secrets, str(file))

    def _where(self) -> str:
        if self.origin is None:
            return f"no secrets source is configured (set {SETTING})"
        return f"not in {SETTING} {self.origin}"

    def parameter(self, name: str) -> str:
        if name not in self.parameters:
            raise SecretNotFound(f"parameter {name!r} does not exist: {self._where()}")
        return self.parameters[name]

    def secret(self, reference: str) -> str:
        ref = SecretReference.parse(reference)
        value = self._lookup(ref.secret_id)
        if ref.version_id or ref.version_stage not in ("", "AWSCURRENT"):
            raise SecretNotFound(
                f"secret {ref.secret_id!r}: only the current version (AWSCURRENT) is kept by "
                "the local secrets source"
            )
        if not ref.json_key:
            if isinstance(value, str):
                return value
            return json.dumps(value, separators=(",", ":"))
        document = value
        if isinstance(value, str):
            try:
                document = json.loads(value)
            except json.JSONDecodeError:
                document = None
        if not isinstance(document, dict):
            raise SecretNotFound(
                f"secret {ref.secret_id!r} is not a JSON object, so it has no key {ref.json_key!r}"
            )
        if ref.json_key not in document:
            raise SecretNotFound(f"secret {ref.secret_id!r} has no JSON key {ref.json_key!r}")
        item = document[ref.json_key]
        return item if isinstance(item, str) else json.dumps(item, separators=(",", ":"))

    def _lookup(self, secret_id: str) -> Any:
        for candidate in _names(secret_id):
            if candidate in self.secrets:
                return self.secrets[candidate]
        raise SecretNotFound(f"secret {secret_id!r} does not exist: {self._where()}")


def _names(secret_id: str) -> list[str]:
    """The keys a secret id may be stored under: as given, and an ARN's secret name (with
    and without the six-character suffix Secrets Manager appends)."""
    names = [secret_id]
    if secret_id.startswith("arn:"):
        name = secret_id.split(":")[-1]
        names.append(name)
        stem, _, suffix = name.rpartition("-")
        if stem and len(suffix) == 6:
            names.append(stem)
    return names


class Masker:
    """Replaces every secret value handed to a build with ``***``."""

    def __init__(self) -> None:
        self._values: set[str] = set()

    def add(self, value: str) -> None:
        for piece in [value, *value.splitlines()]:
            if len(piece.strip()) >= MIN_MASKED_LENGTH:
                self._values.add(piece)

    def __bool__(self) -> bool:
        return bool(self._values)

    def mask(self, text: str) -> str:
        for value in sorted(self._values, key=len, reverse=True):
            text = text.replace(value, MASK)
        return text

    def holds_secret(self, text: str) -> bool:
        return any(value in text for value in self._values)

    def mask_file(self, path: Path) -> None:
        """Rewrite ``path`` with every value masked, line by line, through a temp file."""
        if not self._values or not path.exists():
            return
        partial = path.with_name(path.name + ".masking")
        with (
            path.open(encoding="utf-8", errors="replace", newline="") as src,
            partial.open("w", encoding="utf-8", newline="") as dst,
        ):
            for line in src:
                dst.write(self.mask(line))
        partial.replace(path)

    def stream(self, target: TextIO) -> TextIO:
        """``target`` behind a writer that masks whole lines before passing them on."""
        return cast(TextIO, _MaskingWriter(target, self))


class _MaskingWriter(io.TextIOBase):
    """Holds back a partial line so a secret split across two writes is still masked."""

    def __init__(self, target: TextIO, masker: Masker) -> None:
        self._target = target
        self._masker = masker
        self._pending = ""

    def write(self, text: str) -> int:
        data = self._pending + text
        head, sep, tail = data.rpartition("\n")
        self._pending = tail
        if sep:
            self._target.write(self._masker.mask(head + sep))
        return len(text)

    def flush(self) -> None:
        self._target.flush()

    def close(self) -> None:
        if self._pending:
            self._target.write(self._masker.mask(self._pending))
            self._pending = ""
        self.flush()
        super().close()
