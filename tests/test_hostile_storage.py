"""Hostile input against the log, through its real entry points: the storage API on a real database, and
`proverbot db settle-post`, `post --candidate` and `history --csv`. Each row is one hostile input and the one-line
error it must give, with nothing written (the row count of every table is the same before and after).
On SQLite, and on PostgreSQL when PROVERBOT_TEST_POSTGRES_URL names a server (see test_storage_api)."""

import asyncio
import csv
import io
import json
from functools import partial

import pytest

from chatbot.cli import main
from chatbot.publishers import TooLong
from chatbot.publishers.lengths import x_limits
from storage import Database, NewCandidate, NotFound, PostFinal, StorageError, Unusable
from tests.fakes.loopback import guard_network
from tests.test_publish_x import ENV
from tests.test_storage_api import fresh_url

HUGE = 10**26 - 1          # past every backend's integer: 26 nines
SHOWN_HUGE = "#99999999999999999999…"
POSTED_URL = "https://x.test/1"
# The log every row starts from (fresh database, so the ids are known):
# generation 1: candidate 1 "fine" (usable), 2 "the lord is good" (blocked), 3 "" (a candidate the filter kept)
# posts: 1 posted (POSTED_URL), 2 failed, 3 unknown
FINE, BLOCKED, EMPTY = 1, 2, 3
POSTED, FAILED, UNKNOWN = 1, 2, 3


async def seed(url: str) -> None:
    db = Database(url)
    await db.start()
    gid = await db.record_generation("console", channel_id="c1", user_name="=cmd|' /C calc'!A0", prefix="@SUM(1)",
                                     seed=-1)
    await db.finish_generation(gid, [NewCandidate("fine"), NewCandidate("the lord is good", usable=False,
                                                                        reason="blocked_word",
                                                                        detail='contains blocked word "lord"'),
                                     NewCandidate("")])
    posted = await db.begin_post("x", text="posted before")
    await db.settle_post(posted.id, "posted", url=POSTED_URL)
    failed = await db.begin_post("x", text="failed before")
    await db.settle_post(failed.id, "failed", error="HTTP 503")
    unknown = await db.begin_post("x", text="unknown outcome")
    await db.settle_post(unknown.id, "unknown", error="timeout")
    await db.close()


async def counts(url: str) -> dict[str, int]:
    db = Database(url)
    await db.start(migrate=False, recover=False)
    try:
        return (await db.check()).counts
    finally:
        await db.close()


@pytest.fixture(params=["sqlite", "postgres"])
def url(request, tmp_path, monkeypatch) -> str:
    """A seeded log, also the CLI's (PROVERBOT_DATABASE_URL); no publisher credentials: posts go to the dry run."""
    found = asyncio.run(fresh_url(request.param, tmp_path))
    asyncio.run(seed(found))
    monkeypatch.setenv("PROVERBOT_DATABASE_URL", found)
    for name in [*ENV, "PROVERBOT_CONFIG"]:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    guard_network(monkeypatch)
    return found


# -- the storage API ------------------------------------------------------------------------------------------

X_CHECK = partial(x_limits().check, "X")

