"""What keeps a build away from the worker that runs it: another user, a cgroup, a clean env.

A buildspec is code from whoever can push to a source repository. Run in the worker's own
user it could read the worker's environment (S3 keys, the Redis URL) through
``/proc/$PPID/environ``, signal the worker's processes, and leave ``setsid`` or double-forked
daemons behind that a process-group kill never reaches. So, as far as the host allows:

- the build runs as an unprivileged user (``CONVEYOR_BUILD_USER``), which can neither read
  a root worker's ``/proc/<pid>/environ`` nor signal it; only the build's own directories
  are given to that user;
- every build gets a cgroup of its own (cgroup v2 with ``cgroup.kill`` where the host has
  it, else the v1 freezer or pids hierarchy), and the whole cgroup is killed when the build
  ends, times out or is stopped: a process cannot leave a cgroup by forking or ``setsid``;
- the build's environment is built from an allow-list plus its own variables, never copied
  from the worker's.

Where the worker is not root (no user to switch to) or no cgroup can be created, builds
still run, with a warning logged once per process, and fall back to process-group kills.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import pwd
import shutil
import signal
import subprocess
import time
import uuid
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("conveyor.sandbox")

DEFAULT_BUILD_USER = "conveyor-build"
DEFAULT_LOG_MAX_BYTES = 8 * 1024 * 1024
CGROUP_PREFIX = "conveyor-build-"
# Variables a build may inherit from the worker: how to find programs and speak the locale.
# Everything else (credentials, URLs, the worker's own settings) stays with the worker.
INHERITED_ENV = ("PATH", "LANG", "LANGUAGE", "TZ", "TERM")
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
KILL_WAIT_SECONDS = 5.0

_warned: set[str] = set()


def warn_once(key: str, message: str, *args: object) -> None:
    """A degraded-isolation warning, logged once per process rather than once per build."""
    if key not in _warned:
        _warned.add(key)
        log.warning(message, *args)


@dataclass(frozen=True)
class BuildUser:
    name: str
    uid: int
    gid: int


@dataclass(frozen=True)
class SandboxPolicy:
    """How a worker runs build commands. The defaults (no user switch, cgroups when
    possible) are what a provider gets outside a worker, e.g. in unit tests."""

    user: BuildUser | None = None  # None: the worker's own user
    cgroups: bool = True
    log_max_bytes: int = DEFAULT_LOG_MAX_BYTES
    # The scratch root: directories below it on the way to a build's own are made
    # traversable (never listable) for the build user; nothing at or above it is touched.
    boundary: Path | None = None


def base_environment() -> dict[str, str]:
    """The part of a build's environment that comes from the worker: the allow-list only."""
    env = {k: os.environ[k] for k in INHERITED_ENV if k in os.environ}
    env.update({k: v for k, v in os.environ.items() if k.startswith("LC_")})
    env.setdefault("PATH", DEFAULT_PATH)
    return env


def user_environment(user: BuildUser | None, home: Path, tmp: Path) -> dict[str, str]:
    """Who the build is and where it may write, for variables the build did not set."""
    name = user.name if user else pwd.getpwuid(os.getuid()).pw_name
    return {
        "HOME": str(home),
        "TMPDIR": str(tmp),
        "USER": name,
        "LOGNAME": name,
        "SHELL": "/bin/bash",
    }


# -- the build user ----------------------------------------------------------------------


def resolve_build_user(name: str, *, create: bool = True) -> BuildUser | None:
    """The user builds run as, or None when builds must run as the worker's own user.

    Only root can switch users; as root, a missing user is created (a system account with
    no login shell and no home: build commands run ``bash`` directly, and each build gets
    a home directory of its own).
    """
    if not name:
        warn_once("no-user", "CONVEYOR_BUILD_USER is empty: builds run as the worker's user")
        return None
    if os.geteuid() != 0:
        warn_once(
            "not-root",
            "the worker is not root, so builds run as its own user (%s), not as %s: a build "
            "can read this worker's environment and signal its processes",
            pwd.getpwuid(os.geteuid()).pw_name,
            name,
        )
        return None
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        if not create:
            raise
        entry = _create_user(name)
    if entry.pw_uid == 0:
        raise ValueError(f"build user {name!r} is root; builds must run unprivileged")
    return BuildUser(name, entry.pw_uid, entry.pw_gid)


