"""A container engine and a build image for tests, made here in a second: no registry.

The image is the host's own bash and coreutils with their shared libraries (what ldd
names), imported as a root file system tarball, plus a marker file that says a command ran
in it. Where an engine answers ``info`` but cannot run a container with default settings,
the settings this repository's CI host needs are tried next (see :func:`working_settings`).
"""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

from providers.container import Engine, client_environment

IMAGE = "localhost/conveyor-test-build:latest"
MARKER = "/etc/conveyor-test-image"
MARKER_TEXT = "conveyor test image\n"
TOOLS = (
    "bash",
    "sh",
    "cat",
    "cp",
    "env",
    "head",
    "id",
    "ls",
    "mkdir",
    "mv",
    "rm",
    "setsid",
    "sleep",
)


@dataclass(frozen=True)
class EngineSetup:
    """The engine with which tests run containers here, and the settings it takes."""

    engine: Engine
    engine_args: list[str] = field(default_factory=list)
    run_args: list[str] = field(default_factory=list)


def _libraries(binary: str) -> list[str]:
    out = subprocess.run(["ldd", binary], capture_output=True, text=True, check=False).stdout
    return re.findall(r"(/\S+)", out)


def root_filesystem() -> bytes:
    """A tarball of the tools, their libraries, ``/tmp`` and the marker file."""
    files: dict[str, str] = {}  # path in the image -> host path
    for tool in TOOLS:
        path = shutil.which(tool)
        if path is None:
            continue
        files[path] = os.path.realpath(path)
        for lib in _libraries(path):
            files[lib] = os.path.realpath(lib)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        dirs = sorted({str(p) for f in files for p in Path(f).parents if str(p) != "/"})
        for d in [*dirs, "/tmp", "/etc"]:
            info = tarfile.TarInfo(d.lstrip("/"))
            info.type, info.mode = tarfile.DIRTYPE, 0o1777 if d == "/tmp" else 0o755
            tar.addfile(info)
        for inside, host in sorted(files.items()):
            tar.add(host, arcname=inside.lstrip("/"), recursive=False)
        if "/bin/bash" not in files and "/usr/bin/bash" in files:
            link = tarfile.TarInfo("bin")  # merged /usr, as on Debian: /bin/bash works
            link.type, link.linkname = tarfile.SYMTYPE, "usr/bin"
            tar.addfile(link)
        data = MARKER_TEXT.encode()
        info = tarfile.TarInfo(MARKER.lstrip("/"))
        info.size, info.mode = len(data), 0o644
        tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def build_image(engine: Engine) -> str:
    """Import the test image into ``engine``'s store; its name."""
    subprocess.run(
        [*engine.command, "import", "-", IMAGE],
        input=root_filesystem(),
        env=client_environment(),
        capture_output=True,
        check=True,
        timeout=120,
    )
    return IMAGE


def _runs(engine: Engine, engine_args: list[str], run_args: list[str]) -> str | None:
    """None when a container runs with these settings, else the engine's words."""
    argv = [engine.name, *engine_args, "run", "--rm", *run_args, "--entrypoint", "bash"]
    out = subprocess.run(
        [*argv, IMAGE, "-c", "exit 0"],
        env=client_environment(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return None if out.returncode == 0 else (out.stderr.strip() or f"exit {out.returncode}")


def _hard_limit(name: str) -> int:
    for line in Path("/proc/self/limits").read_text().splitlines():
        if line.startswith(name):
            return int(line[len(name) :].split()[1])
    raise LookupError(name)


def working_settings(engine: Engine) -> EngineSetup:
    """Settings with which ``engine`` runs a container here, or RuntimeError saying why not.

    Defaults first. Then, for podman, what this repository's CI host needs and a deployment
    on such a host sets the same way (CONVEYOR_CONTAINER_ENGINE_ARGS / _RUN_ARGS): crun
    refuses a hybrid cgroup v1/v2 host ("cgroups in hybrid mode not supported"), so runc;
    without CAP_SYS_RESOURCE no limit can be raised, so the host's own: open files at its
    hard limit, processes at podman's own (it lowers itself to 32768 at start).
    """
    failure = _runs(engine, [], [])
    if failure is None:
        return EngineSetup(engine)
    tried = [f"defaults: {failure}"]
    if engine.name == "podman" and shutil.which("runc"):
        files = _hard_limit("Max open files")
        procs = min(_hard_limit("Max processes"), 32768)
        engine_args = ["--runtime", "runc"]
        run_args = ["--ulimit", f"nofile={files}:{files}", "--ulimit", f"nproc={procs}:{procs}"]
        failure = _runs(engine, engine_args, run_args)
        if failure is None:
            return EngineSetup(
                Engine(engine.name, (engine.name, *engine_args)), engine_args, run_args
            )
        tried.append(f"{' '.join(engine_args + run_args)}: {failure}")
    raise RuntimeError(f"{engine.name} answers but runs no container here: " + "; ".join(tried))
