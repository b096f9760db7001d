"""The distillation benchmark's runs: a run's own recipe settings reach its training, and only its;
the public start is chosen by its fixed rule and every run but the untrained one starts from it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bench.distill import RUN_RECIPES, RUNS, START_CANDIDATES, main
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
    monkeypatch.setattr(run, "_load", lambda name, *adapters: object())
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


def test_every_run_but_the_untrained_student_starts_from_the_public_start(
    device: tuple[Device, list[dict[str, Any]]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run, _ = device
    run.start = tmp_path / "start"
    loaded: list[tuple[Path, ...]] = []
    monkeypatch.setattr(run, "_load", lambda name, *adapters: loaded.append(adapters))
    monkeypatch.setattr(
        run, "_train", lambda name, method, epsilon, examples, recipe: {"adapter": tmp_path / name}
    )
    kept: list[tuple[Path, Path]] = []
    monkeypatch.setattr(run, "_keep_adapter", lambda adapter, target: kept.append((adapter, target)))

    for name, method, epsilon in [r for r in RUNS if r[0] in ("student", "public-start", "distill-eps8")]:
        run.train_and_evaluate(name, method, epsilon)

    assert loaded == [(), (run.start,), (run.start, tmp_path / "distill-eps8")]
    assert "start" not in run.rows["student"]
    assert run.rows["public-start"]["start"] == run.rows["distill-eps8"]["start"] == str(run.start)
    # The served student is the start and the ε 8 adapter: both come back for the speed run.
    assert kept == [(tmp_path / "distill-eps8", run.out / "adapter"), (run.start, run.out / "start")]


def _candidates_answering(
    run: Device, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, replies: dict[str, str]
) -> None:
    """Each candidate trains to an adapter folder of its own and answers the one held-out item thus."""
    run.test = [({"key": "k", "question": "Where is IT?", "span": "A-014", "other": [],
                  "chunk": {"page": "it.md", "link": "it.md", "context": [7]}}, False)]  # fmt: skip
    run.by_id = {7: {"link": "it.md", "passage": "IT sits in room A-014."}}

    def train(name: str, method: str, epsilon: float | None, examples: Any, recipe: Any) -> dict[str, Any]:
        assert method == "distill" and epsilon is None  # public data: no DP, nothing spent
        folder = tmp_path / "runs" / name
        folder.mkdir(parents=True)
        (folder / "adapter_config.json").write_text(name)
        return {"name": name, "steps": 3, "adapter": folder}

    monkeypatch.setattr(run, "_train", train)
    monkeypatch.setattr(
        run, "_answer_all", lambda name, model: run.replies.update({name: {"written": [replies[name]]}})
    )


@pytest.mark.parametrize(
    ("replies", "chosen"),
    [
        ({"start-r2-qv": "I do not know.", "start-r16-all": "Room A-014 [1]."}, "r16-all"),
        ({"start-r2-qv": "Room A-014 [1].", "start-r16-all": "Room A-014 [1]."}, "r2-qv"),  # a tie
    ],
)
def test_the_public_start_keeps_the_most_correct_candidate_and_on_a_tie_the_smaller(
    device: tuple[Device, list[dict[str, Any]]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    replies: dict[str, str],
    chosen: str,
) -> None:
    run, _ = device
    _candidates_answering(run, tmp_path, monkeypatch, replies)
    kept: list[tuple[Path, Path]] = []
    monkeypatch.setattr(run, "_keep_adapter", lambda adapter, target: kept.append((adapter, target)))

    run.public_start(START_CANDIDATES, tmp_path / "kept")

    assert (tmp_path / "kept" / "adapter_config.json").read_text() == f"start-{chosen}"
    assert kept == [(tmp_path / "kept", run.out / "adapter")]
    found = json.loads((run.out / "start.json").read_text())
    assert found["chosen"] == chosen and set(found["candidates"]) == {"r2-qv", "r16-all"}
    correct = {k: c["scores"]["correct"] for k, c in found["candidates"].items()}
    assert correct == {k.removeprefix("start-"): float("A-014" in r) for k, r in replies.items()}


def test_the_public_start_row_needs_a_start(tmp_path: Path) -> None:
    data = {"chunks": [], "labelled": [], "canaries": {"A": [], "B": []}, "recipe": dict(RECIPE)}
    (tmp_path / "input.json").write_text(json.dumps(data))
    common = ["device", "runs", "--input", str(tmp_path / "input.json"), "--out", str(tmp_path / "o"),
              "--work", str(tmp_path / "w")]  # fmt: skip
    with pytest.raises(SystemExit, match="public-start row needs --start"):
        main([*common, "--runs", "public-start"])
    with pytest.raises(SystemExit, match="no adapter there"):
        main([*common, "--start", str(tmp_path / "nothing")])


def test_a_student_with_another_tokenizer_trains_on_the_teachers_carried_signal(tmp_path: Path) -> None:
    import math

    from tests.tiny_llm import SENTENCES, build_tiny_llama, build_tokenizer
    from training.data import TrainingDataError
    from training.types import TeacherSignal

    folder = build_tiny_llama(tmp_path / "student", hidden=128, layers=1, heads=2, vocab_size=300)
    teacher = build_tokenizer(SENTENCES, tmp_path / "teacher", vocab_size=600, first_special=["<x>"])
    recipe = {"epochs": 1, "lr": 1e-3, "warmup": 0.1, "batch_size": 2, "max_physical_batch": 2,
              "max_len": 2048, "temperature": 1.0, "alpha": 0.3, "sparse": "tail", "max_grad_norm": 1.0,
              "lora_rank": 0, "canary_repeats": 0}  # fmt: skip
    data = {"chunks": [], "labelled": [], "canaries": {"A": [], "B": []}, "recipe": recipe}
    run = Device(tmp_path / "work", tmp_path / "out", data, on="cpu")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    run.tokenizer = AutoTokenizer.from_pretrained(str(folder))
    run._student = lambda adapter=None, *, from_start=True: AutoModelForCausalLM.from_pretrained(str(folder))  # type: ignore[method-assign]
    answer = "Passwords expire every 90 days [1]."
    ids = (*teacher(answer, add_special_tokens=False)["input_ids"], teacher.eos_token_id)
    rows = tuple((i, teacher.eos_token_id) for i in ids)
    run.train = [
        QAExample(f"q{n}", f"d{n}", ("Passwords expire every 90 days.",), "When?", answer) for n in range(4)
    ]
    run.soft = {
        e.example_id: TeacherSignal(e.example_id, "t", answer, ids, rows, tuple((-0.1, -3.0) for _ in ids))
        for e in run.train
    }
    with pytest.raises(TrainingDataError, match="share one tokenizer"):
        run._train("distill-nonprivate", "distill", None, run.train, recipe)

    run.teacher_tokenizer = teacher
    row = run._train("distill-nonprivate", "distill", None, run.train, recipe)

    assert row["train_examples"] == 4 and row["steps"] == 2 and math.isfinite(row["final_loss"])
    assert (row["adapter"] / "config.json").exists() or any(row["adapter"].iterdir())
