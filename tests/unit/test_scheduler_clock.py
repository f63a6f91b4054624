"""Timestamps follow commit order: an event applied after another never dates earlier.

The store stamps each event with Redis's clock inside its compare-and-set; after a
failover (or when two engine workers race and one retries its transition) an event can
carry an older stamp than the last commit. ``decide`` applies it at the run's clock.
"""

from __future__ import annotations

from engine.execution import ActionResult
from engine.messages import ActionCompleted
from tests.unit.scheduler_world import Shape, World, build_pipeline

OK = ActionResult(succeeded=True)


def test_an_event_applied_later_with_an_older_clock_never_dates_before_the_last_commit() -> None:
    w = World(build_pipeline(Shape(mode="QUEUED")), now=0.0)
    w.start({"Env": "prod"}, now=0.0)
    w.start({"Env": "prod"}, now=1.0)
    w.step(_done("e01", "Source", "Src", 2.0))  # e01 -> Build, e02 -> Source
    # Two engine workers: e02's Source completion is stamped 9.0, e01's first Build
    # completion 10.0, but e01's commits first (e02's compare-and-set lost and was retried).
    w.step(_done("e01", "Build", "A", 10.0))
    e01_done = w.ex("e01").action("Build", "A")
    assert e01_done is not None and e01_done.last_update_time == 10.0
    d = w.step(_done("e02", "Source", "Src", 9.0))
    assert d.run.clock == 10.0
    src = w.ex("e02").action("Source", "Src")
    assert src is not None and src.last_update_time == 10.0
    assert w.ex("e02").last_update_time == 10.0
    assert w.ex("e02").waiting_for == "Build"  # e01 still holds Build (QUEUED)


def test_an_execution_admitted_by_a_commit_starts_at_that_commit() -> None:
    w = World(build_pipeline(Shape(mode="QUEUED")), now=0.0)
    w.start({"Env": "prod"}, now=0.0)
    w.start({"Env": "prod"}, now=1.0)
    for eid, now in (("e01", 2.0), ("e02", 3.0)):
        w.step(_done(eid, "Source", "Src", now))
    for action in ("A", "B"):
        w.step(_done("e01", "Build", action, 10.0))
    # C's completion commits at 20.0: e01 leaves Build and e02, queued, enters it.
    w.step(_done("e01", "Build", "C", 20.0))
    a = w.ex("e02").action("Build", "A")
    assert a is not None and a.start_time == 20.0 and a.deadline == 20.0 + 5 * 60
    # A report stamped before that commit (a Redis failover) is applied at the run's clock.
    late = w.step(_done("e02", "Build", "A", 15.0))
    assert late.run.clock == 20.0
    a = w.ex("e02").action("Build", "A")
    assert a is not None and a.last_update_time == 20.0


def _done(eid: str, stage: str, action: str, now: float) -> ActionCompleted:
    return ActionCompleted(
        now=now, execution_id=eid, stage=stage, action=action, attempt=1, result=OK
    )
