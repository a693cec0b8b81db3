"""The CSV assignment file: parsing, lookups, and reloads that never block or half-apply."""

from __future__ import annotations

from collections.abc import Generator
from pathlib import Path
from typing import Any, cast

import pytest
from hypothesis import given
from hypothesis import strategies as st
from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.interfaces import IReactorFromThreads
from twisted.logger import LogLevel, capturedLogs
from twisted.python.threadpool import ThreadPool
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface.verify import verifyObject

from homeredirect.resolve.errors import AssignmentFileError, DirectoryUnavailable
from homeredirect.resolve.file_source import (
    FileAssignmentResolver,
    parse_assignment_lines,
    read_assignment_file,
)
from homeredirect.resolve.interfaces import AddressOfRecord, Assignment, IAssignmentResolver

PATH = Path("assignments.csv")
REACTOR = cast(IReactorFromThreads, reactor)
HEADER = "user,home_server\n"


def parse(*lines: str) -> dict[str, Assignment]:
    return parse_assignment_lines([HEADER, *(line + "\n" for line in lines)], PATH)


def error_for(*lines: str) -> str:
    with pytest.raises(AssignmentFileError) as caught:
        parse_assignment_lines(list(lines), PATH)
    return str(caught.value)


def homes(table: dict[str, Assignment]) -> dict[str, str]:
    return {user: assignment.home_server for user, assignment in table.items()}


def test_lines_map_users_to_home_servers() -> None:
    table = parse("alice@example.com,home1.example.com", "bob@example.com,home2.example.com")
    assert homes(table) == {
        "alice@example.com": "home1.example.com",
        "bob@example.com": "home2.example.com",
    }


def test_sip_prefix_is_optional_and_host_and_home_are_case_insensitive() -> None:
    table = parse(
        "sip:alice@EXAMPLE.com,HOME1.example.com", "sips:bob@example.com,home1.example.com"
    )
    assert homes(table) == {
        "alice@example.com": "home1.example.com",
        "bob@example.com": "home1.example.com",
    }


def test_user_part_is_case_sensitive() -> None:
    table = parse("alice@example.com,home1.example.com", "Alice@example.com,home2.example.com")
    assert len(table) == 2


def test_keys_match_str_of_address_of_record() -> None:
    table = parse("sip:Alice@Example.COM,home1.example.com")
    assert str(AddressOfRecord.parse("sips:Alice@example.com")) in table


def test_blank_lines_comments_and_spaces_are_ignored() -> None:
    table = parse_assignment_lines(
        [
            "# assignments\n",
            "\n",
            " user , home_server \n",
            "  # indented comment\n",
            "alice@example.com , home1.example.com\n",
            "\t\n",
            "bob@example.com,home1.example.com",  # no final newline
        ],
        PATH,
    )
    assert sorted(table) == ["alice@example.com", "bob@example.com"]


def test_users_of_a_home_server_share_one_assignment() -> None:
    table = parse(
        "alice@example.com,home1.example.com",
        "bob@example.com,HOME1.example.com",
        "carol@example.com,home1.example.com",
    )
    assert len({id(assignment) for assignment in table.values()}) == 1


def test_repeating_a_user_with_the_same_home_is_allowed() -> None:
    table = parse("alice@example.com,home1.example.com", "sip:alice@EXAMPLE.COM,home1.example.com")
    assert len(table) == 1


def test_unusual_but_valid_lines_take_the_general_path() -> None:
    table = parse(
        "sip:alice@[2001:DB8::1],home1.example.com",
        "bob@192.0.2.1,home1.example.com",
        "jürgen@Example.com,home1.example.com",
        "  sip:carol@example.com  ,  HOME1.example.com  ",
    )
    assert sorted(table) == [
        "alice@[2001:db8::1]",
        "bob@192.0.2.1",
        "carol@example.com",
        "jürgen@example.com",
    ]
    assert len({id(assignment) for assignment in table.values()}) == 1


