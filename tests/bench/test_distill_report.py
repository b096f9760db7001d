"""The distillation report's accounting: a ledger shared by processes side by side is summed once,
and the DP step ratios come from the timing stage when it ran."""

from __future__ import annotations

import gzip
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from bench.distill_report import build

TEST = [
    {"question": "Which room is IT?", "span": "A-014", "link": "handbook/it/desk.md#where", "other": False,
     "passages": [{"number": 1, "link": "handbook/it/desk.md#where", "text": "IT sits in room A-014."}]},
]  # fmt: skip


def _entry(run: str, epsilon: float, status: str) -> dict[str, Any]:
    return {"run": run, "epsilon": epsilon, "epsilon_planned": 8.0, "delta": 1e-5, "status": status,
            "dataset_hash": "h", "details": {}}  # fmt: skip


def _output(folder: Path, rows: dict[str, Any], ledger: list[dict[str, Any]], replies: list[str]) -> Path:
    folder.mkdir()
    runs = {"device": "GPU", "recipe": {}, "rows": rows, "ledger": ledger, "log": [], "train_examples": 10}
    (folder / "runs.json").write_text(json.dumps(runs))
    answers = {
        "test": TEST,
        "labelled": [],
        "replies": {n: {"written": replies, "labelled": []} for n in rows},
    }
    (folder / "replies.json").write_text(json.dumps(answers))
    return folder


def _run(name: str, epsilon: float | None, step_s: float, peak: int) -> dict[str, Any]:
    return {"name": name, "method": "distill", "epsilon": epsilon, "epsilon_spent": epsilon,
            "mean_step_time_s": step_s, "peak_memory_bytes": peak, "final_loss": 1.0}  # fmt: skip


@pytest.fixture
def outputs(tmp_path: Path) -> list[Path]:
    teacher = {"teacher": {"name": "teacher", "method": "teacher", "epsilon": None}}
    early = [_entry("bench-distill-distill-eps8", 8.0, "reserved")]
    late = [
        _entry("bench-distill-distill-eps8", 7.99, "settled"),
        _entry("bench-distill-eps1", 0.99, "settled"),
    ]
    return [
        _output(tmp_path / "dout", teacher, [], ["Room A-014 [1]."]),
        # The settled view first, the earlier reserved one last: the settled entry still wins.
        _output(tmp_path / "b", {"distill-eps1": _run("distill-eps1", 1.0, 3.0, 300)}, late, ["A-014 [1]"]),
        _output(tmp_path / "a", {"distill-eps8": _run("distill-eps8", 8.0, 4.0, 400)}, early, ["No idea."]),
        _output(
            tmp_path / "c",
            {"distill-nonprivate": _run("distill-nonprivate", None, 1.0, 100)},
            late,
            ["A-014"],
        ),
    ]


def test_a_shared_ledger_is_counted_once_each_run_as_settled(outputs: list[Path]) -> None:
    results, _ = build(outputs, "teacher-model", "student-model")
    assert sorted((e["run"], e["status"]) for e in results["ledger"]) == [
        ("bench-distill-distill-eps8", "settled"),
        ("bench-distill-eps1", "settled"),
    ]
    assert results["ledger_total_epsilon"] == pytest.approx(8.98)


def test_step_ratios_come_from_the_timing_stage_when_it_ran(outputs: list[Path], tmp_path: Path) -> None:
    results, _ = build(outputs, "teacher-model", "student-model")
    rows = {r["name"]: r for r in results["rows"]}
    assert rows["distill-eps8"]["dp_step_time_ratio"] == 4.0  # against the run without DP
    assert rows["distill-nonprivate"]["dp_step_time_ratio"] is None
    timing = tmp_path / "timing"
    timing.mkdir()
    (timing / "timing.json").write_text(
        json.dumps({"dp_step_time_ratio": 1.4, "dp_peak_memory_ratio": 1.035})
    )
    (timing / "runs.json").write_text((outputs[0] / "runs.json").read_text())
    (timing / "replies.json").write_text((outputs[0] / "replies.json").read_text())
    rows = {r["name"]: r for r in build([*outputs, timing], "t", "s")[0]["rows"]}
    assert (rows["distill-eps8"]["dp_step_time_ratio"], rows["distill-eps1"]["dp_peak_memory_ratio"]) == (
        1.4,
        1.035,
    )
    assert rows["distill-eps8"]["correct"] == 0.0 and rows["distill-eps1"]["correct"] == 1.0


