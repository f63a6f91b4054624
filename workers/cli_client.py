"""``conveyor pipelines|executions|stages|rules|approvals``: the API's client side of the CLI.

Every command goes through :class:`engine.client.ConveyorClient` (boto3 underneath), so the
CLI exercises the same HTTP API as users' own scripts and never reads Redis directly. The
endpoint comes from ``--endpoint`` (on the root command or any of these groups) or
``$CONVEYOR_API_URL``. Failures print ``error: <AWS code>: <message>`` and exit 1: a person
at a terminal wants the reason, not a traceback.
"""

from __future__ import annotations

import json
import re
import sys
import time
from datetime import UTC, datetime
from typing import Any

import click
from botocore.exceptions import BotoCoreError, ClientError
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from engine.client import ENDPOINT_ENV, TERMINAL, ConveyorClient, describe_error, waiting_in
from engine.errors import ConveyorError

ENDPOINT_META = "conveyor.endpoint"
STATUS_STYLE = {
    "InProgress": "bold cyan",
    "Stopping": "yellow",
    "Succeeded": "green",
    "Failed": "bold red",
    "Stopped": "yellow",
    "Abandoned": "yellow",
    "Superseded": "dim",
    "Cancelled": "dim",
    "Skipped": "dim italic",
    "Overridden": "yellow",
}


# ---------------------------------------------------------------------------- plumbing


class _Command(click.Command):
    """Turns the errors a user can cause into one line on stderr and exit status 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ConveyorError as exc:  # a definition file that does not parse or validate
            _fail(f"{exc.aws_code}: {exc.message}")
        except (ClientError, BotoCoreError) as exc:
            _fail(describe_error(exc))
        except (OSError, ValueError, TimeoutError) as exc:
            _fail(str(exc))


def _fail(message: str) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(1)


def _remember_endpoint(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    """Keep the endpoint in ``ctx.meta`` (shared by nested contexts); an explicit flag on an
    inner group wins over the root's, the environment never overrides a flag."""
    if not value:
        return
    from_env = ctx.get_parameter_source(param.name or "") is click.core.ParameterSource.ENVIRONMENT
    if from_env and ENDPOINT_META in ctx.meta:
        return
    ctx.meta[ENDPOINT_META] = value


def _endpoint_option() -> click.Option:
    return click.Option(
        ["--endpoint"],
        envvar=ENDPOINT_ENV,
        expose_value=False,
        is_eager=True,
        callback=_remember_endpoint,
        help=f"Conveyor API URL [env: {ENDPOINT_ENV}; default http://127.0.0.1:8484]",
    )


def _client() -> ConveyorClient:
    ctx = click.get_current_context()
    return ConveyorClient(ctx.meta.get(ENDPOINT_META))


class _Group(click.Group):
    command_class = _Command


def _group(name: str, help_text: str) -> click.Group:
    group = _Group(name, help=help_text)
    group.params.append(_endpoint_option())
    return group


def _console() -> Console:
    return Console(highlight=False)  # resolves sys.stdout late, so CliRunner captures it


def _dumps(data: Any) -> str:
    def default(o: Any) -> Any:
        if isinstance(o, datetime):
            return o.isoformat()
        raise TypeError(f"cannot serialize {type(o).__name__}")

    return json.dumps(data, indent=2, default=default)


def _when(value: Any) -> str:
    if isinstance(value, datetime):
        return value.astimezone().strftime("%Y-%m-%d %H:%M:%S")
    return "" if value is None else str(value)


def _table(*columns: str, title: str | None = None, keep: int = 1) -> Table:
    """A table whose first ``keep`` columns (names, ids) never wrap, even on a narrow pipe."""
    table = Table(title=title)
    for i, name in enumerate(columns):
        table.add_column(name, no_wrap=i < keep)
    return table


def _status(status: str | None) -> Text:
    return Text(status or "-", style=STATUS_STYLE.get(status or "", "dim"))


# ---------------------------------------------------------------------------- pipelines

