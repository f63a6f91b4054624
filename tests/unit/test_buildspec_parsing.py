"""Pure parsing: the buildspec as written, secret references, test report files."""

from __future__ import annotations

import json
from pathlib import Path
from textwrap import dedent

import pytest

from providers.buildspec import BuildspecError, parse_buildspec
from providers.reports import collect_reports, summary_text
from providers.secrets import Masker, SecretNotFound, SecretReference, SecretsSource


def spec(text: str) -> object:
    return parse_buildspec(dedent(text))


def test_commands_and_env_values_are_the_text_written() -> None:
    parsed = parse_buildspec(
        dedent(
            """
            version: 0.2
            env:
              variables:
                VERSION: 1.10
                ENABLED: yes
                MODE: 010
                EMPTY:
                QUOTED: "on"
            phases:
              install:
                commands:
                  - true
                  - 1.10
                  - yes
                  - 010
                  - 0x1F
                  - 1e3
                  - off
                  - .inf
                  - 2001-12-14
              build:
                commands: &shared
                  - 'echo "a: b"'
                  - |
                    echo one
                    echo two
                finally: *shared
            artifacts:
              files: [1.10, 'dist/**/*']
              discard-paths: yes
            """
        )
    )
    install, build = parsed.phases
    assert install.commands == [
        "true",
        "1.10",
        "yes",
        "010",
        "0x1F",
        "1e3",
        "off",
        ".inf",
        "2001-12-14",
    ]
    assert build.commands == ['echo "a: b"', "echo one\necho two\n"]
    assert build.finally_commands == build.commands
    assert parsed.variables == {
        "VERSION": "1.10",
        "ENABLED": "yes",
        "MODE": "010",
        "EMPTY": "",
        "QUOTED": "on",
    }
    assert parsed.artifacts is not None
    assert parsed.artifacts.files == ["1.10", "dist/**/*"]
    assert parsed.artifacts.discard_paths is True


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            "phases:\n  build:\n    commands:\n      - a: b\n",
            r"phases\.build\.commands\[0\] must be",
        ),
        ("phases:\n  build:\n    commands:\n      - echo\n      -\n", r"commands\[1\] is empty"),
        ("env:\n  shell: zsh\n", "env.shell 'zsh' is not supported"),
        ("env:\n  variables:\n    A: [1, 2]\n", "env.variables.A must be a single value"),
        ("env:\n  exported-variables: [GOOD, bad-name]\n", r"exported-variables\[1\] 'bad-name'"),
        ("artifacts:\n  files: [a]\n  discard-paths: maybe\n", "artifacts.discard-paths must be"),
        ("reports:\n  unit:\n    file-format: JUNIT\n    files: [a]\n", "reports.unit.file-format"),
        ("reports:\n  unit:\n    base-directory: r\n", r"reports\.unit\.files is required"),
        ("phases:\n  test:\n    commands: [x]\n", "unknown phases"),
        ("phases: [\n", "invalid YAML"),
    ],
)
def test_malformed_buildspecs_name_what_is_wrong(body: str, message: str) -> None:
    with pytest.raises(BuildspecError, match=message):
        parse_buildspec("version: 0.2\n" + body)


def test_version_must_be_0_2_as_written() -> None:
    with pytest.raises(BuildspecError, match=r"version '0\.1'"):
        parse_buildspec("version: 0.1\n")
    with pytest.raises(BuildspecError, match="version None"):
        parse_buildspec("phases: {}\n")


def test_env_sections_shell_reports_and_cache() -> None:
    parsed = parse_buildspec(
        dedent(
            """
            version: 0.2
            env:
              shell: /bin/sh
              parameter-store:
                DB_USER: /prod/db/user
              secrets-manager:
                DB_PASS: prod/db:password
              exported-variables: [IMAGE]
            reports:
              unit:
                files: ['**/*.xml']
                base-directory: reports
                discard-paths: no
              features:
                files: cucumber.json
                file-format: cucumberjson
            cache:
              paths:
                - node_modules/**/*
            """
        )
    )
    assert parsed.shell == "sh"
    assert parsed.parameter_store == {"DB_USER": "/prod/db/user"}
    assert parsed.secrets_manager == {"DB_PASS": "prod/db:password"}
    assert parsed.exported_variables == ["IMAGE"]
    assert [(r.name, r.file_format, r.base_directory, r.files) for r in parsed.reports] == [
        ("unit", "JUNITXML", "reports", ["**/*.xml"]),
        ("features", "CUCUMBERJSON", None, ["cucumber.json"]),
    ]
    assert parsed.cache_paths == ["node_modules/**/*"]


