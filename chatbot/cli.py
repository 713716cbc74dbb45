# PYTHON_ARGCOMPLETE_OK (argcomplete: this module holds the entry point; see README, "From the command line")
"""The `proverbot` command line: argument parsing that calls library functions (chatbot/app.py assembles the
parts). Errors a person can act on are printed as one line, never a traceback; the exit status tells a failure
from a skip (chatbot/exitcodes.py). Logging is quiet unless asked: warnings only; -v our INFO lines, -vv DEBUG."""

import argparse
import asyncio
import contextlib
import logging
import os
import sys
from collections.abc import Iterator
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TextIO

import argcomplete

from chatbot import export_cli, health, plot_cli, publish_cli, storage_cli, votes_cli
from chatbot.app import generate_logged, open_sampler, run_bot, train_default_if_missing, training_report
from chatbot.arguments import Parser, add_sampling_arguments, positive_int
from chatbot.config import Settings, load_settings
from chatbot.config import describe as describe_settings
from chatbot.exitcodes import STOPPED, ExitCode, for_error
from chatbot.scrub import install_log_filter, scrub
from proverbot_errors import ProverbotError

log = logging.getLogger("proverbot")
OURS = ("proverbot", "model", "chatbot", "storage")    # the loggers -v and -vv open up; the libraries' stay quiet


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argcomplete.autocomplete(parser)        # returns at once unless the shell is completing a word
    try:
        args = parser.parse_args(argv)
    except SystemExit as done:              # --help, --version (0), or a bad command line (2: said on stderr)
        return done.code
    setup_logging(getattr(args, "verbose", 0))
    try:
        return args.func(args) or ExitCode.OK
    except ProverbotError as err:
        return report_error(err)
    except KeyboardInterrupt:
        return stopped("interrupted")
    except Exception as err:  # a bug or an unexpected environment: say what, keep the traceback for -vv
        log.debug("unexpected error", exc_info=True)
        print(f"proverbot: unexpected error: {type(err).__name__}: {scrub(str(err))} (run with -vv to see where)",
              file=sys.stderr)
        return ExitCode.FAILED


def report_error(err: ProverbotError) -> ExitCode:
    """One line, scrubbed of every remembered secret: a failure on stderr, a skip (quota used up, nothing to post) on
    stdout, so that cron mails failures only."""
    code = for_error(err)
    if code == ExitCode.FAILED:
        print(f"proverbot: error: {scrub(str(err))}", file=sys.stderr)
    else:
        print(f"proverbot: skipped: {scrub(str(err))}")
    return code


def stopped(how: str) -> ExitCode:
    """After Ctrl-C or SIGTERM (how: interrupted or terminated, as TrainResult.stopped says): one line, 130 or 143."""
    print("proverbot: interrupted" if how == "interrupted" else "proverbot: stopped (SIGTERM)", file=sys.stderr)
    return STOPPED[how]


def setup_logging(verbosity: int) -> None:
    """Warnings only (the output is the answer); -v: proverbot's INFO lines; -vv: its DEBUG lines. The libraries'
    loggers stay at WARNING. Every line is scrubbed of the secrets the publishers remembered (chatbot/scrub.py)."""
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    install_log_filter()
    ours = [logging.WARNING, logging.INFO, logging.DEBUG][min(verbosity, 2)]
    for name in OURS:
        logging.getLogger(name).setLevel(ours)
    quiet_transformers()


def quiet_transformers() -> None:
    """Transformers' own warnings and progress bars off: through its environment variables, read when it is first
    imported, so that the commands that never use it do not import it (1-2 s); told directly when it already is
    (a caller in the same process)."""
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    if "transformers" in sys.modules:
        sys.modules["transformers"].utils.logging.set_verbosity_error()
        sys.modules["transformers"].utils.logging.disable_progress_bar()


