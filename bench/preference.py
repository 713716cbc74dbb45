#!/usr/bin/env python
"""Does the bot learn what its community likes (issue 17.4)? A simulated community with a fixed, checkable taste
votes on batches through the real core (model worker, pool, SQLite log); then the run is tuned on its votes as
`proverbot train --from-votes` does; then fresh candidates are sampled and compared with the run before.

Tastes (a text has it or not; the community votes for a candidate with it, the shortest when several have it, and
for none when no candidate has it):
    short     at most --short-words words
    mentions  mentions --word (as a whole word)
    starts    starts with --start-word

For each taste and seed: a copy of the run, --batches batches of 5 candidates asked and voted on, tuning, then on
--samples fresh candidates before and after: the share with the taste, the held-out perplexity on the corpus (the
blocks its training held out), the usable rate and the share of exact copies of a training text (--samples raw
samples, as `proverbot train` reports them), and the tuning's seconds. Goals (issue 17): the share at least doubled
or +20 points, perplexity within 10%, usable and copies no worse. Prints one name=value line per figure and a table
of medians over seeds. See bench/README.md.

    .venv/bin/python bench/preference.py --run-name default --batches 100 --seeds 1,2,3
"""

import argparse
import asyncio
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TASTES = ("short", "mentions", "starts")
TUNE_OPTIONS = ("learning_rate", "corpus", "max_perplexity_rise", "epochs")   # flags passed to TuneConfig


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="A simulated community votes; the run is tuned on the votes; before/after.")
    p.add_argument("--run-name", help="a run in --checkpoint-dir (default: the most recent one)")
    p.add_argument("--checkpoint-dir", default=str(ROOT / "checkpoints"), help="(default: %(default)s)")
    p.add_argument("--tastes", default=",".join(TASTES), help="(default: %(default)s)")
    p.add_argument("--batches", type=int, default=100, help="batches voted on per taste (default: %(default)s)")
    p.add_argument("--samples", type=int, default=200, help="fresh candidates before and after (default: %(default)s)")
    p.add_argument("--seeds", default="1", help="comma-separated; medians over them (default: %(default)s)")
    p.add_argument("--short-words", type=int, default=8, help="(default: %(default)s)")
    p.add_argument("--word", default="lord", help="(default: %(default)s)")
    p.add_argument("--start-word", default="the", help="(default: %(default)s)")
    p.add_argument("--learning-rate", type=float, help="tuning's (default: TuneConfig's)")
    p.add_argument("--corpus", type=float, help="tuning's weight of the corpus's likelihood (default: its own)")
    p.add_argument("--max-perplexity-rise", type=float, help="tuning's perplexity budget (default: its own)")
    p.add_argument("--epochs", type=int, help="tuning's passes over the pairs (default: its own)")
    return p.parse_args(argv)


def taste_of(name: str, args):
    """The taste as a test of one text."""
    if name == "short":
        return lambda text: len(text.split()) <= args.short_words
    if name == "mentions":
        return lambda text: re.search(rf"\b{re.escape(args.word)}\b", text, re.IGNORECASE) is not None
    return lambda text: text.lower().startswith(args.start_word.lower() + " ")


def share(texts: list[str], has) -> float:
    return sum(map(has, texts)) / len(texts) if texts else 0.0


def measure(folder: Path, samples: int, seed: int) -> dict:
    """Fresh usable candidates' texts, held-out perplexity, usable and copy rates of raw samples."""
    from model.candidates import SampleRequest
    from model.run import load_run
    from model.sample import Sampler
    from model.train import perplexity, quality_rates, split_blocks

    run = load_run(folder)
    batch = Sampler(run).candidates(SampleRequest(count=samples, batch_size=50, seed=10_000 + seed))
    held_out = split_blocks(run)[1]
    usable, copies = quality_rates(folder, samples)
    return {"texts": [c.text for c in batch.usable], "perplexity": perplexity(run, held_out), "usable": usable,
            "copies": copies}


def figures(measured: dict, has) -> dict:
    """measure()'s figures, the texts replaced by the share with the taste."""
    return {"taste": share(measured["texts"], has), **{k: v for k, v in measured.items() if k != "texts"}}


