"""Structured logging with a level filter that costs nothing for disabled levels.

twistd writes every event it receives, whatever its level, and formatting one
event as text costs tens of microseconds -- more than routing a request.  Our
modules log through `FilteredLogger`, which drops events below the configured
level before an event dict is even built; `set_level` is called once from the
configuration (``[log] level``).
"""

from __future__ import annotations

from typing import Any

from twisted.logger import Logger, LogLevel

_ORDER = (LogLevel.debug, LogLevel.info, LogLevel.warn, LogLevel.error, LogLevel.critical)
_enabled: frozenset[Any] = frozenset(_ORDER[1:])


def set_level(name: str) -> None:
    """Log events at level *name* ("debug", "info", "warn", "error", "critical") and above."""
    global _enabled
    lowest = LogLevel.levelWithName(name)
    _enabled = frozenset(_ORDER[_ORDER.index(lowest) :])


def enabled(level: Any) -> bool:
    return level in _enabled


class FilteredLogger(Logger):
    """A twisted.logger Logger that skips events below the configured level."""

    def emit(self, level: Any, format: str | None = None, **kwargs: Any) -> None:
        if level in _enabled:
            super().emit(level, format, **kwargs)
