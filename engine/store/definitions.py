"""Pipeline definitions in Redis: every version of every pipeline, and a cache of parsed
declarations by digest.

A pipeline is one hash (:func:`keys.pipeline`). Each version is stored once as JSON with its
SHA-256; executions name the version they run by that digest, so the declaration a process
parsed once is shared by every execution of that version (a version never changes, and a
pipeline deleted and created again gets new digests only if its content differs — the
same content is the same declaration either way).
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import redis

from engine import keys
from engine.arns import DEFAULT_ACCOUNT_ID
from engine.definition import PipelineDeclaration
from engine.errors import (
    ConflictError,
    PipelineNameInUseError,
    PipelineNotFoundError,
    PipelineVersionNotFoundError,
)
from engine.execution import ExecutionState
from engine.store.connection import redis_errors

MAX_CAS_RETRIES = 50
CACHED_DECLARATIONS = 256
MAX_VERSIONS = 100


@dataclass(frozen=True)
class PipelineRecord:
    """One version of a pipeline, as GetPipeline shows it."""

    declaration: PipelineDeclaration
    version: int
    digest: str
    created: float
    updated: float


def digest_of(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


class Definitions:
    """``max_versions`` versions of each pipeline are kept: an update drops the oldest
    beyond that (GetPipeline of one is PipelineVersionNotFoundException), except versions
    that ``in_use(name)`` says an unfinished execution still runs."""

    def __init__(
        self,
        client: redis.Redis,
        *,
        account_id: str = DEFAULT_ACCOUNT_ID,
        max_versions: int = MAX_VERSIONS,
        in_use: Callable[[str], set[int]] | None = None,
    ) -> None:
        self.r = client
        self.account_id = account_id  # named in PipelineNotFoundException's message
        self.max_versions = max(1, max_versions)
        self.in_use = in_use
        self._parsed: OrderedDict[str, PipelineDeclaration] = OrderedDict()
        self._parsed_guard = threading.Lock()  # the API's threads share this cache

    # ------------------------------------------------------------------ writing

    def create(self, decl: PipelineDeclaration) -> PipelineRecord:
        """Store version 1 of a new pipeline; its name must be free."""
        return self._put(decl, create=True)

    def update(self, decl: PipelineDeclaration) -> PipelineRecord:
        """Store the next version of an existing pipeline."""
        return self._put(decl, create=False)

    def _put(self, decl: PipelineDeclaration, *, create: bool) -> PipelineRecord:
        key = keys.pipeline(decl.name)
        running = self.in_use(decl.name) if self.in_use is not None and not create else set()
        with redis_errors(f"storing pipeline {decl.name}"), self.r.pipeline() as p:
            for _ in range(MAX_CAS_RETRIES):
                try:
                    p.watch(key)  # type: ignore[no-untyped-call]
                    current, created, oldest = p.hmget(key, ["current", "created", "oldest"])
                    if create and current is not None:
                        raise PipelineNameInUseError(f"pipeline {decl.name} already exists")
                    if not create and current is None:
                        raise PipelineNotFoundError.named(decl.name, self.account_id)
                    version = int(current or 0) + 1
                    raw = json.dumps({**decl.to_aws(), "version": version})
                    digest = digest_of(raw)
                    now = time.time()
                    first = now if created is None else float(created)
                    pruned, kept = _pruned(int(oldest or 1), version, self.max_versions, running)
                    p.multi()
                    if pruned:
                        p.hdel(key, *[f"{f}{v}" for v in pruned for f in ("v", "h")])
                    p.hset(
                        key,
                        mapping={
                            "current": version,
                            "digest": digest,
                            f"v{version}": raw,
                            f"h{version}": digest,
                            "created": first,
                            "updated": now,
                            "oldest": kept,
                        },
                    )
                    p.sadd(keys.PIPELINES, decl.name)
                    p.execute()
                except redis.WatchError:
                    continue
                self._remember(digest, decl)
                return PipelineRecord(decl, version, digest, first, now)
        raise ConflictError(f"pipeline {decl.name} is being changed concurrently; try again")

    # ------------------------------------------------------------------ reading

    def get(self, name: str, version: int | None = None) -> PipelineRecord:
        key = keys.pipeline(name)
        with redis_errors(f"reading pipeline {name}"):
            current, created, updated = self.r.hmget(key, ["current", "created", "updated"])
            if current is None:
                raise PipelineNotFoundError.named(name, self.account_id)
            wanted = version or int(current)
            digest = self.r.hget(key, f"h{wanted}")
            if digest is None:
                raise PipelineVersionNotFoundError(f"pipeline {name} has no version {version}")
            decl = self.declaration(name, wanted, str(digest))
        return PipelineRecord(decl, wanted, str(digest), float(created or 0), float(updated or 0))

    def current(self, name: str) -> tuple[int, str] | None:
        """The latest version and its digest, or None if there is no such pipeline."""
        with redis_errors(f"reading pipeline {name}"):
            current, digest = self.r.hmget(keys.pipeline(name), ["current", "digest"])
        return None if current is None else (int(current), str(digest))

    def names(self) -> list[str]:
        with redis_errors("listing pipelines"):
            return sorted(str(n) for n in self.r.smembers(keys.PIPELINES))

    def declaration(self, name: str, version: int, digest: str) -> PipelineDeclaration:
        """The declaration with this digest: from the cache, else read and parsed once."""
        with self._parsed_guard:
            found = self._parsed.get(digest)
            if found is not None:
                self._parsed.move_to_end(digest)
                return found
        with redis_errors(f"reading pipeline {name} version {version}"):
            raw = self.r.hget(keys.pipeline(name), f"v{version}")
        if raw is None or digest_of(str(raw)) != digest:
            raise PipelineVersionNotFoundError(
                f"pipeline {name} version {version} is gone (the pipeline was deleted)"
            )
        decl = PipelineDeclaration.model_validate(json.loads(raw))
        self._remember(digest, decl)
        return decl

    def attach(self, ex: ExecutionState) -> ExecutionState:
        """Give a loaded execution its declaration (shared; never mutate it)."""
        if ex.definition is None:
            ex.definition = self.declaration(
                ex.pipeline_name, ex.pipeline_version, ex.definition_digest
            )
        return ex

    def _remember(self, digest: str, decl: PipelineDeclaration) -> None:
        with self._parsed_guard:
            self._parsed[digest] = decl
            self._parsed.move_to_end(digest)
            while len(self._parsed) > CACHED_DECLARATIONS:
                self._parsed.popitem(last=False)


def _pruned(oldest: int, version: int, keep: int, running: set[int]) -> tuple[list[int], int]:
    """The versions to drop when ``version`` is written, and the oldest one left after."""
    drop = [v for v in range(oldest, version - keep + 1) if v not in running]
    remaining = [v for v in range(oldest, version - keep + 1) if v in running]
    return drop, min(remaining, default=max(oldest, version - keep + 1))
