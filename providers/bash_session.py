"""Run build commands the way CodeBuild 0.2 does: as if in one long-lived bash shell.

Each command runs in its own ``bash`` process, but starts from the state the previous one
left: its working directory, its shell variables (exported or not), its functions. An
EXIT trap writes that state to files; the next command's script sources them first. So
``cd``, ``VAR=$(...)`` and ``export`` carry over like in CodeBuild, while a command that
calls ``exit 1`` fails only itself instead of taking down the build, and each command can
be timed out or cancelled on its own. Not carried over: shell options (``set -e``) and
traps.

Commands run inside the build's sandbox (:mod:`providers.sandbox`): as the build user, in
the build's own cgroup, which every command's shell joins before anything else runs. On
cancel or timeout, and at the end, the whole cgroup is killed, so background daemons
(``dockerd &``), ``setsid`` and double-forked children do not outlive the build. Without a
cgroup, each command's process group is killed instead. Output goes to a capped
:class:`~providers.build_log.BuildLog`.

With a :class:`~providers.container.ContainerBuild`, the same scripts run inside the
build's container instead (``exec``), whose own kill replaces the cgroup's.
"""

from __future__ import annotations

import contextlib
import os
import select
import shlex
import shutil
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from providers.base import ActionFailed
from providers.build_log import BuildLog
from providers.container import ContainerBuild
from providers.sandbox import (
    BuildCgroup,
    SandboxPolicy,
    create_build_cgroup,
    give_to,
    open_way,
    unreachable,
    user_environment,
)

__all__ = ["BashSession", "BuildLog", "Outcome"]

KILL_GRACE_SECONDS = 2.0
POLL_SECONDS = 0.05
# exported-variables are at most 122,880 bytes in all (CodePipeline): reading more is waste.
MAX_VARIABLES_OUTPUT = 1024 * 1024
# util-linux's setpriv drops to the build user in the exec'd program. Popen(user=...) does
# it in the child instead, which rules out vfork: forking a worker's whole address space
# cost ~11 ms per command for a 200 MB worker here, against ~1 ms for setpriv's exec.
SETPRIV = shutil.which("setpriv")

# Bash's own variables (and ours) are never saved: restoring them would be wrong or fail.
_SAVE_STATE = r"""
__cv_save() {
  __cv_rc=$?
  set +e +u +o pipefail
  {
    pwd > "$__cv_state/cwd"
    while IFS= read -r __cv_n; do
      case "$__cv_n" in
        __cv_*|BASH|BASH_*|BASHOPTS|BASHPID|COLUMNS|COMP_*|DIRSTACK|EPOCHREALTIME) continue ;;
        EPOCHSECONDS|EUID|FUNCNAME|GROUPS|HISTCMD|HOSTNAME|HOSTTYPE|IFS|LINENO) continue ;;
        LINES|MACHTYPE|OLDPWD|OPTARG|OPTERR|OPTIND|OSTYPE|PIPESTATUS|PPID|PS1) continue ;;
        PS2|PS4|PWD|RANDOM|SECONDS|SHELLOPTS|SHLVL|SRANDOM|UID|_) continue ;;
      esac
      case "${!__cv_n@a}" in *r*) continue ;; esac
      declare -p "$__cv_n"
    done < <(compgen -v) > "$__cv_state/vars.new" \
      && mv -f "$__cv_state/vars.new" "$__cv_state/vars.sh"
    while IFS= read -r __cv_n; do
      case "$__cv_n" in __cv_*) continue ;; esac
      declare -f "$__cv_n"
    done < <(compgen -A function) > "$__cv_state/funcs.new" \
      && mv -f "$__cv_state/funcs.new" "$__cv_state/funcs.sh"
  } 2>/dev/null
  exit "$__cv_rc"
}
trap __cv_save EXIT
"""

_RESTORE_STATE = r"""
if [ -f "$__cv_state/vars.sh" ]; then . "$__cv_state/vars.sh"; fi
if [ -f "$__cv_state/funcs.sh" ]; then . "$__cv_state/funcs.sh"; fi
cd -- "$(cat "$__cv_state/cwd" 2>/dev/null)" 2>/dev/null || cd -- "$__cv_src"
"""


@dataclass(frozen=True)
class Outcome:
    exit_code: int | None  # None when the command was stopped
    stopped: str | None = None  # "cancelled" or "timed out"

    @property
    def ok(self) -> bool:
        return self.exit_code == 0


