"""Every Redis key and Celery queue name Conveyor uses, in one place."""

from __future__ import annotations

PREFIX = "conveyor"

# ---------------------------------------------------------------------------- Celery queues

ENGINE_QUEUE = "conveyor.engine"
ENGINE_TASK = "conveyor.engine.advance"
# Stage-condition rules that run commands go to build workers, like a CodeBuild action.
COMMANDS_RULE_QUEUE = "conveyor.rule.commands"
# LambdaInvoke rules run their handler on invoke workers, like a Lambda action.
LAMBDA_RULE_QUEUE = "conveyor.rule.lambdainvoke"
# CodeBuild rules run the buildspec runner on build workers, like a CodeBuild action.
CODEBUILD_RULE_QUEUE = "conveyor.rule.codebuild"
# Actions of job-worker action types (Custom, ThirdParty) wait for their job workers on
# invoke workers, whatever their category (waiting is all such a task does).
JOB_WORKER_QUEUE = "conveyor.custom.jobworker"

POOLS: dict[str, tuple[str, ...]] = {
    "engine": ("engine",),
    "source": ("source",),
    # Compute (Commands) actions run the build runner, so build workers take them.
    "build": ("build", "compute"),
    "test": ("test",),
    "deploy": ("deploy",),
    "invoke": ("invoke",),
    "all": ("engine", "source", "build", "test", "deploy", "invoke", "compute"),
}


def provider_queue(category: str, provider: str) -> str:
    """The queue (and task name) of one provider: ``conveyor.build.codebuild``."""
    return f"{PREFIX}.{category.lower()}.{provider.lower()}"


# ---------------------------------------------------------------------------- pipelines

PIPELINES = f"{PREFIX}:pipelines"  # set of names


def pipeline(name: str) -> str:
    """Hash: ``current`` (latest version), ``digest`` (of the latest), ``created``,
    ``updated``, and per version N ``v<N>`` (definition JSON) and ``h<N>`` (its SHA-256)."""
    return f"{PREFIX}:pipeline:{name}"


def pipeline_executions(name: str) -> str:
    """Sorted set of execution ids scored by start time."""
    return f"{PREFIX}:pipeline:{name}:executions"


def tokens(name: str) -> str:
    """Hash: clientRequestToken -> the execution it started (idempotent starts)."""
    return f"{PREFIX}:pipeline:{name}:tokens"


def tokens_order(name: str) -> str:
    """List of the tokens in ``tokens`` oldest first, so the oldest can be forgotten."""
    return f"{PREFIX}:pipeline:{name}:tokens:order"


def approvals(name: str) -> str:
    """Hash: approval token -> the execution that issued it (PutApprovalResult's lookup)."""
    return f"{PREFIX}:pipeline:{name}:approvals"


def source_revisions(pipeline: str) -> str:
    """Hash: ``<stage>/<action>`` -> the last revision seen of that source action (JSON)."""
    return f"{PREFIX}:pipeline:{pipeline}:sources"


def pipeline_lock(name: str) -> str:
    """String with TTL: held while a contended transition of the pipeline runs."""
    return f"{PREFIX}:pipeline:{name}:lock"


# ---------------------------------------------------------------------------- executions


def run(name: str) -> str:
    """String: the pipeline's run record (stage locks, transitions, active execution ids)."""
    return f"{PREFIX}:run:{name}"


def execution(execution_id: str) -> str:
    """String: the execution record (JSON), written only by compare-and-set."""
    return f"{PREFIX}:execution:{execution_id}"


def result(member: str) -> str:
    """String: a worker's recorded result for one attempt (WorkItem member)."""
    return f"{PREFIX}:result:{member}"


# Deadlines: member JSON [pipeline, execution id] -> the execution's next deadline (seconds).
TIMERS = f"{PREFIX}:timers"

# ---------------------------------------------------------------------------- leases

LEASES = f"{PREFIX}:leases"  # sorted set: WorkItem member -> lease expiry (ms, Redis clock)
LEASE_HOLDERS = f"{PREFIX}:leases:holders"  # hash: WorkItem member -> holder id
# Sorted set: dispatched attempts no worker has claimed yet -> when to look for them (ms).
CLAIMS = f"{PREFIX}:claims"
# Hash: WorkItem member -> times the sweep found it unclaimed with its queue not empty.
CLAIM_CHECKS = f"{PREFIX}:claims:checks"

