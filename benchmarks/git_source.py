"""Git sources: fetching a big repository, and what polling many git sources costs beat.

``python -m benchmarks.git_source`` (also run by ``make bench``). Starts its own Redis, moto
S3, ``git daemon`` and Conveyor (engine pool c=1, ``all`` pool c=1, beat, API), prints a
markdown report and stops everything.

1. Fetch. A repository of ``--files`` small files plus one 5 MiB binary rewritten in every
   commit, so the history is ``--history-mb`` MiB of incompressible data (made with
   ``git fast-import``), served by ``git daemon``.
   - Conveyor: ``Source/AWS/CodeCommit`` (CODE_ZIP) -> ``Build/AWS/CodeBuild`` whose
     buildspec lists the tree (``find . -type f | wc -l``); from StartPipelineExecution to
     Succeeded, polled every 100 ms.
   - By hand, in the same run: ``git clone --depth 1`` + ``zip -qr`` of the tree (without
     ``.git``) + the same listing + removing it all.
   Both sides include removing what they wrote (the workers remove attempts' scratch trees
   in the background: a run ends when the scratch space is empty again).
2. Polling. ``--sources`` pipelines, each with a CodeCommit source polled by beat (a
   repository of its own, copied from one small repository), beat's poll interval
   ``--poll-interval`` s. Beat's CPU (its process and the ``git ls-remote`` children it
   waited for) over ``--window`` s once every source has its baseline, against the same
   window with no git sources: percent of one core.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import redis

from benchmarks._stack import Bench, bench_stack, log
from engine import keys
from tests.gitserve import git_daemon

FETCH_TARGET = 1.5
POLL_TARGET_PCT = 5.0
BLOB_MB = 5
BUILDSPEC = """version: 0.2
phases:
  build:
    commands:
      - find . -type f | wc -l
"""


@dataclass
class Result:
    files: int
    history_mb: float
    conveyor: list[float]
    by_hand: list[float]
    source_action: list[float]
    build_action: list[float]
    sources: int
    poll_interval: float
    window: float
    idle_pct: float
    polling_pct: float
    ls_remotes: int


# ---------------------------------------------------------------------------- repositories


def make_big_repo(bare: Path, files: int, history_mb: int) -> float:
    """A bare repository via fast-import; returns the size of its objects in MiB."""
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(bare)], check=True)
    proc = subprocess.Popen(
        ["git", "-C", str(bare), "fast-import", "--quiet"], stdin=subprocess.PIPE
    )
    assert proc.stdin is not None
    out = proc.stdin

    def data(payload: bytes) -> None:
        out.write(b"data %d\n" % len(payload) + payload + b"\n")

    commits = max(1, history_mb // BLOB_MB)
    for n in range(commits):
        out.write(b"commit refs/heads/main\n")
        out.write(b"committer Bench <bench@example.com> %d +0000\n" % (1_700_000_000 + n))
        data(f"commit {n}".encode())  # each commit continues the branch's tip
        if n == 0:
            for i in range(files):
                out.write(f"M 100644 inline src/d{i % 50:02d}/f{i:05d}.txt\n".encode())
                data((f"file {i}\n" * 20).encode())
            out.write(b"M 100644 inline buildspec.yml\n")
            data(BUILDSPEC.encode())
        out.write(b"M 100644 inline assets/blob.bin\n")
        data(os.urandom(BLOB_MB * 1024 * 1024))
        out.write(f"M 100644 inline src/d00/f{n % files:05d}.txt\n".encode())
        data(f"changed in {n}\n".encode())
    out.close()
    if proc.wait() != 0:
        raise RuntimeError("git fast-import failed")
    return sum(p.stat().st_size for p in (bare / "objects").rglob("*") if p.is_file()) / 2**20


def make_small_repos(root: Path, count: int) -> list[str]:
    seed = root / "seed.git"
    work = root / "seed-work"
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(seed)], check=True)
    subprocess.run(["git", "clone", "-q", str(seed), str(work)], check=True)
    (work / "README").write_text("hello\n")
    who = {"NAME": "bench", "EMAIL": "bench@example.com"}
    env = {
        **os.environ,
        **{f"GIT_{r}_{k}": v for r in ("AUTHOR", "COMMITTER") for k, v in who.items()},
    }
    for args in (["add", "-A"], ["commit", "-qm", "one"], ["push", "-q", "origin", "main"]):
        subprocess.run(["git", "-C", str(work), *args], check=True, env=env)
    names = [f"poll{i:03d}" for i in range(count)]
    for name in names:
        shutil.copytree(seed, root / f"{name}.git")
    return names


# ---------------------------------------------------------------------------- pipelines


def _action(name: str, category: str, provider: str, config: dict[str, str], **kw: Any) -> Any:
    return {
        "name": name,
        "actionTypeId": {
            "category": category,
            "owner": "AWS",
            "provider": provider,
            "version": "1",
        },
        "runOrder": 1,
        "configuration": config,
        "inputArtifacts": [{"name": n} for n in kw.get("ins", ())],
        "outputArtifacts": [{"name": n} for n in kw.get("outs", ())],
    }


def fetch_pipeline(name: str, repository: str, second: dict[str, Any]) -> dict[str, Any]:
    source = _action(
        "Fetch",
        "Source",
        "CodeCommit",
        {"RepositoryName": repository, "BranchName": "main"},
        outs=("Src",),
    )
    return {
        "name": name,
        "roleArn": "arn:aws:iam::000000000000:role/conveyor",
        "stages": [
            {"name": "Source", "actions": [source]},
            {"name": "Next", "actions": [second]},
        ],
    }


def files_under(root: Path) -> int:
    return sum(len(files) for _, _, files in os.walk(root))


def run_once(cp: Any, name: str, scratch: Path) -> float:
    """StartPipelineExecution to Succeeded, and until the workers' scratch space is empty
    again: removing the attempts' trees is part of the cost (the workers do it in the
    background), and a run must not pay for the previous run's removal."""
    started = time.perf_counter()
    eid = cp.start_pipeline_execution(name=name)["pipelineExecutionId"]
    while True:
        ex = cp.get_pipeline_execution(pipelineName=name, pipelineExecutionId=eid)
        status = ex["pipelineExecution"]["status"]
        if status == "Succeeded":
            break
        if status in ("Failed", "Stopped", "Cancelled"):
            raise RuntimeError(f"{name} {eid} ended {status}")
        time.sleep(0.1)
    while files_under(scratch):
        time.sleep(0.05)
    return time.perf_counter() - started