def installed_version() -> str:
    try:
        return version("proverbot")
    except PackageNotFoundError:
        return "(not installed: pip install -e .)"


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="proverbot",
        description="Train GPT-2 text bots, sample candidates, and run the chat bot that votes on them and posts "
        "the winners.",
        epilog="Settings come from PROVERBOT_* variables (the secrets also from the platforms' own: DISCORD_TOKEN, "
        "SLACK_BOT_TOKEN, TWITTER_CONSUMER_KEY, ...), a .env file and proverbot.toml: see `proverbot config`. "
        "Exit status: 0 done, 1 failed, 2 bad command line; `tweet` and `post` also 3 and 4 when they skip (see "
        "their --help).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {installed_version()}")
    parser.set_defaults(func=lambda args: no_command(parser))
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")

    run = commands.add_parser("run", help="the bot: on Discord and/or Slack when their tokens are set, else in the "
                              "terminal",
                              description="Start the bot: the log, the model worker (training the embedded default "
                              "if no run exists), the publishers, the daily scheduler and every front end whose "
                              "credentials are set, all sharing the one model worker and log: Discord with "
                              "DISCORD_TOKEN; Slack with SLACK_BOT_TOKEN and SLACK_APP_TOKEN (Socket Mode), or "
                              "SLACK_BOT_TOKEN and SLACK_SIGNING_SECRET with slack_http = true (HTTP mode on "
                              "slack_port). With none, the terminal front end, which reads commands from stdin (also "
                              "from a pipe): /help lists them. With -v it logs what it does (logins, Discord's invite "
                              "link, what it serves).")
    run.set_defaults(func=cmd_run)

    health_check = commands.add_parser("health", help="is the running bot alive and connected? (for HEALTHCHECK)",
                                       description="Read the heartbeat the running bot writes to health_file: exit "
                                       "status 0 when it is fresh and every front end is connected, else 1.")
    health_check.add_argument("--max-age", type=float, default=health.MAX_AGE,
                              help="seconds a heartbeat stays fresh (default: %(default)s)")
    health_check.set_defaults(func=cmd_health)

    train = commands.add_parser("train", help="train a model (from scratch: --base tiny) or fine-tune GPT-2",
                                description="Train a run folder checkpoints/<run_name>/. Parameters follow "
                                "gpt-2-simple's finetune().")
    add_train_arguments(train)
    train.set_defaults(func=cmd_train)

    generate = commands.add_parser("generate", help="sample texts from a trained run",
                                   description="Sample from a run (default: the most recently trained). "
                                   "Parameters follow gpt-2-simple's generate(); --count keeps only usable candidates.")
    add_generate_arguments(generate)
    generate.set_defaults(func=cmd_generate)

    imp = commands.add_parser("import", help="convert an OpenAI / gpt-2-simple TensorFlow checkpoint (no "
                              "TensorFlow needed)",
                              description="Convert models/124M or checkpoint/run1 into a run folder.")
    imp.add_argument("path", type=Path, help="folder with hparams.json, encoder.json, vocab.bpe and the checkpoint "
                     "files")
    imp.add_argument("--run-name", help="name of the new run (default: the folder's name)")
    imp.add_argument("--checkpoint-dir", type=Path, help="where run folders live (default: settings' checkpoint_dir)")
    imp.add_argument("--corpus", type=Path, help="the training corpus, so that copies of it can be filtered out")
    imp.add_argument("--separator", default="==========", help="separator line between texts (default: %(default)s)")
    imp.add_argument("--overwrite", action="store_true", help="replace an existing run of that name")
    imp.set_defaults(func=cmd_import)

    corpus = commands.add_parser("corpus", help="inspect a corpus")
    corpus_commands = corpus.add_subparsers(title="corpus commands", metavar="COMMAND", required=True)
    stats = corpus_commands.add_parser("stats", help="blocks, words, tokens, longest block, how many fit a tweet")
    add_corpus_arguments(stats)
    stats.add_argument("--run-name", help="count tokens with this run's tokenizer (default: GPT-2's)")
    stats.set_defaults(func=cmd_corpus_stats)

    config = commands.add_parser("config", help="show every setting: its value (secrets masked), where the value came "
                                 "from, its environment variables")
    config.add_argument("--json", action="store_true", help="print one JSON object, keyed by setting")
    config.set_defaults(func=cmd_config)
    storage_cli.add_commands(commands)
    publish_cli.add_commands(commands)
    plot_cli.add_commands(commands)
    export_cli.add_commands(commands)
    votes_cli.add_commands(commands)
    return parser


def no_command(parser: argparse.ArgumentParser) -> ExitCode:
    """Bare `proverbot`: the help, on stderr, with a bad command line's exit status."""
    parser.print_help(sys.stderr)
    return ExitCode.USAGE


