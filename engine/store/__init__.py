"""Redis persistence, one module per concern.

* :mod:`.definitions` — pipelines and their versions; parsed declarations cached by digest.
* :mod:`.runs` — transitions (read -> decide -> compare-and-set), the transactional outbox,
  recorded results, and the indexes derived from each change.
* :mod:`.leases` — leases, claim deadlines and timers, judged by Redis's clock.
* :mod:`.events` — the EventBridge-shaped event stream.
* :mod:`.jobs` — jobs of CodePipeline's job API (Lambda-style handlers answer them).
* :mod:`.action_types` — job-worker action types (CreateCustomActionType, UpdateActionType).
* :mod:`.credentials` — the temporary artifact credentials handed to job workers.
* :mod:`.tags` — resource tags; :mod:`.webhooks` — PutWebhook's webhooks.
* :mod:`.connection` — the client, and Redis errors translated to the error tree.

:class:`Store` bundles them for one process.
"""

from __future__ import annotations

import redis

from engine.arns import DEFAULT_ACCOUNT, Account
from engine.execution import ActionResult
from engine.messages import Event, WorkItem, completion
from engine.scheduler import Decision
from engine.store.action_types import ActionTypeStore
from engine.store.connection import connect
from engine.store.credentials import CredentialStore
from engine.store.definitions import MAX_VERSIONS, Definitions, PipelineRecord
from engine.store.events import EventLog
from engine.store.jobs import JobStore
from engine.store.leases import Leases
from engine.store.runs import Dispatcher, Runs
from engine.store.tags import TagStore
from engine.store.webhooks import WebhookStore

__all__ = [
    "Definitions",
    "EventLog",
    "JobStore",
    "Leases",
    "PipelineRecord",
    "Runs",
    "Store",
    "TagStore",
    "WebhookStore",
]


class Store:
    def __init__(
        self,
        client: redis.Redis,
        dispatcher: Dispatcher | None = None,
        *,
        claim_seconds: float = 15.0,
        account: Account = DEFAULT_ACCOUNT,
        max_pipeline_versions: int = MAX_VERSIONS,
    ) -> None:
        self.r = client
        self.account = account
        self.definitions = Definitions(
            client,
            account_id=account.account_id,
            max_versions=max_pipeline_versions,
            in_use=self._versions_in_use,
        )
        self.runs = Runs(
            client,
            self.definitions,
            claim_seconds=claim_seconds,
            dispatcher=dispatcher,
            account=account,
        )
        self.leases = Leases(client)
        self.events = EventLog(client)
        self.jobs = JobStore(client, account_id=account.account_id)
        self.action_types = ActionTypeStore(client)
        self.credentials = CredentialStore(client)
        self.tags = TagStore(client)
        self.webhooks = WebhookStore(client)

    @classmethod
    def from_url(
        cls,
        url: str,
        dispatcher: Dispatcher | None = None,
        *,
        claim_seconds: float = 15.0,
        account: Account = DEFAULT_ACCOUNT,
        max_pipeline_versions: int = MAX_VERSIONS,
    ) -> Store:
        return cls(
            connect(url),
            dispatcher,
            claim_seconds=claim_seconds,
            account=account,
            max_pipeline_versions=max_pipeline_versions,
        )

    def _versions_in_use(self, pipeline: str) -> set[int]:
        """Versions that unfinished executions of ``pipeline`` run (never pruned)."""
        active = self.runs.load_run(pipeline).active
        return {ex.pipeline_version for ex in self.runs.load_many(active).values()}

    def apply(self, pipeline: str, event: Event) -> Decision:
        """One transition of ``pipeline`` (see :meth:`Runs.apply`)."""
        return self.runs.apply(pipeline, event)

    def complete(self, item: WorkItem, result: ActionResult) -> Decision:
        """Apply an attempt's result. When it changes nothing (the attempt was stale: stopped,
        timed out, or run again meanwhile), nothing waits for the attempt any more, so what
        it holds (lease, recorded result) is released here; otherwise the transition did."""
        decision = self.apply(item.pipeline, completion(item, result))
        if not decision.changed:
            self.leases.release(item)
        return decision
