"""Helpers shared by the benchmark scripts (bench/ is on sys.path when they run as scripts)."""

import os
import resource
import time


class OtherLoad:
    """CPU time used by other processes since creation, in cores (Linux /proc/stat; None elsewhere).
    A benchmark on a shared 2-core machine is only meaningful when this stays near 0."""

    def __init__(self):
        self.start = self._sample()

    @staticmethod
    def _sample():
        try:
            with open("/proc/stat") as f:
                fields = [int(x) for x in f.readline().split()[1:]]
        except (OSError, ValueError):
            return None
        busy = sum(fields[:8]) - fields[3] - fields[4]  # all but idle and iowait
        own = os.times()
        return time.perf_counter(), busy / os.sysconf("SC_CLK_TCK"), own.user + own.system

    def cores(self) -> float | None:
        end = self._sample()
        if self.start is None or end is None:
            return None
        wall = end[0] - self.start[0]
        return max(0.0, (end[1] - self.start[1]) - (end[2] - self.start[2])) / wall if wall > 0 else None


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (ru_maxrss: kilobytes on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def busy_warning(other_load: float | None) -> str | None:
    if other_load is None or other_load <= 0.2:
        return None
    return (f"WARNING: other processes used {other_load:.1f} CPU cores during the timed part: the figures are "
            "slower than on an idle machine. Run again when it is idle.")
