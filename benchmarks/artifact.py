"""Artifact transfer: one big incompressible file through Source -> Build -> Deploy, vs the
bare S3 transfers that pipeline implies, on the same endpoint in the same run.

Data: ``size_mb`` MiB of ``os.urandom`` written to disk in 1 MiB chunks (never held whole),
stored in a zip (ZIP_STORED) next to a ``buildspec.yml``; that zip is the S3 source object.

Conveyor side (the stack of the overhead benchmark: engine pool c=1, ``all`` pool c=1):

- ``Source/AWS/S3`` -> ``Build/AWS/CodeBuild`` (buildspec copies the file to ``out/`` and
  declares it as the artifact) -> ``Deploy/AWS/S3`` (``Extract: true``);
- (i) end to end: from ``StartPipelineExecution`` until ``GetPipelineExecution`` (polled
  every 100 ms, to keep the API's polling CPU out of a CPU-bound run) says ``Succeeded``;
- (ii) the sum over the three actions of ``lastUpdateTime - startTime`` from
  ``ListActionExecutions``: the same minus the scheduling gaps between actions;
- the S3 requests the pipeline made are counted from moto's request log, so the hop count
  the raw side reproduces is checked, not assumed.

Raw side (benchmarks/raw_transfer.py, a process of its own): the same hops -- three PUTs and
three GETs of the file (source fetch, SourceOutput up and down, BuildOutput up and down,
deploy upload), each with the client and part size the pipeline uses for that hop.

Memory: every 100 ms, the RSS of every process in each worker's tree (Celery main process,
prefork child, and -- grouped -- the bash processes of the build), the API, beat, the raw
transfer process and, as context only, moto's server (which holds objects in memory).

Where the time goes: the same pipeline is run once more in-process (benchmarks/_inproc.py:
``run_action`` called for every dispatched task, which applies its result too; real Redis,
S3 and providers) with wall-clock and CPU timers around the transfers, hashing, zipping,
extraction and copies. As a what-if, the file is also zipped with ZIP_STORED (no
compression) in-process.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks._inproc import in_process, unique
from benchmarks._stack import REPO_ROOT, Bench, ProcPeak, RssSampler, log
from benchmarks._timers import Timed, Timers, check, profile_table
from providers.ziputil import extract_zip, sha256_file

CHUNK = 1024 * 1024
POLL_SECONDS = 0.1
RUN_TIMEOUT = 600.0
PAYLOAD = "payload.bin"
BUILDSPEC = f"""\
version: 0.2
phases:
  build:
    commands:
      - mkdir -p out
      - cp {PAYLOAD} out/
artifacts:
  base-directory: out
  files:
    - {PAYLOAD}
