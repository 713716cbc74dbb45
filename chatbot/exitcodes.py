"""The exit status of `proverbot`, for scripts and cron: a skip ("nothing to do today") is told apart from a failure.

    0    done (tweet, post: posted)
    1    failed: something is broken or needs a person (the error is on stderr)
    2    usage: a bad command line, or no command
    3    skipped: the publisher's posting quota is used up (QuotaReached)
    4    skipped: nothing to post: every candidate was filtered out or posted before (NothingToPost), or the text
         or candidate is already posted there (AlreadyPosted)
    130  interrupted (Ctrl-C); 143 stopped (SIGTERM): 128 + the signal's number, as shells count

    code = for_error(err)       # in chatbot.cli.main: by the error's class, never by its message
"""

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    FAILED = 1
    USAGE = 2
    QUOTA_REACHED = 3
    NOTHING_TO_POST = 4
    INTERRUPTED = 130
    TERMINATED = 143


# TrainResult.stopped (model/signals.py) -> the status of a command that stopped for that signal
STOPPED = {"interrupted": ExitCode.INTERRUPTED, "terminated": ExitCode.TERMINATED}

EPILOG = ("Exit status: 0 posted; 1 failed (the error is on stderr); 2 bad command line; skipped, said on stdout: "
          "3 the posting quota is used up, 4 nothing to post (every candidate filtered out or posted before, or the "
          "text already posted there).")


def for_error(err: Exception) -> ExitCode:
    """The exit status for an error a person can act on (a ProverbotError): a skip or a failure."""
    from chatbot.publish_cli import NothingToPost
    from storage import AlreadyPosted, QuotaReached     # imported on an error only: `proverbot --help` stays fast

    if isinstance(err, QuotaReached):
        return ExitCode.QUOTA_REACHED
    if isinstance(err, NothingToPost | AlreadyPosted):
        return ExitCode.NOTHING_TO_POST
    return ExitCode.FAILED
