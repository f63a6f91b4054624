"""The Lambda provider's pure parts: function resolution, the event, the environment."""

from __future__ import annotations

import io
import json
import threading
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from providers.base import ActionFailed, ApiCredentials, ArtifactObject, JobOutcome, S3Access
from providers.job_data import pipeline_context
from providers.lambda_invoke import (
    UNSET_HANDLER_KEY,
    Invocation,
    LambdaConfig,
    LambdaSettings,
    event,
    handler_environment,
    job_data,
    run_function,
)

S3 = S3Access("http://s3.local:9000", "AKID", "SECRET", "eu-west-1")


CREDENTIALS = {"accessKeyId": "ASIAJOB", "secretAccessKey": "JOBSECRET", "sessionToken": "T"}


def _invocation(**overrides: object) -> Invocation:
    inv = Invocation(
        function_name="deploy",
        user_parameters='{"stack": "web"}',
        inputs={"Src": ArtifactObject("artifacts", "p/Src/1.zip")},
        outputs={"Out": ArtifactObject("artifacts", "p/Out/2.zip")},
        s3=S3,
        api_endpoint="http://api.local:8484",
        deadline=None,
        cancelled=threading.Event(),
        workdir=Path("/nonexistent"),
        pipeline_context=pipeline_context(
            "p",
            "e-1",
            "Deploy",
            "Call",
            pipeline_arn="arn:aws:codepipeline:eu-west-1:444455556666:p",
        ),
        action_type={"category": "Invoke", "owner": "AWS", "provider": "Lambda", "version": "1"},
        s3_gateway="http://api.local:8484/s3",
        credentials=CREDENTIALS,
    )
    for key, value in overrides.items():
        setattr(inv, key, value)
    return inv


def test_functions_resolve_from_the_environment_before_the_file(tmp_path: Path) -> None:
    table = tmp_path / "functions.json"
    table.write_text(json.dumps({"deploy": "file_mod:handler", "only-file": "other:fn"}))
    settings = LambdaSettings(functions={"deploy": "env_mod:handler"}, functions_file=table)
    assert settings.handler_for("deploy") == "env_mod:handler"
    assert settings.handler_for("only-file") == "other:fn"
    # A Lambda ARN (with a qualifier) names the same function.
    arn = "arn:aws:lambda:us-east-1:123456789012:function:only-file:live"
    assert settings.handler_for(arn) == "other:fn"


def test_an_unknown_function_says_how_to_configure_it() -> None:
    settings = LambdaSettings(functions={"a": "m:f", "b": "m:g"})
    with pytest.raises(ActionFailed) as exc:
        settings.handler_for("deploy")
    assert "function 'deploy' is not configured" in exc.value.message
    assert "CONVEYOR_LAMBDA_FUNCTIONS" in exc.value.message
    assert "(configured: a, b)" in exc.value.message


@pytest.mark.parametrize("spec", ["module_only", ":fn", "mod:"])
def test_a_handler_must_be_module_colon_function(spec: str) -> None:
    with pytest.raises(ActionFailed) as exc:
        LambdaSettings(functions={"f": spec}).handler_for("f")
    assert f"maps to {spec!r}, which is not of the form module:function" in exc.value.message


@pytest.mark.parametrize("content", ["{not json", '["a"]', '{"f": 1}'])
def test_a_bad_functions_file_is_named(tmp_path: Path, content: str) -> None:
    table = tmp_path / "functions.json"
    table.write_text(content)
    with pytest.raises(ActionFailed) as exc:
        LambdaSettings(functions_file=table).handler_for("f")
    assert f"CONVEYOR_LAMBDA_FUNCTIONS_FILE ({table})" in exc.value.message


def test_settings_come_from_conveyor_lambda_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONVEYOR_LAMBDA_FUNCTIONS", '{"f": "m:h"}')
    monkeypatch.setenv("CONVEYOR_LAMBDA_PATH", "/opt/functions")
    settings = LambdaSettings()
    assert settings.handler_for("f") == "m:h"
    assert settings.path == "/opt/functions"


def test_config_requires_a_function_name_and_refuses_unknown_keys() -> None:
    with pytest.raises(ValidationError):
        LambdaConfig.model_validate({"UserParameters": "x"})
    with pytest.raises(ValidationError):
        LambdaConfig.model_validate({"FunctionName": " "})
    with pytest.raises(ValidationError):
        LambdaConfig.model_validate({"FunctionName": "f", "Payload": "x"})


