"""`proverbot ...` in a child process, with X's traffic carried to a fake X on 127.0.0.1 (tests kill it mid-post).

    python -m tests.fakes.proverbot_with_fake_x PORT post --text "a proverb"

The real CLI, the real publisher and tweepy's real HTTP code; only tweepy's session is routed to the fake, and the
CLI's logging setup is skipped (it imports transformers, which this command does not need, and which is slow).
"""

import sys

from chatbot import cli
from chatbot.publishers import twitter
from tests.fakes.x_api import sessions_to


def main(port: str, *argv: str) -> int:
    twitter.TimeoutSession = sessions_to(f"http://127.0.0.1:{int(port)}")
    cli.setup_logging = lambda verbose: None
    return cli.main(list(argv))


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
