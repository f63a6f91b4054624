"""The sandbox's parts on real processes: every cgroup kind this host offers kills what a
build left (setsid and double-forked children included), the process-group fallback says
it is one, and scratch directories of dead processes are removed, live ones' never."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import pytest

from providers import sandbox
from providers.base import ActionFailed
from providers.bash_session import BashSession, BuildLog
from providers.sandbox import BuildCgroup, SandboxPolicy, cgroup_parents, start_time
from tests.helpers import wait_for
from workers.scratch import ScratchSpace

ESCAPES = (
    "setsid bash -c 'sleep 300; true {m}-setsid' >/dev/null 2>&1 </dev/null &\n"
    "(bash -c 'sleep 300; true {m}-double-fork' >/dev/null 2>&1 </dev/null &) &\n"
    "sleep 0.2\n"
)


def _marked(marker: str) -> list[int]:
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if marker.encode() in cmdline.read_bytes():
                found.append(int(cmdline.parent.name))
        except OSError:
            continue
    return found


def _kinds() -> list[tuple[type[BuildCgroup], Path]]:
    found = cgroup_parents()
    if os.geteuid() != 0 or not found:
        pytest.fail("these tests need root and a cgroup file system (CI has both)")
    return found


@pytest.mark.parametrize("index", range(3), ids=["best", "second", "third"])
def test_each_cgroup_kind_kills_setsid_and_double_forked_children(index: int) -> None:
    kinds = _kinds()
    if index >= len(kinds):
        pytest.skip(f"this host offers {len(kinds)} cgroup kinds")
    kind, parent = kinds[index]
    path = (
        parent / f"conveyor-build-{os.getpid()}-{start_time(os.getpid())}-t{uuid.uuid4().hex[:6]}"
    )
    path.mkdir()
    group = kind(path)
    marker = f"cg-{uuid.uuid4().hex[:10]}"
    script = f"printf 0 >&{group.join_fd}\nexec {group.join_fd}>&-\n" + ESCAPES.format(m=marker)
    # Joined the way a build joins: by its own shell, already the unprivileged build user.
    user = sandbox.resolve_build_user(sandbox.DEFAULT_BUILD_USER)
    assert user is not None, "run as root: only root switches users"
    drop = ["setpriv", f"--reuid={user.uid}", f"--regid={user.gid}", "--clear-groups", "--"]
    subprocess.run(
        [*drop, "bash", "-c", script], pass_fds=(group.join_fd,), start_new_session=True, check=True
    )
    assert len(_marked(marker)) == 2, "the escapes did not start"
    assert set(_marked(marker)) <= set(group.pids())
    group.remove()
    assert _marked(marker) == []
    assert not path.exists()


def test_without_a_cgroup_builds_still_run_and_the_fallback_is_said(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sandbox, "cgroup_parents", lambda: [])
    monkeypatch.setattr(sandbox, "_warned", set())
    (tmp_path / "src").mkdir()
    log = BuildLog(tmp_path / "build.log", open(os.devnull, "w"))  # noqa: SIM115
    caplog.set_level(logging.WARNING, "conveyor.sandbox")
    session = BashSession(
        tmp_path / "src", tmp_path / "state", {}, log, threading.Event(), None, SandboxPolicy()
    )
    marker = f"pg-{uuid.uuid4().hex[:10]}"
    assert session.run(f"bash -c 'sleep 300; true {marker}' &").ok
    wait_for(lambda: _marked(marker), 5, message="the background child never started")
    session.close()
    log.close()
    assert "process group only" in caplog.text
    wait_for(lambda: not _marked(marker), 5, message="the process group was not killed")


LEFT_BEHIND = """
import os, sys
from workers.scratch import ScratchSpace
with ScratchSpace(sys.argv[1]).directory() as d:
    (d / "file").write_text("x")
    print(d, flush=True)
    if sys.argv[2] == "die":
        os._exit(9)  # killed mid-attempt: nothing is cleaned up
    sys.stdin.read()
