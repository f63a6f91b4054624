"""The buildspec runner with real bash: commands as written, secrets, shells, reports, cache,
source versions, several inputs and outputs."""

from __future__ import annotations

import json
import re
import threading
from pathlib import Path
from textwrap import dedent

import pytest

from providers.build_cache import BuildCache, project_dir
from providers.codebuild import CodeBuildTest
from tests.unit.test_codebuild import make_job, run


def _tool(name: str) -> str:
    """A script on PATH that records its own name: shows which command really ran."""
    return f'#!/bin/sh\necho "{name}" >> "$CODEBUILD_SRC_DIR/ran.txt"\n'


def test_commands_run_exactly_as_written(tmp_path: Path) -> None:
    # Each name YAML 1.1 would retype, and each name it would retype it into, is a tool
    # that records itself: only the names as written may show up.
    names = ["1.10", "010", "yes", "on", "True", "true_", "1.1", "8", "10", "0x1F", "31"]
    job = make_job(
        tmp_path,
        """
        version: 0.2
        env:
          variables:
            PLAIN: 1.10
            FLAG: yes
        phases:
          install:
            commands:
              - chmod +x bin/*
              - export PATH="$CODEBUILD_SRC_DIR/bin:$PATH"
          build:
            commands:
              - true
              - 1.10
              - 010
              - yes
              - on
              - 0x1F
              - echo "$PLAIN $FLAG" > env.txt
        artifacts:
          files: [ran.txt, env.txt]
        """,
        files={f"bin/{n}": _tool(n) for n in names},
    )
    result, log = run(job)
    assert result.succeeded, log
    out = job.outputs["BuildOutput"]
    assert (out / "ran.txt").read_text().split() == ["1.10", "010", "yes", "on", "0x1F"]
    assert (out / "env.txt").read_text() == "1.10 yes\n"
    assert "Running command 1.10\n" in log and "Running command 010\n" in log


SECRETS = """
parameters:
  /prod/db/user: app-user-name
  /prod/api/key: api-key-0123456789
secrets:
  prod/db: '{"password": "pa55-word-XYZ", "host": "db.internal"}'
  deploy-token: tok-abcdef-123456
"""


def test_parameters_and_secrets_resolved_masked_and_never_exported(tmp_path: Path) -> None:
    secrets_file = tmp_path / "secrets.yaml"
    secrets_file.write_text(SECRETS)
    job = make_job(
        tmp_path,
        """
        version: 0.2
        env:
          parameter-store:
            DB_USER: /prod/db/user
          secrets-manager:
            DB_PASS: prod/db:password
            DB_HOST: prod/db:host
          exported-variables: [DB_HOST, LEAK, SAFE]
        phases:
          build:
            commands:
              - echo "user=$DB_USER pass=$DB_PASS token=$TOKEN key=$API_KEY"
              - printf '%s|%s|%s|%s' "$DB_USER" "$DB_PASS" "$TOKEN" "$API_KEY" > seen.txt
              - LEAK="prefix-$DB_PASS"
              - SAFE=fine
        artifacts:
          files: [seen.txt]
        """,
        config={
            "EnvironmentVariables": json.dumps(
                [
                    {"name": "TOKEN", "value": "deploy-token", "type": "SECRETS_MANAGER"},
                    {"name": "API_KEY", "value": "/prod/api/key", "type": "PARAMETER_STORE"},
                ]
            )
        },
    )
    job.secrets_file = str(secrets_file)
    result, log = run(job)
    assert result.succeeded, log
    values = ["app-user-name", "pa55-word-XYZ", "tok-abcdef-123456", "api-key-0123456789"]
    # The build itself saw the real values ...
    seen = (job.outputs["BuildOutput"] / "seen.txt").read_text()
    assert seen == "|".join(values)
    # ... but no log, mirror, summary or output variable holds one.
    mirrored = job.log.getvalue()  # type: ignore[attr-defined]
    for value in values:
        assert value not in log and value not in mirrored
        assert value not in json.dumps(result.output_variables)
        assert value not in (result.summary or "")
    assert "user=*** pass=*** token=*** key=***" in log
    assert "user=*** pass=*** token=*** key=***" in mirrored
    # A secret (DB_HOST) or a value holding one (LEAK) never becomes an output variable.
    assert result.output_variables == {"SAFE": "fine"}
    assert "Not exporting LEAK: its value holds a secret" in log
    assert "Not exporting DB_HOST: its value holds a secret" in log


