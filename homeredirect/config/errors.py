"""Errors raised while loading the configuration, and how offending values are shown.

An operator fixing a config file needs one line naming the file, the key and what was
wanted, so every problem becomes one `ConfigError` and the service prints `str()` of it.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Mapping
from enum import Enum
from pathlib import PurePath

__all__ = ["ConfigError", "InvalidField", "describe_value"]

_MAX_SHOWN = 60


class ConfigError(Exception):
    """The configuration cannot be used.

    `str()` reads `"<file>: <key path>: <problem>"`, for example
    `director.toml: [[listen]][2].port: expected an integer from 0 to 65535, got "abc"`,
    or `"<file>: <problem>"` when no single key is at fault. Entries of an array of tables
    are counted from 1, as an operator counts `[[listen]]` blocks in the file.
    """

    def __init__(self, source: str, location: str | None, problem: str) -> None:
        super().__init__(source, location, problem)
        self.source = source
        self.location = location
        self.problem = problem

    def __str__(self) -> str:
        if self.location is None:
            return f"{self.source}: {self.problem}"
        return f"{self.source}: {self.location}: {self.problem}"


class InvalidField(ValueError):
    """A configuration value type was given a value it does not accept.

    Raised by the validators of `homeredirect.config.schema`, which know what each field
    expects; the loader adds the file and the table to make a `ConfigError`. `field` is the
    key path inside the value type (`"port"`, `"domains[2]"`).
    """

    def __init__(self, field: str, expected: str, got: object) -> None:
        super().__init__(field, expected, got)
        self.field = field
        self.expected = expected
        self.got = got

    @property
    def problem(self) -> str:
        """The message without the key path: `expected ..., got ...`."""
        return f"expected {self.expected}, got {describe_value(self.got)}"

    def __str__(self) -> str:
        return f"{self.field}: {self.problem}"


def describe_value(value: object) -> str:
    """Show a configuration value the way it would be written in TOML, shortened.

    Strings are double-quoted, so `got "abc"` is distinguishable from `got 123`; tables and
    long arrays are summarised because the operator can see them in the file.
    """
    if value is None:  # TOML has no null: None is a key that was left out
        return "nothing"
    if isinstance(value, Mapping):
        return "a table"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Enum):
        value = value.value
    if isinstance(value, PurePath):
        value = str(value)
    if isinstance(value, str):
        shown = json.dumps(value, ensure_ascii=False)
    elif isinstance(value, list | tuple):
        shown = "[" + ", ".join(describe_value(item) for item in value) + "]"
    elif isinstance(value, datetime.date | datetime.time):
        shown = value.isoformat()
    else:
        shown = repr(value)
    if len(shown) > _MAX_SHOWN:
        return "an array" if isinstance(value, list | tuple) else shown[: _MAX_SHOWN - 3] + "..."
    return shown
