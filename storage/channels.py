"""Each channel's run: the model a channel samples from, chosen with /model use and kept across restarts.

await db.set_channel_run(platform, channel_id, run_name, server_id="", set_by_id=None, set_by_name=None, at=None)
        -> None     creates or replaces the channel's run, writes an audit entry (model.use)
await db.get_channel_run(platform, channel_id, server_id="") -> str | None     None: the bot's default run
"""

from datetime import datetime

from sqlalchemy import select

from storage.db import DatabaseCore, aware
from storage.generations import clip
from storage.history import write_audit
from storage.models import ChannelRun


class ChannelsAPI(DatabaseCore):
    async def set_channel_run(self, platform: str, channel_id: str, run_name: str, *, server_id: str = "",
                              set_by_id: str | None = None, set_by_name: str | None = None,
                              at: datetime | None = None) -> None:
        at = aware(at)
        async with self._write() as session:
            row = await session.scalar(self._channel(select(ChannelRun), platform, channel_id, server_id))
            if row is None:
                row = ChannelRun(platform=platform, server_id=clip(server_id or "", 64),
                                 channel_id=clip(channel_id, 64))
                session.add(row)
            before = row.run_name
            row.run_name, row.set_at = clip(run_name, 200), at
            row.set_by_id, row.set_by_name = clip(set_by_id, 64), clip(set_by_name, 200)
            target = "/".join(part for part in (platform, server_id, channel_id) if part)
            write_audit(session, "model.use", set_by_id, set_by_name, target,
                        f"{before} -> {run_name}" if before else run_name, at)

    async def get_channel_run(self, platform: str, channel_id: str, *, server_id: str = "") -> str | None:
        async with self._read() as session:
            return await session.scalar(self._channel(select(ChannelRun.run_name), platform, channel_id, server_id))

    @staticmethod
    def _channel(query, platform: str, channel_id: str, server_id: str):
        return query.where(ChannelRun.platform == platform, ChannelRun.server_id == (server_id or ""),
                           ChannelRun.channel_id == str(channel_id)[:64])
