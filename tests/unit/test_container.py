"""The container runner's pure parts (settings, argv, the variables file) and engine
detection against fake engine CLIs: real executables on PATH that answer ``info`` the way a
working or a daemon-less engine does."""

from __future__ import annotations

import io
import json
import os
import subprocess
from pathlib import Path
from textwrap import dedent

import pytest

from providers.base import ActionFailed, Job, S3Access
from providers.codebuild import CodeBuild, CodeBuildConfig
from providers.container import (
    ContainerSettings,
    Engine,
    NoEngine,
    container_environment,
    detect_engine,
    environment_script,
    exec_argv,
    remove_argv,
    run_argv,
)

PODMAN = Engine("podman", ("podman", "--runtime", "runc"))
DOCKER = Engine("docker", ("/usr/bin/docker",))
NO_DAEMON = "Cannot connect to the Docker daemon at unix:///var/run/docker.sock."


def fake_cli(bin_dir: Path, name: str, *, answers: bool, said: str = "") -> Path:
    """An executable ``name`` recording its arguments; ``info`` succeeds or fails."""
    bin_dir.mkdir(exist_ok=True)
    path = bin_dir / name
    record = bin_dir / f"{name}.args"
    path.write_text(
        "#!/bin/sh\n"
        f'echo "$*" >> {record}\n'
        f'if [ "$1" != info ] && [ "$3" != info ]; then exit 2; fi\n'
        + ("echo 'host: ok'\nexit 0\n" if answers else f"echo '{said}' >&2\nexit 1\n")
    )
    path.chmod(0o755)
    return record