"""


def test_a_worker_start_removes_dead_processes_scratch_and_keeps_live_ones(
    tmp_path: Path,
) -> None:
    root = tmp_path / "scratch"
    repo = Path(__file__).resolve().parents[2]
    # The live one first: any process that starts here sweeps, and it would take the dead one's.
    live = subprocess.Popen(
        [sys.executable, "-c", LEFT_BEHIND, str(root), "live"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=repo,
    )  # fmt: skip
    try:
        assert live.stdout is not None
        live_dir = Path(live.stdout.readline().strip())
        dead = subprocess.run(
            [sys.executable, "-c", LEFT_BEHIND, str(root), "die"],
            capture_output=True, text=True, cwd=repo, check=False,
        )  # fmt: skip
        dead_dir = Path(dead.stdout.strip())
        assert dead_dir.exists() and live_dir.exists()
        claimed = ScratchSpace(str(root)).sweep()
        assert claimed == [dead_dir.parent]
        wait_for(lambda: not dead_dir.parent.exists(), 5, message="not removed")
        time.sleep(0.2)
        assert (live_dir / "file").read_text() == "x"
    finally:
        live.kill()
        live.wait()


def test_end_processes_stops_daemons_but_not_the_session(tmp_path: Path) -> None:
    """The build's daemons are dead before the worker reads what the build wrote, and the
    session still answers for the exported variables afterwards."""
    (tmp_path / "src").mkdir()
    log = BuildLog(tmp_path / "build.log", open(os.devnull, "w"))  # noqa: SIM115
    session = BashSession(
        tmp_path / "src", tmp_path / "state", {}, log, threading.Event(), None, SandboxPolicy()
    )
    marker = f"daemon-{uuid.uuid4().hex[:10]}"
    assert session.run(f"setsid bash -c 'sleep 300; true {marker}' & export LEFT=yes").ok
    wait_for(lambda: _marked(marker), 5, message="the daemon never started")
    session.end_processes()
    assert _marked(marker) == []
    assert session.read_variables(["LEFT"]) == {"LEFT": "yes"}
    session.close()
    log.close()


def test_a_scratch_root_the_build_user_cannot_reach_fails_the_build_clearly(
    tmp_path: Path,
) -> None:
    user = sandbox.resolve_build_user(sandbox.DEFAULT_BUILD_USER)
    assert user is not None, "run as root: only root switches users"
    private = tmp_path / "private"
    scratch = private / "scratch"
    (scratch / "attempt" / "src").mkdir(parents=True)
    private.chmod(0o700)
    log = BuildLog(tmp_path / "build.log", open(os.devnull, "w"))  # noqa: SIM115
    with pytest.raises(ActionFailed, match=r"cannot pass through .*private.*chmod o\+x"):
        BashSession(
            scratch / "attempt" / "src",
            scratch / "attempt" / "state",
            {},
            log,
            threading.Event(),
            None,
            SandboxPolicy(user=user, boundary=scratch),
        )
    log.close()


def test_a_buildspec_variable_naming_a_host_directory_hands_nothing_over() -> None:
    """``env.variables: {CODEBUILD_SRC_DIR_x: /etc}`` in a hostile buildspec: the worker
    (root) gives the build user only the directories it made for the build."""
    from providers.codebuild import CodeBuild
    from tests.unit.test_codebuild import make_job

    user = sandbox.resolve_build_user(sandbox.DEFAULT_BUILD_USER)
    assert user is not None, "run as root: only root switches users"
    # pytest's own temp directories are 0700: the build user could not reach its build.
    tmp_path = Path(tempfile.mkdtemp(prefix="conveyor-test-sandbox-"))
    tmp_path.chmod(0o711)
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "precious").write_text("root's\n")
    job = make_job(
        tmp_path,
        f"""
        version: 0.2
        env:
          variables:
            CODEBUILD_SRC_DIR_x: {victim}
        phases:
          build:
            commands:
              - echo pwned > "$CODEBUILD_SRC_DIR_x/precious" || true
              - touch "$CODEBUILD_SRC_DIR_x/planted" || true
        """,
        outputs=(),
    )
    job.sandbox = SandboxPolicy(user=user, boundary=tmp_path)
    result = CodeBuild().run(job)
    assert result.succeeded, result.error_message
    assert victim.stat().st_uid == 0 and (victim / "precious").stat().st_uid == 0
    assert (victim / "precious").read_text() == "root's\n"
    assert not (victim / "planted").exists()
    shutil.rmtree(tmp_path)
