"""`homeredirect assignments show|move|import|export`, driven through `homeredirect.cli.main`
against real files (CSV and SQLite), and once through the installed script."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from homeredirect.cli import main

ASSIGNMENTS = """# the test users
user,home_server
alice@example.com,home1.example.com
bob@example.com,home2.example.com
"""


def write_config(directory: Path, assignments: str) -> Path:
    config = directory / "director.toml"
    config.write_text(
        f"""
[server]
role = "director"
fqdn = "director.example.com"
domains = ["example.com"]

[[listen]]
transport = "udp"
host = "127.0.0.1"
port = 0

{assignments}
"""
    )
    return config


@pytest.fixture
def file_config(tmp_path: Path) -> Path:
    (tmp_path / "assignments.csv").write_text(ASSIGNMENTS)
    return write_config(tmp_path, '[assignments]\nbackend = "file"\npath = "assignments.csv"')


@pytest.fixture
def sql_config(tmp_path: Path) -> Path:
    return write_config(tmp_path, '[assignments]\nbackend = "sql"\npath = "assignments.sqlite"')


def run(*argv: str | Path) -> int:
    return main(["assignments", *(str(arg) for arg in argv)])


def test_show_prints_the_home_server(file_config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run("show", "sip:alice@example.com", "--config", file_config) == 0
    assert capsys.readouterr().out == "alice@example.com,home1.example.com\n"


def test_config_option_may_come_before_the_action(
    file_config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run("--config", file_config, "show", "bob@example.com") == 0
    assert capsys.readouterr().out == "bob@example.com,home2.example.com\n"


def test_show_of_unknown_user_fails_with_one_line(
    file_config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run("show", "mallory@example.com", "--config", file_config) == 1
    assert capsys.readouterr().err == (
        "homeredirect assignments: mallory@example.com is not assigned to any home server\n"
    )


def test_move_rewrites_the_file_keeping_comments(
    file_config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run("move", "alice@example.com", "HOME3.example.com", "-c", file_config) == 0
    assert run("move", "carol@example.com", "home1.example.com", "-c", file_config) == 0
    assert (file_config.parent / "assignments.csv").read_text() == (
        "# the test users\nuser,home_server\n"
        "alice@example.com,home3.example.com\n"
        "bob@example.com,home2.example.com\n"
        "carol@example.com,home1.example.com\n"
    )
    assert "moved alice@example.com to home3.example.com" in capsys.readouterr().out


def test_move_to_a_bad_home_server_is_refused_before_writing(
    file_config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = (file_config.parent / "assignments.csv").read_text()
    assert run("move", "alice@example.com", "home 3", "--config", file_config) == 2
    assert capsys.readouterr().err == (
        "homeredirect assignments: not a home server FQDN: 'home 3'\n"
    )
    assert (file_config.parent / "assignments.csv").read_text() == before


def test_sql_import_then_export_round_trips(
    sql_config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "in.csv"
    source.write_text(ASSIGNMENTS + "sip:Carol@EXAMPLE.com , Home1.Example.com\n")
    assert run("import", source, "--config", sql_config) == 0
    assert "imported 3 assignments" in capsys.readouterr().out
    with sqlite3.connect(tmp_path / "assignments.sqlite") as connection:
        assert connection.execute("SELECT count(*) FROM assignments").fetchone() == (3,)
    assert run("export", "--config", sql_config) == 0
    assert capsys.readouterr().out == (
        "user,home_server\n"
        "Carol@example.com,home1.example.com\n"
        "alice@example.com,home1.example.com\n"
        "bob@example.com,home2.example.com\n"
    )
    target = tmp_path / "out.csv"
    assert run("export", target, "--config", sql_config) == 0
    assert run("import", target, "--config", sql_config) == 0
    assert target.read_text().count("\n") == 4


def test_import_of_a_bad_file_names_its_line_and_writes_nothing(
    sql_config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "in.csv"
    source.write_text("user,home_server\nalice@example.com,home1.example.com\nbob,home2\n")
    assert run("import", source, "--config", sql_config) == 2
    error = capsys.readouterr().err
    assert error.startswith(f"homeredirect assignments: {source}:3: ")
    assert error.count("\n") == 1
    assert not (tmp_path / "assignments.sqlite").exists()


def test_unusable_sql_database_fails_with_exit_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "not-a-db.sqlite").write_text("user,home_server\n" * 1000)
    config = write_config(tmp_path, '[assignments]\nbackend = "sql"\npath = "not-a-db.sqlite"')
    assert run("show", "alice@example.com", "--config", config) == 1
    error = capsys.readouterr().err
    assert "not-a-db.sqlite" in error and "not a database" in error
    assert error.count("\n") == 1


def test_bad_config_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, '[assignments]\nbackend = "nosql"')
    assert run("export", "--config", config) == 2
    error = capsys.readouterr().err
    assert error.startswith("homeredirect assignments: ") and "backend" in error
    assert error.count("\n") == 1


def test_missing_config_option_is_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert run("show", "alice@example.com") == 2
    assert "--config FILE is required" in capsys.readouterr().err


def test_installed_script_runs_the_command(file_config: Path) -> None:
    script = Path(sys.executable).parent / "homeredirect"
    done = subprocess.run(
        [str(script), "assignments", "show", "bob@example.com", "--config", str(file_config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (done.returncode, done.stdout, done.stderr) == (
        0,
        "bob@example.com,home2.example.com\n",
        "",
    )
