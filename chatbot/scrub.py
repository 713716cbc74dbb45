"""No secret leaves the process: remembered secrets are masked in error messages, log lines and what is printed.

    remember("abcd-efgh-ijkl-mnop")                  # a publisher remembers its credentials when it is built
    scrub("400: you sent password=abcd-efgh-ijkl-mnop")     # -> '400: you sent password=**********'

A remembered secret is masked as it is and in the forms a server or a library may echo it in: URL-encoded once or
twice (quote, quote_plus: an OAuth header, which carries it encoded, echoed inside a URL), JSON-escaped, and
base64-encoded on its own (standard and URL-safe, without padding; a secret encoded together with other text, e.g.
inside an HTTP Basic header, is not found). Secrets shorter than MIN_LENGTH characters are not remembered: masking
them would mask ordinary words wherever they appear.

install_log_filter() adds ScrubFilter to the root logger's handlers, so no log line carries a secret either, whichever
logger wrote it.
"""

import base64
import json
import logging
import threading
from urllib.parse import quote, quote_plus

MASK = "**********"
MIN_LENGTH = 6

_lock = threading.Lock()
_masked: tuple[str, ...] = ()       # every form of every remembered secret, longest first; replaced, never mutated


def remember(*secrets: str) -> None:
    """Mask these secrets (and their encodings) from now on, process-wide; empty and short ones are ignored."""
    global _masked
    kept = [secret for secret in secrets if secret and len(secret) >= MIN_LENGTH]
    with _lock:
        forms = set(_masked).union(*(encodings(secret) for secret in kept))
        _masked = tuple(sorted(forms, key=len, reverse=True))


def encodings(secret: str) -> set[str]:
    """The secret and the forms it is sent or echoed in."""
    url = {secret, quote(secret), quote(secret, safe=""), quote_plus(secret)}
    url |= {quote(form, safe="") for form in url} | {quote_plus(form) for form in url}
    raw = secret.encode("utf-8")
    return url | {json.dumps(secret)[1:-1], base64.b64encode(raw).decode().rstrip("="),
                  base64.urlsafe_b64encode(raw).decode().rstrip("=")}


def scrub(text: str) -> str:
    """`text` with every remembered secret, in any of its forms, replaced by MASK."""
    for form in _masked:
        text = text.replace(form, MASK)
    return text


class ScrubFilter(logging.Filter):
    """Scrubs a log record: its message with the arguments merged in, its exception text and its stack text."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 (a logging call whose arguments do not fit its format: keep both)
            message = f"{record.msg} {record.args}"
        record.msg, record.args = scrub(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = scrub(record.exc_text)
        if record.stack_info:
            record.stack_info = scrub(record.stack_info)
        return True


def install_log_filter() -> None:
    """Add a ScrubFilter to each handler of the root logger that lacks one (call it once the handlers are set up)."""
    for handler in logging.getLogger().handlers:
        if not any(isinstance(existing, ScrubFilter) for existing in handler.filters):
            handler.addFilter(ScrubFilter())
