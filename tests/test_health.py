"""The heartbeat the running bot writes and `proverbot health` (the Docker HEALTHCHECK) reads."""

import asyncio
import json
import time

import pytest

from chatbot import health
from chatbot.cli import main
from model.errors import ProverbotError


class Frontend:
    def __init__(self, platform: str, up: bool) -> None:
        self.platform, self.up = platform, up

    def healthy(self) -> bool:
        return self.up


async def test_the_bot_beats_and_a_fresh_beat_with_everything_connected_is_healthy(tmp_path):
    path = tmp_path / "state" / "proverbot.health"
    discord = Frontend("discord", False)
    beating = asyncio.create_task(health.beat(path, [discord], interval=0.01))
    try:
        await asyncio.sleep(0.05)
        with pytest.raises(ProverbotError, match="Not connected: discord"):
            health.check(path)
        discord.up = True
        await asyncio.sleep(0.05)
        assert health.check(path).startswith("healthy: heartbeat 0 s ago; connected: discord")
    finally:
        beating.cancel()


def test_a_stale_missing_or_broken_heartbeat_is_unhealthy(tmp_path):
    path = tmp_path / "proverbot.health"
    with pytest.raises(ProverbotError, match="No heartbeat at"):
        health.check(path)
    path.write_text(json.dumps({"time": time.time() - 600, "connected": {"console": True}}))
    with pytest.raises(ProverbotError, match=r"The last heartbeat is 600 s old \(limit 90 s\)"):
        health.check(path)
    path.write_text("{not json")
    with pytest.raises(ProverbotError, match="Cannot read the heartbeat"):
        health.check(path)


def test_proverbot_health_exit_status(tmp_path, monkeypatch, capsys):
    assert main(["health"]) == 1
    assert "No health_file is set" in capsys.readouterr().err
    path = tmp_path / "proverbot.health"
    monkeypatch.setenv("PROVERBOT_HEALTH_FILE", str(path))
    health.write(path, {"discord": True})
    assert main(["health"]) == 0
    assert capsys.readouterr().out.startswith("healthy:")
    health.write(path, {"discord": False})
    assert main(["health"]) == 1
    assert "Not connected: discord" in capsys.readouterr().err
