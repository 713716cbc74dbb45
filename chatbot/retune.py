"""Retuning on the votes while the bot runs (setting retune_after_batches; issue 17.3).

    retuner = Retuner(core, [console, discord_bot], every=10)     # the front ends serving their platforms' channels
    task = asyncio.create_task(retuner.run_forever())

Every poll, for each run the bot serves (the default and those loaded): once `every` voted batches have come in
since its checkpoint was last tuned (proverbot.json's "votes", see model/preference.py), the run is tuned on all its
pairs, as `proverbot train --from-votes` does, in a thread of its own: the event loop and the model worker go on
answering. The start and the end are announced in the channel of the newest voted batch; the model pool loads the
new checkpoint at the run's next request (no restart). A run with fewer than 20 pairs of its own waits for more.
One bot process should retune a run: set the setting on one bot only when several share a log.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from pathlib import Path

from chatbot.context import Context
from model.errors import ModelError
from model.runinfo import META, read_json
from proverbot_errors import ProverbotError

log = logging.getLogger(__name__)

BOT_ID = "proverbot"
BOT_NAME = "proverbot (retune)"


def learned_from(folder: Path) -> int | None:
    """How many preference pairs the run's current checkpoint was tuned on; None if it never was."""
    try:
        votes = read_json(folder / META).get("votes")
    except ModelError:
        return None
    pairs = votes.get("pairs") if isinstance(votes, dict) else None
    return pairs if isinstance(pairs, int) and not isinstance(pairs, bool) else None


def last_tuned_batch(folder: Path) -> int:
    """The newest generation id the run's checkpoint learned from (0: none)."""
    votes = read_json(folder / META).get("votes")
    last = votes.get("last_generation") if isinstance(votes, dict) else None
    return last if isinstance(last, int) and not isinstance(last, bool) else 0


class Retuner:
    def __init__(self, core, frontends: Iterable, every: int, device: str = "auto") -> None:
        self.core, self.every, self.device = core, every, device
        self.frontends = {frontend.platform: frontend for frontend in frontends}
        self.tuning: asyncio.Task | None = None
        self.tried: dict[str, int] = {}     # run -> its newest voted batch when last tried: retried after a new one

    async def run_forever(self, poll_seconds: float = 60) -> None:
        """check() every poll_seconds until cancelled; a tuning in flight is left to finish in its thread."""
        while True:
            try:
                await self.check()
            except Exception:
                log.exception("checking for new voted batches failed; trying again in %ss", poll_seconds)
            await asyncio.sleep(poll_seconds)

    async def check(self) -> asyncio.Task | None:
        """Start tuning the first run served with `every` new voted batches (one run at a time); the task, or None."""
        if self.tuning is not None and not self.tuning.done():
            return None
        pool = self.core.pool()
        for name in dict.fromkeys([pool.default, *(run.name for run in pool.loaded())]):
            folder = pool.folder(name)
            last = await asyncio.to_thread(last_tuned_batch, folder)
            pairs = await self.core.db.preference_pairs(name)
            new = {pair.generation_id for pair in pairs if pair.generation_id > last}
            if len(new) >= self.every and self.tried.get(name) != max(new):
                self.tried[name] = max(new)
                self.tuning = asyncio.create_task(self.tune(folder, pairs, len(new)), name=f"retune-{name}")
                return self.tuning
        return None

    async def tune(self, folder: Path, pairs: list, new: int) -> None:
        """Tune `folder` on `pairs` in a thread, announced where the newest voted batch was. Never raises (but
        cancellation)."""
        from model.preference import MIN_PAIRS, TuneConfig, own_pairs, tune

        rows = [(p.prompt, p.chosen, p.rejected, p.checkpoint_id, p.generation_id) for p in pairs]
        try:
            kept = await asyncio.to_thread(own_pairs, folder, rows)
        except ModelError:
            log.info("run %s: fewer than %d pairs of its own yet; not retuning", folder.name, MIN_PAIRS)
            return
        channel = await self.channel(max(row[4] for row in kept))
        await self.say(channel, f"{new} new voted batches: tuning run {folder.name} on {len(kept)} preference pairs "
                                "in the background; the bot keeps answering meanwhile.")
        source = {"batches": len({row[4] for row in kept}), "last_generation": max(row[4] for row in kept)}
        try:
            result = await asyncio.to_thread(tune, folder, kept, TuneConfig(device=self.device), source, False)
        except Exception as err:
            if not isinstance(err, ProverbotError):
                log.error("retuning run %s failed", folder.name, exc_info=err)
            await self.say(channel, f"Tuning run {folder.name} on the votes failed: {err}")
            return
        await self.say(channel, f"Run {folder.name} learned from {result.pairs} preference pairs (checkpoint "
                                f"{result.checkpoint_id}, {result.seconds:.0f}s, {result.perplexity.describe()}); "
                                "the next candidates come from it.")

    async def channel(self, generation_id: int):
        """The channel the batch was sampled in, as the bot speaks there; None off the front ends served here."""
        generation = await self.core.db.get_generation(generation_id)
        frontend = self.frontends.get(generation.platform)
        if frontend is None:
            return None
        return frontend.channel(Context(generation.platform, channel_id=generation.channel_id,
                                        server_id=generation.server_id, user_id=BOT_ID, user_name=BOT_NAME))

    async def say(self, channel, text: str) -> None:
        log.info("%s", text)
        if channel is None:
            return
        from chatbot.frontends.flows import announce    # flows imports core, which imports learned_from

        try:
            await announce(channel, text)
        except Exception:
            log.warning("could not announce the retuning in %s", channel.ctx, exc_info=True)