@pytest.fixture
def bin_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A PATH holding only the fake engines (and nothing a real engine could answer on)."""
    path = tmp_path / "bin"
    path.mkdir()
    monkeypatch.setenv("PATH", str(path))
    return path


# -- settings --------------------------------------------------------------------------


def test_images_inline_and_from_a_file_inline_winning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    images = tmp_path / "images.json"
    images.write_text(json.dumps({"app": "debian:12", "web": "node:20"}))
    monkeypatch.setenv("CONVEYOR_BUILD_IMAGES_FILE", str(images))
    monkeypatch.setenv("CONVEYOR_BUILD_IMAGES", json.dumps({"web": "node:22"}))
    monkeypatch.setenv("CONVEYOR_CONTAINER_ENGINE", "podman")
    monkeypatch.setenv("CONVEYOR_CONTAINER_ENGINE_ARGS", '["--runtime", "runc"]')
    settings = ContainerSettings.load()
    assert settings.image_for("app") == "debian:12"
    assert settings.image_for("web") == "node:22"
    assert settings.image_for("other") is None
    assert settings.container_engine == "podman"
    assert settings.container_engine_args == ["--runtime", "runc"]


def test_empty_values_are_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("BUILD_IMAGES", "BUILD_IMAGES_FILE", "CONTAINER_ENGINE", "CONTAINER_RUN_ARGS"):
        monkeypatch.setenv(f"CONVEYOR_{name}", "")
    settings = ContainerSettings.load()
    assert settings.image_for("app") is None
    assert settings.container_engine == "auto"
    assert settings.container_run_args == []


def test_bad_settings_fail_clearly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONVEYOR_CONTAINER_ENGINE", "lxc")
    with pytest.raises(ActionFailed, match="invalid container settings"):
        ContainerSettings.load()
    monkeypatch.delenv("CONVEYOR_CONTAINER_ENGINE")
    bad = tmp_path / "images.json"
    bad.write_text('["app"]')
    monkeypatch.setenv("CONVEYOR_BUILD_IMAGES_FILE", str(bad))
    with pytest.raises(ActionFailed, match="JSON object of project -> image"):
        ContainerSettings.load().image_for("app")
    monkeypatch.setenv("CONVEYOR_BUILD_IMAGES_FILE", str(tmp_path / "missing.json"))
    with pytest.raises(ActionFailed, match=r"missing\.json"):
        ContainerSettings.load().image_for("app")


# -- argv ------------------------------------------------------------------------------


def test_run_argv_mounts_at_the_same_paths_as_the_build_user_without_privileges() -> None:
    argv = run_argv(
        PODMAN,
        "debian:12",
        "conveyor-build-x",
        user=(999, 995),
        mounts=[Path("/w/src"), Path("/w/state")],
        workdir=Path("/w/src"),
        network="builds",
        extra=["--ulimit", "nofile=1024:1024"],
    )
    assert argv == [
        "podman", "--runtime", "runc", "run", "--detach", "--rm",
        "--name", "conveyor-build-x", "--label", "io.conveyor.build=1",
        "--user", "999:995", "--workdir", "/w/src",
        "--cap-drop", "all", "--security-opt", "no-new-privileges",
        "--network", "builds",
        "--volume", "/w/src:/w/src", "--volume", "/w/state:/w/state",
        "--ulimit", "nofile=1024:1024",
        "--entrypoint", "sleep", "debian:12", "infinity",
    ]  # fmt: skip
    default_network = run_argv(
        DOCKER, "img", "n", user=(1, 1), mounts=[], workdir=Path("/"), network=None
    )
    assert "--network" not in default_network


def test_exec_and_remove_argv() -> None:
    argv = exec_argv(
        DOCKER,
        "conveyor-build-x",
        ["bash", "/w/state/command-1.sh"],
        user=(999, 995),
        workdir=Path("/w/src"),
        env_file=Path("/w/state/env-1.sh"),
    )
    assert argv == [
        "/usr/bin/docker", "exec", "--user", "999:995", "--workdir", "/w/src",
        "--env", "BASH_ENV=/w/state/env-1.sh", "conveyor-build-x",
        "bash", "/w/state/command-1.sh",
    ]  # fmt: skip
    # podman's rm --force would wait 10 s for a SIGTERM sleep ignores as PID 1
    assert remove_argv(PODMAN, "n") == [
        "podman", "--runtime", "runc", "rm", "--force", "--time", "0", "n",
    ]  # fmt: skip
    assert remove_argv(DOCKER, "n") == ["/usr/bin/docker", "rm", "--force", "n"]


def test_the_variables_file_restores_every_value_and_then_steps_aside(tmp_path: Path) -> None:
    env = {
        "PLAIN": "x",
        "TRICKY": "two\nlines $(touch /tmp/never) 'q' \"dq\" \\",
        "EMPTY": "",
        "not an identifier": "skipped",
    }
    script = tmp_path / "env.sh"
    script.write_text(environment_script(env))
    out = subprocess.run(
        ["bash", "-c", 'printf "%s|" "$PLAIN" "$TRICKY" "${EMPTY-unset}" "${BASH_ENV-gone}"'],
        env={"BASH_ENV": str(script), "PATH": os.environ.get("PATH", "/usr/bin:/bin")},
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout == f"x|{env['TRICKY']}||gone|"
    assert not Path("/tmp/never").exists()


def test_the_image_keeps_its_own_path_unless_the_build_set_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PATH", "/worker/bin:/usr/bin")
    env = {"PATH": "/worker/bin:/usr/bin", "HOME": "/w/state/home", "A": "1"}
    assert container_environment(env) == {"HOME": "/w/state/home", "A": "1"}
    assert container_environment({**env, "PATH": "/opt/x"})["PATH"] == "/opt/x"


# -- engine detection ------------------------------------------------------------------


def test_auto_picks_the_first_engine_whose_info_answers(bin_dir: Path) -> None:
    docker = fake_cli(bin_dir, "docker", answers=False, said=NO_DAEMON)
    podman = fake_cli(bin_dir, "podman", answers=True)
    engine = detect_engine("auto", ["--runtime", "runc"])
    assert engine == Engine("podman", ("podman", "--runtime", "runc"))
    assert docker.read_text() == "--runtime runc info\n"
    assert podman.read_text() == "--runtime runc info\n"
    fake_cli(bin_dir, "docker", answers=True)
    assert detect_engine("auto").name == "docker"


def test_a_chosen_engine_is_the_only_one_asked(bin_dir: Path) -> None:
    fake_cli(bin_dir, "docker", answers=True)
    fake_cli(bin_dir, "podman", answers=False, said="Error: cannot connect to Podman")
    with pytest.raises(NoEngine) as caught:
        detect_engine("podman")
    assert str(caught.value) == (
        "no container engine answers here: podman info failed: Error: cannot connect to Podman"
    )


def test_no_engine_names_what_each_said(bin_dir: Path) -> None:
    fake_cli(bin_dir, "docker", answers=False, said=NO_DAEMON)
    with pytest.raises(NoEngine) as caught:
        detect_engine()
    assert str(caught.value) == (
        f"no container engine answers here: docker info failed: {NO_DAEMON}; "
        "podman info failed: podman is not on PATH"
    )


# -- a project that names an image, with no engine -------------------------------------


def test_a_project_naming_an_image_fails_clearly_without_an_engine(
    tmp_path: Path, bin_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_cli(bin_dir, "docker", answers=False, said=NO_DAEMON)
    fake_cli(bin_dir, "podman", answers=False, said="Error: no runtime")
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")  # bash, for the host (never run)
    monkeypatch.setenv("CONVEYOR_BUILD_IMAGES", json.dumps({"proj": "debian:12"}))
    ran = tmp_path / "ran-on-the-host"
    src = tmp_path / "in"
    src.mkdir()
    (src / "buildspec.yml").write_text(
        dedent(f"""
        version: 0.2
        phases:
          build:
            commands: [touch {ran}]
        """)
    )
    work = tmp_path / "work"
    work.mkdir()
    log = io.StringIO()
    job = Job(
        pipeline_name="demo",
        execution_id="exec-1",
        stage_name="Build",
        action_name="Build",
        attempt=1,
        configuration=CodeBuildConfig.model_validate({"ProjectName": "proj"}),
        variables={},
        inputs={"SourceOutput": src},
        outputs={},
        workdir=work,
        log=log,
        s3=S3Access("http://127.0.0.1:1", "k", "s", "us-east-1"),
    )
    with pytest.raises(ActionFailed) as caught:
        CodeBuild().run(job)
    assert caught.value.message == (
        "CodeBuild project proj builds in the image debian:12 (CONVEYOR_BUILD_IMAGES), but no "
        f"container engine answers here: docker info failed: {NO_DAEMON}; podman info "
        "failed: Error: no runtime. Install Docker or Podman, or remove the project's image "
        "to build on the host."
    )
    assert not ran.exists()
    assert "no container engine answers here" in log.getvalue()