def test_recipes_side_by_side_follow_the_standard_rows(outputs: list[Path], tmp_path: Path) -> None:
    """A tagged run (another recipe on the same data) gets its own row after the standard ones."""
    tagged = _run("distill-eps8-t1", 8.0, 4.0, 400) | {"recipe": {"temperature": 1.0}}
    extra = _output(tmp_path / "t1", {"distill-eps8-t1": tagged}, [], ["It is A-014 [1]."])
    results, summary = build([*outputs, extra], "t", "s", tuned_on="the public pilot")
    names = [r["name"] for r in results["rows"]]
    assert names == ["teacher", "distill-nonprivate", "distill-eps1", "distill-eps8", "distill-eps8-t1"]
    row = results["rows"][-1]
    assert (row["correct"], row["recipe"]) == (1.0, {"temperature": 1.0})
    assert results["tuned_on"] == "the public pilot" and "distill-eps8-t1 1.0" in summary


def test_a_tag_makes_the_chosen_recipes_runs_the_tables_rows(tmp_path: Path) -> None:
    """The chosen recipe ran under a tag: its runs are the table's rows, with their own recipe."""
    teacher = {"teacher": {"name": "teacher", "method": "teacher", "epsilon": None}}
    chosen = {"temperature": 1.0, "alpha": 0.7}
    ledger = [_entry("bench-distill-distill-eps8-t1", 7.99, "settled")]
    nonprivate = _run("distill-nonprivate-t1", None, 1.0, 100) | {"recipe": chosen}
    private = _run("distill-eps8-t1", 8.0, 2.0, 120) | {"recipe": chosen}
    made = [
        _output(tmp_path / "dout", teacher, [], ["Room A-014 [1]."]),
        _output(tmp_path / "np", {"distill-nonprivate-t1": nonprivate}, [], ["A-014 [1]"]),
        _output(tmp_path / "e8", {"distill-eps8-t1": private}, ledger, ["No idea."]),
    ]
    # Another recipe's run beside them, listed first: its recipe is not the table's.
    other = _run("distill-eps4-t3a07", 4.0, 2.0, 120) | {"recipe": {"temperature": 3.0, "alpha": 0.7}}
    made.insert(1, _output(tmp_path / "t3", {"distill-eps4-t3a07": other}, [], ["A-014 [1]"]))
    results, _ = build(made, "t", "s", tag="-t1")
    rows = {r["name"]: r for r in results["rows"]}
    assert list(rows) == ["teacher", "distill-nonprivate", "distill-eps8", "distill-eps4-t3a07"]
    assert (rows["distill-nonprivate"]["correct"], rows["distill-eps8"]["correct"]) == (1.0, 0.0)
    assert rows["distill-eps8"]["dp_step_time_ratio"] == 2.0  # against the tagged run without DP
    assert results["recipe"] == chosen and results["table_tag"] == "-t1"
    assert results["ledger_total_epsilon"] == pytest.approx(7.99)
    with pytest.raises(SystemExit, match="no run is named with the tag"):
        build(made, "t", "s", tag="-t3")
    both = _output(tmp_path / "plain", {"distill-eps8": _run("distill-eps8", 8.0, 2.0, 120)}, [], ["x"])
    with pytest.raises(SystemExit, match="both 'distill-eps8' and 'distill-eps8-t1'"):
        build([*made, both], "t", "s", tag="-t1")


def test_the_step_timing_may_come_from_another_run_and_names_its_source(
    outputs: list[Path], tmp_path: Path
) -> None:
    timing = tmp_path / "timing.json"
    timing.write_text(json.dumps({"dp_step_time_ratio": 0.99, "dp_peak_memory_ratio": 1.02}))
    results, _ = build(outputs, "t", "s", timing_file=timing)
    rows = {r["name"]: r for r in results["rows"]}
    assert (rows["distill-eps8"]["dp_step_time_ratio"], rows["distill-eps1"]["dp_peak_memory_ratio"]) == (
        0.99,
        1.02,
    )
    assert results["timing_source"] == str(timing)
    assert build(outputs, "t", "s")[0]["timing_source"] is None


