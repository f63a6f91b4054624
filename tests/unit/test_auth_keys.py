"""The principals file and the key ring: validation with paths, permissions, encryption at
rest, reloading, new keys."""

from __future__ import annotations

import json
import os
import re
import stat
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.auth.keys import (
    AuthSources,
    KeyConfigError,
    KeyRing,
    add_key,
    encrypt_secret,
    generate_key_pair,
    new_encryption_key,
    parse_principals,
)
from engine.auth.principals import Role
from engine.settings import Settings

KEY = "AKIAEXAMPLE000000001"


def write(path: Path, data: Any, mode: int = 0o600) -> Path:
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    path.chmod(mode)
    return path


def one(secret: dict[str, str], roles: list[str] | None = None) -> dict[str, Any]:
    return {
        "principals": [
            {"name": "alice", "roles": roles or ["admin"], "keys": [{"accessKeyId": KEY, **secret}]}
        ]
    }


@pytest.mark.parametrize(
    ("data", "where"),
    [
        ({"principals": [{"name": "a b", "roles": ["admin"]}]}, "principals[0].name"),
        ({"principals": [{"name": "a", "roles": ["root"]}]}, "principals[0].roles[0]"),
        ({"principals": [{"name": "a", "roles": []}]}, "principals[0].roles"),
        ({"principals": [{"name": "a", "roles": ["admin"], "keys": [{}]}]}, "keys[0].accessKeyId"),
        (one({}), "principals[0].keys[0]: give exactly one"),
        (one({"secretAccessKey": "s", "extra": "x"}), "principals[0].keys[0].extra"),
        (
            {"principals": [one({"secretAccessKey": "s"})["principals"][0]] * 2},
            "principals[1].name: 'alice' appears twice",
        ),
    ],
)
def test_problems_are_named_by_their_path(data: dict[str, Any], where: str) -> None:
    with pytest.raises(KeyConfigError) as exc:
        parse_principals(json.dumps(data), "p.json")
    assert exc.value.message.startswith("p.json: ")
    assert where in exc.value.message


def test_yaml_is_accepted() -> None:
    text = "principals:\n  - name: bob\n    roles: [viewer]\n    keys:\n"
    text += f"      - accessKeyId: {KEY}\n        secretAccessKey: s3cret\n"
    parsed = parse_principals(text, "p.yaml")
    assert parsed.principals[0].roles == [Role.VIEWER]


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660])
def test_a_file_others_can_read_is_refused(tmp_path: Path, mode: int) -> None:
    path = write(tmp_path / "p.json", one({"secretAccessKey": "s"}), mode)
    with pytest.raises(KeyConfigError) as exc:
        KeyRing(AuthSources(principals_file=path))
    assert f"mode {mode:04o}" in exc.value.message and "chmod 600" in exc.value.message


def test_encrypted_secrets_are_decrypted_with_the_configured_key(tmp_path: Path) -> None:
    kek = new_encryption_key()
    path = write(tmp_path / "p.json", one({"secretAccessKeyEncrypted": encrypt_secret("s", kek)}))
    assert "s" not in json.loads(path.read_text())["principals"][0]["keys"][0].values()
    ring = KeyRing(AuthSources(principals_file=path, encryption_key=kek))
    identity = ring.lookup(KEY)
    assert identity is not None and identity.secret == "s"
    with pytest.raises(KeyConfigError, match="no key-encryption key"):
        KeyRing(AuthSources(principals_file=path))
    with pytest.raises(KeyConfigError, match="does not decrypt"):
        KeyRing(AuthSources(principals_file=path, encryption_key=new_encryption_key()))


def test_the_file_is_read_again_when_it_changes(tmp_path: Path) -> None:
    path = write(tmp_path / "p.json", one({"secretAccessKey": "one"}))
    ring = KeyRing(AuthSources(principals_file=path))
    assert ring.secrets()[KEY] == "one"
    write(tmp_path / "p.json", one({"secretAccessKey": "two-longer"}))
    assert ring.secrets()[KEY] == "two-longer"
    # A broken change keeps the keys in force.
    write(tmp_path / "p.json", "principals: [")
    assert ring.secrets()[KEY] == "two-longer"


ALIAS_BOMB = (
    "a: &a [x, x, x, x, x, x, x, x, x]\n"
    + "".join(
        f"{c}: &{c} [{', '.join([f'*{p}'] * 9)}]\n"
        for p, c in zip("abcdefgh", "bcdefghi", strict=True)
    )
    + "principals: [{name: alice, roles: *i}]\n"
)


