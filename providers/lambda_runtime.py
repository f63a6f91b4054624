"""The process a self-hosted Lambda handler runs in: ``python lambda_runtime.py REPORT``.

It reads one invocation as JSON on stdin (handler ``module:function``, the event, the
function's name and deadline), imports the handler, and calls it with the event and a
context object like Lambda's. How the call ended goes to the REPORT file in Lambda's own
error shape (``errorType``, ``errorMessage``) so the worker can fail the action with it.
The event never reaches a file or the log: it carries the artifact store's credentials.

Run as a script by path, not ``-m``, so starting it imports nothing of Conveyor's; it keeps
to the standard library for the same reason.
"""

from __future__ import annotations

import importlib
import json
import sys
import time
import traceback
from pathlib import Path
from typing import Any


class LambdaContext:
    """The attributes and method of Lambda's Python context object that handlers use."""

    def __init__(self, invocation: dict[str, Any]) -> None:
        name = str(invocation["function_name"])
        self.function_name = name
        self.function_version = "$LATEST"
        self.invoked_function_arn = (
            f"arn:aws:lambda:{invocation['region']}:{invocation['account_id']}:function:{name}"
        )
        self.memory_limit_in_mb = str(invocation.get("memory_mb", 128))
        self.aws_request_id = str(invocation["request_id"])
        self.log_group_name = f"/aws/lambda/{name}"
        self.log_stream_name = f"conveyor/{self.aws_request_id}"
        self.identity = None
        self.client_context = None
        self._deadline: float | None = invocation.get("deadline")

    def get_remaining_time_in_millis(self) -> int:
        if self._deadline is None:
            return 15 * 60 * 1000  # Lambda's longest timeout, for an action without one
        return max(0, int((self._deadline - time.time()) * 1000))


def _load(spec: str) -> Any:
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"handler {spec!r} is not of the form module:function")
    handler = importlib.import_module(module_name)
    for part in attr.split("."):
        handler = getattr(handler, part)
    if not callable(handler):
        raise TypeError(f"handler {spec!r} is not callable")
    return handler


def main(argv: list[str]) -> int:
    report = Path(argv[1])
    # This script's own directory is not the function's code: only PYTHONPATH is.
    del sys.path[0]
    invocation = json.load(sys.stdin)
    try:
        handler = _load(invocation["handler"])
        handler(invocation["event"], LambdaContext(invocation))
    except BaseException as exc:  # SystemExit and KeyboardInterrupt end a Lambda call too
        traceback.print_exc()
        sys.stderr.flush()
        report.write_text(
            json.dumps({"errorType": type(exc).__name__, "errorMessage": str(exc)}),
            encoding="utf-8",
        )
        return 1
    report.write_text(json.dumps({"returned": True}), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