@pytest.mark.parametrize(
    ("env_section", "config_env", "message"),
    [
        (
            "parameter-store:\n    DB_USER: /prod/db/missing",
            None,
            "env.parameter-store.DB_USER: parameter '/prod/db/missing' does not exist",
        ),
        (
            "secrets-manager:\n    DB_PASS: prod/db:nokey",
            None,
            "env.secrets-manager.DB_PASS: secret 'prod/db' has no JSON key 'nokey'",
        ),
        (
            "variables:\n    X: y",
            [{"name": "TOKEN", "value": "absent-secret", "type": "SECRETS_MANAGER"}],
            r"EnvironmentVariables\[0\] TOKEN: secret 'absent-secret' does not exist",
        ),
    ],
)
def test_missing_parameter_or_secret_fails_naming_variable_and_name(
    tmp_path: Path, env_section: str, config_env: list[dict[str, str]] | None, message: str
) -> None:
    secrets_file = tmp_path / "secrets.yaml"
    secrets_file.write_text(SECRETS)
    buildspec = (
        "version: 0.2\nenv:\n  "
        + env_section
        + "\nphases:\n  build:\n    commands:\n      - touch ran\n"
    )
    job = make_job(
        tmp_path,
        buildspec,
        outputs=(),
        config={"EnvironmentVariables": json.dumps(config_env)} if config_env else None,
    )
    job.secrets_file = str(secrets_file)
    result, log = run(job)
    assert not result.succeeded
    assert result.error_code == "ConfigurationError"
    assert result.error_message is not None
    assert result.error_message.startswith("Build failed in phase DOWNLOAD_SOURCE: ")
    assert re.search(message, result.error_message), result.error_message
    assert "Running command" not in log  # nothing ran
    for value in ("pa55-word-XYZ", "db.internal", "tok-abcdef-123456"):
        assert value not in log and value not in result.error_message


@pytest.mark.parametrize(("shell", "posix"), [("bash", False), ("/bin/sh", True), (None, False)])
def test_env_shell(tmp_path: Path, shell: str | None, posix: bool) -> None:
    shell_line = f"  shell: {shell}\n" if shell else ""
    job = make_job(
        tmp_path,
        "version: 0.2\nenv:\n"
        + shell_line
        + "  variables:\n    A: b\nphases:\n  build:\n    commands:\n"
        + "      - cd sub\n"
        + "      - 'case :$SHELLOPTS: in *:posix:*) echo posix ;; *) echo bash ;; esac > mode'\n"
        + "artifacts:\n  files: ['sub/mode']\n",
        files={"sub/.keep": ""},
    )
    result, log = run(job)
    assert result.succeeded, log
    mode = (job.outputs["BuildOutput"] / "sub" / "mode").read_text().strip()
    assert mode == ("posix" if posix else "bash")
    assert "Running command cd sub" in log and "set -o posix" not in log


JUNIT = (
    '<testsuite name="unit"><testcase name="a" time="0.1"/><testcase name="b" time="0.2"/>'
    '<testcase name="c"><failure message="no"/></testcase></testsuite>'
)


def test_reports_are_summarised_and_failed_cases_do_not_fail_a_test_action(
    tmp_path: Path,
) -> None:
    job = make_job(
        tmp_path,
        """
        version: 0.2
        phases:
          build:
            commands:
              - mkdir -p out/junit && cp junit.xml out/junit/TEST-unit.xml
        reports:
          unit:
            files: ['**/*']
            base-directory: out/junit
          cov:
            files: [coverage.xml]
            file-format: COBERTURAXML
        """,
        files={"junit.xml": JUNIT},
        outputs=(),
    )
    result = CodeBuildTest().run(job)
    assert result.succeeded  # failed test cases alone never fail the build, as on CodeBuild
    assert result.summary == (
        "Build succeeded; tests: 2 passed, 1 failed (report group unit); "
        "no test cases (report group cov)"
    )
    report = json.loads(result.attachments["test-reports"].read_text())
    unit = report["reportGroups"][0]
    assert (unit["name"], unit["passed"], unit["failed"], unit["total"]) == ("unit", 2, 1, 3)
    assert unit["duration_seconds"] == pytest.approx(0.3)
    # The build log stays the action's log: the worker stores the last attachment as the log.
    assert list(result.attachments)[-1] == "build-log"
    log = result.attachments["build-log"].read_text()
    assert "Report group unit (JUNITXML): 1 files, 2 passed, 1 failed" in log
    assert "Report group cov: file-format COBERTURAXML is not parsed" in log


