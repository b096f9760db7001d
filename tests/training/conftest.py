"""Fixtures shared by the training tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.training.students import build_student


@pytest.fixture(autouse=True, scope="package")
def one_thread() -> Iterator[None]:
    """One torch thread: on a shared two-core machine two threads made these tests ~9x slower."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def student_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Llama student saved to disk, built once per test module."""
    return build_student(tmp_path_factory.mktemp("student") / "tiny")
