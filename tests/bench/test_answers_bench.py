"""The answer benchmark says when the model server could not be reached during a row."""

from __future__ import annotations

import logging

from bench.answers import _Unreachable


def test_fallbacks_for_an_unreachable_model_are_counted_and_nothing_else() -> None:
    counter, log = _Unreachable(), logging.getLogger("knowledge.generation")
    log.addHandler(counter)
    try:
        log.warning("LLM answer unusable (%s): answering extractively", "LLMUnavailable: marked down")
        log.warning("LLM answer unusable (%s): answering extractively", "empty output")
        log.warning("LLM answer unusable (%s): answering extractively", "LLMUnavailable: cannot reach")
    finally:
        log.removeHandler(counter)
    assert counter.count == 2
