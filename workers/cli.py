"""The ``conveyor`` command: processes (worker, beat, api, dev, flower) and, through
workers.cli_client, the user commands (pipelines, executions, approvals)."""

from __future__ import annotations

import logging
import os
import signal
import sys
import tempfile
from pathlib import Path
from types import FrameType
from typing import Any

import click

from engine import keys
from engine.auth.principals import Role
from engine.settings import Settings

log = logging.getLogger("conveyor")


def _logging(level: str) -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s %(message)s")


@click.group()
def cli() -> None:
    """Conveyor: CodePipeline's model on Celery, Redis and S3."""


@cli.command()
@click.option(
    "--pool",
    type=click.Choice(list(keys.POOLS)),
    default="all",
    show_default=True,
    help="Which queues to consume: the engine, one category, or all.",
)
@click.option("--concurrency", "-c", type=int, default=None, help="Worker processes.")
@click.option("--hostname", "-n", default=None, help="Celery node name (default pool@host).")
@click.option("--loglevel", default="INFO", show_default=True)
def worker(pool: str, concurrency: int | None, hostname: str | None, loglevel: str) -> None:
    """Run a Celery worker pool."""
    from workers.app import pool_queues
    from workers.runtime import Runtime
    from workers.tasks import register_tasks

    _logging(loglevel)
    rt = Runtime(Settings())
    register_tasks(rt.celery, rt)
    queues = pool_queues(pool, rt.registry)
    if not queues:
        raise click.UsageError(f"pool {pool!r} has no registered providers to run")
    rt.prepare_worker()
    argv = [
        "worker",
        "-Q",
        ",".join(queues),
        "--loglevel",
        loglevel,
        "-E",
        "-n",
        hostname or f"{pool}@%h",
    ]
    if concurrency:
        argv += ["--concurrency", str(concurrency)]
    sys.exit(run_celery(rt.celery, argv))


def run_celery(app: Any, argv: list[str]) -> int:
    """Run a ``celery`` sub-command for ``app`` and return its exit status.

    Not ``app.worker_main(argv)``: neither it nor ``app.start`` (which it calls) returns
    the exit code of the ``celery`` command, so a worker stopped by an "Unrecoverable
    error" (exit code 1) would end with status 0, and a supervisor that restarts only on
    failure would leave it down. This is ``app.start`` with the code kept.
    """
    from celery.bin.celery import celery as celery_command
    from click.exceptions import Exit

    celery_command.params[0].default = app
    try:
        code = celery_command.main(args=argv, standalone_mode=False)
    except Exit as stop:
        code = stop.exit_code
    finally:
        celery_command.params[0].default = None
    return exit_status(code)


def exit_status(code: object) -> int:
    """A process exit status from what a click command returned or exited with."""
    if code is None:
        return 0
    if isinstance(code, bool) or not isinstance(code, int):
        return 1
    return code


@cli.command()
@click.option("--interval", type=float, default=None, help="Seconds between sweeps.")
@click.option(
    "--poll-interval",
    type=float,
    default=None,
    help="Seconds between polls of S3 sources (default CONVEYOR_SOURCE_POLL_INTERVAL_SECONDS;"
    " 0 turns polling off).",
)
@click.option("--loglevel", default="INFO", show_default=True)
def beat(interval: float | None, poll_interval: float | None, loglevel: str) -> None:
    """Run the sweep (outbox recovery, expired leases, approval and action timeouts) and
    poll source actions for new revisions (PollForSourceChanges)."""
    from workers.beat import Beat
    from workers.runtime import Runtime

    _logging(loglevel)
    settings = Settings()
    every = interval or settings.sweep_interval_seconds
    poll_every = settings.source_poll_interval_seconds if poll_interval is None else poll_interval
    beat = Beat(Runtime(settings), settings, interval=every, poll_interval=poll_every)

    def stop(signum: int, frame: FrameType | None) -> None:
        beat.stopping.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.info(
        "beat: sweeping every %.1fs, polling sources %s",
        every,
        f"every {poll_every:.1f}s" if poll_every > 0 else "off",
    )
    beat.run()


@cli.command()
@click.option("--host", default=None, help="Listen address (default CONVEYOR_API_HOST).")
@click.option("--port", type=int, default=None, help="Listen port (default CONVEYOR_API_PORT).")
def api(host: str | None, port: int | None) -> None:
    """Serve the CodePipeline JSON 1.1 API (boto3, aws cli) over HTTP."""
    import uvicorn

    from engine.api import create_app
    from engine.api.auth import Authenticator, check_bind
    from engine.api.parsing import BodyLimits
    from engine.api.s3_gateway import Gateway, Upstream
    from engine.audit import AuditConfig, AuditLog
    from engine.auth.keys import KeyConfigError
    from engine.webhooks import WebhookConfig, WebhookConfigError
    from workers.runtime import Runtime

    _logging("INFO")  # refusals and the anonymous-mode warning, with time and level
    settings = Settings()
    host = host or settings.api_host
    try:  # before anything starts: anonymous on a public address is refused
        check_bind(settings.auth_mode, host, allow_public=settings.auth_anonymous_allow_public)
    except KeyConfigError as exc:
        raise click.ClickException(exc.message) from None
    limits = BodyLimits(
        max_body_bytes=settings.api_max_body_bytes,
        max_depth=settings.api_max_json_depth,
        max_int_digits=settings.api_max_int_digits,
    )
    try:
        webhooks = WebhookConfig.from_settings(settings)
    except WebhookConfigError as exc:
        raise click.ClickException(exc.message) from None
    rt = Runtime(settings)
    try:  # an audit file that cannot be written stops the API here, not at a request
        audit = AuditLog(rt.service.store.r, settings.account, AuditConfig.from_settings(settings))
    except OSError as exc:
        raise click.ClickException(f"CONVEYOR_AUDIT_FILE: {exc}") from None
    gateway = Gateway(
        rt.store.credentials,
        Upstream(
            settings.s3_endpoint_url,
            settings.s3_access_key_id,
            settings.s3_secret_access_key,
            settings.s3_region,
            settings.max_artifact_bytes,
        ),
    )
    try:
        authenticator = Authenticator.from_settings(settings, rt.service.store.r)
    except KeyConfigError as exc:
        raise click.ClickException(exc.message) from None
    uvicorn.run(
        create_app(
            rt.service,
            webhooks,
            limits,
            audit=audit,
            s3_gateway=gateway,
            authenticator=authenticator,
        ),
        host=host,
        port=port or settings.api_port,
        log_level="info",
    )


