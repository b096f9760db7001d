"""Every place that builds the embedder follows KB_QUERY_ENCODER and KB_MODEL_CACHE_DIR."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from app.support import settings_embedder
from core import db
from core.settings import Settings
from knowledge.service import KnowledgeBase


def test_the_knowledge_base_and_push_use_the_configured_question_encoder(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    cache = tmp_path / "models"
    onnx = make_settings(query_encoder="onnx", model_cache_dir=cache)
    engine = db.make_engine(onnx)  # the embedder never touches the database
    kb = KnowledgeBase(onnx, engine)
    assert kb.embedder.query_encoder == "onnx"
    assert [p.suffix for p in cache.iterdir()] == [".onnx"]  # exported into the configured folder
    assert settings_embedder(onnx) is kb.embedder
    torch = make_settings(query_encoder="torch", model_cache_dir=cache)
    assert KnowledgeBase(torch, engine).embedder.query_encoder == "torch"
    assert settings_embedder(torch).query_encoder == "torch"
    engine.dispose()