def add_corpus_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("corpus", type=Path, metavar="PATH", help="a text file, a folder of .txt files, or a CSV file")
    parser.add_argument("--separator", default="==========",
                        help="line between texts (default: %(default)s; '' for none)")
    parser.add_argument("--csv-column", help="CSV column holding the texts")


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--corpus", type=Path, help="text file, folder of .txt files, or CSV file")
    votes_cli.add_train_arguments(p, source)
    p.add_argument("--base", default="tiny", help="tiny (from scratch, default), gpt2, gpt2-medium, gpt2-large, "
                   "gpt2-xl, 124M/355M/774M/1558M, or a folder (Hugging Face, OpenAI models/124M, gpt-2-simple "
                   "checkpoint/run1)")
    p.add_argument("--separator", help="line between texts (default: ==========)")
    p.add_argument("--csv-column", help="CSV column holding the texts")
    p.add_argument("--max-corpus-mb", type=positive_int, help="largest corpus read, in megabytes (default: settings' "
                   "max_corpus_mb, 1024)")
    p.add_argument("--run-name", help="run folder name (default: run1)")
    p.add_argument("--checkpoint-dir", help="where run folders live (default: settings' checkpoint_dir)")
    p.add_argument("--steps", type=int, help="training steps (-1: until Ctrl-C, --epochs or patience)")
    p.add_argument("--epochs", type=float, help="passes over the corpus, instead of --steps")
    p.add_argument("--batch-size", type=positive_int, help="windows of text per micro-batch; under torchrun the "
                   "global batch, split evenly across the processes (a multiple of their number)")
    p.add_argument("--learning-rate", type=float)
    p.add_argument("--accumulate-gradients", type=positive_int)
    p.add_argument("--sample-every", type=positive_int, help="print samples every N steps")
    p.add_argument("--sample-length", type=positive_int)
    p.add_argument("--sample-num", type=positive_int)
    p.add_argument("--save-every", type=positive_int, help="checkpoint every N steps")
    p.add_argument("--print-every", type=positive_int)
    p.add_argument("--max-checkpoints", type=positive_int)
    p.add_argument("--restore-from", choices=["latest", "fresh"], help="continue the run's checkpoint or start fresh")
    p.add_argument("--only-train-transformer-layers", action="store_true", default=None)
    p.add_argument("--optimizer", choices=["adam", "sgd"])
    p.add_argument("--overwrite", action="store_true", default=None, help="replace an existing run of that name")
    p.add_argument("--val-every", type=int, help="validation loss every N steps (0: off)")
    p.add_argument("--patience", type=int, help="stop after N validations without improvement (0: off)")
    p.add_argument("--dropout", type=float)
    p.add_argument("--seed", type=int)
    p.add_argument("--device", help="auto, cpu, cuda")
    p.add_argument("--dtype", choices=["auto", "float32", "bfloat16"], help="compute in bfloat16 (autocast) or "
                   "float32; auto (default): bfloat16 where it is native (GPUs, CPUs with AVX512-BF16 or AMX)")
    p.add_argument("--eval-samples", type=int, help="samples drawn at the end to report usable/copy rates (0: skip)")
    p.add_argument("--gradient-checkpointing", action="store_true", default=None, help="recompute activations in "
                   "the backward pass: far less memory for a slower step (gpt-2-simple's use_memory_saving_gradients)")
    p.add_argument("--lr-schedule", choices=["constant", "linear", "cosine"], help="learning rate over the run: "
                   "constant (default), or decaying to 0 at the last step (needs --steps or --epochs)")
    p.add_argument("--warmup-steps", type=int, help="raise the learning rate linearly over the first N steps (0: off)")
    p.add_argument("--lora", action="store_true", default=None, help="train LoRA adapters beside the frozen base "
                   "instead of all its weights: far less memory (needs a pretrained --base)")
    p.add_argument("--lora-rank", type=positive_int, help="with --lora: the adapters' rank (default: 8; at most the "
                   "base's width)")
    p.add_argument("--lora-alpha", type=float, help="with --lora: they are scaled by alpha / rank (default: twice the "
                   "rank)")
    p.add_argument("--lora-dropout", type=float, help="with --lora: dropout on their input (default: 0.05)")
    p.add_argument("--merge", type=Path, metavar="OUTPUT", help="with --lora: at the end, also write the run merged "
                   "into its base as a plain Hugging Face folder (as `proverbot export RUN --merge OUTPUT`)")


