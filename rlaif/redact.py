"""Secrets never reach the terminal: one redaction for every log line and error message that can carry server text.

A gateway that echoes the request's `Authorization` header in its error body would otherwise put the API key on
stderr and into CI logs, through the endpoint pool's warnings or the final error. Keys are registered when a
client is made; `redact` replaces them (and any `Bearer <token>`, and the password of a URL) with ***. The filter
sits on the loggers rlaif and its HTTP libraries write to, so every record is scrubbed before a handler sees it.
"""

from __future__ import annotations

import logging
import re

_SECRETS: set[str] = set()
MIN_SECRET = 6  # shorter "keys" (placeholders such as EMPTY) would blank out ordinary words
_BEARER = re.compile(r"(?i)\b(bearer\s+)[^\s\"',;]+")
_URL_PASSWORD = re.compile(r"(\w+://[^/\s:@]+:)[^/\s@]+@")
LOGGERS = ("rlaif", "openai", "httpx", "httpcore")


def register(secret: str | None) -> None:
    """Remember a secret so that `redact` removes it wherever it shows up."""
    if secret and secret != "EMPTY" and len(secret) >= MIN_SECRET:
        _SECRETS.add(secret)


def redact(text: str) -> str:
    """`text` with every registered secret, bearer token and URL password replaced by ***."""
    for secret in sorted(_SECRETS, key=len, reverse=True):  # longest first: one key may contain another
        text = text.replace(secret, "***")
    return _URL_PASSWORD.sub(r"\1***@", _BEARER.sub(r"\1***", text))


class RedactFilter(logging.Filter):
    """Scrubs a log record's message (arguments merged in) before any handler formats it."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, ()
        return True


FILTER = RedactFilter()
for _name in LOGGERS:  # once per process: the module is imported once
    logging.getLogger(_name).addFilter(FILTER)