pipelines = _group("pipelines", "Create, inspect and delete pipelines.")


@pipelines.command("create")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
def pipelines_create(file: str) -> None:
    """Create a pipeline from a CodePipeline JSON/YAML file or a CloudFormation template."""
    client = _client()
    decl = client.create_pipeline(file)
    click.echo(f"created pipeline {decl['name']} (version {decl.get('version', 1)})")
    started = client.created_execution(decl["name"])
    if started is not None:
        click.echo(f"started execution {started} (trigger CreatePipeline)")


@pipelines.command("update")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
def pipelines_update(file: str) -> None:
    """Replace a pipeline's definition; running executions keep the version they started with."""
    decl = _client().update_pipeline(file)
    click.echo(f"updated pipeline {decl['name']} (version {decl.get('version')})")


@pipelines.command("get")
@click.argument("name")
@click.option("--version", type=int, help="A past version (default: the current one).")
def pipelines_get(name: str, version: int | None) -> None:
    """Print the definition as ``aws codepipeline get-pipeline`` does (re-usable by update)."""
    click.echo(_dumps(_client().get_pipeline(name, version)))


@pipelines.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def pipelines_list(as_json: bool) -> None:
    """List pipelines."""
    rows = _client().list_pipelines()
    if as_json:
        click.echo(_dumps(rows))
        return
    table = _table("name", "version", "type", "mode", "updated")
    for p in rows:
        table.add_row(
            p["name"],
            str(p.get("version", "")),
            p.get("pipelineType", ""),
            p.get("executionMode", ""),
            _when(p.get("updated")),
        )
    _console().print(table)


@pipelines.command("delete")
@click.argument("name")
def pipelines_delete(name: str) -> None:
    """Delete a pipeline (its past executions stay readable until they expire)."""
    _client().delete_pipeline(name)
    click.echo(f"deleted pipeline {name}")


# ---------------------------------------------------------------------------- executions

executions = _group("executions", "Start, stop and watch pipeline executions.")


def _variables(pairs: tuple[str, ...]) -> dict[str, str]:
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{pair!r} is not NAME=VALUE", param_hint="--variable")
        out[key] = value
    return out


@executions.command("start")
@click.argument("name")
@click.option(
    "--variable",
    "-v",
    "variables",
    multiple=True,
    metavar="NAME=VALUE",
    help="A pipeline variable; repeatable.",
)
@click.option(
    "--client-request-token",
    help="Idempotency token: starting again with the same token prints the same id.",
)
@click.option("--watch", is_flag=True, help="Show live progress until the execution finishes.")
def executions_start(
    name: str, variables: tuple[str, ...], client_request_token: str | None, watch: bool
) -> None:
    """Start an execution of NAME; prints its id."""
    client = _client()
    execution_id = client.start_execution(
        name, _variables(variables), client_request_token=client_request_token
    )
    click.echo(execution_id)
    if watch:
        _watch(client, name, execution_id, interval=1.0, timeout=None, until_approval=False)


@executions.command("get")
@click.argument("name")
@click.argument("execution_id")
def executions_get(name: str, execution_id: str) -> None:
    """Print one execution as GetPipelineExecution returns it."""
    click.echo(_dumps(_client().get_execution(name, execution_id)))


@executions.command("actions")
@click.argument("name")
@click.argument("execution_id")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def executions_actions(name: str, execution_id: str, as_json: bool) -> None:
    """The action executions of one execution, with each result's summary (a build's test
    totals among them), as ListActionExecutions returns them."""
    rows = _client().list_action_executions(name, execution_id)
    if as_json:
        click.echo(_dumps(rows))
        return
    table = _table("stage", "action", "status", "summary", "updated", keep=2)
    for d in sorted(rows, key=lambda r: _when(r.get("startTime"))):
        result = (d.get("output") or {}).get("executionResult") or {}
        table.add_row(
            d.get("stageName", ""),
            d.get("actionName", ""),
            _status(d.get("status")),
            result.get("externalExecutionSummary") or "",
            _when(d.get("lastUpdateTime")),
        )
    _console().print(table)