def test_header_only_file_is_an_empty_table() -> None:
    assert parse() == {}


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (
            [HEADER, "alice@example.com\n"],
            "assignments.csv:2: expected 2 columns (user,home_server), got 1",
        ),
        (
            [HEADER, "alice@example.com,home1.example.com,extra\n"],
            "assignments.csv:2: expected 2 columns (user,home_server), got 3",
        ),
        (
            [HEADER, "\n", "alice,home1.example.com\n"],
            "assignments.csv:3: expected a user such as alice@example.com, got 'alice'",
        ),
        (
            [HEADER, "alice@exa..mple.com,home1.example.com\n"],
            "assignments.csv:2: expected a hostname or IP address, got 'exa..mple.com'",
        ),
        (
            [HEADER, "alice@exa_mple.com,home1.example.com\n"],
            "assignments.csv:2: expected a user such as alice@example.com, "
            "got 'alice@exa_mple.com'",
        ),
        (
            [HEADER, "alice@[::1,home1.example.com\n"],
            "assignments.csv:2: expected a user such as alice@example.com, got 'alice@[::1'",
        ),
        (
            [HEADER, "alice@example.com,home_1.example.com\n"],
            "assignments.csv:2: expected a home server FQDN, got 'home_1.example.com'",
        ),
        (
            [HEADER, "alice@example.com,\n"],
            "assignments.csv:2: expected a home server FQDN, got ''",
        ),
        (
            [
                HEADER,
                "alice@example.com,home1.example.com\n",
                "alice@Example.com,home2.example.com\n",
            ],
            "assignments.csv:3: alice@example.com is already assigned to home1.example.com, "
            "not home2.example.com",
        ),
        (
            ["alice@example.com,home1.example.com\n"],
            "assignments.csv:1: expected the header line user,home_server, "
            "got 'alice@example.com,home1.example.com'",
        ),
        ([], "assignments.csv:1: expected the header line user,home_server, got end of file"),
        (
            ["# only a comment\n", "\n"],
            "assignments.csv:3: expected the header line user,home_server, got end of file",
        ),
    ],
)
def test_bad_lines_reject_the_file_naming_path_and_line(lines: list[str], message: str) -> None:
    assert error_for(*lines) == message


def test_error_carries_path_line_and_reason() -> None:
    with pytest.raises(AssignmentFileError) as caught:
        parse("alice@example.com")
    assert (caught.value.path, caught.value.line) == (PATH, 2)
    assert caught.value.reason == "expected 2 columns (user,home_server), got 1"


def test_file_with_byte_order_mark_and_crlf_is_read(tmp_path: Path) -> None:
    path = tmp_path / "assignments.csv"
    path.write_bytes(b"\xef\xbb\xbfuser,home_server\r\nalice@example.com,home1.example.com\r\n")
    assert homes(read_assignment_file(path)) == {"alice@example.com": "home1.example.com"}


def test_missing_file_is_an_assignment_file_error(tmp_path: Path) -> None:
    with pytest.raises(AssignmentFileError) as caught:
        read_assignment_file(tmp_path / "missing.csv")
    assert str(caught.value) == (
        f"{tmp_path / 'missing.csv'}: cannot read the file: No such file or directory"
    )


def test_non_utf8_file_is_an_assignment_file_error(tmp_path: Path) -> None:
    path = tmp_path / "assignments.csv"
    path.write_bytes(b"user,home_server\n\xff@example.com,home1.example.com\n")
    with pytest.raises(AssignmentFileError) as caught:
        read_assignment_file(path)
    assert str(caught.value) == f"{path}: expected UTF-8 text: invalid start byte"


def write(path: Path, *lines: str) -> Path:
    path.write_text(HEADER + "".join(line + "\n" for line in lines))
    return path


class ResolverTests(SynchronousTestCase):
    """Start-up loading and lookups, which need no threads."""

    def setUp(self) -> None:
        self.path = write(
            Path(self.mktemp()),
            "alice@example.com,home1.example.com",
            "Bob@example.com,home2.example.com",
        )
        self.pool = ThreadPool(minthreads=0, maxthreads=1, name="unused")
        self.resolver = FileAssignmentResolver(self.path, reactor=REACTOR, threadpool=self.pool)

    def test_resolver_provides_the_interface(self) -> None:
        self.assertTrue(verifyObject(IAssignmentResolver, self.resolver))

    def test_known_user_resolves_to_its_assignment(self) -> None:
        self.resolver.load()
        aor = AddressOfRecord.parse("sip:alice@EXAMPLE.com")
        result = self.successResultOf(self.resolver.resolve(aor))
        self.assertEqual(result, Assignment("home1.example.com"))

    def test_unknown_user_resolves_to_none(self) -> None:
        self.resolver.load()
        aor = AddressOfRecord.parse("sip:bob@example.com")  # only "Bob" is assigned
        self.assertIsNone(self.successResultOf(self.resolver.resolve(aor)))

    def test_resolve_before_load_fails_with_directory_unavailable(self) -> None:
        aor = AddressOfRecord.parse("sip:alice@example.com")
        self.failureResultOf(self.resolver.resolve(aor), DirectoryUnavailable)

    def test_load_raises_for_an_invalid_file(self) -> None:
        write(self.path, "alice@example.com")
        with self.assertRaises(AssignmentFileError):
            self.resolver.load()
        self.assertEqual(len(self.resolver), 0)

    def test_length_is_the_number_of_users(self) -> None:
        self.resolver.load()
        self.assertEqual(len(self.resolver), 2)


