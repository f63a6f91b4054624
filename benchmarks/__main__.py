"""``make bench``: Conveyor against raw Celery and the raw S3 clients, in one run.

Starts a private Redis and moto S3 in a temp dir, Conveyor's engine pool (c=1), ``all``
pool (c=1), beat and API, then runs the per-action overhead benchmark (overhead.py) and
the artifact-transfer benchmark (artifact.py), prints a markdown report and writes it to
benchmarks/results.md. Everything started is stopped at the end, on errors and on
Ctrl-C/SIGTERM too. The benchmarks measure and print; only sanity failures (an execution
that does not succeed, a deployed file of the wrong size) make the run fail.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

from benchmarks._stack import ProcPeak, bench_stack, log, machine_info, versions
from benchmarks.artifact import ArtifactResult, run_artifact
from benchmarks.overhead import OverheadResult, run_overhead

RESULTS = Path(__file__).resolve().parent / "results.md"
COMMAND = "`make bench`"
OVERHEAD_TARGET = 3.0
ARTIFACT_TARGET = 2.0
RSS_TARGET_MB = 200.0


def _mb(n: int) -> str:
    return f"{n / 1024**2:.0f} MB"


def _met(ok: bool) -> str:
    return "met" if ok else "**missed**"


def _summary_rows(o: OverheadResult | None, a: ArtifactResult | None) -> list[str]:
    rows = [
        "| benchmark | conveyor | raw | ratio | target | command |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    if o is not None:
        c, r = statistics.median(o.conveyor), statistics.median(o.raw)
        rows.append(
            f"| per-action overhead, {o.actions} sequential trivial actions "
            f"(median of {o.runs}) | {c:.2f} s ({1000 * c / o.actions:.0f} ms/action) "
            f"| {r:.2f} s ({1000 * r / o.actions:.0f} ms/task) | {c / r:.2f}x "
            f"| <= {OVERHEAD_TARGET:.1f}x ({_met(c / r <= OVERHEAD_TARGET)}) | {COMMAND} |"
        )
        cc, rc = o.pipeline_cpu(o.conveyor_cpu), o.pipeline_cpu(o.raw_cpu)
        rows.append(
            f"| CPU per action, all processes but the pollers (workers, beat, Redis, moto; "
            f"mean of {o.runs}) | {1000 * cc / o.actions:.0f} ms | {1000 * rc / o.actions:.0f} ms "
            f"| {cc / rc:.2f}x | - (context: steadier than wall time on a noisy machine) "
            f"| {COMMAND} |"
        )
    if a is not None:
        rows.append(
            f"| artifact {a.size_mb} MiB, Source->Build->Deploy end to end vs "
            f"{len(a.raw_hops)} raw hops | {a.end_to_end:.1f} s | {a.raw_total:.1f} s "
            f"| {a.ratio:.2f}x | <= {ARTIFACT_TARGET:.1f}x ({_met(a.ratio <= ARTIFACT_TARGET)}) "
            f"| {COMMAND} |"
        )
        rows.append(
            f"| artifact {a.size_mb} MiB, sum of action durations (ListActionExecutions) "
            f"| {a.action_sum:.1f} s | {a.raw_total:.1f} s | {a.action_sum / a.raw_total:.2f}x "
            f"| <= {ARTIFACT_TARGET:.1f}x ({_met(a.action_sum / a.raw_total <= ARTIFACT_TARGET)}) "
            f"| {COMMAND} |"
        )
        peak = a.worker_peak()
        raw_peak = max((p.peak_rss for p in a.raw_peaks), default=0)
        if peak is not None:
            ok = peak.peak_rss / 1024**2 < RSS_TARGET_MB
            rows.append(
                f"| peak RSS of any worker process during the {a.size_mb} MiB pipeline "
                f"({peak.root}, {peak.role}) | {_mb(peak.peak_rss)} | {_mb(raw_peak)} "
                f"(raw transfer process) | - | < {RSS_TARGET_MB:.0f} MB ({_met(ok)}) "
                f"| {COMMAND} |"
            )
    return rows


def _machine_lines(load: tuple[float, float, float]) -> list[str]:
    m = machine_info()
    v = versions()
    return [
        f"- machine: {m['nproc']} CPUs (nproc), {m['cpu']}, {m['memory']} RAM, {m['os']}",
        f"- load average when the run started: {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f} "
        "(1/5/15 min; anything else running on the machine inflates and scatters the numbers)",
        f"- python {m['python']}; " + ", ".join(f"{k} {val}" for k, val in v.items()),
        "- services: private `redis-server` on a free port (state db 0, broker db 1, shared "
        "by both sides), moto's S3 server (in-memory) as the one S3 endpoint for both sides",
    ]


def _overhead_details(o: OverheadResult) -> list[str]:
    def runs(xs: list[float]) -> str:
        return ", ".join(f"{x:.2f}" for x in xs)

    lines = [
        "### Per-action overhead",
        "",
        f"- Conveyor runs (s): {runs(o.conveyor)} (warm-up {o.conveyor_warmup:.2f}); "
        f"mean {statistics.fmean(o.conveyor):.2f}",
        f"- raw Celery runs (s): {runs(o.raw)} (warm-up {o.raw_warmup:.2f}); "
        f"mean {statistics.fmean(o.raw):.2f}",
        "- runs alternate Conveyor / raw so that machine noise hits both sides alike",
        "",
        "CPU seconds per run, by process tree (user+system, bash children included):",
        "",
        "| process | conveyor run | raw run |",
        "| --- | --- | --- |",
    ]
    for name in sorted(set(o.conveyor_cpu) | set(o.raw_cpu)):
        lines.append(
            f"| {name} | {o.conveyor_cpu.get(name, 0.0):.2f} | {o.raw_cpu.get(name, 0.0):.2f} |"
        )
    c_ms = 1000 * statistics.median(o.conveyor) / o.actions
    w = o.inproc_worker_ms
    build_ms, source_ms = w.get("build", 0.0), w.get("source", 0.0)
    inproc_ms = 1000 * o.inproc_total_s / o.actions
    lines += [
        "",
        "In-process breakdown: the same pipeline driven by calling `run_attempt` and "
        "`advance` directly (real Redis, S3 and providers; no Celery, no polling):",
        "",
        "| part of one action | ms |",
        "| --- | --- |",
        f"| worker, Build action (`run_attempt`) | {build_ms:.1f} |",
        f"| worker, Source action (`run_attempt`) | {source_ms:.1f} |",
        f"| engine callback (`advance`) | {o.inproc_engine_ms:.1f} |",
        f"| in-process total per action | {inproc_ms:.1f} |",
        f"| end-to-end per action (median run) | {c_ms:.1f} |",
        f"| rest: Celery, broker, process hops, API polling, contention | {c_ms - inproc_ms:.1f} |",
        "",
        "Wall-clock timers around the code of one in-process run, per action (averaged "
        f"over the {o.actions} actions; indented rows are part of the row above):",
        "",
        "| code | calls per action | ms per action |",
        "| --- | --- | --- |",
    ]
    for label, depth, calls, ms in o.timed_rows:
        indent = "&nbsp;&nbsp;&nbsp;&nbsp;" * depth
        lines.append(f"| {indent}{label} | {calls:.2f} | {ms:.1f} |")
    lines += [
        "",
        f"<details><summary>cProfile of one more in-process run ({o.profile_total_s:.2f} s "
        "under the profiler), top 15 by own time</summary>",
        "",
        "```",
    ]
    lines += [ln for ln in o.profile_top.strip().splitlines() if ln.strip()]
    lines += ["```", "", "</details>", ""]
    return lines


def _peak_rows(peaks: list[ProcPeak], a: ArtifactResult) -> list[str]:
    out = []
    for p in peaks:
        who = f"{p.count} seen" if p.role.startswith("build commands") else f"pid {p.pid}"
        out.append(f"| {p.root} | {p.role} | {who} | {_mb(p.peak_rss)} | {a.during(p.at)} |")
    return out


def _artifact_details(a: ArtifactResult) -> list[str]:
    lines = [
        f"### Artifact transfer ({a.size_mb} MiB incompressible)",
        "",
        f"- Conveyor end to end: {a.end_to_end:.1f} s; per action (lastUpdateTime - startTime):",
    ]
    lines += [f"  - {name}: {end - start:.1f} s" for name, start, end in a.actions]
    lines += [
        f"  - sum {a.action_sum:.1f} s (an action starts in the same transition that ends "
        "the one before, so the difference to end to end is the start call and polling)",
        "- S3 transfers of the big objects the pipeline made (from moto's request log; a "
        "multipart upload or ranged download counts once): "
        f"{len(a.moto_requests.get('GET', []))} GET, {len(a.moto_requests.get('PUT', []))} PUT",
        f"- raw hops ({a.raw_total:.1f} s):",
    ]
    lines += [
        f"  - {h['hop']}. {h['op']} {h['what']} ({h['client']}): {h['seconds']:.1f} s, "
        f"process RSS peak {_mb(h.get('peak_rss', 0))}"
        for h in a.raw_hops
    ]
    mb = a.size_mb * 1024**2 / 1e6
    lines += [
        "",
        f"The same pipeline in-process with wall-clock timers ({a.inproc_total:.1f} s in all; "
        "indented rows are part of the row above):",
        "",
        "| code | calls | seconds |",
        "| --- | --- | --- |",
    ]
    for label, depth, calls, secs in a.timed_rows:
        indent = "&nbsp;&nbsp;&nbsp;&nbsp;" * depth
        lines.append(f"| {indent}{label} | {calls} | {secs:.2f} |")
    lines += [
        "",
        "Single passes over the same file, in-process (for reference and what-ifs):",
        "",
        "| step | seconds | MB/s |",
        "| --- | --- | --- |",
    ]
    for step, secs in a.steps.items():
        lines.append(f"| {step} | {secs:.2f} | {mb / secs if secs else 0.0:.0f} |")
    lines += [
        "",
        "Peak RSS per process during the pipeline (sampled every 100 ms):",
        "",
        "| tree | process | which | peak RSS | peak while |",
        "| --- | --- | --- | --- | --- |",
    ]
    lines += _peak_rows([p for p in a.peaks if p.root != "moto-s3"], a)
    lines += _peak_rows(a.raw_peaks, a)
    moto = max((p.peak_rss for p in a.peaks if p.root == "moto-s3"), default=0)
    lines += [
        "",
        f"Context, not Conveyor's: moto's S3 server peaked at {_mb(moto)} RSS (it keeps "
        "objects in memory).",
        "",
    ]
    return lines


def render(
    o: OverheadResult | None,
    a: ArtifactResult | None,
    seconds: float,
    load: tuple[float, float, float],
) -> str:
    lines = [
        "# Conveyor benchmarks",
        "",
        f"Produced by {COMMAND} (`.venv/bin/python -m benchmarks`) in {seconds:.0f} s.",
        "",
        *_summary_rows(o, a),
        "",
        *_machine_lines(load),
        "",
    ]
    if o is not None:
        lines += _overhead_details(o)
    if a is not None:
        lines += _artifact_details(a)
    lines += [
        "### Notes",
        "",
        "- On a small shared VM the same run varies by 10-20%; the overhead benchmark "
        "alternates the two sides so that noise hits both, and reports medians.",
        "- The Conveyor side is polled through the API (GetPipelineExecution every 100 ms, as "
        "a client would); the raw side polls one Redis key as often. Both finish within one "
        "poll interval of their true end.",
        "- Both sides use the same client for each hop (the S3 source action streams one GET; "
        "artifacts go through minio with 8 MiB parts), so the ratio is fair; absolute "
        "transfer times are moto's, not MinIO's.",
        "",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--only", choices=("overhead", "artifact"), default=None)
    parser.add_argument("--size-mb", type=int, default=200, help="artifact size (MiB)")
    parser.add_argument("--actions", type=int, default=50, help="actions in the pipeline")
    parser.add_argument("--runs", type=int, default=3, help="timed runs per side (overhead)")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir and its logs")
    parser.add_argument("--no-write", action="store_true", help="do not write results.md")
    args = parser.parse_args(argv)

    started = time.perf_counter()
    load = os.getloadavg()
    o: OverheadResult | None = None
    a: ArtifactResult | None = None
    try:
        with bench_stack(keep=args.keep) as bench:
            log("starting conveyor: engine pool c=1, all pool c=1, beat, api")
            bench.start_conveyor()
            if args.only in (None, "overhead"):
                o = run_overhead(bench, actions=args.actions, runs=args.runs)
            if args.only in (None, "artifact"):
                a = run_artifact(bench, size_mb=args.size_mb)
    except KeyboardInterrupt:
        log("interrupted; everything was stopped")
        return 130
    report = render(o, a, time.perf_counter() - started, load)
    print()
    print(report)
    if not args.no_write:
        RESULTS.write_text(report)
        log(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
