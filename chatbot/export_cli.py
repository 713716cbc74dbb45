"""`proverbot export RUN --merge OUTPUT`: a LoRA run as one plain Hugging Face GPT-2 (model/run.py's export_merged).

    proverbot export mybot --merge merged/mybot      # then: vllm serve merged/mybot, or transformers as it is

`proverbot train --lora ... --merge OUTPUT` does the same at the end of training (merge_after_training); OUTPUT is
checked before training starts.
"""

from pathlib import Path

from chatbot.config import load_settings
from proverbot_errors import ProverbotError


def add_commands(commands) -> None:
    """Register `export` on the CLI's subparsers."""
    export = commands.add_parser("export", help="merge a LoRA run's adapter into its base: a plain Hugging Face folder",
                                 description="Write a LoRA run's base with its adapter merged in as a plain Hugging "
                                 "Face GPT-2 folder (GPT2LMHeadModel weights, config, tokenizer, generation config; no "
                                 "LoRA weights) that transformers, vLLM and other servers load as it is. It is a "
                                 "proverbot run folder too.")
    export.add_argument("run", metavar="RUN", help="the LoRA run: its name, or its folder")
    export.add_argument("--merge", type=Path, required=True, metavar="OUTPUT",
                        help="the new folder (it must not exist, or be empty)")
    export.add_argument("--checkpoint-dir", help="where run folders live (default: settings' checkpoint_dir)")
    export.set_defaults(func=cmd_export)


def cmd_export(args) -> None:
    from model.runinfo import find_run, is_run

    path = Path(args.run)
    if len(path.parts) > 1 and is_run(path):
        folder = path
    else:
        folder = find_run(args.checkpoint_dir or load_settings().checkpoint_dir, args.run)
    merge(folder, args.merge)


def check_merge_option(args) -> None:
    """`train --merge OUTPUT`: only with --lora, into a new or empty folder; said before training starts."""
    if args.merge is None:
        return
    if not args.lora:
        raise ProverbotError("--merge writes a LoRA run merged into its base: it goes with --lora.")
    from model.run import check_export_output

    check_export_output(args.merge)


def merge_after_training(args, result) -> None:
    """`train --merge OUTPUT`, once the training has finished (not after Ctrl-C or SIGTERM)."""
    if args.merge is not None and result.stopped in ("steps", "patience"):
        merge(result.folder, args.merge)


def merge(folder: Path, output: Path) -> None:
    from model.run import export_merged

    checkpoint_id = export_merged(folder, output)
    print(f"Merged {folder} into {output} (checkpoint {checkpoint_id}): a plain Hugging Face GPT-2 folder, e.g. "
          f"`vllm serve {output}` or AutoModelForCausalLM.from_pretrained({str(output)!r}).")