def test_the_event_is_the_one_codepipeline_sends_a_lambda() -> None:
    data = job_data(_invocation(), None)
    sent = event("11111111-abcd-1111-abcd-111111abcdef", data)
    job = sent["CodePipeline.job"]
    assert set(sent) == {"CodePipeline.job"}
    assert job["id"] == "11111111-abcd-1111-abcd-111111abcdef"
    assert job["accountId"] == "111122223333"  # the default account: AWS's example
    assert job["data"] == {
        "actionConfiguration": {
            "configuration": {"FunctionName": "deploy", "UserParameters": '{"stack": "web"}'}
        },
        "inputArtifacts": [
            {
                "revision": None,
                "name": "Src",
                "location": {
                    "type": "S3",
                    "s3Location": {"bucketName": "artifacts", "objectKey": "p/Src/1.zip"},
                },
            }
        ],
        "outputArtifacts": [
            {
                "revision": None,
                "name": "Out",
                "location": {
                    "type": "S3",
                    "s3Location": {"bucketName": "artifacts", "objectKey": "p/Out/2.zip"},
                },
            }
        ],
        # The job's own temporary credentials, never the store's keys (AKID/SECRET).
        "artifactCredentials": CREDENTIALS,
    }
    # The job's own data (GetJobDetails) has more than the event shows.
    assert data["pipelineContext"]["pipelineArn"] == "arn:aws:codepipeline:eu-west-1:444455556666:p"
    assert data["actionTypeId"]["provider"] == "Lambda"


def test_a_continued_job_carries_its_token_and_no_user_parameters_when_unset() -> None:
    data = job_data(_invocation(user_parameters=None), '{"calls": 1}')
    sent = event("id", data)["CodePipeline.job"]["data"]
    assert sent["continuationToken"] == '{"calls": 1}'
    assert sent["actionConfiguration"]["configuration"] == {"FunctionName": "deploy"}


def test_the_handler_environment_points_boto3_at_conveyor_and_hides_the_worker(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CONVEYOR_REDIS_URL", "redis://secret@host")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "worker-token")
    monkeypatch.setenv("AWS_PROFILE", "worker")
    monkeypatch.setenv("HOME", "/home/worker")
    inv = _invocation(api_credentials=ApiCredentials("AKIAWORKERS0000000", "worker-secret"))
    env = handler_environment(inv, LambdaSettings(path="/opt/functions"))
    assert not [k for k in env if k.startswith("CONVEYOR_")]
    assert "AWS_SESSION_TOKEN" not in env and "AWS_PROFILE" not in env
    assert env["HOME"] == "/home/worker"
    assert env["AWS_ENDPOINT_URL_CODEPIPELINE"] == "http://api.local:8484"
    # Artifacts: the S3 gateway, where the event's scoped artifactCredentials work; never
    # the store's endpoint and keys.
    assert env["AWS_ENDPOINT_URL_S3"] == "http://api.local:8484/s3"
    # The workers' API identity for job results.
    assert (env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"]) == (
        "AKIAWORKERS0000000",
        "worker-secret",
    )
    assert env["AWS_REGION"] == env["AWS_DEFAULT_REGION"] == "eu-west-1"
    assert env["AWS_LAMBDA_FUNCTION_NAME"] == "deploy"
    assert env["PYTHONPATH"] == "/opt/functions"


def test_handlers_never_get_the_workers_key() -> None:
    """Unset, a handler signs with a placeholder whose name says what to set; the workers'
    operator key is never a handler's."""
    from engine.settings import Settings
    from workers.located import handler_api_credentials

    workers_only = Settings(
        api_access_key_id="AKIAWORKERS0000000", api_secret_access_key="worker-secret"
    )
    assert handler_api_credentials(workers_only) is None
    env = handler_environment(_invocation(), LambdaSettings())
    assert env["AWS_ACCESS_KEY_ID"] == UNSET_HANDLER_KEY
    assert "AKIAWORKERS0000000" not in env.values()


class _NoJobs:
    """A channel that must not be used: the checks come before any job is created."""

    def create(self, data: dict[str, Any]) -> str:
        raise AssertionError("no job should be created")

    def wait(
        self, job_id: str, deadline: float | None, cancelled: threading.Event
    ) -> JobOutcome | None:
        raise AssertionError("no job should be awaited")

    def close(self, job_id: str) -> None:
        raise AssertionError("no job should be closed")

    def credentials(
        self, reads: list[ArtifactObject], writes: list[ArtifactObject]
    ) -> dict[str, str]:
        raise AssertionError("no credentials should be issued")


def test_no_api_endpoint_fails_before_the_function_runs() -> None:
    settings = LambdaSettings(functions={"deploy": "m:f"})
    with pytest.raises(ActionFailed, match="set CONVEYOR_API_URL"):
        run_function(_invocation(api_endpoint=None), _NoJobs(), io.StringIO(), settings)
    with pytest.raises(ActionFailed, match="function 'deploy' is not configured"):
        run_function(_invocation(), _NoJobs(), io.StringIO(), LambdaSettings())
