"""The subset of CodeBuild's buildspec (version 0.2) the local runner understands.

Parsed strictly: a key this runner would silently ignore (``env.parameter-store``,
``reports``...) could change what a build does on real CodeBuild, so unsupported keys that
matter fail the build with a message instead of being skipped. Keys that only tune
CodeBuild's own infrastructure (``proxy``, ``cache``, ``runtime-versions``) are ignored.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

PHASES = ("install", "pre_build", "build", "post_build")
_UNSUPPORTED_ENV = ("parameter-store", "secrets-manager")


class BuildspecError(ValueError):
    """The buildspec is missing or malformed (CodeBuild's YAML_FILE_ERROR)."""


@dataclass
class Phase:
    name: str
    commands: list[str] = field(default_factory=list)
    finally_commands: list[str] = field(default_factory=list)
    on_failure: str = "ABORT"


@dataclass
class ArtifactSpec:
    files: list[str] = field(default_factory=list)
    exclude: list[str] = field(default_factory=list)
    base_directory: str | None = None
    discard_paths: bool = False


@dataclass
class Buildspec:
    variables: dict[str, str] = field(default_factory=dict)
    exported_variables: list[str] = field(default_factory=list)
    shell: str = "bash"
    phases: list[Phase] = field(default_factory=list)
    artifacts: ArtifactSpec | None = None
    secondary_artifacts: dict[str, ArtifactSpec] = field(default_factory=dict)


def find_buildspec(src: Path) -> Path:
    for name in ("buildspec.yml", "buildspec.yaml"):
        if (src / name).is_file():
            return src / name
    raise BuildspecError("YAML_FILE_ERROR: no buildspec.yml or buildspec.yaml in the source root")


def _mapping(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise BuildspecError(f"YAML_FILE_ERROR: {where} must be a mapping")
    return value


def _commands(value: Any, where: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list) or not all(isinstance(c, str | int | float) for c in value):
        raise BuildspecError(f"YAML_FILE_ERROR: {where} must be a list of commands")
    return [str(c) for c in value]


def _flag(value: Any) -> bool:
    """YAML 1.1 turns ``yes`` into True; CodeBuild accepts either spelling."""
    if isinstance(value, bool):
        return value
    return str(value).strip().lower() in ("yes", "true")


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


def _phase(name: str, raw: Any) -> Phase:
    body = _mapping(raw, f"phases.{name}")
    on_failure = str(body.get("on-failure", "ABORT")).upper()
    if on_failure not in ("ABORT", "CONTINUE"):
        raise BuildspecError(
            f"YAML_FILE_ERROR: phases.{name}.on-failure {on_failure!r} is not supported "
            "(ABORT or CONTINUE)"
        )
    return Phase(
        name=name,
        commands=_commands(body.get("commands"), f"phases.{name}.commands"),
        finally_commands=_commands(body.get("finally"), f"phases.{name}.finally"),
        on_failure=on_failure,
    )


def _artifact(raw: Any, where: str) -> ArtifactSpec:
    body = _mapping(raw, where)
    base = body.get("base-directory")
    return ArtifactSpec(
        files=_commands(body.get("files"), f"{where}.files"),
        exclude=_commands(body.get("exclude-paths"), f"{where}.exclude-paths"),
        base_directory=None if base is None else str(base),
        discard_paths=_flag(body.get("discard-paths", False)),
    )


def parse_buildspec(text: str) -> Buildspec:
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise BuildspecError(f"YAML_FILE_ERROR: invalid YAML: {exc}") from exc
    doc = _mapping(raw, "the buildspec")
    if str(doc.get("version")) != "0.2":
        raise BuildspecError(
            f"YAML_FILE_ERROR: version {doc.get('version')!r} is not supported (use 0.2)"
        )
    env = _mapping(doc.get("env"), "env")
    for key in _UNSUPPORTED_ENV:
        if key in env:
            raise BuildspecError(f"YAML_FILE_ERROR: env.{key} is not supported by the local runner")
    shell = str(env.get("shell", "bash"))
    if shell not in ("bash", "/bin/bash", "sh", "/bin/sh"):
        raise BuildspecError(f"YAML_FILE_ERROR: env.shell {shell!r} is not supported (bash)")
    phases_raw = _mapping(doc.get("phases"), "phases")
    unknown = set(phases_raw) - set(PHASES)
    if unknown:
        raise BuildspecError(f"YAML_FILE_ERROR: unknown phases {sorted(unknown)}")
    artifacts_raw = _mapping(doc.get("artifacts"), "artifacts")
    secondary = _mapping(artifacts_raw.get("secondary-artifacts"), "artifacts.secondary-artifacts")
    return Buildspec(
        variables={
            str(k): _scalar(v) for k, v in _mapping(env.get("variables"), "env.variables").items()
        },
        exported_variables=_commands(env.get("exported-variables"), "env.exported-variables"),
        shell="bash",  # sh is run by bash too: the runner's state keeping needs bash
        phases=[_phase(name, phases_raw[name]) for name in PHASES if name in phases_raw],
        artifacts=_artifact(artifacts_raw, "artifacts") if artifacts_raw.get("files") else None,
        secondary_artifacts={
            str(name): _artifact(spec, f"artifacts.secondary-artifacts.{name}")
            for name, spec in secondary.items()
        },
    )


class ArtifactPathError(ValueError):
    """Artifact files could not be collected (CodeBuild's CLIENT_ERROR)."""


def _glob(base: Path, pattern: str) -> dict[str, Path]:
    """Files under ``base`` matching one pattern; a matched directory brings its files."""
    pattern = pattern.strip()
    while pattern.startswith("./"):
        pattern = pattern[2:]
    if not pattern:
        return {}
    if pattern.startswith("/") or ".." in PurePosixPath(pattern).parts:
        raise ArtifactPathError(f"artifact path {pattern!r} must be relative to the source")
    found: dict[str, Path] = {}
    for match in base.glob(pattern.rstrip("/")):
        candidates = sorted(match.rglob("*")) if match.is_dir() else [match]
        for path in candidates:
            if path.is_file():
                found[path.relative_to(base).as_posix()] = path
    return found


def collect_artifacts(spec: ArtifactSpec, src: Path, dest: Path) -> int:
    """Copy the files ``spec`` selects from ``src`` into ``dest``; returns how many.

    Paths are kept relative to ``base-directory`` (or the source root) unless
    ``discard-paths`` flattens them, like CodeBuild. Zero matches is an error, as on
    CodeBuild: an empty artifact almost always means a wrong pattern, not an empty build.
    """
    root = src.resolve()
    base = src / spec.base_directory if spec.base_directory else src
    if not base.resolve().is_relative_to(root):
        raise ArtifactPathError(f"base-directory {spec.base_directory!r} leaves the source")
    selected: dict[str, Path] = {}
    if base.is_dir():
        for pattern in spec.files:
            selected.update(_glob(base, pattern))
        for pattern in spec.exclude:
            for rel in _glob(base, pattern):
                selected.pop(rel, None)
    if not selected:
        raise ArtifactPathError(
            f"no matching artifact paths found for {spec.files}"
            + (f" under base-directory {spec.base_directory!r}" if spec.base_directory else "")
        )
    for rel, path in sorted(selected.items()):
        if not path.resolve().is_relative_to(root):
            raise ArtifactPathError(f"artifact path {rel!r} resolves outside the source")
        target = dest / (path.name if spec.discard_paths else rel)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target)
    return len(selected)