@pytest.mark.parametrize(
    ("text", "why"),
    [
        (ALIAS_BOMB, "expands to more than"),  # 9**9 nodes if expanded
        ("[" * 100_000 + "]" * 100_000, "nested too deeply"),  # JSON
        ("principals: " + "[" * 100_000, "nested too deeply"),  # YAML
        ("principals:\n" + "".join(" " * i + "a:\n" for i in range(1, 3000)), "nested too"),
        ("principals: []\nprincipals: []\n", "duplicate key 'principals'"),
    ],
)
def test_hostile_yaml_is_refused_quickly_naming_the_file(text: str, why: str) -> None:
    started = time.monotonic()
    with pytest.raises(KeyConfigError, match=re.escape(why)) as exc:
        parse_principals(text, "/etc/conveyor/principals.yaml")
    assert exc.value.message.startswith("/etc/conveyor/principals.yaml: ")
    assert time.monotonic() - started < 5


def test_a_reload_that_fails_keeps_serving_the_old_keys_and_logs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = write(tmp_path / "p.yaml", one({"secretAccessKey": "kept"}))
    ring = KeyRing(AuthSources(principals_file=path))
    for broken in (ALIAS_BOMB, "principals: " + "[" * 100_000):
        caplog.clear()
        write(path, broken)
        assert ring.lookup(KEY) is not None
        assert ring.secrets()[KEY] == "kept"
        [record] = [r for r in caplog.records if r.levelname == "ERROR"]
        assert "old keys kept" in record.getMessage()
        assert str(path) in record.getMessage()


def test_a_deleted_file_revokes_its_keys_and_the_settings_keys_remain(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = write(tmp_path / "p.json", one({"secretAccessKey": "s"}))
    settings = Settings(
        auth_principals_file=path,
        auth_admin_access_key_id="AKIAADMIN00000000001",
        auth_admin_secret_access_key="a",
    )
    ring = KeyRing(AuthSources.from_settings(settings))
    assert set(ring.lookup_all()) == {KEY, "AKIAADMIN00000000001"}
    path.unlink()
    assert ring.lookup(KEY) is None
    assert set(ring.secrets()) == {"AKIAADMIN00000000001"}
    [record] = [r for r in caplog.records if r.levelname == "ERROR"]
    assert "revoked" in record.getMessage() and str(path) in record.getMessage()
    # Put back, its keys are back.
    write(path, one({"secretAccessKey": "s"}))
    assert ring.lookup(KEY) is not None


def test_settings_keys_join_the_file(tmp_path: Path) -> None:
    path = write(tmp_path / "p.json", one({"secretAccessKey": "s"}, ["viewer"]))
    settings = Settings(
        auth_principals_file=path,
        auth_admin_access_key_id="AKIAADMIN00000000001",
        auth_admin_secret_access_key="a",
    )
    ring = KeyRing(AuthSources.from_settings(settings))
    assert {k: i.principal.name for k, i in ring.lookup_all().items()} == {
        KEY: "alice",
        "AKIAADMIN00000000001": "admin",
    }
    with pytest.raises(KeyConfigError, match="set both"):
        AuthSources.from_settings(Settings(auth_admin_access_key_id="AKIAADMIN00000000001"))


def test_add_key_creates_a_private_file_and_keeps_existing_keys(tmp_path: Path) -> None:
    path = tmp_path / "p.json"
    first, secret1 = add_key(path, "alice", [Role.ADMIN])
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    second, secret2 = add_key(path, "bob", [Role.VIEWER, Role.APPROVER])
    third, _ = add_key(path, "alice", [])
    ring = KeyRing(AuthSources(principals_file=path))
    assert ring.secrets()[first] == secret1 and ring.secrets()[second] == secret2
    alice = ring.lookup(third)
    assert alice is not None and alice.principal.roles == {Role.ADMIN}
    with pytest.raises(KeyConfigError, match="at least one --role"):
        add_key(path, "carol", [])


@given(st.integers(min_value=0, max_value=5))
def test_generated_keys_are_shaped_like_aws(_: int) -> None:
    key_id, secret = generate_key_pair()
    assert re.fullmatch(r"AKIA[A-Z0-9]{16}", key_id)
    assert len(secret) == 40
