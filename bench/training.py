#!/usr/bin/env python
"""Training benchmark: tokens per second and memory of GPT-2 fine-tuning steps at 1024 tokens of context.

The peer's setting (gpt-2-simple finetune): batch_size 1, accumulate_gradients 5, 1024-token windows, so
one optimizer step sees 5 x 1024 = 5120 tokens. The project's real Trainer (model.train) does the steps,
on a random-init 124M Hugging Face folder (GPT2Config() defaults + the GPT-2 tokenizer; no download is
possible here) and the proverbs corpus. Only the steps are timed: the first `--warmup-steps` are run and
reported apart, nothing is saved (Trainer.train() would write a 500 MB checkpoint at the end).

gpt-2-simple's side comes from ../shared/bench/run.sh finetune (4 steps of the same shape, on the same corpus),
run after ours; skipped with a message where that stack is not installed.

`--gradient-checkpointing` and `--lora` measure the memory-saving ways (issue 16), `--shape 355M` a bigger GPT-2:
besides the rate, the memory training adds to the loaded model (peak resident memory during the steps, polled)
and what it is made of: gradients and optimizer states (counted exactly), the rest activations. bench/README.md
turns these into what a 24 GB GPU needs for 774M and 1558M.

Figures are printed as name=value lines, then a short summary. See bench/README.md.
"""

import argparse
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from benchutil import OtherLoad, print_notes, peak_rss_mb, rss_mb, run_peer, seconds

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))     # proverbot's packages, imported where used, also without installing it
# GPT-2's sizes: layers, width, heads
SHAPES = {"124M": (12, 768, 12), "355M": (24, 1024, 16), "774M": (36, 1280, 20), "1558M": (48, 1600, 25)}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Tokens per second of GPT-2 124M fine-tuning steps with the project's Trainer "
                    "(like gpt-2-simple's finetune: batch 1 x 1024 tokens, accumulate_gradients 5). "
                    "Prints name=value lines and a summary.",
    )
    src = p.add_mutually_exclusive_group()
    src.add_argument("--random-init", action="store_true",
                     help="random 124M weights (GPT2Config() defaults) and the GPT-2 tokenizer (the default; no "
                     "download)")
    src.add_argument("--base", help="fine-tune this model folder instead (Hugging Face or OpenAI/gpt-2-simple layout)")
    p.add_argument("--shape", choices=SHAPES, default="124M",
                   help="with random weights: the GPT-2 size to build (default: %(default)s)")
    p.add_argument("--gradient-checkpointing", action="store_true",
                   help="recompute each block in the backward pass instead of keeping its activations")
    p.add_argument("--lora", action="store_true", help="train LoRA adapters beside the frozen weights")
    p.add_argument("--lora-rank", type=int, help="with --lora: the adapters' rank (default: the trainer's, 8)")
    p.add_argument("--corpus", default=str(ROOT / "data/proverbs_clean.txt"), help="(default: %(default)s)")
    p.add_argument("--steps", type=int, default=3,
                   help="optimizer steps to run, the warm-up included; the rate is timed on the others (default: "
                        "%(default)s; about 80 s each for 124M on a 2-core CPU)")
    p.add_argument("--warmup-steps", type=int, default=1,
                   help="first steps left out of the rate (default: %(default)s)")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda (default: %(default)s)")
    p.add_argument("--dtype", default="auto", help="autocast: auto, float32, bfloat16 (default: %(default)s)")
    p.add_argument("--peer", action=argparse.BooleanOptionalAction, default=True,
                   help="also run gpt-2-simple's finetune (../shared/bench; ~3 min and 9 GB on 2 CPU cores)")
    p.add_argument("--batch-size", type=int, default=1, help="windows per micro-batch (default: %(default)s)")
    p.add_argument("--accumulate-gradients", type=int, default=5,
                   help="micro-batches per optimizer step (default: %(default)s)")
    p.add_argument("--dropout", type=float, default=None,
                   help="dropout while training; default: none, as `proverbot train` fine-tunes (and gpt-2-simple)")
    p.add_argument("--block-size", type=int, default=1024,
                   help="tokens per window, at most the model's context (default: %(default)s)")
    p.add_argument("--build-random-base", metavar="FOLDER", help=argparse.SUPPRESS)  # internal: child process
    args = p.parse_args(argv)
    if (args.warmup_steps < 0 or args.steps <= args.warmup_steps or args.batch_size < 1
            or args.accumulate_gradients < 1 or args.block_size < 8):
        p.error("--steps must be more than --warmup-steps (at least 0); --batch-size, --accumulate-gradients at "
                "least 1; --block-size at least 8")
    if args.dropout is not None and not 0 <= args.dropout < 1:
        p.error("--dropout must be in [0, 1)")
    return args


