"""Answer quality of every answerer on both labelled sets, side by side, in one run.

    .venv/bin/python bench/answers.py                       # everything: ~1 hour on 2 busy cores
    .venv/bin/python bench/answers.py --models extractive qwen2.5-coder-0.5b-instruct --sets handbook
    .venv/bin/python bench/answers.py --details answers.jsonl   # also every answer, to read the misses

Each set's corpus (`examples/handbook`; the FAQ pages of Debian's python3.11-doc, bench/sets/README.md)
is indexed once and each question retrieved once, so every answerer sees the same passages. Each
model from the store is served in turn by vLLM (CPU defaults) and asked every question one at a time
through the product's answer path (knowledge/answer_runs.py), scored by knowledge/answer_quality.py.
Time to first token includes retrieval; tokens/s is streamed tokens after the first over the time
after the first. The handbook set is the development set the prompt and thresholds were tuned on;
the Python FAQ set is the held-out check.

`vllm_vs_transformers_tokens_per_s_c8`: the default model's output tokens/s on the product's prompts
for the first 8 handbook questions (greedy, exactly `--c8-tokens` new tokens each), through vLLM (8
concurrent requests), then transformers `generate` of the same folder (one left-padded batch).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import shutil
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.common import HANDBOOK, RESULTS, free_port, machine, machine_label, scratch_kb, write_results  # noqa: E402

if TYPE_CHECKING:
    from core.llm import Message
    from knowledge.answer_runs import Retrieved
    from knowledge.service import KnowledgeBase

MODELS = ["extractive", "smollm2-135m-instruct", "qwen2.5-coder-0.5b-instruct", "qwen2.5-coder-1.5b-instruct"]
DEFAULT_MODEL = "qwen2.5-coder-0.5b-instruct"
SETS = {
    "handbook": REPO / "bench" / "sets" / "handbook_answers.jsonl",
    "python-faq": REPO / "bench" / "sets" / "python_faq_answers.jsonl",
}
FAQ_HTML = Path("/usr/share/doc/python3.11-doc/html/faq")


def corpus(name: str, scratch: Path) -> Path:
    """The documents of a set: the handbook as it is; the FAQ pages copied to DIR/faq (no index)."""
    if name == "handbook":
        return HANDBOOK
    docs = scratch / "faq-docs"
    if not (docs / "faq").is_dir():
        if not FAQ_HTML.is_dir():
            raise SystemExit(f"{FAQ_HTML} is missing: apt-get install python3.11-doc")
        (docs / "faq").mkdir(parents=True)
        for page in sorted(FAQ_HTML.glob("*.html")):
            if page.name != "index.html":
                shutil.copy(page, docs / "faq" / page.name)
    return docs


def _server(model: str, log: Path) -> Any:
    from core.llm.server import CPU_MAX_MODEL_LEN, VLLMServer
    from core.llm.store import ModelStore, resolve_model

    resolved = resolve_model(model, ModelStore(None))
    return VLLMServer(
        resolved.path, port=free_port(), served_name=model, max_model_len=CPU_MAX_MODEL_LEN, log_path=log
    )


class _Unreachable(logging.Handler):
    """Counts the answers that fell back because the model server could not be reached or was
    marked down: a row with any measured the server's trouble as well as the model."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.count += "LLMUnavailable" in record.getMessage()


async def _answer_with(
    kb: KnowledgeBase, retrieved: list[Retrieved], url: str, model: str, max_tokens: int
) -> tuple[list[Any], int]:
    from core.llm.vllm import VLLMClient
    from knowledge.answer_runs import answer_set

    unreachable, log = _Unreachable(), logging.getLogger("knowledge.generation")
    log.addHandler(unreachable)
    # Generous timeouts: a busy 2-core machine prefills 1.5k tokens of a 1.5B model slowly, and a
    # timeout would score the extractive fallback instead of the model.
    try:
        async with VLLMClient(url, model=model, first_token_timeout=300, total_timeout=900) as llm:
            answered = await answer_set(kb, retrieved, llm=llm, model=model, max_answer_tokens=max_tokens)
    finally:
        log.removeHandler(unreachable)
    return answered, unreachable.count


