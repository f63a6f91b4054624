"""The local CodeBuild runner, driven directly with real bash in temp directories."""

from __future__ import annotations

import io
import re
import threading
import time
from pathlib import Path
from textwrap import dedent

import pytest
from pydantic import ValidationError

from providers.base import ActionFailed, Job, Result, S3Access
from providers.codebuild import CodeBuild, CodeBuildConfig, CodeBuildTest


def make_job(
    tmp_path: Path,
    buildspec: str | None,
    *,
    files: dict[str, str] | None = None,
    outputs: tuple[str, ...] = ("BuildOutput",),
    config: dict[str, str] | None = None,
    deadline: float | None = None,
    extra_inputs: dict[str, dict[str, str]] | None = None,
) -> Job:
    inputs: dict[str, Path] = {}
    for name, content in {"SourceOutput": files or {}, **(extra_inputs or {})}.items():
        d = tmp_path / "in" / name
        d.mkdir(parents=True)
        for rel, text in content.items():
            (d / rel).parent.mkdir(parents=True, exist_ok=True)
            (d / rel).write_text(text)
        inputs[name] = d
    if buildspec is not None:
        (inputs["SourceOutput"] / "buildspec.yml").write_text(dedent(buildspec))
    out_dirs = {}
    for name in outputs:
        out_dirs[name] = tmp_path / "out" / name
        out_dirs[name].mkdir(parents=True)
    work = tmp_path / "work"
    work.mkdir()
    return Job(
        pipeline_name="demo",
        execution_id="exec-1",
        stage_name="Build",
        action_name="Build",
        attempt=1,
        configuration=CodeBuildConfig.model_validate({"ProjectName": "proj", **(config or {})}),
        variables={},
        inputs=inputs,
        outputs=out_dirs,
        workdir=work,
        log=io.StringIO(),
        s3=S3Access("http://127.0.0.1:1", "k", "s", "us-east-1"),
        deadline=deadline,
    )


def run(job: Job) -> tuple[Result, str]:
    result = CodeBuild().run(job)
    return result, result.attachments["build-log"].read_text()


def test_success_with_artifacts_env_and_cd_persistence(tmp_path: Path) -> None:
    job = make_job(
        tmp_path,
        """
        version: 0.2
        env:
          variables:
            GREETING: hello
            OVERRIDDEN: from-buildspec
          exported-variables:
            - IMAGE_TAG
        phases:
          install:
            commands:
              - mkdir -p work/sub
              - cd work/sub
          pre_build:
            commands:
              - COMMIT=abc123
              - IMAGE_TAG=${COMMIT:=latest}
              - export FROM_EXPORT=yes
              - greet() { echo "$GREETING from a function"; }
          build:
            commands:
              - pwd > where.txt
              - echo "$GREETING $OVERRIDDEN $FROM_EXPORT $IMAGE_TAG" > vars.txt
              - echo "$CODEBUILD_INITIATOR $CODEBUILD_BUILD_ID" > cb.txt
              - greet > func.txt
              - exit 0
          post_build:
            commands:
              - echo "succeeding=$CODEBUILD_BUILD_SUCCEEDING" > post.txt
        artifacts:
          base-directory: work
          files:
            - '**/*'
          exclude-paths:
            - '**/cb.txt'
        """,
        config={
            "EnvironmentVariables": '[{"name": "OVERRIDDEN", "value": "from-action", '
            '"type": "PLAINTEXT"}]'
        },
    )
    result, log = run(job)
    assert result.succeeded, log
    assert result.summary == "Build succeeded"
    assert result.external_execution_id and result.external_execution_id.startswith("proj:")
    assert result.output_variables == {"IMAGE_TAG": "abc123"}

    out = job.outputs["BuildOutput"]
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == [
        "sub/func.txt",
        "sub/post.txt",
        "sub/vars.txt",
        "sub/where.txt",
    ]
    assert (out / "sub/where.txt").read_text().strip().endswith("codebuild/src/work/sub")
    assert (out / "sub/vars.txt").read_text() == "hello from-action yes abc123\n"
    assert (out / "sub/func.txt").read_text() == "hello from a function\n"
    assert (out / "sub/post.txt").read_text() == "succeeding=1\n"
    # The build ran on a copy: the input artifact is untouched.
    assert sorted(p.name for p in job.inputs["SourceOutput"].iterdir()) == ["buildspec.yml"]
    assert "Entering phase BUILD" in log and "Phase complete: BUILD State: SUCCEEDED" in log
    assert "Running command pwd > where.txt" in log
    assert "Entering phase BUILD" in job.log.getvalue()  # type: ignore[attr-defined]


