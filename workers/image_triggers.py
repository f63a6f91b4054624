"""Polling ECR sources: a tag that now points at another digest starts one execution.

CodePipeline starts a pipeline on an ECR push through an EventBridge rule; a distribution
registry sends no such event Conveyor could rely on, so beat asks it instead, with one HEAD
per polled source. The execution carries the digest it was started for, and the source
action reads that digest rather than the tag, so a push between the poll and the run does
not change what the execution builds.
"""

from __future__ import annotations

import logging

from engine.definition import PipelineDeclaration
from providers.base import ActionFailed
from providers.ecr_source import IMAGE_DIGEST
from providers.oci_registry import RegistryClient, RegistrySettings, load_settings
from workers.triggers import ChangeDetector, DetectedChange, source_actions

log = logging.getLogger("conveyor.triggers")

# A registry that is slow to answer must not hold up beat's sweep.
POLL_TIMEOUT_SECONDS = 5.0


class EcrImagePoller(ChangeDetector):
    """Source/AWS/ECR: the digest ``RepositoryName:ImageTag`` points at."""

    def __init__(self, settings: RegistrySettings | None) -> None:
        """``settings`` None: there is no usable registry, and nothing is polled."""
        self.settings = settings and settings.model_copy(
            update={"timeout_seconds": min(settings.timeout_seconds, POLL_TIMEOUT_SECONDS)}
        )
        self._warned_unconfigured = False

    @classmethod
    def from_env(cls) -> EcrImagePoller:
        """The poller beat runs; with invalid settings it polls nothing and says why, so
        beat's other work goes on."""
        try:
            return cls(load_settings())
        except ActionFailed as exc:
            log.error("ECR sources are not polled: %s", exc.message)
            return cls(None)

    def detect(self, pipeline: PipelineDeclaration, version: int) -> list[DetectedChange]:
        sources = list(source_actions(pipeline, "AWS", "ECR"))
        if not sources:
            return []
        settings = self.settings
        if settings is None or not settings.registry_url:
            if not self._warned_unconfigured:
                log.warning(
                    "pipeline %s has ECR sources but beat has no valid "
                    "CONVEYOR_ECR_REGISTRY_URL: they are not polled",
                    pipeline.name,
                )
                self._warned_unconfigured = True
            return []
        try:
            # Made per pass: secrets are read from their files now, so a rotation applies.
            client = RegistryClient(settings)
        except ActionFailed as exc:
            log.warning("pipeline %s: cannot poll ECR sources: %s", pipeline.name, exc.message)
            return []
        found = []
        for stage, action in sources:
            repository = str(action.configuration.get("RepositoryName", ""))
            tag = str(action.configuration.get("ImageTag") or "latest")
            if not repository or "#{" in repository + tag:
                continue  # variables resolve only inside an execution: nothing to poll
            where = f"{settings.host}/{repository}:{tag}"
            try:
                digest = client.digest_of(repository, tag)
            except ActionFailed as exc:
                log.warning(
                    "pipeline %s: cannot read source %s of %s.%s (%s); retrying next poll",
                    pipeline.name,
                    where,
                    stage,
                    action.name,
                    exc.message,
                )
                continue
            found.append(
                DetectedChange(
                    stage, action.name, digest, IMAGE_DIGEST, f"{repository}:{tag}", where
                )
            )
        return found
