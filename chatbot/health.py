"""A heartbeat file for container health checks: the running bot writes it, `proverbot health` reads it.

    await beat(Path("/data/proverbot.health"), frontends, pool)  # in the bot, every BEAT seconds
    check(Path("/data/proverbot.health"))                         # in HEALTHCHECK: ProverbotError if unhealthy
    runs_line(Path("/data/proverbot.health"))                     # `proverbot doctor`: the runs the bot has loaded

The file says when the bot's event loop last ran and whether each front end is connected, so a bot whose loop
is stuck (no fresh beat) or whose chat connection is down (a front end not connected) is reported unhealthy. It
also lists the runs the bot has in memory (model.pool.Pool), most recently used first.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path

from proverbot_errors import ProverbotError

BEAT = 30.0           # seconds between beats
MAX_AGE = 3 * BEAT    # a beat older than this: the bot is stuck or gone


async def beat(path: Path, frontends, runs=None, interval: float = BEAT) -> None:
    """Write the heartbeat every `interval` seconds until cancelled; runs: the model.pool.Pool, if any."""
    while True:
        loaded = [f"{run.name} (checkpoint {run.checkpoint_id or 'unknown'})" for run in runs.loaded()] if runs else []
        write(path, {frontend.platform: frontend.healthy() for frontend in frontends}, loaded)
        await asyncio.sleep(interval)


def write(path: Path, connected: dict[str, bool], loaded: list[str] = ()) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".tmp")
    partial.write_text(json.dumps({"time": time.time(), "connected": connected, "loaded": list(loaded)}))
    os.replace(partial, path)                     # readers never see half a file


def check(path: Path, max_age: float = MAX_AGE) -> str:
    """A one-line report when the bot is healthy; ProverbotError saying why when it is not."""
    try:
        state = json.loads(path.read_text())
        age, connected = time.time() - float(state["time"]), dict(state["connected"])
    except FileNotFoundError:
        raise ProverbotError(f"No heartbeat at {path}: the bot is not running (or health_file differs).") from None
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ProverbotError(f"Cannot read the heartbeat {path}: {err}.") from None
    if age > max_age:
        raise ProverbotError(f"The last heartbeat is {age:.0f} s old (limit {max_age:.0f} s): the bot is stuck or "
                             "stopped.")
    down = [platform for platform, up in connected.items() if not up]
    if down:
        raise ProverbotError(f"Not connected: {', '.join(down)}.")
    return f"healthy: heartbeat {age:.0f} s ago; connected: {', '.join(connected) or 'nothing'}."


def runs_line(path: Path) -> str:
    """The runs the running bot has loaded, as its heartbeat says, in one line (or why that cannot be said)."""
    try:
        check(path)
        loaded = json.loads(path.read_text()).get("loaded", [])
    except (ProverbotError, OSError, ValueError, AttributeError) as err:
        return f"Loaded runs: unknown ({err})"
    if not isinstance(loaded, list) or not all(isinstance(run, str) for run in loaded):
        return f"Loaded runs: unknown (the heartbeat {path} lists them wrongly)."
    return f"Loaded runs in the running bot: {', '.join(loaded) or 'none'}."
