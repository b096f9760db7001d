"""`kb bench retrieval` warns of label links that match nothing in the corpus, not a silent 0 score."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from app.cli import app


def test_labels_that_match_nothing_are_reported(tmp_path: Path) -> None:
    docs = tmp_path / "handbook"
    (docs / "it").mkdir(parents=True)
    (docs / "it" / "vpn.md").write_text(
        "# VPN\n\n## Connect\n\nOpen the VPN client and sign in with your account.\n"
    )
    queries = tmp_path / "queries.jsonl"
    labels = [
        {"query": "How do I connect to the VPN?", "relevant": ["it/vpn.md"]},  # the right form
        {"query": "VPN sign in", "relevant": ["handbook/it/vpn.md#connect"]},  # as kb ask prints it
        {"query": "printer", "relevant": ["it/printer.md"]},  # no such page
    ]
    queries.write_text("".join(json.dumps(label) + "\n" for label in labels))
    result = CliRunner().invoke(
        app,
        ["bench", "retrieval", "--docs", str(docs), "--queries", str(queries), "--mode", "bm25", "--json"],
    )
    assert result.exit_code == 0, result.output
    assert "2 of 3 label links match nothing in the corpus" in result.stderr
    assert "handbook/it/vpn.md#connect" in result.stderr and "it/printer.md" in result.stderr
    assert "drop the source folder: it/vpn.md#connect rather than handbook/it/vpn.md#connect" in result.stderr
    assert json.loads(result.stdout)["unknown_labels"] == 2
