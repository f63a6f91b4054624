"""The HTTP API, in four layers a request passes through in order.

- :mod:`engine.api.app`: the protocol (CodePipeline's JSON 1.1 over ``POST /``, errors,
  the REST extras) and :func:`create_app`;
- :mod:`engine.api.validation`: the request checked against botocore's own model;
- :mod:`engine.api.operations`: each operation as a thin adapter over the service;
- :mod:`engine.api.shapes`: engine records rendered as CodePipeline's response shapes.
"""

from engine.api.app import create_app

__all__ = ["create_app"]
