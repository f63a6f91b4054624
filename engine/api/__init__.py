"""The HTTP API, in four layers a request passes through in order.

- :mod:`engine.api.app`: routing (CodePipeline's JSON 1.1 over ``POST /``, RPC v2 CBOR
  over ``POST /service/.../operation/<Op>``, errors, the REST extras) and
  :func:`create_app`; :mod:`engine.api.wire` and :mod:`engine.api.cbor` hold the two
  protocols' codecs;
- :mod:`engine.api.validation`: the request checked against botocore's own model;
- :mod:`engine.api.operations`: each operation as a thin adapter over the service;
- :mod:`engine.api.shapes`: engine records rendered as CodePipeline's response shapes.
"""

from engine.api.app import create_app

__all__ = ["create_app"]