@executions.command("list")
@click.argument("name")
@click.option("--max", "max_results", type=int, default=20, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def executions_list(name: str, max_results: int, as_json: bool) -> None:
    """List NAME's executions, newest first."""
    rows = _client().list_executions(name, max_results=max_results)
    if as_json:
        click.echo(_dumps(rows))
        return
    table = _table("execution id", "status", "started", "updated", "trigger", keep=2)
    for e in rows:
        table.add_row(
            e["pipelineExecutionId"],
            _status(e.get("status")),
            _when(e.get("startTime")),
            _when(e.get("lastUpdateTime")),
            (e.get("trigger") or {}).get("triggerType", ""),
        )
    _console().print(table)


@executions.command("stop")
@click.argument("name")
@click.argument("execution_id")
@click.option("--abandon", is_flag=True, help="Do not wait for running actions to finish.")
@click.option("--reason", help="Why; recorded in the execution's stop trigger.")
def executions_stop(name: str, execution_id: str, abandon: bool, reason: str | None) -> None:
    """Stop an execution (it becomes Stopping, then Stopped)."""
    _client().stop_execution(name, execution_id, abandon=abandon, reason=reason)
    click.echo(f"stopping {execution_id}" + (" (abandoning running actions)" if abandon else ""))


@executions.command("retry")
@click.argument("name")
@click.argument("stage")
@click.argument("execution_id")
@click.option(
    "--mode",
    type=click.Choice(["FAILED_ACTIONS", "ALL_ACTIONS"]),
    default="FAILED_ACTIONS",
    show_default=True,
    help="Rerun only the failed actions, or every action of the stage.",
)
def executions_retry(name: str, stage: str, execution_id: str, mode: str) -> None:
    """Retry the failed STAGE of EXECUTION_ID (the latest execution to reach it)."""
    resumed = _client().retry_stage(name, stage, execution_id, mode)
    click.echo(f"retrying {stage} of {resumed} ({mode})")


@executions.command("watch")
@click.argument("name")
@click.argument("execution_id")
@click.option("--interval", type=float, default=1.0, show_default=True, help="Seconds per refresh.")
@click.option("--timeout", type=float, help="Give up (exit 1) after this many seconds.")
@click.option(
    "--until-approval", is_flag=True, help="Exit 0 once the execution waits at an approval."
)
def executions_watch(
    name: str, execution_id: str, interval: float, timeout: float | None, until_approval: bool
) -> None:
    """Live progress of one execution; exits 0 if it succeeds, 1 otherwise."""
    _watch(
        _client(),
        name,
        execution_id,
        interval=interval,
        timeout=timeout,
        until_approval=until_approval,
    )


def _progress(
    client: ConveyorClient, name: str, execution_id: str
) -> tuple[dict[str, Any], Table, list[tuple[str, str]], tuple[str, str] | None]:
    """The execution, a table of its stages/actions, the approvals it waits at, and where it
    waits to enter a stage (and why), if it does."""
    execution = client.get_execution(name, execution_id)
    decl = client.get_pipeline(name, execution.get("pipelineVersion"))["pipeline"]
    details = {
        (d["stageName"], d["actionName"]): d
        for d in client.list_action_executions(name, execution_id)
    }
    state = client.pipeline_state(name)
    # GetPipelineState knows a stage's status only for the latest execution to enter it.
    stage_status = {
        s["stageName"]: s["latestExecution"]["status"]
        for s in state.get("stageStates", [])
        if (s.get("latestExecution") or {}).get("pipelineExecutionId") == execution_id
    }
    table = _table(
        "stage",
        "stage status",
        "action",
        "status",
        "summary",
        title=f"{name} · {execution_id}",
        keep=4,
    )
    waiting: list[tuple[str, str]] = []
    for stage in decl.get("stages", []):
        for i, action in enumerate(stage.get("actions", [])):
            d = details.get((stage["name"], action["name"]), {})
            status = d.get("status")
            result = (d.get("output") or {}).get("executionResult") or {}
            summary = (
                result.get("externalExecutionSummary") or result.get("externalExecutionUrl") or ""
            )
            first = i == 0
            table.add_row(
                stage["name"] if first else "",
                _status(stage_status.get(stage["name"])) if first else Text(""),
                action["name"],
                _status(status),
                summary,
            )
            if status == "InProgress" and action["actionTypeId"]["category"] == "Approval":
                waiting.append((stage["name"], action["name"]))
    return execution, table, waiting, waiting_in(state, execution_id)


def _watch(
    client: ConveyorClient,
    name: str,
    execution_id: str,
    *,
    interval: float,
    timeout: float | None,
    until_approval: bool,
) -> None:
    deadline = None if timeout is None else time.monotonic() + timeout
    console = _console()
    with Live(console=console, auto_refresh=False) as live:
        while True:
            execution, table, waiting, parked = _progress(client, name, execution_id)
            status = execution["status"]
            footer = [Text.assemble("execution: ", _status(status))]
            if execution.get("statusSummary"):
                footer.append(Text(execution["statusSummary"]))
            if parked is not None and status not in TERMINAL:
                footer.append(Text(f"waiting at {parked[0]} ({parked[1]})", style="bold yellow"))
            for stage, action in waiting:
                footer.append(
                    Text(
                        f"waiting for approval: conveyor approvals approve {name} {stage} {action} "
                        '--summary "..."  (or reject)',
                        style="bold yellow",
                    )
                )
            live.update(Group(table, *footer), refresh=True)
            if status in TERMINAL or (until_approval and waiting):
                break
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"execution {execution_id} still {status} after {timeout:g}s")
            time.sleep(interval)
    if status not in ("Succeeded",) and not (until_approval and waiting):
        sys.exit(1)


