"""Build commands inside a container, for CodeBuild projects whose settings name an image.

CodeBuild runs a buildspec in the project's image; here a project named in
``CONVEYOR_BUILD_IMAGES`` does the same where a container engine (Docker or Podman)
answers. One container per build, started with ``sleep infinity`` and removed when the
build ends, times out or is stopped; every command is the script
:class:`~providers.bash_session.BashSession` writes, run with ``exec``, so state carries
over exactly as on the host. The build's directories (source, secondary sources, state) are
bind-mounted at the paths they have on the host, and the container runs as the build user
with no capabilities and ``no-new-privileges``, so nothing in it can become anyone else.

A project that names an image where no engine answers fails its build, saying so: running
it on the host instead would run it somewhere its author did not ask for.

The engine client always runs with the worker's allow-listed environment, never the
build's: a buildspec variable such as ``DOCKER_HOST`` or ``CONTAINERS_CONF`` must not steer
the worker's own client. The build's variables reach the container through a file the
build's shells read first (``BASH_ENV``).
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError

from providers.base import ActionFailed
from providers.sandbox import base_environment, process_alive, start_time

__all__ = [
    "ContainerBuild",
    "ContainerSettings",
    "Engine",
    "NoEngine",
    "detect_engine",
    "exec_argv",
    "reap_orphaned_containers",
    "remove_argv",
    "run_argv",
]

EngineName = Literal["docker", "podman"]
ENGINES: tuple[EngineName, ...] = ("docker", "podman")
INFO_TIMEOUT_SECONDS = 30.0
CONTROL_TIMEOUT_SECONDS = 30.0
NAME_PREFIX = "conveyor-build-"
LABEL = "io.conveyor.build"


class ContainerSettings(BaseSettings):
    """Build images and the container engine, environment prefix ``CONVEYOR_``."""

    # Empty values are unset (`CONVEYOR_BUILD_IMAGES=` in an env file).
    model_config = SettingsConfigDict(env_prefix="CONVEYOR_", extra="ignore", env_ignore_empty=True)

    # CodeBuild ProjectName -> image, inline JSON and/or a JSON file; inline wins.
    build_images: dict[str, str] = Field(default_factory=dict)
    build_images_file: Path | None = None
    # auto: the first of docker, podman whose `info` answers.
    container_engine: Literal["auto", "docker", "podman"] = "auto"
    # Arguments before the subcommand of every engine call (``["--runtime", "runc"]``) and
    # extra arguments of ``run`` (``["--ulimit", "nofile=1024:1024"]``), as JSON lists.
    container_engine_args: list[str] = Field(default_factory=list)
    container_run_args: list[str] = Field(default_factory=list)
    # The network builds join (``--network``); None: the engine's default.
    container_network: str | None = None
    # Pulling the image and starting the container, within the action's own timeout.
    container_start_timeout_seconds: float = Field(default=900.0, gt=0)

    @classmethod
    def load(cls) -> ContainerSettings:
        try:
            return cls()
        except (ValidationError, SettingsError) as exc:
            raise ActionFailed(f"invalid container settings: {exc}") from exc

    def image_for(self, project: str) -> str | None:
        """The image ``project`` builds in, or None (it builds on the host)."""
        images: dict[str, str] = {}
        if self.build_images_file is not None:
            images.update(_read_images_file(self.build_images_file))
        images.update(self.build_images)
        return images.get(project) or None


def _read_images_file(path: Path) -> dict[str, str]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ActionFailed(f"CONVEYOR_BUILD_IMAGES_FILE {path}: {exc.strerror}") from exc
    except json.JSONDecodeError as exc:
        raise ActionFailed(f"CONVEYOR_BUILD_IMAGES_FILE {path} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in data.items()
    ):
        raise ActionFailed(
            f"CONVEYOR_BUILD_IMAGES_FILE {path} must hold a JSON object of project -> image"
        )
    return data


# -- the engine --------------------------------------------------------------------------


@dataclass(frozen=True)
class Engine:
    """A container engine CLI that answered ``info``, with the global arguments to use."""

    name: EngineName
    command: tuple[str, ...]  # the executable and its global arguments


class NoEngine(Exception):
    """No container engine answers here; the message says what each one said."""


def client_environment() -> dict[str, str]:
    """What the engine client runs with: the worker's allow-list, never the build's env."""
    env = base_environment()
    for key in ("HOME", "XDG_RUNTIME_DIR", "DOCKER_HOST", "CONTAINER_HOST"):
        if key in os.environ:  # how the worker itself reaches its engine
            env[key] = os.environ[key]
    return env


def detect_engine(
    choice: Literal["auto", "docker", "podman"] = "auto",
    global_args: list[str] | tuple[str, ...] = (),
    timeout: float = INFO_TIMEOUT_SECONDS,
) -> Engine:
    """The engine to build with: ``choice``, or for ``auto`` the first of docker and podman
    whose ``info`` succeeds. Raises NoEngine naming every failure."""
    names: tuple[EngineName, ...] = ENGINES if choice == "auto" else (choice,)
    env = client_environment()
    failures: list[str] = []
    for name in names:
        command = (name, *global_args)
        try:
            out = subprocess.run(
                [*command, "info"],
                env=env,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                errors="replace",
                timeout=timeout,
                check=False,
            )
        except FileNotFoundError:
            failures.append(f"{name} info failed: {name} is not on PATH")
            continue
        except subprocess.TimeoutExpired:
            failures.append(f"{name} info failed: no answer within {timeout:g}s")
            continue
        if out.returncode == 0:
            return Engine(name, command)
        failures.append(f"{name} info failed: {_last_line(out.stderr, out.returncode)}")
    raise NoEngine("no container engine answers here: " + "; ".join(failures))


def _last_line(text: str, code: int) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else f"exit status {code}"


# -- argv ----------------------------------------------------------------------------------


def run_argv(
    engine: Engine,
    image: str,
    name: str,
    *,
    user: tuple[int, int],
    mounts: list[Path],
    workdir: Path,
    network: str | None = None,
    extra: list[str] | tuple[str, ...] = (),
) -> list[str]:
    """Start the build's long-lived container: it only sleeps; commands come by ``exec``."""
    argv = [*engine.command, "run", "--detach", "--rm", "--name", name, "--label", f"{LABEL}=1"]
    argv += ["--user", f"{user[0]}:{user[1]}", "--workdir", str(workdir)]
    argv += ["--cap-drop", "all", "--security-opt", "no-new-privileges"]
    if network:
        argv += ["--network", network]
    for path in mounts:
        argv += ["--volume", f"{path}:{path}"]
    argv += [*extra, "--entrypoint", "sleep", image, "infinity"]
    return argv