"""
# Code timed during the in-process run of the same pipeline (benchmarks/_timers.py):
# (module, attribute path, label, depth); a row counts the calls made directly under the
# row above it with one less depth. Checked before anything runs.
TIMED: list[Timed] = [
    ("benchmarks._inproc", "handle", "worker: `run_action`, all three actions", 0),
    ("workers.runner", "execute", "`execute`: inputs, provider, outputs, log", 1),
    ("workers.artifacts", "ArtifactStore.download_verified", "download input artifacts (2)", 2),
    ("workers.artifacts", "ArtifactStore.fetch", "S3 GET, hashed while streaming (`fetch`)", 3),
    ("workers.artifacts", "ArtifactStore.unpack", "extract the inputs (`unpack`)", 2),
    ("providers.s3_source", "S3Source.run", "S3 source provider", 2),
    ("providers.s3_source", "S3Source._get", "S3 GET request (boto3 `get_object`)", 3),
    ("workers.artifacts", "ArtifactStore.package_verbatim", "hash the source object as is", 2),
    ("providers.codebuild", "_CodeBuildBase.run", "CodeBuild provider", 2),
    ("shutil", "copytree", "copy input into the build dir (`copytree`)", 3),
    ("providers.bash_session", "BashSession.run", "buildspec commands (`mkdir`, `cp`)", 3),
    ("providers.codebuild", "collect_artifacts", "collect artifact files (copy)", 3),
    ("providers.s3_deploy", "S3Deploy.run", "S3 deploy provider", 2),
    ("providers.s3_deploy", "S3Deploy._put", "S3 PUT (boto3 `upload_file`)", 3),
    ("workers.artifacts", "ArtifactStore.package_dir", "zip + hash output artifacts (2)", 2),
    ("workers.artifacts", "zip_dir", "zip (`zip_dir`)", 3),
    ("workers.artifacts", "sha256_file", "SHA-256 of the zip", 3),
    ("workers.artifacts", "ArtifactStore.upload_packed", "upload output artifacts (2)", 2),
    ("minio", "Minio.fput_object", "S3 PUT (minio `fput_object`)", 3),
    ("workers.artifacts", "ArtifactStore.upload_file", "upload the build log", 2),
    ("engine.store.leases", "Leases.record_result", "record the results", 1),
    ("workers.attempts", "report", "apply the results (`report` -> `Store.apply`)", 1),
]
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_MOTO_LINE = re.compile(r'"(GET|PUT|POST|HEAD|DELETE) (/[^ ]*) HTTP/[0-9.]+" (\d+)')


@dataclass
class ArtifactResult:
    size_mb: int
    end_to_end: float = 0.0
    # (stage.action, start, end) in epoch seconds, from ListActionExecutions
    actions: list[tuple[str, float, float]] = field(default_factory=list)
    raw_hops: list[dict[str, Any]] = field(default_factory=list)
    raw_total: float = 0.0
    steps: dict[str, float] = field(default_factory=dict)  # step -> seconds for one pass
    # the in-process run of the same pipeline: the timers' table (totals, markdown)
    timed_table: list[str] = field(default_factory=list)
    inproc_total: float = 0.0
    moto_requests: dict[str, list[str]] = field(default_factory=dict)  # op -> keys
    peaks: list[ProcPeak] = field(default_factory=list)
    raw_peaks: list[ProcPeak] = field(default_factory=list)

    @property
    def action_sum(self) -> float:
        return sum(end - start for _, start, end in self.actions)

    def during(self, at: float) -> str:
        """Which action was running at epoch ``at`` (for attributing memory peaks)."""
        for name, start, end in self.actions:
            if start <= at <= end + 0.2:
                return name
        return "-"

    @property
    def ratio(self) -> float:
        return self.end_to_end / self.raw_total

    def worker_peak(self) -> ProcPeak | None:
        workers = [p for p in self.peaks if p.root in ("engine", "providers")]
        return max(workers, key=lambda p: p.peak_rss, default=None)


def write_payload(path: Path, size_mb: int) -> None:
    with path.open("wb") as fh:
        for _ in range(size_mb):
            fh.write(os.urandom(CHUNK))


def make_source_zip(payload: Path, dest: Path) -> None:
    with zipfile.ZipFile(dest, "w", zipfile.ZIP_STORED) as zf:
        zf.write(payload, PAYLOAD)
        zf.writestr("buildspec.yml", BUILDSPEC)


def artifact_pipeline(name: str, src: str, key: str, artifacts: str, deploy: str) -> Any:
    def action(
        n: str, cat: str, prov: str, cfg: dict[str, str], ins: list[str], outs: list[str]
    ) -> dict[str, Any]:
        return {
            "name": n,
            "actionTypeId": {"category": cat, "owner": "AWS", "provider": prov, "version": "1"},
            "runOrder": 1,
            "configuration": cfg,
            "inputArtifacts": [{"name": i} for i in ins],
            "outputArtifacts": [{"name": o} for o in outs],
        }

    return {
        "name": name,
        "roleArn": "arn:aws:iam::000000000000:role/conveyor-bench",
        "artifactStore": {"type": "S3", "location": artifacts},
        "stages": [
            {
                "name": "Source",
                "actions": [
                    action(
                        "Fetch",
                        "Source",
                        "S3",
                        {"S3Bucket": src, "S3ObjectKey": key},
                        [],
                        ["SourceOutput"],
                    )
                ],
            },
            {
                "name": "Build",
                "actions": [
                    action(
                        "Build",
                        "Build",
                        "CodeBuild",
                        {"ProjectName": "bench"},
                        ["SourceOutput"],
                        ["BuildOutput"],
                    )
                ],
            },
            {
                "name": "Deploy",
                "actions": [
                    action(
                        "Deploy",
                        "Deploy",
                        "S3",
                        {"BucketName": deploy, "Extract": "true"},
                        ["BuildOutput"],
                        [],
                    )
                ],
            },
        ],
    }


def _moto_requests(log_path: Path | None, offset: int, big_keys: set[str]) -> dict[str, list[str]]:
    """GET/PUT requests moto served since ``offset`` for the big objects, grouped by key."""
    out: dict[str, list[str]] = {"GET": [], "PUT": []}
    if log_path is None or not log_path.exists():
        return out
    with log_path.open("rb") as fh:
        fh.seek(offset)
        text = _ANSI.sub("", fh.read().decode("utf-8", "replace"))
    seen: set[tuple[str, str]] = set()
    for m in _MOTO_LINE.finditer(text):
        op, path, _status = m.groups()
        obj = path.split("?", 1)[0]
        if op not in out or obj.count("/") < 2 or "/logs/" in obj:
            continue
        if not any(obj.endswith(k) or k in obj for k in big_keys):
            continue
        # a multipart upload is many PUTs (and a POST) of one object: count it once
        if (op, obj) not in seen:
            seen.add((op, obj))
            out[op].append(obj)
    return out


def _run_pipeline(bench: Bench, res: ArtifactResult, workdir: Path, source_zip: Path) -> None:
    s3 = bench.s3_client()
    tag = uuid.uuid4().hex[:8]
    src, art, deploy = f"bench-big-src-{tag}", f"bench-big-art-{tag}", f"bench-big-dep-{tag}"
    key = "artifact/source.zip"
    for b in (src, art, deploy):
        s3.create_bucket(Bucket=b)
    s3.put_bucket_versioning(Bucket=src, VersioningConfiguration={"Status": "Enabled"})
    log(f"artifact: uploading the {source_zip.stat().st_size / 1e6:.0f} MB source zip (untimed)")
    s3.upload_file(str(source_zip), src, key)

    cp = bench.codepipeline()
    name = f"bench-artifact-{tag}"
    cp.create_pipeline(pipeline=artifact_pipeline(name, src, key, art, deploy))
    moto_log = bench.s3.log_path
    offset = moto_log.stat().st_size if moto_log and moto_log.exists() else 0
    roots = {n: bench.conveyor[n] for n in ("engine", "providers", "api", "beat")}
    sampler = RssSampler({**roots, "moto-s3": bench.s3})
    sampler.start()
    try:
        log("artifact: conveyor pipeline Source -> Build -> Deploy")
        started = time.perf_counter()
        eid = cp.start_pipeline_execution(name=name)["pipelineExecutionId"]
        while True:
            ex = cp.get_pipeline_execution(pipelineName=name, pipelineExecutionId=eid)
            status = ex["pipelineExecution"]["status"]
            if status == "Succeeded":
                res.end_to_end = time.perf_counter() - started
                break
            if status not in ("InProgress", "Stopping"):
                raise RuntimeError(f"artifact pipeline ended {status}: {ex['pipelineExecution']}")
            if time.perf_counter() - started > RUN_TIMEOUT:
                raise TimeoutError(f"artifact pipeline still {status} after {RUN_TIMEOUT:g}s")
            time.sleep(POLL_SECONDS)
    finally:
        sampler.stop()
    res.peaks = sorted(sampler.peaks.values(), key=lambda p: (p.root, p.role))
    log(f"artifact: conveyor {res.end_to_end:.1f}s end to end")

    details = cp.list_action_executions(pipelineName=name, filter={"pipelineExecutionId": eid})
    for d in details["actionExecutionDetails"]:
        res.actions.append(
            (
                f"{d['stageName']}.{d['actionName']}",
                d["startTime"].timestamp(),
                d["lastUpdateTime"].timestamp(),
            )
        )
    res.actions.sort(key=lambda a: a[1])
    head = s3.head_object(Bucket=deploy, Key=PAYLOAD)
    if head["ContentLength"] != res.size_mb * CHUNK:
        raise RuntimeError(f"deployed {PAYLOAD} has {head['ContentLength']} bytes")
    res.moto_requests = _moto_requests(
        moto_log, offset, {f"/{src}/{key}", f"/{art}/", f"/{deploy}/{PAYLOAD}"}
    )

    log("artifact: raw transfers (same hops, same endpoint)")
    spec = {
        "payload": str(workdir / PAYLOAD),
        "scratch": str(workdir / "raw-scratch"),
        "source_bucket": src,
        "source_key": key,
        "bucket": art,
        "deploy_bucket": deploy,
    }
    spec_path = workdir / "raw-spec.json"
    spec_path.write_text(json.dumps(spec))
    from workers import devstack

    proc = devstack.start_process(
        "raw-transfer",
        [sys.executable, "-m", "benchmarks.raw_transfer", str(spec_path)],
        bench.env,
        workdir / "raw-transfer.log",
        cwd=REPO_ROOT,
    )
    raw_sampler = RssSampler({"raw-transfer": proc})
    raw_sampler.start()
    try:
        assert proc.process is not None
        code = proc.process.wait(RUN_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.stop()
        raise
    finally:
        raw_sampler.stop()
    out = (workdir / "raw-transfer.log").read_text()
    if code != 0:
        raise RuntimeError(f"raw transfer failed ({code}):\n{out[-3000:]}")
    data = json.loads(out.strip().splitlines()[-1])
    res.raw_hops, res.raw_total = data["hops"], data["total"]
    res.raw_peaks = list(raw_sampler.peaks.values())
    log(f"artifact: raw {res.raw_total:.1f}s for {len(res.raw_hops)} hops")
    _empty_bucket(s3, art)
    _empty_bucket(s3, deploy)

    log("artifact: the same pipeline in-process, with timers (no Celery)")
    with in_process(bench) as ip:
        name = ip.create_pipeline(artifact_pipeline(unique("bench-inproc"), src, key, art, deploy))
        timed = Timers(TIMED)
        t = time.perf_counter()
        with timed.installed():
            ip.run(name, timed)
        res.inproc_total = time.perf_counter() - t
    res.timed_table = profile_table(timed, totals=True)
    for b in (src, art, deploy):  # free moto's memory
        _empty_bucket(s3, b)


def _empty_bucket(s3: Any, bucket: str) -> None:
    try:
        pages = s3.get_paginator("list_object_versions").paginate(Bucket=bucket)
        for page in pages:
            for v in page.get("Versions", []) + page.get("DeleteMarkers", []):
                s3.delete_object(Bucket=bucket, Key=v["Key"], VersionId=v["VersionId"])
    except Exception as exc:  # only housekeeping
        log(f"artifact: could not empty {bucket}: {exc}")


def _time_steps(res: ArtifactResult, workdir: Path) -> None:
    """What-ifs, in-process on the same file: zipping it stored instead of deflated, and the
    steps' raw speeds (SHA-256, extraction, copy) for reference."""
    payload = workdir / PAYLOAD
    scratch = workdir / "steps"
    (scratch / "in").mkdir(parents=True)
    t = time.perf_counter()
    shutil.copy2(payload, scratch / "in" / PAYLOAD)
    res.steps["copy"] = time.perf_counter() - t
    t = time.perf_counter()
    with zipfile.ZipFile(scratch / "a.zip", "w", zipfile.ZIP_STORED) as zf:
        zf.write(scratch / "in" / PAYLOAD, PAYLOAD)
    res.steps["zip, ZIP_STORED"] = time.perf_counter() - t
    t = time.perf_counter()
    sha256_file(scratch / "a.zip")
    res.steps["sha256"] = time.perf_counter() - t
    t = time.perf_counter()
    extract_zip(scratch / "a.zip", scratch / "out")
    res.steps["extract"] = time.perf_counter() - t
    shutil.rmtree(scratch, ignore_errors=True)


def run_artifact(bench: Bench, size_mb: int = 200) -> ArtifactResult:
    check(TIMED)  # a timed function that is gone fails here, not after the pipeline ran
    res = ArtifactResult(size_mb=size_mb)
    workdir = bench.workdir / "artifact"
    workdir.mkdir(parents=True, exist_ok=True)
    log(f"artifact: writing {size_mb} MiB of random data")
    write_payload(workdir / PAYLOAD, size_mb)
    source_zip = workdir / "source.zip"
    make_source_zip(workdir / PAYLOAD, source_zip)
    _run_pipeline(bench, res, workdir, source_zip)
    source_zip.unlink()
    log("artifact: what-ifs in-process (stored zip)")
    _time_steps(res, workdir)
    shutil.rmtree(workdir, ignore_errors=True)
    return res
