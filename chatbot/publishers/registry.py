"""The publishers this bot may post to, by name; one is the default, and a chat channel may have its own.

    publishers = Publishers([x, mastodon], default="x", channels={"discord:1234": "mastodon"})
    publishers.get("mastodon")                         # UnknownPublisher when none of that name is configured
    publishers.for_channel("discord", "1234")          # that channel's publisher, else the default

With dry run forced while credentials exist, the dry-run publisher stands in for the configured ones: their names
resolve to it (and nothing is posted).
"""

from collections.abc import Iterable, Iterator, Mapping

from chatbot.publishers import Publisher
from proverbot_errors import ProverbotError

KNOWN = ("x", "mastodon", "bluesky", "dryrun")


class UnknownPublisher(ProverbotError):
    """No publisher of that name is configured here."""


class Publishers:
    def __init__(self, publishers: Iterable[Publisher], default: str | None = None,
                 channels: Mapping[str, str] | None = None, stand_ins: Iterable[str] = (), note: str = "") -> None:
        self.by_name = {publisher.name: publisher for publisher in publishers}
        if not self.by_name:
            raise ValueError("Publishers needs at least one publisher")
        self.first = next(iter(self.by_name.values()))
        self.stand_ins = frozenset(stand_ins)   # names the first publisher (the dry run) answers for
        self.note = note                        # why posts go nowhere, when they do
        self.default = self.get(default) if default else self.first
        self.channels = dict(channels or {})    # "platform:channel_id" -> publisher name
        for name in self.channels.values():
            self.get(name)

    @classmethod
    def of(cls, publisher: "Publisher | Publishers") -> "Publishers":
        return publisher if isinstance(publisher, Publishers) else cls([publisher])

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.by_name)

    def __iter__(self) -> Iterator[Publisher]:
        return iter(self.by_name.values())

    def get(self, name: str | None = None) -> Publisher:
        """The publisher called `name` (None: the default)."""
        if name is None:
            return self.default
        name = name.strip().lower()
        if name in self.by_name:
            return self.by_name[name]
        if name in self.stand_ins:
            return self.first
        known = f"{name!r} is not one of {', '.join(KNOWN)}" if name not in KNOWN else f"{name} is not configured"
        raise UnknownPublisher(f"Cannot post there: {known}. Configured here: {', '.join(self.names)} "
                               "(see `proverbot doctor`).")

    def for_channel(self, platform: str, channel_id: str | None, name: str | None = None) -> Publisher:
        """`name` if given, else the channel's publisher (setting publish_channels), else the default."""
        return self.get(name or self.channels.get(f"{platform}:{channel_id}"))