def run_models(
    kbs: dict[str, KnowledgeBase],
    retrieved: dict[str, list[Retrieved]],
    models: list[str],
    args: argparse.Namespace,
) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """One row per model and set; the c8 comparison while the default model's server is up."""
    from knowledge.answer_runs import answer_set, summarise

    rows: list[dict[str, Any]] = []
    c8: dict[str, Any] | None = None
    for model in models:
        if args.c8_only and model != DEFAULT_MODEL:
            continue
        if model == "extractive":
            for name, kb in kbs.items():
                answered = asyncio.run(answer_set(kb, retrieved[name]))
                rows.append({"model": model, "set": name} | summarise(answered))
                _progress(rows[-1])
                _details(args, model, name, answered)
            continue
        server = _server(model, args.scratch / f"vllm-{model}.log")
        started = time.perf_counter()
        server.start()
        try:
            server.wait_ready(timeout=900)
            ready_s = round(time.perf_counter() - started, 1)
            for name, kb in kbs.items() if not args.c8_only else ():
                answered, unreachable = asyncio.run(
                    _answer_with(kb, retrieved[name], server.url, model, args.max_tokens)
                )
                rows.append(
                    {"model": model, "set": name, "server_start_s": ready_s}
                    | summarise(answered)
                    | {"model_unreachable": unreachable}
                )
                _progress(rows[-1])
                _details(args, model, name, answered)
            # Beside the scratch data: a run that dies late keeps what it measured.
            (args.scratch / "rows-partial.json").write_text(json.dumps(rows, indent=2))
            if model == DEFAULT_MODEL and args.c8_tokens > 0:
                prompts = asyncio.run(_c8_prompts(retrieved, server.url, model))
                c8 = {"vllm": asyncio.run(vllm_c8(server.url, model, prompts, args.c8_tokens))}
        finally:
            server.stop()
        if c8 is not None and "transformers" not in c8:
            c8["transformers"] = _transformers_c8(server.model_dir, prompts, args.c8_tokens)
            local = c8["transformers"]["tokens_per_s"]
            ratio = round(c8["vllm"]["tokens_per_s"] / local, 2) if local else None
            c8 |= {"ratio": ratio, "concurrency": 8, "new_tokens": args.c8_tokens}
    return rows, c8


def _details(args: argparse.Namespace, model: str, set_name: str, answered: list[Any]) -> None:
    """Every answer of one model on one set, one JSON line each, under --details (reading failures)."""
    if args.details is None:
        return
    args.details.parent.mkdir(parents=True, exist_ok=True)
    with args.details.open("a", encoding="utf-8") as out:
        for one in answered:
            score = one.score
            line = {
                "model": model, "set": set_name, "line": one.item.line, "query": one.item.query,
                "answers": list(one.item.answers), "unanswerable": one.item.unanswerable,
                "text": one.answer.text, "by": one.answer.model, "correct": score.correct,
                "abstained": score.abstained, "cited": score.cited, "supported": score.supported,
                "invented": score.invented_citations, "first_token_s": one.first_token_s,
            }  # fmt: skip
            out.write(json.dumps(line, ensure_ascii=False) + "\n")


def _progress(row: dict[str, Any]) -> None:
    keys = ("correct", "abstain", "citation_precision", "invented_citations", "ttft_p95_s", "tokens_per_s")
    line = f"{row['model']:<28} {row['set']:<10} " + "  ".join(f"{k} {row[k]}" for k in keys)
    if row.get("model_unreachable"):
        line += f"  MODEL UNREACHABLE for {row['model_unreachable']} answers: the row measures that too"
    print(line, flush=True)


async def _c8_prompts(retrieved: dict[str, list[Retrieved]], url: str, model: str) -> list[list[Message]]:
    """The product's prompts (system rules, numbered passages, question) of 8 handbook questions."""
    from core.llm.vllm import VLLMClient
    from knowledge.prompt import build_prompt

    chosen = [r for r in retrieved["handbook"] if r.hits][:8]
    async with VLLMClient(url, model=model) as llm:
        return [
            (await build_prompt(r.item.query, r.hits, llm=llm, max_context_tokens=1536)).messages
            for r in chosen
        ]


async def vllm_c8(url: str, model: str, prompts: list[list[Message]], tokens: int) -> dict[str, Any]:
    from core.llm.vllm import VLLMClient

    extra = {"ignore_eos": True, "min_tokens": tokens}
    async with VLLMClient(
        url, model=model, first_token_timeout=600, total_timeout=1200, extra_body=extra
    ) as llm:
        await llm.chat(prompts[0], max_tokens=tokens)  # warm-up (min_tokens applies to every request)
        started = time.perf_counter()
        done = await asyncio.gather(*(llm.chat(p, max_tokens=tokens, temperature=0.0) for p in prompts))
        wall = time.perf_counter() - started
    generated = sum(c.completion_tokens for c in done)
    return {"tokens": generated, "wall_s": round(wall, 2), "tokens_per_s": round(generated / wall, 2)}


