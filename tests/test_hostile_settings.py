"""Hostile settings through the real entry points (`proverbot config`, `proverbot config --json`, load_settings):
a bad file, key or value is one line that names it, where it came from and what is expected, never a traceback or
"unexpected error"; a secret or a URL's password is never printed."""

import json

import pytest

from chatbot.cli import main
from chatbot.config import ConfigError, Settings, load_settings, variables

PASSWORD = "SuperSecretPW123"
TOKEN = "xoxb-1234567890-SECRETtoken"


@pytest.fixture(autouse=True)
def clean(monkeypatch, tmp_path):
    """No setting from the machine running the tests: an empty working folder and none of the variables."""
    for name in [*(v for field in Settings.model_fields for v in variables(field)), "PROVERBOT_CONFIG",
                 "PROVERBOT_ENV_FILE"]:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)


def arrange(monkeypatch, tmp_path, files: dict[str, str | bytes], env: dict[str, str]) -> None:
    for name, content in files.items():
        path = tmp_path / name
        if content == "folder":
            path.mkdir()
        else:
            path.write_bytes(content if isinstance(content, bytes) else content.encode())
    for name, value in env.items():
        monkeypatch.setenv(name, value)


def config(capsys, *options) -> tuple[int, str, str]:
    code = main(["config", *options])
    out, err = capsys.readouterr()
    return code, out, err


BAD = [  # (files, environment) -> the one line on stderr, after "proverbot: error: "
    ({"proverbot.toml": b"\xff\xfetemperature = 0.9\n"}, {},
     "proverbot.toml is not UTF-8 text (byte 1); save it as UTF-8."),
    ({"proverbot.toml": "temperature = \n"}, {},
     "proverbot.toml: not valid TOML (Invalid value (at line 1, column 15))."),
    ({"proverbot.toml": "temprature = 0.9\n"}, {},
     "proverbot.toml: 'temprature' is not a setting (did you mean temperature?); `proverbot config` lists them."),
    ({"proverbot.toml": "temperature = 9\n"}, {},
     "Bad setting temperature (file proverbot.toml): Input should be less than or equal to 2."),
    ({"proverbot.toml": "discord_token = 5\n"}, {},
     "Bad setting discord_token (file proverbot.toml): Input should be a valid string."),
    ({}, {"PROVERBOT_BLOCKED_WORDS": "not json"},
     ('Bad setting blocked_words (environment PROVERBOT_BLOCKED_WORDS): not JSON; expected a JSON list, e.g. '
      '["darn", "heck"].')),
    ({}, {"PROVERBOT_PUBLISH_CHANNELS": '{"discord:1": '},
     ('Bad setting publish_channels (environment PROVERBOT_PUBLISH_CHANNELS): not JSON; expected a JSON object, e.g. '
      '{"discord:1234": "mastodon"}.')),
    ({}, {"PROVERBOT_BLOCKED_WORDS": '"darn"'},
     "Bad setting blocked_words (environment PROVERBOT_BLOCKED_WORDS): Input should be a valid list."),
    ({}, {"PROVERBOT_DEVICE": "tpu"},
     ("Bad setting device (environment PROVERBOT_DEVICE): 'tpu' is not a device; expected auto, cpu, cuda, cuda:N "
      "(N: a GPU's number) or mps.")),
    ({}, {"PROVERBOT_DEVICE": "cuda:first"},
     ("Bad setting device (environment PROVERBOT_DEVICE): 'cuda:first' is not a device; expected auto, cpu, cuda, "
      "cuda:N (N: a GPU's number) or mps.")),
    ({".env": b"PROVERBOT_COUNT=3\nDISCORD_TOKEN=caf\xe9\n"}, {},
     ".env is not UTF-8 text (byte 36); save it as UTF-8."),
    ({".env": "PROVERBOT_COUNT=3\nthis is not a variable\n"}, {}, ".env, line 2: not NAME=value."),
    ({".env": "PROVERBOT_TEMPERATUR=0.9\n"}, {},
     (".env: PROVERBOT_TEMPERATUR is not a setting's variable (did you mean temperature?); `proverbot config` lists "
      "them.")),
    ({".env": "PROVERBOT_COUNT=lots\n"}, {},
     ("Bad setting count (.env PROVERBOT_COUNT): Input should be a valid integer, unable to parse string as an "
      "integer.")),
    ({}, {"PROVERBOT_ENV_FILE": "missing.env"}, "PROVERBOT_ENV_FILE points to missing.env, which is not a file."),
    ({"settings": "folder"}, {"PROVERBOT_CONFIG": "settings"},
     "PROVERBOT_CONFIG points to settings, which is not a file."),
    ({"proverbot.toml": "count = 3\n", ".env": "PROVERBOT_COUNT=30\n"}, {},
     "Bad setting count (.env PROVERBOT_COUNT): Input should be less than or equal to 10."),
    ({}, {"PROVERBOT_SLACK_PORT": "0", "PROVERBOT_TOP_K": "-1"},
     ("Bad setting top_k (environment PROVERBOT_TOP_K): Input should be greater than or equal to 0; slack_port "
      "(environment PROVERBOT_SLACK_PORT): Input should be greater than or equal to 1.")),
]