# -- secrets ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reference", "parsed"),
    [
        ("prod/db", ("prod/db", "", "", "")),
        ("prod/db:password", ("prod/db", "password", "", "")),
        ("prod/db:password:AWSCURRENT:", ("prod/db", "password", "AWSCURRENT", "")),
        (
            "arn:aws:secretsmanager:us-east-1:123456789012:secret:prod/db-AbCdEf:password",
            (
                "arn:aws:secretsmanager:us-east-1:123456789012:secret:prod/db-AbCdEf",
                "password",
                "",
                "",
            ),
        ),
    ],
)
def test_secret_references(reference: str, parsed: tuple[str, str, str, str]) -> None:
    ref = SecretReference.parse(reference)
    assert (ref.secret_id, ref.json_key, ref.version_stage, ref.version_id) == parsed


def test_secrets_source_lookups(tmp_path: Path) -> None:
    path = tmp_path / "secrets.yaml"
    path.write_text(
        dedent(
            """
            parameters:
              /prod/version: 1.10
            secrets:
              prod/db: '{"user": "app", "password": "pa55word!", "port": 5432}'
              token: plain-token-value
              mapped:
                key: from-a-mapping
            """
        )
    )
    source = SecretsSource.load(path)
    assert source.parameter("/prod/version") == "1.10"
    assert source.secret("prod/db:password") == "pa55word!"
    assert source.secret("prod/db:port") == "5432"
    assert json.loads(source.secret("prod/db"))["user"] == "app"
    assert source.secret("token") == "plain-token-value"
    assert source.secret("mapped:key") == "from-a-mapping"
    arn = "arn:aws:secretsmanager:us-east-1:123456789012:secret:prod/db-AbCdEf"
    assert source.secret(f"{arn}:user") == "app"

    with pytest.raises(SecretNotFound, match="parameter '/missing' does not exist: not in"):
        source.parameter("/missing")
    with pytest.raises(SecretNotFound, match="secret 'prod/db' has no JSON key 'nope'"):
        source.secret("prod/db:nope")
    with pytest.raises(SecretNotFound, match="'token' is not a JSON object"):
        source.secret("token:key")
    with pytest.raises(SecretNotFound, match="only the current version"):
        source.secret("token::AWSPREVIOUS")
    with pytest.raises(SecretNotFound, match="no secrets source is configured"):
        SecretsSource.load(None).parameter("/prod/version")


