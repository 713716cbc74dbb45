"""Publishers: where a winning candidate goes (X, Mastodon, Bluesky, or nowhere: the dry run).

The core only sees this protocol: ``name`` (the platform recorded in the log) and ``publish(text)``, which
returns a PublishResult or raises PublishError with a message written for a person (quota, rate limit,
duplicate, credentials). Anything else it raises counts as a failure too; the post stays retryable.
"""

from dataclasses import dataclass
from typing import Protocol

from model.errors import ProverbotError


@dataclass(frozen=True)
class PublishResult:
    remote_id: str
    url: str


class PublishError(ProverbotError):
    """The platform refused or failed the post; str(err) says why."""


class Publisher(Protocol):
    name: str

    async def publish(self, text: str) -> PublishResult: ...
