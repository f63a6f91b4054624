"""Where a git source's repository lives, and with which credentials: settings, not the
pipeline definition.

A definition names a repository the way CodePipeline does (a CodeCommit ``RepositoryName``,
a connection's ``FullRepositoryId``, a GitHub ``Owner``/``Repo``); the installation maps
those names to git remotes here. Secrets come from these settings or from files they name,
never from a definition, so a definition can be shared, printed and stored safely.

All settings use the prefix ``CONVEYOR_GIT_`` (see :class:`GitSettings`). Maps are JSON,
given inline in an environment variable and/or in a file; an inline entry wins over the
file's entry of the same name.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError

from providers.base import ActionFailed
from providers.git import Remote

ENV_PREFIX = "CONVEYOR_GIT_"


class Credentials(BaseModel):
    """HTTP basic credentials: a user name and a password or token, inline or in a file."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    username: str | None = None
    password: SecretStr | None = None
    password_file: Path | None = Field(default=None, alias="passwordFile")
    token_file: Path | None = Field(default=None, alias="tokenFile")

    def secret(self, where: str) -> str | None:
        if self.password is not None:
            return self.password.get_secret_value()
        path = self.password_file or self.token_file
        if path is None:
            return None
        try:
            return path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ActionFailed(
                f"{where}: cannot read the password file {path}: {exc.strerror}"
            ) from exc


class RepositorySpec(Credentials):
    """One repository: its URL (or local path) and credentials."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    url: str


class ConnectionSpec(Credentials):
    """A CodeStar connection: a base URL the ``FullRepositoryId`` is appended to, the
    provider type it reports (``GitHub``, ``GitLab``, ``Bitbucket``, ...) and credentials."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    url: str
    provider_type: str = Field(default="GitHub", alias="providerType")


