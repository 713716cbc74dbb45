"""Every knob in one place, read through pydantic-settings. The first of these that sets a knob wins:

1. the environment: PROVERBOT_<NAME>, e.g. PROVERBOT_CHECKPOINT_DIR; a platform's secret also under the platform's
   own name (DISCORD_TOKEN, SLACK_BOT_TOKEN, TWITTER_CONSUMER_KEY, ...: `variables(name)` lists them);
2. a .env file of NAME=value lines with the same names: `.env` in the working folder, or the file named by
   PROVERBOT_ENV_FILE (its other variables are left alone: they may be another program's);
3. a TOML file keyed by the names below: `proverbot.toml` in the working folder, or the file named by
   PROVERBOT_CONFIG, e.g.

       checkpoint_dir = "checkpoints"
       blocked_words = ["darn"]

4. the defaults below.

Lists and tables in a variable are JSON: PROVERBOT_BLOCKED_WORDS='["darn", "heck"]'. Secrets may be set in any of
the four, best in the environment or in a .env file kept out of git. Surrounding whitespace is stripped from every
value, and an empty value leaves an optional knob unset. A bad file, key or value is a ConfigError of one line that
names it and where it came from. `proverbot config` shows each knob's value and origin, secrets masked: describe().
"""

import io
import json
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from difflib import get_close_matches
from pathlib import Path
from typing import Any, Literal, get_origin
from urllib.parse import unquote

from dotenv import dotenv_values
from dotenv.parser import parse_stream
from pydantic import AliasChoices, Field, SecretStr, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, InitSettingsSource, SettingsConfigDict

from chatbot.scrub import MASK, remember
from proverbot_errors import ProverbotError

DEFAULT_FILE = "proverbot.toml"
DEFAULT_ENV_FILE = ".env"
DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?|mps")
URL_PASSWORD = re.compile(r"^(?P<head>[A-Za-z][\w+.-]*://[^:/@]*):(?P<password>[^@]*)@")  # as SQLAlchemy reads it


class ConfigError(ProverbotError):
    """A settings file, key or value is invalid."""


