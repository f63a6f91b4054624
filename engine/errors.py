"""One error tree for all of Conveyor.

Each class names the CodePipeline error it becomes at the API edge (``aws_code``), so the
HTTP layer maps errors by type, never by message.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


class ConveyorError(Exception):
    """Base of every error Conveyor raises on purpose."""

    aws_code = "ValidationException"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a definition, at a path like ``stages[1].actions[0].name``.

    ``aws_message``: AWS's own sentence for this problem, where it is known (clients and
    tests written against AWS match on it)."""

    path: str
    message: str
    aws_message: str | None = None

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message

    @property
    def aws_code(self) -> str:
        """The CodePipeline error for a problem at this path: inside an action, the action
        declaration is invalid; elsewhere inside a stage, the stage declaration; anywhere
        else (name, stage count, artifact store, variables, triggers), the structure."""
        if _ACTION_PATH.match(self.path):
            return "InvalidActionDeclarationException"
        if _STAGE_PATH.match(self.path):
            return "InvalidStageDeclarationException"
        return "InvalidStructureException"


_ACTION_PATH = re.compile(r"^stages\[\d+\]\.actions\[\d+\]")
_STAGE_PATH = re.compile(r"^stages\[\d+\]")


# A message lists at most this many problems, each cut to this many characters.
MAX_PROBLEMS_SHOWN = 25
MAX_PROBLEM_CHARS = 300


class DefinitionError(ConveyorError):
    """A pipeline definition is invalid; carries every problem found, not just the first.

    The error code is the first problem's (CodePipeline reports one; its first is the one
    a client reacts to), and the message starts with AWS's sentence for that problem where
    it is known, followed by every problem with its path. It shows the first
    :data:`MAX_PROBLEMS_SHOWN` (each cut short) and counts the rest, so a definition with a
    million wrong items makes a short answer."""

    aws_code = "InvalidStructureException"

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        shown = [_cut(str(p)) for p in problems[:MAX_PROBLEMS_SHOWN]]
        if len(problems) > MAX_PROBLEMS_SHOWN:
            shown.append(f"... and {len(problems) - MAX_PROBLEMS_SHOWN} more")
        listed = "; ".join(shown)
        first = problems[0] if problems else None
        if first is not None:
            self.aws_code = first.aws_code
        if first is not None and first.aws_message:
            listed = f"{first.aws_message}. Every problem: {listed}"
        super().__init__(listed)


def _cut(text: str) -> str:
    return text if len(text) <= MAX_PROBLEM_CHARS else text[: MAX_PROBLEM_CHARS - 3] + "..."


class ValidationError(ConveyorError):
    aws_code = "ValidationException"


class NotFoundError(ConveyorError):
    aws_code = "ResourceNotFoundException"


class PipelineNotFoundError(NotFoundError):
    aws_code = "PipelineNotFoundException"

    @classmethod
    def named(cls, name: str, account_id: str) -> PipelineNotFoundError:
        """In AWS's words, which clients match on."""
        return cls(f"Account '{account_id}' does not have a pipeline with name '{name}'")


class PipelineNameInUseError(ConveyorError):
    aws_code = "PipelineNameInUseException"


class PipelineVersionNotFoundError(NotFoundError):
    aws_code = "PipelineVersionNotFoundException"


class ExecutionError(ConveyorError):
    aws_code = "ValidationException"


class ExecutionNotFoundError(NotFoundError):
    aws_code = "PipelineExecutionNotFoundException"


class StageNotFoundError(NotFoundError):
    aws_code = "StageNotFoundException"


class ActionNotFoundError(NotFoundError):
    aws_code = "ActionNotFoundException"


class InvalidApprovalTokenError(ExecutionError):
    aws_code = "InvalidApprovalTokenException"


class AccessDeniedError(ConveyorError):
    """The caller is known but may not do this: an approver list that does not name them,
    separation of duties, a role that does not allow the operation."""

    aws_code = "AccessDeniedException"


class ApprovalAlreadyCompletedError(ExecutionError):
    aws_code = "ApprovalAlreadyCompletedException"


class ExecutionNotStoppableError(ExecutionError):
    aws_code = "PipelineExecutionNotStoppableException"


class DuplicatedStopRequestError(ExecutionError):
    aws_code = "DuplicatedStopRequestException"


class ConflictError(ExecutionError):
    """A compare-and-set lost too many races in a row; the caller may try again."""

    aws_code = "ConcurrentModificationException"


class ProviderError(ConveyorError):
    """An action failed. ``retryable`` says whether running it again could help."""

    def __init__(self, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable


class ArtifactError(ProviderError):
    """An artifact could not be stored, fetched, verified or safely extracted."""


class ServiceUnavailableError(ConveyorError):
    """Redis or S3 could not be reached; nothing was changed."""

    aws_code = "ServiceUnavailableException"


class StoreError(ConveyorError):
    """Redis answered with an error: a bug or a misconfigured server, not a user's fault."""

    aws_code = "InternalFailure"


class NotLatestPipelineExecutionError(ExecutionError):
    aws_code = "NotLatestPipelineExecutionException"


class StageNotRetryableError(ExecutionError):
    aws_code = "StageNotRetryableException"


class ConcurrentExecutionsLimitError(ExecutionError):
    aws_code = "ConcurrentPipelineExecutionsLimitExceededException"


class UnableToRollbackStageError(ExecutionError):
    aws_code = "UnableToRollbackStageException"


class ConditionNotOverridableError(ExecutionError):
    aws_code = "ConditionNotOverridableException"


class JobNotFoundError(NotFoundError):
    aws_code = "JobNotFoundException"


class InvalidJobStateError(ConveyorError):
    """A job result for a job that is no longer in progress (answered, timed out)."""

    aws_code = "InvalidJobStateException"


class InvalidNonceError(ConveyorError):
    aws_code = "InvalidNonceException"


class InvalidClientTokenError(ConveyorError):
    aws_code = "InvalidClientTokenException"


class ActionTypeNotFoundError(NotFoundError):
    aws_code = "ActionTypeNotFoundException"


class RequestFailedError(ConveyorError):
    aws_code = "RequestFailedException"


class OutputVariablesSizeExceededError(ConveyorError):
    aws_code = "OutputVariablesSizeExceededException"


# ---------------------------------------------------------------------------- tags, webhooks


class InvalidArnError(ConveyorError):
    aws_code = "InvalidArnException"


class InvalidTagsError(ConveyorError):
    aws_code = "InvalidTagsException"


class TooManyTagsError(ValidationError):
    aws_code = "TooManyTagsException"


class InvalidNextTokenError(ValidationError):
    """A ``nextToken`` this API did not issue for the operation (forged, edited, foreign)."""

    aws_code = "InvalidNextTokenException"


class WebhookNotFoundError(NotFoundError):
    aws_code = "WebhookNotFoundException"


class InvalidWebhookFilterPatternError(ConveyorError):
    aws_code = "InvalidWebhookFilterPatternException"


class InvalidWebhookAuthenticationParametersError(ConveyorError):
    aws_code = "InvalidWebhookAuthenticationParametersException"


class ActionExecutionNotFoundError(NotFoundError):
    aws_code = "ActionExecutionNotFoundException"


class InvalidEventPatternError(ValidationError):
    """An EventBridge event pattern EventBridge itself would refuse."""

    aws_code = "InvalidEventPatternException"