API_ROWS = [
    # filter bypass by id (#1): the same rule as posting by vote
    ("post a blocked candidate by id", lambda db: db.begin_post("x", candidate_id=BLOCKED),
     Unusable, f"Candidate #{BLOCKED} was filtered out (blocked word) and cannot be posted."),
    ("vote for a blocked candidate", lambda db: db.record_vote(BLOCKED, "u1", "👍"),
     Unusable, f"Candidate #{BLOCKED} was filtered out (blocked word) and cannot be voted for."),
    ("post an empty candidate", lambda db: db.begin_post("x", candidate_id=EMPTY),
     Unusable, f"Candidate #{EMPTY} is empty: there is nothing to post."),
    ("post a blank text", lambda db: db.begin_post("x", text=" \n\t "),
     Unusable, "The text is empty: there is nothing to post."),
    ("post a text with a NUL byte", lambda db: db.begin_post("x", text="fine\x00print"),
     Unusable, "The text contains a NUL character (\\x00): it cannot be posted."),
    ("post an over-long text", lambda db: db.begin_post("x", text="long " * 100, check=X_CHECK),
     TooLong, "The text is 500 long by X's count"),
    # ids no row can have (#10): one NotFound, before any driver sees them
    ("post a huge candidate id", lambda db: db.begin_post("x", candidate_id=HUGE),
     NotFound, f"There is no candidate {SHOWN_HUGE} in the log."),
    ("vote for a huge candidate id", lambda db: db.record_vote(HUGE, "u1", "👍"),
     NotFound, f"There is no candidate {SHOWN_HUGE} in the log."),
    ("withdraw a vote from a huge id", lambda db: db.remove_vote(HUGE, "u1", "👍"),
     NotFound, f"There is no candidate {SHOWN_HUGE} in the log."),
    ("settle a huge post id", lambda db: db.settle_post(HUGE, "posted", url="https://x.test/9"),
     NotFound, f"There is no post {SHOWN_HUGE} in the log."),
    ("finish a huge generation id", lambda db: db.finish_generation(HUGE, ["text"]),
     NotFound, f"There is no generation {SHOWN_HUGE} in the log."),
    ("show a huge candidate id in a message", lambda db: db.set_candidate_message(HUGE, "m1"),
     NotFound, f"There is no candidate {SHOWN_HUGE} in the log."),
    ("one past SQLite's integer", lambda db: db.get_post(2**63), NotFound,
     "There is no post #9223372036854775808 in the log."),
    ("a zero id", lambda db: db.begin_post("x", candidate_id=0), NotFound, "There is no candidate #0 in the log."),
    ("a negative id", lambda db: db.record_vote(-1, "u1", "👍"), NotFound, "There is no candidate #-1 in the log."),
    ("an id as text", lambda db: db.settle_post("1", "failed"), NotFound, "There is no post #'1' in the log."),
    ("an id as a bool", lambda db: db.tally(True), NotFound, "There is no generation #True in the log."),
    # settling (#13)
    ("settle a missing post", lambda db: db.settle_post_by_hand(7, "posted"), NotFound,
     "There is no post #7 in the log."),
    ("replace the URL of a posted post",
     lambda db: db.settle_post_by_hand(POSTED, "posted", url="https://evil.example/x"), PostFinal,
     (f"Post #{POSTED} on x is already posted ({POSTED_URL}): that is final, so there is nothing to settle "
      "(settling is for pending, unknown or failed posts).")),
    ("the publisher settles a posted post", lambda db: db.settle_post(POSTED, "failed"), PostFinal,
     f"Post #{POSTED} on x is already posted ({POSTED_URL})"),
    ("settle a failed post as failed", lambda db: db.settle_post_by_hand(FAILED, "failed"), StorageError,
     f"Post #{FAILED} on x is already recorded as failed: nothing to settle (it can be posted again)."),
    ("a URL for a failed post", lambda db: db.settle_post_by_hand(UNKNOWN, "failed", url="https://x.test/3"),
     StorageError, "A URL or remote id is for a post found online: settle it as posted, not failed."),
]


@pytest.mark.parametrize("action, error, message", [row[1:] for row in API_ROWS], ids=[row[0] for row in API_ROWS])
def test_hostile_input_to_the_api_is_one_clear_error_and_writes_nothing(url, action, error, message):
    async def attempt():
        db = Database(url)
        await db.start()
        try:
            with pytest.raises(error) as refused:
                await action(db)
            posts = [(post.status, post.url) for post in await db.history("posts")]
        finally:
            await db.close()
        return str(refused.value), posts

    before = asyncio.run(counts(url))
    said, posts = asyncio.run(attempt())
    assert message in said and "\n" not in said
    assert asyncio.run(counts(url)) == before
    assert posts == [("unknown", None), ("failed", None), ("posted", POSTED_URL)]


# -- the command line -----------------------------------------------------------------------------------------

CLI_ROWS = [
    (["db", "settle-post", "99999999999999999999999", "posted"], 1,
     "proverbot: error: There is no post #99999999999999999999… in the log."),
    (["db", "settle-post", "9223372036854775807", "posted"], 1,
     "proverbot: error: There is no post #9223372036854775807 in the log."),
    (["db", "settle-post", "0", "posted"], 1, "proverbot: error: There is no post #0 in the log."),
    (["db", "settle-post", "-3", "failed"], 1, "proverbot: error: There is no post #-3 in the log."),
    (["db", "settle-post", "one", "failed"], 2, "argument ID: not a whole number: 'one'"),
    (["db", "settle-post", "7", "posted", "--url", "https://x.test/7"], 1,
     "proverbot: error: There is no post #7 in the log."),
    (["db", "settle-post", str(POSTED), "posted", "--url", "https://evil.example/x"], 1,
     f"proverbot: error: Post #{POSTED} on x is already posted ({POSTED_URL}): that is final"),
    (["db", "settle-post", str(POSTED), "failed"], 1, f"Post #{POSTED} on x is already posted ({POSTED_URL})"),
    (["db", "settle-post", str(FAILED), "failed"], 1, f"Post #{FAILED} on x is already recorded as failed"),
    (["post", "--candidate", str(BLOCKED)], 1,
     f"proverbot: error: Candidate #{BLOCKED} was filtered out (blocked word) and cannot be posted."),
    (["post", "--candidate", str(EMPTY)], 1,
     f"proverbot: error: Candidate #{EMPTY} is empty: there is nothing to post."),
    (["post", "--candidate", "99999999999999999999999"], 1,
     "proverbot: error: There is no candidate #99999999999999999999… in the log."),
    (["post", "--candidate", "2147483648"], 1, "proverbot: error: There is no candidate #2147483648 in the log."),
    (["post", "--text", "long " * 100], 1, "proverbot: error: The text is 500 long by X's count"),
    (["history", "--limit", "1" + "0" * 40], 2, "argument --limit: must be at most 9223372036854775807"),
]