def test_recipe_settings_on_the_command_line() -> None:
    import argparse

    from bench.distill import _setting

    assert _setting("temperature=1") == ("temperature", 1)
    assert _setting("sparse=tail") == ("sparse", "tail")
    assert _setting('lora_targets=["q_proj"]') == ("lora_targets", ["q_proj"])
    with pytest.raises(argparse.ArgumentTypeError, match="recipe key"):
        _setting("temprature=1")
    with pytest.raises(argparse.ArgumentTypeError, match="KEY=VALUE"):
        _setting("temperature")


def test_canary_exposure_is_compared_with_the_untrained_student_on_the_same_canaries(
    outputs: list[Path], tmp_path: Path
) -> None:
    """The reference is a model that never saw the canaries: the untrained student, same set A."""
    untrained = {"name": "student", "method": "none", "epsilon": None,
                 "exposure": {"A": [1.0, 2.0], "B": [3.0, 3.0]}}  # fmt: skip
    private = _run("distill-eps8", 8.0, 4.0, 400) | {"exposure": {"A": [1.5, 2.5], "B": [0.5, 0.5]}}
    extra = [
        _output(tmp_path / "s", {"student": untrained}, [], ["A-014 [1]"]),
        _output(tmp_path / "p", {"distill-eps8": private}, [], ["A-014 [1]"]),
    ]
    rows = {r["name"]: r for r in build([*outputs, *extra], "t", "s")[0]["rows"]}
    assert (rows["distill-eps8"]["canary_exposure"], rows["distill-eps8"]["reference_exposure"]) == (2.0, 1.5)
    assert rows["distill-eps8"]["never_seen_set_exposure"] == 0.5
    assert rows["student"]["reference_exposure"] == 1.5
    unscored = rows["distill-eps1"]
    assert unscored["canary_exposure"] is None and unscored["reference_exposure"] is None
    assert rows["teacher"]["reference_exposure"] is None


def test_the_machine_is_the_one_that_measured_the_speed(outputs: list[Path]) -> None:
    """The report may run anywhere; the CPU figure it carries (vLLM speed) names its own machine."""
    assert "machine" not in build(outputs, "t", "s")[0]  # the report's host, filled in when written
    xeon = {"cpu": "Intel Xeon", "cpus": 2}
    (outputs[1] / "speed.json").write_text(
        json.dumps({"student_teacher_tokens_per_s_ratio": 2.8, "machine": xeon})
    )
    results, _ = build(outputs, "t", "s")
    assert results["machine"] == xeon
    assert {r["student_teacher_tokens_per_s_ratio"] for r in results["rows"]} == {None, 2.8}
    # An earlier directory's measurement (another adapter's) gives way to a later one's.
    (outputs[0] / "speed.json").write_text(json.dumps({"student_teacher_tokens_per_s_ratio": 2.6}))
    results, _ = build(outputs, "t", "s")
    assert {r["student_teacher_tokens_per_s_ratio"] for r in results["rows"]} == {None, 2.8}


