"""Learning from the votes (issue 17) from the command line: storage/preferences.py builds the pairs from the log,
model/preference.py tunes a run on them.

proverbot votes export [--run-name NAME] [--json]     every preference pair the votes give (prompt, chosen,
                                                       rejected, margin), as a list or as JSON
proverbot train --from-votes [--run-name NAME]         tune the run on its pairs (DPO) and save it as its new
        [--learning-rate X] [--epochs N] [--batch-size N] [--lora] [--seed N] [--device D]   checkpoint
        [--max-perplexity-rise FRACTION]

The log is settings' database_url; the run is --run-name, else settings' run_name, else the most recently trained.
"""

import json
import sys
from dataclasses import asdict

from chatbot.config import load_settings
from chatbot.storage_cli import with_database
from proverbot_errors import ProverbotError

TUNE_OPTIONS = ("learning_rate", "epochs", "batch_size", "lora", "seed", "device", "max_perplexity_rise")


def add_commands(commands) -> None:
    """Register `votes export` on the CLI's subparsers."""
    votes = commands.add_parser("votes", help="what the votes prefer: the pairs `train --from-votes` learns from")
    votes_commands = votes.add_subparsers(title="votes commands", metavar="COMMAND", required=True)
    export = votes_commands.add_parser(
        "export", help="every preference pair: prompt, chosen, rejected, margin",
        description="For each batch with a clear favourite (the posted candidate, else the one with the most votes; "
                    "ties and batches nobody voted on give none): the favourite over each candidate of the batch "
                    "with fewer votes, and every candidate over a vetoed one. Margin: the difference in votes.")
    export.add_argument("--run-name", help="only the batches this run sampled (default: every run)")
    export.add_argument("--json", action="store_true", help="a JSON array of objects, every field")
    export.set_defaults(func=cmd_export)


def add_train_arguments(train, source) -> None:
    """`--from-votes` on `proverbot train` (in `source`, the group it excludes --corpus from), and its own flags."""
    source.add_argument("--from-votes", action="store_true", default=None,
                       help="tune the run (--run-name, default: the bot's) on the preference pairs of its votes "
                       "(Direct Preference Optimization) instead of training on a corpus; takes --learning-rate "
                       "(default 3e-5), --epochs (3), --batch-size (8 pairs), --lora (default: for runs of 100M "
                       "parameters and more), --seed, --device")
    train.add_argument("--max-perplexity-rise", type=float, metavar="FRACTION",
                       help="with --from-votes: how much the held-out perplexity may rise over the run's before any "
                       "votes (default 0.1: 10%%); tuning stops at the last check within it")


def cmd_export(args) -> None:
    pairs = with_database(lambda db: db.preference_pairs(args.run_name))
    if args.json:
        json.dump([asdict(pair) for pair in pairs], sys.stdout, ensure_ascii=False, indent=2)
        print()
        return
    if not pairs:
        where = f" of run {args.run_name!r}" if args.run_name else ""
        print(f"No preference pairs{where} yet: a batch gives pairs once it has a clear favourite (the most votes, "
              "or posted).")
        return
    for pair in pairs:
        print(f"#{pair.generation_id} {pair.run_name or '?'} margin {pair.margin}: prompt {pair.prompt!r}\n"
              f"  chosen   [#{pair.chosen_id}] {one_line(pair.chosen)}\n"
              f"  rejected [#{pair.rejected_id}] {one_line(pair.rejected)}")
    batches = len({pair.generation_id for pair in pairs})
    print(f"{len(pairs)} pairs from {batches} batches.")


def tune_options(args) -> dict:
    """The TuneConfig options given on the command line (train's flags that apply to --from-votes)."""
    options = {key: getattr(args, key) for key in TUNE_OPTIONS if getattr(args, key, None) is not None}
    epochs = options.get("epochs")
    if epochs is not None and epochs != int(epochs):
        raise ProverbotError(f"--epochs with --from-votes is a whole number of passes over the pairs (got {epochs:g}).")
    if epochs is not None:
        options["epochs"] = int(epochs)
    return options


def one_line(text: str) -> str:
    return " ".join(text.split())


def cmd_train_from_votes(args) -> None:
    """Tune the run on its pairs; one line for a run that does not exist, too few pairs, another tokenizer or
    torchrun (the tuning is a single process)."""
    from model.distributed import from_env
    from model.preference import TuneConfig, own_pairs, tune
    from model.runinfo import find_run, run_folder

    world = from_env()
    if world.is_distributed:
        raise ProverbotError(f"train --from-votes tunes in one process: run it without torchrun (WORLD_SIZE is "
                             f"{world.size}).")
    cfg = TuneConfig(**tune_options(args))       # bad options before anything is read
    settings = load_settings()
    checkpoint_dir = args.checkpoint_dir or settings.checkpoint_dir
    name = args.run_name or settings.run_name
    folder = run_folder(checkpoint_dir, name) if name else find_run(checkpoint_dir)
    pairs = with_database(lambda db: db.preference_pairs(folder.name))
    kept = own_pairs(folder, [(p.prompt, p.chosen, p.rejected, p.checkpoint_id, p.generation_id) for p in pairs])
    source = {"batches": len({pair[4] for pair in kept}), "last_generation": max(pair[4] for pair in kept)}
    result = tune(folder, kept, cfg, source)
    print(f"Tuned run {folder.name!r} on {result.pairs} preference pairs from {source['batches']} voted batches "
          f"({result.steps} steps, {result.seconds:.0f}s): it now finds the chosen text likelier in "
          f"{result.prefers_after:.0%} of the pairs ({result.prefers_before:.0%} before); "
          f"{result.perplexity.describe()}.{stop_line(result, cfg)} Checkpoint {result.checkpoint_id}; the previous "
          f"one ({result.previous_id}) is kept in {folder / 'before-votes'}.")


def stop_line(result, cfg) -> str:
    """Why the tuning stopped before its last epoch, if it did."""
    if result.stopped != "perplexity":
        return ""
    return (f" It stopped at step {result.steps}: the next {cfg.check_every} steps raised held-out perplexity more "
            f"than {cfg.max_perplexity_rise:.0%} over the run's before any votes (--max-perplexity-rise).")