def _create_user(name: str) -> pwd.struct_passwd:
    nologin = shutil.which("nologin") or "/usr/sbin/nologin"
    argv = ["useradd", "--system", "--user-group", "--no-create-home", "--shell", nologin, name]
    error = ""
    # Several worker processes may start at once; useradd refuses while another holds
    # /etc/passwd's lock, and one of them will have created the user meanwhile.
    for _ in range(20):
        try:
            out = subprocess.run(argv, capture_output=True, text=True, check=False)
            error = out.stderr.strip()
        except OSError as exc:  # no useradd on this host
            error = str(exc)
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            time.sleep(0.1)
            continue
        log.info("build user %s (uid %d) created", name, entry.pw_uid)
        return entry
    raise OSError(
        f"the build user {name!r} does not exist and could not be created ({error}); "
        f"create it (useradd --system --user-group {name}) or set CONVEYOR_BUILD_USER"
    )


def give_to(user: BuildUser, paths: list[Path]) -> None:
    """Make ``paths`` (whole trees) the build user's own. Links are changed, never followed."""
    for top in paths:
        if not top.exists():
            continue
        os.lchown(top, user.uid, user.gid)
        for dirpath, dirnames, filenames in os.walk(top):
            for name in (*dirnames, *filenames):
                os.lchown(os.path.join(dirpath, name), user.uid, user.gid)


def open_way(path: Path, boundary: Path | None) -> None:
    """Let others traverse (not list) the directories from ``boundary`` down to ``path``.

    Attempt directories are private (0700) and the build user must reach its own under
    them. Execute-only lets it pass through without learning any other name in them.
    """
    here = path.resolve().parent
    if boundary is not None and not here.is_relative_to(boundary.resolve()):
        boundary = None  # not under the scratch root: open no more than needed
    stop = boundary.resolve() if boundary else Path("/")
    while here != stop and here != here.parent:
        st = here.stat()
        if st.st_uid == os.geteuid() and not st.st_mode & 0o001:
            here.chmod((st.st_mode & 0o7777) | 0o001)
        if boundary is None and st.st_mode & 0o001:
            break  # without a boundary, stop at the first directory that is open already
        here = here.parent


def unreachable(path: Path) -> Path | None:
    """The first of ``path`` and the directories above it that others may not pass
    through, if any. The build user gets its own directories; it must also reach them."""
    resolved = path.resolve()
    for here in (resolved, *resolved.parents):
        if not here.stat().st_mode & 0o001:
            return here
    return None


# -- cgroups ---------------------------------------------------------------------------


class BuildCgroup(ABC):
    """One build's cgroup: processes join it by writing to ``join_fd``; ``kill`` ends all."""

    def __init__(self, path: Path) -> None:
        self.path = path
        # Opened by the worker, written by the build's first shell after it dropped its
        # privileges: the kernel checks the opener's credentials, so the unprivileged
        # shell can put itself in, and nothing else is ever handed to it.
        self.join_fd = os.open(path / "cgroup.procs", os.O_WRONLY | os.O_CLOEXEC)

    def pids(self) -> list[int]:
        try:
            text = (self.path / "cgroup.procs").read_text()
        except OSError:
            return []
        return [int(p) for p in text.split()]

    @abstractmethod
    def kill(self) -> None:
        """SIGKILL every process in the cgroup and wait (a few seconds at most) for them."""

    def remove(self) -> None:
        self.kill()
        with contextlib.suppress(OSError):
            os.close(self.join_fd)
        for _ in range(50):
            try:
                self.path.rmdir()
                return
            except FileNotFoundError:
                return
            except OSError as exc:
                if exc.errno != errno.EBUSY:
                    log.warning("could not remove cgroup %s: %s", self.path, exc)
                    return
                time.sleep(0.02)
                self.kill()
        log.warning("cgroup %s still busy; left in place", self.path)

    def _wait_empty(self, rekill: bool) -> bool:
        deadline = time.monotonic() + KILL_WAIT_SECONDS
        while time.monotonic() < deadline:
            pids = self.pids()
            if not pids:
                return True
            if rekill:
                for pid in pids:
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.kill(pid, signal.SIGKILL)
            time.sleep(0.01)
        return False


class CgroupV2(BuildCgroup):
    def kill(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.path / "cgroup.kill").write_text("1")
        if not self._wait_empty(rekill=False):
            log.warning("processes of cgroup %s survived cgroup.kill", self.path)