def add_generate_arguments(p: argparse.ArgumentParser) -> None:
    add_sampling_arguments(p)
    p.add_argument("--top-k", type=int, help="sample among the k likeliest tokens (0: off)")
    p.add_argument("--top-p", type=float, help="nucleus sampling (0: off)")
    p.add_argument("--length", type=positive_int, help="most tokens per sample")
    p.add_argument("--seed", type=int, help="the same seed gives the same samples")
    p.add_argument("--count", type=positive_int, help="usable candidates wanted (default: 5)")
    p.add_argument("--nsamples", type=positive_int,
                   help="raw samples, unfiltered, instead of --count (gpt-2-simple's mode)")
    p.add_argument("--batch-size", type=positive_int, help="samples per forward pass")
    p.add_argument("--truncate", help="cut each sample at this text")
    p.add_argument("--no-include-prefix", dest="include_prefix", action="store_false", help="leave the prefix out")
    p.add_argument("--destination-path", type=Path, help="write samples to this file instead of printing them")
    p.add_argument("--device", help="auto, cpu, cuda")
    p.add_argument("--dtype", choices=["auto", "float32", "bfloat16", "int8"],
                   help="the weights' format while sampling (default: settings' sample_dtype, auto)")


# -- commands ----------------------------------------------------------------------------------------

def cmd_config(args) -> None:
    shown = describe_settings()
    if args.json:
        import json

        print(json.dumps({s.name: {"value": s.value, "origin": s.origin, "variables": list(s.variables),
                                   "description": s.description} for s in shown}, indent=2, ensure_ascii=False))
        return
    for s in shown:
        print(f"{s.name} = {s.text}".rstrip() + f"  ({s.origin})\n    {' or '.join(s.variables)}: {s.description}")


def cmd_train(args) -> ExitCode:
    """Train; after Ctrl-C or SIGTERM the checkpoint is saved and the status is 130 or 143. Under torchrun rank 0
    alone prints the report, and an error in the options (every process meets the same one, before they connect)."""
    if args.from_votes:
        return votes_cli.cmd_train_from_votes(args)
    from model import distributed
    from model.train import make_config, train

    world = distributed.from_env()
    try:
        settings = load_settings()
        options = {k: v for k, v in vars(args).items() if k not in ("func", "verbose", "base", "merge")}
        options["corpus"] = str(options["corpus"])
        options["checkpoint_dir"] = options["checkpoint_dir"] or str(settings.checkpoint_dir)
        options["max_corpus_mb"] = options["max_corpus_mb"] or settings.max_corpus_mb
        cfg = make_config(args.base, **options)
        distributed.check_batch(world, cfg.batch_size)
        export_cli.check_merge_option(args)
    except ProverbotError:
        if world.is_main:
            raise
        return ExitCode.FAILED  # rank 0 says what is wrong
    result = train(cfg)
    if world.is_main:
        print(training_report(result))
        export_cli.merge_after_training(args, result)
    return stopped(result.stopped) if result.stopped in STOPPED else ExitCode.OK


def cmd_generate(args) -> None:
    settings = load_settings()
    with output_to(args.destination_path) as out:     # a destination that cannot be written is refused up front
        texts = generate_texts(args, settings)
        out.write("\n====================\n".join(texts) + "\n")
    if args.destination_path:
        print(f"Wrote {len(texts)} samples to {args.destination_path}.", file=sys.stderr)


def generate_texts(args, settings: Settings) -> list[str]:
    """`proverbot generate`'s samples: raw (--nsamples), or usable candidates, logged, with a summary on stderr."""
    from model.candidates import SampleRequest

    temperature = settings.temperature if args.temperature is None else args.temperature
    sampler = open_sampler(settings, args.run_name, args.checkpoint_dir, args.device, args.dtype)
    count = args.count or settings.count
    request = SampleRequest(
        prefix=args.prefix, temperature=temperature, top_k=settings.top_k if args.top_k is None else args.top_k,
        top_p=settings.top_p if args.top_p is None else args.top_p, length=args.length or settings.length,
        seed=args.seed, truncate=args.truncate, include_prefix=args.include_prefix,
        nsamples=args.nsamples or 1, batch_size=args.batch_size or settings.batch_size, count=count,
    )
    sampler.check(request)  # before the log records anything
    if args.nsamples:
        texts = [s.text for s in sampler.generate(request)]
    else:
        batch = asyncio.run(generate_logged(settings, sampler, request))
        texts = [c.text for c in batch.usable]
        print_summary(batch, count)
    return texts


def output_to(path: Path | None) -> contextlib.AbstractContextManager[TextIO]:
    """stdout, or a file written all at once (written_at_once)."""
    return written_at_once(path) if path else contextlib.nullcontext(sys.stdout)