def test_initiator_and_build_id(tmp_path: Path) -> None:
    job = make_job(
        tmp_path,
        """
        version: 0.2
        phases:
          build:
            commands:
              - echo "$CODEBUILD_INITIATOR|$CODEBUILD_BUILD_ID|$CODEBUILD_SRC_DIR" > cb.txt
        artifacts:
          files: [cb.txt]
        """,
    )
    result, _ = run(job)
    initiator, build_id, src = (job.outputs["BuildOutput"] / "cb.txt").read_text().split("|")
    assert initiator == "codepipeline/demo"
    assert build_id == result.external_execution_id
    assert src.strip() == str(job.workdir / "codebuild" / "src")


def test_discard_paths_and_secondary_artifacts(tmp_path: Path) -> None:
    job = make_job(
        tmp_path,
        """
        version: 0.2
        phases:
          build:
            commands:
              - mkdir -p dist/a dist/b reports
              - echo 1 > dist/a/one.js
              - echo 2 > dist/b/two.js
              - echo r > reports/r.xml
        artifacts:
          files:
            - dist/**/*.js
          discard-paths: yes
          secondary-artifacts:
            Reports:
              base-directory: reports
              files:
                - '*.xml'
        """,
        outputs=("BuildOutput", "Reports"),
    )
    result, log = run(job)
    assert result.succeeded, log
    assert sorted(p.name for p in job.outputs["BuildOutput"].iterdir()) == ["one.js", "two.js"]
    assert [p.name for p in job.outputs["Reports"].iterdir()] == ["r.xml"]


def test_build_failure_still_runs_post_build_and_fails(tmp_path: Path) -> None:
    job = make_job(
        tmp_path,
        """
        version: 0.2
        phases:
          build:
            commands:
              - echo building
              - bash -c 'exit 2'
              - echo never > never.txt
            finally:
              - echo cleanup > finally.txt
          post_build:
            commands:
              - echo "succeeding=$CODEBUILD_BUILD_SUCCEEDING" > post.txt
        artifacts:
          files: ['*.txt']
        """,
    )
    result, log = run(job)
    src = job.workdir / "codebuild" / "src"
    assert not result.succeeded
    assert result.summary == "Build failed in phase BUILD: command `bash -c 'exit 2'` exited 2"
    assert result.error_message == result.summary
    assert (src / "finally.txt").exists()
    assert not (src / "never.txt").exists()
    assert (src / "post.txt").read_text() == "succeeding=0\n"
    assert "Phase complete: BUILD State: FAILED" in log
    assert "Phase complete: POST_BUILD State: SUCCEEDED" in log
    assert list(job.outputs["BuildOutput"].iterdir()) == []  # a failed build uploads nothing


def test_exit_in_a_command_fails_only_that_command(tmp_path: Path) -> None:
    job = make_job(
        tmp_path,
        """
        version: 0.2
        phases:
          build:
            commands:
              - test -f missing || exit 3
          post_build:
            commands:
              - echo ran > post.txt
        """,
        outputs=(),
    )
    result, _ = run(job)
    assert (
        result.summary
        == "Build failed in phase BUILD: command `test -f missing || exit 3` exited 3"
    )
    assert (job.workdir / "codebuild" / "src" / "post.txt").exists()


