"""Who asks, and where: what every step of the workflow logs with it (chat front ends, scheduler, CLI).

    Context("discord", channel_id="123", user_id="456", user_name="ada", server_id="789")
    cli_context()                     # Context("cli", user_name=<the login name>)
"""

import getpass
from dataclasses import dataclass


@dataclass(frozen=True)
class Context:
    """Who asks, and where: the platform's ids as strings."""

    platform: str
    channel_id: str | None = None
    user_id: str | None = None
    user_name: str | None = None
    server_id: str | None = None


def cli_context() -> Context:
    """The command line's context: platform "cli", the login name (or "cli" where there is none)."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "cli"
    return Context("cli", user_name=user)
