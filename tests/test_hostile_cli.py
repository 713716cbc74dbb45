"""Hostile and mistaken command lines, table-driven: add a row for each new finding.

A row is an argv (in a fresh working folder with its own log), what was there before (`given`), the exit status and
the line that answers: for a failure (1) the one line on stderr; for a bad command line (2) a line after argparse's
usage; for a skip (3, 4) the last line on stdout, with nothing on stderr (cron mails stderr); for success (0) a line
on stdout. A refused command writes nothing: no file in the working folder, no post in the log or on the platform,
and no generation unless the row says it sampled (a tweet samples before it posts).
"""

import sqlite3
from contextlib import ExitStack
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

import pytest

from chatbot.cli import main
from tests.conftest import PROVERBS
from tests.fakes.loopback import guard_network
from tests.fakes.mastodon_api import FakeMastodon
from tests.test_publish_mastodon import TOKEN
from tests.test_publish_x import ENV as X_ENV

LOG = "log.db"          # in the working folder
CHECKPOINTS = "{checkpoints}"       # in an argv: the session's trained tiny run's folder
MB = 2**20


@dataclass
class Given:
    """What a row starts from, set up the way a user would have: settings in the environment, commands run."""

    monkeypatch: pytest.MonkeyPatch
    folder: Path
    stack: ExitStack
    mastodon: FakeMastodon | None = None

    def mastodon_with_a_quota_of(self, posts_per_day: int) -> None:
        self.mastodon = self.stack.enter_context(FakeMastodon(TOKEN))
        self.monkeypatch.setenv("PROVERBOT_MASTODON_API_BASE_URL", self.mastodon.url)
        self.monkeypatch.setenv("PROVERBOT_MASTODON_ACCESS_TOKEN", TOKEN)
        self.monkeypatch.setenv("PROVERBOT_MASTODON_POSTS_PER_DAY", str(posts_per_day))

    def posted(self, text: str) -> None:
        assert main(["post", "--text", text]) == 0


def quota_used_up(given: Given) -> None:
    given.mastodon_with_a_quota_of(1)
    given.posted("The only post today.")


def posted_before(given: Given) -> None:
    given.mastodon_with_a_quota_of(0)
    given.posted("A soft answer turneth away wrath.")


def nothing_fits(given: Given) -> None:
    """Every sample is over the length limit: the filter leaves no usable candidate."""
    given.monkeypatch.setenv("PROVERBOT_MAX_TWEET_LENGTH", "1")


