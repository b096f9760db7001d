"""The distillation benchmark's runs: a run's own recipe settings reach its training, and only its."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bench.distill import RUN_RECIPES, RUNS
from bench.distill_device import Device
from training.types import QAExample

RECIPE: dict[str, Any] = {"canary_repeats": 4, "epochs": 3, "lr": 1e-3}


@pytest.fixture
def device(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Device, list[dict[str, Any]]]:
    data = {"chunks": [], "labelled": [], "canaries": {"A": [], "B": []}, "recipe": dict(RECIPE)}
    run = Device(tmp_path / "work", tmp_path / "out", data, on="cpu")
    canary = QAExample("canary-B123", "canary", ("Room B123.",), "Code of B123?", "1 2 3 4 5 6")
    run.canary_examples = {"A": [canary], "B": []}
    run.train = [QAExample("q1", "chunk", ("IT sits in A-014.",), "Where is IT?", "A-014 [1]")]
    run.train += run._canary_copies(0, RECIPE["canary_repeats"])
    trained: list[dict[str, Any]] = []

    def train(
        name: str, method: str, epsilon: float | None, examples: list[Any], recipe: dict[str, Any]
    ) -> dict[str, Any]:
        trained.append({"name": name, "examples": examples, "recipe": recipe})
        return {"name": name, "method": method, "epsilon": epsilon}

    monkeypatch.setattr(run, "_train", train)
    monkeypatch.setattr(run, "_load", lambda name, adapter=None: object())
    monkeypatch.setattr(run, "_answer_all", lambda name, model: None)
    monkeypatch.setattr(run, "_exposures", lambda model, which: [0.0])
    return run, trained


@pytest.mark.parametrize(("name", "private"), [("canary-memorize", None), ("canary-memorize-eps6", 6.0)])
def test_the_canary_control_and_its_dp_twin_train_on_their_canaries_16_times_for_6_epochs(
    device: tuple[Device, list[dict[str, Any]]], name: str, private: float | None
) -> None:
    run, trained = device
    _, method, epsilon = next(r for r in RUNS if r[0] == name)
    assert method == "labels_only" and epsilon == private  # the control spends no ε, its twin 6

    run.train_and_evaluate(name, method, epsilon, RUN_RECIPES[name])

    (done,) = trained
    ids = [e.example_id for e in done["examples"]]
    assert sum(i.startswith("canary-B123") for i in ids) == 16 and len(set(ids)) == len(ids) == 17
    assert done["recipe"]["epochs"] == 6 and done["recipe"]["canary_repeats"] == 16
    assert run.rows[name]["recipe"] == done["recipe"]


def test_other_runs_keep_the_data_stages_recipe_and_canaries(
    device: tuple[Device, list[dict[str, Any]]],
) -> None:
    run, trained = device

    run.train_and_evaluate("distill-eps8", "distill", 8.0, RUN_RECIPES.get("distill-eps8", {}))

    (done,) = trained
    assert [e.example_id for e in done["examples"]] == [e.example_id for e in run.train]
    assert done["recipe"] == RECIPE and run.recipe == RECIPE  # the control's changes did not leak
