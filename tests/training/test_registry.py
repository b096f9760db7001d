"""The model registry without a model server: manifests, the gate, activation, refusals, A/B figures."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import Engine

from bot.commands import Admin, Invalid, parse
from core import db
from core.llm import LLMBadRequest, LLMUnavailable
from core.settings import Settings
from core.training import RoutedLLM, TrainingRefused, routing_from_db
from tests.fakes import FakeLLM
from training.registry import Registry
from training.runs import QUEUED, RunStore
from training.versions import ModelStats, render_versions, wilson


class RecordingServer:
    """A model server that records adapter loads, or fails as told."""

    def __init__(self, *, fail: Exception | None = None) -> None:
        self.loaded: dict[str, str] = {}
        self.fail = fail

    async def load_lora(self, name: str, path: str) -> None:
        if self.fail is not None:
            raise self.fail
        self.loaded[name] = path

    async def models(self) -> list[str]:
        if isinstance(self.fail, LLMUnavailable):
            raise self.fail
        return ["base", *self.loaded]


@pytest.fixture
def engine(make_settings: Callable[..., Settings]) -> Engine:
    engine = db.make_engine(make_settings())
    db.upgrade(engine)
    return engine


def _adapter(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text(json.dumps({"r": 8}))
    (folder / "adapter_model.safetensors").write_bytes(b"weights")
    return folder


def _register(registry: Registry, tmp_path: Path, name: str, correctness: float, active: float) -> int:
    figures = {"correctness": correctness, "active_correctness": active, "canary_exposure_bits": 1.0}
    manifest = {"epsilon": 4.0, "figures": figures, "requested_by": "slack:U0ADMIN"}
    return registry.register(1, _adapter(tmp_path / name), manifest, base=tmp_path / "student")


async def test_activation_loads_first_then_switches_and_rollback_goes_back(
    engine: Engine, tmp_path: Path
) -> None:
    registry = Registry(engine, tmp_path / "models", base_name="base")
    version = _register(registry, tmp_path, "a", 0.5, 0.4)
    manifest = json.loads((tmp_path / "models" / "v1" / "manifest.json").read_text())
    assert manifest["files"] and manifest["epsilon"] == 4.0 and manifest["version"] == 1
    assert registry.gate(version, tolerance=0.0, canary_limit_bits=3.0).passed
    server = RecordingServer()
    await registry.activate(version, server)
    assert server.loaded == {"kb-v1": str(tmp_path / "models" / "v1" / "adapter")}
    assert routing_from_db(engine)().active == "kb-v1"
    await registry.activate(0, server)
    assert routing_from_db(engine)().active == "base"


async def test_a_candidate_below_the_gate_is_rejected_with_its_reason(engine: Engine, tmp_path: Path) -> None:
    registry = Registry(engine, tmp_path / "models", base_name="base")
    version = _register(registry, tmp_path, "a", 0.2, 0.6)
    verdict = registry.gate(version, tolerance=0.05, canary_limit_bits=3.0)
    assert not verdict.passed and "below the active version's 0.600" in verdict.reasons[0]
    with pytest.raises(TrainingRefused, match="failed the quality gate"):
        await registry.activate(version, RecordingServer())
    assert routing_from_db(engine)().active == "base"


@pytest.mark.parametrize(
    ("fail", "message"),
    [
        (LLMBadRequest("invalid adapter"), "rejected"),
        (LLMUnavailable("connection refused"), "could not be reached"),
    ],
)
async def test_a_server_that_rejects_or_is_down_leaves_the_active_version(
    engine: Engine, tmp_path: Path, fail: Exception, message: str
) -> None:
    registry = Registry(engine, tmp_path / "models", base_name="base")
    version = _register(registry, tmp_path, "a", 0.5, 0.4)
    with pytest.raises(TrainingRefused, match=message):
        await registry.activate(version, RecordingServer(fail=fail))
    assert routing_from_db(engine)().active == "base"


async def test_missing_or_changed_files_are_refused(engine: Engine, tmp_path: Path) -> None:
    registry = Registry(engine, tmp_path / "models", base_name="base")
    version = _register(registry, tmp_path, "a", 0.5, 0.4)
    weights = tmp_path / "models" / "v1" / "adapter" / "adapter_model.safetensors"
    weights.chmod(0o600)
    weights.write_bytes(b"tampered")
    with pytest.raises(TrainingRefused, match="changed since export"):
        await registry.activate(version, RecordingServer())
    weights.unlink()
    with pytest.raises(TrainingRefused, match="files are missing"):
        await registry.activate(version, RecordingServer())
    with pytest.raises(TrainingRefused, match="no model version 7"):
        await registry.activate(7, RecordingServer())


async def test_routed_answers_follow_the_ab_share(engine: Engine, tmp_path: Path) -> None:
    registry = Registry(engine, tmp_path / "models", base_name="base")
    version = _register(registry, tmp_path, "a", 0.5, 0.4)
    registry.set_share(version, 0.5)
    draws = iter([0.1, 0.9])
    llm = RoutedLLM(FakeLLM(), routing_from_db(engine), draw=lambda: next(draws))
    assert llm.pick(None) == "kb-v1" and llm.name == "kb-v1"
    assert llm.pick(None) == "base"
    assert llm.pick("other") == "other"


def test_one_run_waits_at_a_time(engine: Engine) -> None:
    runs = RunStore(engine)
    first = runs.create("slack:U0A", {"epsilon": 4.0, "epochs": 1})
    assert first.status == QUEUED
    with pytest.raises(TrainingRefused, match=r"run #1 requested by slack:U0A is already waiting"):
        runs.create("slack:U0B", {"epsilon": 4.0, "epochs": 1})
    claimed = runs.claim("w1")
    assert claimed is not None and claimed.attempts == 1
    assert runs.claim("w2") is None  # the first worker's heartbeat is fresh


def test_wilson_interval_and_the_models_table(engine: Engine, tmp_path: Path) -> None:
    low, high = wilson(8, 10)
    assert 0.49 < low < 0.5 and 0.94 < high < 0.95
    assert wilson(0, 0) == (0.0, 1.0)
    registry = Registry(engine, tmp_path / "models", base_name="base")
    _register(registry, tmp_path, "a", 0.5, 0.4)
    text = render_versions(registry.versions(), {"kb-v1": ModelStats(answers=10, abstained=2, up=6, down=2)})
    assert "v0 base active" in text and "👍 6 👎 2" in text and "abstained 20%" in text


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("admin retrain --epsilon 0", "greater than 0"),
        ("admin retrain --epsilon -1", "greater than 0"),
        ("admin retrain --epochs 100000", "at most 50"),
        ("admin retrain --turbo 1", "not --turbo"),
        ("admin rollback", "Say which version"),
        ("admin rollback latest", "Say which version"),
        ("admin ab 2 0.9", "between 0 and 0.5"),
    ],
)
def test_bad_training_commands_explain_themselves(text: str, problem: str) -> None:
    command = parse(text)
    assert isinstance(command, Invalid) and problem in command.message


def test_retrain_flags_parse() -> None:
    assert parse("admin retrain --epsilon 4 --dry-run --epochs 2") == Admin(
        "retrain", (), {"epsilon": "4", "dry-run": "yes", "epochs": "2"}
    )
    assert parse("admin ab 3 10%") == Admin("ab", ("3", "10%"), {})
