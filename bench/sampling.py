#!/usr/bin/env python
"""Sampling benchmark: seconds for the bot to get 5 usable candidates from a GPT-2 124M, next to gpt-2-simple.

candidates_5_s is the bot's own path: a request through model.worker.ModelWorker into Sampler.candidates
(batched, key-value cached, each sample stopping at the separator, filters included), on a run folder loaded
by model.run.load_run in the bot's sampling dtype (--dtype, default auto). With --random-init the weights are
random (no download is possible here) and never emit the separator, so every sample is made to emit it at
its 30th new token (--stop-at; a proverb averages about 23 GPT-2 tokens plus the separator); with --run-name
a trained run's own samples decide where they stop.

gpt-2-simple's side comes from ../shared/bench/run.sh (generate: nsamples=5, batch_size=5, length=100; and
generate-long: the tutorial's one 1023-token sample, split afterwards), run after ours in the same process
tree; skipped with a message where that stack is not installed. Figures are printed as name=value lines,
then a short summary. See bench/README.md.

With --server the same request also goes through model.remote.RemoteSampler to a `transformers serve` of the same
run on 127.0.0.1 (started and stopped here, as tests/test_remote_sampler.py does), and a console bot (`proverbot
run` answering one /proverb, then /quit) runs twice in a child process, sampling in-process and through that server:
its peak resident memory with each.
"""

import argparse
import asyncio
import os
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import closing
from pathlib import Path