def test_reports_are_kept_when_the_build_fails(tmp_path: Path) -> None:
    job = make_job(
        tmp_path,
        """
        version: 0.2
        phases:
          build:
            commands:
              - cp junit.xml report.xml
              - exit 4
        reports:
          unit:
            files: [report.xml]
        """,
        files={"junit.xml": JUNIT},
        outputs=(),
    )
    result, _ = run(job)
    assert not result.succeeded
    assert result.summary == (
        "Build failed in phase BUILD: command `exit 4` exited 4; "
        "tests: 2 passed, 1 failed (report group unit)"
    )


CACHED_BUILD = """
version: 0.2
phases:
  install:
    commands:
      - if [ -f deps/lib.txt ]; then echo hit > state.txt; else echo miss > state.txt; fi
      - mkdir -p deps/nested && echo "lib $RUN" > deps/lib.txt && echo n > deps/nested/n.txt
      - echo not-cached > other.txt
artifacts:
  files: [state.txt]
cache:
  paths:
    - 'deps/**/*'
    - /root/.m2/**/*
"""


def _cached_run(tmp_path: Path, name: str, project: str, cache_root: Path) -> tuple[str, str]:
    job = make_job(tmp_path / name, CACHED_BUILD, config={"ProjectName": project})
    job.cache_root = cache_root
    result, log = run(job)
    assert result.succeeded, log
    return (job.outputs["BuildOutput"] / "state.txt").read_text().strip(), log


