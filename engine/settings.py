"""Configuration from the environment (prefix ``CONVEYOR_``) with sane local defaults."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal
from urllib.parse import quote, urlsplit, urlunsplit

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from engine.arns import DEFAULT_ACCOUNT_ID, Account

AuthMode = Literal["sigv4", "anonymous"]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CONVEYOR_", extra="ignore")

    redis_url: str = "redis://127.0.0.1:6379/0"
    broker_url: str | None = Field(default=None, description="Celery broker; defaults to redis_url")
    # Redis AUTH (requirepass, or an ACL user with redis_username), for redis_url and a
    # redis:// broker_url that carry no credentials of their own. The file (one line, mode
    # 0600) keeps the password out of environments and process listings.
    redis_username: str | None = None
    redis_password: str | None = Field(default=None, repr=False)
    redis_password_file: str | None = None
    s3_endpoint_url: str = "http://127.0.0.1:9000"
    s3_access_key_id: str = "conveyor"
    s3_secret_access_key: str = "conveyor-secret"
    s3_region: str = "us-east-1"
    default_artifact_bucket: str = "conveyor-artifacts"
    # The region and account id the API answers as, in ARNs (pipelineArn, event resources),
    # events and job details. The region defaults to s3_region: one setting for the common
    # case where both name the same place; set it apart when the S3 endpoint's region does
    # not matter (MinIO) and clients expect another. The account id is AWS's documentation
    # example; there is no account behind it.
    region: str = ""
    account_id: str = Field(default=DEFAULT_ACCOUNT_ID, pattern=r"^[0-9]{12}$")

    api_host: str = "127.0.0.1"
    api_port: int = 8484
    # Where workers (and the handlers and providers they run) reach Conveyor's own API:
    # Lambda-style handlers report job results there, Invoke/CodePipeline starts pipelines
    # there. Defaults to api_host:api_port.
    api_url: str | None = None
    # Job workers (custom actions): a job PollForJobs handed out that is not acknowledged
    # (AcknowledgeJob) within this long goes back to the queue, with a new nonce; and where
    # job workers and Lambda-style handlers reach the S3 gateway their job's artifact
    # credentials work with (default: the API's /s3).
    job_ack_timeout_seconds: float = Field(default=60.0, gt=0)
    s3_gateway_url: str | None = None
    # Bounded work per API request: a larger body is refused (413) before it is read in
    # full; JSON nested deeper, or an integer literal longer, is refused (400).
    api_max_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    api_max_json_depth: int = Field(default=64, ge=8)
    api_max_int_digits: int = Field(default=32, ge=20)
    # The audit log (engine.audit): the Redis stream conveyor:audit keeps about
    # audit_max_entries records; audit_file (JSON lines, appended, fsync'd per record
    # unless audit_fsync is false) keeps them all. Reads that succeed are recorded only
    # with audit_reads.
    audit_file: Path | None = None
    audit_max_entries: int = Field(default=1_000_000, ge=1000)
    audit_fsync: bool = True
    audit_reads: bool = False
    # Who may call the API (engine.auth). ``sigv4``: every request is signed with a key
    # from the principals file (YAML or JSON, mode 0600; reloaded when it changes) or the
    # admin key below. ``anonymous``: no checks at all, for local development only.
    auth_mode: AuthMode = "sigv4"
    # Anonymous mode serves only a loopback address (127.0.0.1, ::1, localhost): the API
    # refuses to start on any other unless this says the exposure is meant (a container
    # whose port is published on the host's loopback only, a private network for a demo).
    auth_anonymous_allow_public: bool = False
    auth_principals_file: Path | None = None
    # Fernet key that decrypts ``secretAccessKeyEncrypted`` in the principals file (SigV4
    # needs the secret itself, so it cannot be hashed), as a value or a file holding it.
    auth_key_encryption_key: SecretStr | None = None
    auth_key_encryption_key_file: Path | None = None
    # One admin key straight from settings, for small installs.
    auth_admin_access_key_id: str | None = None
    auth_admin_secret_access_key: SecretStr | None = None
    # The identity workers sign their API calls with (Invoke/CodePipeline, Lambda handlers'
    # job results): a principal with the operator and job-worker roles. The API accepts it
    # too, as principal ``conveyor-workers``, so one env file serves every process.
    api_access_key_id: str | None = None
    api_secret_access_key: SecretStr | None = None
    # The identity Lambda-style handlers (user code) sign their job results with: the API
    # accepts it as principal ``conveyor-handlers``, job-worker only. Unset: handlers get
    # the workers' key above.
    api_handler_access_key_id: str | None = None
    api_handler_secret_access_key: SecretStr | None = None
    # Versions of one pipeline kept; UpdatePipeline drops the oldest beyond this.
    max_pipeline_versions: int = Field(default=100, ge=1)
    # CreatePipeline starts the pipeline's first execution (trigger type CreatePipeline), as
    # on AWS. Off: a new pipeline waits for StartPipelineExecution or a trigger.
    start_on_create: bool = True

    # Leases: a worker renews every lease_seconds/3; the sweep re-dispatches after expiry.
    # A dispatched attempt no worker claimed within this long is sent again, too.
    lease_seconds: float = 15.0
    sweep_interval_seconds: float = 3.0
    # An outbox entry older than this is carried out again by the sweep.
    outbox_grace_seconds: float = 10.0
    # Beat polls S3 source objects (PollForSourceChanges) this often; 0 turns polling off.
    source_poll_interval_seconds: float = 30.0
    # Broker redelivery of unacked tasks; far above the longest action (leases recover sooner).
    visibility_timeout_seconds: int = 12 * 3600

    # Seconds in one minute of an action's ``timeoutInMinutes`` (and the default timeouts):
    # 60. Tests shorten it to see timeouts happen; nothing else should change it.
    minute_seconds: float = 60.0

    # A step of an action (one download, the provider's run, one upload) that fails
    # transiently (S3 unreachable, throttled, 5xx) is tried again with exponential backoff
    # and full jitter: for at most this long and this many tries per step, never past the
    # action's timeout. 0 seconds or 1 attempt: fail at the first transient failure.
    transient_retry_seconds: float = Field(default=60.0, ge=0)
    transient_retry_attempts: int = Field(default=10, ge=1)

    # Artifact hardening
    max_artifact_bytes: int = 5 * 1024**3
    max_artifact_files: int = 100_000
    workdir: str | None = None

    # Git webhooks (POST /webhooks/github, /webhooks/gitlab). The default secret, as a value
    # or a file holding it, and a JSON file of per-repository / per-connection secrets
    # ({"owner/repo": "...", "arn:aws:codestar-connections:...": "..."}). None set: every
    # delivery is refused.
    webhook_secret: SecretStr | None = None
    webhook_secret_file: Path | None = None
    webhook_secrets_file: Path | None = None
    # A larger body is refused (413) before it is read in full.
    webhook_max_body_bytes: int = Field(default=5 * 1024 * 1024, ge=1)
    # How long a delivery id is remembered, so a replay of it is refused.
    webhook_delivery_ttl_seconds: int = Field(default=3 * 24 * 3600, ge=1)
    # GitLab signed webhooks: how far webhook-timestamp may be from now.
    webhook_signature_tolerance_seconds: float = Field(default=300.0, gt=0)
    # The base of the urls PutWebhook's webhooks are served at (ListWebhooks' ``url``), as
    # GitHub reaches it (https://ci.example.com). Unset: the base of the API request.
    webhook_public_url: str | None = None
    # Builds: the local Parameter Store / Secrets Manager stand-in (a JSON or YAML file with
    # ``parameters`` and ``secrets``), and where buildspec ``cache.paths`` are kept between
    # runs on a worker (default: build-cache under the worker's scratch directory), each
    # project's cache at most this big (a bigger one is not saved).
    secrets_file: str | None = None
    build_cache_dir: str | None = None
    build_cache_max_bytes: int = Field(default=2 * 1024**3, ge=0)
    # Build isolation (providers.sandbox): the unprivileged user build commands run as when
    # the worker is root (created at worker start if missing; empty: the worker's own
    # user), and the most bytes of a build's output its stored log keeps (head and tail).
    build_user: str = "conveyor-build"
    build_log_max_bytes: int = Field(default=8 * 1024 * 1024, ge=4096)

    @field_validator(
        "redis_username",
        "redis_password",
        "redis_password_file",
        "webhook_secret",
        "webhook_secret_file",
        "webhook_secrets_file",
        "secrets_file",
        "build_cache_dir",
        "webhook_public_url",
        "audit_file",
        "s3_gateway_url",
        "auth_principals_file",
        "auth_key_encryption_key",
        "auth_key_encryption_key_file",
        "auth_admin_access_key_id",
        "auth_admin_secret_access_key",
        "api_access_key_id",
        "api_secret_access_key",
        "api_handler_access_key_id",
        "api_handler_secret_access_key",
        mode="before",
    )
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        return None if value == "" else value  # `CONVEYOR_REDIS_PASSWORD=` in an env file

    @property
    def account(self) -> Account:
        """Who the API answers as; an empty ``region`` is ``s3_region``."""
        return Account(region=self.region or self.s3_region, account_id=self.account_id)

    @model_validator(mode="after")
    def _redis_credentials(self) -> Settings:
        password = self.redis_password
        if self.redis_password_file:
            password = Path(self.redis_password_file).read_text().strip()
        if password or self.redis_username:
            self.redis_url = with_credentials(self.redis_url, self.redis_username, password)
            if self.broker_url:
                self.broker_url = with_credentials(self.broker_url, self.redis_username, password)
        return self

    @property
    def broker(self) -> str:
        return self.broker_url or self.redis_url

    @property
    def api_endpoint(self) -> str:
        return self.api_url or f"http://{self.api_host}:{self.api_port}"

    @property
    def s3_gateway_endpoint(self) -> str:
        return self.s3_gateway_url or f"{self.api_endpoint.rstrip('/')}/s3"


def with_credentials(url: str, username: str | None, password: str | None) -> str:
    """``url`` with Redis credentials, unless it is not Redis or names its own already."""
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss") or "@" in parts.netloc:
        return url
    user = quote(username or "", safe="")
    secret = f":{quote(password, safe='')}" if password else ""
    netloc = f"{user}{secret}@{parts.netloc}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
