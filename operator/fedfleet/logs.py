"""structlog set-up: key-value JSON in a cluster (or when asked), readable lines on a terminal."""

from __future__ import annotations

import logging
import os
import sys
from typing import Any, TextIO

import structlog


def configure(fmt: str | None = None, level: str | None = None, stream: TextIO | None = None) -> None:
    """`fmt` is "json" or "console"; default: FEDFLEET_LOG_FORMAT, else console on a TTY, JSON otherwise."""
    stream = stream or sys.stderr
    fmt = fmt or os.environ.get("FEDFLEET_LOG_FORMAT") or ("console" if stream.isatty() else "json")
    level_name = (level or os.environ.get("FEDFLEET_LOG_LEVEL") or "INFO").upper()
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=stream.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level_name]),
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=False,
    )


def get_logger(**bound: Any) -> Any:
    return structlog.get_logger().bind(**bound)
