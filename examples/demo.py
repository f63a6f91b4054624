"""The reference pipeline end to end on a local stack: what ``make demo`` runs.

It starts Redis, an S3 endpoint, the engine and provider workers, beat, the HTTP API and
Flower (``workers.stack.run_dev_stack``), creates the buckets the pipeline names, uploads
``examples/app`` zipped as the source object, creates the pipeline from
``examples/reference-pipeline.json`` through the API, follows the execution that creating it
started (as CreatePipeline does on AWS) with live progress, stops at
the manual approval and prints the command a person would run to answer it, then approves
(or waits for you to), and shows where the artifacts and the deployed files are.

Environment:

- ``DEMO_INTERACTIVE=1``: wait for a person to approve or reject (with the printed command)
  instead of approving automatically.
- ``DEMO_KEEP=1``: leave the stack running at the end until Ctrl-C.
- ``DEMO=git``: the same pipeline with a CodeCommit-style git source
  (``examples/git-pipeline.json``): ``examples/app`` is committed to a bare git repository
  in the demo's working directory, which the workers reach through
  ``CONVEYOR_GIT_BASE_URL``; the build sees the commit id and message.
- ``DEMO_PIPELINE``: another definition file (e.g. ``examples/reference-pipeline.cfn.yaml``).
- ``DEMO_TIMEOUT``: seconds to wait for each phase of the run (default 120).
- ``DEMO_WORKDIR``: where the process logs go (default ``.conveyor/demo-<timestamp>``).
- ``CONVEYOR_REDIS_URL`` / ``CONVEYOR_S3_ENDPOINT_URL`` (+ ``CONVEYOR_S3_*`` credentials):
  use services you already run instead of starting a ``redis-server`` and an S3 server.

Exit status 0 once the execution has Succeeded; otherwise 1, with the reason and the end
of the log of the process concerned. Without a terminal (CI, a pipe) progress is printed as
plain lines instead of a live table.
"""

from __future__ import annotations

import io
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
import traceback
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from engine.client import TERMINAL, ConveyorClient, describe_error, error_code, load_definition
from workers.cli_client import STATUS_STYLE
from workers.devstack import Service, http_answers
from workers.stack import DevStack, run_dev_stack

REPO = Path(__file__).resolve().parents[1]
APP_DIR = REPO / "examples" / "app"
DEFAULT_PIPELINE = REPO / "examples" / "reference-pipeline.json"
GIT_PIPELINE = REPO / "examples" / "git-pipeline.json"
# CodePipeline's S3 source shows this object metadata as the revision summary.
REVISION_SUMMARY_KEY = "codepipeline-artifact-revision-summary"
# botocore refuses a CreatePipeline without roleArn; Conveyor does not assume IAM roles, so
# a definition written without one (like the reference pipeline) gets this placeholder.
PLACEHOLDER_ROLE_ARN = "arn:aws:iam::000000000000:role/conveyor"
POLL_SECONDS = 0.5
LOG_TAIL_LINES = 40


class DemoError(Exception):
    """A step failed; ``logs`` names the processes whose log tails explain it, ``details``
    adds (title, text) sections such as a failed action's own log."""

    def __init__(
        self,
        message: str,
        logs: Iterable[str] = (),
        details: Iterable[tuple[str, str]] = (),
    ) -> None:
        super().__init__(message)
        self.message = message
        self.logs = tuple(logs)
        self.details = tuple(details)


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


# ------------------------------------------------------------------ the pipeline's layout


@dataclass(frozen=True)
class Layout:
    """What the demo must create for the pipeline: read from the definition, so they match."""

    name: str
    artifact_bucket: str | None
    source_bucket: str | None  # an S3 source's bucket and key
    source_key: str | None
    deploy_buckets: tuple[str, ...]  # in stage order: staging first, production last
    approval: tuple[str, str]  # (stage, action)
    source_repository: str | None = None  # a git source's RepositoryName
    source_branch: str = "main"

    @property
    def staging_bucket(self) -> str:
        return self.deploy_buckets[0]

    @property
    def production_bucket(self) -> str:
        return self.deploy_buckets[-1]