class BashSession:
    """One build's shell: runs commands one by one, carrying state between them.

    With a build user, ``src``, ``state_dir`` and the ``secondaries`` (the secondary source
    directories) become that user's; the build's ``HOME`` and ``TMPDIR`` are made inside
    ``state_dir`` so that they go away with the build. Which directories those are is the
    caller's word, never read back from ``env``: a buildspec sets variables, and one naming
    ``CODEBUILD_SRC_DIR_x: /etc`` must not make the root worker hand ``/etc`` over.
    """

    def __init__(
        self,
        src: Path,
        state_dir: Path,
        env: dict[str, str],
        log: BuildLog,
        cancelled: threading.Event,
        deadline: float | None,
        sandbox: SandboxPolicy | None = None,
        container: ContainerBuild | None = None,
        *,
        secondaries: Sequence[Path] = (),
    ) -> None:
        self.src = src
        self.state_dir = state_dir
        self.log = log
        self.cancelled = cancelled
        self.deadline = deadline
        self.sandbox = sandbox or SandboxPolicy()
        self._groups: list[int] = []
        state_dir.mkdir(parents=True, exist_ok=True)
        home, tmp = state_dir / "home", state_dir / "tmp"
        home.mkdir(exist_ok=True)
        tmp.mkdir(exist_ok=True)
        self.env = dict(env)
        for key, value in user_environment(self.sandbox.user, home, tmp).items():
            if key not in env or env[key] == os.environ.get(key):  # unless the build set it
                self.env[key] = value
        user = self.sandbox.user
        if user is not None:
            boundary = self.sandbox.boundary
            blocked = unreachable(boundary) if boundary else None
            if blocked is not None:
                raise ActionFailed(
                    f"builds run as {user.name}, who cannot pass through {blocked} on the way "
                    "to the worker's scratch directory (CONVEYOR_WORKDIR): chmod o+x it"
                )
            owned = [src, state_dir, *secondaries]
            if boundary is not None:
                outside = [p for p in owned if not p.resolve().is_relative_to(boundary.resolve())]
                if outside:
                    raise ActionFailed(
                        f"build directories {[str(p) for p in outside]} are not under the "
                        f"worker's scratch directory {boundary}"
                    )
            for path in owned:
                open_way(path, self.sandbox.boundary)
            give_to(user, owned)
        self.container = container
        self._cgroup: BuildCgroup | None = None
        if container is not None:
            ids = (user.uid, user.gid) if user else (os.getuid(), os.getgid())
            mounts = [src, state_dir, *secondaries]
            env_file = state_dir / f"env-{uuid.uuid4().hex}.sh"
            try:
                container.start(
                    user=ids,
                    mounts=mounts,
                    workdir=src,
                    env=self.env,
                    env_file=env_file,
                    deadline=deadline,
                )
            except BaseException:
                container.close()  # whatever a failed start left behind
                raise
        elif self.sandbox.cgroups:
            self._cgroup = create_build_cgroup()

    def _join(self) -> str:
        """The first line of every script: into the build's cgroup, before anything forks."""
        if self._cgroup is None:
            return ""
        fd = self._cgroup.join_fd
        return (
            f"printf 0 >&{fd} || {{ echo 'conveyor: cannot join the build cgroup' >&2; "
            f"exit 125; }}\nexec {fd}>&-\n"
        )

    def _script(self, command: str, overrides: dict[str, str]) -> Path:
        exports = "".join(f"export {k}={shlex.quote(v)}\n" for k, v in overrides.items())
        body = (
            f"{self._join()}"
            f"__cv_state={shlex.quote(str(self.state_dir))}\n"
            f"__cv_src={shlex.quote(str(self.src))}\n"
            f"{_RESTORE_STATE}{exports}{_SAVE_STATE}\n{command}\n"
        )
        # The state directory is the build's: a name it cannot guess, created new, so no
        # link it planted there can make the worker write anywhere else.
        path = self.state_dir / f"command-{uuid.uuid4().hex}.sh"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        os.fchmod(fd, 0o644)  # readable by the build user whatever the worker's umask
        with os.fdopen(fd, "w") as fh:
            fh.write(body)
        return path

    def _spawn(self, argv: list[str], stdout: int) -> subprocess.Popen[bytes]:
        extra: dict[str, Any] = {}
        user = self.sandbox.user
        env = self.env
        if self.container is not None:  # the engine's client, as the worker; inside, the user
            argv, env, user = self.container.wrap(argv), self.container.env, None
        if user is not None and SETPRIV:
            ids = [f"--reuid={user.uid}", f"--regid={user.gid}", "--clear-groups"]
            argv = [SETPRIV, *ids, "--", *argv]
        elif user is not None:
            extra = {"user": user.uid, "group": user.gid, "extra_groups": []}
        proc = subprocess.Popen(
            argv,
            cwd=self.src,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            pass_fds=(self._cgroup.join_fd,) if self._cgroup else (),
            **extra,
        )
        self._groups.append(proc.pid)
        return proc

    def run(self, command: str, overrides: dict[str, str] | None = None) -> Outcome:
        """Run one command; ``overrides`` are exported after the saved state is restored."""
        script = self._script(command, overrides or {})
        proc = self._spawn(["bash", str(script)], self.log.fd)
        while True:
            if _wait_exit(proc, POLL_SECONDS):
                code = proc.wait()
                self.log.pump()
                return Outcome(exit_code=code)
            self.log.pump()
            stopped = self._stop_reason()
            if stopped:
                self._kill(proc)
                return Outcome(exit_code=None, stopped=stopped)

    def _stop_reason(self) -> str | None:
        if self.cancelled.is_set():
            return "cancelled"
        if self.deadline is not None and time.time() >= self.deadline:
            return "timed out"
        return None

    def _kill(self, proc: subprocess.Popen[bytes]) -> None:
        """A stopped build: SIGTERM to all of it, a grace period, then SIGKILL to all."""
        pids = self._cgroup.pids() if self._cgroup else []
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGTERM)
        if self.container is not None:
            self.container.signal_all("TERM")
        _signal_group(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=KILL_GRACE_SECONDS)
        self._kill_all()
        proc.wait()
        self.log.pump()

    def _kill_all(self) -> None:
        if self.container is not None:
            self.container.signal_all("KILL")
        if self._cgroup is not None:
            self._cgroup.kill()
        for pgid in self._groups:
            _signal_group(pgid, signal.SIGKILL)

    def read_variables(self, names: list[str]) -> dict[str, str]:
        """Values the build left in ``names`` (for ``env.exported-variables``).

        The saved state is the build's own code, so it is read by the build's user, in
        the build's cgroup, like any command.
        """
        if not names:
            return {}
        lines = "".join(
            f'if [ -n "${{{n}+x}}" ]; then printf "%s\\0%s\\0" {shlex.quote(n)} "${{{n}}}"; fi\n'
            for n in names
            if n.isidentifier()
        )
        script = (
            f"{self._join()}"
            f"__cv_state={shlex.quote(str(self.state_dir))}\n__cv_src={shlex.quote(str(self.src))}\n"
            f"{_RESTORE_STATE}{lines}"
        )
        read, write = os.pipe2(os.O_CLOEXEC)
        try:
            proc = self._spawn(["bash", "-c", script], write)
        finally:
            os.close(write)
        with os.fdopen(read, "rb") as out:
            data = _read_bounded(out.fileno(), MAX_VARIABLES_OUTPUT, time.monotonic() + 30)
        if proc.poll() is None:
            _signal_group(proc.pid, signal.SIGKILL)
        proc.wait()
        parts = data.decode(errors="replace").split("\0")
        return dict(zip(parts[0:-1:2], parts[1::2], strict=False))

    def end_processes(self) -> None:
        """Kill everything the build still runs (daemons it started in the background).

        Call it before the worker reads what the build wrote (artifacts): a build process
        still running could swap a checked file for a link to a worker-only file between
        the check and the copy. Later commands (``read_variables``) still run.
        """
        self._kill_all()

    def close(self) -> None:
        """Kill whatever the build left running: its container or its whole cgroup, and
        its process groups."""
        if self.container is not None:
            self.container.close()  # removing the container kills everything in it
        self._kill_all()
        if self._cgroup is not None:
            self._cgroup.remove()
            self._cgroup = None
        self._groups.clear()


def _read_bounded(fd: int, limit: int, deadline: float) -> bytes:
    """Up to ``limit`` bytes from ``fd`` until end of file or ``deadline``."""
    chunks: list[bytes] = []
    size = 0
    while size < limit:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        ready, _, _ = select.select([fd], [], [], left)
        if not ready:
            break
        data = os.read(fd, min(65536, limit - size))
        if not data:
            break
        chunks.append(data)
        size += len(data)
    return b"".join(chunks)


def _wait_exit(proc: subprocess.Popen[bytes], timeout: float) -> bool:
    """Whether ``proc`` exited within ``timeout``, waking the moment it does.

    ``Popen.wait(timeout)`` polls with sleeps that grow to 50 ms, which added ~8 ms to every
    build command; a pidfd (Linux 5.3+) wakes select() at the exit itself.
    """
    if hasattr(os, "pidfd_open"):
        try:
            fd = os.pidfd_open(proc.pid)
        except OSError:  # already reaped, or pidfds unsupported here
            return proc.poll() is not None
        try:
            ready, _, _ = select.select([fd], [], [], timeout)
            return bool(ready)
        finally:
            os.close(fd)
    try:
        proc.wait(timeout=timeout)
        return True
    except subprocess.TimeoutExpired:
        return False


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)
