"""CodeBuild's buildspec (version 0.2), parsed the way the local runner needs it.

Parsed strictly: a key this runner would silently ignore could change what a build does on
real CodeBuild, so anything malformed fails the build with a message naming where. Keys that
only tune CodeBuild's own infrastructure (``proxy``, ``runtime-versions``, ``run-as``,
``batch``) are ignored.

Scalars are read as the text written, not as YAML 1.1 typed values: ``- true`` is the command
``true``, ``- 1.10`` is ``1.10`` and ``- 010`` is ``010``; turning them into Python values and
back (``True``, ``1.1``, ``8``) would run a different command than the one in the file.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

PHASES = ("install", "pre_build", "build", "post_build")
# CodeBuild's Linux shells; "sh" runs as bash in POSIX mode, which is what /bin/sh is on
# Amazon Linux images (bash is needed anyway to carry state from command to command).
SHELLS = {"bash": "bash", "/bin/bash": "bash", "sh": "sh", "/bin/sh": "sh"}
REPORT_FORMATS = (
    "JUNITXML",
    "CUCUMBERJSON",
    "NUNITXML",
    "NUNIT3XML",
    "TESTNGXML",
    "VISUALSTUDIOTRX",
    "CLOVERXML",
    "COBERTURAXML",
    "JACOCOXML",
    "SIMPLECOV",
)
_NULL_TAG = "tag:yaml.org,2002:null"


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
    name: str | None = None


@dataclass
class ReportGroupSpec:
    """One ``reports.<group>`` section: which files hold test results, in which format."""

    name: str
    files: list[str] = field(default_factory=list)
    base_directory: str | None = None
    discard_paths: bool = False
    file_format: str = "JUNITXML"


@dataclass
class Buildspec:
    variables: dict[str, str] = field(default_factory=dict)
    # variable name -> Parameter Store parameter name
    parameter_store: dict[str, str] = field(default_factory=dict)
    # variable name -> secret-id[:json-key[:version-stage[:version-id]]]
    secrets_manager: dict[str, str] = field(default_factory=dict)
    exported_variables: list[str] = field(default_factory=list)
    shell: str = "bash"  # "bash" or "sh"
    phases: list[Phase] = field(default_factory=list)
    artifacts: ArtifactSpec | None = None
    secondary_artifacts: dict[str, ArtifactSpec] = field(default_factory=dict)
    reports: list[ReportGroupSpec] = field(default_factory=list)
    cache_paths: list[str] = field(default_factory=list)


def find_buildspec(src: Path) -> Path:
    for name in ("buildspec.yml", "buildspec.yaml"):
        if (src / name).is_file():
            return src / name
    raise BuildspecError("YAML_FILE_ERROR: no buildspec.yml or buildspec.yaml in the source root")


# -- YAML as text ----------------------------------------------------------------------


def load_text_tree(text: str) -> Any:
    """The YAML document as dicts, lists and strings holding each scalar's text.

    ``yaml.compose`` resolves anchors and aliases but constructs nothing, so a plain scalar's
    value is exactly what was written; quoted and block scalars carry their unescaped text.
    Only nulls (``~``, ``null``, nothing) become None.
    """
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        node = yaml.compose(text, Loader=loader)
    except yaml.YAMLError as exc:
        raise BuildspecError(f"YAML_FILE_ERROR: invalid YAML: {exc}") from exc
    return None if node is None else _from_node(node, depth=0, budget=[MAX_YAML_NODES])


# Nodes a buildspec may expand to: aliases share nodes, but this copies them, so a few
# hundred bytes of nested aliases ("billion laughs") would otherwise build gigabytes.
MAX_YAML_NODES = 100_000


def _from_node(node: yaml.Node, depth: int, budget: list[int]) -> Any:
    if depth > 64:  # aliases can nest a document into itself many times over
        raise BuildspecError("YAML_FILE_ERROR: the buildspec nests deeper than 64 levels")
    budget[0] -= 1
    if budget[0] < 0:
        raise BuildspecError(
            f"YAML_FILE_ERROR: the buildspec expands to more than {MAX_YAML_NODES} nodes "
            "(alias expansion)"
        )
    if isinstance(node, yaml.ScalarNode):
        return None if node.tag == _NULL_TAG else str(node.value)
    if isinstance(node, yaml.SequenceNode):
        return [_from_node(item, depth + 1, budget) for item in node.value]
    if isinstance(node, yaml.MappingNode):
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key = _from_node(key_node, depth + 1, budget)
            value = _from_node(value_node, depth + 1, budget)
            if key == "<<" and isinstance(value, dict):  # a merge key: earlier keys win
                for k, v in value.items():
                    out.setdefault(k, v)
                continue
            if not isinstance(key, str):
                raise BuildspecError(f"YAML_FILE_ERROR: mapping key {key!r} must be a string")
            out[key] = value
        return out
    raise BuildspecError(f"YAML_FILE_ERROR: unsupported YAML node {node.tag}")


# -- sections --------------------------------------------------------------------------


def _mapping(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise BuildspecError(f"YAML_FILE_ERROR: {where} must be a mapping")
    return value


def _string(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise BuildspecError(f"YAML_FILE_ERROR: {where} must be a single value")
    return value


def _commands(value: Any, where: str) -> list[str]:
    """A list of strings (or one string), every item non-empty."""
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list):
        raise BuildspecError(f"YAML_FILE_ERROR: {where} must be a list")
    out: list[str] = []
    for i, item in enumerate(value):
        if item is None or (isinstance(item, str) and not item.strip()):
            raise BuildspecError(f"YAML_FILE_ERROR: {where}[{i}] is empty")
        if not isinstance(item, str):
            raise BuildspecError(
                f"YAML_FILE_ERROR: {where}[{i}] must be a string, not a "
                f"{'mapping' if isinstance(item, dict) else 'list'} (quote it if it holds ': ')"
            )
        out.append(item)
    return out


def _flag(value: Any, where: str) -> bool:
    """CodeBuild accepts yes/no and true/false."""
    if value is None:
        return False
    text = _string(value, where).strip().lower()
    if text in ("yes", "true"):
        return True
    if text in ("no", "false"):
        return False
    raise BuildspecError(f"YAML_FILE_ERROR: {where} must be yes or no, got {value!r}")


def _string_map(value: Any, where: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, item in _mapping(value, where).items():
        if isinstance(item, dict | list):
            raise BuildspecError(f"YAML_FILE_ERROR: {where}.{key} must be a single value")
        out[key] = "" if item is None else item
    return out


def _phase(name: str, raw: Any) -> Phase:
    body = _mapping(raw, f"phases.{name}")
    on_failure = _string(body.get("on-failure", "ABORT"), f"phases.{name}.on-failure").upper()
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


def _optional(body: dict[str, Any], key: str, where: str) -> str | None:
    value = body.get(key)
    return None if value is None else _string(value, f"{where}.{key}")


def _artifact(raw: Any, where: str) -> ArtifactSpec:
    body = _mapping(raw, where)
    return ArtifactSpec(
        files=_commands(body.get("files"), f"{where}.files"),
        exclude=_commands(body.get("exclude-paths"), f"{where}.exclude-paths"),
        base_directory=_optional(body, "base-directory", where),
        discard_paths=_flag(body.get("discard-paths"), f"{where}.discard-paths"),
        name=_optional(body, "name", where),
    )


def _report(name: str, raw: Any) -> ReportGroupSpec:
    where = f"reports.{name}"
    body = _mapping(raw, where)
    files = _commands(body.get("files"), f"{where}.files")
    if not files:
        raise BuildspecError(f"YAML_FILE_ERROR: {where}.files is required")
    file_format = (_optional(body, "file-format", where) or "JUNITXML").upper()
    if file_format not in REPORT_FORMATS:
        raise BuildspecError(
            f"YAML_FILE_ERROR: {where}.file-format {file_format!r} is not a CodeBuild report "
            f"format ({', '.join(REPORT_FORMATS)})"
        )
    return ReportGroupSpec(
        name=name,
        files=files,
        base_directory=_optional(body, "base-directory", where),
        discard_paths=_flag(body.get("discard-paths"), f"{where}.discard-paths"),
        file_format=file_format,
    )


def _shell(value: Any) -> str:
    if value is None:
        return "bash"
    text = _string(value, "env.shell")
    if text not in SHELLS:
        raise BuildspecError(
            f"YAML_FILE_ERROR: env.shell {text!r} is not supported by the local runner "
            "(bash, /bin/bash, sh or /bin/sh)"
        )
    return SHELLS[text]


def parse_buildspec(text: str) -> Buildspec:
    doc = _mapping(load_text_tree(text), "the buildspec")
    version = doc.get("version")
    if version != "0.2":
        raise BuildspecError(f"YAML_FILE_ERROR: version {version!r} is not supported (use 0.2)")
    env = _mapping(doc.get("env"), "env")
    phases_raw = _mapping(doc.get("phases"), "phases")
    unknown = set(phases_raw) - set(PHASES)
    if unknown:
        raise BuildspecError(f"YAML_FILE_ERROR: unknown phases {sorted(unknown)}")
    artifacts_raw = _mapping(doc.get("artifacts"), "artifacts")
    secondary = _mapping(artifacts_raw.get("secondary-artifacts"), "artifacts.secondary-artifacts")
    cache = _mapping(doc.get("cache"), "cache")
    exported = _commands(env.get("exported-variables"), "env.exported-variables")
    for i, name in enumerate(exported):
        if not name.isidentifier():
            raise BuildspecError(
                f"YAML_FILE_ERROR: env.exported-variables[{i}] {name!r} is not a variable name"
            )
    return Buildspec(
        variables=_string_map(env.get("variables"), "env.variables"),
        parameter_store=_string_map(env.get("parameter-store"), "env.parameter-store"),
        secrets_manager=_string_map(env.get("secrets-manager"), "env.secrets-manager"),
        exported_variables=exported,
        shell=_shell(env.get("shell")),
        phases=[_phase(name, phases_raw[name]) for name in PHASES if name in phases_raw],
        artifacts=_artifact(artifacts_raw, "artifacts") if artifacts_raw.get("files") else None,
        secondary_artifacts={
            name: _artifact(spec, f"artifacts.secondary-artifacts.{name}")
            for name, spec in secondary.items()
        },
        reports=[
            _report(name, spec) for name, spec in _mapping(doc.get("reports"), "reports").items()
        ],
        cache_paths=_commands(cache.get("paths"), "cache.paths"),
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


def _check_directory_links(base: Path, root: Path) -> None:
    """Refuse a symlinked directory that leaves the source or loops back into itself
    before any pattern is matched: globbing follows directory links, and the worker (root)
    walking ``out -> /`` would list the whole host before the per-file check refused it."""
    for dirpath, dirnames, _ in os.walk(base):  # does not follow links
        for name in dirnames:
            link = Path(dirpath) / name
            if not link.is_symlink():
                continue
            target = link.resolve()
            rel = link.relative_to(base).as_posix()
            if not target.is_relative_to(root):
                raise ArtifactPathError(f"{rel!r} links to a directory outside the source")
            if link.parent.resolve().is_relative_to(target):
                raise ArtifactPathError(f"{rel!r} links to a directory that contains it (a loop)")


def select_files(
    patterns: list[str], exclude: list[str], src: Path, base_directory: str | None
) -> dict[str, Path]:
    """Files under ``src`` (or its ``base_directory``) that ``patterns`` select and ``exclude``
    does not, keyed by their path relative to that base. Nothing may resolve outside ``src``."""
    root = src.resolve()
    base = src / base_directory if base_directory else src
    if not base.resolve().is_relative_to(root):
        raise ArtifactPathError(f"base-directory {base_directory!r} leaves the source")
    selected: dict[str, Path] = {}
    if base.is_dir():
        _check_directory_links(base, root)
        for pattern in patterns:
            selected.update(_glob(base, pattern))
        for pattern in exclude:
            for rel in _glob(base, pattern):
                selected.pop(rel, None)
    for rel, path in selected.items():
        if not path.resolve().is_relative_to(root):
            raise ArtifactPathError(f"artifact path {rel!r} resolves outside the source")
    return selected


def collect_artifacts(spec: ArtifactSpec, src: Path, dest: Path) -> int:
    """Copy the files ``spec`` selects from ``src`` into ``dest``; returns how many.

    Paths are kept relative to ``base-directory`` (or the source root) unless
    ``discard-paths`` flattens them, like CodeBuild. Zero matches is an error, as on
    CodeBuild: an empty artifact almost always means a wrong pattern, not an empty build.
    """
    selected = select_files(spec.files, spec.exclude, src, spec.base_directory)
    if not selected:
        raise ArtifactPathError(
            f"no matching artifact paths found for {spec.files}"
            + (f" under base-directory {spec.base_directory!r}" if spec.base_directory else "")
        )
    for rel, path in sorted(selected.items()):
        target = dest / (path.name if spec.discard_paths else rel)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target)
    return len(selected)
