"""Shared test set-up."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True, scope="session")
def _trial_temp_outside_the_checkout(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """trial's TestCase.mktemp() makes directories relative to the working
    directory; run the session from a temporary one so none land in the repo."""
    previous = os.getcwd()
    os.chdir(tmp_path_factory.mktemp("trial"))
    try:
        yield
    finally:
        os.chdir(previous)
