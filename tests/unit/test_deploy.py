"""deploy/ stays in step with the code: every command in the compose file and the systemd
units is a real ``conveyor`` subcommand with real options, every ``CONVEYOR_*`` variable
they set is a setting, and every setting is documented. (No Docker engine is needed: this
parses the files; it does not run them.)"""

from __future__ import annotations

import configparser
import re
import shlex
from pathlib import Path
from typing import Any

import click
import pytest
import yaml

from engine import keys
from engine.settings import Settings
from providers.container import ContainerSettings
from workers.cli import cli
from workers.cli_client import register

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
COMPOSE = DEPLOY / "compose.yaml"
SYSTEMD = DEPLOY / "systemd"
ENV_EXAMPLE = SYSTEMD / "conveyor.env.example"
CLIENT_ONLY = {"CONVEYOR_API_URL"}  # read by the CLI/client, not by Settings
SETTINGS_VARS = {f"CONVEYOR_{name.upper()}" for name in Settings.model_fields}
# Build workers' container settings, read by the provider itself (providers.container).
CONTAINER_VARS = {f"CONVEYOR_{name.upper()}" for name in ContainerSettings.model_fields}

register(cli)


def parse_conveyor(args: list[str]) -> dict[str, Any]:
    """Parse ``conveyor ARGS`` exactly as the CLI would, without running it."""
    assert args, "empty command"
    root = click.Context(cli, info_name="conveyor")
    command = cli.get_command(root, args[0])
    assert command is not None, f"`conveyor {args[0]}` is not a command"
    try:
        ctx = command.make_context(args[0], list(args[1:]), parent=root)
    except click.UsageError as exc:
        pytest.fail(f"`conveyor {shlex.join(args)}`: {exc.format_message()}")
    return dict(ctx.params)


# --------------------------------------------------------------------------- compose


def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return data


def conveyor_services() -> dict[str, dict[str, Any]]:
    return {
        name: svc
        for name, svc in compose()["services"].items()
        if svc.get("image", "").startswith("conveyor")
    }


def test_compose_parses_and_has_every_role() -> None:
    services = compose()["services"]
    assert {"redis", "minio", "flower"} <= set(services)
    roles = {svc["command"][0] for svc in conveyor_services().values()}
    assert roles == {"api", "worker", "beat", "flower"}
    pools = {
        parse_conveyor(svc["command"])["pool"]
        for svc in conveyor_services().values()
        if svc["command"][0] == "worker"
    }
    assert {"engine", "build"} <= pools


@pytest.mark.parametrize("name", sorted(conveyor_services()))
def test_compose_service_runs_a_real_conveyor_command(name: str) -> None:
    svc = conveyor_services()[name]
    assert isinstance(svc["command"], list), "exec form, so no shell re-splits it"
    params = parse_conveyor(svc["command"])
    if svc["command"][0] == "worker":
        assert params["pool"] in keys.POOLS
        # Each replica's node name must differ, or Flower and `inspect ping` confuse them.
        assert params["hostname"] and params["hostname"].endswith("@%h")
        # It pings this replica's own node, and no broker URL (with the Redis password)
        # appears on a command line, which every process in the container can read.
        test = svc["healthcheck"]["test"]
        assert test[-1] == params["hostname"].split("@")[0]
        assert "socket.gethostname()" in " ".join(test) and "redis://" not in " ".join(test)
    assert svc["healthcheck"]["test"], f"{name} has no healthcheck"
    assert svc["build"]["dockerfile"] == "deploy/Dockerfile"
    assert (COMPOSE.parent / svc["build"]["context"] / svc["build"]["dockerfile"]).is_file()
    env_vars = {k for k in svc["environment"] if k.startswith("CONVEYOR_")}
    assert env_vars <= SETTINGS_VARS, env_vars - SETTINGS_VARS


def test_compose_infrastructure_has_healthchecks() -> None:
    for name in ("redis", "minio"):
        assert compose()["services"][name]["healthcheck"]["test"]


# --------------------------------------------------------------------------- systemd


def unit(path: Path) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None, strict=True)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(path.read_text())
    return parser


UNITS = sorted(p.name for p in SYSTEMD.glob("*.service"))


def test_systemd_units_exist() -> None:
    assert {"conveyor-api.service", "conveyor-worker@.service", "conveyor-beat.service"} <= set(
        UNITS
    )


@pytest.mark.parametrize("name", UNITS)
def test_systemd_unit_runs_a_real_conveyor_command(name: str) -> None:
    service = unit(SYSTEMD / name)["Service"]
    assert service["EnvironmentFile"] == "/etc/conveyor/conveyor.env"
    # Workers are root only to run each build as the unprivileged build user.
    assert service["User"] == ("root" if name.startswith("conveyor-worker") else "conveyor")
    assert service["Group"] == "conveyor"
    argv = shlex.split(service["ExecStart"])
    assert argv[0].endswith("/bin/conveyor")
    instances = list(keys.POOLS) if "%i" in service["ExecStart"] else [""]
    for pool in instances:
        # %i is the instance (the pool), %H the host name; both expand before exec.
        args = [a.replace("%i", pool).replace("%H", "host1") for a in argv[1:]]
        assert "%" not in " ".join(args), f"unexpanded specifier in {args}"
        params = parse_conveyor(args)
        if args[0] == "worker":
            assert params["pool"] == pool
            assert params["hostname"] == f"{pool}@host1"


# --------------------------------------------------------------------------- settings


def env_example() -> dict[str, str]:
    out: dict[str, str] = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, sep, value = line.partition("=")
            assert sep, f"not KEY=VALUE: {line!r}"
            out[key.strip()] = value.strip()
    return out


def test_env_example_lists_every_setting_with_a_valid_value(tmp_path: Path) -> None:
    env = env_example()
    assert set(env) == SETTINGS_VARS | CONTAINER_VARS | CLIENT_ONLY
    container = {k.removeprefix("CONVEYOR_").lower(): v for k, v in env.items() if v}
    containers = ContainerSettings.model_validate(
        {k: v for k, v in container.items() if f"CONVEYOR_{k.upper()}" in CONTAINER_VARS}
    )
    assert containers.model_dump() == ContainerSettings.model_construct().model_dump()  # defaults
    values = {
        k.removeprefix("CONVEYOR_").lower(): v
        for k, v in env.items()
        if k not in CLIENT_ONLY | CONTAINER_VARS
    }
    password = tmp_path / "redis-password"
    password.write_text("pw\n")
    assert values["redis_password_file"] == "/etc/conveyor/redis-password"
    values["redis_password_file"] = str(password)
    settings = Settings.model_validate(values)
    # The example documents the defaults, except where a deployment needs its own value.
    differs = {
        name
        for name, field in Settings.model_fields.items()
        if getattr(settings, name) != field.default
    }
    # The password file is a deployment's own, and its password goes into the Redis URLs.
    deployment_own = {"broker_url", "workdir", "redis_password_file", "redis_url", "audit_file"}
    assert differs <= deployment_own | {"webhook_secret_file"}, differs
    assert settings.redis_url == "redis://:pw@127.0.0.1:6379/0"


def test_readme_documents_every_setting() -> None:
    readme = (DEPLOY / "README.md").read_text()
    documented = SETTINGS_VARS | CONTAINER_VARS | CLIENT_ONLY
    missing = sorted(v for v in documented if not re.search(rf"\b{v}\b", readme))
    assert not missing, f"deploy/README.md does not mention {missing}"