class ReloadTests(TestCase):
    """Reloads read in a real thread pool while the reactor keeps answering lookups."""

    def setUp(self) -> None:
        self.path = write(Path(self.mktemp()), "alice@example.com,home1.example.com")
        self.pool = ThreadPool(minthreads=1, maxthreads=1, name="assignment-reload-test")
        self.pool.start()
        self.addCleanup(self.pool.stop)
        self.resolver = FileAssignmentResolver(self.path, reactor=REACTOR, threadpool=self.pool)
        self.resolver.load()

    def home_of(self, user: str) -> str | None:
        assignment = self.successResultOf(self.resolver.resolve(AddressOfRecord.parse(user)))
        return None if assignment is None else assignment.home_server

    def test_reload_answers_from_the_old_table_until_the_new_one_is_read(self) -> Deferred[Any]:
        write(self.path, "alice@example.com,home2.example.com")
        reloading = self.resolver.reload()
        # The file is read in the pool; the result can only arrive via the reactor.
        self.assertNoResult(reloading)
        self.assertEqual(self.home_of("alice@example.com"), "home1.example.com")
        return reloading

    @inlineCallbacks
    def test_valid_file_replaces_the_table(self) -> Generator[Deferred[Any], Any, None]:
        write(
            self.path, "alice@example.com,home2.example.com", "carol@example.com,home2.example.com"
        )
        swapped = yield self.resolver.reload()
        self.assertTrue(swapped)
        self.assertEqual(self.home_of("alice@example.com"), "home2.example.com")
        self.assertEqual(self.home_of("carol@example.com"), "home2.example.com")

    @inlineCallbacks
    def test_invalid_file_keeps_the_old_table_and_is_logged(
        self,
    ) -> Generator[Deferred[Any], Any, None]:
        write(self.path, "alice@example.com,home2.example.com", "bob@example.com")
        with capturedLogs() as events:
            swapped = yield self.resolver.reload()
        self.assertFalse(swapped)
        self.assertEqual(self.home_of("alice@example.com"), "home1.example.com")
        (event,) = [e for e in events if e["log_level"] is LogLevel.error]
        self.assertEqual(
            (event["path"], event["line"], event["reason"], event["count"]),
            (str(self.path), 3, "expected 2 columns (user,home_server), got 1", 1),
        )

    @inlineCallbacks
    def test_missing_file_keeps_the_old_table(self) -> Generator[Deferred[Any], Any, None]:
        self.path.unlink()
        with capturedLogs() as events:
            swapped = yield self.resolver.reload()
        self.assertFalse(swapped)
        self.assertEqual(self.home_of("alice@example.com"), "home1.example.com")
        (event,) = [e for e in events if e["log_level"] is LogLevel.error]
        self.assertIsNone(event["line"])

    @inlineCallbacks
    def test_reloads_requested_together_both_apply(self) -> Generator[Deferred[Any], Any, None]:
        write(self.path, "alice@example.com,home3.example.com")
        first = self.resolver.reload()
        second = self.resolver.reload()
        self.assertNoResult(second)
        results = [(yield first), (yield second)]
        self.assertEqual(results, [True, True])
        self.assertEqual(self.home_of("alice@example.com"), "home3.example.com")


_USER_CHARACTERS = "abcXYZ019-_.!~*'()&=+$;?/%"


@given(
    user=st.text(alphabet=_USER_CHARACTERS, min_size=1, max_size=12),
    host=st.sampled_from(["example.com", "EXAMPLE.com", "192.0.2.1", "sip-1.Example.org"]),
    scheme=st.sampled_from(["", "sip:", "SIPS:"]),
)
def test_fast_path_keys_match_address_of_record(user: str, host: str, scheme: str) -> None:
    text = f"{scheme}{user}@{host}"
    assert list(parse(f"{text},home1.example.com")) == [str(AddressOfRecord.parse(text))]
