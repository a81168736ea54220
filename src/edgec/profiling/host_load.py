"""How busy this machine was with other work while edgec timed something.

Timings taken beside other jobs measure both: on a 2-core machine one busy neighbour can make
a kernel look 1.5-2x slower. The load average cannot tell edgec's own threads from others', so
:class:`HostLoad` counts the CPU time every process used (``/proc/stat``) minus this process's
own and its children's (``os.times``) over the measured window: the other work's average
number of busy cores.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

#: Other work above this share of the cores makes timings unreliable (warned about in the report).
BUSY_SHARE = 0.25


def _busy_seconds() -> float | None:
    """CPU seconds spent outside idle and iowait by all processes since boot (``/proc/stat``), or None."""
    try:
        with open("/proc/stat") as fh:
            fields = [int(v) for v in fh.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def _own_seconds() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


@dataclass
class HostLoad:
    """Other processes' CPU use over a window: ``with HostLoad() as load: ...`` then :meth:`to_dict`.

    Attributes:
        others_cores: Cores the other processes kept busy on average (0 on a quiet machine; None
            where ``/proc/stat`` cannot be read).
        cores: This machine's cores.
        seconds: Length of the window (s).
    """

    others_cores: float | None = None
    cores: int = os.cpu_count() or 1
    seconds: float = 0.0

    def __enter__(self) -> HostLoad:
        self._t0, self._busy0, self._own0 = time.monotonic(), _busy_seconds(), _own_seconds()
        return self

    def __exit__(self, *exc) -> None:
        self.seconds = time.monotonic() - self._t0
        busy = _busy_seconds()
        if busy is None or self._busy0 is None or self.seconds <= 0:
            return
        # children's times count once they are reaped; a still-running child's show up as "others"
        others = (busy - self._busy0) - (_own_seconds() - self._own0)
        self.others_cores = round(max(0.0, others / self.seconds), 2)

    @property
    def busy(self) -> bool:
        """True when other work kept more than :data:`BUSY_SHARE` of the cores busy."""
        return self.others_cores is not None and self.others_cores > BUSY_SHARE * self.cores

    def to_dict(self) -> dict:
        return {"others_cores": self.others_cores, "cores": self.cores, "seconds": round(self.seconds, 2),
                "busy": self.busy}


__all__ = ["BUSY_SHARE", "HostLoad"]
