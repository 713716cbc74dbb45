"""Every knob in one place: defaults here, then an optional TOML file, then PROVERBOT_* variables.

The TOML file is `proverbot.toml` in the working folder, or the path in PROVERBOT_CONFIG.
Keys are the field names below, e.g.

    checkpoint_dir = "checkpoints"
    blocked_words = ["darn"]

and each can be overridden by the environment: PROVERBOT_CHECKPOINT_DIR, PROVERBOT_DATABASE_URL, ...
Lists in the environment are JSON: PROVERBOT_BLOCKED_WORDS='["darn", "heck"]'.
"""

import os
import tomllib
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, TomlConfigSettingsSource

from proverbot_errors import ProverbotError

DEFAULT_FILE = "proverbot.toml"


class ConfigError(ProverbotError):
    """The configuration file or a PROVERBOT_* variable is invalid."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PROVERBOT_", extra="forbid")

    # the model
    checkpoint_dir: Path = Field(Path("checkpoints"), description="Folder of run folders (gpt-2-simple: checkpoint_dir).")
    run_name: str | None = Field(None, description="Run to sample from; empty: the most recently trained one.")
    corpus: Path = Field(Path("data/proverbs_clean.txt"), description="Corpus the embedded default is trained on.")
    device: str = Field("auto", description="auto (CUDA when present), cpu, cuda, cuda:1, ...")
    # sampling and filtering
    temperature: float = Field(0.7, gt=0, le=2.0, description="Default sampling temperature.")
    top_k: int = Field(0, ge=0, description="Default top-k (0: off).")
    top_p: float = Field(0.0, ge=0, le=1.0, description="Default nucleus top-p (0: off).")
    length: int = Field(100, ge=1, le=1023, description="Most tokens a candidate may take.")
    count: int = Field(5, ge=1, le=10, description="Candidates shown per request.")
    batch_size: int = Field(20, ge=1, le=256, description="Most samples per forward pass (lower it if the GPU runs out of memory).")
    sample_dtype: Literal["auto", "float32", "bfloat16", "int8"] = Field(
        "auto", description="Weights while sampling: auto (bfloat16 on GPUs and on CPUs with native bfloat16, "
        "int8 on other x86 CPUs: 4x less memory traffic, perplexity within 2%), float32, bfloat16, int8.")
    blocked_words: list[str] = Field(default_factory=list, description="Candidates with these words are dropped.")
    max_tweet_length: int = Field(280, ge=1, description="X's weighted length limit.")
    # the model worker
    max_queue: int = Field(8, ge=1, description="Requests that may wait for the model; more get 'busy'.")
    sample_timeout: float = Field(120.0, gt=0, description="Seconds a request may take, queue wait included.")
    # storage
    database_url: str = Field("sqlite+aiosqlite:///proverbot.db", description="SQLAlchemy async URL of the log.")
    # publishing (X's credentials: TWITTER_* variables or twitter_credentials_file; see README "Publishing")
    dry_run: bool = Field(False, description="Post nowhere (the dry-run publisher) even when credentials are set.")
    publish_to: str | None = Field(None, description="Default publisher: x, mastodon, bluesky or dryrun; empty: the "
                                   "first with credentials (in that order), else dryrun.")
    publish_channels: dict[str, str] = Field(default_factory=dict, description="Publisher per chat channel, e.g. "
                                             '{"discord:1234": "mastodon"}.')
    publish_timeout: float = Field(30.0, gt=0, description="Seconds one call to a platform may take.")
    publish_attempts: int = Field(3, ge=1, le=10, description="Tries when a platform is unavailable or times out "
                                  "(2 s, 4 s, ... apart).")
    twitter_credentials_file: Path | None = Field(None, description="The tutorial's JSON credentials file for X "
                                                  "(consumer_key, consumer_secret, access_key, access_secret); the "
                                                  "TWITTER_* variables come first.")
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

    # Discord (the bot token: the DISCORD_TOKEN variable; see README "Discord")
    discord_guild_id: int | None = Field(None, description="Sync slash commands to this server only (instant; for "
                                         "development); empty: globally, for every server the bot is in.")
    discord_post_roles: list[str] = Field(default_factory=list, description="Roles (names or ids) whose members may "
                                          "/post and set schedules, besides discord_post_permission.")
    discord_post_permission: str = Field("manage_guild", description="Members with this Discord permission may /post "
                                         "and set schedules (manage_guild, manage_messages, administrator, ...).")
    discord_vote_emoji: list[str] = Field(["👍"], min_length=1, description="Reactions that count as votes (unicode "
                                          "emoji, or <:name:id> for a server's own).")
    # Slack (tokens: the SLACK_BOT_TOKEN and SLACK_APP_TOKEN or SLACK_SIGNING_SECRET variables; see README "Slack")
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

    @classmethod
    def settings_customise_sources(cls, settings_cls, init_settings, env_settings, dotenv_settings, file_secret_settings):
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        path = config_path()
        if path is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=path))
        return tuple(sources)


def config_path() -> Path | None:
    explicit = os.environ.get("PROVERBOT_CONFIG")
    if explicit:
        if not Path(explicit).is_file():
            raise ConfigError(f"PROVERBOT_CONFIG points to {explicit}, which is not a file.")
        return Path(explicit)
    return Path(DEFAULT_FILE) if Path(DEFAULT_FILE).is_file() else None


def load_settings(**overrides) -> Settings:
    """The settings, or a ConfigError that names the bad key and where it came from."""
    path = config_path()
    where = f"{path} or PROVERBOT_* variables" if path else "PROVERBOT_* variables"
    try:
        return Settings(**overrides)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: not valid TOML ({err}).") from None
    except ValidationError as err:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors())
        raise ConfigError(f"Bad configuration in {where}: {problems}.") from None


def describe() -> list[tuple[str, str, str]]:
    """(name, environment variable, description) for every knob: the CLI prints this."""
    return [(name, f"PROVERBOT_{name.upper()}", field.description or "") for name, field in Settings.model_fields.items()]