def secret(variable: str, description: str):
    """A secret knob, set by PROVERBOT_<VARIABLE> or by the platform's own `variable`, e.g. DISCORD_TOKEN."""
    return Field(None, validation_alias=AliasChoices(f"PROVERBOT_{variable}", variable), description=description)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PROVERBOT_", extra="forbid", populate_by_name=True)

    # the model
    checkpoint_dir: Path = Field(Path("checkpoints"), description="Folder of run folders (gpt-2-simple: "
                                 "checkpoint_dir).")
    run_name: str | None = Field(None, description="Run to sample from; empty: the most recently trained one.")
    corpus: Path = Field(Path("data/proverbs_clean.txt"), description="Corpus the embedded default is trained on.")
    max_corpus_mb: int = Field(1024, ge=1, description="Largest corpus file or folder read, in megabytes; bigger is "
                               "refused.")
    device: str = Field("auto", description="auto (CUDA when present), cpu, cuda, cuda:1, ... or mps.")
    # sampling and filtering
    temperature: float = Field(0.7, gt=0, le=2.0, description="Default sampling temperature.")
    top_k: int = Field(0, ge=0, description="Default top-k (0: off).")
    top_p: float = Field(0.0, ge=0, le=1.0, description="Default nucleus top-p (0: off).")
    length: int = Field(100, ge=1, le=1023, description="Most tokens a candidate may take.")
    count: int = Field(5, ge=1, le=10, description="Candidates shown per request.")
    batch_size: int = Field(20, ge=1, le=256, description="Most samples per forward pass (lower it if the GPU runs "
                            "out of memory).")
    sample_dtype: Literal["auto", "float32", "bfloat16", "int8"] = Field(
        "auto", description="Weights while sampling: auto (bfloat16 on GPUs and on CPUs with native bfloat16, "
        "int8 on other x86 CPUs: 4x less memory traffic, perplexity within 2%), float32, bfloat16, int8.")
    blocked_words: list[str] = Field(default_factory=list, description="Candidates with these words are dropped.")
    max_tweet_length: int = Field(280, ge=1, description="X's weighted length limit.")
    # the model worker
    max_queue: int = Field(8, ge=1, description="Requests that may wait for the model; more get 'busy'.")
    sample_timeout: float = Field(120.0, gt=0, description="Seconds a request may take, queue wait included.")
    user_cooldown: float = Field(5.0, ge=0, le=3600, description="Seconds a member waits between two /proverb in "
                                 "one channel (0: no wait); moderators are exempt.")
    user_hourly_candidates: int = Field(50, ge=0, le=100000, description="Candidates a member may ask for in any "
                                        "hour, all channels together (0: no cap); moderators are exempt.")
    model_memory_mb: int = Field(2048, ge=1, description="Megabytes of weights the runs loaded at once may take "
                                 "(each counts as its model.safetensors); the least recently used run is unloaded "
                                 "to make room.")
    heartbeat_s: float = Field(15.0, gt=0, le=3600, description="Seconds between a bot process's heartbeats in the "
                               "log: several bots may share it, and a process silent for 3 heartbeats has stopped "
                               "(its pending posts become unknown, its generations failed).")
    retune_after_batches: int = Field(0, ge=0, le=1_000_000, description="Tune a run on its votes (as `proverbot "
                                      "train --from-votes`) after every N new voted batches, in the background, "
                                      "announced in the channel; 0: never. Set it on one bot of a shared log.")
    # an inference server (see README "Serving the model elsewhere")
    sampler_url: str | None = Field(None, description="An OpenAI-compatible server (vLLM, TGI, llama-server, "
                                    "transformers serve) to sample from, e.g. http://gpu:8000; empty: the model "
                                    "runs in the bot's process.")
    sampler_model: str | None = Field(None, description="The served model's name on sampler_url (vllm serve's "
                                      "--served-model-name).")
    sampler_api_key: SecretStr | None = Field(None, description="Bearer token for sampler_url; best set as an "
                                              "environment variable.")
    sampler_corpus: Path | None = Field(None, description="The training texts (a run folder's corpus.txt) that "
                                        "remote samples are checked against for copies, when no local run folder "
                                        "has them.")
    sampler_timeout: float = Field(60.0, gt=0, description="Seconds one request to sampler_url may take.")
    sampler_max_in_flight: int = Field(4, ge=1, le=64, description="Most requests to sampler_url at once.")
    # storage
    database_url: str = Field("sqlite+aiosqlite:///proverbot.db", description="SQLAlchemy async URL of the log.")
    # publishing (see README "Publishing")
    dry_run: bool = Field(False, description="Post nowhere (the dry-run publisher) even when credentials are set.")
    publish_to: str | None = Field(None, description="Default publisher: x, mastodon, bluesky or dryrun; empty: the "
                                   "first with credentials (in that order), else dryrun.")
    publish_channels: dict[str, str] = Field(default_factory=dict, description="Publisher per chat channel, e.g. "
                                             '{"discord:1234": "mastodon"}.')
    publish_timeout: float = Field(30.0, gt=0, description="Seconds one call to a platform may take.")
    publish_attempts: int = Field(3, ge=1, le=10, description="Tries when a platform is unavailable or times out "
                                  "(2 s, 4 s, ... apart).")
    twitter_consumer_key: SecretStr | None = secret("TWITTER_CONSUMER_KEY", "X: the app's API key (consumer key); "
                                                    "the four twitter_* secrets come before twitter_credentials_file.")
    twitter_consumer_secret: SecretStr | None = secret("TWITTER_CONSUMER_SECRET", "X: the app's API key secret.")
    twitter_access_token: SecretStr | None = secret("TWITTER_ACCESS_TOKEN", "X: the account's access token "
                                                    "(1234567890-...).")
    twitter_access_token_secret: SecretStr | None = secret("TWITTER_ACCESS_TOKEN_SECRET", "X: the access token "
                                                           "secret.")
    twitter_credentials_file: Path | None = Field(None, description="The tutorial's JSON credentials file for X "
                                                  "(consumer_key, consumer_secret, access_key, access_secret), read "
                                                  "when the four twitter_* secrets are not set.")
    x_posts_per_day: int = Field(17, ge=0, description="Most posts on X in any 24 hours, counted from the log (17: "
                                 "the free tier; 0: no quota).")
    mastodon_api_base_url: str | None = Field(None, description="Your Mastodon instance, e.g. https://mastodon.social.")
    mastodon_access_token: SecretStr | None = Field(None, description="Its access token (scopes write:statuses, "
                                                    "read:accounts); best set as an environment variable.")
    mastodon_max_length: int = Field(500, ge=1, description="Characters a post may have on your instance.")
    mastodon_posts_per_day: int = Field(48, ge=0, description="Most posts on Mastodon in any 24 hours (0: no quota).")
    bluesky_handle: str | None = Field(None, description="Bluesky handle, e.g. proverbot.bsky.social.")
    bluesky_app_password: SecretStr | None = Field(None, description="An app password (xxxx-xxxx-xxxx-xxxx), not the "
                                                   "account's password; best set as an environment variable.")
    bluesky_base_url: str | None = Field(None, description="Your PDS, when it is not https://bsky.social.")
    bluesky_posts_per_day: int = Field(48, ge=0, description="Most posts on Bluesky in any 24 hours (0: no quota).")

    # Discord (see README "Discord")
    discord_token: SecretStr | None = secret("DISCORD_TOKEN", "The Discord bot's token (Developer Portal: Bot, Reset "
                                             "Token); set, `proverbot run` serves Discord.")
    discord_guild_id: int | None = Field(None, description="Sync slash commands to this server only (instant; for "
                                         "development); empty: globally, for every server the bot is in.")
    discord_post_roles: list[str] = Field(default_factory=list, description="Roles (names or ids) whose members may "
                                          "/post and set schedules, besides discord_post_permission.")
    discord_post_permission: str = Field("manage_guild", description="Members with this Discord permission may /post "
                                         "and set schedules (manage_guild, manage_messages, administrator, ...).")
    discord_vote_emoji: list[str] = Field(["👍"], min_length=1, description="Reactions that count as votes (unicode "
                                          "emoji, or <:name:id> for a server's own).")
    # Slack (see README "Slack")
    slack_bot_token: SecretStr | None = secret("SLACK_BOT_TOKEN", "The Slack app's bot token (xoxb-...); set, "
                                               "`proverbot run` serves Slack.")
    slack_app_token: SecretStr | None = secret("SLACK_APP_TOKEN", "The Slack app-level token (xapp-...), for Socket "
                                               "Mode.")
    slack_signing_secret: SecretStr | None = secret("SLACK_SIGNING_SECRET", "The Slack app's signing secret, for HTTP "
                                                    "mode (slack_http).")
    slack_post_users: list[str] = Field(default_factory=list, description="Slack user ids (U...) who may /post and "
                                        "set schedules.")
    slack_post_usergroups: list[str] = Field(default_factory=list, description="Slack user group ids (S...) whose "
                                             "members may /post and set schedules.")
    slack_post_admins: bool = Field(True, description="Workspace admins and owners may /post and set schedules.")
    slack_vote_reactions: list[str] = Field(["+1"], min_length=1, description="Reaction names that count as votes "
                                            "(+1 is 👍; any skin tone counts), e.g. [\"+1\", \"fire\"].")
    slack_http: bool = Field(False, description="Take Slack's requests over HTTP (needs SLACK_SIGNING_SECRET and a "
                             "public URL) instead of Socket Mode (SLACK_APP_TOKEN).")
    slack_port: int = Field(3000, ge=1, le=65535, description="The port HTTP mode listens on (path /slack/events).")
    # running
    health_file: Path | None = Field(None, description="Heartbeat file the running bot writes every 30 s, for "
                                     "`proverbot health` (the Docker image sets /data/proverbot.health).")


    @field_validator("*", mode="before")
    @classmethod
    def stripped(cls, value: Any, info: ValidationInfo) -> Any:
        """Surrounding whitespace is never meant (a pasted token's line break); an empty optional knob is unset."""
        if not isinstance(value, str):
            return value
        value = value.strip()
        return None if not value and cls.model_fields[info.field_name].default is None else value

    @field_validator("sampler_url")
    @classmethod
    def http_url(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"https?://[^\s/]+(/\S*)?", value):
            raise ValueError("expected an http:// or https:// URL, e.g. http://gpu:8000")
        return value.rstrip("/") if value else value

    @field_validator("device")
    @classmethod
    def known_device(cls, value: str) -> str:
        if not DEVICE.fullmatch(value):
            raise ValueError(f"{value!r} is not a device; expected auto, cpu, cuda, cuda:N (N: a GPU's number) or mps")
        return value

    @classmethod
    def settings_customise_sources(cls, settings_cls, init_settings, env_settings, dotenv_settings,
                                   file_secret_settings):
        """Arguments, the environment, the .env file, the TOML file: the first that sets a knob wins."""
        sources = Sources.read()
        return (init_settings, env_settings, InitSettingsSource(settings_cls, values(sources.env_file)),
                InitSettingsSource(settings_cls, values(sources.toml)))


