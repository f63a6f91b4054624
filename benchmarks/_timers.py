"""Wall-clock and CPU timers around chosen functions, for in-process breakdowns.

Standard library only (plus what it wraps), so the same code times the current tree and an
old checkout of it (benchmarks/profile_before.py imports this file on its own).

A spec is a tree of rows, written as a list in depth-first order: ``(module, attribute
path, label, depth)``; several functions of one module may share a row (``"A.f + A.g"``,
for code one version has in two functions and the other in one). A row's parent is the
nearest row above it with one less depth. A call of a row's function is counted in that
row only when the innermost timed call running in the driving thread is the row's parent
(none, for depth 0), so every row is part of its parent and siblings never overlap: "load
the execution" under "apply the result" and the same function called by the worker before
are two rows. Calls made in other threads (heartbeat, scratch cleanup) are not counted;
their CPU is in the top rows' process CPU.

Rows with an empty module name are placeholders: a step the other version of the code has
and this one has not (or not as a function of its own: the attribute path is then the note
shown instead of figures), kept so that two breakdowns line up row by row.

Unlike cProfile, a timer adds microseconds, not a factor, to Python-heavy code.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

# (module, attribute path, label, depth); module "": a placeholder row (attribute path: a
# note, default "not in this code").
Timed = tuple[str, str, str, int]
_MISSING = object()


@dataclass
class Tally:
    calls: int = 0
    wall: float = 0.0  # seconds, perf_counter
    cpu: float = 0.0  # seconds, CPU time of the calling thread
    process_cpu: float = 0.0  # seconds, CPU time of every thread of the process


@dataclass
class Row:
    label: str
    depth: int
    placeholder: bool
    calls: float  # per action
    wall_ms: float  # per action
    cpu_ms: float  # per action


@dataclass
class _Target:
    owner: Any
    name: str
    raw: Any  # what owner's namespace holds (a function, staticmethod, classmethod)
    inherited: bool  # not in the class's own __dict__: delete the wrapper to undo
    func: Callable[..., Any]


def _resolve(module: str, attr: str) -> _Target:
    """The function a spec row names; raises LookupError naming the row if it is gone."""
    try:
        owner: Any = importlib.import_module(module)
        *path, name = attr.split(".")
        for part in path:
            owner = getattr(owner, part)
        if isinstance(owner, type):
            raw = owner.__dict__.get(name, _MISSING)
            inherited = raw is _MISSING
            if inherited:
                raw = getattr(owner, name)
        else:
            raw = getattr(owner, name)
            inherited = False
    except (ImportError, AttributeError) as exc:
        raise LookupError(f"timed function {module}.{attr} does not exist: {exc}") from exc
    func = raw.__func__ if isinstance(raw, staticmethod | classmethod) else raw
    if not callable(func):
        raise LookupError(f"timed {module}.{attr} is not a function")
    return _Target(owner, name, raw, inherited, func)


def check(spec: list[Timed]) -> None:
    """Fail loudly (LookupError) if any row names a function that does not exist, and on a
    malformed tree."""
    prev = -1
    for module, attr, label, depth in spec:
        if depth < 0 or depth > prev + 1:
            raise LookupError(f"timed row {label!r}: depth {depth} after depth {prev}")
        prev = depth
        for part in _parts(attr) if module else []:
            _resolve(module, part)


def _parts(attr: str) -> list[str]:
    return [a.strip() for a in attr.split("+")]


def _parents(spec: list[Timed]) -> list[int | None]:
    out: list[int | None] = []
    for i, (_m, _a, _l, depth) in enumerate(spec):
        parent = None
        for j in range(i - 1, -1, -1):
            if spec[j][3] == depth - 1:
                parent = j
                break
        out.append(parent if depth > 0 else None)
    return out


class Timers:
    """Installs timers for a spec (:meth:`installed`); ``on`` gates the counting (the
    driver turns it off for the actions it does not want in the breakdown)."""

    def __init__(self, spec: list[Timed]) -> None:
        check(spec)
        self.spec = spec
        self.parents = _parents(spec)
        self.tallies = [Tally() for _ in spec]
        self.on = True
        self.actions = 0  # what the driver counts the rows per
        self.extra_cpu: dict[str, float] = {}  # other processes' CPU seconds (Redis, S3)
        self._thread = threading.get_ident()
        self._stack: list[int] = []

    def _wrap(self, func: Callable[..., Any], rows: list[int]) -> Callable[..., Any]:
        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if not self.on or threading.get_ident() != self._thread:
                return func(*args, **kwargs)
            top = self._stack[-1] if self._stack else None
            row = next((r for r in rows if self.parents[r] == top), None)
            if row is None:
                return func(*args, **kwargs)
            self._stack.append(row)
            t, c, pc = time.perf_counter(), time.thread_time(), time.process_time()
            try:
                return func(*args, **kwargs)
            finally:
                tally = self.tallies[row]
                tally.calls += 1
                tally.wall += time.perf_counter() - t
                tally.cpu += time.thread_time() - c
                tally.process_cpu += time.process_time() - pc
                self._stack.pop()

        return wrapper

    @contextlib.contextmanager
    def installed(self) -> Iterator[Timers]:
        by_func: dict[tuple[int, str], tuple[_Target, list[int]]] = {}
        for i, (module, attr, _label, _depth) in enumerate(self.spec):
            for part in _parts(attr) if module else []:
                target = _resolve(module, part)
                key = (id(target.owner), target.name)
                by_func.setdefault(key, (target, []))[1].append(i)
        undo: list[_Target] = []
        try:
            for target, rows in by_func.values():
                wrapped: Any = self._wrap(target.func, rows)
                if isinstance(target.raw, staticmethod):
                    wrapped = staticmethod(wrapped)
                elif isinstance(target.raw, classmethod):
                    wrapped = classmethod(wrapped)
                setattr(target.owner, target.name, wrapped)
                undo.append(target)
            yield self
        finally:
            for target in reversed(undo):
                if target.inherited:
                    delattr(target.owner, target.name)
                else:
                    setattr(target.owner, target.name, target.raw)

    def rows(self, per: int | None = None) -> list[Row]:
        n = per or self.actions or 1
        return [
            Row(label, depth, not module, t.calls / n, 1000 * t.wall / n, 1000 * t.cpu / n)
            for (module, _a, label, depth), t in zip(self.spec, self.tallies, strict=True)
        ]

    def top(self) -> Tally:
        """The depth-0 rows together."""
        out = Tally()
        for (_m, _a, _l, depth), t in zip(self.spec, self.tallies, strict=True):
            if depth == 0:
                out.calls += t.calls
                out.wall += t.wall
                out.cpu += t.cpu
                out.process_cpu += t.process_cpu
        return out


_INDENT = "&nbsp;&nbsp;&nbsp;&nbsp;"


def profile_table(timers: Timers, per: int | None = None, *, totals: bool = False) -> list[str]:
    """The breakdown as a markdown table: component, calls, ms wall, ms CPU, per action
    (``totals``: calls and seconds in all instead); then the top rows' time outside the
    rows below them, the CPU of the process's other threads, and the CPU of the other
    processes the driver measured (Redis, the S3 server)."""
    n = 1 if totals else per or timers.actions or 1
    scale = 1.0 if totals else 1000.0  # seconds, or ms

    def num(x: float) -> str:
        return f"{scale * x / n:.2f}"

    if totals:
        head = "| component | calls | s wall | s CPU |"
    else:
        head = "| component | calls per action | ms wall per action | ms CPU per action |"
    lines = [head, "| --- | --- | --- | --- |"]
    for (module, attr, label, depth), t in zip(timers.spec, timers.tallies, strict=True):
        name = f"{_INDENT * depth}{label}"
        if not module:
            lines.append(f"| {name} | - ({attr or 'not in this code'}) | - | - |")
        else:
            calls = f"{t.calls}" if totals else f"{t.calls / n:.2f}"
            lines.append(f"| {name} | {calls} | {num(t.wall)} | {num(t.cpu)} |")
    top = timers.top()
    children = [
        t for (_m, _a, _l, depth), t in zip(timers.spec, timers.tallies, strict=True) if depth == 1
    ]
    rest_wall = top.wall - sum(t.wall for t in children)
    rest_cpu = top.cpu - sum(t.cpu for t in children)
    lines.append(
        f"| {_INDENT}*rest, outside the rows above (glue: models, Job, log files, scratch "
        f"directories, threads...)* | - | {num(rest_wall)} | {num(rest_cpu)} |"
    )
    lines.append(
        "| *CPU of the process's other threads meanwhile (heartbeat, scratch removal, "
        f"transfer pools)* | - | - | {num(top.process_cpu - top.cpu)} |"
    )
    for name, secs in sorted(timers.extra_cpu.items()):
        lines.append(f"| *CPU of {name}, another process, meanwhile* | - | - | {num(secs)} |")
    return lines
