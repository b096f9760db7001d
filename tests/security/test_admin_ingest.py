"""`admin ingest` from chat reads only under the configured roots, and never follows links out."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import Engine

from bot.admin import admin_hooks
from bot.commands import Admin
from core.settings import Settings
from knowledge.embeddings import Embedder
from knowledge.service import KnowledgeBase


@pytest.fixture
def layout(tmp_path: Path) -> tuple[Path, Path]:
    root, outside = tmp_path / "allowed", tmp_path / "outside"
    (root / "handbook").mkdir(parents=True)
    outside.mkdir()
    (root / "handbook" / "vpn.md").write_text("# VPN\n\nInstall HaldenConnect.\n")
    (outside / "secret.md").write_text("# Secret\n\nThe merger closes in March.\n")
    (root / "handbook" / "linked.md").symlink_to(outside / "secret.md")
    (root / "handbook" / "linked-folder").symlink_to(outside, target_is_directory=True)
    (root / "escape").symlink_to(outside, target_is_directory=True)
    return root, outside


@pytest.fixture
def kb(settings: Settings, migrated: Engine, embedder: Embedder) -> KnowledgeBase:
    return KnowledgeBase(settings, migrated, embedder=embedder)


@pytest.mark.parametrize(
    ("arg", "expected"),
    [
        ("../outside", "refers to a parent folder"),
        ("handbook/../../outside", "refers to a parent folder"),
        ("%2e%2e/outside", "refers to a parent folder"),
        ("/etc", "outside the allowed folders"),
        ("escape", "leads outside the allowed folders"),
        ("~/.ssh", "absolute and outside"),
    ],
)
async def test_paths_outside_the_roots_are_refused(
    kb: KnowledgeBase, layout: tuple[Path, Path], arg: str, expected: str
) -> None:
    root, _ = layout
    hooks = admin_hooks(kb, ingest_roots=[root])
    assert hooks.ingest is not None
    reply = await hooks.ingest(Admin("ingest", (arg,)))
    assert reply.startswith("I can't ingest that path")
    assert expected in reply
    assert kb.stats().documents == 0


async def test_an_allowed_folder_is_ingested_without_following_links_out(
    kb: KnowledgeBase, layout: tuple[Path, Path]
) -> None:
    root, _ = layout
    hooks = admin_hooks(kb, ingest_roots=[root])
    assert hooks.ingest is not None
    reply = await hooks.ingest(Admin("ingest", ("handbook",)))
    assert reply.startswith("Ingested: 1 added")
    assert "linked.md: a symbolic link out of the folder" in reply
    assert "linked-folder: a symbolic link out of the folder" in reply
    assert kb.stats().documents == 1
    assert hooks.status is not None
    assert (await hooks.status(Admin("status"))).startswith("1 documents")


async def test_without_roots_chat_ingestion_is_off(kb: KnowledgeBase) -> None:
    hooks = admin_hooks(kb, ingest_roots=[])
    assert hooks.ingest is not None
    assert "off" in await hooks.ingest(Admin("ingest", ("docs",)))
