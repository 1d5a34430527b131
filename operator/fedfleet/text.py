"""Text a caller sent, made safe to echo: an error message or a log line never carries more
than a bounded piece of it (a 6 MiB tensor name must not become a 6 MiB refusal or log line)."""

from __future__ import annotations

ECHO_LIMIT = 80


def shorten(text: object, limit: int = ECHO_LIMIT) -> str:
    """`text` (str() of it) cut to `limit` characters, saying how much was left out."""
    value = text if isinstance(text, str) else str(text)
    if len(value) <= limit:
        return value
    return f"{value[:limit]}... ({len(value)} characters)"
