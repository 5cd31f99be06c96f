"""The one structlog set-up: events (not sentences) on stderr, for the daemons and the CLIs alike.

- a daemon calls :func:`configure` once at start: JSON lines, its host and component bound once
  through contextvars (a run, a step bind theirs the same way);
- a CLI calls :func:`configure_cli`: the same events rendered for a person, on stderr (stdout is
  the command's answer: JSON, a film, a table), routine ``debug`` ones hidden. A CLI called from
  another (``tcplab watch`` inside ``tcplab film``), or under a test's ``capture_logs``, keeps the
  set-up it finds.
"""

from __future__ import annotations

import logging
import sys

import structlog


def _processors(json: bool) -> list:
    """The chain both set-ups share; the console renderer formats exceptions itself."""
    head = [structlog.contextvars.merge_contextvars, structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True)]
    if json:
        return [*head, structlog.processors.format_exc_info, structlog.processors.JSONRenderer()]
    return [*head, structlog.dev.ConsoleRenderer(colors=False)]


def configure(host: str, component: str, json: bool = True, level: int = logging.INFO) -> None:
    """A daemon's logging: every event one JSON line on stderr with ``host`` and ``component``."""
    structlog.configure(
        processors=_processors(json),
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(host=host, component=component)


def sampled(n: int, first: int = 10, every: int = 1000) -> bool:
    """Is the ``n``-th of a run of like events logged? The first ``first``, then every ``every``-th: a
    peer that floods refused frames picks their rate, and its counter counts every one anyway."""
    return n <= first or n % every == 0


def configure_cli(level: int = logging.INFO) -> None:
    """A command's logging: events on stderr for a person to read; a set-up already made is kept."""
    if structlog.is_configured():
        return
    structlog.configure(
        processors=_processors(json=False),
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
    )
