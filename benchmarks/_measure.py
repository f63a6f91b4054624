"""What the chain, fan-out and contention benchmarks measure with, through public interfaces
only: Conveyor's event stream, Redis's own counters, moto's request log and the OS.

- :class:`EventTail` reads the ``conveyor:events`` stream with XREAD BLOCK, as a client
  would, and keeps each execution's events (level, state, stage, action) with the entry id's
  millisecond timestamp (Redis's clock at the XADD, i.e. at the commit of the transition).
  No GetPipelineExecution polling: for dozens of executions that would burn the CPU being
  measured.
- :class:`DoneTail` does the same for the raw side's completion stream.
- :func:`cas_retries` reads ``conveyor:stats:cas_retries`` (compare-and-set retries, when
  the engine counts them; ``None`` while the key does not exist).
- :func:`redis_calls` is Redis's ``INFO commandstats`` (calls per command, both the state
  and the broker databases), :class:`MotoLog` counts the S3 requests moto served.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

from benchmarks._stack import Bench
from benchmarks.overhead import cpu_delta, cpu_snapshot

EVENTS_KEY = "conveyor:events"
CAS_RETRIES_KEY = "conveyor:stats:cas_retries"
LEVELS = {
    "CodePipeline Pipeline Execution State Change": "pipeline",
    "CodePipeline Stage Execution State Change": "stage",
    "CodePipeline Action Execution State Change": "action",
}
# A pipeline execution has ended once its state is none of these.
NOT_ENDED = frozenset({"STARTED", "STOPPING", "RESUMED", "IN_PROGRESS"})
DRIVER = "driver (this process)"


def stream_ms(entry_id: bytes) -> int:
    return int(entry_id.split(b"-", 1)[0])


class StreamTail:
    """XREAD BLOCK on one stream, from the entry that is the last one when this is made."""

    def __init__(self, url: str, key: str) -> None:
        self.r = redis.Redis.from_url(url, socket_timeout=None)
        self.key = key
        last: Any = self.r.xrevrange(key, count=1)
        self.last: bytes = last[0][0] if last else b"0-0"
        self.entries = 0

    def read(self, block_ms: int) -> list[tuple[int, dict[bytes, bytes]]]:
        rows: Any = self.r.xread({self.key: self.last}, count=1000, block=block_ms)
        out = []
        for _key, entries in rows or []:
            for rid, fields in entries:
                self.last = rid
                out.append((stream_ms(rid), fields))
        self.entries += len(out)
        return out

    def close(self) -> None:
        self.r.close()


@dataclass(frozen=True)
class Event:
    ms: int  # the stream entry id's time: when the transition that emitted it committed
    level: str  # pipeline | stage | action
    state: str
    stage: str | None
    action: str | None


class EventTail(StreamTail):
    """Conveyor's EventBridge-shaped events, grouped by execution id."""

    def __init__(self, url: str) -> None:
        super().__init__(url, EVENTS_KEY)
        self.events: dict[str, list[Event]] = defaultdict(list)
        self.ends: dict[str, Event] = {}

    def pump(self, block_ms: int = 500) -> None:
        for ms, fields in self.read(block_ms):
            raw = fields.get(b"event")
            if raw is None:
                continue
            ev = json.loads(raw)
            level = LEVELS.get(ev.get("detail-type", ""))
            detail = ev.get("detail") or {}
            eid = detail.get("execution-id")
            if level is None or eid is None:
                continue
            e = Event(
                ms, level, str(detail.get("state")), detail.get("stage"), detail.get("action")
            )
            self.events[eid].append(e)
            if level == "pipeline" and e.state not in NOT_ENDED:
                self.ends.setdefault(eid, e)

    def wait_ended(self, eids: Iterable[str], timeout: float, what: str) -> dict[str, Event]:
        """The pipeline-level event that ended each execution (SUCCEEDED, FAILED, ...)."""
        want = set(eids)
        deadline = time.monotonic() + timeout
        while not want <= self.ends.keys():
            if time.monotonic() > deadline:
                missing = len(want - self.ends.keys())
                raise TimeoutError(f"{what}: {missing} of {len(want)} executions still running")
            self.pump()
        return {e: self.ends[e] for e in want}

    def wait_events(self, eids: Iterable[str], match: Any, timeout: float, what: str) -> None:
        """Until every execution in ``eids`` has an event for which ``match(e)`` is true."""
        want = set(eids)
        deadline = time.monotonic() + timeout
        while True:
            if all(any(match(e) for e in self.events.get(x, ())) for x in want):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"{what}: not seen within {timeout:g}s")
            self.pump()

    def forget(self, eids: Iterable[str]) -> None:
        for e in eids:
            self.events.pop(e, None)
            self.ends.pop(e, None)


