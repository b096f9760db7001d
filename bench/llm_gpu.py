"""The GPU side of the LLM benchmark: a ~0.5B-parameter random Llama through transformers `generate`.

    python3 bench/llm_gpu.py --out $OUT              # on the lent GPU machine (the `run` tool)
    .venv/bin/python bench/llm_gpu.py --merge DIR    # here: put DIR/llm_gpu.json under "gpu" in
                                                     # bench/results/llm.json

vLLM cannot be installed on that machine, so this records only in-process transformers, the way
`TransformersLLM` serves a local model: bf16 weights on the GPU, greedy decoding, the requests of
one concurrency level batched into one `generate` call (what a batching server does at best with
plain transformers). Prompts are random token ids of the RAG prompt length that bench/llm.py
measured (~1,400 tokens), 64 new tokens each (EOS ignored: the weights are random).

- output tokens/s: batch x 64 new tokens over the wall time of the whole `generate`;
- time to first token: the wall time of the same batch with one new token (prefill + first step).
Each figure is the median of three runs after one warm-up.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
LLM_JSON = REPO / "bench" / "results" / "llm.json"
CONFIG = {
    "hidden_size": 1024,
    "intermediate_size": 4096,
    "num_hidden_layers": 24,
    "num_attention_heads": 16,
    "num_key_value_heads": 16,
    "vocab_size": 32000,
    "max_position_embeddings": 4096,
}


def measure(concurrency: list[int], prompt_tokens: int, new_tokens: int, repeats: int) -> dict[str, Any]:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(**CONFIG)
    with torch.device("cuda"):
        model = LlamaForCausalLM(config).to(torch.bfloat16).eval()
    params = sum(p.numel() for p in model.parameters())
    result: dict[str, Any] = {
        "device": torch.cuda.get_device_name(0),
        "torch": torch.__version__,
        "transformers": __import__("transformers").__version__,
        "model": {**CONFIG, "parameters_m": round(params / 1e6, 1), "dtype": "bfloat16", "weights": "random"},
        "settings": {"prompt_tokens": prompt_tokens, "new_tokens": new_tokens, "repeats": repeats},
    }

    def run(batch: int, tokens: int) -> float:
        ids = torch.randint(100, CONFIG["vocab_size"], (batch, prompt_tokens), device="cuda")
        torch.cuda.synchronize()
        begin = time.perf_counter()
        with torch.inference_mode():
            model.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=tokens,
                min_new_tokens=tokens,
                do_sample=False,
                pad_token_id=0,
            )
        torch.cuda.synchronize()
        return time.perf_counter() - begin

    for batch in concurrency:
        run(batch, new_tokens)  # warm-up: kernels, allocator
        walls = [run(batch, new_tokens) for _ in range(repeats)]
        firsts = [run(batch, 1) for _ in range(repeats)]
        wall, first = statistics.median(walls), statistics.median(firsts)
        result[f"c{batch}"] = {
            "concurrency": batch,
            "output_tokens": batch * new_tokens,
            "wall_s": round(wall, 3),
            "output_tokens_per_s": round(batch * new_tokens / wall, 1),
            "ttft_ms": round(first * 1000, 1),
            "decode_ms_per_step": round((wall - first) / max(1, new_tokens - 1) * 1000, 2),
        }
        print(result[f"c{batch}"], flush=True)
    result["peak_gpu_memory_gb"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    return result


def merge(directory: Path) -> None:
    from bench.common import update_table

    gpu = json.loads((directory / "llm_gpu.json").read_text())
    command = "python3 bench/llm_gpu.py --out $OUT (on the lent GPU machine)"
    gpu = {"command": command, "date": time.strftime("%Y-%m-%d"), **gpu}
    payload = json.loads(LLM_JSON.read_text())
    payload["gpu"] = gpu
    levels = [key for key in gpu if key.startswith("c") and key[1:].isdigit()]
    for key in levels:
        payload[f"gpu_transformers_tokens_per_s_{key}"] = gpu[key]["output_tokens_per_s"]
    LLM_JSON.write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n")
    summary = f"{gpu['model']['parameters_m']:.0f}M random Llama, transformers generate, {gpu['device']}: "
    summary += ", ".join(
        f"c{gpu[k]['concurrency']} {gpu[k]['output_tokens_per_s']} tok/s (TTFT {gpu[k]['ttft_ms']} ms)"
        for k in levels
    )
    update_table("llm_gpu", command, gpu["date"], summary, f"{gpu['device']} (lent GPU machine)")
    print(summary)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, help="write llm_gpu.json here (on the GPU machine)")
    parser.add_argument("--merge", type=Path, help="folder with llm_gpu.json to merge into llm.json")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--prompt-tokens", type=int, default=1400)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if args.merge:
        merge(args.merge)
        return
    if args.out is None:
        parser.error("give --out DIR (on the GPU machine) or --merge DIR (here)")
    result = measure(args.concurrency, args.prompt_tokens, args.new_tokens, args.repeats)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "llm_gpu.json").write_text(json.dumps(result, indent=2) + "\n")
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