def test_install_failure_skips_build_and_post_build(tmp_path: Path) -> None:
    job = make_job(
        tmp_path,
        """
        version: 0.2
        phases:
          install:
            commands:
              - "false"
          build:
            commands:
              - touch built
          post_build:
            commands:
              - touch posted
        """,
    )
    result, log = run(job)
    src = job.workdir / "codebuild" / "src"
    assert not result.succeeded
    assert result.summary and result.summary.startswith("Build failed in phase INSTALL")
    assert not (src / "built").exists() and not (src / "posted").exists()
    assert "Skipping phase BUILD" in log and "Skipping phase POST_BUILD" in log


def test_on_failure_continue_runs_later_phases_but_fails(tmp_path: Path) -> None:
    job = make_job(
        tmp_path,
        """
        version: 0.2
        phases:
          pre_build:
            on-failure: CONTINUE
            commands:
              - "false"
          build:
            commands:
              - touch built
        """,
        outputs=(),
    )
    result, _ = run(job)
    assert not result.succeeded
    assert (job.workdir / "codebuild" / "src" / "built").exists()


def test_missing_buildspec(tmp_path: Path) -> None:
    job = make_job(tmp_path, None, files={"README": "no buildspec here"})
    result, log = run(job)
    assert not result.succeeded
    assert result.error_code == "ConfigurationError"
    assert "no buildspec.yml" in (result.summary or "")
    assert "no buildspec.yml" in log


def test_invalid_buildspec_version(tmp_path: Path) -> None:
    job = make_job(tmp_path, "version: 0.1\nphases: {}\n")
    result, _ = run(job)
    assert not result.succeeded and "version" in (result.summary or "")


def test_no_matching_artifacts_fails(tmp_path: Path) -> None:
    job = make_job(
        tmp_path,
        """
        version: 0.2
        phases:
          build:
            commands: [echo hi]
        artifacts:
          files: ['dist/**/*']
        """,
    )
    result, _ = run(job)
    assert not result.succeeded
    assert "no matching artifact paths found" in (result.summary or "")


def test_output_without_artifacts_section_fails(tmp_path: Path) -> None:
    job = make_job(tmp_path, "version: 0.2\nphases:\n  build:\n    commands: [echo hi]\n")
    result, _ = run(job)
    assert not result.succeeded
    assert "BuildOutput" in (result.summary or "")


def test_cancellation_kills_the_process_group_quickly(tmp_path: Path) -> None:
    job = make_job(
        tmp_path,
        """
        version: 0.2
        phases:
          build:
            commands:
              - sleep 100 & echo $! > bg.pid; sleep 100
          post_build:
            commands:
              - touch posted
        """,
        outputs=(),
    )
    threading.Timer(0.5, job.cancelled.set).start()
    started = time.monotonic()
    result, log = run(job)
    assert "cancelled" in log
    assert time.monotonic() - started < 5
    assert not result.succeeded
    assert result.summary == "Build cancelled in phase BUILD"
    src = job.workdir / "codebuild" / "src"
    assert not (src / "posted").exists()
    bg = int((src / "bg.pid").read_text())
    _assert_dead(bg)


def test_timeout(tmp_path: Path) -> None:
    job = make_job(
        tmp_path,
        "version: 0.2\nphases:\n  build:\n    commands: ['sleep 100']\n",
        outputs=(),
        deadline=time.time() + 1,
    )
    started = time.monotonic()
    result, log = run(job)
    assert time.monotonic() - started < 6
    assert not result.succeeded
    assert result.summary == "Build timed out in phase BUILD"
    assert "timed out" in log


def test_background_processes_are_killed_at_the_end(tmp_path: Path) -> None:
    job = make_job(
        tmp_path,
        """
        version: 0.2
        phases:
          install:
            commands:
              - nohup sleep 100 >/dev/null 2>&1 & echo $! > daemon.pid
          build:
            commands: [echo done]
        """,
        outputs=(),
    )
    result, _ = run(job)
    assert result.succeeded
    _assert_dead(int((job.workdir / "codebuild" / "src" / "daemon.pid").read_text()))


