"""The raw side of the artifact benchmark: the same S3 hops the pipeline makes, nothing else.

Run by benchmarks.artifact as a process of its own (so its RSS can be sampled like a
worker's): ``python -m benchmarks.raw_transfer SPEC.json``. Each hop uses the client the
pipeline uses for that hop, with the same settings, so the ratio isolates what Conveyor adds
(zip, hashing, extraction, copies, scheduling) from the transfer itself:

====  ======  ==============================================  =============================
hop   op      what it stands for in the pipeline              client
====  ======  ==============================================  =============================
1     GET     Source action fetches the source zip            boto3 ``get_object``, streamed
2     PUT     worker uploads ``SourceOutput``                 minio ``fput_object`` 8 MiB x2
3     GET     Build's worker downloads ``SourceOutput``       minio ``fget_object``
4     PUT     worker uploads ``BuildOutput``                  minio ``fput_object`` 8 MiB x2
5     GET     Deploy's worker downloads ``BuildOutput``       minio ``fget_object``
6     PUT     Deploy action uploads the extracted file        boto3 ``upload_file``
====  ======  ==============================================  =============================

Prints one JSON object: ``{"hops": [{"hop", "op", "client", "what", "seconds"}], ...}``.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psutil
from boto3.s3.transfer import TransferConfig

from benchmarks._s3env import boto3_client, minio_client

PART_SIZE = 8 * 1024 * 1024  # workers.artifacts.PART_SIZE
PARALLEL_UPLOADS = 2  # workers.artifacts.PARALLEL_UPLOADS


class _PeakRss(threading.Thread):
    """This process's peak RSS since the last reset, sampled every 20 ms."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.me = psutil.Process()
        self.peak = 0

    def reset(self) -> None:
        self.peak = self.me.memory_info().rss

    def run(self) -> None:
        while True:
            self.peak = max(self.peak, self.me.memory_info().rss)
            time.sleep(0.02)


def _stream_get(client: Any, bucket: str, key: str, dest: str) -> None:
    """One GET streamed to a file: what the S3 source action does."""
    body = client.get_object(Bucket=bucket, Key=key)["Body"]
    with open(dest, "wb") as fh:
        for chunk in body.iter_chunks(1024 * 1024):
            fh.write(chunk)


def run(spec: dict[str, Any]) -> dict[str, Any]:
    boto = boto3_client()
    mc = minio_client()
    payload = Path(spec["payload"])
    scratch = Path(spec["scratch"])
    scratch.mkdir(parents=True, exist_ok=True)
    bucket, deploy = spec["bucket"], spec["deploy_bucket"]
    hops: list[dict[str, Any]] = []
    watch = _PeakRss()
    watch.start()

    def hop(op: str, client: str, what: str, fn: Any) -> None:
        watch.reset()
        t = time.perf_counter()
        fn()
        elapsed = time.perf_counter() - t
        hops.append(
            {
                "hop": len(hops) + 1,
                "op": op,
                "client": client,
                "what": what,
                "seconds": elapsed,
                "peak_rss": watch.peak,
            }
        )

    def get_to(path: Path, fn: Any) -> Any:
        def go() -> None:
            fn(str(path))

        return go

    got = scratch / "got.bin"
    hop(
        "GET",
        "boto3",
        "source fetch",
        get_to(got, lambda p: _stream_get(boto, spec["source_bucket"], spec["source_key"], p)),
    )
    got.unlink()
    for n, what in ((1, "SourceOutput"), (2, "BuildOutput")):
        key = f"raw/{what}-{n}.bin"
        hop(
            "PUT",
            "minio",
            f"upload {what}",
            lambda key=key: mc.fput_object(
                bucket,
                key,
                str(payload),
                part_size=PART_SIZE,
                num_parallel_uploads=PARALLEL_UPLOADS,
            ),
        )
        hop(
            "GET",
            "minio",
            f"download {what}",
            get_to(got, lambda p, key=key: mc.fget_object(bucket, key, p)),
        )
        got.unlink()
    hop(
        "PUT",
        "boto3",
        "deploy upload",
        lambda: boto.upload_file(
            str(payload), deploy, "raw/payload.bin", Config=TransferConfig(max_concurrency=4)
        ),
    )
    return {"hops": hops, "total": sum(h["seconds"] for h in hops), "bytes": payload.stat().st_size}


def main() -> None:
    spec = json.loads(Path(sys.argv[1]).read_text())
    print(json.dumps(run(spec)), flush=True)


if __name__ == "__main__":
    main()
