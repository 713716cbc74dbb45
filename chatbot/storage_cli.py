"""`proverbot history` and `proverbot db ...`: the log from the command line (storage/ does the work).

proverbot history [--kind generations|candidates|votes|posts|audit|blocklist|moderation] [--limit N] [--platform P]
                  [--json | --csv]      (moderation: the audit's moderators' actions: vetoes, blocklist, unposts)
proverbot db upgrade                  create the log or bring its schema up to date
proverbot db check                    integrity, schema revision, row counts; exit status 1 when something needs doing
proverbot db backup DEST              a consistent copy of a SQLite log, safe while the bot runs
proverbot db settle-post ID STATUS    record what a person found on the platform for a post whose outcome is unknown
                                      (or pending, or failed but found online); a posted post is final; audited

`history --csv` writes every cell quoted, and text that a spreadsheet would run as a formula (OWASP, CSV Injection:
starting with = + - @ tab CR LF) with a leading ', e.g. '=HYPERLINK(...); numbers stay numbers, negative ones too
(they are the log's own numeric fields, never text someone typed). --json is always exact.

The database is settings' database_url (PROVERBOT_DATABASE_URL / proverbot.toml). None of these commands marks the
running bot's pending posts as unknown: only the bot's own start-up does that.
"""

import asyncio
import csv
import getpass
import json
import shutil
import sys
from dataclasses import asdict, fields
from datetime import datetime

from chatbot.arguments import log_id, positive_int
from chatbot.config import load_settings

# storage (SQLAlchemy, Alembic) is imported by the commands that use it: other commands start no slower.
KINDS = ("generations", "candidates", "votes", "posts", "audit", "blocklist", "moderation")  # storage.history.KINDS


def add_commands(commands) -> None:
    """Register `history` and `db` on the CLI's subparsers."""
    history = commands.add_parser("history", help="recent generations, candidates, votes, posts, admin actions or "
                                  "the blocklist",
                                  description="List the newest entries of the log: a table, or JSON/CSV to stdout.")
    history.add_argument("--kind", choices=list(KINDS), default="generations",
                         help="what to list (default: %(default)s)")
    history.add_argument("--limit", type=positive_int, default=20, help="how many, newest first (default: %(default)s)")
    history.add_argument("--platform", help="only this platform (discord, slack, x, ...)")
    output = history.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="a JSON array of objects, every field")
    output.add_argument("--csv", action="store_true", help="CSV with a header row, every field; text that a "
                        "spreadsheet would run as a formula (= + - @ ...) starts with '")
    history.set_defaults(func=cmd_history)

    db = commands.add_parser("db", help="the log database: upgrade, check, backup, settle a post",
                             description="The log is the database at settings' database_url.")
    db_commands = db.add_subparsers(title="db commands", metavar="COMMAND", required=True)
    db_commands.add_parser("upgrade", help="create the log or upgrade its schema").set_defaults(func=cmd_upgrade)
    db_commands.add_parser("check", help="integrity, schema revision and row counts").set_defaults(func=cmd_check)
    backup = db_commands.add_parser("backup", help="copy a SQLite log safely, even while the bot runs")
    backup.add_argument("dest", metavar="DEST", help="the new file (never overwritten)")
    backup.set_defaults(func=cmd_backup)
    settle = db_commands.add_parser(
        "settle-post", help="record the outcome of a post after checking the platform",
        description="Record what you found on the platform for a post whose outcome is unknown (the bot stopped "
                    "mid-post) or still pending: posted (it is online) or failed (it is not: a new try is allowed). "
                    "A failed post may also be settled as posted, when a call that failed (a timeout, say) left the "
                    "post online after all. A posted post is final and cannot be settled again. Every settle is "
                    "written to the audit trail with what changed (`history --kind audit`).")
    settle.add_argument("post_id", type=log_id, metavar="ID",
                        help="the post's number (see `history --kind posts`)")
    settle.add_argument("status", choices=["posted", "failed"],
                        help="posted: it is online; failed: it is not (retry allowed)")
    settle.add_argument("--url", help="the post's address, when posted")
    settle.add_argument("--remote-id", help="the platform's id of the post")
    settle.add_argument("--by", default=None, help="your name for the audit trail (default: your login)")
    settle.set_defaults(func=cmd_settle_post)


def login() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "cli"


def with_database(work, *, migrate: bool = True):
    """Run `await work(db)` on the started log, then close it. Never marks pending posts unknown."""
    from storage import Database

    async def main():
        db = Database(load_settings().database_url)
        await db.start(migrate=migrate, recover=False)
        try:
            return await work(db)
        finally:
            await db.close()
    return asyncio.run(main())


# -- history -----------------------------------------------------------------------------------------