@cli.command()
@click.option("--port", type=int, default=5555, show_default=True)
def flower(port: int) -> None:
    """Run Flower against Conveyor's broker."""
    settings = Settings()
    # Through the environment, not ``-b``: a command line is readable by every user on the
    # host (builds included), and the broker URL may hold the Redis password.
    os.execve(
        sys.executable,
        [sys.executable, "-m", "celery", "flower", f"--port={port}"],
        {**os.environ, "CELERY_BROKER_URL": settings.broker},
    )


@cli.command()
@click.option("--concurrency", type=int, default=2, show_default=True)
@click.option("--flower/--no-flower", "with_flower", default=True, show_default=True)
@click.option("--workdir", type=click.Path(path_type=Path), default=None)
def dev(concurrency: int, with_flower: bool, workdir: Path | None) -> None:
    """The whole local stack in one command; Ctrl-C stops it cleanly."""
    from workers.stack import run_dev_stack

    run_dev_stack(
        workdir or Path(tempfile.mkdtemp(prefix="conveyor-dev-")),
        concurrency=concurrency,
        with_flower=with_flower,
        block=True,
    )


@cli.group(name="keys")
def keys_group() -> None:
    """Access keys for the API (the principals file)."""


@keys_group.command("create")
@click.option("--principal", required=True, help="Who the key is for (created if new).")
@click.option(
    "--role",
    "roles",
    multiple=True,
    type=click.Choice([r.value for r in Role]),
    help="A role of the principal (repeat for more); replaces its roles when given.",
)
@click.option(
    "--file",
    "path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="The principals file [default: CONVEYOR_AUTH_PRINCIPALS_FILE].",
)
def keys_create(principal: str, roles: tuple[str, ...], path: Path | None) -> None:
    """Generate an access key pair for PRINCIPAL and add it to the principals file (created
    mode 0600; rewritten as JSON). The secret is printed once, in the shared credentials
    file's format; it is stored encrypted when a key-encryption key is configured. The API
    picks the key up without a restart."""
    from engine.auth.keys import AuthSources, KeyConfigError, add_key

    settings = Settings()
    try:
        target = path or settings.auth_principals_file
        if target is None:
            raise click.UsageError("give --file or set CONVEYOR_AUTH_PRINCIPALS_FILE")
        encryption_key = AuthSources.from_settings(settings).encryption_key
        key_id, secret = add_key(
            target, principal, [Role(r) for r in roles], encryption_key=encryption_key
        )
    except KeyConfigError as exc:
        raise click.ClickException(exc.message) from None
    click.echo(f"# added to {target} for principal {principal}; the secret is not shown again")
    click.echo(f"[{principal}]")
    click.echo(f"aws_access_key_id = {key_id}")
    click.echo(f"aws_secret_access_key = {secret}")


@keys_group.command("generate")
@click.option(
    "--for",
    "holder",
    type=click.Choice(["workers", "handlers"]),
    default="workers",
    show_default=True,
    help="workers: principal conveyor-workers (operator, job-worker); handlers: principal "
    "conveyor-handlers (job-worker only), the key Lambda-style handlers sign with",
)
def keys_generate(holder: str) -> None:
    """Print a fresh key pair for the workers' (or the handlers') identity, as conveyor.env
    lines, writing nothing."""
    from engine.auth.keys import generate_key_pair

    key_id, secret = generate_key_pair()
    prefix = "CONVEYOR_API_HANDLER_" if holder == "handlers" else "CONVEYOR_API_"
    click.echo(f"{prefix}ACCESS_KEY_ID={key_id}")
    click.echo(f"{prefix}SECRET_ACCESS_KEY={secret}")


@keys_group.command("new-encryption-key")
def keys_new_encryption_key() -> None:
    """Print a fresh key for CONVEYOR_AUTH_KEY_ENCRYPTION_KEY (keep it out of the principals
    file's directory and backups)."""
    from engine.auth.keys import new_encryption_key

    click.echo(new_encryption_key())


def main() -> None:
    from workers.cli_client import register

    register(cli)
    cli()


if __name__ == "__main__":
    main()