def test_secrets_file_errors_name_the_setting_not_values(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("passwords: [hunter2]\n")
    with pytest.raises(SecretNotFound, match=r"CONVEYOR_SECRETS_FILE .* must be a mapping") as exc:
        SecretsSource.load(path)
    assert "hunter2" not in str(exc.value)
    with pytest.raises(SecretNotFound, match="cannot be read"):
        SecretsSource.load(tmp_path / "absent.json")


def test_masker_masks_whole_values_lines_of_values_and_split_writes() -> None:
    masker = Masker()
    masker.add("s3cr3t-value")
    masker.add("line-one\nline-two")
    masker.add("ab")  # too short to mask without garbling every line
    assert masker.mask("x s3cr3t-value y line-two ab") == "x *** y *** ab"
    out: list[str] = []

    class Sink:
        def write(self, text: str) -> int:
            out.append(text)
            return len(text)

        def flush(self) -> None:
            pass

    stream = masker.stream(Sink())  # type: ignore[arg-type]
    stream.write("a s3cr3")
    stream.write("t-value b\nnext s3cr3t-")
    stream.write("value")
    stream.close()
    assert "".join(out) == "a *** b\nnext ***"


# -- reports ---------------------------------------------------------------------------

JUNIT = """<?xml version="1.0"?>
<testsuites>
  <testsuite name="a">
    <testcase name="ok" time="0.5"/>
    <testcase name="ok2" time="1,250.25"/>
    <testcase name="bad" time="0.25"><failure message="boom"/></testcase>
    <testcase name="err"><error/></testcase>
    <testcase name="skip"><skipped/></testcase>
  </testsuite>
</testsuites>
"""

CUCUMBER = [
    {
        "elements": [
            {"type": "background", "steps": [{"result": {"status": "passed"}}]},
            {
                "type": "scenario",
                "steps": [
                    {"result": {"status": "passed", "duration": 1_500_000_000}},
                    {"result": {"status": "passed", "duration": 500_000_000}},
                ],
            },
            {
                "type": "scenario",
                "steps": [{"result": {"status": "failed"}}, {"result": {"status": "skipped"}}],
            },
            {"type": "scenario", "steps": [{"result": {"status": "undefined"}}]},
        ]
    }
]

BILLION_LAUGHS = """<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
]>
<testsuite><testcase name="&lol3;"/></testsuite>
"""


def test_junit_and_cucumber_totals(tmp_path: Path) -> None:
    (tmp_path / "reports" / "deep").mkdir(parents=True)
    (tmp_path / "reports" / "deep" / "one.xml").write_text(JUNIT)
    (tmp_path / "reports" / "two.xml").write_text(
        '<testsuite><testcase name="x" time="2"/></testsuite>'
    )
    (tmp_path / "cucumber.json").write_text(json.dumps(CUCUMBER))
    parsed = parse_buildspec(
        dedent(
            """
            version: 0.2
            reports:
              unit:
                files: ['**/*.xml']
                base-directory: reports
              features:
                files: [cucumber.json]
                file-format: CUCUMBERJSON
            """
        )
    )
    unit, features = collect_reports(parsed.reports, tmp_path)
    assert (unit.files, unit.passed, unit.failed, unit.errored, unit.skipped) == (2, 3, 1, 1, 1)
    assert unit.duration_seconds == pytest.approx(1253.0)
    assert (features.passed, features.failed, features.skipped) == (1, 1, 1)
    assert features.duration_seconds == pytest.approx(2.0)
    assert summary_text([unit, features]) == (
        "tests: 3 passed, 1 failed, 1 errored, 1 skipped (report group unit); "
        "1 passed, 1 failed, 1 skipped (report group features)"
    )


def test_hostile_and_broken_reports_are_problems_not_crashes(tmp_path: Path) -> None:
    (tmp_path / "laughs.xml").write_text(BILLION_LAUGHS)
    (tmp_path / "broken.xml").write_text("<testsuite><testcase>")
    (tmp_path / "huge.xml").write_bytes(b"<testsuite>" + b" " * (11 * 1024 * 1024))
    (tmp_path / "html.xml").write_text("<html/>")
    parsed = parse_buildspec("version: 0.2\nreports:\n  unit:\n    files: ['*.xml']\n")
    [unit] = collect_reports(parsed.reports, tmp_path)
    assert unit.total == 0 and unit.files == 0
    problems = "\n".join(unit.problems)
    assert "laughs.xml: refused: EntitiesForbidden" in problems
    assert "broken.xml: not well-formed XML" in problems
    assert "huge.xml: 11534347 bytes" in problems
    assert "html.xml: root element <html>" in problems


def test_unparsed_format_and_no_matching_files(tmp_path: Path) -> None:
    parsed = parse_buildspec(
        dedent(
            """
            version: 0.2
            reports:
              cov:
                files: [coverage.xml]
                file-format: COBERTURAXML
              unit:
                files: ['missing/*.xml']
            """
        )
    )
    cov, unit = collect_reports(parsed.reports, tmp_path)
    assert cov.problems == [
        "file-format COBERTURAXML is not parsed by the local runner (JUNITXML, CUCUMBERJSON are)"
    ]
    assert unit.problems == ["no report files match ['missing/*.xml']"]
    assert unit.describe() == "no test cases (report group unit)"


def test_billion_laughs_buildspec_is_refused_quickly() -> None:
    import time

    lines = ["version: 0.2", 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for prev, cur in zip("abcdefgh", "bcdefghi", strict=True):
        lines.append(f"{cur}: &{cur} [{','.join([f'*{prev}'] * 9)}]")
    started = time.monotonic()
    with pytest.raises(BuildspecError, match="alias expansion"):
        parse_buildspec("\n".join(lines))
    assert time.monotonic() - started < 2
