"""Run build commands the way CodeBuild 0.2 does: as if in one long-lived bash shell.

Each command runs in its own ``bash`` process, but starts from the state the previous one
left: its working directory, its shell variables (exported or not), its functions. An
EXIT trap writes that state to files; the next command's script sources them first. So
``cd``, ``VAR=$(...)`` and ``export`` carry over like in CodeBuild, while a command that
calls ``exit 1`` fails only itself instead of taking down the build, and each command can
be timed out or cancelled on its own. Not carried over: shell options (``set -e``) and
traps. Every process starts in a new session; the whole process group is killed on
cancel or timeout, and every group is killed at the end so background daemons a build
started (``dockerd &``) do not outlive it.
"""

from __future__ import annotations

import codecs
import contextlib
import os
import select
import shlex
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

KILL_GRACE_SECONDS = 2.0
POLL_SECONDS = 0.05

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


class BuildLog:
    """The build log file, mirrored to the job's log as it grows.

    Commands write straight into the file (O_APPEND, shared with our own header lines), so
    output from background processes can never block on a full pipe nobody reads.
    """

    def __init__(self, path: Path, mirror: TextIO) -> None:
        self.path = path
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self._reader = path.open("rb")
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._mirror = mirror

    @property
    def fd(self) -> int:
        return self._fd

    def line(self, text: str) -> None:
        stamp = datetime.now(UTC).strftime("%Y/%m/%d %H:%M:%S.%f")[:-3]
        os.write(self._fd, f"[Container] {stamp} {text}\n".encode())
        self.pump()

    def pump(self) -> None:
        """Copy whatever was appended since the last call to the mirror."""
        data = self._reader.read()
        if data:
            self._mirror.write(self._decoder.decode(data))
            self._mirror.flush()

    def close(self) -> None:
        self.pump()
        self._mirror.write(self._decoder.decode(b"", final=True))
        self._reader.close()
        os.close(self._fd)


class BashSession:
    """One build's shell: runs commands one by one, carrying state between them."""

    def __init__(
        self,
        src: Path,
        state_dir: Path,
        env: dict[str, str],
        log: BuildLog,
        cancelled: threading.Event,
        deadline: float | None,
    ) -> None:
        self.src = src
        self.state_dir = state_dir
        self.env = env
        self.log = log
        self.cancelled = cancelled
        self.deadline = deadline
        self._groups: list[int] = []
        self._count = 0
        state_dir.mkdir(parents=True, exist_ok=True)

    def _script(self, command: str, overrides: dict[str, str]) -> Path:
        self._count += 1
        exports = "".join(f"export {k}={shlex.quote(v)}\n" for k, v in overrides.items())
        body = (
            f"__cv_state={shlex.quote(str(self.state_dir))}\n"
            f"__cv_src={shlex.quote(str(self.src))}\n"
            f"{_RESTORE_STATE}{exports}{_SAVE_STATE}\n{command}\n"
        )
        path = self.state_dir / f"command-{self._count}.sh"
        path.write_text(body)
        return path

    def run(self, command: str, overrides: dict[str, str] | None = None) -> Outcome:
        """Run one command; ``overrides`` are exported after the saved state is restored."""
        script = self._script(command, overrides or {})
        proc = subprocess.Popen(
            ["bash", str(script)],
            cwd=self.src,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=self.log.fd,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self._groups.append(proc.pid)
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
        _signal_group(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=KILL_GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            _signal_group(proc.pid, signal.SIGKILL)
            proc.wait()
        self.log.pump()

    def read_variables(self, names: list[str]) -> dict[str, str]:
        """Values the build left in ``names`` (for ``env.exported-variables``)."""
        if not names:
            return {}
        lines = "".join(
            f'if [ -n "${{{n}+x}}" ]; then printf "%s\\0%s\\0" {shlex.quote(n)} "${{{n}}}"; fi\n'
            for n in names
            if n.isidentifier()
        )
        script = (
            f"__cv_state={shlex.quote(str(self.state_dir))}\n__cv_src={shlex.quote(str(self.src))}\n"
            f"{_RESTORE_STATE}{lines}"
        )
        out = subprocess.run(
            ["bash", "-c", script],
            env=self.env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=30,
            check=False,
        ).stdout.decode(errors="replace")
        parts = out.split("\0")
        return dict(zip(parts[0:-1:2], parts[1::2], strict=False))

    def close(self) -> None:
        """Kill whatever the build left running in any of its process groups."""
        for pgid in self._groups:
            _signal_group(pgid, signal.SIGKILL)
        self._groups.clear()


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