def test_runs_on_a_public_start_take_it_as_their_canary_reference_and_name_it(
    outputs: list[Path], tmp_path: Path
) -> None:
    """On top of a public start, the model that never saw the canaries is the start itself."""
    untrained = {"name": "student", "method": "none", "epsilon": None, "exposure": {"A": [1.0], "B": [1.0]}}
    start = {"name": "public-start", "method": "none", "epsilon": None, "start": "/tmp/start",
             "exposure": {"A": [3.0], "B": [1.0]}}  # fmt: skip
    extra = [_output(tmp_path / "s", {"student": untrained, "public-start": start}, [], ["A-014 [1]"])]
    run = {"steps": 75, "train_examples": 800, "final_loss": 1.0, "train_time_s": 9.0}
    candidate = {"recipe": {"lora_rank": 2}, "scores": {"correct": 0.7}, "adapter": "/tmp/x", "run": run}
    chosen = {"corpus": "python-faq", "chosen": "r2-qv", "candidates": {"r2-qv": candidate}}
    (tmp_path / "start.json").write_text(json.dumps(chosen))

    results = build([*outputs, *extra], "t", "s", start_file=tmp_path / "start.json")[0]

    rows = {r["name"]: r for r in results["rows"]}
    assert rows["public-start"]["reference_exposure"] == rows["student"]["reference_exposure"] == 3.0
    assert [r["name"] for r in results["rows"]][:3] == ["teacher", "student", "public-start"]
    assert rows["public-start"]["start"] == "/tmp/start" and rows["student"]["start"] is None
    assert results["public_start"]["chosen"] == "r2-qv"
    assert results["public_start"]["candidates"]["r2-qv"]["train"]["steps"] == 75
    assert "adapter" not in results["public_start"]["candidates"]["r2-qv"]


def _adapter(model_dir: Path, out: Path, targets: list[str], rank: int) -> None:
    """A LoRA adapter with non-zero weights (peft's default B is zero, a no-op), saved at `out`."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(model_dir))
    config = LoraConfig(r=rank, target_modules=targets, init_lora_weights=False)
    get_peft_model(model, config).save_pretrained(str(out))


def test_the_served_student_merges_the_public_start_then_the_runs_adapter(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The speed row serves what the runs trained: the base, the public start and the ε 8 adapter."""
    import shutil
    import types

    import torch
    from safetensors.torch import load_file

    import core.llm.store
    from bench.distill_report import _merged
    from tests.tiny_llm import build_tiny_llama

    base = build_tiny_llama(tmp_path / "base")
    monkeypatch.setattr(core.llm.store, "resolve_model", lambda name, store: types.SimpleNamespace(path=base))
    run = tmp_path / "run"
    _adapter(base, run / "start", ["q_proj", "v_proj", "gate_proj"], 4)
    _adapter(base, run / "adapter", ["q_proj", "v_proj"], 2)
    only_adapter = tmp_path / "only"
    shutil.copytree(run / "adapter", only_adapter / "adapter")

    weights = load_file(str(_merged(run, "student", None) / "model.safetensors"))
    without_start = load_file(str(_merged(only_adapter, "student", None) / "model.safetensors"))
    plain = {k: v.to(torch.bfloat16) for k, v in load_file(str(base / "model.safetensors")).items()}

    key = "model.layers.0.mlp.gate_proj.weight"  # only the start adapts it
    assert not torch.equal(weights[key], plain[key]) and torch.equal(
        without_start[key].float(), plain[key].float()
    )
    key = "model.layers.0.self_attn.q_proj.weight"  # both do: the merged model differs from either alone
    assert not torch.equal(weights[key], without_start[key]) and not torch.equal(
        without_start[key], plain[key]
    )


def test_gzipped_replies_score_as_the_plain_ones(outputs: list[Path]) -> None:
    """Committed device outputs keep their replies gzipped; the report reads them the same."""
    plain, _ = build(outputs, "t", "s")
    for folder in outputs:
        replies = folder / "replies.json"
        (folder / "replies.json.gz").write_bytes(gzip.compress(replies.read_bytes()))
        replies.unlink()
    zipped, _ = build(outputs, "t", "s")
    assert [(r["name"], r["correct"]) for r in zipped["rows"]] == [
        (r["name"], r["correct"]) for r in plain["rows"]
    ]
    assert zipped["scores"] == plain["scores"]


def test_committed_device_outputs_keep_their_replies_gzipped() -> None:
    """Every device call carries the working tree beside a model piece within 64 MiB: plain replies
    (about 300 KB each, seven times their gzipped size) would shrink the pieces as results grow."""
    repo = Path(__file__).parents[2]
    command = ["git", "ls-files", "bench/results/distill_device"]
    listed = subprocess.run(command, cwd=repo, capture_output=True, text=True, check=True)
    plain = [name for name in listed.stdout.splitlines() if name.endswith("replies.json")]
    assert plain == [], f"gzip -9 -n these before committing: {plain}"
