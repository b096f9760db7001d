from __future__ import annotations

import json

from typer.testing import CliRunner

from app.cli import EXIT_ERROR, app

TEXT = "Mail ann@example.com, card 4111 1111 1111 1111, token xoxb-123456789012-abcdefghijkl\n"


def test_kb_redact_filters_standard_input() -> None:
    result = CliRunner().invoke(app, ["redact"], input=TEXT)
    assert result.exit_code == 0
    assert result.stdout == "Mail [EMAIL], card [CARD], token [SECRET]\n"


def test_kb_redact_policies_and_json() -> None:
    index = CliRunner().invoke(app, ["redact", "--destination", "index", "--json"], input=TEXT)
    data = json.loads(index.stdout)
    assert data["counts"] == {"CARD": 1, "SECRET": 1}
    assert "ann@example.com" in data["text"], "the index keeps contact data by default"
    numbered = CliRunner().invoke(app, ["redact", "--pseudonyms"], input="a@x.io b@x.io a@x.io")
    assert numbered.stdout == "[EMAIL_1] [EMAIL_2] [EMAIL_1]"


def test_kb_redact_unknown_destination_is_an_error() -> None:
    result = CliRunner().invoke(app, ["redact", "--destination", "nowhere"], input="x")
    assert result.exit_code == EXIT_ERROR
    assert "unknown redaction destination" in result.stderr