@pytest.mark.parametrize("files, env, message", BAD)
@pytest.mark.parametrize("options", [(), ("--json",)])
def test_a_bad_setting_is_one_line_naming_it(monkeypatch, capsys, tmp_path, files, env, message, options):
    arrange(monkeypatch, tmp_path, files, env)
    code, out, err = config(capsys, *options)
    assert (code, out, err) == (1, "", f"proverbot: error: {message}\n")
    with pytest.raises(ConfigError) as refused:
        load_settings()
    assert str(refused.value) == message


SHOWN = [  # (files, environment) -> a line `proverbot config` prints, and the setting's value in --json
    ({}, {"PROVERBOT_DATABASE_URL": f"postgresql+asyncpg://bot:{PASSWORD}@db.example:5432/proverbot"},
     "database_url = postgresql+asyncpg://bot:***@db.example:5432/proverbot  (environment PROVERBOT_DATABASE_URL)",
     "postgresql+asyncpg://bot:***@db.example:5432/proverbot"),
    ({"proverbot.toml": f'mastodon_api_base_url = "https://me:{PASSWORD}@social.example"\n'}, {},
     "mastodon_api_base_url = https://me:***@social.example  (file proverbot.toml)", "https://me:***@social.example"),
    ({}, {"SLACK_BOT_TOKEN": f"  {TOKEN}\n"}, "slack_bot_token = **********  (environment SLACK_BOT_TOKEN)",
     "**********"),
    ({}, {"PROVERBOT_SLACK_BOT_TOKEN": TOKEN, "SLACK_BOT_TOKEN": "xoxb-the-other-one"},
     "slack_bot_token = **********  (environment PROVERBOT_SLACK_BOT_TOKEN)", "**********"),
    ({".env": f"DISCORD_TOKEN={TOKEN}\n"}, {}, "discord_token = **********  (.env DISCORD_TOKEN)", "**********"),
    ({".env": "DISCORD_TOKEN=from-the-file\n"}, {"DISCORD_TOKEN": TOKEN},
     "discord_token = **********  (environment DISCORD_TOKEN)", "**********"),
    ({"proverbot.toml": f'twitter_consumer_secret = "{TOKEN}"\n'}, {},
     "twitter_consumer_secret = **********  (file proverbot.toml)", "**********"),
    ({"proverbot.toml": "count = 3\n", "other.env": "PROVERBOT_COUNT=4\nHOME_OF_SOMETHING_ELSE=1\n"},
     {"PROVERBOT_ENV_FILE": "other.env"}, "count = 4  (other.env PROVERBOT_COUNT)", 4),
    ({".env": "folder", "proverbot.toml": 'blocked_words = ["darn", "heck"]\n'}, {},
     'blocked_words = ["darn", "heck"]  (file proverbot.toml)', ["darn", "heck"]),
    ({}, {"PROVERBOT_HEALTH_FILE": "/data/proverbot.health"},
     "health_file = /data/proverbot.health  (environment PROVERBOT_HEALTH_FILE)", "/data/proverbot.health"),
    ({}, {"PROVERBOT_RUN_NAME": "  "}, "run_name =  (environment PROVERBOT_RUN_NAME)", None),
]


@pytest.mark.parametrize("files, env, line, value", SHOWN)
def test_config_shows_values_and_origins_and_never_a_secret(monkeypatch, capsys, tmp_path, files, env, line, value):
    arrange(monkeypatch, tmp_path, files, env)
    code, text, err = config(capsys)
    assert code == 0 and err == "" and line in text.splitlines()
    code, out, err = config(capsys, "--json")
    name = line.split(" =")[0]
    assert code == 0 and json.loads(out)[name]["value"] == value
    assert json.loads(out)[name]["origin"] == line.rsplit("  (", 1)[1].rstrip(")")
    for secret in (PASSWORD, TOKEN, "from-the-file", "the-other-one"):
        assert secret not in text and secret not in out


def test_aliases_and_stripping_reach_the_settings(monkeypatch):
    monkeypatch.setenv("SLACK_BOT_TOKEN", f"  {TOKEN}\n")
    monkeypatch.setenv("PROVERBOT_DISCORD_TOKEN", "discord-token")
    monkeypatch.setenv("DISCORD_TOKEN", "loses-to-the-prefixed-one")
    monkeypatch.setenv("TWITTER_ACCESS_TOKEN", "")
    settings = load_settings()
    assert settings.slack_bot_token.get_secret_value() == TOKEN
    assert settings.discord_token.get_secret_value() == "discord-token"
    assert settings.twitter_access_token is None and settings.slack_app_token is None
