"""The Commands stage-condition rule, run on a worker like one CodeBuild build phase.

CodePipeline runs a Commands rule's shell commands in a CodeBuild environment; here they
run in the same bash session runner as the local CodeBuild provider, so a command behaves
the same in a rule as in a buildspec: commands run in order, ``cd`` and variables carry
over from one to the next, and the first that fails fails the rule. Inputs are copied, as
for a build, so commands may write freely without touching the worker's extracted copy.
"""

from __future__ import annotations

import shutil
import threading
from pathlib import Path
from typing import TextIO

from providers.bash_session import BashSession, BuildLog
from providers.sandbox import SandboxPolicy

LOG_NAME = "rule.log"
# Enough to name the command in a summary without flooding the pipeline's state.
MAX_SHOWN_COMMAND = 200


def run_commands_rule(
    commands: list[str],
    workdir: Path,
    inputs: dict[str, Path],
    env: dict[str, str],
    log: TextIO,
    deadline: float | None,
    cancelled: threading.Event,
    sandbox: SandboxPolicy | None = None,
) -> tuple[bool, str]:
    """Run ``commands``; return (succeeded, summary for the rule execution).

    The first input artifact is the working directory (``CODEBUILD_SRC_DIR``), the others
    are at ``CODEBUILD_SRC_DIR_<name>``; with no inputs the commands start in an empty
    directory. ``env`` is the whole environment the commands see, plus those variables.
    The log is written to ``workdir/rule.log`` and mirrored to ``log`` as it grows.
    """
    root = workdir / "commands-rule"
    if root.exists():  # a retried rule reusing its workdir starts clean
        shutil.rmtree(root)
    root.mkdir(parents=True)
    (workdir / LOG_NAME).unlink(missing_ok=True)
    sandbox = sandbox or SandboxPolicy()
    build_log = BuildLog(workdir / LOG_NAME, log, sandbox.log_max_bytes)
    session: BashSession | None = None
    try:
        if not commands:
            summary = "a Commands rule needs at least one command"
            build_log.line(summary)
            return False, summary
        try:
            src, secondaries = _prepare_inputs(root, inputs)
        except OSError as exc:
            summary = f"could not prepare input artifacts: {exc}"
            build_log.line(summary)
            return False, summary
        full_env = dict(env)
        full_env["CODEBUILD_SRC_DIR"] = str(src)
        for name, path in secondaries.items():
            full_env[f"CODEBUILD_SRC_DIR_{name}"] = str(path)
        session = BashSession(
            src,
            root / "state",
            full_env,
            build_log,
            cancelled,
            deadline,
            sandbox,
            secondaries=list(secondaries.values()),
        )
        ok, summary = _run(commands, session, build_log)
        build_log.line(f"Commands rule finished: {summary}")
        return ok, summary
    finally:
        if session is not None:
            session.close()
        build_log.close()


def _prepare_inputs(root: Path, inputs: dict[str, Path]) -> tuple[Path, dict[str, Path]]:
    src = root / "src"
    names = list(inputs)
    if names:
        shutil.copytree(inputs[names[0]], src, symlinks=True)
    else:
        src.mkdir()
    secondaries: dict[str, Path] = {}
    for name in names[1:]:
        secondaries[name] = root / "src-secondary" / name
        shutil.copytree(inputs[name], secondaries[name], symlinks=True)
    return src, secondaries


def _run(commands: list[str], session: BashSession, log: BuildLog) -> tuple[bool, str]:
    for command in commands:
        log.line(f"Running command {command}")
        outcome = session.run(command)
        shown = _clip(command)
        if outcome.stopped:
            log.line(f"Command {outcome.stopped}: {command}")
            return False, f"command `{shown}` {outcome.stopped}"
        if not outcome.ok:
            log.line(f"Command did not exit successfully {command} exit status {outcome.exit_code}")
            return False, f"command `{shown}` failed with exit code {outcome.exit_code}"
    n = len(commands)
    return True, f"{n} command{'s' if n != 1 else ''} succeeded"


def _clip(command: str) -> str:
    one_line = " ".join(command.split())
    if len(one_line) <= MAX_SHOWN_COMMAND:
        return one_line
    return f"{one_line[: MAX_SHOWN_COMMAND - 3]}..."
