"""What else ran on the machine while a benchmark measured (shared by the benchmark scripts)."""
from __future__ import annotations

import os
import time


class OtherLoad:
    """Share of the machine's CPU time that other processes used since ``start()`` (Linux ``/proc/stat``; None
    elsewhere). On a small shared machine this says whether a figure can be trusted: torch's intra-op threads slow
    down many-fold when another process holds a core."""

    def __init__(self):
        self.start()

    @staticmethod
    def _busy() -> float | None:
        try:
            with open("/proc/stat") as f:
                v = [int(x) for x in f.readline().split()[1:]]
        except (OSError, ValueError):
            return None
        return (sum(v[:8]) - v[3] - v[4]) / os.sysconf("SC_CLK_TCK")  # all but idle and iowait

    @staticmethod
    def _own() -> float:
        t = os.times()  # includes the DataLoader workers once they are joined
        return t.user + t.system + t.children_user + t.children_system

    def start(self) -> None:
        self.t, self.busy, self.own = time.perf_counter(), self._busy(), self._own()

    def share(self) -> float | None:
        busy = self._busy()
        if busy is None or self.busy is None:
            return None
        other = (busy - self.busy) - (self._own() - self.own)
        return max(0.0, other) / ((time.perf_counter() - self.t) * (os.cpu_count() or 1))

    def __str__(self) -> str:
        share = self.share()
        return "other processes' CPU share unknown" if share is None else f"other processes used {share:.0%} of the CPU"