def exec_argv(
    engine: Engine,
    name: str,
    argv: list[str],
    *,
    user: tuple[int, int],
    workdir: Path,
    env_file: Path | None = None,
) -> list[str]:
    """Run ``argv`` in the build's container, as the build user, from ``workdir``."""
    out = [*engine.command, "exec", "--user", f"{user[0]}:{user[1]}", "--workdir", str(workdir)]
    if env_file is not None:
        out += ["--env", f"BASH_ENV={env_file}"]
    return [*out, name, *argv]


def remove_argv(engine: Engine, name: str) -> list[str]:
    """Kill and remove at once (podman's ``rm -f`` would first wait 10 s on SIGTERM)."""
    if engine.name == "podman":
        return [*engine.command, "rm", "--force", "--time", "0", name]
    return [*engine.command, "rm", "--force", name]


def environment_script(env: dict[str, str]) -> str:
    """The build's variables for ``BASH_ENV``: exported, then ``BASH_ENV`` itself unset so
    that shells the build starts itself do not read the file again."""
    lines = [f"export {k}={shlex.quote(v)}\n" for k, v in env.items() if k.isidentifier()]
    return "".join(lines) + "unset BASH_ENV\n"


def container_environment(env: dict[str, str]) -> dict[str, str]:
    """The build's variables minus what it inherited unchanged from the worker (``PATH``,
    locale): in a container those come from the image."""
    inherited = base_environment()
    return {k: v for k, v in env.items() if inherited.get(k) != v}


# -- one build's container ---------------------------------------------------------------