def load_settings(**overrides) -> Settings:
    """The settings (`overrides` first), or a ConfigError of one line naming each bad knob and where its value came
    from. Their secrets and URL passwords are remembered, so that chatbot/scrub.py masks them wherever they appear."""
    try:
        settings = Settings(**overrides)
    except ValidationError as err:
        raise ConfigError(problems(err, Sources.read().origins(overrides))) from None
    remember(*secrets(settings))
    return settings


def problems(err: ValidationError, origins: dict[str, str]) -> str:
    """One line for every error, e.g. "Bad setting count (environment PROVERBOT_COUNT): Input should be ..."; never
    a value, which may be a secret."""
    found = []
    for error in err.errors():
        name = SETTING_OF.get(str(error["loc"][0]).upper(), str(error["loc"][0]))
        where = ".".join(map(str, (name, *error["loc"][1:])))
        found.append(f"{where} ({origins.get(name, 'default')}): {error['msg'].removeprefix('Value error, ')}")
    return f"Bad setting {'; '.join(found)}."


def secrets(settings: Settings) -> list[str]:
    """Every secret the settings hold: the SecretStr values and the passwords in URLs."""
    found = []
    for name in Settings.model_fields:
        value = getattr(settings, name)
        if isinstance(value, SecretStr):
            found.append(value.get_secret_value())
        elif isinstance(value, str) and (match := URL_PASSWORD.match(value)):
            found += [match["password"], unquote(match["password"])]
    return found


