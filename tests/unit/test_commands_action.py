"""Compute/AWS/Commands/1: the provider with real bash, and its definition checks."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest

from engine.definition import normalize, validate
from engine.errors import DefinitionError
from providers import default_registry
from providers.base import ActionFailed, Job, S3Access
from providers.commands_action import CommandsAction, CommandsConfig


def make_job(
    tmp_path: Path,
    commands: list[str],
    *,
    inputs: dict[str, dict[str, str]] | None = None,
    outputs: dict[str, list[str] | None] | None = None,
    variables: list[str] | None = None,
    env: list[dict[str, str]] | None = None,
) -> Job:
    in_dirs: dict[str, Path] = {}
    for name, files in (inputs or {"SourceOutput": {"app.txt": "app\n"}}).items():
        in_dirs[name] = tmp_path / "in" / name
        for rel, text in files.items():
            (in_dirs[name] / rel).parent.mkdir(parents=True, exist_ok=True)
            (in_dirs[name] / rel).write_text(text)
        in_dirs[name].mkdir(parents=True, exist_ok=True)
    out_dirs = {}
    for name in outputs or {}:
        out_dirs[name] = tmp_path / "out" / name
        out_dirs[name].mkdir(parents=True)
    (tmp_path / "work").mkdir()
    return Job(
        pipeline_name="demo",
        execution_id="exec-1",
        stage_name="Build",
        action_name="RunCommands",
        attempt=1,
        configuration=CommandsConfig(),
        variables={},
        inputs=in_dirs,
        outputs=out_dirs,
        workdir=tmp_path / "work",
        log=io.StringIO(),
        s3=S3Access("http://127.0.0.1:1", "k", "s", "us-east-1"),
        commands=commands,
        output_variable_names=variables or [],
        environment_variables=env or [],
        output_files={k: v for k, v in (outputs or {}).items() if v},
    )


def files(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def test_commands_outputs_files_and_variables(tmp_path: Path) -> None:
    secrets = tmp_path / "secrets.json"
    secrets.write_text(json.dumps({"secrets": {"deploy": '{"token": "tok-0000-secret"}'}}))
    job = make_job(
        tmp_path,
        [
            "mkdir -p dist/sub && cp app.txt dist/ && echo x > dist/sub/x.log",
            "cd dist",
            "export IMAGE_TAG=v1.10",
            "BUILT_IN=$(pwd)",
            'echo "token is $TOKEN, mode is $MODE"',
            'echo "$CODEBUILD_SRC_DIR_Extra" > extra-dir.txt',
        ],
        inputs={"SourceOutput": {"app.txt": "app\n"}, "Extra": {"e.txt": "e"}},
        outputs={"Out": ["dist/**/*", "dist/extra-dir.txt"]},
        variables=["IMAGE_TAG", "BUILT_IN", "CODEBUILD_BUILD_ID", "NEVER_SET"],
        env=[
            {"name": "MODE", "value": "fast", "type": "PLAINTEXT"},
            {"name": "TOKEN", "value": "deploy:token", "type": "SECRETS_MANAGER"},
        ],
    )
    job.secrets_file = str(secrets)
    result = CommandsAction().run(job)
    log = result.attachments["build-log"].read_text()
    assert result.succeeded, log
    assert result.summary == "Commands succeeded"
    assert result.output_variables["IMAGE_TAG"] == "v1.10"
    assert result.output_variables["BUILT_IN"].endswith("/codebuild/src/dist")
    assert result.output_variables["CODEBUILD_BUILD_ID"] == result.external_execution_id
    assert "NEVER_SET" not in result.output_variables
    assert files(job.outputs["Out"]) == ["dist/app.txt", "dist/extra-dir.txt", "dist/sub/x.log"]
    extra = (job.outputs["Out"] / "dist/extra-dir.txt").read_text().strip()
    assert extra.endswith("src-secondary/Extra")
    assert "token is ***, mode is fast" in log and "tok-0000-secret" not in log
    assert "Running command cd dist" in log


def test_output_without_files_takes_the_whole_directory(tmp_path: Path) -> None:
    job = make_job(tmp_path, ["echo built > built.txt"], outputs={"Out": None})
    result = CommandsAction().run(job)
    assert result.succeeded
    assert files(job.outputs["Out"]) == ["app.txt", "built.txt"]


def test_first_failing_command_fails_the_action(tmp_path: Path) -> None:
    job = make_job(tmp_path, ["echo one", "false", "touch never"], outputs={"Out": None})
    result = CommandsAction().run(job)
    assert not result.succeeded
    assert result.error_code == "JobFailed"
    assert result.summary == "Commands failed in phase BUILD: command `false` exited 1"
    assert not (job.workdir / "codebuild" / "src" / "never").exists()


def test_no_commands_and_missing_secret(tmp_path: Path) -> None:
    with pytest.raises(ActionFailed, match="needs 1 to 50 commands"):
        CommandsAction().run(make_job(tmp_path / "a", []))
    job = make_job(
        tmp_path / "b",
        ["true"],
        env=[{"name": "TOKEN", "value": "nope", "type": "SECRETS_MANAGER"}],
    )
    result = CommandsAction().run(job)
    assert not result.succeeded and result.error_code == "ConfigurationError"
    assert "EnvironmentVariables[0] TOKEN: secret 'nope' does not exist" in (
        result.error_message or ""
    )


# -- definition checks ---------------------------------------------------------------------


def pipeline(action: dict[str, Any], *, pipeline_type: str = "V2") -> dict[str, Any]:
    return {
        "name": "p",
        "pipelineType": pipeline_type,
        "artifactStore": {"type": "S3", "location": "bucket"},
        "stages": [
            {
                "name": "Source",
                "actions": [
                    {
                        "name": "Src",
                        "actionTypeId": {
                            "category": "Source",
                            "owner": "AWS",
                            "provider": "S3",
                            "version": "1",
                        },
                        "configuration": {"S3Bucket": "b", "S3ObjectKey": "k"},
                        "outputArtifacts": [{"name": "SourceOutput"}],
                    }
                ],
            },
            {"name": "Run", "actions": [action]},
        ],
    }


def commands_action(**extra: Any) -> dict[str, Any]:
    return {
        "name": "Cmd",
        "actionTypeId": {
            "category": "Compute",
            "owner": "AWS",
            "provider": "Commands",
            "version": "1",
        },
        "inputArtifacts": [{"name": "SourceOutput"}],
        **extra,
    }


def problems(raw: dict[str, Any]) -> dict[str, str]:
    with pytest.raises(DefinitionError) as exc:
        validate(raw, default_registry(entry_points=False))
    return {p.path: p.message for p in exc.value.problems}


def test_a_valid_commands_action_round_trips() -> None:
    action = commands_action(
        commands=["make", "1.10"],
        outputVariables=["IMAGE_TAG"],
        outputArtifacts=[{"name": "Out", "files": ["dist/**/*"]}],
        environmentVariables=[{"name": "MODE", "value": "fast"}],
    )
    decl = validate(pipeline(action), default_registry(entry_points=False))
    got = decl.to_aws()["stages"][1]["actions"][0]
    assert got["commands"] == ["make", "1.10"]
    assert got["outputVariables"] == ["IMAGE_TAG"]
    assert got["outputArtifacts"] == [{"name": "Out", "files": ["dist/**/*"]}]
    assert got["environmentVariables"] == [{"name": "MODE", "value": "fast", "type": "PLAINTEXT"}]
    # A CodeBuild action in the same definition grows no compute keys.
    assert "commands" not in decl.to_aws()["stages"][0]["actions"][0]


def test_commands_action_limits() -> None:
    base = "stages[1].actions[0]"
    found = problems(
        pipeline(
            commands_action(
                commands=["ok", "two\nlines", "x" * 1001],
                outputVariables=["GOOD", "bad-name"],
                outputArtifacts=[{"name": "Out", "files": []}, {"name": "Out2"}],
                environmentVariables=[{"name": "BAD NAME", "value": "v"}],
            ),
            pipeline_type="V1",
        )
    )
    assert found == {
        f"{base}.actionTypeId": "a Commands action needs pipelineType V2",
        f"{base}.commands[1]": "must be a single line",
        f"{base}.commands[2]": "at most 1000 characters",
        f"{base}.outputVariables[1]": (
            "'bad-name' is not a shell variable name of at most 128 characters"
        ),
        f"{base}.outputArtifacts[0].files": "1 to 10 paths, got 0",
        f"{base}.outputArtifacts": "Compute/AWS/Commands/1 takes 0 to 1 output artifacts, got 2",
        f"{base}.environmentVariables[0].name": "must be 1-128 characters of A-Za-z0-9_",
    }
    assert problems(pipeline(commands_action())) == {
        f"{base}.commands": "a Commands action needs 1 to 50 commands"
    }
    many = problems(pipeline(commands_action(commands=["true"] * 51)))
    assert many == {f"{base}.commands": "at most 50 commands, got 51"}


def test_compute_fields_only_on_commands_actions() -> None:
    build = {
        "name": "Build",
        "actionTypeId": {
            "category": "Build",
            "owner": "AWS",
            "provider": "CodeBuild",
            "version": "1",
        },
        "configuration": {"ProjectName": "p"},
        "inputArtifacts": [{"name": "SourceOutput"}],
        "outputArtifacts": [{"name": "Out", "files": ["a"]}],
        "commands": ["make"],
        "outputVariables": ["X"],
    }
    base = "stages[1].actions[0]"
    assert problems(pipeline(build)) == {
        f"{base}.commands": "only Commands actions take commands",
        f"{base}.outputVariables": "only Commands actions take outputVariables",
        f"{base}.outputArtifacts[0].files": "only Commands actions take files",
    }


def test_cloudformation_properties_load_the_compute_fields() -> None:
    props = {
        "Name": "p",
        "PipelineType": "V2",
        "RoleArn": "arn:aws:iam::000000000000:role/r",
        "ArtifactStore": {"Type": "S3", "Location": "bucket"},
        "Stages": [
            {
                "Name": "Source",
                "Actions": [
                    {
                        "Name": "Src",
                        "ActionTypeId": {
                            "Category": "Source",
                            "Owner": "AWS",
                            "Provider": "S3",
                            "Version": "1",
                        },
                        "Configuration": {"S3Bucket": "b", "S3ObjectKey": "k"},
                        "OutputArtifacts": [{"Name": "SourceOutput"}],
                    }
                ],
            },
            {
                "Name": "Run",
                "Actions": [
                    {
                        "Name": "Cmd",
                        "ActionTypeId": {
                            "Category": "Compute",
                            "Owner": "AWS",
                            "Provider": "Commands",
                            "Version": "1",
                        },
                        "InputArtifacts": [{"Name": "SourceOutput"}],
                        "OutputArtifacts": [{"Name": "Out", "Files": ["dist/**/*"]}],
                        "Commands": ["make"],
                        "OutputVariables": ["TAG"],
                        "EnvironmentVariables": [
                            {"Name": "T", "Value": "s:k", "Type": "SECRETS_MANAGER"}
                        ],
                    }
                ],
            },
        ],
    }
    raw = normalize(
        {"Resources": {"P": {"Type": "AWS::CodePipeline::Pipeline", "Properties": props}}}
    )
    cmd = validate(raw, default_registry(entry_points=False)).stages[1].actions[0]
    assert cmd.commands == ["make"]
    assert cmd.output_variables == ["TAG"]
    assert cmd.output_artifacts[0].files == ["dist/**/*"]
    assert cmd.environment_variables is not None
    assert cmd.environment_variables[0].type == "SECRETS_MANAGER"
