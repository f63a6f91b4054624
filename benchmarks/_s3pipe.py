"""Pipelines of the lightest actions there are, S3 source and S3 deploy, and the buckets and
objects both sides of the chain, fan-out and contention benchmarks share.

The source object is a ~1 KB zip holding one ``index.html`` (1000 bytes). Conveyor's
Source action turns it into the ``SourceOutput`` artifact; every Deploy action downloads
that artifact, extracts it and uploads ``index.html`` under
``<execution id>/<action>/`` in the target bucket (``ObjectKey`` uses the
``#{codepipeline.PipelineExecutionId}`` variable), so each execution's deployed objects can
be counted afterwards. The raw side deploys from a copy of the same artifact zip under
``raw/<run>/<task>/`` in its own target bucket.
"""

from __future__ import annotations

import io
import uuid
import zipfile
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # standard library only at run time: profile_before.py imports this file
    from benchmarks._stack import Bench

PAYLOAD_NAME = "index.html"
SOURCE_KEY = "s3bench/source.zip"
RAW_ARTIFACT_KEY = "raw/SourceOutput.zip"
ROLE = "arn:aws:iam::000000000000:role/conveyor-bench"


def payload() -> bytes:
    line = b"<p>conveyor bench: the lightest deploy there is</p>\n"  # 52 bytes
    return (line * 20)[:1000]


def zip_of(files: dict[str, bytes], method: int = zipfile.ZIP_STORED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", method) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return buf.getvalue()


@dataclass
class Buckets:
    """One set of buckets: source (versioned, as CodePipeline wants), Conveyor's artifact
    store, Conveyor's deploy target, the raw side's artifact and deploy target."""

    source: str
    artifacts: str
    target: str
    raw_artifacts: str
    raw_target: str
    source_zip_bytes: int = 0

    @classmethod
    def create(
        cls, bench: Bench, prefix: str, extra_files: dict[str, bytes] | None = None
    ) -> Buckets:
        tag = uuid.uuid4().hex[:8]
        b = cls(
            source=f"{prefix}-src-{tag}",
            artifacts=f"{prefix}-art-{tag}",
            target=f"{prefix}-dep-{tag}",
            raw_artifacts=f"{prefix}-rawart-{tag}",
            raw_target=f"{prefix}-rawdep-{tag}",
        )
        s3 = bench.s3_client()
        for name in (b.source, b.artifacts, b.target, b.raw_artifacts, b.raw_target):
            s3.create_bucket(Bucket=name)
        s3.put_bucket_versioning(Bucket=b.source, VersioningConfiguration={"Status": "Enabled"})
        files = {PAYLOAD_NAME: payload(), **(extra_files or {})}
        body = zip_of(files)
        b.source_zip_bytes = len(body)
        s3.put_object(Bucket=b.source, Key=SOURCE_KEY, Body=body)
        # What Conveyor's Source action makes of it (zip_dir deflates): the raw deploys' input.
        s3.put_object(
            Bucket=b.raw_artifacts, Key=RAW_ARTIFACT_KEY, Body=zip_of(files, zipfile.ZIP_DEFLATED)
        )
        return b


def action(
    name: str,
    category: str,
    provider: str,
    run_order: int,
    config: dict[str, str],
    ins: tuple[str, ...] = (),
    outs: tuple[str, ...] = (),
) -> dict[str, Any]:
    return {
        "name": name,
        "actionTypeId": {
            "category": category,
            "owner": "AWS",
            "provider": provider,
            "version": "1",
        },
        "runOrder": run_order,
        "configuration": config,
        "inputArtifacts": [{"name": n} for n in ins],
        "outputArtifacts": [{"name": n} for n in outs],
    }


def source_stage(bucket: str, key: str = SOURCE_KEY) -> dict[str, Any]:
    config = {"S3Bucket": bucket, "S3ObjectKey": key, "PollForSourceChanges": "false"}
    return {
        "name": "Source",
        "actions": [action("Fetch", "Source", "S3", 1, config, outs=("SourceOutput",))],
    }


def deploy_action(name: str, run_order: int, target: str) -> dict[str, Any]:
    config = {
        "BucketName": target,
        "Extract": "true",
        "ObjectKey": f"#{{codepipeline.PipelineExecutionId}}/{name}",
    }
    return action(name, "Deploy", "S3", run_order, config, ins=("SourceOutput",))


def deploy_pipeline(
    name: str, b: Buckets, deploys: int, execution_mode: str | None = None
) -> dict[str, Any]:
    """Source, then one stage of ``deploys`` S3 deploy actions run one after another
    (runOrder 1..deploys; CodePipeline allows up to 50 actions in a stage)."""
    p: dict[str, Any] = {
        "name": name,
        "roleArn": ROLE,
        "artifactStore": {"type": "S3", "location": b.artifacts},
        "stages": [
            source_stage(b.source),
            {
                "name": "Deploy",
                "actions": [deploy_action(f"d{i:02d}", i, b.target) for i in range(1, deploys + 1)],
            },
        ],
    }
    if execution_mode:
        p["executionMode"] = execution_mode
    return p
