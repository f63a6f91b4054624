"""Bounded work per request, the pure parts: the body parser's limits, the capped problem
lists, the declaration held to botocore's limits, version pruning, and YAML alias bombs."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.api.parsing import BodyLimits, ProtocolError, parse_body, scan
from engine.api.validation import check_input
from engine.awsmodel import MAX_REPORTED, MAX_SHOWN, Findings
from engine.definition import parse_document, validate
from engine.errors import MAX_PROBLEMS_SHOWN, DefinitionError
from engine.store.definitions import _pruned
from tests.e2e.api_support import definition, registry

LIMITS = BodyLimits()
REGISTRY = registry()


def refused(raw: bytes | str) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        parse_body(raw.encode() if isinstance(raw, str) else raw, LIMITS)
    return info.value


# ---------------------------------------------------------------------------- the parser


def test_deep_nesting_is_refused_at_the_limit_and_beyond_the_parsers_recursion() -> None:
    ok = "[" * LIMITS.max_depth + "]" * LIMITS.max_depth
    assert parse_body(f'{{"a": {ok}}}'.encode(), BodyLimits(max_depth=LIMITS.max_depth + 1))
    for depth in (LIMITS.max_depth + 1, 990, 5000, 200_000):
        err = refused('{"a": ' + "[" * depth + "]" * depth + "}")
        assert err.code == "SerializationException"
        assert err.status == 400


def test_long_integer_literals_and_non_json_constants_are_refused() -> None:
    assert parse_body(b'{"n": -12345678901234567890}', LIMITS) == {"n": -12345678901234567890}
    for body in ('{"n": ' + "9" * 4301 + "}", '{"n": ' + "1" * 33 + "}", '{"n": NaN}'):
        err = refused(body)
        assert (err.code, err.status) == ("SerializationException", 400)
    assert "digits" in refused('{"n": ' + "7" * 5000 + "}").message


def test_lone_surrogates_are_refused_naming_the_member() -> None:
    err = refused('{"pipeline": {"stages": [{"name": "x\\ud800"}]}}')
    assert (err.code, err.status) == ("ValidationException", 400)
    assert "'pipeline.stages[0].name'" in err.message
    assert "<key>" in refused('{"a": {"\\udfff": 1}}').message
    # A well-formed pair is a character, not a surrogate.
    assert parse_body(b'{"s": "\\ud83d\\ude00"}', LIMITS) == {"s": "\U0001f600"}


def test_non_utf8_bytes_are_refused() -> None:
    err = refused(b'{"name": "\xff\xfe"}')
    assert (err.code, err.status) == ("SerializationException", 400)


def test_scan_measures_depth_without_recursion() -> None:
    deep: Any = []
    for _ in range(50_000):
        deep = [deep]
    depth, bad = scan({"a": deep})
    assert (depth, bad) == (50_002, None)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(
    operation=st.sampled_from(
        ["CreatePipeline", "StartPipelineExecution", "ListPipelineExecutions", "PutApprovalResult"]
    ),
    body=st.dictionaries(
        st.sampled_from(
            ["name", "pipeline", "variables", "filter", "pipelineName", "result", "nextToken"]
        )
        | st.text(max_size=5),
        json_values,
        max_size=5,
    ),
)
def test_parser_and_validator_refuse_only_with_protocol_errors_or_findings(
    operation: str, body: dict[str, Any]
) -> None:
    """Whatever JSON arrives, parsing and checking end in a value or a 4xx, never a crash."""
    raw = json.dumps(body).encode()
    try:
        parsed = parse_body(raw, LIMITS)
    except ProtocolError as exc:
        assert 400 <= exc.status < 500
        return
    found = check_input(operation, parsed)
    if found:
        message = found.message()
        assert message.startswith(f"{len(found)}")
        assert len(message) < 400 * (MAX_REPORTED + 1)
    else:  # nulls the model allows are gone before a handler sees the body
        assert None not in parsed.values()


def test_nulls_where_the_model_wants_a_structure_or_list_are_refused() -> None:
    found = check_input("StartPipelineExecution", {"name": "p", "variables": None})
    assert [f.path for f in found.items] == ["variables"]
    assert "Member must not be null" in found.message()
    found = check_input(
        "ListPipelineExecutions", {"pipelineName": "p", "filter": {"succeededInStage": None}}
    )
    assert [f.path for f in found.items] == ["filter.succeededInStage"]
    body: dict[str, Any] = {"pipelineName": "p", "nextToken": None, "maxResults": None}
    assert not check_input("ListPipelineExecutions", body)
    assert body == {"pipelineName": "p"}  # an optional scalar's null means "absent"


def test_problem_lists_are_capped_and_values_cut_short() -> None:
    body = {"name": "p", "variables": [{"name": "x" * 10_000, "value": 5}] * 100_000}
    started = time.monotonic()
    found = check_input("StartPipelineExecution", body)
    assert time.monotonic() - started < 2
    assert len(found.items) == MAX_REPORTED
    message = found.message()
    assert "more" in message
    assert len(message) < 300 * (MAX_REPORTED + 1)
    assert "x" * (MAX_SHOWN + 1) not in message


@given(st.integers(min_value=0, max_value=10_000), st.integers(min_value=0, max_value=300))
def test_findings_keep_a_bounded_number(n: int, keep: int) -> None:
    found = Findings(keep=keep)
    for i in range(n):
        if found.full:
            break
        found.add(f"p{i}", "rule", "v" * 1000)
    assert len(found.items) == min(n, keep)
    assert len(found.message()) <= 200 * (keep + 1) + 100


# ---------------------------------------------------------------------------- the declaration


def problems_of(decl: dict[str, Any]) -> str:
    with pytest.raises(DefinitionError) as info:
        validate(decl, REGISTRY)
    return info.value.message


def test_declaration_members_are_held_to_the_models_limits() -> None:
    decl = definition("limits")
    decl["stages"][0]["actions"][0]["configuration"]["S3ObjectKey"] = "k" * 1001
    decl["variables"][0]["description"] = "d" * 201
    decl["stages"][1]["actions"][0]["actionTypeId"]["provider"] = "P" * 36
    message = problems_of(decl)
    assert "stages[0].actions[0].configuration.S3ObjectKey: must have length <= 1000" in message
    assert "variables[0].description: must have length <= 200" in message
    assert "stages[1].actions[0].actionTypeId.provider: must have length <= 35" in message
    assert "k" * 100 not in message


def test_a_five_megabyte_configuration_value_is_refused_quickly() -> None:
    decl = definition("big")
    decl["stages"][0]["actions"][0]["configuration"]["S3ObjectKey"] = "k" * 5_000_000
    started = time.monotonic()
    message = problems_of(decl)
    assert time.monotonic() - started < 2
    assert "must have length <= 1000" in message
    assert len(message) < 2000


def test_a_million_stages_are_refused_by_count_before_anything_else() -> None:
    decl = definition("many")
    decl["stages"] = list(range(1_000_000))
    started = time.monotonic()
    with pytest.raises(DefinitionError) as info:
        validate(decl, REGISTRY)
    assert time.monotonic() - started < 3
    assert [str(p) for p in info.value.problems] == ["stages: at most 50 items, got 1000000"]


def test_definition_errors_show_a_bounded_list() -> None:
    decl = definition("names")
    decl["stages"][1]["actions"] = [
        {**decl["stages"][1]["actions"][0], "name": f"bad name {i}"} for i in range(50)
    ]
    with pytest.raises(DefinitionError) as info:
        validate(decl, REGISTRY)
    assert len(info.value.problems) > MAX_PROBLEMS_SHOWN
    assert info.value.message.count(";") == MAX_PROBLEMS_SHOWN
    assert info.value.message.endswith(f"and {len(info.value.problems) - MAX_PROBLEMS_SHOWN} more")


# ---------------------------------------------------------------------------- versions


@given(
    oldest=st.integers(min_value=1, max_value=50),
    extra=st.integers(min_value=0, max_value=200),
    keep=st.integers(min_value=1, max_value=60),
    running=st.sets(st.integers(min_value=1, max_value=300), max_size=5),
)
def test_pruning_keeps_the_newest_and_the_running_versions(
    oldest: int, extra: int, keep: int, running: set[int]
) -> None:
    version = oldest + extra
    drop, left = _pruned(oldest, version, keep, running)
    assert all(v <= version - keep and v not in running for v in drop)
    assert all(oldest <= v for v in drop)
    survivors = set(range(oldest, version + 1)) - set(drop)
    assert set(range(max(oldest, version - keep + 1), version + 1)) <= survivors
    assert left == min(survivors)


# ---------------------------------------------------------------------------- YAML


LAUGHS = "\n".join(
    [
        'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]',
        *(
            f"{c}: &{c} [{','.join([f'*{p}'] * 9)}]"
            for p, c in zip("abcdefgh", "bcdefghi", strict=True)
        ),
    ]
)


def test_billion_laughs_yaml_is_refused_quickly() -> None:
    assert len(LAUGHS) < 700
    started = time.monotonic()
    with pytest.raises(DefinitionError) as info:
        parse_document(LAUGHS, source="lol.yaml")
    assert time.monotonic() - started < 2
    assert "alias expansion" in info.value.message


def test_recursive_and_deep_yaml_are_refused() -> None:
    with pytest.raises(DefinitionError) as info:
        parse_document("a: &a [*a]\n", source="loop.yaml")
    assert "refers to itself" in info.value.message
    with pytest.raises(DefinitionError):
        parse_document("a: " + "[" * 5000 + "]" * 5000, source="deep.yaml")


def test_aliases_that_stay_small_still_load() -> None:
    text = "x: &conf {S3Bucket: b}\nname: p\nstages: [{name: s, actions: [{configuration: *conf}]}]"
    assert parse_document(text)["stages"][0]["actions"][0]["configuration"] == {"S3Bucket": "b"}