class CgroupV1(BuildCgroup):
    """A v1 hierarchy: the freezer's when mounted (freeze, kill all, thaw: nothing can fork
    in between), else any (kill what is listed until nothing is)."""

    def kill(self) -> None:
        state = self.path / "freezer.state"
        frozen = False
        if state.exists():
            with contextlib.suppress(OSError):
                state.write_text("FROZEN")
                deadline = time.monotonic() + 1.0
                while time.monotonic() < deadline and state.read_text().strip() != "FROZEN":
                    time.sleep(0.005)
                frozen = True
        for pid in self.pids():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        if frozen:
            with contextlib.suppress(OSError):
                state.write_text("THAWED")
        if not self._wait_empty(rekill=True):
            log.warning("processes of cgroup %s survived SIGKILL", self.path)


def _mounts() -> list[tuple[str, str, list[str]]]:
    """(mount point, fs type, options) of every cgroup file system."""
    out = []
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/mounts").read_text().splitlines():
            fields = line.split()
            if len(fields) >= 4 and fields[2] in ("cgroup", "cgroup2"):
                point = fields[1].replace("\\040", " ")
                out.append((point, fields[2], fields[3].split(",")))
    return out


def _own_cgroups() -> dict[str, str]:
    """Controller name (``""`` for the v2 hierarchy) -> this process's cgroup path in it."""
    out: dict[str, str] = {}
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            for name in controllers.split(",") if controllers else [""]:
                out[name] = path
    return out


def cgroup_parents() -> list[tuple[type[BuildCgroup], Path]]:
    """Where this process may create build cgroups, best first: v2 (with cgroup.kill),
    then the v1 freezer, then the v1 pids hierarchy."""
    own = _own_cgroups()
    found: list[tuple[int, type[BuildCgroup], Path]] = []
    for point, fstype, options in _mounts():
        if fstype == "cgroup2" and "" in own:
            found.append((0, CgroupV2, Path(point) / own[""].lstrip("/")))
        elif fstype == "cgroup":
            for rank, controller in ((1, "freezer"), (2, "pids")):
                if controller in options and controller in own:
                    found.append((rank, CgroupV1, Path(point) / own[controller].lstrip("/")))
    return [(kind, path) for _, kind, path in sorted(found, key=lambda f: f[0])]


def create_build_cgroup() -> BuildCgroup | None:
    """A fresh cgroup for one build, or None (warned once) when none can be made here."""
    pid = os.getpid()
    name = f"{CGROUP_PREFIX}{pid}-{start_time(pid)}-{uuid.uuid4().hex[:12]}"
    errors = []
    for kind, parent in cgroup_parents():
        path = parent / name
        try:
            path.mkdir()
        except OSError as exc:
            errors.append(f"{parent}: {exc.strerror}")
            continue
        if kind is CgroupV2 and not (path / "cgroup.kill").exists():
            path.rmdir()  # a kernel before 5.14: v1 can still do it
            errors.append(f"{parent}: no cgroup.kill")
            continue
        try:
            return kind(path)
        except OSError as exc:
            path.rmdir()
            errors.append(f"{parent}: {exc.strerror}")
    warn_once(
        "no-cgroup",
        "cannot create a cgroup for builds (%s): a build's processes are killed by process "
        "group only, so a setsid or double-forked child can outlive its build",
        "; ".join(errors) or "no cgroup file system mounted",
    )
    return None


def reap_orphaned_cgroups() -> int:
    """Kill and remove the build cgroups of worker processes that are gone.

    A worker killed mid-build (OOM, SIGKILL, a crash) never killed its build's cgroup;
    whatever ran in it may still be running. Returns how many cgroups were removed.
    """
    removed = 0
    for kind, parent in cgroup_parents():
        with contextlib.suppress(OSError):
            for path in parent.glob(f"{CGROUP_PREFIX}*"):
                owner, _, rest = path.name.removeprefix(CGROUP_PREFIX).partition("-")
                started = rest.partition("-")[0]
                if not owner.isdigit() or process_alive(int(owner), started):
                    continue
                try:
                    kind(path).remove()
                    removed += 1
                except OSError as exc:
                    log.warning("could not remove the orphaned cgroup %s: %s", path, exc)
    return removed


def start_time(pid: int) -> str:
    """When the kernel started ``pid`` (clock ticks since boot), "0" where unknown.

    With the pid it names a process for good: a pid alone may be reused by another.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return "0"
    # The command name (field 2) may hold spaces and parentheses; fields after it do not.
    return stat.rsplit(")", 1)[1].split()[19]


def process_alive(pid: int, started: str | None = None) -> bool:
    """Whether ``pid`` (started at ``started``, when known) is still running. A zombie is
    not: a killed worker whose parent died too may stay one for as long as the host's init
    does not reap it."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass
        return True
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] in ("Z", "X"):
        return False
    return started in (None, "0") or fields[19] == started