def read_layout(decl: dict[str, Any]) -> Layout:
    sources: list[tuple[str, str]] = []
    repositories: list[tuple[str, str]] = []
    deploys: list[str] = []
    approvals: list[tuple[str, str]] = []
    for stage in decl.get("stages", []):
        for action in stage.get("actions", []):
            kind = action.get("actionTypeId", {})
            config = action.get("configuration") or {}
            match (kind.get("category"), kind.get("provider")):
                case ("Source", "S3"):
                    sources.append((config["S3Bucket"], config["S3ObjectKey"]))
                case ("Source", "CodeCommit"):
                    repositories.append((config["RepositoryName"], config["BranchName"]))
                case ("Deploy", "S3"):
                    deploys.append(config["BucketName"])
                case ("Approval", "Manual"):
                    approvals.append((stage["name"], action["name"]))
    if len(sources) + len(repositories) != 1 or not deploys or not approvals:
        raise DemoError(
            "the demo needs a pipeline with one Source/S3 or Source/CodeCommit action, a "
            "Deploy/S3 action and a Manual approval (like examples/reference-pipeline.json)"
        )
    store = decl.get("artifactStore") or {}
    bucket, key = sources[0] if sources else (None, None)
    repository, branch = repositories[0] if repositories else (None, "main")
    return Layout(
        name=decl["name"],
        artifact_bucket=store.get("location"),
        source_bucket=bucket,
        source_key=key,
        deploy_buckets=tuple(dict.fromkeys(deploys)),
        approval=approvals[0],
        source_repository=repository,
        source_branch=branch,
    )


def commit_app(directory: Path, root: Path, repository: str, branch: str) -> str:
    """``directory`` committed to a new bare repository ``root/<repository>.git`` on
    ``branch`` (what a developer's push would leave on a git server); returns the commit."""
    bare = root / f"{repository}.git"
    work = root / f"{repository}-work"
    if bare.exists() or work.exists():
        raise DemoError(f"{bare} already exists: point DEMO_WORKDIR at a new directory")
    ident = {
        "GIT_AUTHOR_NAME": "Conveyor demo",
        "GIT_AUTHOR_EMAIL": "demo@conveyor.invalid",
        "GIT_COMMITTER_NAME": "Conveyor demo",
        "GIT_COMMITTER_EMAIL": "demo@conveyor.invalid",
    }
    env = {**os.environ, **ident, "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1"}

    def git(*args: str, cwd: Path) -> str:
        done = subprocess.run(
            ["git", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=60
        )
        if done.returncode != 0:
            raise DemoError(f"git {' '.join(args)} failed: {done.stderr.strip()}")
        return done.stdout.strip()

    root.mkdir(parents=True, exist_ok=True)
    shutil.copytree(directory, work)
    git("init", "-q", "-b", branch, cwd=work)
    git("add", "-A", cwd=work)
    git("commit", "-q", "-m", f"Sample app {(directory / 'VERSION').read_text().strip()}", cwd=work)
    git("clone", "-q", "--bare", str(work), str(bare), cwd=root)
    return git("rev-parse", "HEAD", cwd=work)


# ------------------------------------------------------------------ S3 and the sample app


def s3_client(env: dict[str, str]) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=env["CONVEYOR_S3_ENDPOINT_URL"],
        region_name=env["CONVEYOR_S3_REGION"],
        aws_access_key_id=env["CONVEYOR_S3_ACCESS_KEY_ID"],
        aws_secret_access_key=env["CONVEYOR_S3_SECRET_ACCESS_KEY"],
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 3}),
    )


def create_bucket(s3: Any, bucket: str, region: str, *, versioned: bool = False) -> None:
    kwargs: dict[str, Any] = {"Bucket": bucket}
    if region != "us-east-1":
        kwargs["CreateBucketConfiguration"] = {"LocationConstraint": region}
    try:
        s3.create_bucket(**kwargs)
    except ClientError as exc:  # a service you run yourself may have it from an earlier demo
        if error_code(exc) not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
            raise
    if versioned:
        s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})


def zip_app(directory: Path) -> tuple[bytes, list[str]]:
    """The sample app as a zip (what a developer would upload), and the names in it."""
    buf = io.BytesIO()
    names: list[str] = []
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(directory.rglob("*")):
            if path.is_file():
                name = path.relative_to(directory).as_posix()
                zf.write(path, name)
                names.append(name)
    if "buildspec.yml" not in names:
        raise DemoError(f"{directory} has no buildspec.yml")
    return buf.getvalue(), names