COLUMNS = {  # the terminal table; --json and --csv carry every field. The last column takes the remaining width.
    "generations": ["id", "created_at", "platform", "channel_id", "user_name", "status", "run_name", "temperature",
                    "samples", "duration_s", "prefix"],
    "candidates": ["id", "generation_id", "position", "usable", "reason", "tokens", "message_id", "vetoed_by_name",
                   "text"],
    "votes": ["id", "candidate_id", "user_name", "user_id", "emoji", "voted_at", "removed_at"],
    "posts": ["id", "platform", "status", "attempts", "created_at", "requested_by_name", "url", "deleted_at",
              "deleted_by_name", "text"],
    "audit": ["id", "at", "actor_name", "action", "target", "detail"],
    "blocklist": ["id", "added_at", "added_by_name", "word"],
    "moderation": ["id", "at", "actor_name", "action", "target", "detail"],
}


def cmd_history(args) -> None:
    rows = with_database(lambda db: db.history(args.kind, limit=args.limit, platform=args.platform))
    records = [{k: v for k, v in asdict(row).items() if k != "candidates"} for row in rows]
    if args.json:
        json.dump(records, sys.stdout, default=lambda v: v.isoformat(), ensure_ascii=False, indent=2)
        print()
    elif args.csv:
        from storage.history import KINDS as RECORDS

        names = [f.name for f in fields(RECORDS[args.kind][1]) if f.name != "candidates"]
        writer = csv.DictWriter(sys.stdout, fieldnames=names, lineterminator="\n", quoting=csv.QUOTE_ALL)
        writer.writeheader()
        writer.writerows({k: csv_cell(v) for k, v in record.items()} for record in records)
    elif not records:
        print(f"No {args.kind} in the log yet.")
    else:
        print_table(COLUMNS[args.kind], [[cell(record[name]) for name in COLUMNS[args.kind]] for record in records])


def cell(value, iso: bool = False) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.isoformat() if iso else value.strftime("%Y-%m-%d %H:%M")
    if isinstance(value, bool):
        return ("true" if value else "false") if iso else ("yes" if value else "no")
    if isinstance(value, float):
        return f"{value:g}"
    return str(value) if iso else " ".join(str(value).split())


FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "\n")  # OWASP, CSV Injection: a spreadsheet may run such a cell


def csv_cell(value) -> str:
    """A CSV cell that a spreadsheet reads as it is: text starting like a formula gets a leading ', e.g.
    "=HYPERLINK(...)" -> "'=HYPERLINK(...)". Numbers are left alone, negative ones too: -1 is a number, not text.
    Every cell is also quoted (QUOTE_ALL), so a ; or , inside text never starts a cell of its own."""
    text = cell(value, iso=True)
    return "'" + text if isinstance(value, str) and text.startswith(FORMULA_START) else text


def print_table(headers: list[str], rows: list[list[str]]) -> None:
    width = shutil.get_terminal_size((120, 24)).columns
    sizes = [max(len(header), *(len(row[i]) for row in rows)) for i, header in enumerate(headers)]
    room = max(20, width - sum(size + 2 for size in sizes[:-1]))
    sizes[-1] = min(sizes[-1], room)
    for row in [headers, *rows]:
        cells = [value if len(value) <= size else value[:size - 1] + "…" for value, size in zip(row, sizes)]
        print("  ".join(value.ljust(size) for value, size in zip(cells, sizes)).rstrip())


# -- db ----------------------------------------------------------------------------------------------

def cmd_upgrade(args) -> None:
    async def work(db):
        return db.where, db.migrated

    where, (before, after) = with_database(work)
    if before == after:
        print(f"The log {where} is up to date (schema {after}).")
    else:
        print(f"The log {where} is at schema {after} (was {before or 'empty: created'}).")


def cmd_check(args) -> int:
    report = with_database(lambda db: db.check(), migrate=False)
    print(f"log:       {report.url}")
    print(f"schema:    {report.revision or 'none'} (this proverbot: {report.head})")
    print(f"integrity: {report.integrity}")
    print("rows:      " + ", ".join(f"{table} {n:,}" for table, n in report.counts.items()))
    for problem in report.problems:
        print(f"problem:   {problem}")
    return 0 if report.ok else 1


def cmd_backup(args) -> None:
    from storage import Database

    db = Database(load_settings().database_url)
    dest = asyncio.run(db.backup(args.dest))
    print(f"Backed up {db.where} to {dest} ({dest.stat().st_size / 1024:,.0f} KiB).")


def cmd_settle_post(args) -> None:
    post = with_database(lambda db: db.settle_post_by_hand(args.post_id, args.status, url=args.url,
                                                           remote_id=args.remote_id, by=args.by or login()))
    print(f"Post #{post.id} on {post.platform} is now {post.status}.")
