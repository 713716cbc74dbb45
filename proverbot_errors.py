"""The root of every error a person can act on, below all of proverbot's packages (model, storage, chatbot).

    from proverbot_errors import ProverbotError

    raise ProverbotError("No heartbeat at /data/proverbot.health: the bot is not running.")

Front ends and the CLI show str(err) as it is: one line, never a traceback.
"""


class ProverbotError(Exception):
    """Base class: the message is written for the person who asked."""
