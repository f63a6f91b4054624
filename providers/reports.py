"""Test reports of a build (buildspec ``reports``), parsed into per-group totals.

Report files are written by the build, so they are untrusted input: XML is parsed with
defusedxml (no entity expansion, no external entities, no DTD tricks) and every file is
size-capped before it is read. Only JUNITXML and CUCUMBERJSON are parsed; a group in
another of CodeBuild's formats is listed as not parsed rather than guessed at.

As on CodeBuild, failed test cases do not fail the build: a build fails when a command
does. The totals only describe what the tests reported.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from xml.etree.ElementTree import Element

import defusedxml.ElementTree as SafeET
from defusedxml import DefusedXmlException

from providers.buildspec import ArtifactPathError, ReportGroupSpec, select_files

PARSED_FORMATS = ("JUNITXML", "CUCUMBERJSON")
MAX_REPORT_FILE_BYTES = 10 * 1024 * 1024
MAX_REPORT_FILES = 200
# Cucumber reports durations in nanoseconds.
_NANOS = 1_000_000_000


@dataclass
class GroupTotals:
    """One report group's test cases, counted by CodeBuild's statuses."""

    name: str
    file_format: str
    files: int = 0
    passed: int = 0
    failed: int = 0
    skipped: int = 0
    errored: int = 0
    duration_seconds: float = 0.0
    problems: list[str] = field(default_factory=list)  # files that could not be parsed

    @property
    def total(self) -> int:
        return self.passed + self.failed + self.skipped + self.errored

    def describe(self) -> str:
        """``12 passed, 1 failed (report group unit)``, zero counts left out."""
        counts = [
            f"{n} {label}"
            for n, label in (
                (self.passed, "passed"),
                (self.failed, "failed"),
                (self.errored, "errored"),
                (self.skipped, "skipped"),
            )
            if n
        ]
        if not counts:
            counts = ["no test cases"]
        return f"{', '.join(counts)} (report group {self.name})"


class ReportError(ValueError):
    """One report file that cannot be parsed (the others still count)."""


def collect_reports(groups: list[ReportGroupSpec], src: Path) -> list[GroupTotals]:
    """Parse every group's files under ``src``; problems are recorded, never raised."""
    out: list[GroupTotals] = []
    for spec in groups:
        totals = GroupTotals(name=spec.name, file_format=spec.file_format)
        out.append(totals)
        if spec.file_format not in PARSED_FORMATS:
            totals.problems.append(
                f"file-format {spec.file_format} is not parsed by the local runner "
                f"({', '.join(PARSED_FORMATS)} are)"
            )
            continue
        try:
            files = select_files(spec.files, [], src, spec.base_directory)
        except ArtifactPathError as exc:
            totals.problems.append(str(exc))
            continue
        if not files:
            totals.problems.append(f"no report files match {spec.files}")
            continue
        for rel, path in sorted(files.items())[:MAX_REPORT_FILES]:
            try:
                _add_file(totals, path, spec.file_format)
                totals.files += 1
            except ReportError as exc:
                totals.problems.append(f"{rel}: {exc}")
        if len(files) > MAX_REPORT_FILES:
            totals.problems.append(
                f"{len(files)} report files; only the first {MAX_REPORT_FILES} were read"
            )
    return out


def summary_text(groups: list[GroupTotals]) -> str | None:
    """``tests: 12 passed, 1 failed (report group unit)``, or None without reports."""
    if not groups:
        return None
    return "tests: " + "; ".join(g.describe() for g in groups)


def write_json(groups: list[GroupTotals], path: Path) -> None:
    """The machine-readable form, kept beside the build log."""
    data = [{**asdict(g), "total": g.total} for g in groups]
    path.write_text(json.dumps({"reportGroups": data}, indent=2))


def _read(path: Path) -> bytes:
    size = path.stat().st_size
    if size > MAX_REPORT_FILE_BYTES:
        raise ReportError(f"{size} bytes; report files are read up to {MAX_REPORT_FILE_BYTES}")
    return path.read_bytes()


def _add_file(totals: GroupTotals, path: Path, file_format: str) -> None:
    data = _read(path)
    if file_format == "JUNITXML":
        _add_junit(totals, data)
    else:
        _add_cucumber(totals, data)


# -- JUnit XML ---------------------------------------------------------------------------


def _add_junit(totals: GroupTotals, data: bytes) -> None:
    try:
        root = SafeET.fromstring(data)
    except DefusedXmlException as exc:
        raise ReportError(f"refused: {type(exc).__name__} (unsafe XML)") from exc
    except SafeET.ParseError as exc:
        raise ReportError(f"not well-formed XML: {exc}") from exc
    if root.tag not in ("testsuites", "testsuite"):
        raise ReportError(f"root element <{root.tag}> is not <testsuites> or <testsuite>")
    for case in root.iter("testcase"):
        status = _junit_status(case)
        setattr(totals, status, getattr(totals, status) + 1)
        totals.duration_seconds += _seconds(case.get("time"))


def _junit_status(case: Element) -> str:
    children = {child.tag for child in case}
    if "failure" in children:
        return "failed"
    if "error" in children:
        return "errored"
    if "skipped" in children:
        return "skipped"
    return "passed"


def _seconds(value: str | None) -> float:
    if not value:
        return 0.0
    try:
        return max(0.0, float(value.replace(",", "")))
    except ValueError:
        return 0.0


# -- Cucumber JSON -----------------------------------------------------------------------


def _add_cucumber(totals: GroupTotals, data: bytes) -> None:
    try:
        features = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ReportError(f"not valid JSON: {exc}") from exc
    if not isinstance(features, list):
        raise ReportError("a Cucumber JSON report is a list of features")
    for feature in features:
        elements = feature.get("elements") if isinstance(feature, dict) else None
        for scenario in elements if isinstance(elements, list) else []:
            if not isinstance(scenario, dict) or scenario.get("type") == "background":
                continue  # background steps belong to the scenarios that follow
            status, nanos = _scenario(scenario)
            setattr(totals, status, getattr(totals, status) + 1)
            totals.duration_seconds += nanos / _NANOS


def _scenario(scenario: dict[str, Any]) -> tuple[str, float]:
    """A scenario fails if a step (or hook) failed, is skipped if one did not run."""
    statuses: set[str] = set()
    nanos = 0.0
    for key in ("before", "steps", "after"):
        steps = scenario.get(key)
        for step in steps if isinstance(steps, list) else []:
            result = step.get("result") if isinstance(step, dict) else None
            if not isinstance(result, dict):
                continue
            statuses.add(str(result.get("status", "")).lower())
            duration = result.get("duration")
            if isinstance(duration, int | float) and duration > 0:
                nanos += duration
    if "failed" in statuses:
        return "failed", nanos
    if statuses & {"skipped", "pending", "undefined", "ambiguous"}:
        return "skipped", nanos
    return "passed", nanos