# ---------------------------------------------------------------------------- outbox

OUTBOX = f"{PREFIX}:outbox"  # hash: entry id -> effect JSON
OUTBOX_DUE = f"{PREFIX}:outbox:due"  # sorted set: entry id -> when it was written (ms)
OUTBOX_DEAD = f"{PREFIX}:outbox:dead"  # hash: entry id -> what could not be read, and why

# ---------------------------------------------------------------------------- jobs


def job(job_id: str) -> str:
    """Hash: one job of CodePipeline's job API (a Lambda invocation): ``data`` (JobData
    JSON), ``owner`` (the attempt it belongs to, JSON), ``status``, ``nonce``, ``result``
    (the PutJob*Result request, JSON). Expires: see engine.store.jobs."""
    return f"{PREFIX}:job:{job_id}"


def job_queue(action_type: str) -> str:
    """List: ids of the queued jobs of one job-worker action type (``Owner/Category/
    Provider/Version``), oldest first, waiting for PollForJobs."""
    return f"{PREFIX}:jobs:queue:{action_type}"


def job_claims(action_type: str) -> str:
    """Sorted set: claimed, unacknowledged jobs of one action type -> when the claim ends
    (ms, Redis clock); an ended claim goes back to the queue."""
    return f"{PREFIX}:jobs:claims:{action_type}"


# Hash: ``Owner/Category/Provider/Version`` -> a job-worker action type's record (JSON).
ACTION_TYPES = f"{PREFIX}:action-types"


def action_type_tags(type_key: str) -> str:
    """Hash: tag key -> value of one custom action type."""
    return f"{PREFIX}:action-type:{type_key}:tags"


def artifact_credentials(access_key_id: str) -> str:
    """String with TTL: what one job's temporary artifact credentials may do (JSON)."""
    return f"{PREFIX}:s3-credentials:{access_key_id}"


def action_progress(action_execution_id: str) -> str:
    """String with TTL: the ``executionDetails`` a job worker reported with its last
    continuation (summary, externalExecutionId, percentComplete), shown while the action runs."""
    return f"{PREFIX}:action-progress:{action_execution_id}"


def job_done(job_id: str) -> str:
    """List: pushed once when the job's result is recorded, to wake its waiting worker."""
    return f"{PREFIX}:job:{job_id}:done"


# ---------------------------------------------------------------------------- events, stats

EVENTS = f"{PREFIX}:events"  # stream of EventBridge-shaped events
CAS_RETRIES = f"{PREFIX}:stats:cas_retries"  # counter: compare-and-set conflicts
AUDIT = f"{PREFIX}:audit"  # stream: one record per API request that changed or was refused
AUDIT_FAILURES = f"{PREFIX}:stats:audit_failures"  # counter: audit records not written

# ---------------------------------------------------------------------------- webhooks


def webhook_delivery(host: str, delivery_id: str) -> str:
    """String with TTL: a webhook delivery already received (replays are refused)."""
    return f"{PREFIX}:webhook:delivery:{host}:{delivery_id}"


# Hash: webhook name -> its record (JSON: definition, url id, created, last triggered, last
# error), for PutWebhook / ListWebhooks / DeleteWebhook.
WEBHOOKS = f"{PREFIX}:webhooks"
# Hash: the id in a webhook's url (``/webhooks/v1/<id>``) -> the webhook's name.
WEBHOOK_URLS = f"{PREFIX}:webhooks:urls"


# ---------------------------------------------------------------------------- tags


def pipeline_tags(name: str) -> str:
    """Hash: tag key -> value of one pipeline (deleted with the pipeline)."""
    return f"{PREFIX}:pipeline:{name}:tags"


def webhook_tags(name: str) -> str:
    """Hash: tag key -> value of one webhook (deleted with the webhook)."""
    return f"{PREFIX}:webhook:{name}:tags"


def action_revisions(pipeline: str) -> str:
    """Hash: ``<stage>/<action>`` -> the revision id last pushed with PutActionRevision."""
    return f"{PREFIX}:pipeline:{pipeline}:action-revisions"
