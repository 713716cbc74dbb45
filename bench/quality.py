#!/usr/bin/env python
"""Quality check for the sampling number formats: perplexity on held-out proverbs in float32, bfloat16, int8.

A trained run (default: the most recent in checkpoints/) is loaded once per format with model.run.load_run,
the way the bot loads it, and scored on the blocks its training held out (model.train.hold_out with the
training defaults: 10%, seed 1234): each block is scored as the model samples it, after the separator and up to
and including the next one. A format is fit for sampling when its perplexity is within 2% of float32's.

Prints name=value lines (perplexity_<dtype>, change_pct_<dtype>), then a summary. See bench/README.md.
"""

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

LIMIT_PCT = 2.0


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Perplexity of a trained run on its held-out blocks, per sampling dtype.")
    p.add_argument("--run-name", help="a run in --checkpoint-dir (default: the most recent one)")
    p.add_argument("--checkpoint-dir", default=str(ROOT / "checkpoints"), help="(default: %(default)s)")
    p.add_argument("--dtypes", default="float32,bfloat16,int8",
                   help="formats to score, float32 first (default: %(default)s)")
    p.add_argument("--val-fraction", type=float, default=0.1,
                   help="held-out share the run was trained with (default: %(default)s)")
    p.add_argument("--seed", type=int, default=1234, help="the run's training seed (default: %(default)s)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    import transformers

    from model.run import load_run
    from model.runinfo import find_run
    from model.train import hold_out, perplexity

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    folder = find_run(args.checkpoint_dir, args.run_name)
    dtypes = args.dtypes.split(",")
    figures, scores = {}, {}
    for dtype in dtypes:
        run = load_run(folder, "cpu", dtype)
        held_out = hold_out(run.blocks, args.val_fraction, args.seed)[1]
        scores[dtype] = perplexity(run, held_out)
        figures[f"perplexity_{dtype}"] = f"{scores[dtype]:.3f}"
        config = run.model.config
    base = scores[dtypes[0]]
    for dtype in dtypes[1:]:
        figures[f"change_pct_{dtype}"] = f"{100 * (scores[dtype] / base - 1):+.2f}"
    print(f"run={folder.name}")
    print(f"model=gpt2 {config.n_layer} layers x {config.n_embd} wide, {config.vocab_size} vocab")
    print(f"held_out_blocks={len(held_out)}")
    for name, value in figures.items():
        print(f"{name}={value}")
    print()
    print(f"Summary: perplexity of run {folder.name} on its {len(held_out)} held-out blocks:")
    for dtype in dtypes:
        change = float(figures.get(f"change_pct_{dtype}", 0))
        within = "  within" if abs(change) < LIMIT_PCT else "  OUTSIDE"
        verdict = "" if dtype == dtypes[0] else f"{within} {LIMIT_PCT:g}%"
        print(f"  {dtype:9s} {scores[dtype]:8.3f}  {change:+6.2f}%{verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
