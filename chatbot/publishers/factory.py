"""The publishers the settings configure.

    publishers = build_publishers(load_settings())     # a Publishers; the dry run when nothing is configured

X is configured by its credentials (chatbot/publishers/credentials.py), Mastodon by mastodon_api_base_url and
mastodon_access_token, Bluesky by bluesky_handle and bluesky_app_password. With none of them, or with dry_run set,
the dry-run publisher is the only one (and, with dry_run, it stands in for the configured ones). The client
libraries are imported only for the publishers configured. Incomplete credentials, an unreadable credentials file
or a publish_to / publish_channels naming a publisher that is not configured are ConfigErrors.
"""

from chatbot.config import ConfigError, Settings
from chatbot.publishers import Publisher
from chatbot.publishers.credentials import pair, x_credentials
from chatbot.publishers.dryrun import DryRunPublisher
from chatbot.publishers.lengths import x_limits
from chatbot.publishers.registry import Publishers, UnknownPublisher


def build_publishers(settings: Settings) -> Publishers:
    return assemble(configured_publishers(settings), settings)


def assemble(real: list[Publisher], settings: Settings) -> Publishers:
    """The Publishers to post through, given the real publishers configured: the dry run when there are none or
    dry_run is set."""
    if real and not settings.dry_run:
        return registry(real, settings)
    names = ", ".join(publisher.name for publisher in real)
    note = (f"dry run (dry_run is set): nothing is posted on {names}" if real else
            "dry run: no publisher has credentials, so posts go nowhere")
    dry = DryRunPublisher(x_limits(settings.max_tweet_length))
    return registry([dry], settings, stand_ins=[publisher.name for publisher in real], note=note)


def configured_publishers(settings: Settings) -> list[Publisher]:
    """The real publishers whose credentials are set, in the order X, Mastodon, Bluesky (not yet connected)."""
    options = {"timeout": settings.publish_timeout, "attempts": settings.publish_attempts}
    found: list[Publisher] = []
    credentials = x_credentials(settings)
    if credentials is not None:
        from chatbot.publishers.twitter import XPublisher

        found.append(XPublisher(credentials, max_length=settings.max_tweet_length,
                                posts_per_day=quota(settings.x_posts_per_day), **options))
    mastodon = pair(settings, "mastodon_api_base_url", "mastodon_access_token")
    if mastodon is not None:
        from chatbot.publishers.mastodon import MastodonPublisher

        found.append(MastodonPublisher(*mastodon, max_length=settings.mastodon_max_length,
                                       posts_per_day=quota(settings.mastodon_posts_per_day), **options))
    bluesky = pair(settings, "bluesky_handle", "bluesky_app_password")
    if bluesky is not None:
        from chatbot.publishers.bluesky import BlueskyPublisher

        found.append(BlueskyPublisher(*bluesky, base_url=settings.bluesky_base_url or None,
                                      posts_per_day=quota(settings.bluesky_posts_per_day), **options))
    return found


def registry(publishers: list[Publisher], settings: Settings, **options) -> Publishers:
    try:
        return Publishers(publishers, default=settings.publish_to or None, channels=settings.publish_channels,
                          **options)
    except UnknownPublisher as err:
        raise ConfigError(f"publish_to or publish_channels: {err}") from None


def quota(posts_per_day: int) -> int | None:
    return posts_per_day or None