# -- where values come from ----------------------------------------------------------------------------------------

def variables(name: str) -> tuple[str, ...]:
    """The environment variables that set a knob, the first set winning: PROVERBOT_<NAME>, then the platform's own
    name for a secret such as discord_token (DISCORD_TOKEN)."""
    alias = Settings.model_fields[name].validation_alias
    return tuple(alias.choices) if isinstance(alias, AliasChoices) else (f"PROVERBOT_{name.upper()}",)


@dataclass(frozen=True)
class Sources:
    """What the environment, the .env file and the TOML file set, before validation: {knob: (origin, value)} each,
    the origin being e.g. "environment DISCORD_TOKEN", ".env SLACK_BOT_TOKEN" or "file proverbot.toml"."""
    environment: dict[str, tuple[str, Any]]
    env_file: dict[str, tuple[str, Any]]
    toml: dict[str, tuple[str, Any]]

    @classmethod
    def read(cls) -> "Sources":
        """ConfigError when a file cannot be read, is not UTF-8 or not of its format, when a file names an unknown
        knob, or when a list or table is not JSON."""
        env_file = named_file("PROVERBOT_ENV_FILE", DEFAULT_ENV_FILE)
        toml = named_file("PROVERBOT_CONFIG", DEFAULT_FILE)
        return cls(from_variables(os.environ, "environment"),
                   from_variables(read_env_file(env_file), str(env_file)) if env_file else {},
                   {name: (f"file {toml}", value) for name, value in read_toml(toml).items()} if toml else {})

    def origins(self, overrides: Mapping[str, Any]) -> dict[str, str]:
        """{knob: where its value comes from} for the knobs set anywhere: "argument" for `overrides`."""
        found = {name: origin for source in (self.toml, self.env_file, self.environment)
                 for name, (origin, _) in source.items()}
        return found | dict.fromkeys(overrides, "argument")


def values(found: dict[str, tuple[str, Any]]) -> dict[str, Any]:
    return {name: value for name, (_, value) in found.items()}


def named_file(variable: str, default: str) -> Path | None:
    """The file named by the environment `variable`, which must exist; else `default` in the working folder, when it
    is a file (a virtualenv folder named .env is not)."""
    explicit = os.environ.get(variable, "").strip()
    if explicit:
        if not Path(explicit).is_file():
            raise ConfigError(f"{variable} points to {explicit}, which is not a file.")
        return Path(explicit)
    return Path(default) if Path(default).is_file() else None