@contextlib.contextmanager
def written_at_once(path: Path) -> Iterator[TextIO]:
    """A file through which `path` is written all at once: a temporary file beside it, created before any work (a
    missing or read-only folder, or a path that is a folder, is one line before anything is sampled), renamed over
    `path` when the block ends without error, else removed: `path` is never half written."""
    where = f"--destination-path {path}"
    if path.is_dir():
        raise ProverbotError(f"{where} is a folder; name a file in it, e.g. {path / 'samples.txt'}.")
    if not path.parent.is_dir():
        raise ProverbotError(f"{where}: the folder {path.parent} does not exist; create it first.")
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        out = open(partial, "x", encoding="utf-8")
    except OSError as err:
        raise ProverbotError(f"{where}: cannot write in the folder {path.parent} ({err.strerror}).") from None
    try:
        with out:
            yield out
        try:
            os.replace(partial, path)
        except OSError as err:
            raise ProverbotError(f"{where}: cannot replace {path} ({err.strerror}).") from None
    finally:
        partial.unlink(missing_ok=True)


def print_summary(batch, count: int) -> None:
    rejected = ", ".join(f"{n} {reason.replace('_', ' ')}" for reason, n in batch.rejected_summary().items())
    note = f"; filtered out {len(batch.rejected)}: {rejected}" if batch.rejected else ""
    short = f" (only {len(batch.usable)} of {count} wanted)" if len(batch.usable) < count else ""
    usable = f"{len(batch.usable)} candidate{'' if len(batch.usable) == 1 else 's'}"
    print(f"[{batch.run_name} {batch.checkpoint_id} on {batch.device}: {usable}{short} "
          f"from {batch.samples} samples in {batch.seconds:.1f}s{note}; logged as generation #{batch.generation_id}]",
          file=sys.stderr)


def cmd_run(args) -> ExitCode:
    settings = load_settings()
    trained = train_default_if_missing(settings)
    if trained and trained.stopped in STOPPED:  # Ctrl-C or SIGTERM while training: saved, and the bot never starts
        return stopped(trained.stopped)
    try:
        asyncio.run(run_bot(settings))
    except asyncio.CancelledError:  # SIGTERM: run_bot has closed the front ends, the worker and the log
        return stopped("terminated")
    return ExitCode.OK


def cmd_health(args) -> None:
    path = load_settings().health_file
    if path is None:
        raise ProverbotError("No health_file is set (PROVERBOT_HEALTH_FILE): the bot writes no heartbeat to check.")
    print(health.check(path, args.max_age))


def cmd_import(args) -> None:
    from model.corpus import read_corpus
    from model.importer import import_run

    settings = load_settings()
    folder = Path(args.checkpoint_dir or settings.checkpoint_dir) / (args.run_name or args.path.resolve().name)
    blocks = read_corpus(args.corpus, args.separator, max_bytes=max_corpus_bytes(settings)).blocks \
        if args.corpus else []
    checkpoint_id = import_run(args.path, folder, blocks, args.separator, args.overwrite)
    print(f"Imported {args.path} into {folder} (checkpoint {checkpoint_id}).")


def cmd_corpus_stats(args) -> None:
    from model.corpus import corpus_stats, read_corpus
    from model.tokenizer import gpt2_tokenizer

    settings = load_settings()
    corpus = read_corpus(args.corpus, args.separator, args.csv_column, max_bytes=max_corpus_bytes(settings))
    tokenizer = open_sampler(settings, args.run_name, None, "cpu").tokenizer if args.run_name else gpt2_tokenizer()
    stats = corpus_stats(corpus, tokenizer)
    preview = corpus.blocks[stats.longest].replace("\n", " ")[:60]
    print(f"{corpus.source}")
    print(f"  blocks:        {stats.blocks:,}")
    print(f"  words:         {stats.words:,}")
    print(f"  tokens:        {stats.tokens:,} ({'run ' + args.run_name if args.run_name else 'GPT-2 BPE'})")
    print(f"  longest block: #{stats.longest + 1}, {stats.longest_tokens} tokens, {stats.longest_words} words: "
          f"{preview!r}...")
    print(f"  fit a tweet:   {stats.fit_tweet:,} of {stats.blocks:,} ({stats.fit_tweet / stats.blocks:.0%})")


def max_corpus_bytes(settings: Settings) -> int:
    return int(settings.max_corpus_mb * 2**20)


if __name__ == "__main__":
    sys.exit(main())