class DoneTail(StreamTail):
    """The raw side's completion entries (``{"run": ...}``), by run."""

    def __init__(self, url: str, key: str) -> None:
        super().__init__(url, key)
        self.done: dict[str, list[int]] = defaultdict(list)

    def wait(self, run: str, count: int, timeout: float) -> list[int]:
        deadline = time.monotonic() + timeout
        while len(self.done[run]) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"raw run {run}: {len(self.done[run])} of {count} done")
            for ms, fields in self.read(500):
                self.done[fields.get(b"run", b"").decode()].append(ms)
        return self.done.pop(run)


# -- counters ----------------------------------------------------------------------------


def cas_retries(r: redis.Redis) -> int | None:
    raw: Any = r.get(CAS_RETRIES_KEY)
    return None if raw is None else int(raw)


def cas_increase(before: int | None, after: int | None) -> int | None:
    return None if after is None else after - (before or 0)


def cas_text(n: int | None) -> str:
    return (
        "key absent (none counted yet, or this engine does not count them)" if n is None else str(n)
    )


def redis_calls(r: redis.Redis) -> dict[str, int]:
    stats: Any = r.info("commandstats")
    return {str(k).removeprefix("cmdstat_"): int(v["calls"]) for k, v in stats.items()}


def counter_delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {k: v - before.get(k, 0) for k, v in after.items() if v - before.get(k, 0)}


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_MOTO_LINE = re.compile(r'"(GET|PUT|POST|HEAD|DELETE) (/[^ ]*) HTTP/[0-9.]+" (\d+)')


class MotoLog:
    """S3 requests moto served since the last call, by method (from its request log)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.offset = path.stat().st_size if path and path.exists() else 0

    def since(self) -> dict[str, int]:
        if self.path is None or not self.path.exists():
            return {}
        with self.path.open("rb") as fh:
            fh.seek(self.offset)
            data = fh.read()
        self.offset += len(data)
        text = _ANSI.sub("", data.decode("utf-8", "replace"))
        return dict(Counter(m.group(1) for m in _MOTO_LINE.finditer(text)))


@dataclass
class Window:
    """Everything counted between two points: CPU by process tree, Redis commands, S3
    requests, CAS retries."""

    cpu: dict[str, float]
    redis: dict[str, int]
    s3: dict[str, int]
    cas: int | None


class Meter:
    """Takes :class:`Window` measurements of the whole stack."""

    def __init__(self, bench: Bench) -> None:
        self.bench = bench
        self.r = redis.Redis.from_url(bench.env["CONVEYOR_REDIS_URL"])
        self.moto = MotoLog(bench.s3.log_path)
        self._cpu: dict[str, float] = {}
        self._calls: dict[str, int] = {}
        self._cas: int | None = None

    def start(self) -> None:
        self.moto.since()
        self._cas = cas_retries(self.r)
        self._calls = redis_calls(self.r)
        self._cpu = cpu_snapshot(self.bench)

    def stop(self) -> Window:
        cpu = cpu_delta(self._cpu, cpu_snapshot(self.bench), 1)
        calls = counter_delta(self._calls, redis_calls(self.r))
        calls.pop("info", None)  # this meter's own INFO
        return Window(cpu, calls, self.moto.since(), cas_increase(self._cas, cas_retries(self.r)))

    def close(self) -> None:
        self.r.close()


def add_window(total: Window | None, w: Window | None) -> Window | None:
    if w is None:
        return total
    if total is None:
        return Window(dict(w.cpu), dict(w.redis), dict(w.s3), w.cas)
    cas = None if total.cas is None and w.cas is None else (total.cas or 0) + (w.cas or 0)
    return Window(
        {k: total.cpu.get(k, 0.0) + w.cpu.get(k, 0.0) for k in total.cpu.keys() | w.cpu.keys()},
        dict(Counter(total.redis) + Counter(w.redis)),
        dict(Counter(total.s3) + Counter(w.s3)),
        cas,
    )


def stack_cpu(w: Window) -> float:
    """CPU seconds of every process tree of the stack (not this driver)."""
    return sum(v for k, v in w.cpu.items() if k != DRIVER)


# -- small helpers -----------------------------------------------------------------------


def pct(xs: list[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100) of ``xs``; 0.0 when empty."""
    if not xs:
        return 0.0
    s = sorted(xs)
    return s[max(0, math.ceil(q / 100 * len(s)) - 1)]


def count_keys(s3: Any, bucket: str, prefix: str = "") -> Counter[str]:
    """Objects in ``bucket`` under ``prefix``, counted by the first path segment after it."""
    out: Counter[str] = Counter()
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            out[obj["Key"][len(prefix) :].split("/", 1)[0]] += 1
    return out


def empty_bucket(s3: Any, bucket: str) -> None:
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
        if keys:
            s3.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})