def a_corpus_over_the_cap(given: Given) -> None:
    (given.folder / "big.txt").write_text(("a proverb\n==========\n" * (MB // 21 + 1)), encoding="utf-8")
    given.monkeypatch.setenv("PROVERBOT_MAX_CORPUS_MB", "1")


def a_first_start_on_a_corpus_over_the_cap(given: Given) -> None:
    a_corpus_over_the_cap(given)
    given.monkeypatch.setenv("PROVERBOT_CORPUS", "big.txt")
    given.monkeypatch.setenv("PROVERBOT_CHECKPOINT_DIR", "ck")


def a_run_without_metrics(given: Given) -> None:
    """A run folder from before metrics.csv (its files as find_run sees them)."""
    folder = given.folder / "ck" / "old"
    folder.mkdir(parents=True)
    (folder / "proverbot.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(b"")


@dataclass(frozen=True)
class Row:
    name: str
    argv: tuple[str, ...]
    code: int
    line: str                   # the answering line starts with this
    given: object = None        # a function of Given
    samples: bool = False       # it logs a generation before it refuses (tweet)

    def __str__(self) -> str:
        return self.name


TRAIN = ("train", "--corpus", str(PROVERBS), "--checkpoint-dir", "ck")
GENERATE = ("generate", "--checkpoint-dir", CHECKPOINTS, "--count", "1", "--length", "8")
TWEET = ("tweet", "--checkpoint-dir", CHECKPOINTS, "--count", "1", "--length", "8", "--seed", "1")
CAPPED = "big.txt is 1.0 MB; the largest corpus read is 1.0 MB (setting max_corpus_mb)."

ROWS = [
    # no command, a mistyped one, the version, -v after the command
    Row("bare", (), 2, "usage: proverbot [-h] [-v] [--version] COMMAND ..."),
    Row("unknown command", ("tweeet",), 2, "proverbot: error: argument COMMAND: invalid choice: 'tweeet'"),
    Row("unknown corpus command", ("corpus", "count"), 2, "proverbot corpus: error: argument COMMAND: invalid choice"),
    Row("db without its command", ("db",), 2, "proverbot db: error: the following arguments are required: COMMAND"),
    Row("version", ("--version",), 0, f"proverbot {version('proverbot')}"),
    Row("-v after the command", ("config", "-v"), 0, "checkpoint_dir = checkpoints  (default)"),
    Row("-vv after a nested command", ("db", "check", "-vv"), 1, "proverbot: error: There is no log at "),
    # training options
    Row("--steps not a number", (*TRAIN, "--steps", "many"), 2,
        "proverbot train: error: argument --steps: invalid int value: 'many'"),
    Row("--steps 0", (*TRAIN, "--steps", "0"), 1, "proverbot: error: Bad training options: steps must be at least 1, "
        "or -1 (until Ctrl-C, epochs or patience) (got 0)."),
    Row("--steps -5", (*TRAIN, "--steps", "-5"), 1, "proverbot: error: Bad training options: steps must be at least "
        "1, or -1 (until Ctrl-C, epochs or patience) (got -5)."),
    Row("train --dtype garbage", (*TRAIN, "--dtype", "fp8"), 2,
        "proverbot train: error: argument --dtype: invalid choice: 'fp8'"),
    Row("--max-corpus-mb 0", (*TRAIN, "--max-corpus-mb", "0"), 2,
        "proverbot train: error: argument --max-corpus-mb: must be at least 1, got 0"),
    Row("train over the setting's cap", ("train", "--corpus", "big.txt", "--checkpoint-dir", "ck"), 1,
        f"proverbot: error: {CAPPED}", a_corpus_over_the_cap),
    Row("run's first training over the setting's cap", ("run",), 1, f"proverbot: error: {CAPPED}",
        a_first_start_on_a_corpus_over_the_cap),
    Row("corpus stats over the setting's cap", ("corpus", "stats", "big.txt"), 1, f"proverbot: error: {CAPPED}",
        a_corpus_over_the_cap),
    Row("--warmup-steps -1", (*TRAIN, "--warmup-steps", "-1"), 1, "proverbot: error: Bad training options: "
        "warmup_steps must be 0 (off) or more (got -1)."),
    Row("a warm-up as long as the run", (*TRAIN, "--steps", "10", "--warmup-steps", "10"), 1,
        "proverbot: error: Bad training options: warmup_steps must be below steps (got 10 and 10)."),
    Row("--lr-schedule cosine without an end", (*TRAIN, "--lr-schedule", "cosine", "--steps", "-1"), 1,
        "proverbot: error: Bad training options: lr_schedule cosine decays to 0 at the last step, so it needs steps "
        "or epochs (got steps -1)."),
    Row("--lr-schedule unknown", (*TRAIN, "--lr-schedule", "step"), 2,
        "proverbot train: error: argument --lr-schedule: invalid choice: 'step'"),
    # loss curves: refused before anything is drawn
    Row("plot with no run", ("plot", "--checkpoint-dir", "ck"), 1, "proverbot: error: No trained model in ck/ yet"),
    Row("plot of a run without metrics.csv", ("plot", "old", "--checkpoint-dir", "ck"), 1,
        "proverbot: error: ck/old has no metrics.csv: runs trained before proverbot recorded one, and imported runs, "
        "have none", a_run_without_metrics),
    Row("plot into a missing folder", ("plot", "--checkpoint-dir", CHECKPOINTS, "--output", "no/curves.png"), 1,
        "proverbot: error: --output no/curves.png: the folder no does not exist; create it first."),
    Row("plot as a text file", ("plot", "--checkpoint-dir", CHECKPOINTS, "--output", "curves.txt"), 1,
        "proverbot: error: --output curves.txt: name a .png, .svg or .pdf file"),
    Row("plot into a folder nobody may write", ("plot", "--checkpoint-dir", CHECKPOINTS, "--output", "/sys/c.png"), 1,
        "proverbot: error: --output /sys/c.png: cannot write in the folder /sys ("),
    # sampling options and the destination: refused before anything is sampled or logged
    Row("generate --dtype garbage", (*GENERATE, "--dtype", "float64"), 2,
        "proverbot generate: error: argument --dtype: invalid choice: 'float64'"),
    Row("--count 0", (*GENERATE, "--count", "0"), 2, "proverbot generate: error: argument --count: must be at least "
        "1, got 0"),
    Row("--temperature not a number", (*GENERATE, "--temperature", "hot"), 2,
        "proverbot generate: error: argument --temperature: invalid float value: 'hot'"),
    Row("destination in a missing folder", (*GENERATE, "--destination-path", "missing/out.txt"), 1,
        "proverbot: error: --destination-path missing/out.txt: the folder missing does not exist; create it first."),
    Row("raw samples into a missing folder", (*GENERATE, "--nsamples", "2", "--destination-path", "no/such/out.txt"),
        1, "proverbot: error: --destination-path no/such/out.txt: the folder no/such does not exist; create it first."),
    Row("destination is a folder", (*GENERATE, "--destination-path", "."), 1,
        "proverbot: error: --destination-path . is a folder; name a file in it, e.g. samples.txt."),
    Row("destination in a folder nobody may write", (*GENERATE, "--destination-path", "/sys/out.txt"), 1,
        "proverbot: error: --destination-path /sys/out.txt: cannot write in the folder /sys ("),
    # tweet and post: a skip is 3 or 4, on stdout; a failure 1
    Row("post over the quota", ("post", "--text", "One too many."), 3, "proverbot: skipped: The posting quota on "
        "mastodon is used up: 1 posts in the last 24 hours, at most 1.", quota_used_up),
    Row("tweet over the quota: skipped before sampling", TWEET, 3, "proverbot: skipped: The posting quota on "
        "mastodon is used up: 1 posts in the last 24 hours, at most 1.", quota_used_up),
    Row("post a text posted before", ("post", "--text", "a SOFT answer  turneth away wrath."), 4,
        "proverbot: skipped: That text was already posted on mastodon", posted_before),
    Row("tweet with no usable candidate", TWEET, 4, "proverbot: skipped: Nothing to post from generation #1: the "
        "model gave no usable candidate", nothing_fits, samples=True),
    Row("post a candidate not in the log", ("post", "--candidate", "99"), 1,
        "proverbot: error: There is no candidate #99 in the log.", posted_before),
    Row("post an empty text", ("post", "--text", "  "), 1, "proverbot: error: The text is empty", posted_before),
    Row("post --candidate not a number", ("post", "--candidate", "1e3"), 2,
        "proverbot post: error: argument --candidate: not a whole number: '1e3'"),
]


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch, tmp_path):
    """No credentials or settings from the machine running the tests, no traffic beyond 127.0.0.1, a fresh working
    folder holding the log."""
    for name in [*X_ENV, *(f"PROVERBOT_{name}" for name in X_ENV), "PROVERBOT_CONFIG", "PROVERBOT_ENV_FILE"]:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PROVERBOT_DATABASE_URL", f"sqlite+aiosqlite:///{LOG}")
    monkeypatch.chdir(tmp_path)
    guard_network(monkeypatch)


def written(folder: Path, mastodon: FakeMastodon | None) -> dict:
    """What a command may have written: the working folder's files (the log aside), the log's posts and
    generations, the posts the platform got."""
    files = sorted(str(path.relative_to(folder)) for path in folder.rglob("*") if not path.name.startswith(LOG))
    rows = {"posts": 0, "generations": 0}
    if (folder / LOG).exists():
        with sqlite3.connect(folder / LOG) as db:
            rows = {table: db.execute(f"SELECT count(*) FROM {table}").fetchone()[0] for table in rows}
    return {"files": files, **rows, "sent": mastodon.texts() if mastodon else []}


@pytest.mark.parametrize("row", ROWS, ids=str)
def test_a_command_line(request, monkeypatch, capsys, tmp_path, row):
    argv = list(row.argv)
    if CHECKPOINTS in argv:
        argv[argv.index(CHECKPOINTS)] = str(request.getfixturevalue("trained_run").parent)
    with ExitStack() as stack:
        given = Given(monkeypatch, tmp_path, stack)
        if row.given:
            row.given(given)
        capsys.readouterr()
        before = written(tmp_path, given.mastodon)
        code = main(argv)
        out, err = capsys.readouterr()
        after = written(tmp_path, given.mastodon)
    assert "Traceback" not in out + err
    assert code == row.code, out + err
    if code == 0:
        answer = out.splitlines()[0]
        assert err == ""
    elif code == 1:
        [answer] = err.splitlines()
    elif code == 2:
        assert err.startswith("usage: proverbot") and out == "", err
        answer = next(line for line in err.splitlines() if line.startswith(row.line[:20]))
    else:
        assert err == "", err
        answer = out.splitlines()[-1]
    assert answer.startswith(row.line), answer
    if code:
        expected = {**before, "generations": before["generations"] + row.samples}
        assert after == expected