from benchutil import (
    LagMonitor,
    OtherLoad,
    child_peak_rss_mb,
    vm_hwm_mb,
    median_of,
    peak_rss_mb,
    print_notes,
    run_peer,
    seconds,
)

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))     # proverbot's packages, imported where used, also without installing it


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Seconds for the bot (model worker, sampler, filters) to get 5 usable candidates from a GPT-2 "
                    "124M, next to gpt-2-simple's generate. Prints name=value lines and a summary.",
    )
    add_run_arguments(p)
    p.add_argument("--stop-at", type=int, default=None,
                   help="force the separator at this new token (default: 30 with --random-init, 0 = off with a run)")
    p.add_argument("--count", type=int, default=5, help="candidates wanted (default: %(default)s)")
    p.add_argument("--length", type=int, default=100, help="most tokens per sample (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=20,
                   help="most samples per forward pass; the bot's default (default: %(default)s)")
    p.add_argument("--temperature", type=float, default=0.7, help="(default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="(default: %(default)s)")
    p.add_argument("--repeats", type=int, default=5,
                   help="timed requests after one warm-up; the median is printed (default: %(default)s)")
    p.add_argument("--peer", action=argparse.BooleanOptionalAction, default=True,
                   help="also run gpt-2-simple's generate and generate-long (../shared/bench; ~3 min on 2 CPU cores)")
    p.add_argument("--server", action="store_true",
                   help="also through a `transformers serve` of the same run on 127.0.0.1, and a console bot's peak "
                        "memory sampling in-process and through it (needs a trained run)")
    p.add_argument("--build-random-run", metavar="FOLDER", help=argparse.SUPPRESS)  # internal: child process
    args = p.parse_args(argv)
    if args.build_random_run:
        return args
    if args.server and (args.random_init or args.stop_at):
        p.error("--server samples a trained run's own stops (a server takes no --stop-at, and random weights never "
                "stop at the separator): give --run-name, or nothing for the most recent run")
    if args.stop_at is None:
        args.stop_at = 30 if args.random_init else 0
    if (args.repeats < 1 or args.count < 1 or args.length < 8 or args.batch_size < 1
            or not 0 <= args.stop_at < args.length):
        p.error("--repeats, --count, --batch-size must be at least 1, --length at least 8, --stop-at below --length")
    return args


def add_run_arguments(p: argparse.ArgumentParser) -> None:
    """The model the sampling benches load: random 124M weights or a trained run, its dtype and device."""
    src = p.add_mutually_exclusive_group()
    src.add_argument("--random-init", action="store_true",
                     help="random 124M weights (GPT2Config() defaults) and the GPT-2 tokenizer; no download")
    src.add_argument("--run-name", help="a trained run in --checkpoint-dir (default: the most recent one)")
    p.add_argument("--checkpoint-dir", default=str(ROOT / "checkpoints"),
                   help="folder of run folders (default: %(default)s)")
    p.add_argument("--corpus", default=str(ROOT / "data/proverbs_clean.txt"),
                   help="the random run's training texts, for the copy filters (default: %(default)s)")
    p.add_argument("--dtype", default="auto",
                   help="sampling dtype: auto, float32, bfloat16, int8 (default: %(default)s)")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda (default: %(default)s)")


def run_folder(args: argparse.Namespace, tmp: str) -> Path:
    """The run folder to load: with --random-init a random 124M one written into `tmp` by a child process (so
    that building it does not count in this process's memory), else the trained run named."""
    from model.errors import ModelError
    from model.runinfo import find_run

    if not args.random_init:
        try:
            return find_run(args.checkpoint_dir, args.run_name)
        except ModelError as err:
            sys.exit(f"{err} Give --random-init, or --run-name/--checkpoint-dir of a trained run.")
    folder = Path(tmp) / "random-124M"
    subprocess.run([sys.executable, __file__, "--build-random-run", str(folder), "--corpus", args.corpus], check=True)
    return folder


def build_random_run(folder: str, corpus: str) -> None:
    """A run folder with random 124M weights (GPT2Config() defaults), the GPT-2 tokenizer and the corpus
    blocks. Runs in a child process so that building it does not count in this process's peak memory."""
    import transformers
    from transformers import GPT2Config, GPT2LMHeadModel

    from model.corpus import SEPARATOR, read_corpus
    from model.run import Run, save_run
    from model.tokenizer import gpt2_tokenizer

    transformers.logging.disable_progress_bar()
    blocks = read_corpus(corpus).blocks
    save_run(Run(Path(folder), GPT2LMHeadModel(GPT2Config()), gpt2_tokenizer(), SEPARATOR, blocks,
                 {"base": "random-init", "step": 0}))


class BotSampler:
    """What the bot's worker drives, built in the worker thread like the bot's: the run loaded in the sampling
    dtype and its Sampler; with stop_at, every forward batch emits the separator from new token stop_at on."""

    def __init__(self, folder, device, dtype: str, stop_at: int):
        self.folder, self.device, self.dtype, self.stop_at = folder, device, dtype, stop_at

    def load(self) -> "BotSampler":
        from transformers import LogitsProcessorList

        from model.run import load_run
        from model.sample import Sampler

        self.sampler = Sampler(load_run(self.folder, self.device, self.dtype))
        start = self.sampler.start_ids
        force = ForceSeparator(start, len(start), self.stop_at, self.sampler.tokenizer.eos_token_id)
        self.processors = LogitsProcessorList([force]) if self.stop_at else None
        return self

    def candidates(self, request):
        return self.sampler.candidates(request, logits_processor=self.processors)


class ForceSeparator:
    """A logits processor: every row emits the separator ids from its `at`-th new token on (1-based), and no
    end-of-text before."""

    def __init__(self, separator_ids: list[int], prompt_length: int, at: int, eos_id: int | None):
        self.sep, self.prompt_length, self.at, self.eos_id = separator_ids, prompt_length, at, eos_id

    def __call__(self, input_ids, scores):
        k = input_ids.shape[1] - self.prompt_length + 1 - self.at  # which separator id is due, if any
        scores = scores.clone()
        if self.eos_id is not None:
            scores[:, self.eos_id] = -float("inf")
        if 0 <= k < len(self.sep):
            scores[:] = -float("inf")
            scores[:, self.sep[k]] = 0.0
        return scores


def parameter_count(config) -> int:
    """Parameters of a GPT-2 of this shape, the tied embedding counted once (an int8 model keeps a second,
    quantised copy of it as its output layer, so its own tensors would count it twice)."""
    import torch
    from transformers import GPT2LMHeadModel

    with torch.device("meta"):
        return sum(p.numel() for p in GPT2LMHeadModel(config).parameters())


async def measure(load, request, repeats: int) -> dict:
    """Start a worker (timed: the bot's load), one warm-up request, then `repeats` timed ones."""
    from model.worker import ModelWorker

    started = time.perf_counter()
    async with ModelWorker(load) as worker:
        load_s = time.perf_counter() - started
        await worker.sample(request)
        busy = OtherLoad()
        times = []
        async with LagMonitor() as lag:
            for _ in range(repeats):
                started = time.perf_counter()
                batch = await worker.sample(request)
                times.append(time.perf_counter() - started)
        return {"load_s": load_s, "times": times, "batch": batch, "other": busy.cores(), "lag": lag}


def peer_figures() -> tuple[dict[str, str], list[str]]:
    """gpt-2-simple's figures from both scripts (name=value), and notes (skips, failures, contamination)."""
    figures, notes = {}, []
    busy = OtherLoad()
    short, long = run_peer("generate"), run_peer("generate-long")
    for what, got in (("generate", short), ("generate-long", long)):
        if isinstance(got, str):
            notes.append(f"gpt-2-simple {what}: {got}")
    for name, got in (("5x100", short), ("1x1023", long)):
        calls = median_of(got, rf"generate_{name}_call\d+_s") if isinstance(got, dict) else None
        if calls is not None:
            figures[f"peer_{name}_s"] = f"{calls:.2f}"
            times = [v for k, v in got.items() if k.startswith(f"generate_{name}_call")]
            figures[f"peer_{name}_times_s"] = ",".join(times)
    if isinstance(short, dict):
        figures["peer_load_s"] = short.get("load_s", "n/a")
        figures["peer_sampling_peak_rss_mb"] = short.get("peak_rss_mb", "n/a")
    other = busy.cores()
    figures["peer_other_processes_cores"] = "n/a" if other is None else f"{other:.2f}"
    return figures, notes


def start_server(folder: Path, device: str) -> tuple[subprocess.Popen, object, float]:
    """`transformers serve FOLDER` on a free port of 127.0.0.1: the process, the model.remote.Server naming it (a
    request names the folder) and the seconds until it answered GET /v1/models."""
    from model.remote import RemoteError, Server

    command = shutil.which("transformers", path=str(Path(sys.executable).parent))
    if command is None:
        sys.exit('--server needs `transformers serve`: pip install "transformers[serving]" (the test extra)')
    with closing(socket.socket()) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    started = time.perf_counter()
    process = subprocess.Popen([command, "serve", str(folder), "--host", "127.0.0.1", "--port", str(port),
                                "--device", device], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    server = Server(f"http://127.0.0.1:{port}", str(folder), timeout=300)
    while True:
        try:
            if str(folder) in server.models():
                return process, server, time.perf_counter() - started
        except RemoteError:
            pass
        if process.poll() is not None or time.perf_counter() - started > 300:
            process.kill()
            sys.exit(f"transformers serve {folder} did not answer on port {port} within 300 s")
        time.sleep(0.5)


def bot_peak_rss_mb(folder: Path, device: str, database: Path, **sampler) -> tuple[float, bool]:
    """`proverbot run` as a console bot answering one /proverb with the run, in-process or through the server that
    `sampler` names (PROVERBOT_SAMPLER_URL, ...): its peak resident memory in MB, and whether the generation it
    logged in `database` is ok."""
    env = {name: value for name, value in os.environ.items() if not name.startswith(("PROVERBOT_", "DISCORD_",
                                                                                     "SLACK_"))}
    env |= {"PROVERBOT_CHECKPOINT_DIR": str(folder.parent), "PROVERBOT_RUN_NAME": folder.name,
            "PROVERBOT_DEVICE": device, "PROVERBOT_DATABASE_URL": f"sqlite+aiosqlite:///{database}",
            "PYTHONPATH": str(ROOT), **sampler}
    peak, status = child_peak_rss_mb([sys.executable, "-m", "chatbot.cli", "run"], "/proverb\n/quit\n", env=env,
                                     cwd=database.parent)
    with closing(sqlite3.connect(database)) as log:
        logged = log.execute("SELECT status FROM generations").fetchall()
    return peak, status == 0 and logged == [("ok",)]


def server_figures(folder: Path, device: str, request, repeats: int, tmp: str) -> dict[str, str]:
    """The request through a RemoteSampler to a `transformers serve` of `folder`, and a console bot's peak memory
    sampling in-process and through that server."""
    from model.remote import open_remote

    bot_in_process = bot_peak_rss_mb(folder, device, Path(tmp) / "in-process.db")
    process, server, start_s = start_server(folder, device)
    try:
        sampler = open_remote(server, folder)
        remote = asyncio.run(measure(lambda: sampler, request, repeats))
        bot_remote = bot_peak_rss_mb(folder, device, Path(tmp) / "remote.db", PROVERBOT_SAMPLER_URL=server.url,
                                     PROVERBOT_SAMPLER_MODEL=server.model)
        server_peak = vm_hwm_mb(process.pid)
    finally:
        process.terminate()
        process.wait(60)
    batch, median_s = remote["batch"], statistics.median(remote["times"])
    return {
        "server": f"transformers serve (its own generate, float32) on 127.0.0.1, {device}",
        "server_start_s": f"{start_s:.2f}",
        "server_other_processes_cores": "n/a" if remote["other"] is None else f"{remote['other']:.2f}",
        "server_candidates_5_s": f"{median_s:.2f}",
        "server_candidates_5_times_s": seconds(remote["times"]),
        "server_candidates_5_samples": batch.samples,
        "server_candidates_5_usable": len(batch.usable),
        "server_candidates_5_tokens": batch.tokens,
        **remote["lag"].figures("server_sampling"),
        "server_peak_rss_mb": f"{server_peak:.0f}",
        "bot_in_process_peak_rss_mb": f"{bot_in_process[0]:.0f}",
        "bot_in_process_answered": "yes" if bot_in_process[1] else "no",
        "bot_remote_peak_rss_mb": f"{bot_remote[0]:.0f}",
        "bot_remote_answered": "yes" if bot_remote[1] else "no",
    }


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.build_random_run:
        build_random_run(args.build_random_run, args.corpus)
        return 0

    import torch
    import transformers

    from model.base import pick_device
    from model.candidates import SampleRequest

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    device = pick_device(args.device)
    tmp = tempfile.TemporaryDirectory(prefix="proverbot-bench-")
    folder = run_folder(args, tmp.name)

    request = SampleRequest(count=args.count, length=args.length, batch_size=args.batch_size,
                            temperature=args.temperature, seed=args.seed)
    bot = BotSampler(folder, device, args.dtype, args.stop_at)
    ours = asyncio.run(measure(bot.load, request, args.repeats))
    sampler, batch, times = bot.sampler, ours["batch"], ours["times"]
    cfg = sampler.model.config
    n_params = parameter_count(cfg)
    ours_s = statistics.median(times)

    figures = {
        "model": f"gpt2 {cfg.n_layer} layers x {cfg.n_embd} wide, {cfg.n_positions} context, {cfg.vocab_size} vocab, "
                 f"{n_params / 1e6:.1f}M parameters",
        "weights": "random-init" if args.random_init else f"run {sampler.run.name} ({sampler.run.checkpoint_id})",
        "device": str(device),
        "dtype": sampler.run.dtype,
        "threads": torch.get_num_threads(),
        "mkl_cbwr": os.environ.get("MKL_CBWR", ""),
        "stop_at": args.stop_at or "off (the model's own stops)",
        "batch_size": args.batch_size,
        "repeats": args.repeats,
        "load_s": f"{ours['load_s']:.2f}",
        "other_processes_cores": "n/a" if ours["other"] is None else f"{ours['other']:.2f}",
        "candidates_5_s": f"{ours_s:.2f}",
        "candidates_5_times_s": seconds(times),
        "candidates_5_samples": batch.samples,
        "candidates_5_usable": len(batch.usable),
        "candidates_5_tokens": batch.tokens,
        "candidates_5_tokens_per_s": f"{batch.tokens / ours_s:.1f}",
        **ours["lag"].figures("sampling"),
        "peak_rss_mb": f"{peak_rss_mb():.0f}",
    }
    if device.type == "cuda":
        figures["peak_gpu_mb"] = f"{torch.cuda.max_memory_allocated() / 2**20:.0f}"
    if args.server:
        figures.update(server_figures(folder, device.type, request, args.repeats, tmp.name))
    notes = []
    if args.peer:
        peer, notes = peer_figures()
        figures.update(peer)
        for name in ("5x100", "1x1023"):
            if f"peer_{name}_s" in peer:
                figures[f"speedup_vs_peer_{name}"] = f"{float(peer[f'peer_{name}_s']) / ours_s:.1f}"
    for name, value in figures.items():
        print(f"{name}={value}")

    print()
    print(f"Summary: {args.count} usable candidates of at most {args.length} tokens from a {n_params / 1e6:.0f}M GPT-2 "
          f"({figures['weights']}, {figures['dtype']}) on {device}, {figures['threads']} threads, through the model "
          f"worker, median of {args.repeats} requests after a warm-up:")
    if args.stop_at:
        print("  (random weights never emit the separator: every sample was made to emit it at new token "
              f"{args.stop_at})")
    print(f"  proverbot:     {ours_s:6.2f} s  ({batch.samples} samples, {batch.tokens} tokens, "
          f"{len(batch.usable)} usable; load {figures['load_s']} s, peak memory {figures['peak_rss_mb']} MB, "
          f"event-loop lag p99 {figures['sampling_lag_p99_ms']} ms)")
    if args.server:
        print(f"  through transformers serve on 127.0.0.1: {float(figures['server_candidates_5_s']):6.2f} s  "
              f"({figures['server_candidates_5_samples']} samples, {figures['server_candidates_5_tokens']} tokens, "
              f"{figures['server_candidates_5_usable']} usable; the server's peak memory "
              f"{figures['server_peak_rss_mb']} MB)")
        print(f"  a console bot answering one /proverb: peak memory {figures['bot_in_process_peak_rss_mb']} MB "
              f"sampling in-process, {figures['bot_remote_peak_rss_mb']} MB through the server (answered: "
              f"{figures['bot_in_process_answered']}, {figures['bot_remote_answered']})")
    if "peer_5x100_s" in figures:
        print(f"  gpt-2-simple:  {float(figures['peer_5x100_s']):6.2f} s  for generate(nsamples=5, batch_size=5, "
              f"length=100): {figures['speedup_vs_peer_5x100']}x ours (goal: at least 8x)")
    if "peer_1x1023_s" in figures:
        print(f"  gpt-2-simple:  {float(figures['peer_1x1023_s']):6.2f} s  for the tutorial's one 1023-token sample "
              f"split afterwards: {figures['speedup_vs_peer_1x1023']}x ours (goal: at least 30x)")
    print_notes(notes, {"ours": ours["other"], "the server's": figures.get("server_other_processes_cores"),
                        "the peer's": figures.get("peer_other_processes_cores")})
    tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