# ---------------------------------------------------------------------------- stages

stages = _group("stages", "Transitions, rollbacks and condition overrides of stages.")


@stages.command("disable")
@click.argument("name")
@click.argument("stage")
@click.option("--reason", required=True, help="Why; shown in the pipeline state.")
@click.option(
    "--outbound", is_flag=True, help="Disable the transition out of STAGE instead of into it."
)
def stages_disable(name: str, stage: str, reason: str, outbound: bool) -> None:
    """Hold executions at STAGE's inbound (or outbound) transition."""
    kind = "Outbound" if outbound else "Inbound"
    _client().disable_transition(name, stage, reason, transition_type=kind)
    click.echo(f"disabled the {kind.lower()} transition of {name}/{stage}")


@stages.command("enable")
@click.argument("name")
@click.argument("stage")
@click.option(
    "--outbound", is_flag=True, help="Enable the transition out of STAGE instead of into it."
)
def stages_enable(name: str, stage: str, outbound: bool) -> None:
    """Let executions through STAGE's inbound (or outbound) transition again."""
    kind = "Outbound" if outbound else "Inbound"
    _client().enable_transition(name, stage, transition_type=kind)
    click.echo(f"enabled the {kind.lower()} transition of {name}/{stage}")


@stages.command("rollback")
@click.argument("name")
@click.argument("stage")
@click.option(
    "--target",
    "target",
    required=True,
    metavar="ID",
    help="The earlier execution whose artifacts and variables STAGE redeploys.",
)
def stages_rollback(name: str, stage: str, target: str) -> None:
    """Roll STAGE back to what execution ID deployed; prints the rollback execution's id."""
    click.echo(_client().rollback_stage(name, stage, target))


@stages.command("override")
@click.argument("name")
@click.argument("stage")
@click.argument("execution_id")
@click.option(
    "--condition",
    type=click.Choice(["BEFORE_ENTRY", "ON_SUCCESS"]),
    required=True,
    help="Which condition of STAGE to stop waiting for.",
)
def stages_override(name: str, stage: str, execution_id: str, condition: str) -> None:
    """Override the STAGE condition EXECUTION_ID is being held by."""
    _client().override_condition(name, stage, execution_id, condition)
    click.echo(f"overrode the {condition} condition of {name}/{stage} for {execution_id}")


