"""Every Redis key and Celery queue name Conveyor uses, in one place."""

from __future__ import annotations

PREFIX = "conveyor"

# Celery queues
ENGINE_QUEUE = "conveyor.engine"
ENGINE_TASK = "conveyor.engine.advance"
SWEEP_TASK = "conveyor.engine.sweep"
# Stage-condition rules that run commands go to build workers, like a CodeBuild action.
COMMANDS_RULE_QUEUE = "conveyor.rule.commands"

POOLS: dict[str, tuple[str, ...]] = {
    "engine": ("engine",),
    "source": ("source",),
    "build": ("build",),
    "test": ("test",),
    "deploy": ("deploy",),
    "invoke": ("invoke",),
    "all": ("engine", "source", "build", "test", "deploy", "invoke"),
}


def provider_queue(category: str, provider: str) -> str:
    """The queue (and task name) of one provider: ``conveyor.build.codebuild``."""
    return f"{PREFIX}.{category.lower()}.{provider.lower()}"


# Pipelines
PIPELINES = f"{PREFIX}:pipelines"  # set of names


def pipeline(name: str) -> str:
    """Hash: field ``current`` (version number), ``v<N>`` (definition JSON), ``meta``."""
    return f"{PREFIX}:pipeline:{name}"


def pipeline_executions(name: str) -> str:
    """Sorted set of execution ids scored by start time."""
    return f"{PREFIX}:pipeline:{name}:executions"


def run(name: str) -> str:
    """String: the pipeline's run record (stage locks, transitions, active executions)."""
    return f"{PREFIX}:run:{name}"


ACTIVE_RUNS = f"{PREFIX}:runs:active"  # set of pipeline names with active executions


def execution(execution_id: str) -> str:
    """String: the execution record (JSON), written only by compare-and-set."""
    return f"{PREFIX}:execution:{execution_id}"


def result(execution_id: str, action_execution_id: str, attempt: int) -> str:
    """String: a worker's recorded result for one attempt (JSON)."""
    return f"{PREFIX}:result:{execution_id}:{action_execution_id}:{attempt}"


def lease(execution_id: str, action_execution_id: str, attempt: int) -> str:
    """String with TTL: held by the worker running that attempt."""
    return f"{PREFIX}:lease:{execution_id}:{action_execution_id}:{attempt}"


LEASES = f"{PREFIX}:leases"  # sorted set: lease member -> expiry (epoch seconds)

# Transactional outbox
OUTBOX = f"{PREFIX}:outbox"  # hash: effect id -> effect JSON
OUTBOX_DUE = f"{PREFIX}:outbox:due"  # sorted set: effect id -> time it was written

# Events
EVENTS = f"{PREFIX}:events"  # stream of EventBridge-shaped events

# Source change detection (engine.triggers)


def source_revisions(pipeline: str) -> str:
    """Hash: ``<stage>/<action>`` -> the last revision seen of that source action (JSON)."""
    return f"{PREFIX}:pipeline:{pipeline}:sources"