def action_seconds(cp: Any, name: str, action: str) -> list[float]:
    rows = cp.list_action_executions(pipelineName=name)["actionExecutionDetails"]
    return [
        (r["lastUpdateTime"] - r["startTime"]).total_seconds()
        for r in rows
        if r["actionName"] == action
    ]


def by_hand(url: str, scratch: Path) -> float:
    scratch.mkdir(parents=True)
    started = time.perf_counter()
    clone = scratch / "clone"
    subprocess.run(["git", "clone", "-q", "--depth", "1", url, str(clone)], check=True)
    zipped = str(scratch / "src.zip")
    subprocess.run(["zip", "-qr", zipped, ".", "-x", ".git/*"], cwd=clone, check=True)
    listed = subprocess.run(
        "find . -path ./.git -prune -o -type f -print | wc -l",
        shell=True,
        cwd=clone,
        capture_output=True,
        check=True,
    )
    assert int(listed.stdout) > 0
    shutil.rmtree(scratch)  # its cleanup counts, as the workers' does
    return time.perf_counter() - started


# ---------------------------------------------------------------------------- beat's CPU


def cpu_seconds(pid: int) -> float:
    t = psutil.Process(pid).cpu_times()
    return t.user + t.system + t.children_user + t.children_system


def beat_cpu_pct(bench: Bench, window: float) -> float:
    pid = bench.conveyor["beat"].pid
    assert pid is not None
    before, t0 = cpu_seconds(pid), time.monotonic()
    time.sleep(window)
    return 100 * (cpu_seconds(pid) - before) / (time.monotonic() - t0)


