"""How fast the log records votes with several writers on one SQLite file (a script, not a test).

    .venv/bin/python bench/storage.py [--writers 4] [--seconds 5] [--db PATH]

Each writer is its own process with its own Database (engine, connection pool), as the bot, the scheduler and a
CLI command would be. After a shared start signal every writer records votes (each a new (candidate, user, emoji),
one short write transaction: BEGIN IMMEDIATE, INSERT, SELECT, COMMIT) for --seconds, timing each call.
Prints votes_per_s= (all writers together) and vote_p99_ms= (99th percentile of one record_vote), plus the
median and the worst; a "database is locked" or any other error fails the run.
"""

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))     # before this folder, which holds storage.py (this file) too

from storage import Database  # noqa: E402 (only after the line above: `storage` would be this file)


async def prepare(url: str, writers: int) -> list[int]:
    db = Database(url)
    await db.start()
    gid = await db.record_generation("bench", channel_id="bench")
    gen = await db.finish_generation(gid, [f"candidate {i}" for i in range(writers * 2)])
    await db.close()
    return [c.id for c in gen.candidates]


async def write_votes(url: str, writer: int, candidates: list[int], start_at: float, seconds: float) -> list[float]:
    db = Database(url)
    await db.start(recover=False)
    await db.record_vote(candidates[0], f"warm-{writer}", "👀")  # open the pool's first connection
    latencies = []
    await asyncio.sleep(max(0.0, start_at - time.time()))
    end = time.perf_counter() + seconds
    i = 0
    while time.perf_counter() < end:
        begin = time.perf_counter()
        await db.record_vote(candidates[i % len(candidates)], f"w{writer}-u{i}", "👍", user_name=f"user {i}")
        latencies.append(time.perf_counter() - begin)
        i += 1
    await db.close()
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--writers", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--db", type=Path, help="SQLite file (default: a new one in a temporary folder)")
    parser.add_argument("--worker", nargs=4, metavar=("URL", "N", "CANDIDATES", "START_AT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        url, n, candidates, start_at = args.worker
        ids = [int(x) for x in candidates.split(",")]
        print(json.dumps(asyncio.run(write_votes(url, int(n), ids, float(start_at), args.seconds))))
        return

    folder = tempfile.mkdtemp(prefix="proverbot-bench-")
    path = args.db or Path(folder) / "bench.db"
    url = f"sqlite+aiosqlite:///{path}"
    ids = asyncio.run(prepare(url, args.writers))
    start_at = time.time() + 3.0  # time for every process to import and connect
    workers = [subprocess.Popen([sys.executable, __file__, "--seconds", str(args.seconds), "--worker", url, str(n),
                                 ",".join(map(str, ids)), str(start_at)], stdout=subprocess.PIPE, text=True)
               for n in range(args.writers)]
    results = []
    for worker in workers:
        out, _ = worker.communicate()
        if worker.returncode:
            raise SystemExit(f"a writer failed (exit {worker.returncode}); see its error above")
        results.append(json.loads(out))
    latencies = sorted(x for result in results for x in result)
    p99 = latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))]
    print(f"writers={args.writers} seconds={args.seconds:g} file={path} cpus={os.cpu_count()} "
          f"load_avg_1m={os.getloadavg()[0]:.2f}")
    print(f"votes={len(latencies)} per_writer={[len(r) for r in results]}")
    print(f"votes_per_s={len(latencies) / args.seconds:.0f}")
    print(f"vote_p50_ms={statistics.median(latencies) * 1000:.1f}")
    print(f"vote_p99_ms={p99 * 1000:.1f}")
    print(f"vote_max_ms={latencies[-1] * 1000:.1f}")
    if not args.db:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