class GitSettings(BaseSettings):
    """Settings of the git sources, environment prefix ``CONVEYOR_GIT_``."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore")

    # Source/AWS/CodeCommit: a base URL or directory holding repositories by name
    # (``<base>/<RepositoryName>``, then ``<base>/<RepositoryName>.git``) ...
    base_url: str | None = None
    username: str | None = None
    password: SecretStr | None = None
    password_file: Path | None = None
    # ... and/or a map of RepositoryName -> URL or {"url", "username", "passwordFile"...}
    repositories: dict[str, RepositorySpec | str] = Field(default_factory=dict)
    repositories_file: Path | None = None
    # Source/AWS/CodeStarSourceConnection: ConnectionArn -> {"url", "providerType", ...}
    connections: dict[str, ConnectionSpec] = Field(default_factory=dict)
    connections_file: Path | None = None
    # Source/ThirdParty/GitHub/1: ``<github_url>/<Owner>/<Repo>``; credentials from here,
    # never from the definition's OAuthToken.
    github_url: str = "https://github.com"
    github_username: str = "x-access-token"
    github_token: SecretStr | None = None
    github_token_file: Path | None = None
    # Cap on any one git command inside an action (the action's own timeout also applies).
    timeout_seconds: float = Field(default=1800.0, gt=0)
    # Beat's polling: one ls-remote per source, this many at once, each at most this long.
    poll_timeout_seconds: float = Field(default=10.0, gt=0)
    poll_concurrency: int = Field(default=8, ge=1)

    @classmethod
    def load(cls) -> GitSettings:
        """The settings from the environment, or an ActionFailed naming what is wrong (never
        echoing a value, which may hold a password)."""
        try:
            return cls()
        except ValidationError as exc:
            raise ActionFailed(f"invalid git settings: {describe(exc)}") from exc
        except SettingsError as exc:
            raise ActionFailed(f"invalid git settings: {_settings_error(exc)}") from exc

    # ------------------------------------------------------------------ the maps

    def repository_map(self) -> dict[str, RepositorySpec]:
        merged: dict[str, RepositorySpec | str] = {}
        if self.repositories_file is not None:
            merged.update(
                _load_file(self.repositories_file, "repositories", dict[str, RepositorySpec | str])
            )
        merged.update(self.repositories)
        return {
            name: RepositorySpec(url=spec) if isinstance(spec, str) else spec
            for name, spec in merged.items()
        }

    def connection_map(self) -> dict[str, ConnectionSpec]:
        merged: dict[str, ConnectionSpec] = {}
        if self.connections_file is not None:
            merged.update(
                _load_file(self.connections_file, "connections", dict[str, ConnectionSpec])
            )
        merged.update(self.connections)
        return merged


def describe(exc: ValidationError) -> str:
    """A validation error as ``where: what`` lines, without the offending input."""
    parts = []
    for err in exc.errors(include_input=False, include_url=False):
        loc = ".".join(str(p) for p in err.get("loc", ()))
        field = f"{ENV_PREFIX}{loc.split('.', 1)[0].upper()}" if loc else ENV_PREFIX + "*"
        rest = loc.split(".", 1)[1] if "." in loc else ""
        parts.append(f"{field}{'[' + rest + ']' if rest else ''}: {err['msg']}")
    return "; ".join(parts)


def _settings_error(exc: SettingsError) -> str:
    # pydantic-settings says 'error parsing value for field "repositories" from source ...'
    text = str(exc)
    if '"' in text:
        field = text.split('"')[1]
        return f"{ENV_PREFIX}{field.upper()} is not valid JSON"
    return text


def _load_file(path: Path, what: str, shape: Any) -> Any:
    from pydantic import TypeAdapter

    setting = f"{ENV_PREFIX}{what.upper()}_FILE"
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ActionFailed(f"{setting}: cannot read {path}: {exc.strerror}") from exc
    except ValueError as exc:
        raise ActionFailed(f"{setting}: {path} is not valid JSON ({exc})") from exc
    try:
        return TypeAdapter(shape).validate_python(raw)
    except ValidationError as exc:
        lines = []
        for err in exc.errors(include_input=False, include_url=False):
            loc = ".".join(str(p) for p in err.get("loc", ()))
            lines.append(f"{loc}: {err['msg']}")
        raise ActionFailed(f"{setting}: {path}: " + "; ".join(lines)) from exc


# ---------------------------------------------------------------------------- resolving


@dataclass(frozen=True)
class Located:
    """Where a source's repository may be: candidate remotes tried in order (the first that
    exists wins), and a name for messages."""

    name: str
    candidates: tuple[Remote, ...]
    settings_hint: str  # which setting to fix when none of the candidates is right


def is_local(url: str) -> bool:
    return url.startswith(("/", "file://", "./", "../"))


def _local_path(url: str) -> Path:
    return Path(url.removeprefix("file://"))


def _remote(url: str, creds: Credentials, where: str) -> Remote:
    return Remote.parse(url, creds.username, creds.secret(where))


def _under(base: str, name: str) -> list[str]:
    base = base.rstrip("/")
    return [f"{base}/{name}", f"{base}/{name}.git"]


def locate_codecommit(settings: GitSettings, repository: str) -> Located:
    hint = f"{ENV_PREFIX}REPOSITORIES or {ENV_PREFIX}BASE_URL"
    spec = settings.repository_map().get(repository)
    if spec is not None:
        remote = _remote(spec.url, spec, f"repository {repository!r}")
        return Located(repository, (remote,), f"{ENV_PREFIX}REPOSITORIES[{repository}]")
    if settings.base_url is None:
        raise ActionFailed(
            f"repository {repository!r} is not configured: map it in "
            f"{ENV_PREFIX}REPOSITORIES (or {ENV_PREFIX}REPOSITORIES_FILE), or set "
            f"{ENV_PREFIX}BASE_URL to a URL or directory holding repositories by name"
        )
    creds = Credentials(
        username=settings.username,
        password=settings.password,
        password_file=settings.password_file,
    )
    urls = _under(settings.base_url, repository)
    if is_local(settings.base_url):
        # A directory can be looked at: name the repository that is there, or say it is not.
        found = [u for u in urls if _local_path(u).exists()]
        if not found:
            raise ActionFailed(
                f"repository {repository!r} not found under {settings.base_url} "
                f"(looked for {urls[0]} and {urls[1]}; {hint})"
            )
        urls = found[:1]
    remotes = tuple(_remote(u, creds, f"{ENV_PREFIX}BASE_URL") for u in urls)
    return Located(repository, remotes, hint)


def locate_connection(settings: GitSettings, connection_arn: str, full_id: str) -> Located:
    spec = settings.connection_map().get(connection_arn)
    if spec is None:
        raise ActionFailed(
            f"connection {connection_arn} is not configured: map it to a git base URL in "
            f"{ENV_PREFIX}CONNECTIONS (or {ENV_PREFIX}CONNECTIONS_FILE)"
        )
    where = f"connection {connection_arn}"
    remotes = tuple(_remote(u, spec, where) for u in _under(spec.url, full_id))
    return Located(full_id, remotes, f"{ENV_PREFIX}CONNECTIONS[{connection_arn}]")


def connection_provider_type(settings: GitSettings, connection_arn: str) -> str:
    spec = settings.connection_map().get(connection_arn)
    return spec.provider_type if spec is not None else "GitHub"


def locate_github(settings: GitSettings, owner: str, repo: str) -> Located:
    creds = Credentials(
        username=settings.github_username,
        password=settings.github_token,
        token_file=settings.github_token_file,
    )
    full = f"{owner}/{repo}"
    remotes = tuple(
        _remote(u, creds, f"{ENV_PREFIX}GITHUB_TOKEN_FILE")
        for u in _under(settings.github_url, full)
    )
    return Located(full, remotes, f"{ENV_PREFIX}GITHUB_URL")
