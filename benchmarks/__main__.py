"""``make bench``: Conveyor against raw Celery and the raw S3 clients, in one run.

Starts a private Redis and moto S3 in a temp dir, Conveyor's engine pool (c=1), ``all``
pool (c=1), beat and API, then runs the per-action overhead benchmark (overhead.py) and
the artifact-transfer benchmark (artifact.py); then restarts Conveyor with the ``all`` pool
at c=2 and runs the S3-action chain (chain.py, with the in-process profile of one deploy
action; benchmarks/profile_before.md holds the same profile of the code before the
rewrite, measured once by profile_before.py), the fan-out (fanout.py, with the
compare-and-set retries of 50 parallel executions of one pipeline) and the start contention
benchmark (contention.py). Prints a markdown report and, when every benchmark ran (or with
``--write``), writes it to benchmarks/results.md. Everything started is stopped at the end,
on errors and on Ctrl-C/SIGTERM too. The benchmarks measure and print; only sanity failures
(an execution that does not succeed, a deployed file missing or of the wrong size) make the
run fail.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

from benchmarks._measure import DRIVER, Window, cas_text, pct, stack_cpu
from benchmarks._stack import (
    REPO_ROOT,
    ProcPeak,
    bench_stack,
    code_state,
    log,
    machine_info,
    versions,
)
from benchmarks._timers import check
from benchmarks.artifact import TIMED as ARTIFACT_TIMED
from benchmarks.artifact import ArtifactResult, run_artifact
from benchmarks.chain import DEPLOY_TIMED, PROFILE_RUNS, ChainResult, run_chain
from benchmarks.contention import Burst, ContentionResult, run_contention
from benchmarks.fanout import START_THREADS, FanoutResult, run_fanout
from benchmarks.overhead import TIMED as OVERHEAD_TIMED
from benchmarks.overhead import OverheadResult, run_overhead

RESULTS = Path(__file__).resolve().parent / "results.md"
# The profile of one deploy action before the rewrite: measured once (profile_before.py).
BEFORE_PROFILE = Path(__file__).resolve().parent / "profile_before.md"
COMMAND = "`make bench`"
OVERHEAD_TARGET = 3.0
ARTIFACT_TARGET = 2.0
RSS_TARGET_MB = 200.0
CHAIN_TARGET = 2.0
FANOUT_TARGET = 2.0
CONTENTION_P99_S = 1.0
CME_SHORT = "ConcurrentModificationException"
BENCHMARKS = ("overhead", "artifact", "chain", "fanout", "contention")


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


def _new_summary_rows(
    ch: ChainResult | None, f: FanoutResult | None, c: ContentionResult | None
) -> list[str]:
    rows = []
    if ch is not None:
        ok = ch.ratio <= CHAIN_TARGET
        rows.append(
            f"| chain: {ch.actions} S3-deploy actions one after another (median of {ch.runs}) "
            f"vs a raw Celery chain of {ch.actions} tasks doing the same S3 work (GET the "
            f"artifact, unzip, PUT) | {ch.conveyor_ms:.0f} ms/action "
            f"({statistics.median(ch.conveyor):.2f} s) | {ch.raw_ms:.0f} ms/task "
            f"({statistics.median(ch.raw):.2f} s) | {ch.ratio:.2f}x "
            f"| <= {CHAIN_TARGET:.1f}x ({_met(ok)}) | {COMMAND} |"
        )
        cc, rc = ch.cpu_ms(ch.conveyor_w), ch.cpu_ms(ch.raw_w)
        rows.append(
            f"| chain: CPU per action, every process tree (workers, beat, API, Redis, moto; "
            f"mean of {ch.runs}) | {cc:.0f} ms | {rc:.0f} ms | {cc / rc if rc else 0:.2f}x "
            f"| - | {COMMAND} |"
        )
    if f is not None:
        ok = f.ratio <= FANOUT_TARGET
        rows.append(
            f"| fan-out: {f.in_flight} executions in flight ({f.pipelines} PARALLEL pipelines "
            f"x {f.executions}, 1 + {f.deploys} S3 actions each) on one `--pool all -c 2` "
            f"worker vs raw Celery chains on one `-c 2` worker (median of {f.runs}) "
            f"| {f.conveyor_rate:.1f} actions/s | {f.raw_rate:.1f} tasks/s "
            f"| {f.ratio:.2f}x slower | <= {FANOUT_TARGET:.1f}x ({_met(ok)}) | {COMMAND} |"
        )
        cc, rc = f.cpu_ms(f.conveyor_w), f.cpu_ms(f.raw_w)
        rows.append(
            f"| fan-out: CPU per action, every process tree (mean of {f.runs}) "
            f"| {cc:.0f} ms | {rc:.0f} ms | {cc / rc if rc else 0:.2f}x | - | {COMMAND} |"
        )
        if f.cas_rounds:
            r0 = f.cas_rounds[0]
            per = ", ".join(f"{r.per_transition:.3f}" for r in f.cas_rounds)
            cas = ", ".join(cas_text(r.cas) for r in f.cas_rounds)
            trans = ", ".join(str(r.transitions) for r in f.cas_rounds)
            rows.append(
                f"| fan-out: {r0.executions} PARALLEL executions of ONE pipeline (1 + "
                f"{r0.deploys} S3 actions each), compare-and-set retries on its run record "
                f"({len(f.cas_rounds)} rounds) | {per} retries per transition ({cas} retries "
                f"over {trans} transitions) | - | - | - (measured) | {COMMAND} |"
            )
    if c is not None:
        for burst in (c.idle, c.busy):
            if burst is None:
                continue
            errors = ", ".join(f"{n} {code}" for code, n in burst.errors.most_common()) or "none"
            rows.append(
                f"| contention: {burst.calls} parallel StartPipelineExecution on one pipeline "
                f"(SUPERSEDED), {burst.label} | {burst.ok} ok, {burst.cme} {CME_SHORT}, errors: "
                f"{errors}; p50 {1000 * burst.p(50):.0f} ms, p99 {1000 * burst.p(99):.0f} ms, "
                f"max {1000 * max(burst.latencies):.0f} ms | - | - | {burst.calls} ok, 0 "
                f"{CME_SHORT}, p99 < {CONTENTION_P99_S:g} s ({_met(burst.met)}) | {COMMAND} |"
            )
    return rows


def _cpu_table(cw: Window | None, rw: Window | None, c_actions: int, r_actions: int) -> list[str]:
    """CPU ms per action by process tree, then Redis commands and S3 requests per action."""
    if cw is None or rw is None:
        return []
    lines = [
        f"CPU per action by process tree, ms (user+system, prefork children included; "
        f"Conveyor: {c_actions} actions, raw: {r_actions} tasks):",
        "",
        "| process tree | conveyor | raw |",
        "| --- | --- | --- |",
    ]
    for name in sorted(set(cw.cpu) | set(rw.cpu)):
        c, r = cw.cpu.get(name, 0.0), rw.cpu.get(name, 0.0)
        if name != DRIVER and abs(c) + abs(r) < 1e-4:
            continue
        lines.append(f"| {name} | {1000 * c / c_actions:.1f} | {1000 * r / r_actions:.1f} |")
    lines.append(
        f"| **all but the driver** | **{1000 * stack_cpu(cw) / c_actions:.1f}** "
        f"| **{1000 * stack_cpu(rw) / r_actions:.1f}** |"
    )
    top = sorted(set(cw.redis) | set(rw.redis), key=lambda k: -cw.redis.get(k, 0))
    c_total, r_total = sum(cw.redis.values()), sum(rw.redis.values())
    lines += [
        "",
        f"Redis commands per action (`INFO commandstats`, state + broker databases; "
        f"{c_total / c_actions:.1f} vs {r_total / r_actions:.1f} in all; the driver's XREADs "
        "included):",
        "",
        "| command | conveyor | raw |",
        "| --- | --- | --- |",
    ]
    for k in top[:12]:
        lines.append(
            f"| {k} | {cw.redis.get(k, 0) / c_actions:.2f} | {rw.redis.get(k, 0) / r_actions:.2f} |"
        )
    methods = sorted(set(cw.s3) | set(rw.s3))
    lines += [
        "",
        "S3 requests per action (moto's request log; the driver's listing of the deployed "
        "objects is outside the window):",
        "",
        "| method | conveyor | raw |",
        "| --- | --- | --- |",
    ]
    for m in methods:
        lines.append(
            f"| {m} | {cw.s3.get(m, 0) / c_actions:.2f} | {rw.s3.get(m, 0) / r_actions:.2f} |"
        )
    lines += ["", f"- CAS retries (`conveyor:stats:cas_retries` increase): {cas_text(cw.cas)}", ""]
    return lines


def _chain_details(ch: ChainResult) -> list[str]:
    def runs(xs: list[float]) -> str:
        return ", ".join(f"{x:.2f}" for x in xs)

    n = ch.actions
    lines = [
        f"### Chain of {n} S3-deploy actions",
        "",
        f"- source object: a {ch.source_zip_bytes}-byte zip holding one 1000-byte "
        "`index.html`; each action/task GETs the artifact, extracts it and PUTs the file",
        f"- Conveyor, Deploy stage (STARTED event -> pipeline SUCCEEDED event), s: "
        f"{runs(ch.conveyor)} (warm-up {ch.conveyor_warmup:.2f}); per action "
        f"{ch.conveyor_ms:.1f} ms (median run)",
        f"- Conveyor end to end (StartPipelineExecution call -> SUCCEEDED event, {n + 1} "
        f"actions with the source), s: {runs(ch.conveyor_e2e)}; per action "
        f"{1000 * statistics.median(ch.conveyor_e2e) / (n + 1):.1f} ms",
        f"- raw Celery chain (apply_async -> the last task's completion entry), s: "
        f"{runs(ch.raw)} (warm-up {ch.raw_warmup:.2f}); per task {ch.raw_ms:.1f} ms",
        f"- one Conveyor action, its STARTED event -> its SUCCEEDED event (dispatching "
        f"transition -> result transition), over {len(ch.action_spans_ms)} actions: "
        f"p50 {ch.span_pct(50):.0f} ms, p90 {ch.span_pct(90):.0f} ms, "
        f"max {ch.span_pct(100):.0f} ms",
        "- runs alternate Conveyor / raw so that machine noise hits both sides alike",
        "",
    ]
    lines += _cpu_table(ch.conveyor_w, ch.raw_w, ch.runs * (n + 1), ch.runs * n)
    lines += _deploy_profile(ch)
    return lines


def _deploy_profile(ch: ChainResult) -> list[str]:
    """One deploy action in-process: before the rewrite (static, measured once by
    benchmarks/profile_before.py) and now (this run)."""
    lines = [
        "#### Where one S3 deploy action's time goes, in-process: before the rewrite and now",
        "",
        "The chain's pipeline driven in-process, no Celery (benchmarks/_inproc.py, "
        "benchmarks/_timers.py): every dispatched task is run by calling the worker's own "
        "entry point, against a real Redis and moto S3, and wall-clock and CPU timers wrap the "
        "worker's and the store's functions; only the Deploy actions are counted. A row counts "
        "the calls made directly under the row above it (one less indent), so rows never "
        "overlap; CPU is the driving thread's, other threads and processes are in the last "
        "rows. The two tables have the same rows in the same order; a step one version does "
        "not have is marked so.",
        "",
    ]
    if BEFORE_PROFILE.exists():
        lines += [BEFORE_PROFILE.read_text().strip(), ""]
    else:
        lines += [
            f"(No profile of the code before the rewrite: {BEFORE_PROFILE.name} is missing; "
            "benchmarks/profile_before.py makes it.)",
            "",
        ]
    lines += [
        f"##### After: the code measured in this run, {ch.profile_actions} deploy actions "
        f"({ch.profile_ms:.1f} ms each in-process, vs {ch.conveyor_ms:.1f} ms per action "
        "through Celery in the chain above)",
        "",
        f"Load average (1/5/15 min) {ch.profile_load[0]:.2f} / {ch.profile_load[1]:.2f} / "
        f"{ch.profile_load[2]:.2f} when it started; {PROFILE_RUNS} timed executions of 1 + "
        f"{ch.actions} actions after one warm-up, right after the chain (Conveyor's processes "
        "idle, moto holding the chain's objects; the before table had a Redis and moto of its "
        "own and nothing else).",
        "",
        *ch.profile_table,
        "",
        "<details><summary>cProfile of one more in-process execution (its deploy actions "
        "only), top 15 by own time</summary>",
        "",
        "```",
        *[ln for ln in ch.profile_top.strip().splitlines() if ln.strip()],
        "```",
        "",
        "</details>",
        "",
    ]
    return lines


def _fanout_details(f: FanoutResult) -> list[str]:
    def runs(xs: list[float]) -> str:
        return ", ".join(f"{x:.1f}" for x in xs)

    lines = [
        f"### Fan-out: {f.in_flight} executions in flight",
        "",
        f"- {f.pipelines} pipelines (PARALLEL) x {f.executions} executions, each Source + "
        f"{f.deploys} S3 deploys = {f.actions} actions per round; raw: {f.in_flight} chains of "
        f"1 source-like + {f.deploys} deploy tasks = {f.actions} tasks per round",
        f"- Conveyor rounds (first start call -> last SUCCEEDED event), s: {runs(f.conveyor)}; "
        f"{f.conveyor_rate:.1f} actions/s (median round)",
        f"- raw rounds (first apply_async -> last chain done), s: {runs(f.raw)}; "
        f"{f.raw_rate:.1f} tasks/s",
        f"- StartPipelineExecution latency (8 client threads): p50 "
        f"{_pct_ms(f.start_ms, 50)}, p99 {_pct_ms(f.start_ms, 99)}, max "
        f"{_pct_ms(f.start_ms, 100)}",
        f"- one execution, first event -> SUCCEEDED: p50 {_pct_s(f.execution_s, 50)}, "
        f"p90 {_pct_s(f.execution_s, 90)}, max {_pct_s(f.execution_s, 100)}; the first "
        f"execution finished {runs(f.first_end_s)} s into its round",
        "",
    ]
    lines += _cpu_table(f.conveyor_w, f.raw_w, f.runs * f.actions, f.runs * f.actions)
    lines += _cas_details(f)
    return lines


def _cas_details(f: FanoutResult) -> list[str]:
    if not f.cas_rounds:
        return []
    r0 = f.cas_rounds[0]
    lines = [
        f"#### Compare-and-set retries: {r0.executions} PARALLEL executions of one pipeline",
        "",
        f"One pipeline (executionMode PARALLEL, Source + {r0.deploys} S3 deploys), "
        f"{r0.executions} StartPipelineExecution calls at once from {START_THREADS} threads, "
        "on the same `--pool all -c 2` worker, after one warm-up execution. Every start and "
        "every action result is a transition of the pipeline's one run record (`Store.apply`), "
        "made by the API and the worker's two pool processes at once. Transitions are counted "
        "from the events (one pipeline STARTED per start, one action SUCCEEDED per result) and "
        f"should equal the derived {r0.executions} x (1 + 1 + {r0.deploys}); WATCH and EXEC "
        "are Redis's counts over the round: every transition attempt is one WATCH, so WATCH "
        "per transition above 1 is the retries; EXEC counts every MULTI (transitions, outbox "
        "clearing, the broker's own).",
        "",
        "| round | wall | transitions (derived) | CAS retries | retries per transition "
        "| Redis WATCH per transition | Redis EXEC per transition |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for i, r in enumerate(f.cas_rounds, 1):
        t = r.transitions or 1
        lines.append(
            f"| {i} | {r.seconds:.2f} s | {r.transitions} ({r.derived}) | {cas_text(r.cas)} "
            f"| {r.per_transition:.3f} | {r.watch / t:.2f} | {r.exec / t:.2f} |"
        )
    lines.append("")
    return lines


def _burst_row(b: Burst) -> str:
    errors = ", ".join(f"{code} x{n}" for code, n in b.errors.most_common()) or "-"
    final = ", ".join(f"{st} {n}" for st, n in sorted(b.final.items())) or "-"
    settle = f"{b.settle:.1f} s" if b.final else "-"
    cas = cas_text(b.cas) if b.label != "GetPipeline" else "-"
    return (
        f"| {b.label} | {b.ok}/{b.calls} | {errors} | {1000 * b.p(50):.0f} "
        f"| {1000 * b.p(99):.0f} | {1000 * max(b.latencies):.0f} | {b.wall:.2f} s "
        f"| {b.api_cpu_ms():.1f} | {b.redis_per_call('watch'):.1f} "
        f"| {b.redis_per_call('exec'):.1f} | {final} | {settle} | {cas} |"
    )


def _contention_details(c: ContentionResult) -> list[str]:
    lines = [
        f"### Contention: {c.calls} parallel StartPipelineExecution",
        "",
        f"{c.calls} threads, one boto3 client with {c.calls} pooled connections and no "
        "retries, released by a barrier; latency of every call from the release (ms). "
        f'"while builds run": {c.builds} PARALLEL executions of a `sleep 3` CodeBuild '
        f"pipeline dispatched first (their executions took {c.builds_wall:.1f} s).",
        "",
        "API CPU and Redis WATCH / EXEC per call are counted from just before the release to "
        "the last answer (Redis's `INFO commandstats`; the engine and workers add their own "
        "transitions in that window). Every compare-and-set attempt is one WATCH, so WATCH "
        "per call above 1 is retries (or other transitions); EXEC counts the attempts that "
        "reached the commit, aborted or not.",
        "",
        "| burst | ok | errors | p50 | p99 | max | wall | API CPU ms/call | WATCH/call "
        "| EXEC/call | started executions ended | last ended after | CAS retries |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for b in (c.reference, c.idle, c.busy):
        if b is not None:
            lines.append(_burst_row(b))
    lines.append("")
    return lines


def _pct_ms(xs: list[float], q: float) -> str:
    return f"{pct(xs, q):.0f} ms"


def _pct_s(xs: list[float], q: float) -> str:
    return f"{pct(xs, q):.1f} s"


def _machine_lines(
    load: tuple[float, float, float],
    load_after: tuple[float, float, float] | None = None,
    code: str | None = None,
) -> list[str]:
    m = machine_info()
    v = versions()
    after = (
        f"; when it ended: {load_after[0]:.2f} / {load_after[1]:.2f} / {load_after[2]:.2f}"
        if load_after
        else ""
    )
    return [
        f"- machine: {m['nproc']} CPUs (nproc), {m['cpu']}, {m['memory']} RAM, {m['os']}",
        f"- load average when the run started: {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f}"
        f"{after} (1/5/15 min; the run's own processes count in the latter; anything else "
        "running on the machine inflates and scatters the numbers)",
        f"- python {m['python']}; " + ", ".join(f"{k} {val}" for k, val in v.items()),
        f"- code: {code or code_state()} at {REPO_ROOT} (when the run started)",
        "- services: private `redis-server` on a free port (state db 0, broker db 1, shared "
        "by both sides), moto's S3 server (in-memory) as the one S3 endpoint for both sides",
        "- processes: overhead and artifact run on engine pool c=1 + `all` pool c=1 + beat + "
        "API (raw: one `-c 1` worker); chain, fan-out and contention on engine pool c=1 + "
        "`all` pool c=2 + beat + API (raw: one `-c 2` worker)",
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
    w, wc = o.inproc_worker_ms, o.inproc_worker_cpu_ms
    inproc_ms = 1000 * o.inproc_total_s / o.actions
    lines += [
        "",
        "In-process breakdown: the same pipeline driven by calling `run_action` for every "
        "dispatched task (real Redis, S3 and providers; no Celery, no polling). The worker "
        "applies the action's result itself (`report` -> `Store.apply`, which dispatches the "
        "next action): there is no engine callback hop any more.",
        "",
        "| part of one action | ms wall | ms CPU (this thread) |",
        "| --- | --- | --- |",
        f"| worker, Build action, whole action incl. applying the result (`run_action`) "
        f"| {w.get('build', 0.0):.1f} | {wc.get('build', 0.0):.1f} |",
        f"| worker, Source action, whole action incl. applying the result (`run_action`) "
        f"| {w.get('source', 0.0):.1f} | {wc.get('source', 0.0):.1f} |",
        f"| &nbsp;&nbsp;&nbsp;&nbsp;of which applying the result (`Store.apply`; from the "
        f"timed run) | {o.inproc_apply_ms:.1f} | {o.inproc_apply_cpu_ms:.1f} |",
        f"| in-process total per action | {inproc_ms:.1f} | - |",
        f"| end-to-end per action (median run) | {c_ms:.1f} | - |",
        f"| rest: Celery, broker, process hops, API polling, contention "
        f"| {c_ms - inproc_ms:.1f} | - |",
        "",
        "Timers around the code of one more in-process run, per action (averaged over the "
        f"{o.actions} actions; indented rows are part of the row above; CPU is the calling "
        "thread's):",
        "",
        *o.timed_table,
    ]
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
        f"The same pipeline in-process with wall-clock and CPU timers ({a.inproc_total:.1f} s "
        "in all; indented rows are part of the row above; CPU is the calling thread's, the "
        "transfer pools' threads are in the other-threads row):",
        "",
        *a.timed_table,
    ]
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
    ch: ChainResult | None = None,
    f: FanoutResult | None = None,
    c: ContentionResult | None = None,
    load_after: tuple[float, float, float] | None = None,
    code: str | None = None,
) -> str:
    lines = [
        "# Conveyor benchmarks",
        "",
        f"Produced by {COMMAND} (`.venv/bin/python -m benchmarks`) in {seconds:.0f} s.",
        "",
        *_summary_rows(o, a),
        *_new_summary_rows(ch, f, c),
        "",
        *_machine_lines(load, load_after, code),
        "",
    ]
    if o is not None:
        lines += _overhead_details(o)
    if a is not None:
        lines += _artifact_details(a)
    if ch is not None:
        lines += _chain_details(ch)
    if f is not None:
        lines += _fanout_details(f)
    if c is not None:
        lines += _contention_details(c)
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
        "- Chain, fan-out and contention detect completion from the `conveyor:events` stream "
        "(XREAD BLOCK; the raw side XADDs to a stream of its own) and take end times from the "
        "stream entry ids (Redis's clock at the commit), so no polling burns the CPU being "
        "measured. Their raw tasks do only the S3 work (no bash, no log object, no bucket "
        "check, no checksum); everything else Conveyor does is in its figures.",
        "",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument(
        "--only",
        choices=BENCHMARKS,
        action="append",
        default=None,
        help="run only this benchmark (repeatable; default: all)",
    )
    parser.add_argument("--size-mb", type=int, default=200, help="artifact size (MiB)")
    parser.add_argument("--actions", type=int, default=50, help="actions in the pipeline")
    parser.add_argument("--runs", type=int, default=3, help="timed runs per side (overhead)")
    parser.add_argument("--chain-actions", type=int, default=50, help="deploy actions (chain)")
    parser.add_argument("--chain-runs", type=int, default=3, help="timed runs per side (chain)")
    parser.add_argument("--fanout-pipelines", type=int, default=4)
    parser.add_argument("--fanout-executions", type=int, default=12, help="per pipeline")
    parser.add_argument("--fanout-deploys", type=int, default=3, help="per execution")
    parser.add_argument("--fanout-runs", type=int, default=3, help="timed rounds per side")
    parser.add_argument(
        "--cas-executions", type=int, default=50, help="executions of one pipeline (CAS rounds)"
    )
    parser.add_argument("--cas-rounds", type=int, default=2, help="0: no CAS rounds")
    parser.add_argument("--contention-calls", type=int, default=100)
    parser.add_argument("--contention-builds", type=int, default=8)
    parser.add_argument("--keep", action="store_true", help="keep the temp dir and its logs")
    parser.add_argument(
        "--write",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="write results.md (default: only when every benchmark runs, so that a partial "
        "run never replaces the full report the README quotes)",
    )
    args = parser.parse_args(argv)

    only = set(args.only or BENCHMARKS)
    # Every timed function of the in-process breakdowns must exist: fail now, loudly.
    for name, spec in (("overhead", OVERHEAD_TIMED), ("artifact", ARTIFACT_TIMED)):
        if name in only:
            check(spec)
    if "chain" in only:
        check(DEPLOY_TIMED)
    started = time.perf_counter()
    code = code_state()
    log(f"code: {code}")
    load = os.getloadavg()
    log(f"load average {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f}")
    o: OverheadResult | None = None
    a: ArtifactResult | None = None
    ch: ChainResult | None = None
    f: FanoutResult | None = None
    c: ContentionResult | None = None
    try:
        with bench_stack(keep=args.keep) as bench:
            if only & {"overhead", "artifact"}:
                log("starting conveyor: engine pool c=1, all pool c=1, beat, api")
                bench.start_conveyor(providers_concurrency=1)
                if "overhead" in only:
                    o = run_overhead(bench, actions=args.actions, runs=args.runs)
                if "artifact" in only:
                    a = run_artifact(bench, size_mb=args.size_mb)
            if only & {"chain", "fanout", "contention"}:
                if bench.conveyor:
                    log("stopping conveyor and the -c 1 raw worker")
                    bench.stop_conveyor()
                    bench.stop_raw_worker("raw-celery")
                log("starting conveyor: engine pool c=1, all pool c=2, beat, api")
                bench.start_conveyor(providers_concurrency=2)
                if "chain" in only:
                    ch = run_chain(bench, actions=args.chain_actions, runs=args.chain_runs)
                if "fanout" in only:
                    f = run_fanout(
                        bench,
                        pipelines=args.fanout_pipelines,
                        executions=args.fanout_executions,
                        deploys=args.fanout_deploys,
                        runs=args.fanout_runs,
                        cas_executions=args.cas_executions,
                        cas_rounds=args.cas_rounds,
                    )
                if "contention" in only:
                    c = run_contention(
                        bench, calls=args.contention_calls, builds=args.contention_builds
                    )
    except KeyboardInterrupt:
        log("interrupted; everything was stopped")
        return 130
    report = render(o, a, time.perf_counter() - started, load, ch, f, c, os.getloadavg(), code)
    print()
    print(report)
    write = args.write if args.write is not None else args.only is None
    if write:
        RESULTS.write_text(report)
        log(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
