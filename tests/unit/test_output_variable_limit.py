"""The worker enforces CodePipeline's quota on an action's output variables (122,880 bytes,
names and values together), failing the action instead of storing an oversized map."""

from __future__ import annotations

import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any, ClassVar

from engine.definition import PipelineDeclaration
from engine.execution import new_execution
from engine.settings import Settings
from engine.variables import MAX_OUTPUT_VARIABLES_BYTES
from providers.base import ActionTypeId, Category, Job, Provider, ProviderConfig, Result
from providers.sandbox import SandboxPolicy
from workers import runner
from workers.artifacts import ArtifactRef
from workers.scratch import ScratchSpace


class _NoConfig(ProviderConfig):
    pass


class _Emitter(Provider):
    """A build action whose output variables the test chooses."""

    action_type = ActionTypeId(
        category=Category.BUILD, owner="Custom", provider="Emitter", version="1"
    )
    Config = _NoConfig
    variables: ClassVar[dict[str, str]] = {}
    succeeds: ClassVar[bool] = True

    def run(self, job: Job) -> Result:
        if not self.succeeds:
            return Result(
                succeeded=False,
                error_code="JobFailed",
                error_message="tests failed",
                output_variables=dict(self.variables),
            )
        return Result(summary="done", output_variables=dict(self.variables))


class _Registry:
    def get(self, action_type: ActionTypeId) -> type[Provider] | None:
        return _Emitter


class _Artifacts:
    def upload_file(self, path: Path, bucket: str, key: str) -> ArtifactRef:
        return ArtifactRef(bucket=bucket, key=key)

    def upload_dir(self, path: Path, bucket: str, key: str) -> ArtifactRef:
        return ArtifactRef(bucket=bucket, key=key)


def _run(tmp_path: Path, variables: dict[str, str], *, succeeds: bool = True) -> Any:
    decl = PipelineDeclaration.model_validate(
        {
            "name": "p",
            "stages": [
                {
                    "name": "Build",
                    "actions": [
                        {
                            "name": "Emit",
                            "actionTypeId": {
                                "category": "Build",
                                "owner": "Custom",
                                "provider": "Emitter",
                                "version": "1",
                            },
                        }
                    ],
                }
            ],
        }
    )
    state = new_execution(
        execution_id="e-1",
        definition=decl,
        version=1,
        digest="d",
        artifact_bucket="b",
        variables={},
        timeout_minutes=lambda action: 60,
    )
    state.stages[0].actions[0].action_execution_id = "e-1-emit-1"
    rt = SimpleNamespace(
        registry=_Registry(),
        artifacts=_Artifacts(),
        settings=Settings(workdir=str(tmp_path)),
        scratch=ScratchSpace(str(tmp_path)),
        sandbox=SandboxPolicy(),
    )
    _Emitter.variables = variables
    _Emitter.succeeds = succeeds
    return runner.execute(rt, state, "Build", "Emit", 1, threading.Event())  # type: ignore[arg-type]


def _sized(total: int) -> dict[str, str]:
    """Variables whose names and values total exactly ``total`` UTF-8 bytes."""
    return {"BIG": "é" * ((total - 3) // 2) + "x" * ((total - 3) % 2)}


def test_variables_at_the_limit_pass(tmp_path: Path) -> None:
    variables = _sized(MAX_OUTPUT_VARIABLES_BYTES)
    result = _run(tmp_path, variables)
    assert result.succeeded, result.error_message
    assert result.output_variables == variables


def test_variables_over_the_limit_fail_the_action(tmp_path: Path) -> None:
    result = _run(tmp_path, _sized(MAX_OUTPUT_VARIABLES_BYTES + 1))
    assert not result.succeeded
    assert result.error_code == "OutputVariablesSizeExceeded"
    assert str(MAX_OUTPUT_VARIABLES_BYTES) in (result.error_message or "")
    assert str(MAX_OUTPUT_VARIABLES_BYTES + 1) in (result.error_message or "")
    assert result.output_variables == {}


def test_a_failed_action_keeps_its_own_error(tmp_path: Path) -> None:
    result = _run(tmp_path, _sized(MAX_OUTPUT_VARIABLES_BYTES * 2), succeeds=False)
    assert (result.succeeded, result.error_code) == (False, "JobFailed")
    assert result.output_variables == {}


def test_the_limit_is_codepipelines() -> None:
    assert MAX_OUTPUT_VARIABLES_BYTES == 122_880  # "Variable quotas", CodePipeline user guide