def read_text(path: Path) -> str:
    try:
        return path.read_bytes().decode("utf-8-sig")
    except OSError as err:
        raise ConfigError(f"{path} cannot be read: {err.strerror or type(err).__name__}.") from None
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path} is not UTF-8 text (byte {err.start + 1}); save it as UTF-8.") from None


def read_toml(path: Path) -> dict[str, Any]:
    try:
        data = tomllib.loads(read_text(path))
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: not valid TOML ({err}).") from None
    for key in data:
        if key not in Settings.model_fields:
            raise ConfigError(f"{path}: {key!r} is not a setting{did_you_mean(key)}; `proverbot config` lists them.")
    return data


def read_env_file(path: Path) -> dict[str, str | None]:
    """The variables of a .env file; one that starts with PROVERBOT_ must be a knob's."""
    text = read_text(path)
    for binding in parse_stream(io.StringIO(text)):
        if binding.error:
            raise ConfigError(f"{path}, line {binding.original.line}: not NAME=value.")
    found = dotenv_values(stream=io.StringIO(text))
    for variable in found:
        if variable.upper().startswith("PROVERBOT_") and variable.upper() not in SETTING_OF:
            raise ConfigError(f"{path}: {variable} is not a setting's variable{did_you_mean(variable)}; `proverbot "
                              "config` lists them.")
    return found


def did_you_mean(key: str) -> str:
    close = get_close_matches(key.lower().removeprefix("proverbot_"), Settings.model_fields, n=1)
    return f" (did you mean {close[0]}?)" if close else ""


def from_variables(variables_set: Mapping[str, str | None], where: str) -> dict[str, tuple[str, Any]]:
    """{knob: (origin, value)} for each knob the variables set (their names in any case, as pydantic-settings reads
    them), lists and tables decoded from JSON."""
    upper = {name.upper(): value for name, value in variables_set.items() if value is not None}
    found = {}
    for name in Settings.model_fields:
        variable = next((v for v in variables(name) if v.upper() in upper), None)
        if variable is not None:
            found[name] = (f"{where} {variable}", decoded(name, upper[variable.upper()], f"{where} {variable}"))
    return found


def decoded(name: str, text: str, origin: str) -> Any:
    """A variable's value: JSON for a list or table knob, else the text (pydantic converts it)."""
    shape = get_origin(Settings.model_fields[name].annotation)
    if shape not in (list, dict):
        return text
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        example = '["darn", "heck"]' if shape is list else '{"discord:1234": "mastodon"}'
        raise ConfigError(f"Bad setting {name} ({origin}): not JSON; expected a JSON "
                          f"{'list' if shape is list else 'object'}, e.g. {example}.") from None


# -- what `proverbot config` shows ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Shown:
    """One knob as `proverbot config` shows it: `value` is JSON-ready, with secrets and URL passwords masked."""
    name: str
    variables: tuple[str, ...]
    value: Any
    origin: str
    description: str

    @property
    def text(self) -> str:
        """The value as plain text: a path or URL as it is, a list or table as JSON, nothing for None."""
        if self.value is None:
            return ""
        if isinstance(self.value, str):
            return self.value if self.value.isprintable() else json.dumps(self.value, ensure_ascii=False)
        return json.dumps(self.value, ensure_ascii=False)


def describe(**overrides) -> list[Shown]:
    """Every knob with its variables, its current value (secrets masked) and where that value came from, e.g.
    Shown("device", ("PROVERBOT_DEVICE",), "cpu", "environment PROVERBOT_DEVICE", "auto (CUDA when present), ...")."""
    settings = load_settings(**overrides)
    origins = Sources.read().origins(overrides)
    return [Shown(name, variables(name), shown(getattr(settings, name)), origins.get(name, "default"),
                  field.description or "") for name, field in Settings.model_fields.items()]


def shown(value: Any) -> Any:
    """A value ready for JSON and for people: a secret as MASK, a URL without its password, a path as text."""
    if isinstance(value, SecretStr):
        return MASK
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, str):
        return without_password(value)
    return value


def without_password(text: str) -> str:
    """postgresql+asyncpg://bot:secret@host/db -> postgresql+asyncpg://bot:***@host/db; other text as it is."""
    match = URL_PASSWORD.match(text)
    return f"{match['head']}:***@{text[match.end():]}" if match and match["password"] else text


SETTING_OF = {variable.upper(): name for name in Settings.model_fields for variable in variables(name)}
