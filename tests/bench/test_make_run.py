"""The `make run` benchmark stops its clock at an answer the model wrote, not at a fallback."""

from __future__ import annotations

from bench.make_run import model_written
from knowledge.generation import FALLBACK_MODEL


def test_only_an_answer_the_model_wrote_stops_the_clock() -> None:
    assert model_written({"model": "qwen2.5-coder-0.5b-instruct", "text": "30 working days [1]"})
    assert not model_written({"model": FALLBACK_MODEL, "text": "Full-time employees get 30 days. [1]"})
    assert not model_written({"model": "extractive", "text": "Full-time employees get 30 days. [1]"})
    assert not model_written({"text": "no model named"})
