"""The dry-run publisher: posts nowhere, answers with a clearly fake URL. The default without credentials.

It checks the same length rule as X (or the limits it is given), so a dry run rehearses the real thing.
"""

import secrets

from chatbot.publishers import Limits, PublishResult
from chatbot.publishers.lengths import x_limits


class DryRunPublisher:
    name = "dryrun"

    def __init__(self, limits: Limits | None = None) -> None:
        self.limits = limits or x_limits()
        self.published: list[str] = []   # what would have been posted, in order
        self.deleted: list[str] = []     # the remote ids of what would have been deleted, in order

    async def publish(self, text: str) -> PublishResult:
        self.published.append(text)
        number = secrets.token_hex(6)   # unique across restarts, unlike a counter
        return PublishResult(remote_id=f"dry-run-{number}", url=f"https://dry-run.invalid/posts/{number}")

    async def delete(self, remote_id: str) -> None:
        self.deleted.append(remote_id)
