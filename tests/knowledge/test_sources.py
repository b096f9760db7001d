"""Declared sources: the sources file's validation, files sources, and `kb sources` end to end."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from app.cli import EXIT_ERROR, EXIT_PARTIAL, app
from knowledge.sources import SourceConfigError, SourceError, load_sources, parse_source
from knowledge.sources.config import expand_env, mask_url

Kb = Callable[..., Any]


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def problems(path: Path) -> str:
    with pytest.raises(SourceConfigError) as caught:
        load_sources(path)
    return caught.value.message


# --- The sources file ---------------------------------------------------------------------------------


def test_a_valid_file_loads_and_relative_folders_follow_it(tmp_path: Path) -> None:
    path = write(
        tmp_path / "conf" / "sources.yaml",
        """
sources:
  - name: handbook
    kind: files
    path: ../docs
    acl_groups: [staff]
  - name: crm
    kind: sql
    url: postgresql://reader:${CRM_PASSWORD}@db/crm
    query: SELECT * FROM tickets
    id_column: id
    text_columns: [body]
  - name: wiki
    kind: api
    url: https://wiki.example.com/api/pages
    page_param: page
    page_size: 50
""",
    )
    sources = load_sources(path)
    assert sources.names == ["handbook", "crm", "wiki"]
    handbook = sources.get("handbook")
    assert sources.folder(handbook) == tmp_path / "conf" / ".." / "docs"  # type: ignore[arg-type]
    assert sources.document_source(handbook) == "docs"
    assert load_sources(tmp_path / "missing.yaml").sources == ()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "sources:\n  - {name: crm, kind: sql, url: 'sqlite:///x.db', id_column: id, text_columns: [b]}\n",
            "source 'crm': query: Field required",
        ),
        (
            "sources:\n  - {name: x, kind: ftp}\n",
            "source 'x': Input tag 'ftp' found using 'kind' does not match",
        ),
        ("sources:\n  - {kind: files, path: docs}\n", "source #1: name: Field required"),
        ("sources:\n  - {name: 'a b', kind: files, path: docs}\n", "source 'a b': name: String should match"),
        (
            "sources:\n  - {name: d, kind: files, path: docs, query: x}\n",
            "source 'd': query: not a setting of a files source",
        ),
        (
            "sources:\n  - {name: w, kind: api, url: 'https://h/x', next_path: n, page_param: p}\n",
            "source 'w': next_path and page_param: paginate by one of them",
        ),
        (
            "sources:\n  - {name: w, kind: api, url: 'https://h/x', auth_header: Authorization}\n",
            "source 'w': auth_header and auth_env go together",
        ),
        (
            "sources:\n  - {name: w, kind: api, url: 'https://h', auth_header: K, auth_env: 'abc-123!'}\n",
            "auth_env: the name of an environment variable, not its value",
        ),
        ("sources:\n  - {name: w, kind: api, url: 'gopher://h/x'}\n", "source 'w': url: not an http(s) URL"),
        (
            "sources:\n  - {name: a, kind: files, path: docs}\n  - {name: a, kind: files, path: more}\n",
            "source 'a': name is declared twice",
        ),
        (
            "sources:\n  - {name: a, kind: files, path: x/docs}\n"
            "  - {name: b, kind: files, path: x/docs/it}\n",
            "docs/it overlaps the folder",
        ),
        ("sources:\n  - name: [unclosed\n", "not valid YAML at line 3, column 1"),
        ("- just a list\n", "expected a mapping with a `sources:` list"),
    ],
    ids=lambda value: value[:24] if isinstance(value, str) else None,
)
def test_invalid_files_name_the_source_and_the_field(tmp_path: Path, text: str, expected: str) -> None:
    message = problems(write(tmp_path / "sources.yaml", text))
    assert expected in message, message
    assert message.startswith(str(tmp_path / "sources.yaml"))


def test_secrets_come_from_the_environment_and_never_show() -> None:
    url = "postgresql://reader:${CRM_PASSWORD}@db/crm"
    assert (
        expand_env(url, {"CRM_PASSWORD": "pw"}, source="crm", field="url") == "postgresql://reader:pw@db/crm"
    )
    with pytest.raises(SourceError, match=r"source 'crm': url refers to \$\{CRM_PASSWORD\}, but"):
        expand_env(url, {}, source="crm", field="url")
    assert mask_url(url) == url, "a reference names a variable, not a secret"
    assert mask_url("postgresql://reader:hunter2@db/crm") == "postgresql://reader:***@db/crm"
    assert mask_url("https://h/api?api_key=abc&page=2") == "https://h/api?api_key=***&page=2"


# --- Files sources and the command line ------------------------------------------------------------------


@pytest.fixture
def kb(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Kb:
    monkeypatch.setenv("KB_DATA_DIR", str(tmp_path / "var"))
    runner = CliRunner()

    def run(*args: str) -> Any:
        return runner.invoke(app, list(args), catch_exceptions=False)

    assert run("db", "upgrade").exit_code == 0
    return run


@pytest.fixture
def docs(tmp_path: Path) -> Path:
    root = tmp_path / "docs"
    write(root / "parking.md", "# Parking\n\nThe staff car park behind building C opens at 6:00.\n")
    write(
        root / "salaries.md",
        "---\ntitle: Salary bands\nacl_groups: [hr]\n---\n# Salary bands\n\nBand H5 pays 61,000 EUR.\n",
    )
    return root


def listed(kb: Kb) -> dict[str, dict[str, Any]]:
    result = kb("sources", "list", "--json")
    assert result.exit_code == 0, result.output
    return {row["name"]: row for row in json.loads(result.stdout)["sources"]}


def test_files_source_round_trip(kb: Kb, docs: Path, tmp_path: Path) -> None:
    added = kb("sources", "add", "handbook", "--kind", "files", "--path", str(docs), "--acl-group", "staff")
    assert added.exit_code == 0, added.output
    declared = yaml.safe_load((tmp_path / "var" / "sources.yaml").read_text())
    assert declared == {
        "sources": [{"name": "handbook", "kind": "files", "path": str(docs), "acl_groups": ["staff"]}]
    }
    assert listed(kb)["handbook"]["status"] == "never"

    synced = kb("sources", "sync", "--json")
    assert synced.exit_code == 0, synced.output
    [report] = json.loads(synced.stdout)["sources"]
    assert (report["name"], report["status"], report["added"], report["documents"]) == (
        "handbook",
        "ok",
        2,
        2,
    )
    row = listed(kb)["handbook"]
    assert (row["status"], row["documents"]) == ("ok", 2) and row["last_sync_at"]

    asked = json.loads(kb("ask", "When does the car park open?", "--group", "staff", "--json").stdout)
    assert asked["citations"][0]["uri"].startswith("docs/parking.md")
    public = json.loads(kb("ask", "When does the car park open?", "--json").stdout)
    assert all("parking" not in c["uri"] for c in public["citations"]), "the default ACL applies"
    hr = json.loads(kb("ask", "What does band H5 pay?", "--group", "hr", "--json").stdout)
    assert hr["citations"][0]["uri"].startswith("docs/salaries.md"), "a document's own ACL is kept"

    again = json.loads(kb("sources", "sync", "handbook", "--json").stdout)["sources"][0]
    assert (again["unchanged"], again["added"]) == (2, 0)

    removed = kb("sources", "remove", "handbook", "--purge", "--json")
    assert removed.exit_code == 0, removed.output
    assert json.loads(removed.stdout)["documents_deleted"] == 2
    assert listed(kb) == {}
    assert json.loads(kb("status", "--json").stdout)["documents"] == 0

    trail = json.loads(kb("audit", "tail", "--json").stdout)
    assert [entry["action"] for entry in trail] == [
        "source.add",
        "source.sync",
        "source.sync",
        "source.remove",
    ]
    assert trail[0]["params"]["acl_groups"] == ["staff"] and trail[-1]["params"]["purge"] is True


def test_sync_reports_failing_sources_with_exit_3_and_masks_passwords(
    kb: Kb, docs: Path, tmp_path: Path
) -> None:
    crm = tmp_path / "crm.db"
    with sqlite3.connect(crm) as connection:
        connection.execute("CREATE TABLE tickets (id INTEGER, subject TEXT, body TEXT)")
        connection.execute("INSERT INTO tickets VALUES (1, 'VPN', 'The VPN drops every hour.')")
    kb("sources", "add", "handbook", "--kind", "files", "--path", str(docs))
    common = ["--kind", "sql", "--id-column", "id", "--title-column", "subject", "--text-column", "body"]
    assert (
        kb(
            "sources", "add", "crm", *common, "--url", f"sqlite:///{crm}", "--query", "SELECT * FROM tickets"
        ).exit_code
        == 0
    )
    secret_url = "postgresql://kb:hunter2@127.0.0.1:1/crm"
    down = kb("sources", "add", "down", *common, "--url", secret_url, "--query", "SELECT * FROM t")
    assert down.exit_code == 0 and "the URL holds a password" in down.stderr

    result = kb("sources", "sync", "--json")
    assert result.exit_code == EXIT_PARTIAL, result.output
    report = {row["name"]: row for row in json.loads(result.stdout)["sources"]}
    assert {name: row["status"] for name, row in report.items()} == {
        "handbook": "ok",
        "crm": "ok",
        "down": "failed",
    }
    assert report["crm"]["added"] == 1
    [problem] = report["down"]["problems"]
    assert (
        problem["path"] == "down"
        and "cannot connect to postgresql://kb:***@127.0.0.1:1/crm" in problem["reason"]
    )

    text = kb("sources", "sync", "down")
    assert text.exit_code == EXIT_PARTIAL
    assert "down (sql) failed" in text.stdout and "skipped down: source 'down': cannot connect" in text.stderr
    assert kb("sources", "sync", "crm").exit_code == 0

    audit = json.dumps(json.loads(kb("audit", "tail", "--count", "50", "--json").stdout))
    assert "hunter2" not in audit and "kb:***@127.0.0.1" in audit
    assert listed(kb)["down"]["status"] == "failed"


def test_cli_errors_exit_1_with_the_reason(kb: Kb, docs: Path, tmp_path: Path) -> None:
    empty = kb("sources", "sync")
    assert empty.exit_code == EXIT_ERROR and "no sources declared" in empty.stderr
    kb("sources", "add", "handbook", "--kind", "files", "--path", str(docs))

    cases = [
        (("sources", "sync", "handbook", "nope"), "no source named 'nope'"),
        (("sources", "remove", "nope"), "no source named 'nope'"),
        (("sources", "add", "handbook", "--kind", "files", "--path", str(docs)), "already declared"),
        (
            ("sources", "add", "x", "--kind", "files", "--path", str(docs), "--query", "q"),
            "query: not a setting",
        ),
        (
            ("sources", "add", "x", "--kind", "sql", "--url", "sqlite:///x.db"),
            "source 'x': query: Field required",
        ),
        (("sources", "add", "x", "--kind", "files", "--path", str(tmp_path / "none")), "no folder at"),
    ]
    for args, expected in cases:
        result = kb(*args)
        assert result.exit_code == EXIT_ERROR, (args, result.output)
        assert expected in result.stderr, (args, result.stderr)
        assert "Traceback" not in result.output
    assert list(listed(kb)) == ["handbook"], "a refused command changes nothing"

    write(tmp_path / "var" / "sources.yaml", "sources:\n  - {name: crm, kind: sql}\n")
    broken = kb("sources", "list")
    assert broken.exit_code == EXIT_ERROR and "source 'crm': url: Field required" in broken.stderr


def test_remove_without_purge_keeps_the_documents(kb: Kb, docs: Path) -> None:
    kb("sources", "add", "handbook", "--kind", "files", "--path", str(docs))
    kb("sources", "sync")
    result = kb("sources", "remove", "handbook")
    assert result.exit_code == 0 and "its 2 documents stay searchable" in result.stdout
    assert json.loads(kb("status", "--json").stdout)["documents"] == 2


def test_parse_source_checks_one_source_like_the_file() -> None:
    with pytest.raises(SourceConfigError, match="source 'w': page_size needs page_param"):
        parse_source({"name": "w", "kind": "api", "url": "https://h/x", "page_size": 10})
