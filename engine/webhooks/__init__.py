"""Git webhooks (GitHub, GitLab) that start pipelines through their V2 triggers.

- :mod:`engine.webhooks.signatures`: secrets, and verifying a delivery against them;
- :mod:`engine.webhooks.payloads`: each host's payload read into a ``GitEvent``;
- :mod:`engine.webhooks.receiver`: one delivery end to end (verify, parse, claim, start).

Which pipelines an event starts is decided in :mod:`engine.git_triggers` (pure).
"""

from engine.webhooks.receiver import Host, Reply, WebhookConfig, WebhookReceiver
from engine.webhooks.signatures import WebhookConfigError, WebhookSecrets

__all__ = [
    "Host",
    "Reply",
    "WebhookConfig",
    "WebhookConfigError",
    "WebhookReceiver",
    "WebhookSecrets",
]
