"""The dry-run publisher: posts nowhere, answers with a clearly fake URL. The default without credentials."""

import secrets

from chatbot.publishers import PublishResult


class DryRunPublisher:
    name = "dryrun"

    def __init__(self) -> None:
        self.published: list[str] = []   # what would have been posted, in order

    async def publish(self, text: str) -> PublishResult:
        self.published.append(text)
        number = secrets.token_hex(6)   # unique across restarts, unlike a counter
        return PublishResult(remote_id=f"dry-run-{number}", url=f"https://dry-run.invalid/posts/{number}")