@pytest.mark.parametrize("argv, code, message", CLI_ROWS, ids=[" ".join(row[0])[:60] for row in CLI_ROWS])
def test_hostile_input_on_the_command_line_is_one_clear_line_and_writes_nothing(url, capsys, argv, code, message):
    before = asyncio.run(counts(url))
    try:
        got = main(argv)
    except SystemExit as parse_error:        # argparse: its usage line, then the error
        got = parse_error.code
    out, err = capsys.readouterr()
    assert got == code and out == "" and "Traceback" not in err
    lines = err.splitlines()
    assert message in lines[-1] and (code == 2 or len(lines) == 1)
    assert asyncio.run(counts(url)) == before


def test_a_settle_by_hand_is_audited_with_what_changed(url, capsys):
    assert main(["db", "settle-post", str(UNKNOWN), "posted", "--url", "https://x.test/3", "--by", "ada"]) == 0
    assert main(["db", "settle-post", str(FAILED), "posted", "--remote-id", "42", "--by", "ada"]) == 0
    assert capsys.readouterr().out == f"Post #{UNKNOWN} on x is now posted.\nPost #{FAILED} on x is now posted.\n"
    assert main(["history", "--kind", "audit", "--csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [(r["actor_name"], r["target"], r["detail"]) for r in rows] == [
        ("ada", f"post #{FAILED}", "status failed → posted; remote id none → 42"),
        ("ada", f"post #{UNKNOWN}", "status unknown → posted; url none → https://x.test/3")]


# -- CSV export (#9) ------------------------------------------------------------------------------------------

FORMULAS = [  # (text a user or the model put in the log, the cell a spreadsheet gets)
    ('=HYPERLINK("http://evil.example","x")', '\'=HYPERLINK("http://evil.example","x")'),
    ("+cmd|' /C calc'!A0", "'+cmd|' /C calc'!A0"),
    ("-2+3+cmd|' /C calc'!A0", "'-2+3+cmd|' /C calc'!A0"),
    ("@SUM(1+1)*cmd|' /C calc'!A0", "'@SUM(1+1)*cmd|' /C calc'!A0"),
    ("\t=1+1", "'\t=1+1"),
    ("\r=1+1", "'\r=1+1"),
    ("\n=1+1", "'\n=1+1"),
    ("a;=1+1", "a;=1+1"),       # quoted as one cell: a ; never starts a cell of its own
    ("1+1=2", "1+1=2"),         # not at the start: plain text
]


@pytest.mark.parametrize("text, cell", FORMULAS, ids=[repr(text)[:30] for text, _ in FORMULAS])
def test_csv_cells_a_spreadsheet_would_run_start_with_a_quote(url, capsys, text, cell):
    async def add():
        db = Database(url)
        await db.start()
        await db.record_audit("note", None, "ada", "post #1", text)
        await db.close()
    asyncio.run(add())
    assert main(["history", "--kind", "audit", "--csv"]) == 0
    out = capsys.readouterr().out
    [row] = list(csv.DictReader(io.StringIO(out, newline="")))
    assert row["detail"] == cell
    assert out.startswith('"id","at","actor_id"') and ('"post #1","' + cell.replace('"', '""') + '"') in out  # quoted
    assert main(["history", "--kind", "audit", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["detail"] == text   # JSON stays exact


def test_csv_keeps_negative_numbers_numbers_and_escapes_every_text_field(url, capsys):
    assert main(["history", "--csv"]) == 0
    [row] = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert (row["seed"], row["user_name"], row["prefix"]) == ("-1", "'=cmd|' /C calc'!A0", "'@SUM(1)")