def _transformers_c8(model_dir: Path, prompts: list[list[Message]], tokens: int) -> dict[str, Any]:
    """transformers `generate` of the same folder: the 8 prompts as one left-padded greedy batch."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from core.llm.server import native_bf16

    # Every core, as vLLM's CPU engine has (the product pins torch to one thread for queries).
    torch.set_num_threads(os.cpu_count() or 1)
    tokenizer = AutoTokenizer.from_pretrained(model_dir, padding_side="left")
    # The dtype vLLM computes in on this CPU (core.llm.server.native_bf16), so both run the same arithmetic.
    dtype = "bfloat16" if native_bf16() else "float32"
    model = AutoModelForCausalLM.from_pretrained(model_dir, torch_dtype=getattr(torch, dtype))
    chats = [[{"role": m["role"], "content": m["content"]} for m in p] for p in prompts]
    texts = [tokenizer.apply_chat_template(c, tokenize=False, add_generation_prompt=True) for c in chats]
    batch = tokenizer(texts, return_tensors="pt", padding=True)
    kwargs = {"max_new_tokens": tokens, "min_new_tokens": tokens, "do_sample": False}
    with torch.inference_mode():
        model.generate(**tokenizer(texts[:1], return_tensors="pt"), max_new_tokens=4)  # warm-up
        started = time.perf_counter()
        output = model.generate(**batch, **kwargs, pad_token_id=tokenizer.pad_token_id)
        wall = time.perf_counter() - started
    generated = int((output.shape[1] - batch["input_ids"].shape[1]) * output.shape[0])
    return {
        "tokens": generated,
        "wall_s": round(wall, 2),
        "tokens_per_s": round(generated / wall, 2),
        "dtype": dtype,
        "torch_threads": torch.get_num_threads(),
    }


def _merge(
    name: str, rows: list[dict[str, Any]], c8: dict[str, Any] | None
) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """A run of some models and sets replaces their rows in the existing results, keeping the rest."""
    path = RESULTS / f"{name}.json"
    if not path.exists():
        return rows, c8
    old = json.loads(path.read_text())
    done = {(r["model"], r["set"]) for r in rows}
    kept = [r for r in old.get("rows", []) if (r["model"], r["set"]) not in done]
    order = {m: i for i, m in enumerate(MODELS)}
    merged = sorted(kept + rows, key=lambda r: (order.get(r["model"], len(order)), r["set"]))
    return merged, c8 if c8 is not None else old.get("vllm_vs_transformers_tokens_per_s_c8")


def _load() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.1f} (1 min) / {five:.1f} (5 min) on {os.cpu_count()} CPUs"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", nargs="+", default=MODELS, help="store names, or extractive")
    parser.add_argument("--sets", nargs="+", default=list(SETS), choices=list(SETS))
    parser.add_argument("--max-tokens", type=int, default=96, help="answer cap: short factual answers")
    parser.add_argument("--c8-tokens", type=int, default=64, help="new tokens per question at c8; 0: skip")
    parser.add_argument("--c8-only", action="store_true", help="only the vLLM/transformers comparison")
    parser.add_argument("--scratch", type=Path, default=REPO / "bench" / "data" / "answers")
    parser.add_argument("--out", default="answers", help="results name (bench/results/NAME.json)")
    parser.add_argument("--details", type=Path, help="append every answer and its score here (JSON lines)")
    args = parser.parse_args(argv)

    from knowledge.answer_quality import load_answer_set
    from knowledge.answer_runs import retrieve_set

    args.scratch.mkdir(parents=True, exist_ok=True)
    kbs = {name: scratch_kb(corpus(name, args.scratch), args.scratch / f"kb-{name}") for name in args.sets}
    retrieved = {name: retrieve_set(kbs[name], load_answer_set(SETS[name])) for name in args.sets}
    load_before = _load()
    rows, c8 = run_models(kbs, retrieved, args.models, args)
    load = {"before": load_before, "after": _load()}
    if c8 is not None:
        c8["command"], c8["machine_load"] = " ".join(["python", *sys.argv]), load
    previous = RESULTS / f"{args.out}.json"
    if args.c8_only and previous.exists():  # the rows and their load stay those of the full run
        load = json.loads(previous.read_text()).get("machine_load", load)
    rows, c8 = _merge(args.out, rows, c8)
    results: dict[str, Any] = {
        "rows": rows,
        "vllm_vs_transformers_tokens_per_s_c8": c8,
        "settings": {
            "max_answer_tokens": args.max_tokens,
            "min_score": next(iter(kbs.values())).settings.retrieval.min_score,
            "min_coverage": next(iter(kbs.values())).settings.retrieval.min_coverage,
            "top_k": next(iter(kbs.values())).settings.retrieval.top_k,
            "dev_set": "handbook",
            "held_out_set": "python-faq",
        },
        "machine_load": load,
        "machine_label": machine_label(machine()),
    }
    default = next((r for r in rows if r["model"] == DEFAULT_MODEL and r["set"] == "handbook"), None)
    summary = "answers: " + (
        f"{DEFAULT_MODEL} handbook correct {default['correct']}, abstain {default['abstain']}, "
        f"citation precision {default['citation_precision']}, TTFT p95 {default['ttft_p95_s']} s"
        if default
        else ", ".join(f"{r['model']}/{r['set']} correct {r['correct']}" for r in rows)
    )
    if c8 and c8.get("ratio"):
        summary += f"; vLLM {c8['ratio']}x transformers at c8"
    print(write_results(args.out, results, summary=summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
