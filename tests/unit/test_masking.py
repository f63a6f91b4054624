"""Secret configuration values are masked in API responses, as CodePipeline masks them."""

from __future__ import annotations

from engine.api.shapes import MASK, masked


def test_oauth_token_is_masked_and_nothing_else_changes() -> None:
    config = {"Owner": "octo", "Repo": "app", "Branch": "main", "OAuthToken": "ghp_secret"}
    shown = masked(config)
    assert shown == {"Owner": "octo", "Repo": "app", "Branch": "main", "OAuthToken": MASK}
    assert config["OAuthToken"] == "ghp_secret"  # the stored declaration is untouched


def test_configuration_without_secrets_is_returned_as_is() -> None:
    config = {"S3Bucket": "b", "S3ObjectKey": "k"}
    assert masked(config) is config
    assert masked(None) is None