# ---------------------------------------------------------------------------- rules

rules = _group("rules", "Rule types for stage conditions, and their runs.")


@rules.command("types")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def rules_types(as_json: bool) -> None:
    """The rule types stage conditions can use."""
    rows = _client().list_rule_types()
    if as_json:
        click.echo(_dumps(rows))
        return
    table = _table("provider", "version", "configuration", "input artifacts", keep=2)
    for r in rows:
        props = [
            p["name"] + ("" if p.get("required") else "?")
            for p in r.get("ruleConfigurationProperties", [])
        ]
        arts = r.get("inputArtifactDetails") or {}
        table.add_row(
            r["id"]["provider"],
            r["id"].get("version", ""),
            ", ".join(props),
            f"{arts.get('minimumCount', 0)}-{arts.get('maximumCount', 0)}",
        )
    _console().print(table)


@rules.command("executions")
@click.argument("name")
@click.argument("execution_id", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def rules_executions(name: str, execution_id: str | None, as_json: bool) -> None:
    """Rule runs of NAME's stage conditions (of one execution if ID is given), newest first."""
    rows = _client().list_rule_executions(name, execution_id)
    if as_json:
        click.echo(_dumps(rows))
        return
    table = _table("execution id", "stage", "rule", "status", "summary", "updated", keep=3)
    for r in rows:
        result = (r.get("output") or {}).get("executionResult") or {}
        table.add_row(
            r.get("pipelineExecutionId", ""),
            r.get("stageName", ""),
            r.get("ruleName", ""),
            _status(r.get("status")),
            result.get("externalExecutionSummary", ""),
            _when(r.get("lastUpdateTime")),
        )
    _console().print(table)


# ---------------------------------------------------------------------------- approvals

approvals = _group("approvals", "List and answer manual approvals.")


@approvals.command("list")
@click.argument("name", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def approvals_list(name: str | None, as_json: bool) -> None:
    """Approvals waiting for an answer, in NAME or in every pipeline."""
    rows = _client().pending_approvals(name)
    if as_json:
        click.echo(_dumps([r.__dict__ for r in rows]))
        return
    table = _table("pipeline", "stage", "action", "execution id", "since", "custom data", keep=4)
    for r in rows:
        since = datetime.fromtimestamp(r.since) if r.since is not None else None
        table.add_row(
            r.pipeline, r.stage, r.action, r.execution_id or "", _when(since), r.custom_data or ""
        )
    _console().print(table)


def _answer_options(fn: Any) -> Any:
    for decorator in reversed(
        [
            click.argument("name"),
            click.argument("stage"),
            click.argument("action"),
            click.option("--token", help="The approval token (default: looked up from the state)."),
            click.option("--summary", default="", help="Why; shown in the execution's history."),
        ]
    ):
        fn = decorator(fn)
    return fn


@approvals.command("approve")
@_answer_options
def approvals_approve(name: str, stage: str, action: str, token: str | None, summary: str) -> None:
    """Approve the approval waiting at STAGE/ACTION of NAME; the execution moves on."""
    _client().approve(name, stage, action, token=token, summary=summary)
    click.echo(f"approved {name}/{stage}/{action}")


@approvals.command("reject")
@_answer_options
def approvals_reject(name: str, stage: str, action: str, token: str | None, summary: str) -> None:
    """Reject the approval waiting at STAGE/ACTION of NAME; the execution fails there."""
    _client().reject(name, stage, action, token=token, summary=summary)
    click.echo(f"rejected {name}/{stage}/{action}")


# ---------------------------------------------------------------------------- audit

_DURATION = re.compile(r"^(\d+)\s*([smhdw])$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_LAST_SEQUENCE = 2**64 - 1  # a stream id's sequence part is 64 bits


def since_ms(text: str, now: float) -> int:
    """``--since``: an ISO 8601 time (no zone: UTC) or a duration ago (``90s``, ``15m``,
    ``2h``, ``7d``, ``1w``), as epoch milliseconds. ValueError says which forms work."""
    text = text.strip()
    found = _DURATION.match(text)
    if found:
        return int((now - int(found[1]) * _UNIT_SECONDS[found[2]]) * 1000)
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"--since {text!r}: give an ISO 8601 time (2026-11-29T12:00:00Z) or a duration "
            "ago (30s, 15m, 2h, 7d, 1w)"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def _audit_rows(records: list[dict[str, Any]], output: str) -> None:
    if output == "json":
        for r in records:
            click.echo(json.dumps(r, separators=(",", ":")))
        return
    if not records:
        return
    table = _table("time", "principal", "operation", "target", "outcome", "request id", keep=3)
    for r in records:
        outcome = str(r.get("outcome"))
        style = "green" if outcome == "ok" else "bold red"
        table.add_row(
            str(r.get("time", "")),
            str(r.get("principal") or "-"),
            str(r.get("operation", "")),
            str(r.get("target") or ""),
            Text(outcome, style=style),
            str(r.get("request_id") or ""),
        )
    _console().print(table)


@click.command("audit", cls=_Command)
@click.option("--pipeline", help="Only records about this pipeline.")
@click.option("--principal", help="Only records of this principal (name).")
@click.option("--operation", help="Only this operation (PutApprovalResult, ...).")
@click.option("--since", help="From this time: ISO 8601, or a duration ago (15m, 2h, 7d).")
@click.option("--limit", type=click.IntRange(1, 100_000), default=50, show_default=True)
@click.option("--follow", "-f", is_flag=True, help="Keep printing new records as they come.")
@click.option(
    "--output", "-o", type=click.Choice(["table", "json"]), default="table", show_default=True
)
def audit(
    pipeline: str | None,
    principal: str | None,
    operation: str | None,
    since: str | None,
    limit: int,
    follow: bool,
    output: str,
) -> None:
    """Who did what to which pipeline: the audit log (admins only). Without --since, the
    latest LIMIT records; with it, the first LIMIT from then on. JSON output is one record
    per line."""
    client = _client()
    filters = {"pipeline": pipeline, "principal": principal, "operation": operation}
    records: list[dict[str, Any]] = []
    if since is not None:
        cursor = f"{since_ms(since, time.time()) - 1}-{_LAST_SEQUENCE}"
        while len(records) < limit:
            page = client.audit(after=cursor, limit=min(limit - len(records), 1000), **filters)
            records += page["records"]
            cursor = page["cursor"]
            if not page["more"]:
                break
    else:
        newest = client.audit(limit=1)["records"]
        cursor = newest[0]["id"] if newest else "0"
        before: str | None = None
        while len(records) < limit:
            page = client.audit(before=before, limit=min(limit - len(records), 1000), **filters)
            records += page["records"]
            before = page["cursor"]
            if not page["more"]:
                break
        records.reverse()
    _audit_rows(records, output)
    if records:
        cursor = max(cursor, records[-1]["id"], key=_stream_order)
    while follow:
        page = client.audit(after=cursor, limit=1000, **filters)
        _audit_rows(page["records"], output)
        cursor = page["cursor"]
        if not page["more"]:
            time.sleep(1.0)


def _stream_order(stream_id: str) -> tuple[int, int]:
    ms, _, seq = stream_id.partition("-")
    return int(ms), int(seq or 0)


def register(cli: click.Group) -> None:
    """Add the client groups to the root command, with a root-level ``--endpoint`` too."""
    if not any(p.name == "endpoint" for p in cli.params):
        cli.params.append(_endpoint_option())
    for group in (pipelines, executions, stages, rules, approvals):
        cli.add_command(group)
    if not any(p.name == "endpoint" for p in audit.params):
        audit.params.append(_endpoint_option())
    cli.add_command(audit)
