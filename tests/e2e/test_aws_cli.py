"""The real AWS CLI (``aws codepipeline ...``, from the dev extras) against the API.

Each command runs the ``aws`` binary of this virtualenv as a subprocess with
``--endpoint-url`` at the in-process server, exactly as a user points it at ``conveyor api``.
The CLI's credentials come from :func:`cli_credentials` alone, so pointing these tests at a
configured key (once the API verifies signatures) is a one-place change.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from engine.execution import ArtifactLocation
from tests.auth_support import ADMIN
from tests.e2e.api_support import BUCKET, definition
from tests.e2e.conftest import ApiServer
from tests.e2e.test_api import complete

AWS = Path(sys.executable).with_name("aws")
REGION = "us-east-1"


def cli_credentials() -> dict[str, str]:
    """The environment the CLI signs with: the one place its keys are chosen."""
    return {
        "AWS_ACCESS_KEY_ID": ADMIN.access_key_id,
        "AWS_SECRET_ACCESS_KEY": ADMIN.secret_access_key,
    }


@pytest.fixture
def aws(api: ApiServer, tmp_path: Path) -> Any:
    """``aws("get-pipeline", "--name", "x")`` -> the parsed JSON output (or the process, with
    ``check=False``). No user configuration leaks in: config and credentials files are
    empty, the region and keys are set here."""
    if not AWS.exists():
        pytest.fail(f"{AWS} is missing: install the dev extras (make install) for awscli")
    empty = tmp_path / "aws-empty"
    empty.write_text("")
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(tmp_path),
        "AWS_CONFIG_FILE": str(empty),
        "AWS_SHARED_CREDENTIALS_FILE": str(empty),
        "AWS_DEFAULT_REGION": REGION,
        "AWS_EC2_METADATA_DISABLED": "true",
        **cli_credentials(),
    }

    def run(*args: str, check: bool = True) -> Any:
        cmd = [str(AWS), "codepipeline", *args, "--endpoint-url", api.url, "--output", "json"]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
        if not check:
            return proc
        assert proc.returncode == 0, f"{' '.join(args)}: {proc.stderr}"
        return json.loads(proc.stdout) if proc.stdout.strip() else {}

    return run


def stage(aws: Any, name: str, stage_name: str) -> dict[str, Any]:
    states = aws("get-pipeline-state", "--name", name)["stageStates"]
    return next(s for s in states if s["stageName"] == stage_name)


def test_pipelines_through_the_aws_cli(aws: Any, tmp_path: Path) -> None:
    skeleton = tmp_path / "create.json"
    skeleton.write_text(
        json.dumps({"pipeline": definition("cli-a"), "tags": [{"key": "team", "value": "ci"}]})
    )
    created = aws("create-pipeline", "--cli-input-json", f"file://{skeleton}")
    assert created["pipeline"]["name"] == "cli-a"
    assert created["tags"] == [{"key": "team", "value": "ci"}]
    for name in ("cli-b", "cli-c"):
        decl = tmp_path / f"{name}.json"
        decl.write_text(json.dumps(definition(name)))
        assert aws("create-pipeline", "--pipeline", f"file://{decl}")["pipeline"]["name"] == name

    got = aws("get-pipeline", "--name", "cli-a")
    assert got["pipeline"]["stages"][0]["name"] == "Source"
    assert got["metadata"]["pipelineArn"].endswith(":cli-a")
    assert isinstance(got["metadata"]["created"], float)  # CLI v1 prints epoch seconds

    # Pagination: --page-size makes the CLI page through with maxResults and join the pages;
    # --max-items stops early and hands back a NextToken to resume from.
    every = aws("list-pipelines", "--page-size", "1")
    assert [p["name"] for p in every["pipelines"]] == ["cli-a", "cli-b", "cli-c"]
    first = aws("list-pipelines", "--max-items", "2", "--page-size", "1")
    assert [p["name"] for p in first["pipelines"]] == ["cli-a", "cli-b"]
    rest = aws("list-pipelines", "--starting-token", first["NextToken"], "--page-size", "1")
    assert [p["name"] for p in rest["pipelines"]] == ["cli-c"]

    arn = got["metadata"]["pipelineArn"]
    aws("tag-resource", "--resource-arn", arn, "--tags", "key=stage,value=prod")
    tags = aws("list-tags-for-resource", "--resource-arn", arn)["tags"]
    assert {t["key"]: t["value"] for t in tags} == {"team": "ci", "stage": "prod"}

    rule_types = aws("list-rule-types")["ruleTypes"]
    assert "DeploymentWindow" in {r["id"]["provider"] for r in rule_types}

    aws("delete-pipeline", "--name", "cli-c")
    assert [p["name"] for p in aws("list-pipelines")["pipelines"]] == ["cli-a", "cli-b"]


def test_executions_transitions_and_approvals_through_the_aws_cli(
    aws: Any, api: ApiServer, tmp_path: Path
) -> None:
    decl = tmp_path / "demo.json"
    decl.write_text(json.dumps(definition("demo")))
    aws("create-pipeline", "--pipeline", f"file://{decl}")

    aws(
        "disable-stage-transition",
        "--pipeline-name", "demo",
        "--stage-name", "Build",
        "--transition-type", "Inbound",
        "--reason", "Hold for review",
    )  # fmt: skip
    held = stage(aws, "demo", "Build")["inboundTransitionState"]
    assert (held["enabled"], held["disabledReason"]) == (False, "Hold for review")
    aws(
        "enable-stage-transition",
        "--pipeline-name", "demo",
        "--stage-name", "Build",
        "--transition-type", "Inbound",
    )  # fmt: skip
    assert stage(aws, "demo", "Build")["inboundTransitionState"]["enabled"] is True

    started = aws("start-pipeline-execution", "--name", "demo", "--variables", "name=Env,value=dev")
    eid = started["pipelineExecutionId"]
    execution = aws(
        "get-pipeline-execution", "--pipeline-name", "demo", "--pipeline-execution-id", eid
    )["pipelineExecution"]
    assert (execution["status"], execution["pipelineVersion"]) == ("InProgress", 1)
    summaries = aws("list-pipeline-executions", "--pipeline-name", "demo")
    assert eid in [s["pipelineExecutionId"] for s in summaries["pipelineExecutionSummaries"]]

    source = ArtifactLocation(name="SourceOut", bucket=BUCKET, key="demo/SourceOut/a.zip")
    complete(api, eid, "Source", "Fetch", output_artifacts=[source])
    built = ArtifactLocation(name="BuildOut", bucket=BUCKET, key="demo/BuildOut/b.zip")
    complete(api, eid, "Build", "Compile", output_artifacts=[built])

    actions = aws(
        "list-action-executions",
        "--pipeline-name", "demo",
        "--filter", f"pipelineExecutionId={eid}",
    )["actionExecutionDetails"]  # fmt: skip
    assert {a["actionName"] for a in actions} >= {"Fetch", "Compile", "Gate"}

    gate = stage(aws, "demo", "Approve")["actionStates"][0]["latestExecution"]
    aws(
        "put-approval-result",
        "--pipeline-name", "demo",
        "--stage-name", "Approve",
        "--action-name", "Gate",
        "--result", "summary=Ship it,status=Approved",
        "--token", gate["token"],
    )  # fmt: skip
    gate = stage(aws, "demo", "Approve")["actionStates"][0]["latestExecution"]
    assert gate["status"] == "Succeeded"

    stopped = aws(
        "stop-pipeline-execution",
        "--pipeline-name", "demo",
        "--pipeline-execution-id", eid,
        "--abandon",
        "--reason", "done testing",
    )  # fmt: skip
    assert stopped["pipelineExecutionId"] == eid
    execution = aws(
        "get-pipeline-execution", "--pipeline-name", "demo", "--pipeline-execution-id", eid
    )["pipelineExecution"]
    assert execution["status"] in ("Stopping", "Stopped")


def test_errors_reach_the_aws_cli_with_their_codes(aws: Any) -> None:
    proc = aws("get-pipeline", "--name", "nope", check=False)
    assert proc.returncode == 255  # AWS CLI v1 exits 255 on a service error (v2: 254)
    assert "PipelineNotFoundException" in proc.stderr
    assert "does not have a pipeline with name 'nope'" in proc.stderr

    # botocore checks no patterns client-side: the server's ValidationException comes back.
    proc = aws("get-pipeline", "--name", "not a name!", check=False)
    assert proc.returncode == 255
    assert "(ValidationException)" in proc.stderr
    assert "'name'" in proc.stderr
