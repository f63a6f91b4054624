"""ARNs are AWS-shaped, with the region and account id from settings."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from engine.arns import Account
from engine.settings import Settings


def test_region_defaults_to_the_s3_region_and_the_account_to_aws_example() -> None:
    settings = Settings(s3_region="eu-central-1")
    assert settings.account.pipeline_arn("p") == "arn:aws:codepipeline:eu-central-1:111122223333:p"


def test_region_and_account_are_settings() -> None:
    account = Settings(region="ap-south-1", account_id="444455556666").account
    assert account.pipeline_arn("p") == "arn:aws:codepipeline:ap-south-1:444455556666:p"
    assert (
        account.action_type_arn("Build", "Custom", "MyBuilder", "1")
        == "arn:aws:codepipeline:ap-south-1:444455556666:actiontype:Custom/Build/MyBuilder/1"
    )
    assert (
        account.webhook_arn("hook") == "arn:aws:codepipeline:ap-south-1:444455556666:webhook:hook"
    )


def test_an_account_id_is_twelve_digits() -> None:
    with pytest.raises(ValidationError):
        Settings(account_id="12345")
    with pytest.raises(ValueError, match="12 digits"):
        Account(account_id="local")
    with pytest.raises(ValueError, match="region"):
        Account(region="a:b")
