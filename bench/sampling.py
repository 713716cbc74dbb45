#!/usr/bin/env python
"""Sampling benchmark: seconds to get 5 tweet candidates of at most 100 tokens from a GPT-2 124M.

Two measurements, same model, same seed, same per-sample stop lengths:

  candidates_5_s                 Sampler.candidates(): the bot's real path. Each sample stops at the
                                 separator and a forward batch stops when all its rows have.
  candidates_5_no_early_stop_s   gpt-2-simple's way: every sample runs the full 100 tokens and is cut at
                                 the separator afterwards (same Sampler, same filters, early stop off).

With --random-init the weights are random (no download is possible here). Random weights never emit
the separator, so a logits processor emulates a fine-tuned model's sample lengths: row i is made to emit
the separator tokens (GPT-2: tokenizer.encode("\\n==========\\n")) after a number of tokens drawn, seeded,
from the GPT-2 token lengths of the corpus blocks (data/proverbs_clean.txt). With --run-name the
trained run's own samples decide where they stop (--emulate-stops forces the emulation anyway).

Figures are printed as name=value lines, then a short summary. See bench/README.md.
"""

import argparse
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchutil import OtherLoad, busy_warning, peak_rss_mb  # noqa: E402  (bench/ is sys.path[0] when run as a script)

