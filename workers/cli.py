"""The ``conveyor`` command: processes (worker, beat, api, dev, flower) and, through
workers.cli_client, the user commands (pipelines, executions, approvals)."""

from __future__ import annotations

import logging
import os
import signal
import sys
import tempfile
import time
from pathlib import Path
from types import FrameType

import click

from engine import keys
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
    rt.celery.worker_main(argv)


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
    from engine.sweep import sweep
    from engine.triggers import S3ObjectPoller, SourcePoller
    from workers.runtime import Runtime

    _logging(loglevel)
    settings = Settings()
    rt = Runtime(settings)
    every = interval or settings.sweep_interval_seconds
    poll_every = settings.source_poll_interval_seconds if poll_interval is None else poll_interval
    # Each pass polls for at most one sweep interval; a longer round resumes next pass.
    sources = SourcePoller(
        rt.store.r,
        rt.service,
        [S3ObjectPoller.from_settings(settings)],
        interval=poll_every,
        budget=every,
    )
    stopping = False

    def stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.info(
        "beat: sweeping every %.1fs, polling sources %s",
        every,
        f"every {poll_every:.1f}s" if poll_every > 0 else "off",
    )
    while not stopping:
        started = time.time()
        try:
            report = sweep(rt.store, started, outbox_grace=settings.outbox_grace_seconds)
            if report.redispatched or report.leases_expired or report.results_recovered:
                log.info("sweep: %s", report)
        except Exception:  # Redis down: keep sweeping, nothing is lost meanwhile
            log.exception("sweep failed")
        try:
            sources.tick(time.time())
        except Exception:  # Redis down: the next round retries
            log.exception("source polling failed")
        time.sleep(max(0.0, every - (time.time() - started)))


@cli.command()
@click.option("--host", default=None, help="Listen address (default CONVEYOR_API_HOST).")
@click.option("--port", type=int, default=None, help="Listen port (default CONVEYOR_API_PORT).")
def api(host: str | None, port: int | None) -> None:
    """Serve the CodePipeline JSON 1.1 API (boto3, aws cli) over HTTP."""
    import uvicorn

    from engine.api import create_app
    from workers.runtime import Runtime

    settings = Settings()
    rt = Runtime(settings)
    uvicorn.run(
        create_app(rt.service),
        host=host or settings.api_host,
        port=port or settings.api_port,
        log_level="info",
    )


@cli.command()
@click.option("--port", type=int, default=5555, show_default=True)
def flower(port: int) -> None:
    """Run Flower against Conveyor's broker."""
    settings = Settings()
    os.execv(
        sys.executable,
        [sys.executable, "-m", "celery", "-b", settings.broker, "flower", f"--port={port}"],
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


def main() -> None:
    from workers.cli_client import register

    register(cli)
    cli()


if __name__ == "__main__":
    main()
