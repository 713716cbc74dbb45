"""Where settings come from (arguments, environment, .env, proverbot.toml, defaults: the first wins), what
describe() reports, and the secrets that load_settings hands to the scrubber."""

import pytest

from chatbot.config import describe, load_settings
from chatbot.scrub import scrub
from tests.test_hostile_settings import clean  # noqa: F401 (the autouse fixture: no setting from the machine)


def origin_of(name: str, **overrides) -> tuple[object, str]:
    (shown,) = [s for s in describe(**overrides) if s.name == name]
    return shown.value, shown.origin


def test_the_first_place_that_sets_a_knob_wins(monkeypatch, tmp_path):
    assert origin_of("count") == (5, "default")
    (tmp_path / "proverbot.toml").write_text("count = 2\ntop_k = 40\n")
    assert origin_of("count") == (2, "file proverbot.toml")
    (tmp_path / ".env").write_text("# a comment\nexport PROVERBOT_COUNT=3\n")
    assert origin_of("count") == (3, ".env PROVERBOT_COUNT")
    monkeypatch.setenv("PROVERBOT_COUNT", "4")
    assert origin_of("count") == (4, "environment PROVERBOT_COUNT")
    assert origin_of("count", count=6) == (6, "argument")
    assert load_settings().top_k == 40 and load_settings(count=6).count == 6


def test_describe_covers_every_setting_with_its_variables():
    shown = {s.name: s for s in describe()}
    assert shown["max_corpus_mb"].value == 1024 and shown["max_corpus_mb"].text == "1024"
    assert shown["discord_token"].variables == ("PROVERBOT_DISCORD_TOKEN", "DISCORD_TOKEN")
    assert shown["twitter_access_token_secret"].variables == ("PROVERBOT_TWITTER_ACCESS_TOKEN_SECRET",
                                                              "TWITTER_ACCESS_TOKEN_SECRET")
    assert shown["checkpoint_dir"].text == "checkpoints" and shown["slack_http"].text == "false"
    assert shown["slack_vote_reactions"].text == '["+1"]' and shown["run_name"].text == ""
    assert all(s.description for s in shown.values())


@pytest.mark.parametrize("variable, value, secret", [
    ("DISCORD_TOKEN", "MTIzNDU2.discord.TOKENvalue", "MTIzNDU2.discord.TOKENvalue"),
    ("PROVERBOT_BLUESKY_APP_PASSWORD", "abcd-efgh-ijkl-mnop", "abcd-efgh-ijkl-mnop"),
    ("PROVERBOT_DATABASE_URL", "postgresql+asyncpg://bot:Pass%40word99@db/proverbot", "Pass@word99"),
])
def test_secrets_and_url_passwords_are_remembered_for_scrubbing(monkeypatch, variable, value, secret):
    assert scrub(f"echoed: {secret}") == f"echoed: {secret}"
    monkeypatch.setenv(variable, value)
    load_settings()
    assert scrub(f"echoed: {secret}") == "echoed: **********"