def test_test_provider_and_primary_source(tmp_path: Path) -> None:
    job = make_job(
        tmp_path,
        None,
        config={"PrimarySource": "Tests"},
        outputs=(),
        extra_inputs={
            "Tests": {
                "buildspec.yml": "version: 0.2\nphases:\n  build:\n    commands:\n"
                '      - test -f "$CODEBUILD_SRC_DIR_SourceOutput/app.txt"\n',
            }
        },
        files={"app.txt": "app"},
    )
    result = CodeBuildTest().run(job)
    assert result.succeeded, result.attachments["build-log"].read_text()
    assert CodeBuildTest.action_type.category.value == "Test"


def test_unknown_primary_source(tmp_path: Path) -> None:
    job = make_job(tmp_path, "version: 0.2\n", config={"PrimarySource": "Nope"}, outputs=())
    with pytest.raises(ActionFailed, match="Nope"):
        CodeBuild().run(job)


def test_config_validation() -> None:
    with pytest.raises(ValidationError, match="ProjectName"):
        CodeBuildConfig.model_validate({})
    with pytest.raises(ValidationError, match=r"EnvironmentVariables\[0\] \(A\): type 'VAULT'"):
        CodeBuildConfig.model_validate(
            {"ProjectName": "p", "EnvironmentVariables": '[{"name":"A","type":"VAULT"}]'}
        )
    with pytest.raises(ValidationError, match=r"EnvironmentVariables\[1\] needs a string 'name'"):
        CodeBuildConfig.model_validate(
            {"ProjectName": "p", "EnvironmentVariables": '[{"name":"A"}, {"value":"x"}]'}
        )
    config = CodeBuildConfig.model_validate(
        {
            "ProjectName": "p",
            "EnvironmentVariables": '[{"name":"A","value":"/p","type":"PARAMETER_STORE"},'
            '{"name":"B","value":"s:k","type":"SECRETS_MANAGER"},{"name":"C","value":"c"}]',
        }
    )
    assert [tuple(v) for v in config.environment()] == [
        ("A", "/p", "PARAMETER_STORE"),
        ("B", "s:k", "SECRETS_MANAGER"),
        ("C", "c", "PLAINTEXT"),
    ]
    with pytest.raises(ValidationError, match="JSON"):
        CodeBuildConfig.model_validate({"ProjectName": "p", "EnvironmentVariables": "[{"})
    with pytest.raises(ValidationError):
        CodeBuildConfig.model_validate({"ProjectName": "p", "Unknown": "x"})


def _assert_dead(pid: int) -> None:
    import psutil

    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return
        except psutil.NoSuchProcess:
            return
        time.sleep(0.05)
    raise AssertionError(f"process {pid} is still running")


def test_a_buildspec_with_a_yaml_error_fails_the_action_saying_where(tmp_path: Path) -> None:
    job = make_job(tmp_path, "version: 0.2\nphases:\n  build:\n    commands: [echo, \n")
    result, log = run(job)
    assert not result.succeeded
    assert result.error_code == "ConfigurationError"
    message = result.error_message or ""
    assert "YAML_FILE_ERROR: invalid YAML" in message
    assert "line" in message  # where the parser gave up, for the person fixing it
    assert "Phase complete: DOWNLOAD_SOURCE State: FAILED" in log


@pytest.mark.parametrize(
    ("target", "message"), [("/", "outside the source"), (".", "contains it (a loop)")]
)
def test_a_symlinked_directory_out_of_the_source_or_into_a_loop_is_refused_before_walking(
    tmp_path: Path, target: str, message: str
) -> None:
    from providers.buildspec import ArtifactPathError, select_files

    src = tmp_path / "src"
    (src / "dist").mkdir(parents=True)
    (src / "dist" / "ok.txt").write_text("ok")
    (src / "dist" / "out").symlink_to(target if target == "/" else src / "dist")
    for patterns in (["dist"], ["**/*"], ["dist/out/**/*"]):
        with pytest.raises(ArtifactPathError, match=re.escape(message)):
            select_files(patterns, [], src, None)