def test_cache_paths_are_restored_per_project(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    for d in ("one", "two", "three"):
        (tmp_path / d).mkdir()
    first, log = _cached_run(tmp_path, "one", "proj", cache)
    assert first == "miss"
    assert "Cache: nothing cached for this project yet" in log
    assert "Cache: saved 2 files" in log
    assert "'/root/.m2/**/*' is outside the source directory" in log
    second, log = _cached_run(tmp_path, "two", "proj", cache)
    assert second == "hit"
    assert "Cache: restored 2 files" in log
    other, _ = _cached_run(tmp_path, "three", "another project", cache)
    assert other == "miss"
    entry = project_dir(cache, "proj") / "current"
    assert sorted(p.relative_to(entry).as_posix() for p in entry.rglob("*") if p.is_file()) == [
        "deps/lib.txt",
        "deps/nested/n.txt",
    ]


def test_cache_over_its_limit_is_not_saved(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "deps").mkdir(parents=True)
    (src / "deps" / "big").write_bytes(b"x" * 2048)
    notes: list[str] = []
    cache = BuildCache(tmp_path / "cache", "p", 1024, notes.append)
    assert cache.save(src, ["deps/**/*"]) == 0
    assert "2048 bytes is over the limit of 1024 bytes" in notes[-1]
    assert not (cache.dir / "current").exists()


def test_concurrent_saves_and_restores_never_see_a_partial_cache(tmp_path: Path) -> None:
    """Writers each save a complete, self-consistent set; readers must only ever restore one
    whole set (all files from one writer), never a mix or a half-copied entry."""
    root = tmp_path / "cache"
    errors: list[str] = []

    def writer(n: int) -> None:
        src = tmp_path / f"w{n}"
        (src / "deps").mkdir(parents=True)
        for i in range(20):
            (src / "deps" / f"f{i}").write_text(f"{n}\n" * 200)
        cache = BuildCache(root, "shared", 10**9, lambda _: None)
        for _ in range(5):
            cache.save(src, ["deps/**/*"])

    def reader(n: int) -> None:
        cache = BuildCache(root, "shared", 10**9, lambda _: None)
        for k in range(10):
            dest = tmp_path / f"r{n}-{k}"
            dest.mkdir()
            if cache.restore(dest) == 0:
                continue
            contents = {p.read_text() for p in (dest / "deps").iterdir()}
            if len(contents) != 1 or len(list((dest / "deps").iterdir())) != 20:
                errors.append(f"reader {n} saw a mixed or partial cache")

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(3)]
    threads += [threading.Thread(target=reader, args=(n,)) for n in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    # An entry a reader held during the last prune outlives it; the next save removes it.
    BuildCache(root, "shared", 10**9, lambda _: None).save(tmp_path / "w0", ["deps/**/*"])
    entries = [p for p in project_dir(root, "shared").glob("entry-*") if p.is_dir()]
    assert len(entries) == 1  # every superseded entry was removed once no one read it
    current = project_dir(root, "shared") / "current"
    assert current.resolve() == entries[0].resolve()
    assert len(list((current / "deps").iterdir())) == 20
    assert not list(project_dir(root, "shared").glob("tmp-*"))


def test_source_versions_secondary_inputs_and_several_outputs(tmp_path: Path) -> None:
    job = make_job(
        tmp_path,
        None,
        files={"app.txt": "app"},
        extra_inputs={
            "Tools": {
                "buildspec.yml": dedent(
                    """
                    version: 0.2
                    phases:
                      build:
                        commands:
                          - mkdir -p dist/bin dist/doc
                          - echo "$CODEBUILD_RESOLVED_SOURCE_VERSION" > dist/bin/resolved
                          - echo "$CODEBUILD_SOURCE_VERSION" > dist/bin/version
                          - cp "$CODEBUILD_SRC_DIR_SourceOutput/app.txt" dist/bin/app.txt
                          - echo "$CODEBUILD_SOURCE_VERSION_SourceOutput" > dist/doc/other
                          - echo skip > dist/bin/skip.tmp
                    artifacts:
                      files: ['**/*']
                      base-directory: dist
                      exclude-paths: ['**/*.tmp']
                      secondary-artifacts:
                        Docs:
                          files: [dist/doc/other, dist/bin/app.txt]
                          discard-paths: yes
                    """
                )
            }
        },
        outputs=("Main", "Docs"),
        config={"PrimarySource": "Tools"},
    )
    job.input_revisions = {"Tools": "3f2c1e0commitid", "SourceOutput": "s3-version-7"}
    result, log = run(job)
    assert result.succeeded, log
    main, docs = job.outputs["Main"], job.outputs["Docs"]
    assert sorted(p.relative_to(main).as_posix() for p in main.rglob("*") if p.is_file()) == [
        "bin/app.txt",
        "bin/resolved",
        "bin/version",
        "doc/other",
    ]
    assert (main / "bin/resolved").read_text().strip() == "3f2c1e0commitid"
    assert (main / "bin/version").read_text().strip() == "3f2c1e0commitid"
    assert (main / "bin/app.txt").read_text() == "app"
    assert sorted(p.name for p in docs.iterdir()) == ["app.txt", "other"]
    assert (docs / "other").read_text().strip() == "s3-version-7"


def test_source_version_falls_back_to_the_execution_id(tmp_path: Path) -> None:
    job = make_job(
        tmp_path,
        """
        version: 0.2
        phases:
          build:
            commands:
              - echo "$CODEBUILD_RESOLVED_SOURCE_VERSION" > v
        artifacts:
          files: [v]
        """,
    )
    result, _ = run(job)
    assert result.succeeded
    assert (job.outputs["BuildOutput"] / "v").read_text().strip() == "exec-1"


def test_a_broken_secrets_file_fails_only_builds_that_use_it(tmp_path: Path) -> None:
    broken = tmp_path / "secrets.yaml"
    broken.write_text("parameters: [\n")
    plain = make_job(
        tmp_path / "plain", "version: 0.2\nphases:\n  build:\n    commands: [true]\n", outputs=()
    )
    plain.secrets_file = str(broken)
    assert run(plain)[0].succeeded
    uses = make_job(
        tmp_path / "uses",
        "version: 0.2\nenv:\n  parameter-store:\n    P: /p\n"
        "phases:\n  build:\n    commands: [true]\n",
        outputs=(),
    )
    uses.secrets_file = str(broken)
    result, _ = run(uses)
    assert not result.succeeded
    assert f"CONVEYOR_SECRETS_FILE {broken} is not valid JSON or YAML" in (result.summary or "")