def list_objects(s3: Any, bucket: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        out.extend(page.get("Contents", []))
    return out


# ------------------------------------------------------------------ progress


@dataclass(frozen=True)
class ActionRow:
    stage: str
    action: str
    category: str
    status: str | None
    summary: str

    @property
    def waiting_for_approval(self) -> bool:
        return self.category == "Approval" and self.status == "InProgress"


@dataclass(frozen=True)
class Snapshot:
    execution: dict[str, Any]
    rows: list[ActionRow]

    @property
    def status(self) -> str:
        return str(self.execution["status"])

    def row(self, stage: str, action: str) -> ActionRow | None:
        return next((r for r in self.rows if (r.stage, r.action) == (stage, action)), None)


def snapshot(client: ConveyorClient, name: str, execution_id: str) -> Snapshot:
    """Every action of the execution's pipeline version, in order, with its latest status."""
    execution = client.get_execution(name, execution_id)
    decl = client.get_pipeline(name, execution.get("pipelineVersion"))["pipeline"]
    details = {
        (d["stageName"], d["actionName"]): d
        for d in client.list_action_executions(name, execution_id)
    }
    rows: list[ActionRow] = []
    for stage in decl.get("stages", []):
        for action in stage.get("actions", []):
            d = details.get((stage["name"], action["name"]), {})
            result = (d.get("output") or {}).get("executionResult") or {}
            rows.append(
                ActionRow(
                    stage=stage["name"],
                    action=action["name"],
                    category=action["actionTypeId"]["category"],
                    status=d.get("status"),
                    summary=str(result.get("externalExecutionSummary") or ""),
                )
            )
    return Snapshot(execution, rows)


def status_text(status: str | None) -> Text:
    return Text(status or "-", style=STATUS_STYLE.get(status or "", "dim"))


def render(name: str, snap: Snapshot, elapsed: float) -> RenderableType:
    table = Table(title=f"{name} · {snap.execution['pipelineExecutionId']}")
    table.add_column("stage", no_wrap=True)
    table.add_column("action", no_wrap=True)
    table.add_column("status", no_wrap=True)
    table.add_column("summary")
    previous = None
    for r in snap.rows:
        table.add_row(
            "" if r.stage == previous else r.stage, r.action, status_text(r.status), r.summary
        )
        previous = r.stage
    footer = Text.assemble("execution: ", status_text(snap.status), f"   ({elapsed:.1f}s)")
    return Group(table, footer)


class Progress:
    """A live table on a terminal; one plain line per change anywhere else (CI, pipes)."""

    def __init__(self, console: Console, name: str, started: float) -> None:
        self.console = console
        self.name = name
        self.started = started
        self.live_mode = console.is_interactive and not _flag("CI")
        self.live: Live | None = None
        self.seen: dict[tuple[str, str], str | None] = {}
        self.last_status: str | None = None

    def __enter__(self) -> Progress:
        if self.live_mode:
            self.live = Live(console=self.console, auto_refresh=False)
            self.live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.live is not None:
            self.live.__exit__(None, None, None)
            self.live = None

    def update(self, snap: Snapshot) -> None:
        elapsed = time.monotonic() - self.started
        if self.live is not None:
            self.live.update(render(self.name, snap, elapsed), refresh=True)
            return
        stamp = f"[{elapsed:6.1f}s]"
        for r in snap.rows:
            key = (r.stage, r.action)
            if r.status is not None and self.seen.get(key) != r.status:
                self.seen[key] = r.status
                line = f"{stamp} {r.stage} / {r.action}: {r.status}"
                if r.summary and r.status != "InProgress":
                    line += f" - {r.summary}"
                self.console.print(line, soft_wrap=True, highlight=False, markup=False)
        if snap.status != self.last_status:
            self.last_status = snap.status
            self.console.print(
                f"{stamp} execution: {snap.status}", soft_wrap=True, highlight=False, markup=False
            )


# ------------------------------------------------------------------ the demo


@dataclass
class Demo:
    stack: DevStack
    console: Console
    layout: Layout
    definition: Path
    declaration: dict[str, Any]
    timeout: float
    started: float

    def __post_init__(self) -> None:
        self.client = ConveyorClient(self.stack.api_url)
        self.s3 = s3_client(self.stack.env)

    # -- output helpers
    def say(self, text: str = "", style: str | None = None) -> None:
        self.console.print(text, style=style, soft_wrap=True, highlight=False, markup=False)

    def step(self, text: str) -> None:
        elapsed = time.monotonic() - self.started
        self.console.print(
            Text.assemble(("==> ", "bold blue"), (text, "bold"), (f"  [{elapsed:.1f}s]", "dim")),
            soft_wrap=True,
        )

    # -- health
    def check_processes(self) -> None:
        """A process that died explains a stall better than any timeout would."""
        for svc in self.stack.services:
            if svc.process is not None and not svc.running():
                raise DemoError(
                    f"process {svc.name!r} exited with code {svc.process.returncode}",
                    [svc.name],
                )

    # -- steps
    def prepare_buckets(self) -> None:
        lay = self.layout
        region = self.stack.env["CONVEYOR_S3_REGION"]
        self.step("Creating buckets")
        if lay.source_bucket is not None:
            create_bucket(self.s3, lay.source_bucket, region, versioned=True)
            self.say(f"    s3://{lay.source_bucket}  (source, versioned)")
        for bucket in lay.deploy_buckets:
            create_bucket(self.s3, bucket, region)
            self.say(f"    s3://{bucket}  (deploy target)")

    def upload_source(self) -> str:
        lay = self.layout
        if lay.source_repository is not None:
            self.step(
                f"Source: {APP_DIR.relative_to(REPO)} committed to git repository "
                f"{lay.source_repository}, branch {lay.source_branch}"
            )
            base = self.stack.env.get("CONVEYOR_GIT_BASE_URL")
            self.say(f"    {base}/{lay.source_repository}.git")
            return ""
        assert lay.source_bucket is not None and lay.source_key is not None
        data, names = zip_app(APP_DIR)
        version_file = APP_DIR / "VERSION"
        app_version = version_file.read_text().strip() if version_file.exists() else "?"
        self.step(
            f"Uploading {APP_DIR.relative_to(REPO)} as s3://{lay.source_bucket}/{lay.source_key}"
        )
        out = self.s3.put_object(
            Bucket=lay.source_bucket,
            Key=lay.source_key,
            Body=data,
            ContentType="application/zip",
            Metadata={REVISION_SUMMARY_KEY: f"sample app {app_version}"},
        )
        self.say(f"    {len(names)} files, {len(data)} bytes: {', '.join(names)}")
        self.say(f"    version id {out.get('VersionId') or '-'}")
        return app_version

    def create_pipeline(self) -> bool:
        """Create the pipeline (update it if a Redis you run yourself has it already);
        whether it was created, which on AWS, and here by default, starts an execution."""
        self.step(f"Creating pipeline {self.layout.name} from {_shown(self.definition)}")
        created = True
        try:
            decl = self.client.create_pipeline(self.declaration)
            self.say(f"    created (version {decl.get('version', 1)})")
        except ClientError as exc:
            if error_code(exc) != "PipelineNameInUseException":
                raise
            created = False
            decl = self.client.update_pipeline(self.declaration)  # a Redis you run yourself
            self.say(f"    already existed: updated to version {decl.get('version')}")
        if self.layout.artifact_bucket:
            self.say(f"    artifact store s3://{self.layout.artifact_bucket}")
        return created

    def start_execution(self, created: bool) -> str:
        """Follow the execution CreatePipeline started; start one only when there is none
        (the pipeline already existed, or the server does not start on create)."""
        name = self.layout.name
        execution_id = self.client.created_execution(name) if created else None
        if execution_id is not None:
            self.step(f"CreatePipeline started execution {execution_id} (as on AWS)")
            return execution_id
        # Not client.start_execution(name): it sends ``variables=[]``, which botocore rejects
        # (minimum length 1); boto3 directly, with no variables at all, is what a user does.
        out = self.client.cp.start_pipeline_execution(name=name)
        execution_id = str(out["pipelineExecutionId"])
        self.step(f"Started execution {execution_id}")
        return execution_id

    def watch(
        self,
        progress: Progress,
        execution_id: str,
        until: Callable[[Snapshot], bool],
        timeout: float | None,
        what: str,
    ) -> Snapshot:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            self.check_processes()
            snap = snapshot(self.client, self.layout.name, execution_id)
            progress.update(snap)
            if snap.status in TERMINAL or until(snap):
                return snap
            if deadline is not None and time.monotonic() >= deadline:
                raise DemoError(
                    f"execution {execution_id} did not {what} within {timeout:g}s "
                    f"(still {snap.status}; raise DEMO_TIMEOUT to wait longer)",
                    ["engine", "providers", "beat"],
                )
            time.sleep(POLL_SECONDS)

    def approval_command(self, verb: str, summary: str) -> str:
        """The exact shell command a person runs to answer the approval (``verb``)."""
        stage, action = self.layout.approval
        target = " ".join(shlex.quote(a) for a in (self.layout.name, stage, action))
        return (
            f"CONVEYOR_API_URL={self.stack.api_url} {conveyor_executable()} "
            f'approvals {verb} {target} --summary "{summary}"'
        )

    def at_the_gate(self) -> None:
        lay = self.layout
        stage, action = lay.approval
        staged = list_objects(self.s3, lay.staging_bucket)
        self.step(f"Waiting at the approval gate {stage} / {action}")
        self.say(
            f"    staging is deployed: s3://{lay.staging_bucket}/ holds "
            + ", ".join(o["Key"] for o in staged)
        )
        self.say("    To approve the release to production, run (from the repository root):")
        self.say()
        self.console.print(
            "    " + self.approval_command("approve", "looks good"),
            soft_wrap=True,
            highlight=False,
            markup=False,
            style="bold yellow",
        )
        self.say()
        self.say("    or reject it:")
        self.say("    " + self.approval_command("reject", "not yet"))
        self.say(f"    (list what waits: {conveyor_executable()} approvals list)")

    def answer(self, progress: Progress, execution_id: str) -> None:
        stage, action = self.layout.approval
        if _flag("DEMO_INTERACTIVE"):
            self.step("DEMO_INTERACTIVE=1: waiting for you to approve or reject (Ctrl-C aborts)")

            def answered(snap: Snapshot) -> bool:
                row = snap.row(stage, action)
                return row is not None and row.status != "InProgress"

            with progress:
                snap = self.watch(progress, execution_id, answered, None, "get an answer")
            row = snap.row(stage, action)
            verdict = {"Succeeded": "approved", "Failed": "rejected"}.get(
                row.status if row and row.status else "", snap.status
            )
            self.say(f"    {verdict}" + (f": {row.summary}" if row and row.summary else ""))
            return
        self.step("Approving it (non-interactive; DEMO_INTERACTIVE=1 lets you answer yourself)")
        self.client.approve(self.layout.name, stage, action, summary="approved by examples/demo.py")
        self.say(f"    approved {self.layout.name}/{stage}/{action}")

    def report(self, execution_id: str, final: Snapshot) -> None:
        lay = self.layout
        env = self.stack.env
        endpoint = env["CONVEYOR_S3_ENDPOINT_URL"]
        self.step(f"Execution {execution_id}: {final.status}")
        # Plain lines, not tables: bucket keys are what a reader copies, never truncate them.
        self.say("    Artifacts (ListActionExecutions):")
        logs: list[tuple[str, str]] = []
        for d in self.client.list_action_executions(lay.name, execution_id):
            output = d.get("output") or {}
            who = f"{d['stageName']} / {d['actionName']}"
            for art in output.get("outputArtifacts", []):
                loc = art["s3location"]
                size = self._size(loc["bucket"], loc["key"])
                self.say(
                    f"      {art['name']:<14} s3://{loc['bucket']}/{loc['key']}  "
                    f"({size} bytes, from {who})"
                )
            url = (output.get("executionResult") or {}).get("externalExecutionUrl")
            if url and str(url).startswith("s3://"):
                logs.append((who, str(url)))
        self.say("    Action logs:")
        width = max((len(who) for who, _ in logs), default=0)
        for who, url in logs:
            self.say(f"      {who:<{width}}  {url}")

        deployed = list_objects(self.s3, lay.production_bucket)
        if not deployed:
            raise DemoError(f"the execution succeeded but s3://{lay.production_bucket}/ is empty")
        self.say(f"    Deployed to production, s3://{lay.production_bucket}/:")
        for obj in deployed:
            self.say(f"      {obj.get('Size', ''):>8}  {obj['Key']}")

        creds = (
            f"AWS_ACCESS_KEY_ID={env['CONVEYOR_S3_ACCESS_KEY_ID']} "
            f"AWS_SECRET_ACCESS_KEY={env['CONVEYOR_S3_SECRET_ACCESS_KEY']} "
            f"AWS_DEFAULT_REGION={env['CONVEYOR_S3_REGION']}"
        )
        self.say(f"    S3 endpoint   {endpoint}")
        self.say(
            f"    browse it     {creds} aws s3 ls --recursive --endpoint-url {endpoint} "
            f"s3://{lay.production_bucket}/"
        )
        self.say(
            f"    the page      {creds} aws s3 cp --endpoint-url {endpoint} "
            f"s3://{lay.production_bucket}/index.html -"
        )
        self.say(
            f"    the pipeline  AWS_ACCESS_KEY_ID=x AWS_SECRET_ACCESS_KEY=x aws codepipeline "
            f"--endpoint-url {self.stack.api_url} --region us-east-1 get-pipeline-state "
            f"--name {shlex.quote(lay.name)}"
        )
        if self.stack.flower_url:
            up = _wait(lambda: http_answers(self.stack.flower_url or ""), 10)
            self.say(
                f"    Flower        {self.stack.flower_url}"
                + ("" if up else "  (not answering yet)")
            )
        self.say(f"    process logs  {_shown(self.stack.workdir)}")

    def _size(self, bucket: str, key: str) -> str:
        try:
            return str(self.s3.head_object(Bucket=bucket, Key=key)["ContentLength"])
        except ClientError as exc:
            raise DemoError(
                f"artifact s3://{bucket}/{key} is missing: {describe_error(exc)}"
            ) from exc

    def run(self) -> None:
        self.prepare_buckets()
        self.upload_source()
        execution_id = self.start_execution(self.create_pipeline())
        name = self.layout.name
        progress = Progress(self.console, name, self.started)
        with progress:
            snap = self.watch(
                progress,
                execution_id,
                lambda s: any(r.waiting_for_approval for r in s.rows),
                self.timeout,
                "reach the approval gate",
            )
        if snap.status in TERMINAL:
            raise self.failure(execution_id, snap)
        self.at_the_gate()
        self.answer(progress, execution_id)
        with progress:
            final = self.watch(progress, execution_id, lambda s: False, self.timeout, "finish")
        if final.status != "Succeeded":
            raise self.failure(execution_id, final)
        self.report(execution_id, final)

    def failure(self, execution_id: str, snap: Snapshot) -> DemoError:
        lines = [f"execution {execution_id} ended {snap.status}"]
        details: list[tuple[str, str]] = []
        rejected = False
        for d in self.client.list_action_executions(self.layout.name, execution_id):
            if d.get("status") in ("Failed", "Abandoned"):
                if (d["stageName"], d["actionName"]) == self.layout.approval:
                    rejected = True  # a person's answer, not a fault: no logs to dig through
                result = (d.get("output") or {}).get("executionResult") or {}
                err = result.get("errorDetails") or {}
                why = str(err.get("message") or result.get("externalExecutionSummary") or "")
                code = str(err.get("code") or "")
                if code and not why.startswith(code):
                    why = f"{code}: {why}"
                lines.append(f"  {d['stageName']} / {d['actionName']}: {d['status']}: {why}")
                url = str(result.get("externalExecutionUrl") or "")
                if url:
                    lines.append(f"    log: {url}")
                if url.startswith("s3://"):
                    details.append((f"last {LOG_TAIL_LINES} lines of {url}", self._tail_s3(url)))
        if len(lines) == 1 and snap.execution.get("statusSummary"):
            lines.append(f"  {snap.execution['statusSummary']}")
        if rejected and not details:
            lines.append(
                f"  the release was rejected at the approval gate; nothing reached "
                f"s3://{self.layout.production_bucket}/"
            )
            return DemoError("\n".join(lines))
        return DemoError("\n".join(lines), ["providers", "engine"], details)

    def _tail_s3(self, url: str) -> str:
        """The end of an action's log, which says more about its failure than the worker's."""
        bucket, _, key = url.removeprefix("s3://").partition("/")
        try:
            body = self.s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        except (ClientError, BotoCoreError) as exc:
            return f"(cannot read it: {describe_error(exc)})"
        return "\n".join(body.decode("utf-8", "replace").splitlines()[-LOG_TAIL_LINES:])


# ------------------------------------------------------------------ helpers


def conveyor_executable() -> str:
    """The ``conveyor`` script of this interpreter, as a person in the current directory
    would type it (``.venv/bin/conveyor`` from the repository root)."""
    script = Path(sys.executable).parent / "conveyor"  # not resolved: keep the venv's path
    if not script.exists():
        return f"{shlex.quote(sys.executable)} -m workers.cli"
    return shlex.quote(_shown(script))


def _shown(path: Path) -> str:
    """``path`` relative to the current directory when it is below it, else absolute."""
    try:
        return str(path.absolute().relative_to(Path.cwd()))
    except ValueError:
        return str(path.absolute())


def _wait(check: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.2)
    return True


def _print_failure(console: Console, error: DemoError, stack: DevStack | None) -> None:
    console.print(Text(f"demo failed: {error.message}", style="bold red"), soft_wrap=True)
    for title, text in error.details:
        console.print(Text(f"--- {title}", style="bold"), soft_wrap=True)
        console.print(text or "(empty)", soft_wrap=True, markup=False, highlight=False)
    if stack is None:
        return
    by_name: dict[str, Service] = {s.name: s for s in stack.services}
    # With an action's own log shown, the workers' logs are context: keep them short.
    lines = LOG_TAIL_LINES // 2 if error.details else LOG_TAIL_LINES
    for name in error.logs:
        svc = by_name.get(name)
        if svc is None or svc.log_path is None:
            continue
        console.print(
            Text(f"--- last {lines} lines of {name} ({svc.log_path})", style="bold"),
            soft_wrap=True,
        )
        console.print(svc.tail(lines) or "(empty)", soft_wrap=True, markup=False, highlight=False)


def _terminate(signum: int, frame: FrameType | None) -> None:
    """SIGTERM (a CI timeout, a test harness) stops the stack like Ctrl-C does."""
    raise KeyboardInterrupt


def _hold(console: Console) -> None:
    console.print("DEMO_KEEP=1: the stack keeps running; press Ctrl-C to stop it.", soft_wrap=True)
    try:
        while True:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass


def main() -> int:
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(line_buffering=True)  # live lines in CI logs and pipes
    signal.signal(signal.SIGTERM, _terminate)
    console = Console(highlight=False)
    started = time.monotonic()
    git_demo = os.environ.get("DEMO", "").strip().lower() == "git"
    default = GIT_PIPELINE if git_demo else DEFAULT_PIPELINE
    definition = Path(os.environ.get("DEMO_PIPELINE") or default)
    timeout = float(os.environ.get("DEMO_TIMEOUT") or 120)
    workdir = Path(
        os.environ.get("DEMO_WORKDIR")
        or REPO / ".conveyor" / f"demo-{time.strftime('%Y%m%d-%H%M%S')}"
    )
    stack: DevStack | None = None
    code = 1
    try:
        declaration = load_definition(definition)
        declaration.setdefault("roleArn", PLACEHOLDER_ROLE_ARN)
        layout = read_layout(declaration)
        console.print(Text("Conveyor demo: the reference pipeline, end to end", style="bold"))
        if layout.source_repository is not None:
            # Before the stack starts, so its workers inherit where the repository is.
            git_root = workdir / "git"
            commit = commit_app(APP_DIR, git_root, layout.source_repository, layout.source_branch)
            os.environ["CONVEYOR_GIT_BASE_URL"] = str(git_root.absolute())
            console.print(
                f"==> Committed {APP_DIR.relative_to(REPO)} to {git_root}/"
                f"{layout.source_repository}.git as {commit}",
                soft_wrap=True,
                highlight=False,
                markup=False,
            )
        console.print(Text("==> Starting the local stack", style="bold"))
        stack = run_dev_stack(workdir, with_flower=True)
        Demo(stack, console, layout, definition, declaration, timeout, started).run()
        console.print(
            Text(f"Succeeded in {time.monotonic() - started:.1f}s.", style="bold green"),
            soft_wrap=True,
        )
        code = 0
    except DemoError as exc:
        _print_failure(console, exc, stack)
    except (ClientError, BotoCoreError) as exc:
        _print_failure(console, DemoError(describe_error(exc), ["api"]), stack)
    except KeyboardInterrupt:
        console.print("interrupted", style="yellow")
        code = 130
    except Exception as exc:  # the stack did not start, a definition did not parse, a bug
        message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
        if stack is not None and not isinstance(exc, OSError):
            console.print(traceback.format_exc(), markup=False, highlight=False)
        _print_failure(console, DemoError(message, ["api", "engine"]), stack)
    finally:
        if stack is not None:
            if _flag("DEMO_KEEP") and code != 130:
                _hold(console)
            console.print("==> Stopping the stack", soft_wrap=True)
            # A second Ctrl-C or SIGTERM must not cut the shutdown short and orphan workers.
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            stack.stop()
    return code


if __name__ == "__main__":
    sys.exit(main())
