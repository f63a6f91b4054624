"""Which git events start which pipelines: AWS's documented examples, and properties."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.definition.model import ActionDeclaration, PipelineDeclaration
from engine.definition.triggers import (
    FilterCriteria,
    GitPullRequestFilter,
    GitPushFilter,
    PipelineTriggerDeclaration,
    PullRequestEvent,
    check_triggers,
)
from engine.git_triggers import (
    COMMIT_ID,
    GitEvent,
    GitEventKind,
    criteria_match,
    files_match,
    plan_starts,
    trigger_matches,
)
from engine.globs import matches

REPO = "octo/monorepo"
CONNECTION = "arn:aws:codestar-connections:eu-central-1:111122223333:connection/fe9ff2e8"

# The filters of AWS's "Trigger filtering in the pipeline JSON (CLI)" reference, split into
# the combinations its filter guide allows (branches + file paths; tags alone).
AWS_BRANCHES = {"includes": ["feature/**", "release/**"], "excludes": ["mainline"]}
AWS_FILE_PATHS = {
    "includes": ["projectA/**", "common/**/*.js"],
    "excludes": ["**/README.md", "**/LICENSE", "**/CONTRIBUTING.md"],
}
AWS_TAGS = {"includes": ["release-v0", "release-v1"], "excludes": ["release-v2"]}


def source_action(**config: str) -> dict[str, Any]:
    return {
        "name": "ApplicationSource",
        "actionTypeId": {
            "category": "Source",
            "owner": "AWS",
            "provider": "CodeStarSourceConnection",
            "version": "1",
        },
        "configuration": {
            "BranchName": "mainline",
            "ConnectionArn": CONNECTION,
            "FullRepositoryId": REPO,
            **config,
        },
        "outputArtifacts": [{"name": "Src"}],
    }


def pipeline(name: str, git: dict[str, Any], **config: str) -> PipelineDeclaration:
    return PipelineDeclaration.model_validate(
        {
            "name": name,
            "stages": [
                {"name": "Source", "actions": [source_action(**config)]},
                {
                    "name": "Build",
                    "actions": [
                        {
                            "name": "Compile",
                            "actionTypeId": {
                                "category": "Build",
                                "owner": "AWS",
                                "provider": "CodeBuild",
                                "version": "1",
                            },
                            "configuration": {"ProjectName": "p"},
                            "inputArtifacts": [{"name": "Src"}],
                        }
                    ],
                },
            ],
            "triggers": [
                {
                    "providerType": "CodeStarSourceConnection",
                    "gitConfiguration": {"sourceActionName": "ApplicationSource", **git},
                }
            ],
        }
    )


def push(
    branch: str | None = "feature/login", files: set[str] | None = None, **kw: Any
) -> GitEvent:
    return GitEvent(
        kind=GitEventKind.PUSH,
        repository=REPO,
        commit_id="c0ffee" * 6 + "abcd",
        branch=branch,
        changed_files=frozenset(files) if files is not None else None,
        author="Mona",
        message="Fix login",
        **kw,
    )


def pull_request(
    event: PullRequestEvent, base: str = "release/1.0", files: set[str] | None = None
) -> GitEvent:
    return GitEvent(
        kind=GitEventKind.PULL_REQUEST,
        repository=REPO,
        commit_id="head" * 10,
        branch="feature/login",
        base_branch=base,
        pr_event=event,
        changed_files=frozenset(files) if files is not None else None,
    )


def starts(decl: PipelineDeclaration, event: GitEvent) -> bool:
    return [p.pipeline for p in plan_starts(event, [decl])] == [decl.name]


# --- AWS's documented examples ------------------------------------------------------------

BRANCHES_AND_PATHS = pipeline(
    "branches-and-paths", {"push": [{"branches": AWS_BRANCHES, "filePaths": AWS_FILE_PATHS}]}
)


@pytest.mark.parametrize(
    ("branch", "files", "expected"),
    [
        ("feature/login", {"projectA/src/app.py"}, True),
        ("release/2024/q1", {"common/lib/util.js"}, True),
        ("feature/login", {"projectA/README.md"}, False),  # only an excluded path
        ("feature/login", {"projectA/README.md", "projectA/app.py"}, True),
        ("feature/login", {"projectB/app.py"}, False),  # nothing included
        ("mainline", {"projectA/app.py"}, False),  # excluded branch
        ("hotfix", {"projectA/app.py"}, False),  # branch not included
        ("feature/login", set(), False),  # a push that changed no file
    ],
)
def test_push_filter_on_branches_and_file_paths(
    branch: str, files: set[str], expected: bool
) -> None:
    assert starts(BRANCHES_AND_PATHS, push(branch, files)) is expected


def test_tags_filter_takes_tag_pushes_only() -> None:
    decl = pipeline("tags", {"push": [{"tags": AWS_TAGS}]})
    assert starts(decl, push(None, tag="release-v1"))
    assert not starts(decl, push(None, tag="release-v2"))
    assert not starts(decl, push(None, tag="v1"))
    assert not starts(decl, push("release-v1"))  # a branch of that name is not a tag


def test_pull_request_filter_only_on_listed_events() -> None:
    decl = pipeline(
        "pr-closed",
        {"pullRequest": [{"events": ["CLOSED"], "branches": AWS_BRANCHES}]},
    )
    assert starts(decl, pull_request(PullRequestEvent.CLOSED))
    assert not starts(decl, pull_request(PullRequestEvent.OPEN))
    assert not starts(decl, pull_request(PullRequestEvent.CLOSED, base="mainline"))
    assert not starts(decl, push("release/1.0"))  # pull request filters ignore pushes


def test_pull_request_filter_without_events_takes_all_three() -> None:
    decl = pipeline("pr-any", {"pullRequest": [{"branches": {"includes": ["main"]}}]})
    for event in PullRequestEvent:
        assert starts(decl, pull_request(event, base="main"))


def test_no_filter_starts_on_a_push_to_the_actions_branch_only() -> None:
    decl = pipeline("unfiltered", {})
    assert starts(decl, push("mainline"))
    assert not starts(decl, push("feature/login"))
    assert not starts(decl, pull_request(PullRequestEvent.OPEN, base="mainline"))
    assert not starts(decl, push(None, tag="mainline"))


def test_events_from_another_repository_start_nothing() -> None:
    decl = pipeline("unfiltered", {})
    assert not starts(decl, replace(push("mainline"), repository="octo/other"))
    assert starts(decl, replace(push("mainline"), repository=REPO.upper()))


def test_the_start_pins_the_commit_and_names_the_connection() -> None:
    plan = plan_starts(push("mainline"), [pipeline("unfiltered", {})])[0]
    assert plan.trigger_detail == CONNECTION
    rev = plan.source_revision
    assert rev["actionName"] == "ApplicationSource"
    assert rev["revisionType"] == COMMIT_ID
    assert rev["revisionId"] == push().commit_id
    assert rev["branchName"] == "mainline"
    summary = json.loads(rev["revisionSummary"])
    assert summary == {
        "ProviderType": "GitHub",
        "CommitMessage": "Fix login",
        "AuthorDisplayName": "Mona",
        "BranchName": "mainline",
    }


def test_codecommit_and_github_v1_sources_name_their_repository() -> None:
    decl = pipeline("unfiltered", {})
    action = decl.stages[0].actions[0]
    trigger = decl.triggers[0]
    codecommit = ActionDeclaration.model_validate(
        {
            "name": "ApplicationSource",
            "actionTypeId": {
                "category": "Source",
                "owner": "AWS",
                "provider": "CodeCommit",
                "version": "1",
            },
            "configuration": {"RepositoryName": "monorepo", "BranchName": "mainline"},
        }
    )
    github = ActionDeclaration.model_validate(
        {
            "name": "ApplicationSource",
            "actionTypeId": {
                "category": "Source",
                "owner": "ThirdParty",
                "provider": "GitHub",
                "version": "1",
            },
            "configuration": {"Owner": "octo", "Repo": "monorepo", "Branch": "mainline"},
        }
    )
    for a in (action, codecommit, github):
        assert trigger_matches(trigger, a, push("mainline"))
        assert not trigger_matches(trigger, a, replace(push("mainline"), repository="x/y"))


# --- Definition-time rules ----------------------------------------------------------------


def problems(git: dict[str, Any], provider: str = "CodeStarSourceConnection") -> list[str]:
    trigger = PipelineTriggerDeclaration.model_validate(
        {
            "providerType": "CodeStarSourceConnection",
            "gitConfiguration": {"sourceActionName": "Src", **git},
        }
    )
    return [str(p) for p in check_triggers([trigger], {"Src": ("AWS", provider)})]


@pytest.mark.parametrize(
    ("git", "fragment"),
    [
        (
            {"push": [{"tags": AWS_TAGS, "branches": AWS_BRANCHES}]},
            "gitConfiguration.push[0]: a push filter filters on tags, or on branches",
        ),
        (
            {"push": [{"filePaths": AWS_FILE_PATHS}]},
            "push[0]: a push filter needs tags or branches",
        ),
        ({"pullRequest": [{"events": ["OPEN"]}]}, "pullRequest[0].branches: a pull request"),
        (
            {"pullRequest": [{"events": ["OPEN", "OPEN"], "branches": AWS_BRANCHES}]},
            "pullRequest[0].events: an event is listed more than once",
        ),
        ({"push": [{"branches": {}}]}, "push[0].branches: give includes, excludes or both"),
        (
            {"push": [{"branches": {"includes": ["feature/[abc"]}}]},
            "push[0].branches.includes[0]: pattern 'feature/[abc': '[' is never closed",
        ),
        (
            {"push": [{"branches": {"includes": ["x" * 256]}}]},
            "includes[0]: must be 1-255 characters",
        ),
    ],
)
def test_bad_filters_are_named_with_their_path(git: dict[str, Any], fragment: str) -> None:
    found = problems(git)
    assert any(fragment in p for p in found), found


def test_a_trigger_needs_a_git_source_action() -> None:
    assert any("'Src' is a AWS/S3 source" in p for p in problems({}, provider="S3"))


def test_one_trigger_per_source_action() -> None:
    one = {
        "providerType": "CodeStarSourceConnection",
        "gitConfiguration": {"sourceActionName": "Src"},
    }
    triggers = [PipelineTriggerDeclaration.model_validate(one)] * 2
    found = [str(p) for p in check_triggers(triggers, {"Src": ("AWS", "CodeCommit")})]
    assert found == [
        "triggers[1].gitConfiguration.sourceActionName: "
        "'Src' already has a trigger; a source action takes only one"
    ]


def test_aws_limits_on_counts_are_enforced_by_the_model() -> None:
    from pydantic import ValidationError

    four = [{"branches": {"includes": ["main"]}}] * 4
    with pytest.raises(ValidationError) as exc:
        PipelineTriggerDeclaration.model_validate(
            {
                "providerType": "CodeStarSourceConnection",
                "gitConfiguration": {"sourceActionName": "Src", "push": four},
            }
        )
    assert exc.value.errors()[0]["loc"] == ("gitConfiguration", "push")
    with pytest.raises(ValidationError) as exc:
        FilterCriteria.model_validate({"includes": [f"b{i}" for i in range(9)]})
    assert exc.value.errors()[0]["loc"] == ("includes",)


# --- Properties ---------------------------------------------------------------------------

PATTERNS = ["main", "feature/*", "feature/**", "release-?", "**", "*", "docs/**", "**/*.md"]
NAMES = ["main", "feature/a", "feature/a/b", "release-1", "release-10", "docs/x.md", "x.md"]
patterns = st.lists(st.sampled_from(PATTERNS), min_size=1, max_size=3)
criteria = st.builds(
    FilterCriteria,
    includes=st.none() | patterns,
    excludes=st.none() | patterns,
)
names = st.sampled_from(NAMES)
file_sets = st.frozensets(names, max_size=4)


@given(criteria, names)
def test_excludes_win_over_includes(c: FilterCriteria, name: str) -> None:
    if any(matches(p, name) for p in c.excludes or []):
        assert not criteria_match(c, name)
    elif c.includes is not None:
        assert criteria_match(c, name) is any(matches(p, name) for p in c.includes)


@given(names)
def test_an_absent_filter_matches_everything(name: str) -> None:
    assert criteria_match(None, name)
    assert criteria_match(FilterCriteria(), name)


@given(criteria, file_sets, file_sets)
def test_more_changed_files_never_unmatch(
    c: FilterCriteria, a: frozenset[str], b: frozenset[str]
) -> None:
    if files_match(c, a):
        assert files_match(c, a | b)


@given(criteria, file_sets)
def test_file_paths_match_when_some_file_passes(c: FilterCriteria, files: frozenset[str]) -> None:
    assert files_match(c, files) is any(criteria_match(c, f) for f in files)
    assert files_match(c, None)  # unknown files cannot rule an event out


@given(
    st.lists(
        st.builds(GitPushFilter, branches=criteria, file_paths=st.none() | criteria),
        min_size=1,
        max_size=3,
    ),
    names,
    file_sets,
)
def test_push_filters_are_alternatives(
    filters: list[GitPushFilter], branch: str, files: frozenset[str]
) -> None:
    event = push(branch, set(files))
    whole = pipeline(
        "p", {"push": [f.model_dump(by_alias=True, exclude_none=True) for f in filters]}
    )
    each = [
        starts(pipeline("p", {"push": [f.model_dump(by_alias=True, exclude_none=True)]}), event)
        for f in filters
    ]
    assert starts(whole, event) is any(each)


@given(
    criteria,
    names,
    st.sampled_from(list(PullRequestEvent)),
    st.sets(st.sampled_from(list(PullRequestEvent)), min_size=1),
)
def test_pull_requests_start_only_on_listed_events(
    c: FilterCriteria, base: str, event: PullRequestEvent, listed: set[PullRequestEvent]
) -> None:
    f = GitPullRequestFilter(events=sorted(listed), branches=c)
    decl = pipeline("p", {"pullRequest": [f.model_dump(by_alias=True, exclude_none=True)]})
    started = starts(decl, pull_request(event, base=base))
    assert started is (event in listed and criteria_match(c, base))


@given(criteria, names)
def test_tag_pushes_and_branch_pushes_never_cross(c: FilterCriteria, name: str) -> None:
    on_branches = pipeline("b", {"push": [{"branches": c.model_dump(exclude_none=True)}]})
    on_tags = pipeline("t", {"push": [{"tags": c.model_dump(exclude_none=True)}]})
    assert not starts(on_branches, push(None, tag=name))
    assert not starts(on_tags, push(name))
