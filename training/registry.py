"""The model registry: versions with immutable manifests, a quality gate, activation in vLLM, rollback.

    registry = Registry(engine, Path("var/training/models"), base_name="qwen-0.5b")
    version = registry.register(run_id, adapter_dir, manifest, base=student_dir)   # files + row
    verdict = registry.gate(version, tolerance=0.02, canary_limit_bits=3.0)
    await registry.activate(version, server, actor="slack:U0ADMIN")                 # load, then switch

Version 0 is the base student itself (served under `base_name`); every trained version is a LoRA
adapter over it, copied to `<root>/v<N>/adapter` with `<root>/v<N>/manifest.json` beside it. The
manifest (base model, dataset hash, ε/δ, figures, teacher, who, when, and the sha256 of every adapter
file) is written once and made read-only; activation refuses a version whose files are missing or
changed. Activation loads the adapter into the running vLLM server first and only then marks the
version active in the database, which is what answers read (core.training.RoutedLLM): answers in
flight finish on the version they started with, and a failed load leaves the active one serving.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy import Engine, func, select, update
from sqlmodel import Session, col

from core.db import session_scope
from core.llm import LLMBadRequest, LLMError
from core.models import ModelVersionRow, utcnow
from core.training import ACTIVE, TrainingRefused

REGISTERED, RETIRED, REJECTED = "registered", "retired", "rejected"


class AdapterServer(Protocol):
    """What activation needs of the model server (core.llm.vllm.VLLMClient has both)."""

    async def load_lora(self, name: str, path: str) -> None: ...

    async def models(self) -> list[str]: ...


@dataclass(frozen=True, slots=True)
class GateVerdict:
    passed: bool
    reasons: tuple[str, ...]


class Registry:
    def __init__(self, engine: Engine, root: Path, *, base_name: str) -> None:
        self.engine, self.root, self.base_name = engine, root, base_name

    # --- reading ---

    def versions(self) -> list[ModelVersionRow]:
        self._ensure_base()
        with Session(self.engine) as session:
            query = select(ModelVersionRow).order_by(col(ModelVersionRow.version))
            return list(session.execute(query).scalars().all())

    def get(self, version: int) -> ModelVersionRow | None:
        self._ensure_base()
        with Session(self.engine) as session:
            return session.get(ModelVersionRow, version)

    def active(self) -> ModelVersionRow | None:
        with Session(self.engine) as session:
            query = select(ModelVersionRow).where(col(ModelVersionRow.status) == ACTIVE)
            return session.execute(query).scalars().first()

    # --- registering ---

    def register(self, run_id: int, adapter: Path, manifest: dict[str, Any], *, base: Path) -> int:
        """Copy the adapter in, write its manifest once, add the row; returns the new version number."""
        self._ensure_base()
        with Session(self.engine) as session:
            version = int(session.execute(select(func.max(ModelVersionRow.version))).scalar() or 0) + 1
        folder = self.root / f"v{version}"
        target = folder / "adapter"
        shutil.rmtree(folder, ignore_errors=True)
        shutil.copytree(adapter, target)
        _point_at_base(target, base)
        files = {p.name: _sha256(p) for p in sorted(target.iterdir()) if p.is_file()}
        record = {**manifest, "version": version, "created_at": utcnow().isoformat(), "files": files}
        manifest_path = folder / "manifest.json"
        manifest_path.write_text(json.dumps(record, indent=2, sort_keys=True, default=str))
        for path in [manifest_path, *target.iterdir()]:
            path.chmod(stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)  # immutable by convention and mode
        with session_scope(self.engine) as session:
            session.add(
                ModelVersionRow(
                    version=version,
                    served_name=f"kb-v{version}",
                    path=str(target),
                    status=REGISTERED,
                    run_id=run_id,
                    manifest=record,
                    created_at=utcnow(),
                )
            )
        return version

    def gate(self, version: int, *, tolerance: float, canary_limit_bits: float) -> GateVerdict:
        """Correctness at least the active version's minus `tolerance`, canary exposure under the limit."""
        row = self._require(version)
        figures = row.manifest.get("figures", {})
        reasons = []
        mine, theirs = figures.get("correctness"), figures.get("active_correctness")
        if mine is None or theirs is None:
            reasons.append("it has no correctness figures to compare")
        elif mine < theirs - tolerance:
            reasons.append(
                f"its correctness {mine:.3f} is below the active version's {theirs:.3f} minus the "
                f"tolerance {tolerance:g}"
            )
        exposure = figures.get("canary_exposure_bits")
        if exposure is not None and exposure > canary_limit_bits:
            reasons.append(
                f"its canary exposure {exposure:.2f} bits is above the limit {canary_limit_bits:g}"
            )
        verdict = GateVerdict(not reasons, tuple(reasons))
        with session_scope(self.engine) as session:
            stored = session.get(ModelVersionRow, version)
            if stored is not None:
                stored.gate = {"passed": verdict.passed, "reasons": list(reasons), "at": utcnow().isoformat()}
                if not verdict.passed and stored.status == REGISTERED:
                    stored.status = REJECTED
        return verdict

    # --- serving ---

    async def activate(self, version: int, server: AdapterServer) -> ModelVersionRow:
        """Load `version` into the model server, then make it the one answers use (module docstring)."""
        row = self._require(version)
        if row.status == ACTIVE:
            raise TrainingRefused(f"version {version} ({row.served_name}) is already active")
        if row.status == REJECTED:
            reasons = "; ".join(row.gate.get("reasons", [])) or "it failed the quality gate"
            raise TrainingRefused(f"version {version} failed the quality gate: {reasons}")
        await self.load(row, server)
        with session_scope(self.engine) as session:
            session.execute(
                update(ModelVersionRow).where(col(ModelVersionRow.status) == ACTIVE).values(status=RETIRED)
            )
            session.execute(
                update(ModelVersionRow)
                .where(col(ModelVersionRow.version) == version)
                .values(status=ACTIVE, activated_at=utcnow(), ab_share=0.0)
            )
        return self._require(version)

    async def load(self, row: ModelVersionRow, server: AdapterServer) -> None:
        """Make sure the server serves `row` (the base always is); refuse missing or changed files."""
        if row.version == 0:
            return
        self.check_files(row)
        try:
            if row.served_name in await server.models():
                return
            await server.load_lora(row.served_name, row.path)
        except LLMBadRequest as exc:
            raise TrainingRefused(
                f"the model server rejected version {row.version}'s adapter: {exc}",
                hint="check that the server runs the same base model with LoRA enabled (`kb llm serve`)",
            ) from exc
        except LLMError as exc:
            raise TrainingRefused(
                f"the model server could not be reached to load version {row.version}: {exc}",
                hint="start it (`kb llm serve`) and try again",
            ) from exc

    async def restore(self, server: AdapterServer) -> ModelVersionRow | None:
        """After a restart of either side: load the active version (and an A/B candidate) again."""
        rows = [r for r in self.versions() if r.status == ACTIVE or r.ab_share > 0]
        for row in rows:
            await self.load(row, server)
        return self.active()

    def set_share(self, version: int, share: float) -> None:
        """Give `version` this share of questions (0 ends the test); one candidate at a time."""
        with session_scope(self.engine) as session:
            session.execute(update(ModelVersionRow).values(ab_share=0.0))
            if share > 0:
                session.execute(
                    update(ModelVersionRow)
                    .where(col(ModelVersionRow.version) == version)
                    .values(ab_share=share)
                )

    def check_files(self, row: ModelVersionRow) -> None:
        folder = Path(row.path)
        files: dict[str, str] = row.manifest.get("files", {})
        missing = [name for name in files if not (folder / name).is_file()]
        if not folder.is_dir() or missing:
            raise TrainingRefused(
                f"version {row.version}'s files are missing ({', '.join(missing) or folder})",
                hint="restore them from a backup of the training folder, or pick another version",
            )
        changed = [name for name, digest in files.items() if _sha256(folder / name) != digest]
        if changed:
            raise TrainingRefused(
                f"version {row.version}'s files changed since export ({', '.join(changed)})",
                hint="a registered version is immutable: retrain instead of editing it",
            )

    def _require(self, version: int) -> ModelVersionRow:
        row = self.get(version)
        if row is None:
            known = ", ".join(str(r.version) for r in self.versions())
            raise TrainingRefused(f"there is no model version {version}", hint=f"known versions: {known}")
        return row

    def _ensure_base(self) -> None:
        with Session(self.engine) as session:
            if session.get(ModelVersionRow, 0) is not None:
                return
        with session_scope(self.engine) as session:
            manifest = {"base_model": self.base_name, "note": "the base student, without an adapter"}
            has_active = session.execute(
                select(ModelVersionRow).where(col(ModelVersionRow.status) == ACTIVE)
            ).first()
            session.add(
                ModelVersionRow(
                    version=0,
                    served_name=self.base_name,
                    status=REGISTERED if has_active else ACTIVE,
                    manifest=manifest,
                    created_at=utcnow(),
                    activated_at=None if has_active else utcnow(),
                )
            )


def _point_at_base(adapter: Path, base: Path) -> None:
    """vLLM reads the adapter's base from its config: name the student folder it was trained over."""
    config = adapter / "adapter_config.json"
    if config.is_file():
        data = json.loads(config.read_text())
        data["base_model_name_or_path"] = str(base)
        config.write_text(json.dumps(data, indent=2))


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
