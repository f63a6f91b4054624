"""The benchmarks time named functions of the code; a rename must not break `make bench`.

`python -m benchmarks` checks its timer specs before it runs anything; this runs the same
check in `make test`, so a refactor that renames a timed function fails here, not only when
someone next runs the benchmarks."""

from __future__ import annotations

import pytest

from benchmarks._timers import Timed, check
from benchmarks.artifact import TIMED as ARTIFACT_TIMED
from benchmarks.chain import DEPLOY_TIMED
from benchmarks.overhead import TIMED as OVERHEAD_TIMED


@pytest.mark.parametrize(
    "spec",
    [OVERHEAD_TIMED, ARTIFACT_TIMED, DEPLOY_TIMED],
    ids=["overhead", "artifact", "chain"],
)
def test_every_timed_function_exists(spec: list[Timed]) -> None:
    check(spec)
