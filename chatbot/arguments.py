"""Command-line arguments shared by several `proverbot` commands."""

import argparse

VERBOSE = argparse.ArgumentParser(add_help=False)   # the one parent parser of every command, and of `proverbot`
VERBOSE.add_argument("-v", "--verbose", action="count", default=argparse.SUPPRESS,
                     help="more log output: -v our INFO lines, -vv DEBUG lines and tracebacks")


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose every command, at any depth, takes -v/--verbose before or after its name:
    `proverbot -v run`, `proverbot run -v`, `proverbot db check -v`. Its subparsers are Parsers too (argparse makes
    them of the parent's class). Unset, args has no `verbose` (a command's default would overwrite the value given
    before the command): read it with getattr(args, "verbose", 0)."""

    def __init__(self, *args, parents: list[argparse.ArgumentParser] = (), **kwargs) -> None:
        super().__init__(*args, parents=[*parents, VERBOSE], **kwargs)

BIGGEST = 2**63 - 1  # the largest whole number a database (or a C long) holds: ids and counts past it are refused


def positive_int(text: str) -> int:
    """A whole number from 1 to BIGGEST: "12" -> 12; "0", "x", "99999999999999999999" -> one clear line."""
    shown = text if len(text) <= 30 else text[:30] + "…"
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {shown!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {shown}")
    if value > BIGGEST:
        raise argparse.ArgumentTypeError(f"must be at most {BIGGEST} (2**63 - 1), got {shown}")
    return value


def log_id(text: str) -> int:
    """An id in the log, as a whole number of any size: "12" -> 12; the log says "there is no post #0" (or
    #99999999999999999999) like any id it does not hold; "x" -> one clear line."""
    try:
        return int(text)
    except ValueError:
        shown = text if len(text) <= 30 else text[:30] + "…"
        raise argparse.ArgumentTypeError(f"not a whole number: {shown!r}") from None


def add_sampling_arguments(p: argparse.ArgumentParser) -> None:
    """Which run to sample from, and the prefix and temperature: `generate` and `tweet` take these."""
    p.add_argument("--run-name", help="run to sample from (default: the most recently trained)")
    p.add_argument("--checkpoint-dir", help="where run folders live")
    p.add_argument("--prefix", default="", help="text every sample starts with")
    p.add_argument("--temperature", type=float, help="more than 0, at most 2.0 (default: settings' temperature, 0.7)")