def build_random_base(folder: str, shape: str) -> None:
    """A Hugging Face folder with random weights of GPT-2's `shape` and the GPT-2 tokenizer. Runs in a child process
    so that building it does not count in the benchmark's peak memory."""
    import transformers
    from transformers import GPT2Config, GPT2LMHeadModel

    from model.tokenizer import gpt2_tokenizer

    transformers.logging.disable_progress_bar()
    n_layer, n_embd, n_head = SHAPES[shape]
    GPT2LMHeadModel(GPT2Config(n_layer=n_layer, n_embd=n_embd, n_head=n_head)).save_pretrained(folder)
    gpt2_tokenizer().save_pretrained(folder)


class PeakRss:
    """The highest resident memory of this process while the block runs (polled every 5 ms), in MB."""

    def __enter__(self):
        self.peak, self._done = rss_mb(), threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        return self

    def _poll(self):
        while not self._done.wait(0.005):
            self.peak = max(self.peak, rss_mb())

    def __exit__(self, *exc_info):
        self._done.set()
        self._thread.join()
        self.peak = max(self.peak, rss_mb())


def memory_mb(device) -> float:
    """The memory the model takes now: resident memory of the process on a CPU, tensors on a GPU."""
    import torch

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return torch.cuda.memory_allocated(device) / 2**20
    return rss_mb()


