"""The shared wording of the front ends."""

from chatbot import replies
from chatbot.core import AskResult, BadRequest, ModelInfo, Status
from chatbot.posting import PublisherUsage
from storage import AlreadyPosted


def test_status_lists_every_publisher_against_its_quota_default_first():
    usage = (PublisherUsage("x", "X", 3, 17, True), PublisherUsage("mastodon", "Mastodon", 0, None, False))
    status = Status(ModelInfo("default", "2320050d41be", "cpu"), 2, 3, "x", usage)
    assert replies.status(status) == ("Model: default (checkpoint 2320050d41be) on cpu; queue: 2 waiting; posts in "
                                      "the last 24 h: X 3 of 17, Mastodon 0.")
    dry = Status(status.model, 0, 0, "dryrun", (PublisherUsage("dryrun", "dryrun", 0, None, True),),
                 note="Dry run: nothing is posted.")
    assert replies.status(dry).endswith("posts in the last 24 h: dryrun 0. Dry run: nothing is posted.")


def test_an_already_posted_error_gives_the_link():
    err = AlreadyPosted("x", post_id=7, platform="x", url="https://x.com/p/status/1", remote_id="1")
    assert replies.error(err) == "already posted: https://x.com/p/status/1 (post #7)"
    assert replies.error(AlreadyPosted("x", 8, "x", None, None)) == "already posted: no link recorded (post #8)"


def test_one_error_mapping_names_a_bug_by_its_type_only():
    assert replies.sorry(BadRequest("count must be a whole number from 1 to 10 (got 0).")) == (
        "Sorry: count must be a whole number from 1 to 10 (got 0).")
    assert replies.sorry(RuntimeError("token xoxb-123 in a traceback")) == (
        "Sorry: unexpected RuntimeError (the bot's log has the details).")


def test_the_header_names_the_asker_and_quotes_what_they_typed():
    result = AskResult(7, (), wanted=3, samples=12, seconds=0.25, filtered={"blocked_word": 12})
    assert replies.header("ada", "<b>", result, "Vote.", quote=str.upper) == (
        "ADA asked for “<B>”: [0 candidates (only 0 of 3 wanted) from 12 samples in 0.2s; filtered out 12: 12 blocked "
        "word; generation #7. Vote.]")
    assert replies.header(None, "", result, "Vote.").startswith("someone asked: [0 candidates")
    assert replies.queued(2) == "Waiting for the model: #2 in the queue."
