"""How each platform counts a text, and the limits built on that.

X: weighted length (model.filters.tweet_length: URLs 23, CJK and emoji 2), 280 by default.
Mastodon: graphemes, a link counts 23 and a mention @user@domain counts as @user; 500 by default (per instance).
Bluesky: graphemes, 300.
"""

import re

import regex

from chatbot.publishers import Limits
from model.filters import TWEET_LIMIT, tweet_length

MASTODON_LIMIT = 500
BLUESKY_LIMIT = 300
URL_LENGTH = 23          # what Mastodon (and X) count for any link

URL = re.compile(r"https?://\S+")
REMOTE_MENTION = re.compile(r"(@\w+)@[\w.-]+\w")


def graphemes(text: str) -> int:
    """User-perceived characters: an emoji with modifiers or a letter with combining marks counts 1."""
    return len(regex.findall(r"\X", text))


def mastodon_length(text: str) -> int:
    return graphemes(REMOTE_MENTION.sub(r"\1", URL.sub("x" * URL_LENGTH, text)))


def x_limits(max_length: int = TWEET_LIMIT, posts_per_day: int | None = None) -> Limits:
    return Limits(max_length, tweet_length, "long by X's count (links count 23, CJK characters and emoji 2)",
                  posts_per_day)


def mastodon_limits(max_length: int = MASTODON_LIMIT, posts_per_day: int | None = None) -> Limits:
    return Limits(max_length, mastodon_length, "characters long by Mastodon's count (links count 23)", posts_per_day)


def bluesky_limits(posts_per_day: int | None = None) -> Limits:
    return Limits(BLUESKY_LIMIT, graphemes, "graphemes long", posts_per_day)
