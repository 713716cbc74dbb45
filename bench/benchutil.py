"""Helpers shared by the benchmark scripts (bench/ is on sys.path when they run as scripts)."""

import asyncio
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PEER_SCRIPTS = ROOT.parent / "shared" / "bench"  # gpt-2-simple's side, when this checkout has ../shared
PEER_WORKDIR = Path("/tmp/peer-gpt2simple")  # where ../shared/bench/setup.sh installs it


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
        children = resource.getrusage(resource.RUSAGE_CHILDREN)  # the peer runs as a child: it is not "other"
        own = os.times()
        cpu_s = own.user + own.system + children.ru_utime + children.ru_stime
        return time.perf_counter(), busy / os.sysconf("SC_CLK_TCK"), cpu_s

    def cores(self) -> float | None:
        end = self._sample()
        if self.start is None or end is None:
            return None
        wall = end[0] - self.start[0]
        return max(0.0, (end[1] - self.start[1]) - (end[2] - self.start[2])) / wall if wall > 0 else None


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (ru_maxrss: kilobytes on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rss_mb() -> float:
    """Resident memory of this process now (Linux /proc/self/statm)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def child_peak_rss_mb(command: list[str], stdin: str, **popen) -> tuple[float, int]:
    """Run `command` to its end with `stdin` as its input (its output is dropped): (its peak resident memory in MB,
    exit status), as GNU time reports it (`/usr/bin/time -f %M`). Not this process's own wait4: a child spawned from
    a process that holds torch starts its count with the parent's memory."""
    with tempfile.NamedTemporaryFile("r", suffix=".time") as report:
        done = subprocess.run(["/usr/bin/time", "-f", "%M", "-o", report.name, *command], input=stdin, text=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False, **popen)
        return int(report.read().split()[-1]) / 1024, done.returncode


def vm_hwm_mb(pid: int) -> float:
    """The peak resident memory of a running process (VmHWM of /proc/PID/status, Linux), in MB."""
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024


def busy_warning(other_load: float | None) -> str | None:
    if other_load is None or other_load <= 0.2:
        return None
    return (f"WARNING: other processes used {other_load:.1f} CPU cores during the timed part: the figures are "
            "slower than on an idle machine. Run again when it is idle.")


def print_notes(notes: list[str], loads: dict[str, float | str | None]) -> None:
    """The notes under a bench's figures, then a warning for each side whose run shared the CPU with other work
    (loads: side -> other processes' cores during its timed part; None or "n/a" when not measured)."""
    for note in notes:
        print(f"  {note}")
    for label, load in loads.items():
        warning = busy_warning(None if load in (None, "n/a") else float(load))
        if warning:
            print(f"  {label}: {warning}")


def seconds(values: list[float]) -> str:
    return ",".join(f"{v:.2f}" for v in values)


class LagMonitor:
    """Event-loop lag: a task asks to wake every `interval` seconds and records how late it wakes up.
    Use as `async with LagMonitor() as lag: ...`, then lag.p99_ms() etc."""

    def __init__(self, interval: float = 0.01):
        self.interval = interval
        self.lags: list[float] = []

    async def _watch(self):
        while True:
            before = time.perf_counter()
            await asyncio.sleep(self.interval)
            self.lags.append(time.perf_counter() - before - self.interval)

    async def __aenter__(self):
        self.task = asyncio.create_task(self._watch())
        return self

    async def __aexit__(self, *exc_info):
        self.task.cancel()

    def percentile_ms(self, q: float) -> float:
        ordered = sorted(self.lags)
        return 1000 * ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))] if ordered else float("nan")

    def figures(self, name: str) -> dict[str, str]:
        return {f"{name}_lag_p50_ms": f"{self.percentile_ms(50):.1f}",
                f"{name}_lag_p99_ms": f"{self.percentile_ms(99):.1f}",
                f"{name}_lag_max_ms": f"{1000 * max(self.lags, default=float('nan')):.1f}",
                f"{name}_lag_samples": str(len(self.lags))}


def run_peer(what: str, model: str = "124M") -> dict[str, str] | str:
    """gpt-2-simple's figures from ../shared/bench/run.sh (`gpt2simple_*` lines, as a dict), or why they are
    missing (a string): no ../shared, or the peer stack not installed (../shared/bench/setup.sh installs it)."""
    if not (PEER_SCRIPTS / "run.sh").is_file():
        return f"skipped: no {PEER_SCRIPTS} in this checkout"
    if not (PEER_WORKDIR / "venv" / "bin" / "python").is_file():
        return f"skipped: gpt-2-simple is not installed in {PEER_WORKDIR} (run {PEER_SCRIPTS / 'setup.sh'} once)"
    print(f"(running gpt-2-simple: {PEER_SCRIPTS / 'run.sh'} {what} {model})", file=sys.stderr, flush=True)
    done = subprocess.run(["bash", str(PEER_SCRIPTS / "run.sh"), what, model], check=False, capture_output=True,
                          text=True)
    figures = {}
    for line in done.stdout.splitlines():  # "gpt2simple_call20_rss_mb=1263 ops=11034 s_per_call=0.87"
        if line.startswith("gpt2simple_"):
            (name, value), *more = [pair.split("=", 1) for pair in line.removeprefix("gpt2simple_").split()]
            figures[name] = value
            figures.update({f"{name.rsplit('_', 2)[0]}_{key}": extra for key, extra in more})
    return figures or f"failed: run.sh {what} printed no figures ({done.stderr.strip()[-300:]})"


def median_of(figures: dict[str, str], pattern: str) -> float | None:
    """The median of the peer's figures whose names match `pattern` (e.g. one figure per call)."""
    values = [float(v) for k, v in figures.items() if re.fullmatch(pattern, k)]
    return statistics.median(values) if values else None
