"""Named, timed steps: a flow's progress (the CLI's step printer) and the report's step times."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from edgec.errors import raise_if_interrupted

#: Called with the name of each step as it starts.
Progress = Callable[[str], None]


class Steps:
    """Times named steps and reports each to a progress callback as it starts."""

    def __init__(self, progress: Progress | None = None) -> None:
        self.records: list[dict[str, Any]] = []
        self.progress = progress or (lambda _m: None)

    def run(self, name: str, fn: Callable[[], Any]) -> Any:
        raise_if_interrupted()
        self.progress(name)
        start = time.perf_counter()
        result = fn()
        raise_if_interrupted()  # an interrupt TVM turned into an error some fallback caught
        self.records.append({"name": name, "seconds": round(time.perf_counter() - start, 3)})
        return result
