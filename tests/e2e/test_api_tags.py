"""TagResource, UntagResource, ListTagsForResource and CreatePipeline's tags, through boto3."""

from __future__ import annotations

from typing import Any

import pytest
from botocore.exceptions import ClientError

from engine.arns import DEFAULT_ACCOUNT
from tests.e2e.api_support import definition
from tests.e2e.test_api import code_of, message_of

pipeline_arn = DEFAULT_ACCOUNT.pipeline_arn


def arn_of(cp: Any, name: str) -> str:
    return str(cp.get_pipeline(name=name)["metadata"]["pipelineArn"])


def tags(cp: Any, arn: str) -> dict[str, str]:
    return {t["key"]: t["value"] for t in cp.list_tags_for_resource(resourceArn=arn)["tags"]}


def test_create_pipeline_tags_are_kept_and_returned(cp: Any) -> None:
    given = [{"key": "team", "value": "platform"}, {"key": "cost-center", "value": ""}]
    created = cp.create_pipeline(pipeline=definition("demo"), tags=given)
    assert created["tags"] == given
    arn = arn_of(cp, "demo")
    assert arn.startswith("arn:aws:codepipeline:") and arn.endswith(":demo")
    assert tags(cp, arn) == {"team": "platform", "cost-center": ""}


def test_tag_untag_and_list(cp: Any) -> None:
    cp.create_pipeline(pipeline=definition("demo"))
    arn = arn_of(cp, "demo")
    assert tags(cp, arn) == {}
    cp.tag_resource(resourceArn=arn, tags=[{"key": "a", "value": "1"}, {"key": "b", "value": "2"}])
    cp.tag_resource(resourceArn=arn, tags=[{"key": "a", "value": "one"}])  # overwrites
    assert tags(cp, arn) == {"a": "one", "b": "2"}
    cp.untag_resource(resourceArn=arn, tagKeys=["b", "not-there"])
    assert tags(cp, arn) == {"a": "one"}


def test_list_tags_pages(cp: Any) -> None:
    cp.create_pipeline(
        pipeline=definition("demo"), tags=[{"key": f"k{i}", "value": str(i)} for i in range(5)]
    )
    arn = arn_of(cp, "demo")
    first = cp.list_tags_for_resource(resourceArn=arn, maxResults=2)
    assert [t["key"] for t in first["tags"]] == ["k0", "k1"]
    rest = cp.list_tags_for_resource(resourceArn=arn, nextToken=first["nextToken"])
    assert [t["key"] for t in rest["tags"]] == ["k2", "k3", "k4"]
    assert "nextToken" not in rest
    with pytest.raises(ClientError) as bad:
        cp.list_tags_for_resource(resourceArn=arn, nextToken="99")
    assert code_of(bad) == "InvalidNextTokenException"


def test_at_most_50_tags(cp: Any) -> None:
    with pytest.raises(ClientError) as err:
        cp.create_pipeline(
            pipeline=definition("demo"),
            tags=[{"key": f"k{i}", "value": "v"} for i in range(51)],
        )
    assert code_of(err) == "TooManyTagsException"
    assert cp.list_pipelines()["pipelines"] == []  # refused before anything was created

    cp.create_pipeline(
        pipeline=definition("demo"), tags=[{"key": f"k{i}", "value": "v"} for i in range(45)]
    )
    arn = arn_of(cp, "demo")
    with pytest.raises(ClientError) as err:
        cp.tag_resource(resourceArn=arn, tags=[{"key": f"n{i}", "value": "v"} for i in range(6)])
    assert code_of(err) == "TooManyTagsException"
    assert len(tags(cp, arn)) == 45
    # Overwriting existing keys does not count twice.
    cp.tag_resource(resourceArn=arn, tags=[{"key": f"k{i}", "value": "w"} for i in range(5)])
    cp.tag_resource(resourceArn=arn, tags=[{"key": f"n{i}", "value": "v"} for i in range(5)])
    assert len(tags(cp, arn)) == 50


def test_reserved_and_malformed_tags_are_refused(cp: Any) -> None:
    with pytest.raises(ClientError) as err:
        cp.create_pipeline(pipeline=definition("demo"), tags=[{"key": "aws:owner", "value": "x"}])
    assert code_of(err) == "InvalidTagsException"
    assert "aws:" in message_of(err)
    cp.create_pipeline(pipeline=definition("demo"))
    arn = arn_of(cp, "demo")
    for bad in (
        [{"key": "AWS:Name", "value": "x"}],
        [{"key": "a", "value": "1"}, {"key": "a", "value": "2"}],
        [{"key": "semi;colon", "value": "x"}],
    ):
        with pytest.raises(ClientError) as err:
            cp.tag_resource(resourceArn=arn, tags=bad)
        assert code_of(err) == "InvalidTagsException", bad
    with pytest.raises(ClientError) as err:
        cp.untag_resource(resourceArn=arn, tagKeys=["aws:cloudformation:stack-name"])
    assert code_of(err) == "InvalidTagsException"
    with pytest.raises(ClientError) as err:  # AWS's length limits, from botocore's model
        cp.tag_resource(resourceArn=arn, tags=[{"key": "k" * 129, "value": "x"}])
    assert code_of(err) == "ValidationException"
    with pytest.raises(ClientError) as err:
        cp.tag_resource(resourceArn=arn, tags=[{"key": "k", "value": "v" * 257}])
    assert code_of(err) == "ValidationException"
    assert tags(cp, arn) == {}


def test_unknown_and_foreign_resources(cp: Any) -> None:
    for arn in (
        pipeline_arn("nope"),
        "arn:aws:codepipeline:eu-west-3:999999999999:demo",  # another region and account
    ):
        with pytest.raises(ClientError) as err:
            cp.list_tags_for_resource(resourceArn=arn)
        assert code_of(err) == "ResourceNotFoundException", arn
        with pytest.raises(ClientError) as err:
            cp.tag_resource(resourceArn=arn, tags=[{"key": "a", "value": "b"}])
        assert code_of(err) == "ResourceNotFoundException", arn
    action_type = pipeline_arn("actiontype:Custom/Build/Mine/1")
    with pytest.raises(ClientError) as err:
        cp.tag_resource(resourceArn=action_type, tags=[{"key": "a", "value": "b"}])
    assert code_of(err) == "ResourceNotFoundException"
    assert "action type 'Custom/Build/Mine/1'" in message_of(err)  # never created
    with pytest.raises(ClientError) as err:
        cp.list_tags_for_resource(resourceArn=pipeline_arn("stage/odd"))
    assert code_of(err) == "InvalidArnException"
    with pytest.raises(ClientError) as err:  # not shaped like an ARN at all: the model says
        cp.list_tags_for_resource(resourceArn="arn:conveyor:codepipeline:local:1:demo")
    assert code_of(err) == "ValidationException"


def test_tags_go_with_the_pipeline(cp: Any) -> None:
    cp.create_pipeline(pipeline=definition("demo"), tags=[{"key": "old", "value": "1"}])
    arn = arn_of(cp, "demo")
    cp.delete_pipeline(name="demo")
    with pytest.raises(ClientError) as err:
        cp.tag_resource(resourceArn=arn, tags=[{"key": "a", "value": "b"}])
    assert code_of(err) == "ResourceNotFoundException"
    cp.create_pipeline(pipeline=definition("demo"))
    assert tags(cp, arn) == {}