class ContainerBuild:
    """The container one build's commands run in: started, used by ``exec``, removed."""

    def __init__(self, engine: Engine, image: str, settings: ContainerSettings) -> None:
        self.engine = engine
        self.image = image
        self.settings = settings
        # Whose it is, as build cgroups say it: a later worker start removes it if this
        # process is gone without having removed it (killed mid-build).
        pid = os.getpid()
        self.name = f"{NAME_PREFIX}{pid}-{start_time(pid)}-{uuid.uuid4().hex[:12]}"
        self.env = client_environment()
        self._user = (os.getuid(), os.getgid())
        self._workdir = Path("/")
        self._env_file: Path | None = None
        self._started = False

    def start(
        self,
        *,
        user: tuple[int, int],
        mounts: list[Path],
        workdir: Path,
        env: dict[str, str],
        env_file: Path,
        deadline: float | None,
    ) -> None:
        """Write the build's variables to ``env_file`` and start the container (pulling the
        image when the engine does not have it). ActionFailed with the engine's words."""
        self._user, self._workdir, self._env_file = user, workdir, env_file
        fd = os.open(env_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        os.fchown(fd, *user)  # the build's own variables, readable by the build only
        with os.fdopen(fd, "w") as fh:
            fh.write(environment_script(container_environment(env)))
        timeout = self.settings.container_start_timeout_seconds
        if deadline is not None:
            timeout = max(1.0, min(timeout, deadline - time.time()))
        argv = run_argv(
            self.engine,
            self.image,
            self.name,
            user=user,
            mounts=mounts,
            workdir=workdir,
            network=self.settings.container_network,
            extra=self.settings.container_run_args,
        )
        self._started = True  # from here on, close() removes whatever came of it
        try:
            out = subprocess.run(
                argv,
                env=self.env,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                errors="replace",
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise ActionFailed(
                f"the build container ({self.image}) did not start within {timeout:.0f}s",
                retryable=True,
            ) from None
        if out.returncode != 0:
            raise ActionFailed(
                f"{self.engine.name} could not start the build container from image "
                f"{self.image}: {_last_line(out.stderr, out.returncode)}"
            )

    def wrap(self, argv: list[str]) -> list[str]:
        """``argv`` (bash and its script) as a command run inside the container."""
        return exec_argv(
            self.engine,
            self.name,
            argv,
            user=self._user,
            workdir=self._workdir,
            env_file=self._env_file,
        )

    def signal_all(self, signal_name: str) -> None:
        """Signal every process of the build but the container's init. They all run as the
        build user (no capabilities, no-new-privileges), who may signal them all."""
        if not self._started:
            return
        self._control(self.wrap(["bash", "-c", f"kill -s {signal_name} -1"]))

    def close(self) -> None:
        """Kill and remove the container; nothing of the build survives it."""
        if self._started:
            self._control(remove_argv(self.engine, self.name))
            self._started = False

    def _control(self, argv: list[str]) -> None:
        subprocess.run(
            argv,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=CONTROL_TIMEOUT_SECONDS,
            check=False,
        )


def container_for(project: str) -> ContainerBuild | None:
    """The container ``project``'s build runs in, or None when its settings name no image.

    ActionFailed when they do and no engine answers: the build must not run on the host.
    """
    settings = ContainerSettings.load()
    image = settings.image_for(project)
    if image is None:
        return None
    try:
        engine = detect_engine(settings.container_engine, settings.container_engine_args)
    except NoEngine as exc:
        raise ActionFailed(
            f"CodeBuild project {project} builds in the image {image} (CONVEYOR_BUILD_IMAGES), "
            f"but {exc}. Install Docker or Podman, or remove the project's image to build "
            "on the host."
        ) from None
    return ContainerBuild(engine, image, settings)


def reap_orphaned_containers() -> int:
    """Remove the build containers of worker processes that are gone; how many.

    Asks an engine only where settings name build images, and never fails a worker's
    start: a warning-worthy problem is raised as ActionFailed for the caller to log.
    """
    settings = ContainerSettings.load()
    if not settings.build_images and settings.build_images_file is None:
        return 0
    try:
        engine = detect_engine(settings.container_engine, settings.container_engine_args)
    except NoEngine:
        return 0
    env = client_environment()
    argv = [*engine.command, "ps", "--all", "--filter", f"name={NAME_PREFIX}"]
    out = subprocess.run(
        [*argv, "--format", "{{.Names}}"],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=CONTROL_TIMEOUT_SECONDS,
        check=False,
    )
    removed = 0
    for name in out.stdout.split():
        owner, _, rest = name.removeprefix(NAME_PREFIX).partition("-")
        started = rest.partition("-")[0]
        if not name.startswith(NAME_PREFIX) or not owner.isdigit():
            continue  # the filter matches anywhere in a name
        if process_alive(int(owner), started):
            continue
        gone = subprocess.run(
            remove_argv(engine, name),
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=CONTROL_TIMEOUT_SECONDS,
            check=False,
        )
        removed += gone.returncode == 0
    return removed