# gpt-2-simple 0.8.1 on TensorFlow 2 (CPU), measured on the project's 2-core CPU machine
# (see bench/README.md for the source); printed next to ours, never read at run time.
PEER = "peer gpt-2-simple: 8.3–10.1 s per call for 5 × 100 tokens (124M, nsamples=5, batch_size=5, TensorFlow 2 CPU, 2 cores); load 3.2 s; peak memory 3.4–3.7 GB"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Seconds to get 5 candidates of at most 100 tokens from a GPT-2 124M, with and without "
                    "early stopping at the separator. Prints name=value lines and a summary.",
    )
    src = p.add_mutually_exclusive_group()
    src.add_argument("--random-init", action="store_true",
                     help="random 124M weights (GPT2Config() defaults) and the GPT-2 tokenizer; no download")
    src.add_argument("--run-name", help="a trained run in --checkpoint-dir (default: the most recent one)")
    p.add_argument("--checkpoint-dir", default=str(ROOT / "checkpoints"), help="folder of run folders (default: %(default)s)")
    p.add_argument("--corpus", default=str(ROOT / "data/proverbs_clean.txt"),
                   help="blocks whose token lengths drive the emulated stops (default: %(default)s)")
    p.add_argument("--emulate-stops", action=argparse.BooleanOptionalAction, default=None,
                   help="force the separator at proverb-like lengths (default: on with --random-init, off with a trained run)")
    p.add_argument("--count", type=int, default=5, help="candidates wanted (default: %(default)s)")
    p.add_argument("--length", type=int, default=100, help="most tokens per sample (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=20, help="most samples per forward pass; the bot's default (default: %(default)s)")
    p.add_argument("--temperature", type=float, default=0.7, help="(default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="sampling and stop-length seed (default: %(default)s)")
    p.add_argument("--repeats", type=int, default=3, help="timed calls per measurement, after one warm-up; the median is printed (default: %(default)s)")
    p.add_argument("--peer-call", action="store_true",
                   help="also time gpt-2-simple's exact call: generate(nsamples=5, batch_size=5, length=100), every "
                        "sample the full length, no filters (median of --repeats, after the other measurements; ~1 min more on 2 CPU cores)")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda (default: %(default)s)")
    p.add_argument("--build-random-run", metavar="FOLDER", help=argparse.SUPPRESS)  # internal: child process
    args = p.parse_args(argv)
    if args.build_random_run:
        return args
    if not args.random_init and args.run_name is None and not (Path(args.checkpoint_dir).is_dir()):
        p.error("give --random-init, or --run-name/--checkpoint-dir of a trained run")
    if args.emulate_stops is None:
        args.emulate_stops = args.random_init
    if args.repeats < 1 or args.count < 1 or args.length < 8 or args.batch_size < 1:
        p.error("--repeats, --count, --batch-size must be at least 1 and --length at least 8")
    return args


def build_random_run(folder: str, corpus: str) -> None:
    """A run folder with random 124M weights (GPT2Config() defaults), the GPT-2 tokenizer and the corpus
    blocks. Runs in a child process so that building it does not count in this process's peak memory."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from model.corpus import SEPARATOR, read_corpus
    from model.run import Run, save_run
    from model.tokenizer import gpt2_tokenizer

    blocks = read_corpus(corpus).blocks
    save_run(Run(Path(folder), GPT2LMHeadModel(GPT2Config()), gpt2_tokenizer(), SEPARATOR, blocks,
                 {"base": "random-init", "step": 0}))


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.build_random_run:
        build_random_run(args.build_random_run, args.corpus)
        return 0

    import torch
    import transformers
    from transformers import LogitsProcessor, LogitsProcessorList

    from model.base import pick_device
    from model.corpus import read_corpus
    from model.run import find_run, load_run
    from model.sample import Sample, SampleRequest, Sampler

    transformers.logging.set_verbosity_error()
    device = pick_device(args.device)

    class EmulatedStops(LogitsProcessor):
        """Makes row i emit the separator ids after stops[i] tokens, stops drawn (seeded) from `lengths`.

        New stop lengths are drawn at the first step of every forward batch; reset() before each timed
        call so that both modes see the same stops. EOS is never let through: a fine-tuned model ends a
        sample with the separator, and gpt-2-simple's full-length samples run `length` tokens anyway."""

        def __init__(self, lengths, separator_ids, prompt_len, max_new, eos_id, seed):
            self.lengths, self.sep, self.prompt_len = lengths, list(separator_ids), prompt_len
            self.max_new, self.eos_id, self.seed = max_new, eos_id, seed
            self.reset()

        def reset(self):
            self.rng = random.Random(self.seed)
            self.stops = []
            self.drawn = []

        def __call__(self, input_ids, scores):
            t = input_ids.shape[1] - self.prompt_len
            if t == 0 or len(self.stops) != input_ids.shape[0]:
                room = self.max_new - len(self.sep)
                self.stops = [min(self.rng.choice(self.lengths), room) for _ in range(input_ids.shape[0])]
                self.drawn += self.stops
            scores = scores.clone()
            if self.eos_id is not None:
                scores[:, self.eos_id] = -float("inf")
            for row, stop in enumerate(self.stops):
                k = t - stop
                if 0 <= k < len(self.sep):
                    scores[row] = -float("inf")
                    scores[row, self.sep[k]] = 0.0
            return scores

    class FullLengthSampler(Sampler):
        """gpt-2-simple's generate: no stopping criterion, every sample runs `length` tokens; the texts are
        cut at the first stop token / the separator afterwards by the same _decode. Sample.tokens counts
        every generated token."""

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.stopping = []  # no separator criterion

        def _config(self, request, length):
            config = super()._config(request, length)
            config.eos_token_id = None  # and no end-of-text stop
            return config

        def _decode(self, new_ids, request):
            sample = super()._decode(new_ids, request)
            return Sample(text=sample.text, tokens=len(new_ids))

    # -- the model ---------------------------------------------------------------------------------
    tmp = tempfile.TemporaryDirectory(prefix="proverbot-bench-")
    build_s = None
    if args.random_init:
        started = time.perf_counter()
        folder = Path(tmp.name) / "random-124M"
        subprocess.run([sys.executable, __file__, "--build-random-run", str(folder), "--corpus", args.corpus], check=True)
        build_s = time.perf_counter() - started
    else:
        folder = find_run(args.checkpoint_dir, args.run_name)
    started = time.perf_counter()
    run = load_run(folder, device)
    early = Sampler(run)
    load_s = time.perf_counter() - started
    full = FullLengthSampler(run)
    n_params = sum(p.numel() for p in run.model.parameters())
    cfg = run.model.config

    processors = None
    stops = None
    if args.emulate_stops:
        lengths = [len(run.tokenizer.encode(b)) for b in read_corpus(args.corpus).blocks]
        stops = EmulatedStops(lengths, early.start_ids, len(early.start_ids), args.length,
                              run.tokenizer.eos_token_id, args.seed)
        processors = LogitsProcessorList([stops])

    request = SampleRequest(count=args.count, length=args.length, batch_size=args.batch_size,
                            temperature=args.temperature, seed=args.seed)

    def call(sampler):
        """One candidates() call; (seconds, batch, stop lengths drawn)."""
        if stops is not None:
            stops.reset()
        if device.type == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        batch = sampler.candidates(request, logits_processor=processors)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - started, batch, (list(stops.drawn) if stops is not None else None)

    # one warm-up each, then the two modes alternate so that a busy spell hits both alike
    call(early)
    call(full)
    busy = OtherLoad()
    early_times, full_times = [], []
    for _ in range(args.repeats):
        seconds, early_batch, early_stops = call(early)
        early_times.append(seconds)
        seconds, full_batch, _ = call(full)
        full_times.append(seconds)
    peer_times = []
    if args.peer_call:
        peer_request = SampleRequest(nsamples=5, batch_size=5, length=args.length, temperature=args.temperature, seed=args.seed)
        for _ in range(args.repeats):
            if stops is not None:
                stops.reset()
            started = time.perf_counter()
            full.generate(peer_request, logits_processor=processors)
            if device.type == "cuda":
                torch.cuda.synchronize()
            peer_times.append(time.perf_counter() - started)
    other_load = busy.cores()
    early_s, full_s = statistics.median(early_times), statistics.median(full_times)

    texts = lambda b: [c.text for c in b.usable + b.rejected]
    early_texts, full_texts = texts(early_batch), set(texts(full_batch))
    same = sum(t in full_texts for t in early_texts)

    figures = {
        "model": f"gpt2 {cfg.n_layer} layers x {cfg.n_embd} wide, {cfg.n_positions} context, {cfg.vocab_size} vocab, {n_params / 1e6:.1f}M parameters",
        "weights": "random-init" if args.random_init else f"run {run.name} ({run.checkpoint_id})",
        "device": str(device),
        "threads": torch.get_num_threads(),
        "mkl_cbwr": os.environ.get("MKL_CBWR", ""),
        "emulated_stops": "yes" if args.emulate_stops else "no",
        "batch_size": args.batch_size,
        "repeats": args.repeats,
        "load_s": f"{load_s:.2f}",
        "other_processes_cores": "n/a" if other_load is None else f"{other_load:.2f}",
        "candidates_5_s": f"{early_s:.2f}",
        "candidates_5_times_s": ",".join(f"{t:.2f}" for t in early_times),
        "candidates_5_samples": early_batch.samples,
        "candidates_5_usable": len(early_batch.usable),
        "candidates_5_tokens": early_batch.tokens,
        "candidates_5_tokens_per_s": f"{early_batch.tokens / early_s:.1f}",
        "candidates_5_no_early_stop_s": f"{full_s:.2f}",
        "candidates_5_no_early_stop_times_s": ",".join(f"{t:.2f}" for t in full_times),
        "candidates_5_no_early_stop_samples": full_batch.samples,
        "candidates_5_no_early_stop_usable": len(full_batch.usable),
        "candidates_5_no_early_stop_tokens": full_batch.tokens,
        "candidates_5_no_early_stop_tokens_per_s": f"{full_batch.tokens / full_s:.1f}",
        **({"peer_call_s": f"{statistics.median(peer_times):.2f}",
            "peer_call_times_s": ",".join(f"{t:.2f}" for t in peer_times)} if peer_times else {}),
        "early_stop_speedup": f"{full_s / early_s:.2f}",
        "same_texts": f"{same}/{len(early_texts)}",
        "peak_rss_mb": f"{peak_rss_mb():.0f}",
    }
    if build_s is not None:
        figures["build_s"] = f"{build_s:.2f}"
    if early_stops:
        figures["emulated_stop_tokens"] = ",".join(map(str, early_stops))
    if device.type == "cuda":
        figures["peak_gpu_mb"] = f"{torch.cuda.max_memory_allocated() / 2**20:.0f}"
    for name, value in figures.items():
        print(f"{name}={value}")

    print()
    print(f"Summary: {args.count} candidates of at most {args.length} tokens from a {n_params / 1e6:.0f}M GPT-2 "
          f"({figures['weights']}) on {device}, {figures['threads']} threads, batch_size {args.batch_size}, "
          f"median of {args.repeats} after a warm-up, the two ways alternating:")
    if args.emulate_stops:
        print(f"  (random weights never emit the separator: each sample was made to emit it after a length drawn "
              f"from the corpus blocks' GPT-2 token lengths, here {figures['emulated_stop_tokens']} tokens)")
    print(f"  early stop at the separator (the bot):  {early_s:6.2f} s  {early_batch.samples} samples, "
          f"{early_batch.tokens} tokens, {len(early_batch.usable)} usable")
    print(f"  every sample {args.length} tokens, cut after:  {full_s:6.2f} s  {full_batch.samples} samples, "
          f"{full_batch.tokens} tokens, {len(full_batch.usable)} usable  -> early stopping takes {early_s / full_s:.0%} of the time")
    if peer_times:
        print(f"  gpt-2-simple's own call, generate(nsamples=5, batch_size=5, length={args.length}), full length, "
              f"no filters: {statistics.median(peer_times):.2f} s")
    print(f"  same texts both ways: {figures['same_texts']} (identical seeds and stops; a re-sampled batch may differ)")
    print(f"  load {load_s:.1f} s, peak resident memory of this process {figures['peak_rss_mb']} MB")
    print(f"  {PEER}")
    if busy_warning(other_load):
        print(f"  {busy_warning(other_load)}")
    tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