def run(args: argparse.Namespace) -> Result:
    with bench_stack(keep=args.keep) as bench:
        served = bench.workdir / "git"
        served.mkdir()
        log(f"making a repository: {args.files} files, {args.history_mb} MiB of history")
        size = make_big_repo(served / "big.git", args.files, args.history_mb)
        log(f"  {size:.0f} MiB of objects")
        names = make_small_repos(served, args.sources)
        with git_daemon(served) as daemon:
            bench.env.update(
                {
                    "CONVEYOR_GIT_BASE_URL": daemon,
                    "CONVEYOR_SOURCE_POLL_INTERVAL_SECONDS": str(args.poll_interval),
                }
            )
            log("starting conveyor: engine pool c=1, all pool c=1, beat, api")
            bench.start_conveyor(providers_concurrency=1)
            cp = bench.codepipeline()

            scratch = Path(bench.env["CONVEYOR_WORKDIR"])
            build = _action("List", "Build", "CodeBuild", {"ProjectName": "list"}, ins=("Src",))
            cp.create_pipeline(pipeline=fetch_pipeline("gitfetch", "big", build))
            run_once(cp, "gitfetch", scratch)  # warm-up: worker imports, first connections
            conveyor, raw = [], []
            for i in range(args.runs):
                conveyor.append(run_once(cp, "gitfetch", scratch))
                raw.append(by_hand(f"{daemon}/big", bench.workdir / "by-hand"))
                log(f"  run {i + 1}: conveyor {conveyor[-1]:.2f} s, by hand {raw[-1]:.2f} s")
            fetches = action_seconds(cp, "gitfetch", "Fetch")[: args.runs]
            builds = action_seconds(cp, "gitfetch", "List")[: args.runs]

            log(f"beat idle for {args.window:.0f} s")
            idle = beat_cpu_pct(bench, args.window)
            log(f"creating {args.sources} polled pipelines")
            gate = _action("Gate", "Approval", "Manual", {})
            for name in names:
                cp.create_pipeline(pipeline=fetch_pipeline(name, name, gate))
            r = redis.Redis.from_url(bench.redis.url, decode_responses=True)

            def baselined() -> int:
                return sum(bool(r.hget(keys.source_revisions(n), "Source/Fetch")) for n in names)

            deadline = time.monotonic() + 4 * args.poll_interval + 60
            while baselined() < len(names):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"only {baselined()} of {len(names)} sources baselined")
                time.sleep(1)
            log(f"all {len(names)} baselined; measuring beat for {args.window:.0f} s")
            polling = beat_cpu_pct(bench, args.window)
            started = [
                n
                for n in names
                if cp.list_pipeline_executions(pipelineName=n)["pipelineExecutionSummaries"]
            ]
            if started:
                raise RuntimeError(f"polling without commits started executions: {started}")
            r.close()
            rounds = args.window / args.poll_interval
            return Result(
                files=args.files,
                history_mb=size,
                conveyor=conveyor,
                by_hand=raw,
                source_action=fetches,
                build_action=builds,
                sources=len(names),
                poll_interval=args.poll_interval,
                window=args.window,
                idle_pct=idle,
                polling_pct=polling,
                ls_remotes=int(rounds * len(names)),
            )


def report(r: Result) -> str:
    c, h = statistics.median(r.conveyor), statistics.median(r.by_hand)
    ratio = c / h
    ok = "met" if ratio <= FETCH_TARGET else "**missed**"
    pok = "met" if r.polling_pct < POLL_TARGET_PCT else "**missed**"
    src = statistics.median(r.source_action) if r.source_action else float("nan")
    bld = statistics.median(r.build_action) if r.build_action else float("nan")
    return "\n".join(
        [
            "| benchmark | conveyor | by hand | ratio | target |",
            "| --- | --- | --- | --- | --- |",
            f"| git source of {r.files} files, {r.history_mb:.0f} MiB of objects -> build "
            f"listing the tree (median of {len(r.conveyor)}) | {c:.2f} s (source action "
            f"{src:.2f} s, build action {bld:.2f} s) | {h:.2f} s (clone --depth 1 + zip + "
            f"list + rm) | {ratio:.2f}x "
            f"| <= {FETCH_TARGET}x ({ok}) |",
            f"| beat polling {r.sources} git sources every {r.poll_interval:.0f} s "
            f"(~{r.ls_remotes} ls-remote in {r.window:.0f} s) | {r.polling_pct:.2f}% of one "
            f"core (idle beat: {r.idle_pct:.2f}%) | | | < {POLL_TARGET_PCT:.0f}% ({pok}) |",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.git_source", description=__doc__)
    parser.add_argument("--files", type=int, default=5000)
    parser.add_argument("--history-mb", type=int, default=200)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--sources", type=int, default=200)
    parser.add_argument("--poll-interval", type=float, default=30.0)
    parser.add_argument("--window", type=float, default=60.0)
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--json", action="store_true", help="print the raw numbers as JSON too")
    args = parser.parse_args(argv)
    result = run(args)
    print(report(result))
    if args.json:
        print(json.dumps(result.__dict__))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
