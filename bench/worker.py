#!/usr/bin/env python
"""The bot over time: resident memory across 500 /proverb requests, and the event loop's lag while the model
worker samples and while training runs beside it, next to gpt-2-simple's growth over repeated generate calls.

One process, as the bot runs: an asyncio loop, a model.worker.ModelWorker serving a GPT-2 124M run (random
weights with --random-init, each sample made to emit the separator at its 30th new token as in
bench/sampling.py), and a monitor task that asks to wake every 10 ms and records how late it wakes.

  1. sampling: --requests (500) /proverb requests (the bot's defaults: 5 candidates, at most 100 tokens,
     batch 20, temperature 0.7, no seed) one after another; resident memory after each --every (50).
  2. training: Trainer.train_step() of the embedded default (tiny preset, on the proverbs) runs in a thread
     for --train-requests (10) more requests.

gpt-2-simple's side: ../shared/bench/run.sh leak (60 generate calls of 5 x 20 tokens on its tiny model by
default, memory and graph size every 20), skipped with a message where that stack is not installed. Figures are
printed as name=value lines, then a short summary. See bench/README.md.
"""

import argparse
import asyncio
import sys
import tempfile
import threading
import time

from benchutil import LagMonitor, OtherLoad, busy_warning, peak_rss_mb, rss_mb, run_peer
from sampling import BotSampler, add_run_arguments, run_folder     # bench/sampling.py: it puts proverbot on the path


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Resident memory over many /proverb requests through the model worker, "
                                            "and event-loop lag while it samples and trains. Prints name=value lines.")
    add_run_arguments(p)
    p.add_argument("--requests", type=int, default=500, help="requests in the sampling phase (default: %(default)s)")
    p.add_argument("--every", type=int, default=50,
                   help="print resident memory every N requests (default: %(default)s)")
    p.add_argument("--train-requests", type=int, default=10,
                   help="requests while training runs beside (default: %(default)s)")
    p.add_argument("--peer", action=argparse.BooleanOptionalAction, default=True,
                   help="also run gpt-2-simple's repeated generate calls (../shared/bench run.sh leak)")
    p.add_argument("--peer-model", default="tiny",
                   help="tiny (its growth shows in minutes) or 124M (default: %(default)s)")
    args = p.parse_args(argv)
    if args.requests < 1 or args.every < 1 or args.train_requests < 0:
        p.error("--requests and --every must be at least 1, --train-requests at least 0")
    return args


class TrainingBeside:
    """Training steps of the embedded default in a thread of their own until stopped (like `proverbot train`
    next to the bot, but in its process: the worst case for the event loop)."""

    def __init__(self, corpus: str, checkpoint_dir: str):
        from model.train import Trainer, make_config

        cfg = make_config("tiny", corpus=corpus, checkpoint_dir=checkpoint_dir, run_name="beside", device="cpu",
                          val_every=0, eval_samples=0)
        self.trainer = Trainer(cfg, progress=False)
        self.steps = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="training", daemon=True)

    def _run(self):
        while not self.stop.is_set():
            self.trainer.train_step()
            self.steps += 1

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc_info):
        self.stop.set()
        self.thread.join()


async def run(args, folder, request, tmp: str) -> dict[str, str]:
    from model.base import pick_device
    from model.worker import ModelWorker

    figures = {}
    bot = BotSampler(folder, pick_device(args.device), args.dtype, 30 if args.random_init else 0)
    async with ModelWorker(bot.load) as worker:
        figures["dtype"] = bot.sampler.run.dtype
        figures["rss_after_load_mb"] = f"{rss_mb():.0f}"
        busy = OtherLoad()
        started = time.perf_counter()
        async with LagMonitor() as lag:
            for i in range(1, args.requests + 1):
                await worker.sample(request)
                if i == 1 or i % args.every == 0 or i == args.requests:
                    figures[f"rss_after_{i}_mb"] = f"{rss_mb():.0f}"
        figures["seconds_per_request"] = f"{(time.perf_counter() - started) / args.requests:.2f}"
        growth = float(figures[f"rss_after_{args.requests}_mb"]) - float(figures["rss_after_1_mb"])
        figures["rss_growth_mb"] = f"{growth:+.0f}"
        figures.update(lag.figures("sampling"))
        other = busy.cores()
        figures["other_processes_cores"] = "n/a" if other is None else f"{other:.2f}"
        figures["peak_rss_mb"] = f"{peak_rss_mb():.0f}"  # load and sampling; training beside adds its own
        if args.train_requests:
            with TrainingBeside(args.corpus, tmp) as training:
                async with LagMonitor() as lag:
                    for _ in range(args.train_requests):
                        await worker.sample(request)
            figures.update(lag.figures("training"))
            figures["training_steps_beside"] = str(training.steps)
    return figures


def main(argv=None) -> int:
    args = parse_args(argv)
    import transformers

    from model.candidates import SampleRequest

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    tmp = tempfile.TemporaryDirectory(prefix="proverbot-bench-")
    folder = run_folder(args, tmp.name)
    request = SampleRequest(count=5, length=100, batch_size=20, temperature=0.7)
    figures = {"weights": "random-init" if args.random_init else folder.name, "requests": str(args.requests)}
    figures.update(asyncio.run(run(args, folder, request, tmp.name)))
    notes = []
    if args.peer:
        peer = run_peer("leak", args.peer_model)
        if isinstance(peer, str):
            notes.append(f"gpt-2-simple leak: {peer}")
        else:
            figures.update({f"peer_{name}": value for name, value in peer.items()})
            figures["peer_model"] = args.peer_model
    for name, value in figures.items():
        print(f"{name}={value}")

    print()
    print(f"Summary: {args.requests} /proverb requests through the model worker ({figures['weights']}, "
          f"{figures['dtype']}, {figures['seconds_per_request']} s each):")
    series = [f"{k.removeprefix('rss_after_').removesuffix('_mb')}: {v}" for k, v in figures.items()
              if k.startswith("rss_after_") and k != "rss_after_load_mb"]
    print(f"  resident memory {figures['rss_after_load_mb']} MB after load; after request " + ", ".join(series)
          + f" MB; growth from the first to the last request {figures['rss_growth_mb']} MB (goal: none, under 1200 MB)")
    beside = (f"; while training beside it: p99 {figures['training_lag_p99_ms']} ms, max "
              f"{figures['training_lag_max_ms']} ms ({figures['training_steps_beside']} training steps)"
              if args.train_requests else "")
    print(f"  event-loop lag while sampling: p99 {figures['sampling_lag_p99_ms']} ms, max "
          f"{figures['sampling_lag_max_ms']} ms{beside} (goal: p99 under 20 ms)")
    peer_rss = {k: v for k, v in figures.items() if k.startswith("peer_") and k.endswith("_rss_mb")}
    if peer_rss:
        print(f"  gpt-2-simple ({args.peer_model}), resident memory over repeated generate calls: "
              + ", ".join(f"{k.removeprefix('peer_').removesuffix('_rss_mb')} {v} MB" for k, v in peer_rss.items()))
    for note in notes:
        print(f"  {note}")
    other = figures["other_processes_cores"]
    if busy_warning(None if other == "n/a" else float(other)):
        print(f"  {busy_warning(float(other))}")
    tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
