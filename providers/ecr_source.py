"""Source/AWS/ECR/1: an image tag in any OCI distribution (v2) registry is the source.

Like CodePipeline's ECR source, the action resolves ``RepositoryName:ImageTag`` to the
digest of the manifest the tag points at (an index's own digest for a multi-platform image)
and writes ``imageDetail.json`` in the shape CodePipeline's ECR source writes. The registry
is the workers' (``CONVEYOR_ECR_*``, see :class:`providers.oci_registry.RegistrySettings`),
never the definition's: definitions carry no registry addresses or secrets.
"""

from __future__ import annotations

import json
import re
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from pydantic import field_validator

from providers.base import (
    ActionTypeId,
    Category,
    Job,
    Provider,
    ProviderConfig,
    Result,
)
from providers.oci_registry import (
    RegistryClient,
    RegistrySettings,
    ResolvedImage,
    load_settings,
)
from providers.s3_source import bool_string

IMAGE_DETAIL_FILE = "imageDetail.json"
# CodePipeline's SourceRevisionType for an image.
IMAGE_DIGEST = "IMAGE_DIGEST"
# The distribution spec's grammar for repository names and tags.
REPOSITORY_NAME = re.compile(
    r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*)*"
)
IMAGE_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
DIGEST = re.compile(r"sha256:[0-9a-f]{64}")


class EcrSourceConfig(ProviderConfig):
    RepositoryName: str
    # AWS documents "latest" when ImageTag is left out.
    ImageTag: str = "latest"
    PollForSourceChanges: str | None = None

    @field_validator("RepositoryName")
    @classmethod
    def _repository(cls, value: str) -> str:
        if len(value) > 256 or not REPOSITORY_NAME.fullmatch(value):
            raise ValueError(
                f"{value!r} is not a repository name: lowercase letters and digits, "
                "separated by '.', '_', '__', '-' or '/' (e.g. team/app)"
            )
        return value

    @field_validator("ImageTag")
    @classmethod
    def _tag(cls, value: str) -> str:
        if not IMAGE_TAG.fullmatch(value):
            raise ValueError(
                f"{value!r} is not an image tag: up to 128 letters, digits, '_', '.' and '-', "
                "not starting with '.' or '-'"
            )
        return value

    @field_validator("PollForSourceChanges", mode="before")
    @classmethod
    def _poll(cls, value: Any) -> Any:
        value = bool_string(value)
        if value is not None and value not in ("true", "false"):
            raise ValueError('must be "true" or "false"')
        return value


def pushed_at_text(moment: datetime) -> str:
    """CodePipeline writes ImagePushedAt as ``Mon Jan 21 20:04:00 UTC 2019``."""
    return moment.astimezone(UTC).strftime("%a %b %d %H:%M:%S UTC %Y")


def image_detail(
    image: ResolvedImage, *, registry_id: str, host: str, read_at: datetime
) -> dict[str, Any]:
    """imageDetail.json, with CodePipeline's keys in CodePipeline's order.

    The distribution API keeps no push time: ImagePushedAt is the image's build time from
    its config when it has one (so the same digest always gives the same file), else the
    time the tag was read. ImageTags holds the tag that was read, not every tag of the image.
    """
    detail: dict[str, Any] = {}
    if image.size_bytes is not None:
        detail["ImageSizeInBytes"] = str(image.size_bytes)
    detail.update(
        {
            "ImageDigest": image.digest,
            "Version": "1.0",
            "ImagePushedAt": pushed_at_text(image.created or read_at),
            "RegistryId": registry_id,
            "RepositoryName": image.repository,
            "ImageURI": f"{host}/{image.repository}@{image.digest}",
            "ImageTags": [image.tag],
        }
    )
    return detail


class EcrSource(Provider):
    action_type = ActionTypeId(category=Category.SOURCE, owner="AWS", provider="ECR", version="1")
    Config = EcrSourceConfig
    min_outputs = 1
    max_outputs = 1

    def __init__(self, settings: RegistrySettings | None = None) -> None:
        # Without settings given, the worker's CONVEYOR_ECR_* are read at each run, so
        # engine settings need not know about registries and a bad one fails the action.
        self._settings = settings

    def run(self, job: Job) -> Result:
        config: EcrSourceConfig = job.configuration
        settings = self._settings or load_settings()
        client = RegistryClient(settings)
        repository, tag = config.RepositoryName, config.ImageTag
        # A trigger's detected digest pins the image, so the execution gets the revision
        # that started it even if the tag moved again since.
        pinned = job.revision if job.revision and DIGEST.fullmatch(job.revision) else None
        reference = pinned or tag
        job.log.write(f"Reading {repository}:{reference} from {client.url}\n")
        resolved = client.resolve(repository, reference)
        if pinned:
            resolved = replace(resolved, tag=tag)
        host = settings.host
        registry_id = settings.registry_id
        detail = image_detail(
            resolved, registry_id=registry_id, host=host, read_at=datetime.now(UTC)
        )
        (output,) = job.outputs.values()
        (output / IMAGE_DETAIL_FILE).write_text(json.dumps(detail, indent=4) + "\n")
        job.log.write(
            f"{repository}:{tag} is {resolved.digest} ({resolved.media_type}); "
            f"wrote {IMAGE_DETAIL_FILE}\n"
        )
        return Result(
            summary=f"Resolved {repository}:{tag} to {resolved.digest} at {client.url}",
            revision_id=resolved.digest,
            revision_summary=f"{repository}:{tag}",
            external_execution_id=resolved.digest,
            output_variables={
                "RegistryId": registry_id,
                "RepositoryName": repository,
                "ImageTag": tag,
                "ImageDigest": resolved.digest,
                "ImageURI": f"{host}/{repository}:{tag}",
            },
        )
