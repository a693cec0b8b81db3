"""Shared test set-up."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from hypothesis import settings

# Before any test module imports gssapi (the Kerberos tests do): the NTLM initiator must
# register gss-ntlmssp's datagram flag before gssapi.raw.types is first imported.
import tests.ntlm_initiator  # noqa: F401
from tests.servers import RedisServer

# Property tests check behaviour, not speed (speed is bench/'s job): no per-example
# deadline, so a busy machine cannot fail them.
settings.register_profile("homeredirect", deadline=None)
settings.load_profile("homeredirect")


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


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One real redis-server (tests/servers.py) for the whole session, stopped at the end.
    Tests share it: give each test its own key prefix or database, or call `flush()`."""
    server = RedisServer.start()
    try:
        yield server
    finally:
        server.stop()
