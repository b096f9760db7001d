"""Checkpoints of a distillation run: everything a killed run needs to go on as if it had not stopped.

    out_dir/checkpoints/step-000050/model/        the plain model (HF folder, or the LoRA adapter)
    out_dir/checkpoints/step-000050/state.pt      trainable weights, optimizer, accountant, samplers, RNG
    out_dir/checkpoints/step-000050/config.json   the DistillConfig, run name and dataset hash
    out_dir/checkpoints/LATEST                    the name of the newest complete checkpoint

LATEST is replaced atomically only after a checkpoint is complete, so a kill while saving leaves
the previous checkpoint in charge. The accountant's history travels with the weights: a resumed
run counts the steps it already took exactly once.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from torch import nn

from training.dp import DistillError

KEEP = 2  # complete checkpoints kept on disk
# May differ when a run resumes: elsewhere, or with a physical batch that fits the device's memory
# (memory only: the logical batch, the sampling and the noise do not depend on it).
IGNORED_KEYS = {"out_dir", "device", "checkpoint_every", "max_physical_batch"}


def checkpoint_root(out_dir: Path) -> Path:
    return out_dir / "checkpoints"


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The parameters that training changes, by their names in the plain (unwrapped) model."""
    return {name: p.detach().cpu().clone() for name, p in model.named_parameters() if p.requires_grad}


def save(
    out_dir: Path, step: int, *, model: nn.Module, state: dict[str, Any], identity: dict[str, Any]
) -> Path:
    """Write checkpoint `step` (model folder, state, config) and point LATEST at it."""
    root = checkpoint_root(out_dir)
    final = root / f"step-{step:06d}"
    partial = root / f".partial-{step:06d}"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    save_model(model, partial / "model")
    torch.save({**state, "trainable": trainable_state(model)}, partial / "state.pt")
    (partial / "config.json").write_text(json.dumps(identity, indent=2, sort_keys=True, default=str))
    shutil.rmtree(final, ignore_errors=True)
    os.replace(partial, final)
    pointer = root / ".LATEST.tmp"
    pointer.write_text(final.name)
    os.replace(pointer, root / "LATEST")
    for old in sorted(root.glob("step-*"))[:-KEEP]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def save_model(model: nn.Module, folder: Path) -> None:
    """The plain model as a HF folder (or a PEFT adapter folder) that loads without Opacus."""
    folder.mkdir(parents=True, exist_ok=True)
    save_pretrained = getattr(model, "save_pretrained", None)
    if save_pretrained is not None:
        save_pretrained(str(folder), safe_serialization=True)
    else:
        torch.save(model.state_dict(), folder / "model.pt")


def latest(out_dir: Path) -> Path | None:
    pointer = checkpoint_root(out_dir) / "LATEST"
    if not pointer.is_file():
        return None
    folder = checkpoint_root(out_dir) / pointer.read_text().strip()
    return folder if (folder / "state.pt").is_file() else None


def load(folder: Path, *, identity: dict[str, Any], model: nn.Module) -> dict[str, Any]:
    """Check the checkpoint belongs to this run and configuration, load the weights, return the state."""
    saved = json.loads((folder / "config.json").read_text())
    different = sorted(
        key
        for key in set(saved) | set(identity)
        if key not in IGNORED_KEYS
        and saved.get(key) != json.loads(json.dumps(identity.get(key), default=str))
    )
    if different:
        raise DistillError(
            f"the checkpoint in {folder} belongs to another run or configuration ({', '.join(different)})",
            hint="resume with the original settings and data, or use a new out_dir and run name",
        )
    state: dict[str, Any] = torch.load(folder / "state.pt", weights_only=False, map_location="cpu")
    params = dict(model.named_parameters())
    missing = [name for name in state["trainable"] if name not in params]
    if missing:
        raise DistillError(f"the checkpoint in {folder} has weights this student lacks: {missing[:3]}")
    with torch.no_grad():
        for name, value in state["trainable"].items():
            params[name].copy_(value.to(params[name].device))
    return state
