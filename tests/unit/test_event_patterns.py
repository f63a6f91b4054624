"""EventBridge event patterns (engine/event_patterns.py): documented examples, refusals,
properties.

Cases cite the section of the EventBridge user guide they come from: "Content filtering in
Amazon EventBridge event patterns" (CF), "Comparison operators for use in event patterns"
(CO), "Creating Amazon EventBridge event patterns" (CP: "Matching values", "Matching null
values and empty strings", "Arrays in EventBridge event patterns"), and the seed's
"EventBridge Integration" rule.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.errors import InvalidEventPatternError, ValidationError
from engine.event_patterns import compile_pattern

SEED_RULE = {
    "source": ["aws.codepipeline"],
    "detail-type": ["CodePipeline Pipeline Execution State Change"],
    "detail": {"state": ["FAILED"], "pipeline": ["my-prod-pipeline"]},
}


def _execution_event(pipeline: str, state: str) -> dict[str, Any]:
    return {
        "version": "0",
        "id": "01234567-EXAMPLE",
        "detail-type": "CodePipeline Pipeline Execution State Change",
        "source": "aws.codepipeline",
        "account": "123456789012",
        "time": "2020-01-24T22:03:07Z",
        "region": "us-east-1",
        "resources": [f"arn:aws:codepipeline:us-east-1:123456789012:{pipeline}"],
        "detail": {
            "pipeline": pipeline,
            "execution-id": "12345678-1234-5678-abcd-12345678abcd",
            "state": state,
            "version": 1,
            "pipeline-execution-attempt": 1,
        },
    }


EC2_EVENT = {
    "version": "0",
    "id": "6a7e8feb-b491-4cf7-a9f1-bf3703467718",
    "detail-type": "EC2 Instance State-change Notification",
    "source": "aws.ec2",
    "account": "111122223333",
    "time": "2017-12-22T18:43:48Z",
    "region": "us-west-1",
    "resources": ["arn:aws:ec2:us-west-1:123456789012:instance/i-1234567890abcdef0"],
    "detail": {"instance-id": "i-1234567890abcdef0", "state": "terminated"},
}

NUMERIC_EVENT = {"detail": {"c-count": 5, "d-count": 3, "x-limit": 301.8}}
NULLS_EVENT = {"detail": {"eventVersion": "", "responseElements": None, "name": "x"}}
ARRAY_EVENT = {
    "resources": [
        "arn:aws:ec2:us-east-1:123456789012:instance/i-b188560f",
        "arn:aws:ec2:us-east-1:111122223333:instance/i-b188560f",
        "arn:aws:ec2:us-east-1:444455556666:instance/i-b188560f",
    ]
}
IP_EVENT = {"detail": {"sourceIPAddress": "10.0.0.255"}}
FILE_EVENT = {"detail": {"FileName": "photo.png", "FilePath": "dir/lib/a.py"}}

CASES: list[tuple[dict[str, Any], dict[str, Any], bool]] = [
    # Seed "EventBridge Integration": the failure-alert rule.
    (SEED_RULE, _execution_event("my-prod-pipeline", "FAILED"), True),
    (SEED_RULE, _execution_event("my-prod-pipeline", "SUCCEEDED"), False),
    (SEED_RULE, _execution_event("another-pipeline", "FAILED"), False),
    (SEED_RULE, {**_execution_event("my-prod-pipeline", "FAILED"), "source": "aws.ec2"}, False),
    # CP "Matching values": source and detail-type exact.
    ({"source": ["aws.ec2"]}, EC2_EVENT, True),
    ({"source": ["aws.s3"]}, EC2_EVENT, False),
    (
        {"source": ["aws.ec2"], "detail-type": ["EC2 Instance State-change Notification"]},
        EC2_EVENT,
        True,
    ),
    ({"detail": {"state": ["running", "terminated"]}}, EC2_EVENT, True),
    ({"detail": {"state": ["running", "pending"]}}, EC2_EVENT, False),
    # CP "Matching values": matching is case-sensitive and exact.
    ({"detail": {"state": ["Terminated"]}}, EC2_EVENT, False),
    ({"detail": {"state": ["terminate"]}}, EC2_EVENT, False),
    # CP "Matching values": a field the event lacks does not match.
    ({"detail": {"missing": ["x"]}}, EC2_EVENT, False),
    (
        {"detail": {"instance-id": ["i-1234567890abcdef0"], "state": ["terminated"]}},
        EC2_EVENT,
        True,
    ),
    # CP "Matching null values and empty strings".
    ({"detail": {"eventVersion": [""]}}, NULLS_EVENT, True),
    ({"detail": {"responseElements": [None]}}, NULLS_EVENT, True),
    ({"detail": {"responseElements": [""]}}, NULLS_EVENT, False),
    ({"detail": {"eventVersion": [None]}}, NULLS_EVENT, False),
    ({"detail": {"name": [None]}}, NULLS_EVENT, False),
    # CP "Arrays in EventBridge event patterns": any element matching is enough.
    (
        {"resources": ["arn:aws:ec2:us-east-1:123456789012:instance/i-b188560f", "z"]},
        ARRAY_EVENT,
        True,
    ),
    ({"resources": ["arn:aws:ec2:us-east-1:444455556666:instance/i-b188560f"]}, ARRAY_EVENT, True),
    ({"resources": ["arn:aws:ec2:us-east-1:999999999999:instance/i-b188560f"]}, ARRAY_EVENT, False),
    ({"resources": [{"prefix": "arn:aws:ec2:us-east-1:1111"}]}, ARRAY_EVENT, True),
    # CF "Prefix matching".
    ({"time": [{"prefix": "2017-12-22"}]}, EC2_EVENT, True),
    ({"time": [{"prefix": "2017-10-02"}]}, EC2_EVENT, False),
    # CF "Prefix matching while ignoring case".
    (
        {"detail": {"service": [{"prefix": {"equals-ignore-case": "EventB"}}]}},
        {"detail": {"service": "eventbridge"}},
        True,
    ),
    (
        {"detail": {"service": [{"prefix": {"equals-ignore-case": "EventB"}}]}},
        {"detail": {"service": "EVENTBRIDGE"}},
        True,
    ),
    (
        {"detail": {"service": [{"prefix": {"equals-ignore-case": "EventB"}}]}},
        {"detail": {"service": "lambda"}},
        False,
    ),
    # CF "Suffix matching".
    ({"detail": {"FileName": [{"suffix": ".png"}]}}, FILE_EVENT, True),
    ({"detail": {"FileName": [{"suffix": ".PNG"}]}}, FILE_EVENT, False),
    # CF "Suffix matching while ignoring case".
    ({"detail": {"FileName": [{"suffix": {"equals-ignore-case": ".PNG"}}]}}, FILE_EVENT, True),
    ({"detail": {"FileName": [{"suffix": {"equals-ignore-case": ".jpg"}}]}}, FILE_EVENT, False),
    # CF "Anything-but matching": a string, a number, lists of strings / numbers.
    ({"detail": {"state": [{"anything-but": "initializing"}]}}, EC2_EVENT, True),
    ({"detail": {"state": [{"anything-but": "terminated"}]}}, EC2_EVENT, False),
    ({"detail": {"x-limit": [{"anything-but": 123}]}}, {"detail": {"x-limit": 456}}, True),
    ({"detail": {"x-limit": [{"anything-but": 123}]}}, {"detail": {"x-limit": 123}}, False),
    ({"detail": {"state": [{"anything-but": ["stopped", "overloaded"]}]}}, EC2_EVENT, True),
    ({"detail": {"state": [{"anything-but": ["stopped", "terminated"]}]}}, EC2_EVENT, False),
    (
        {"detail": {"x-limit": [{"anything-but": [100, 200, 300]}]}},
        {"detail": {"x-limit": 200}},
        False,
    ),
    (
        {"detail": {"x-limit": [{"anything-but": [100, 200, 300]}]}},
        {"detail": {"x-limit": 250}},
        True,
    ),
    # CF "Anything-but matching": with an array field, any element outside the list matches.
    (
        {"detail": {"state": [{"anything-but": "stopped"}]}},
        {"detail": {"state": ["stopped", "running"]}},
        True,
    ),
    (
        {"detail": {"state": [{"anything-but": "stopped"}]}},
        {"detail": {"state": ["stopped"]}},
        False,
    ),
    # CF "Anything-but matching": a missing field does not match.
    ({"detail": {"state": [{"anything-but": "initializing"}]}}, {"detail": {}}, False),
    # CF "Anything-but matching on prefixes".
    (
        {"detail": {"state": [{"anything-but": {"prefix": "init"}}]}},
        {"detail": {"state": "running"}},
        True,
    ),
    (
        {"detail": {"state": [{"anything-but": {"prefix": "init"}}]}},
        {"detail": {"state": "initializing"}},
        False,
    ),
    # CF "Anything-but matching on suffixes".
    ({"detail": {"FileName": [{"anything-but": {"suffix": ".txt"}}]}}, FILE_EVENT, True),
    ({"detail": {"FileName": [{"anything-but": {"suffix": ".png"}}]}}, FILE_EVENT, False),
    # CF "Anything-but matching while ignoring case".
    (
        {
            "detail": {
                "state": [{"anything-but": {"equals-ignore-case": ["Stopped", "OverLoaded"]}}]
            }
        },
        {"detail": {"state": "STOPPED"}},
        False,
    ),
    (
        {
            "detail": {
                "state": [{"anything-but": {"equals-ignore-case": ["Stopped", "OverLoaded"]}}]
            }
        },
        {"detail": {"state": "running"}},
        True,
    ),
    # CF "Anything-but matching using wildcards".
    ({"detail": {"FilePath": [{"anything-but": {"wildcard": "*/lib/*"}}]}}, FILE_EVENT, False),
    (
        {"detail": {"FilePath": [{"anything-but": {"wildcard": "*/lib/*"}}]}},
        {"detail": {"FilePath": "dir/src/a.py"}},
        True,
    ),
    # CF "Numeric matching": the documented example and its bounds.
    (
        {
            "detail": {
                "c-count": [{"numeric": [">", 0, "<=", 5]}],
                "d-count": [{"numeric": ["<", 10]}],
                "x-limit": [{"numeric": ["=", 3.018e2]}],
            }
        },
        NUMERIC_EVENT,
        True,
    ),
    ({"detail": {"c-count": [{"numeric": [">", 5]}]}}, NUMERIC_EVENT, False),
    ({"detail": {"c-count": [{"numeric": [">=", 5]}]}}, NUMERIC_EVENT, True),
    ({"detail": {"c-count": [{"numeric": ["<", 5]}]}}, NUMERIC_EVENT, False),
    ({"detail": {"c-count": [{"numeric": [">", 0, "<", 5]}]}}, NUMERIC_EVENT, False),
    ({"detail": {"c-count": [{"numeric": ["=", 5.0]}]}}, NUMERIC_EVENT, True),
    # CF "Numeric matching": numeric matching applies to JSON numbers only.
    ({"detail": {"c-count": [{"numeric": ["=", 5]}]}}, {"detail": {"c-count": "5"}}, False),
    # CP "Matching values": numbers compare as numbers (5 is 5.0).
    ({"detail": {"c-count": [5.0]}}, NUMERIC_EVENT, True),
    ({"detail": {"c-count": ["5"]}}, NUMERIC_EVENT, False),
    # CF "IP address matching".
    ({"detail": {"sourceIPAddress": [{"cidr": "10.0.0.0/24"}]}}, IP_EVENT, True),
    ({"detail": {"sourceIPAddress": [{"cidr": "10.0.1.0/24"}]}}, IP_EVENT, False),
    (
        {"detail": {"sourceIPAddress": [{"cidr": "2001:db8::/32"}]}},
        {"detail": {"sourceIPAddress": "2001:db8::1"}},
        True,
    ),
    # CF "Exists matching".
    ({"detail": {"state": [{"exists": True}]}}, EC2_EVENT, True),
    ({"detail": {"state": [{"exists": False}]}}, EC2_EVENT, False),
    ({"detail": {"c-count": [{"exists": False}]}}, EC2_EVENT, True),
    ({"detail": {"c-count": [{"exists": True}]}}, EC2_EVENT, False),
    # CF "Exists matching": exists works on leaf nodes, not intermediate nodes.
    ({"detail": [{"exists": True}]}, EC2_EVENT, False),
    # CF "Equals-ignore-case matching".
    (
        {"detail-type": [{"equals-ignore-case": "ec2 instance state-change notification"}]},
        EC2_EVENT,
        True,
    ),
    ({"detail-type": [{"equals-ignore-case": "ec2 instance state change"}]}, EC2_EVENT, False),
    # CF "Matching using wildcards".
    (
        {"EventBusArn": [{"wildcard": "arn:aws:events:us-east-1:*:event-bus/*"}]},
        {"EventBusArn": "arn:aws:events:us-east-1:123456789012:event-bus/default"},
        True,
    ),
    (
        {"EventBusArn": [{"wildcard": "arn:aws:events:us-east-1:*:event-bus/*"}]},
        {"EventBusArn": "arn:aws:events:us-west-2:123456789012:event-bus/default"},
        False,
    ),
    ({"detail": {"FilePath": [{"wildcard": "dir/*/a.py"}]}}, FILE_EVENT, True),
    ({"k": [{"wildcard": "a\\*b"}]}, {"k": "a*b"}, True),
    ({"k": [{"wildcard": "a\\*b"}]}, {"k": "axxb"}, False),
    # CF "Complex example with multiple matching".
    (
        {
            "time": [{"prefix": "2017-12-22"}],
            "detail": {
                "state": [{"anything-but": "initializing"}],
                "instance-id": [{"exists": True}],
            },
        },
        EC2_EVENT,
        True,
    ),
    # CF "Complex example with $or matching".
    (
        {
            "detail": {
                "$or": [
                    {"c-count": [{"numeric": [">", 0, "<=", 5]}]},
                    {"d-count": [{"numeric": ["<", 10]}]},
                ]
            }
        },
        {"detail": {"c-count": 100, "d-count": 3}},
        True,
    ),
    (
        {
            "detail": {
                "$or": [
                    {"c-count": [{"numeric": [">", 0, "<=", 5]}]},
                    {"d-count": [{"numeric": ["<", 10]}]},
                ]
            }
        },
        {"detail": {"c-count": 100, "d-count": 30}},
        False,
    ),
    (
        {
            "source": ["aws.ec2"],
            "$or": [{"detail-type": ["x"]}, {"detail": {"state": ["terminated"]}}],
        },
        EC2_EVENT,
        True,
    ),
    (
        {
            "source": ["aws.s3"],
            "$or": [{"detail-type": ["x"]}, {"detail": {"state": ["terminated"]}}],
        },
        EC2_EVENT,
        False,
    ),
]


@pytest.mark.parametrize(("pattern", "event", "expected"), CASES)
def test_documented_examples(
    pattern: dict[str, Any], event: dict[str, Any], expected: bool
) -> None:
    assert compile_pattern(pattern).matches(event) is expected
    # A pattern given as JSON text (as PutRule takes it) behaves the same.
    assert compile_pattern(json.dumps(pattern)).matches(event) is expected


def test_at_least_60_documented_cases() -> None:
    assert len(CASES) >= 60


INVALID: list[tuple[Any, str]] = [
    # CP "Matching values": a value must sit in an array.
    ({"detail": {"state": "FAILED"}}, "detail.state"),
    ({"source": []}, "source"),
    ({"detail": {"state": [{"contains": "x"}]}}, "detail.state[0]"),
    ({"detail": {"state": [{"prefix": 5}]}}, "detail.state[0].prefix"),
    ({"detail": {"state": [{"suffix": ["a"]}]}}, "detail.state[0].suffix"),
    ({"detail": {"state": [{"prefix": {"nope": "a"}}]}}, "detail.state[0].prefix"),
    ({"detail": {"state": [{"equals-ignore-case": 1}]}}, "detail.state[0].equals-ignore-case"),
    ({"detail": {"n": [{"numeric": [">", "5"]}]}}, "detail.n[0].numeric[1]"),
    ({"detail": {"n": [{"numeric": ["!=", 5]}]}}, "detail.n[0].numeric[0]"),
    ({"detail": {"n": [{"numeric": [">", 5, "<", 1]}]}}, "detail.n[0].numeric"),
    ({"detail": {"n": [{"numeric": ["<", 5, ">", 1]}]}}, "detail.n[0].numeric"),
    ({"detail": {"n": [{"numeric": [">", 6e9]}]}}, "detail.n[0].numeric[1]"),
    ({"detail": {"n": [{"numeric": 5}]}}, "detail.n[0].numeric"),
    ({"detail": {"n": [{"exists": "yes"}]}}, "detail.n[0].exists"),
    ({"detail": {"n": [{"anything-but": [1, "a"]}]}}, "detail.n[0].anything-but"),
    ({"detail": {"n": [{"anything-but": []}]}}, "detail.n[0].anything-but"),
    ({"detail": {"n": [{"anything-but": {"numeric": [">", 1]}}]}}, "detail.n[0].anything-but"),
    ({"detail": {"n": [{"anything-but": {"prefix": 1}}]}}, "detail.n[0].anything-but.prefix"),
    ({"detail": {"n": [{"anything-but": True}]}}, "detail.n[0].anything-but"),
    ({"detail": {"n": [{"wildcard": "a**b"}]}}, "detail.n[0].wildcard"),
    ({"detail": {"n": [{"cidr": "not-an-ip"}]}}, "detail.n[0].cidr"),
    ({"detail": {"n": [{"prefix": "a", "suffix": "b"}]}}, "detail.n[0]"),
    ({"detail": {"n": [["a"]]}}, "detail.n[0]"),
    ({"detail": {"$or": [{"a": ["x"]}]}}, "detail.$or"),
    ({"detail": {"$or": {"a": ["x"]}}}, "detail.$or"),
    ({"$or": [{"a": ["x"]}, "b"]}, "$or[1]"),
    ({"detail": {}}, "detail"),
    ({}, "pattern"),
    ("[1, 2]", "pattern"),
    ("{not json", "pattern"),
    (json.dumps({"source": ["x" * 5000]}), "pattern"),
]


@pytest.mark.parametrize(("pattern", "path"), INVALID)
def test_invalid_patterns_are_refused_naming_the_path(pattern: Any, path: str) -> None:
    with pytest.raises(InvalidEventPatternError) as caught:
        compile_pattern(pattern)
    assert f"{path} " in caught.value.message
    assert caught.value.aws_code == "InvalidEventPatternException"
    assert isinstance(caught.value, ValidationError)


# Property tests ------------------------------------------------------------------------

keys = st.sampled_from(["a", "b", "c", "detail", "state", "x-y"])
scalars = st.one_of(
    st.text(max_size=8),
    st.integers(min_value=-1000, max_value=1000),
    st.floats(min_value=-1e6, max_value=1e6, allow_nan=False),
    st.booleans(),
    st.none(),
)
events = st.recursive(
    st.dictionaries(keys, scalars, min_size=1, max_size=4),
    lambda inner: st.dictionaries(
        keys,
        st.one_of(scalars, inner, st.lists(scalars, min_size=1, max_size=3)),
        min_size=1,
        max_size=4,
    ),
    max_leaves=12,
)


def _pattern_from(event: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in event.items():
        if isinstance(v, dict):
            out[k] = _pattern_from(v)
        elif isinstance(v, list):
            out[k] = [v[0]]
        else:
            out[k] = [v]
    return out


@given(events)
def test_a_pattern_of_an_events_own_values_matches_it(event: dict[str, Any]) -> None:
    assert compile_pattern(_pattern_from(event)).matches(event)


strings_or_numbers = st.one_of(st.text(max_size=6), st.integers(min_value=-50, max_value=50))


@given(strings_or_numbers, st.one_of(strings_or_numbers, st.booleans(), st.none()))
def test_anything_but_is_the_complement_of_the_value(value: Any, field: Any) -> None:
    event = {"detail": {"f": field}}
    exact = compile_pattern({"detail": {"f": [value]}}).matches(event)
    anything_but = compile_pattern({"detail": {"f": [{"anything-but": value}]}}).matches(event)
    assert anything_but is not exact


@given(
    st.lists(strings_or_numbers, min_size=1, max_size=5),
    st.one_of(strings_or_numbers, st.lists(strings_or_numbers, max_size=3)),
)
def test_an_array_is_the_or_of_its_values(values: list[Any], field: Any) -> None:
    event = {"f": field}
    either = compile_pattern({"f": values}).matches(event)
    assert either is any(compile_pattern({"f": [v]}).matches(event) for v in values)


@given(
    st.text(alphabet="ab*", max_size=6).filter(lambda s: "**" not in s),
    st.text(alphabet="ab*", max_size=8),
)
def test_anything_but_wildcard_complements_wildcard(wildcard: str, field: str) -> None:
    event = {"f": field}
    yes = compile_pattern({"f": [{"wildcard": wildcard}]}).matches(event)
    no = compile_pattern({"f": [{"anything-but": {"wildcard": wildcard}}]}).matches(event)
    assert yes is not no


@given(st.integers(min_value=-100, max_value=100), st.integers(min_value=-100, max_value=100))
def test_numeric_equals_matches_int_and_float_alike(bound: int, value: int) -> None:
    pattern = compile_pattern({"n": [{"numeric": ["=", bound]}]})
    assert pattern.matches({"n": value}) is (value == bound)
    assert pattern.matches({"n": float(value)}) is (value == bound)


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        ({}, True),
        ({"detail": "scalar"}, True),
        ({"detail": {}}, True),
        ({"detail": {"a": 1}}, False),
    ],
)
def test_exists_false_under_a_missing_parent(event: dict[str, Any], expected: bool) -> None:
    # Not an example in the guide: EventBridge matches on flattened leaf paths, so
    # ``detail.a`` is absent whenever ``detail`` is missing or not an object.
    assert compile_pattern({"detail": {"a": [{"exists": False}]}}).matches(event) is expected


def test_nested_pattern_matches_any_object_in_an_array() -> None:
    # CP "Arrays in EventBridge event patterns": an array of objects matches when one does.
    event = {"detail": {"items": [{"k": "a"}, {"k": "b"}]}}
    assert compile_pattern({"detail": {"items": {"k": ["b"]}}}).matches(event)
    assert not compile_pattern({"detail": {"items": {"k": ["c"]}}}).matches(event)


@pytest.mark.parametrize(("pattern", "event", "expected"), CASES)
def test_motos_matcher_agrees_on_the_documented_cases(
    pattern: dict[str, Any], event: dict[str, Any], expected: bool
) -> None:
    # An independent implementation (moto's EventBridge pattern matcher, in process) reads
    # the same documented examples the same way.
    from moto.events.models import EventPattern

    moto_event: Any = event
    assert EventPattern.load(json.dumps(pattern)).matches_event(moto_event) is expected
