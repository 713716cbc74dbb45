"""Command-line arguments shared by several `proverbot` commands."""

import argparse


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def add_sampling_arguments(p: argparse.ArgumentParser) -> None:
    """Which run to sample from, and the prefix and temperature: `generate` and `tweet` take these."""
    p.add_argument("--run-name", help="run to sample from (default: the most recently trained)")
    p.add_argument("--checkpoint-dir", help="where run folders live")
    p.add_argument("--prefix", default="", help="text every sample starts with")
    p.add_argument("--temperature", type=float, help="more than 0, at most 2.0 (default: settings' temperature, 0.7)")