async def vote_batches(folder: Path, has, batches: int, seed: int) -> int:
    """--batches asked through the real core; the community votes for its favourite. Returns the votes cast."""
    from chatbot.app import open_pool
    from chatbot.config import load_settings
    from chatbot.context import Context
    from chatbot.core import Core, Defaults, ModelInfo
    from chatbot.publishers.dryrun import DryRunPublisher
    from model.worker import ModelWorker
    from storage import Database

    settings = load_settings(checkpoint_dir=folder.parent, run_name=folder.name, device="cpu",
                             sample_dtype="float32")
    pool = open_pool(settings)
    db = Database(os.environ["PROVERBOT_DATABASE_URL"])
    await db.start()
    loaded, cast = [], 0

    def load():
        loaded.append(pool.sampler(None))
        return pool

    try:
        async with ModelWorker(load, timeout=600) as worker:
            core = Core(db, worker, DryRunPublisher(), ModelInfo.of(loaded[0]), Defaults(count=5), runs=pool)
            for i in range(batches):
                ctx = Context("bench", channel_id="c1", user_id=f"asker{i}", user_name="asker")
                asked = await core.ask(ctx)
                liked = [c for c in asked.candidates if has(c.text)]
                if liked:
                    favourite = min(liked, key=lambda c: len(c.text))
                    await core.vote(Context("bench", channel_id="c1", user_id="voter", user_name="voter"), favourite.id)
                    cast += 1
    finally:
        await db.close()
    return cast


def tune_on_votes(folder: Path, options: dict) -> dict:
    """As `proverbot train --from-votes`: the log's pairs of this run, tuned with the defaults; the pairs, steps kept,
    whether the perplexity budget stopped it (1) and seconds. A tuning that the budget refused at its first check
    keeps the run as it was (0 steps)."""
    from chatbot.storage_cli import with_database
    from model.errors import ModelError
    from model.preference import TuneConfig, own_pairs, tune

    pairs = with_database(lambda db: db.preference_pairs(folder.name))
    kept = own_pairs(folder, [(p.prompt, p.chosen, p.rejected, p.checkpoint_id, p.generation_id) for p in pairs])
    started = time.perf_counter()
    try:
        result = tune(folder, kept, TuneConfig(device="cpu", **options), {"batches": len({p[4] for p in kept})},
                      progress=False)
    except ModelError as err:
        print(f"# {err}", flush=True)
        return {"pairs": len(kept), "steps": 0, "budget_stop": 1.0, "tune_s": time.perf_counter() - started}
    return {"pairs": result.pairs, "steps": result.steps, "budget_stop": float(result.stopped == "perplexity"),
            "tune_s": time.perf_counter() - started}


def one(folder: Path, taste: str, args, seed: int, work: Path, before: dict) -> dict:
    """One taste and seed on a fresh copy of the run; `before`: measure() of the run with this seed."""
    import torch

    torch.manual_seed(seed)
    has = taste_of(taste, args)
    copy = work / f"{taste}-{seed}" / folder.name
    shutil.copytree(folder, copy)
    os.environ["PROVERBOT_DATABASE_URL"] = f"sqlite+aiosqlite:///{copy.parent / 'log.db'}"
    before = figures(before, has)
    votes = asyncio.run(vote_batches(copy, has, args.batches, seed))
    options = {k: getattr(args, k) for k in TUNE_OPTIONS if getattr(args, k) is not None}
    tuned = tune_on_votes(copy, options)
    after = figures(measure(copy, args.samples, seed), has)
    return {"votes": votes, **tuned,
            **{f"{k}_before": v for k, v in before.items()}, **{f"{k}_after": v for k, v in after.items()}}


def main(argv=None) -> int:
    args = parse_args(argv)
    import transformers

    from model.runinfo import find_run

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    folder = find_run(args.checkpoint_dir, args.run_name)
    seeds = [int(s) for s in args.seeds.split(",")]
    table, started = {}, time.perf_counter()
    before = {seed: measure(folder, args.samples, seed) for seed in seeds}   # the same for every taste
    with tempfile.TemporaryDirectory() as tmp:
        for taste in args.tastes.split(","):
            rows = [one(folder, taste, args, seed, Path(tmp), before[seed]) for seed in seeds]
            for seed, row in zip(seeds, rows):
                for name, value in row.items():
                    print(f"{taste}_seed{seed}_{name}={value:.4g}", flush=True)
            table[taste] = {name: statistics.median(row[name] for row in rows) for name in rows[0]}
    print(f"\nMedians over seeds {args.seeds}, run {folder.name}, {args.batches} batches, {args.samples} samples:")
    print(f"{'taste':9} {'votes':>5} {'pairs':>5} {'share':>13} {'perplexity':>15} {'usable':>11} {'copies':>11} "
          f"{'steps':>5} {'tune s':>6}")
    for taste, m in table.items():
        print(f"{taste:9} {m['votes']:5.0f} {m['pairs']:5.0f} {m['taste_before']:5.0%} → {m['taste_after']:5.0%} "
              f"{m['perplexity_before']:6.2f} → {m['perplexity_after']:6.2f} {m['usable_before']:4.0%} → "
              f"{m['usable_after']:4.0%} {m['copies_before']:4.0%} → {m['copies_after']:4.0%} "
              f"{m['steps']:5.0f} {m['tune_s']:6.0f}")
    print(f"total_s={time.perf_counter() - started:.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
