"""Several processes on one SQLite log: no lost write, no "database is locked", and SIGKILL at any moment leaves a
consistent database whose interrupted post waits for a human.

The writers are tests/fixtures/storage/writer.py, started as real processes.
"""

import asyncio
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from storage import Database, PostInProgress

WRITER = Path(__file__).resolve().parent / "fixtures" / "storage" / "writer.py"

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL")


def start_writer(url: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(WRITER), url, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


async def new_log(path: Path) -> str:
    url = f"sqlite+aiosqlite:///{path}"
    db = Database(url)
    await db.start()
    await db.close()
    return url


async def test_processes_and_tasks_writing_at_once_lose_nothing(tmp_path):
    url = await new_log(tmp_path / "log.db")
    writers = [start_writer(url, "churn", f"p{n}", "8") for n in range(3)]
    db = Database(url)
    await db.start(recover=False)
    try:
        gid = await db.record_generation("discord", channel_id="main")
        gen = await db.finish_generation(gid, ["a", "b"])
        blocker = sqlite3.connect(tmp_path / "log.db", isolation_level=None, timeout=30)
        blocker.execute("BEGIN IMMEDIATE")  # a CLI holding the write lock for a while
        blocker.execute("INSERT INTO audit_log (at, action, target, detail) VALUES ('2024-01-01', 'x', '', '')")
        held = asyncio.create_task(asyncio.sleep(1.0))
        votes = asyncio.gather(*(db.record_vote(gen.candidates[i % 2].id, f"main-{i}", "👍") for i in range(20)))
        await held
        blocker.execute("COMMIT")
        blocker.close()
        await votes
        outcomes = [(w.wait(timeout=120), w.stdout.read(), w.stderr.read()) for w in writers]
        for code, out, err in outcomes:
            assert (code, err) == (0, ""), err
            assert out.split()[-1] == "7"
        assert sum(row.votes for row in await db.tally(gid)) == 20
    finally:
        await db.close()
        for w in writers:
            w.kill()
    with sqlite3.connect(tmp_path / "log.db") as check:
        assert check.execute("SELECT count(*) FROM generations WHERE status = 'ok'").fetchone() == (3 * 8 + 1,)
        assert check.execute("SELECT count(*) FROM candidates").fetchone() == (3 * 8 * 3 + 2,)
        assert check.execute("SELECT count(*) FROM votes").fetchone() == (3 * 8 * 3 + 20,)
        assert check.execute("SELECT count(*) FROM posts WHERE status = 'posted'").fetchone() == (3 * 8,)
    check.close()


async def test_sigkill_at_any_moment_leaves_a_consistent_log_and_an_unknown_post(tmp_path):
    path = tmp_path / "log.db"
    url = await new_log(path)
    churners = [start_writer(url, "churn", f"k{n}", "0") for n in range(2)]
    poster = start_writer(url, "post", "the text being published")
    try:
        assert poster.stdout.readline().startswith("begun "), poster.stderr.read()
        for churner in churners:  # let them get going, then kill them mid-flight
            for _ in range(3):
                assert churner.stdout.readline(), churner.stderr.read()
        await asyncio.sleep(0.15)
        for process in (*churners, poster):
            process.send_signal(signal.SIGKILL)
        for process in (*churners, poster):
            assert process.wait(timeout=30) == -signal.SIGKILL
    finally:
        for process in (*churners, poster):
            process.kill()

    check = sqlite3.connect(path)
    try:
        assert check.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        rows = check.execute("SELECT g.status, g.count, count(c.id) FROM generations g "
                             "LEFT JOIN candidates c ON c.generation_id = g.id GROUP BY g.id").fetchall()
        pending = check.execute("SELECT platform FROM posts WHERE status = 'pending'").fetchall()
    finally:
        check.close()
    assert len(rows) >= 6
    assert all((status == "ok" and n == count) or (status == "pending" and n == 0) for status, count, n in rows), rows

    assert ("x",) in pending  # the post the killed process had begun (churners may have had one in flight too)
    db = Database(url)
    assert await db.start() == len(pending)
    try:
        [post] = [p for p in await db.history("posts", limit=1000) if p.platform == "x"]
        assert post.status == "unknown"
        with pytest.raises(PostInProgress, match="unknown outcome") as err:
            await db.begin_post("x", text="the text being published")
        assert err.value.status == "unknown"
        statuses = [p.status for p in await db.history("posts", limit=1000) if p.platform == "dryrun"]
        assert statuses.count("unknown") == len(pending) - 1 and set(statuses) <= {"posted", "unknown"}
    finally:
        await db.close()
