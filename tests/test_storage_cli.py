"""`proverbot history` and `proverbot db ...` through the real CLI entry point, on SQLite files in tmp dirs."""

import asyncio
import csv
import io
import json
import shutil
import sqlite3
from pathlib import Path

import pytest

from chatbot.cli import main
from storage import Database

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "storage" / "v0001.sqlite"


@pytest.fixture
def log(tmp_path, monkeypatch) -> Path:
    """The path of the log the CLI will use (not created yet)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PROVERBOT_CONFIG", raising=False)
    path = tmp_path / "proverbot.db"
    monkeypatch.setenv("PROVERBOT_DATABASE_URL", f"sqlite+aiosqlite:///{path}")
    return path


def fill(path: Path, pending_post: bool = False) -> None:
    async def work():
        db = Database(f"sqlite+aiosqlite:///{path}")
        await db.start()
        gid = await db.record_generation("discord", channel_id="c1", user_name="Ada", temperature=0.8, count=2)
        gen = await db.finish_generation(gid, ["thou shalt, \"quoted\"\nand wrapped", "second 🦉"], samples=2)
        await db.record_vote(gen.candidates[0].id, "u2", "👍", user_name="Bob")
        post = await db.begin_post("x", candidate_id=gen.candidates[0].id, requested_by_name="Ada")
        if not pending_post:
            await db.settle_post(post.id, "posted", url="https://x.com/p/1")
        await db.close()
    asyncio.run(work())


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_history_prints_a_table_by_default(log, capsys):
    assert run(capsys, "history") == (0, "No generations in the log yet.\n", "")
    fill(log)
    code, out, err = run(capsys, "history")
    lines = out.splitlines()
    assert code == 0 and err == ""
    assert lines[0].split()[:6] == ["id", "created_at", "platform", "channel_id", "user_name", "status"]
    assert lines[1].split()[0] == "1" and "discord" in lines[1] and "Ada" in lines[1] and "ok" in lines[1]
    code, out, _ = run(capsys, "history", "--kind", "candidates", "--limit", "1")
    assert code == 0 and len(out.splitlines()) == 2 and "second 🦉" in out
    code, out, _ = run(capsys, "history", "--kind", "posts")
    assert "posted" in out and "https://x.com/p/1" in out


def test_history_exports_json_and_csv_with_every_field(log, capsys):
    fill(log)
    code, out, _ = run(capsys, "history", "--kind", "candidates", "--json")
    rows = json.loads(out)
    assert code == 0 and [r["text"] for r in rows] == ["second 🦉", "thou shalt, \"quoted\"\nand wrapped"]
    assert set(rows[0]) == {"id", "generation_id", "position", "text", "tokens", "chars", "usable", "reason", "detail",
                            "message_id", "vetoed_at", "vetoed_by_id", "vetoed_by_name"}
    code, out, _ = run(capsys, "history", "--kind", "votes", "--json")
    [vote] = json.loads(out)
    assert (vote["user_name"], vote["emoji"], vote["removed_at"]) == ("Bob", "👍", None)
    assert vote["voted_at"].endswith("+00:00")
    code, out, _ = run(capsys, "history", "--csv")
    [row] = list(csv.DictReader(io.StringIO(out)))
    assert code == 0
    assert (row["platform"], row["status"], row["temperature"], row["seed"]) == ("discord", "ok", "0.8", "")
    code, out, _ = run(capsys, "history", "--kind", "candidates", "--csv")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [(r["text"], r["usable"]) for r in rows][1] == ("thou shalt, \"quoted\"\nand wrapped", "true")


def test_db_upgrade_creates_then_upgrades_an_old_log(log, capsys):
    code, out, _ = run(capsys, "db", "upgrade")
    assert code == 0 and "at schema 0005 (was empty: created)" in out
    assert run(capsys, "db", "upgrade")[1].endswith("is up to date (schema 0005).\n")
    log.unlink()
    shutil.copy(FIXTURE, log)
    code, out, _ = run(capsys, "db", "upgrade")
    assert code == 0 and "at schema 0005 (was 0001)" in out


def test_db_check_reports_and_fails_when_something_needs_doing(log, capsys):
    fill(log)
    code, out, _ = run(capsys, "db", "check")
    assert code == 0 and "integrity: ok" in out and "schema:    0005" in out and "candidates 2" in out
    assert "problem" not in out
    log.unlink()
    shutil.copy(FIXTURE, log)
    code, out, _ = run(capsys, "db", "check")
    assert code == 1 and "schema:    0001 (this proverbot: 0005)" in out and "proverbot db upgrade" in out


def test_db_backup_and_its_refusals(log, capsys, tmp_path):
    fill(log)
    code, out, _ = run(capsys, "db", "backup", "copy.db")
    assert code == 0 and "Backed up" in out and (tmp_path / "copy.db").is_file()
    with sqlite3.connect(tmp_path / "copy.db") as copy:
        assert copy.execute("SELECT count(*) FROM candidates").fetchone() == (2,)
    copy.close()
    code, out, err = run(capsys, "db", "backup", "copy.db")
    assert code == 1 and err.count("\n") == 1 and err.startswith("proverbot: error:") and "already exists" in err


def test_settle_post_resolves_an_unknown_post_and_audits_it(log, capsys):
    fill(log, pending_post=True)

    async def restart():  # the bot's start marks the interrupted post unknown
        db = Database(f"sqlite+aiosqlite:///{log}")
        assert await db.start() == 1
        await db.close()
    asyncio.run(restart())
    code, out, _ = run(capsys, "db", "settle-post", "1", "posted", "--url", "https://x.com/p/9", "--by", "ada")
    assert (code, out) == (0, "Post #1 on x is now posted.\n")
    code, out, _ = run(capsys, "history", "--kind", "audit", "--json")
    [entry] = json.loads(out)
    assert (entry["action"], entry["actor_name"], entry["target"]) == ("post.settle", "ada", "post #1")
    assert "https://x.com/p/9" in entry["detail"]
    code, _, err = run(capsys, "db", "settle-post", "7", "failed")
    assert code == 1 and "no post #7" in err


@pytest.mark.parametrize("setup, message", [
    (lambda log, mp: mp.setenv("PROVERBOT_DATABASE_URL", "mysql+aiomysql://u:secret@localhost/db"),
     "pip install 'aiomysql'"),
    (lambda log, mp: mp.setenv("PROVERBOT_DATABASE_URL", "::not a url::"), "not a database URL"),
    (lambda log, mp: log.write_bytes(b"\x00garbage" * 100), "not a SQLite database"),
    (lambda log, mp: None, "no log at"),  # `db check` does not create one
])
def test_errors_are_one_line_never_a_traceback(log, capsys, monkeypatch, setup, message):
    setup(log, monkeypatch)
    argv = ["db", "check"] if message == "no log at" else ["history"]
    code, out, err = run(capsys, *argv)
    assert code == 1 and out == ""
    assert err.count("\n") == 1 and err.startswith("proverbot: error:") and message in err
    assert "Traceback" not in err and "secret" not in err


def test_history_lists_moderators_actions_and_the_blocklist(log, capsys):
    async def moderate():
        db = Database(f"sqlite+aiosqlite:///{log}")
        await db.start()
        await db.veto(2, by_id="u9", by_name="Mod")
        await db.block_word("Crème", "creme", by_id="u9", by_name="Mod")
        await db.block_word("heck", "heck", by_id="u9", by_name="Mod")
        assert await db.unblock_word("heck", by_id="u9", by_name="Mod") == "heck"
        await db.close()

    fill(log)
    asyncio.run(moderate())
    code, out, _ = run(capsys, "history", "--kind", "moderation", "--json")
    assert code == 0 and [(e["action"], e["actor_name"], e["target"], e["detail"]) for e in json.loads(out)] == [
        ("blocklist.remove", "Mod", "blocklist", "heck"), ("blocklist.add", "Mod", "blocklist", "heck"),
        ("blocklist.add", "Mod", "blocklist", "Crème"), ("candidate.veto", "Mod", "candidate #2", "second 🦉")]
    code, out, _ = run(capsys, "history", "--kind", "blocklist")
    lines = out.splitlines()
    assert code == 0 and lines[0].split() == ["id", "added_at", "added_by_name", "word"]
    assert len(lines) == 2 and lines[1].split()[-2:] == ["Mod", "Crème"]
    code, out, _ = run(capsys, "history", "--kind", "candidates")
    assert "vetoed_by_name" in out.splitlines()[0] and "Mod" in out.splitlines()[1]


def test_the_cli_lists_every_kind_of_history():
    from chatbot import storage_cli
    from storage.history import KINDS

    assert storage_cli.KINDS == tuple(KINDS) == tuple(storage_cli.COLUMNS)
