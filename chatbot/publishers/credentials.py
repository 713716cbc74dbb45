"""Where the publishers' secrets come from. No message, repr or log line here ever contains a secret's value.

X: the four settings twitter_consumer_key, twitter_consumer_secret, twitter_access_token and
twitter_access_token_secret (all four, or none; usually the variables TWITTER_CONSUMER_KEY, ...: chatbot/config.py),
else the tutorial's JSON file named by the setting twitter_credentials_file:

    {"consumer_key": "...", "consumer_secret": "...", "access_key": "...", "access_secret": "..."}

Mastodon and Bluesky: settings too, a URL or handle and its secret together.
"""

import json
import re
from dataclasses import dataclass
from pathlib import Path

from chatbot.config import Settings
from proverbot_errors import ProverbotError

X_SETTINGS = {"consumer_key": "twitter_consumer_key", "consumer_secret": "twitter_consumer_secret",
              "access_token": "twitter_access_token", "access_token_secret": "twitter_access_token_secret"}
X_FILE_KEYS = {"consumer_key": "consumer_key", "consumer_secret": "consumer_secret", "access_token": "access_key",
               "access_token_secret": "access_secret"}
X_LABELS = {"consumer_key": "consumer key (API key)", "consumer_secret": "consumer secret (API key secret)",
            "access_token": "access token", "access_token_secret": "access token secret"}
ACCESS_TOKEN = re.compile(r"^\d+-\w+$")     # X's access tokens start with the account's numeric id


class CredentialsError(ProverbotError):
    """Credentials are incomplete, or their file cannot be read; the message names what, never a value."""


@dataclass(frozen=True, repr=False)
class XCredentials:
    consumer_key: str
    consumer_secret: str
    access_token: str
    access_token_secret: str
    source: str             # where they came from, for people

    def __repr__(self) -> str:
        return f"XCredentials(from {self.source})"

    def shape_problems(self) -> list[str]:
        """What looks wrong without asking X: stray spaces or quotes, an access token of the wrong form."""
        problems = []
        for field, label in X_LABELS.items():
            value = getattr(self, field)
            if re.search(r"\s", value):
                problems.append(f"the {label} contains a space or line break")
            elif re.search(r"[\"'`]", value):
                problems.append(f"the {label} contains a quote character")
        if not problems and not ACCESS_TOKEN.match(self.access_token):
            problems.append("the access token does not look like one (it starts with the account's number and a "
                            "dash, e.g. 1234567890-AbCd...): is it the access token secret or a bearer token?")
        return problems


def x_credentials(settings: Settings) -> XCredentials | None:
    """X's credentials from the four twitter_* settings, else from the file twitter_credentials_file (when set),
    else None."""
    found = {field: reveal(getattr(settings, name)) for field, name in X_SETTINGS.items()}
    if any(found.values()):
        missing = [f"{name} ({name.upper()})" for field, name in X_SETTINGS.items() if not found[field]]
        if missing:
            raise CredentialsError(f"X credentials are incomplete: {', '.join(missing)} "
                                   f"{'is' if len(missing) == 1 else 'are'} not set (all four twitter_* settings are "
                                   "needed).")
        return XCredentials(**found, source="the twitter_* settings")
    path = settings.twitter_credentials_file
    return None if path is None else read_x_file(Path(path).expanduser())


def read_x_file(path: Path) -> XCredentials:
    """The tutorial's credentials file; CredentialsError (never with a value in it) when it cannot be used."""
    where = f"The X credentials file {path} (twitter_credentials_file)"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CredentialsError(f"{where} does not exist.") from None
    except OSError as err:
        raise CredentialsError(f"{where} cannot be read: {err.strerror or type(err).__name__}.") from None
    except UnicodeDecodeError:
        raise CredentialsError(f"{where} is not UTF-8 text.") from None
    except json.JSONDecodeError as err:
        raise CredentialsError(f"{where} is not valid JSON ({err.msg} at line {err.lineno}, column {err.colno}).") \
            from None
    expected = ", ".join(X_FILE_KEYS.values())
    if not isinstance(data, dict):
        raise CredentialsError(f"{where} must hold one JSON object with the keys {expected}.")
    missing = [key for key in X_FILE_KEYS.values() if not isinstance(data.get(key), str) or not data[key].strip()]
    if missing:
        raise CredentialsError(f"{where} lacks {', '.join(missing)} (or {'it is' if len(missing) == 1 else 'they are'} "
                               f"empty or not text); it needs {expected}.")
    return XCredentials(**{field: data[key].strip() for field, key in X_FILE_KEYS.items()}, source=str(path))


def pair(settings: Settings, first: str, second: str) -> tuple[str, str] | None:
    """Two settings that go together (e.g. an instance URL and its access token) as plain strings, or None when
    neither is set; CredentialsError naming the missing one when only one is."""
    values = [reveal(getattr(settings, name)) for name in (first, second)]
    if not any(values):
        return None
    if not all(values):
        have, lack = (first, second) if values[0] else (second, first)
        raise CredentialsError(f"{have} is set but {lack} is not (PROVERBOT_{lack.upper()}): set both, or neither.")
    return values[0], values[1]


def reveal(value) -> str:
    """The plain, stripped text of a setting that may be a pydantic SecretStr; '' for None."""
    if value is None:
        return ""
    return (value.get_secret_value() if hasattr(value, "get_secret_value") else str(value)).strip()