def memory_parts(trainer) -> dict[str, float]:
    """What training keeps besides the weights, in MB: gradients (float32, of the trainable weights) and the
    optimizer's states, counted from the tensors."""
    trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    states = sum(t.numel() * t.element_size() for state in trainer.optimizer.state.values()
                 for t in state.values() if hasattr(t, "numel") and t.dim() > 0)
    return {"trainable": trainable, "grads_mb": trainable * 4 / 2**20, "optimizer_mb": states / 2**20}


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.build_random_base:
        build_random_base(args.build_random_base, args.shape)
        return 0

    import torch
    import transformers

    from model.train import Trainer, make_config

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    tmp = tempfile.TemporaryDirectory(prefix="proverbot-bench-")
    build_s = None
    if args.base:
        base = args.base
    else:
        base = str(Path(tmp.name) / f"random-{args.shape}")
        started = time.perf_counter()
        subprocess.run([sys.executable, __file__, "--build-random-base", base, "--shape", args.shape], check=True)
        build_s = time.perf_counter() - started

    cfg = make_config(
        base, corpus=args.corpus, checkpoint_dir=str(Path(tmp.name) / "checkpoints"), run_name="bench",
        steps=args.steps, dropout=args.dropout, batch_size=args.batch_size,
        accumulate_gradients=args.accumulate_gradients, block_size=args.block_size, sample_every=10**6,
        save_every=10**6, val_every=0, eval_samples=0, device=args.device, dtype=args.dtype,
        gradient_checkpointing=args.gradient_checkpointing, lora=args.lora, lora_rank=args.lora_rank,
    )
    started = time.perf_counter()
    trainer = Trainer(cfg, progress=False)
    load_s = time.perf_counter() - started
    device = trainer.device
    tokens_per_step = cfg.batch_size * cfg.accumulate_gradients * trainer.block_size
    n_params = sum(p.numel() for p in trainer.model.parameters())
    mc = trainer.model.config

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    warmup, timed, loss = [], [], float("nan")
    for p in trainer.model.parameters():  # weights still in a memory-mapped file count from here, not as activations
        p.data.sum()
    after_load_mb = memory_mb(device)
    with PeakRss() as steps_rss:
        for i in range(args.steps):
            if i == args.warmup_steps:
                busy = OtherLoad()
            sync()
            started = time.perf_counter()
            loss = trainer.train_step()
            sync()
            (warmup if i < args.warmup_steps else timed).append(time.perf_counter() - started)
    other_load = busy.cores()
    s_per_step = sum(timed) / len(timed)
    parts = memory_parts(trainer)
    steps_peak_mb = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else steps_rss.peak
    added_mb = steps_peak_mb - after_load_mb
    activations_mb = added_mb - parts["grads_mb"] - parts["optimizer_mb"]
    micro_tokens = cfg.batch_size * trainer.block_size

    figures = {
        "model": f"gpt2 {mc.n_layer} layers x {mc.n_embd} wide, {mc.n_positions} context, {mc.vocab_size} vocab, "
                 f"{n_params / 1e6:.1f}M parameters",
        "weights": "random-init" if not args.base else args.base,
        "mode": "lora" if args.lora else "gradient-checkpointing" if args.gradient_checkpointing else "full",
        "trainable_params": parts["trainable"],
        "device": str(device),
        "dropout": f"{max((m.p for m in trainer.model.modules() if isinstance(m, torch.nn.Dropout)), default=0.0):g}",
        "autocast": str(trainer.amp_dtype).replace("torch.", "") if trainer.amp_dtype else "off (float32)",
        "threads": torch.get_num_threads(),
        "batch_size": cfg.batch_size,
        "accumulate_gradients": cfg.accumulate_gradients,
        "block_size": trainer.block_size,
        "tokens_per_step": tokens_per_step,
        "steps_timed": len(timed),
        "other_processes_cores": "n/a" if other_load is None else f"{other_load:.2f}",
        "load_s": f"{load_s:.2f}",
        "warmup_step_s": seconds(warmup) or "none",
        "step_s": seconds(timed),
        "s_per_step": f"{s_per_step:.2f}",
        "train_tokens_per_s": f"{tokens_per_step / s_per_step:.1f}",
        "loss": f"{loss:.3f}",
        "peak_rss_mb": f"{peak_rss_mb():.0f}",
        "after_load_mb": f"{after_load_mb:.0f}",
        "peak_steps_mb": f"{steps_peak_mb:.0f}",
        "training_adds_mb": f"{added_mb:.0f}",
        "grads_mb": f"{parts['grads_mb']:.0f}",
        "optimizer_mb": f"{parts['optimizer_mb']:.0f}",
        "activations_mb": f"{activations_mb:.0f}",
        "activation_bytes_per_token_layer_width":
            f"{activations_mb * 2**20 / (micro_tokens * mc.n_layer * mc.n_embd):.2f}",
    }
    if build_s is not None:
        figures["build_s"] = f"{build_s:.2f}"
    if device.type == "cuda":
        figures["gpu"] = torch.cuda.get_device_name(device)
        figures["peak_gpu_mb"] = f"{torch.cuda.max_memory_allocated(device) / 2**20:.0f}"
    notes = []
    if args.peer:
        busy = OtherLoad()
        peer = run_peer("finetune")
        if isinstance(peer, str):
            notes.append(f"gpt-2-simple finetune: {peer}")
        else:
            figures.update({f"peer_{name}": value for name, value in peer.items()})
            peer_load = busy.cores()
            figures["peer_other_processes_cores"] = "n/a" if peer_load is None else f"{peer_load:.2f}"
            if "finetune_tokens_per_s" in peer:
                speedup = tokens_per_step / s_per_step / float(peer["finetune_tokens_per_s"])
                figures["speedup_vs_peer"] = f"{speedup:.2f}"
    for name, value in figures.items():
        print(f"{name}={value}")

    print()
    print(f"Summary: {n_params / 1e6:.0f}M GPT-2 ({figures['weights']}) fine-tuned with model.train.Trainer on "
          f"{device} ({figures['threads']} threads, autocast {figures['autocast']}, dropout {figures['dropout']}), "
          f"batch {cfg.batch_size} x {trainer.block_size} tokens, accumulate_gradients {cfg.accumulate_gradients} = "
          f"{tokens_per_step} tokens per step:")
    print(f"  {s_per_step:.2f} s/step = {tokens_per_step / s_per_step:.0f} tokens/s (mean of {len(timed)} steps after "
          f"{len(warmup)} warm-up step(s) of {figures['warmup_step_s']} s); loss {loss:.3f}")
    print(f"  peak resident memory of this process {figures['peak_rss_mb']} MB"
          + (f", peak GPU memory {figures['peak_gpu_mb']} MB" if device.type == "cuda" else ""))
    print(f"  {figures['mode']}: training adds {added_mb:.0f} MB to the loaded model ({after_load_mb:.0f} MB): "
          f"gradients {parts['grads_mb']:.0f} MB and optimizer states {parts['optimizer_mb']:.0f} MB of "
          f"{parts['trainable']:,} trainable weights, the rest ({activations_mb:.0f} MB) activations of "
          f"{micro_tokens} tokens")
    if "peer_finetune_tokens_per_s" in figures:
        print(f"  gpt-2-simple finetune, same shape and corpus: {figures['peer_finetune_s_per_step']} s/step = "
              f"{figures['peer_finetune_tokens_per_s']} tokens/s, peak resident memory "
              f"{figures['peer_finetune_peak_rss_mb']} MB"
              f" -> ours {figures['speedup_vs_peer']}x its rate (goal: at least 1.5x, memory no higher)")
    print_notes(notes, {"ours": other_load, "the peer's": figures.get("peer_other_processes_cores")})
    tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
