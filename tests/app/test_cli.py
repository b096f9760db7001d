"""The `kb` command line: exit codes, messages and JSON output, run in-process."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from app.cli import EXIT_ERROR, EXIT_PARTIAL, app
from tests.conftest import HANDBOOK


@pytest.fixture
def kb(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("KB_DATA_DIR", str(tmp_path / "var"))
    runner = CliRunner()

    def run(*args: str):  # type: ignore[no-untyped-def]
        return runner.invoke(app, list(args), catch_exceptions=False)

    return run


def test_unmigrated_database_is_refused_with_the_fix(kb) -> None:  # type: ignore[no-untyped-def]
    for command in (["ingest", str(HANDBOOK)], ["ask", "hello"], ["status"]):
        result = kb(*command)
        assert result.exit_code == EXIT_ERROR, command
        assert "has no schema yet" in result.stderr
        assert "run `kb db upgrade` first" in result.stderr


def test_bad_setting_is_reported_by_variable_name(kb, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("KB_DATABASE_URL", "mysql://root@localhost/kb")
    result = kb("db", "upgrade")
    assert result.exit_code == EXIT_ERROR
    assert "KB_DATABASE_URL: unsupported database 'mysql'" in result.stderr
    assert "Traceback" not in result.output


def test_handbook_round_trip(kb) -> None:  # type: ignore[no-untyped-def]
    assert kb("db", "upgrade").exit_code == 0
    assert "up to date" in kb("db", "upgrade").stdout

    ingest = kb("ingest", str(HANDBOOK), "--json")
    assert ingest.exit_code == 0, ingest.output
    report = json.loads(ingest.stdout)
    assert report["ok"] and report["added"] >= 30 and report["skipped"] == []

    asked = kb("ask", "How do I reset my password?")
    assert asked.exit_code == 0
    assert "[1]" in asked.stdout and "Sources" in asked.stdout
    assert "handbook/it/password-reset.md#" in asked.stdout

    answer = json.loads(kb("ask", "How do I reset my password?", "--json").stdout)
    assert answer["citations"][0]["uri"].startswith("handbook/it/password-reset.md#")
    assert answer["model"] == "extractive" and not answer["abstained"]

    status = json.loads(kb("status", "--json").stdout)
    assert status["documents"] == report["added"] and status["chunks"] == status["index_vectors"] > 0
    assert status["last_ingest"]["status"] == "ok"
    llm = status["backends"]["llm"]
    assert (llm["configured"], llm["reachable"]) == (False, None)
    assert llm["detail"].startswith("not configured: extractive answers (set KB_LLM_URL")

    again = json.loads(kb("ingest", str(HANDBOOK), "--json").stdout)
    assert again["unchanged"] == report["added"] and again["added"] == 0


def test_restricted_answers_need_the_group(kb) -> None:  # type: ignore[no-untyped-def]
    kb("db", "upgrade")
    kb("ingest", str(HANDBOOK))
    question = "What is the salary range of band H5?"
    public = json.loads(kb("ask", question, "--json").stdout)
    assert all("salary-bands" not in c["uri"] for c in public["citations"])
    hr = json.loads(kb("ask", question, "--group", "hr", "--json").stdout)
    assert hr["citations"][0]["uri"].startswith("handbook/hr/salary-bands.md")


def test_missing_path_and_empty_folder_exit_partial(kb, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    kb("db", "upgrade")
    (tmp_path / "empty").mkdir()
    result = kb("ingest", str(tmp_path / "nope"), str(tmp_path / "empty"))
    assert result.exit_code == EXIT_PARTIAL
    assert f"skipped {tmp_path / 'nope'}: no such file or directory" in result.stderr
    assert f"skipped {tmp_path / 'empty'}: no supported documents" in result.stderr


def test_bad_files_are_named_and_the_rest_ingested(kb, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    kb("db", "upgrade")
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "good.md").write_text("# Good\n\nThe canteen opens at 11:30.\n")
    (docs / "empty.md").write_text("")
    (docs / "binary.md").write_bytes(b"\x00\xff\x00")
    result = kb("ingest", str(docs))
    assert result.exit_code == EXIT_PARTIAL
    assert "1 added" in result.stdout and "2 skipped" in result.stdout
    assert f"skipped {docs / 'empty.md'}: empty file" in result.stderr
    assert f"skipped {docs / 'binary.md'}: binary file" in result.stderr


def test_empty_question_is_refused(kb) -> None:  # type: ignore[no-untyped-def]
    result = kb("ask", "   ")
    assert result.exit_code == EXIT_ERROR
    assert "the question is empty" in result.stderr


def test_no_arguments_shows_help() -> None:
    result = CliRunner().invoke(app, [])
    assert "ingest" in result.output and "serve" in result.output
