"""Timestamps follow commit order: an event applied after another never dates earlier."""

from __future__ import annotations

from engine.definition import PipelineDeclaration
from engine.execution import ActionResult
from engine.messages import ActionCompleted, Started, new_execution
from engine.run import PipelineRun
from engine.scheduler import decide


def _decl() -> PipelineDeclaration:
    def act(name: str) -> dict:
        return {
            "name": name,
            "actionTypeId": {
                "category": "Build",
                "owner": "AWS",
                "provider": "CodeBuild",
                "version": "1",
            },
            "configuration": {"ProjectName": "p"},
        }

    return PipelineDeclaration.model_validate(
        {
            "name": "clock",
            "executionMode": "QUEUED",
            "stages": [
                {"name": "Build", "actions": [act("A")]},
                {"name": "Package", "actions": [act("P")]},
            ],
        }
    )


def test_an_event_applied_later_with_an_older_clock_never_dates_before_the_last_commit() -> None:
    decl, run = _decl(), PipelineRun(name="clock")
    for i, eid in enumerate(("e1", "e2")):
        ex = new_execution(
            execution_id=eid,
            definition=decl,
            version=1,
            artifact_bucket="b",
            now=float(i),
            variables={},
        )
        run, _ = decide(run, Started(now=float(i), execution=ex))
    ok = ActionResult(succeeded=True)
    run, _ = decide(
        run,
        ActionCompleted(
            now=2.0, execution_id="e1", stage="Build", action="A", attempt=1, result=ok
        ),
    )  # e1 -> Package, e2 -> Build
    # Two engine workers: e2's Build completion is stamped 9.0, e1's Package completion
    # 10.0, but e1's commits first (e2's CAS lost the race and was retried).
    run, _ = decide(
        run,
        ActionCompleted(
            now=10.0, execution_id="e1", stage="Package", action="P", attempt=1, result=ok
        ),
    )
    e1_left = run.finished["e1"].action("Package", "P").last_update_time
    run, _ = decide(
        run,
        ActionCompleted(
            now=9.0, execution_id="e2", stage="Build", action="A", attempt=1, result=ok
        ),
    )
    e2_entered = run.executions["e2"].action("Package", "P").start_time
    assert e2_entered >= e1_left, (e2_entered, e1_left)
