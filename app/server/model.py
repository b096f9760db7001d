"""The answer model as a child of `kb serve --with-model`: checked first, started, watched, stopped.

`prepare_model` runs the checks that decide, before anything slow starts, whether a model can
answer at all: the model resolves (store name or folder), the vLLM environment exists, the
machine has memory for it, its port is free. Any failure is one line, and `kb serve` answers
extractively instead of failing.

`ModelServerService` is the vLLM server as one of `kb serve`'s background services. `launch()`
starts the process (`kb serve` calls it before loading the index, so both load at once); the
service's `start()` watches it without holding up the web server: until vLLM answers, questions
are answered extractively; once it does, the knowledge base gets its model client; if vLLM dies
later, answers go back to extractive and the record `kb status` reads says why. `stop()` stops
the whole process group. The child asks the kernel to stop it if `kb serve` itself is killed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from app.server.ports import PortTaken, require_free_port
from core.errors import KBError
from core.health import clear_model_state, write_model_state
from core.llm import LLM
from core.llm.server import VLLMServer
from core.settings import Settings
from knowledge.service import KnowledgeBase

log = logging.getLogger(__name__)
Say = Callable[[str], None]

GIB = 2**30
# Besides the weights and the KV cache, vLLM CPU's own runtime (torch, the engine and its worker)
# took 0.9-1.1 GiB resident here; one more GiB of slack keeps the rest of the machine usable.
RUNTIME_BYTES = 2 * GIB
READY_TIMEOUT_S = 900.0  # a 0.5B model started in 40-90 s here; a loaded 2-core machine is slower


@dataclass(frozen=True, slots=True)
class ModelPlan:
    """What `kb serve --with-model` will run: a server, or the one-line reason why not."""

    spec: str
    server: VLLMServer | None
    reason: str | None = None


def available_memory_bytes() -> int | None:
    """MemAvailable from /proc/meminfo (None where there is none: then nothing is refused)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def weights_bytes(model_dir: Path) -> int:
    return sum(p.stat().st_size for pattern in ("*.safetensors", "*.bin") for p in model_dir.glob(pattern))


def _one_line(exc: KBError) -> str:
    first = exc.message.splitlines()[0] if exc.message else str(exc)
    return f"{first} ({exc.hint})" if exc.hint else first


def prepare_model(
    settings: Settings,
    spec: str,
    *,
    port: int,
    host: str = "127.0.0.1",
    memory: Callable[[], int | None] = available_memory_bytes,
) -> ModelPlan:
    """Check that `spec` can be served on `host:port` here; never raises for a model that cannot."""
    from core.llm.server import CPU_KV_CACHE_GIB, cpu_context_length, default_python
    from core.llm.store import ModelStore, resolve_model

    try:
        resolved = resolve_model(spec, ModelStore(settings.llm.store))
        python = default_python(settings.llm.vllm_python)
        free = memory()
        need = weights_bytes(resolved.path) + CPU_KV_CACHE_GIB * GIB + RUNTIME_BYTES
        if free is not None and free < need:
            return ModelPlan(spec, None, (
                f"{resolved.name} needs about {need / GIB:.1f} GiB of memory (weights, KV cache, runtime), "
                f"{free / GIB:.1f} GiB is available: free memory or pick a smaller model "
                f"(kb serve --with-model smollm2-135m-instruct)"
            ))  # fmt: skip
        require_free_port(host, port, fix="pass --model-port (make run MODEL_PORT=...)")
    except KBError as exc:
        return ModelPlan(spec, None, _one_line(exc))
    server = VLLMServer(
        resolved.path,
        python=python,
        host=host,
        port=port,
        served_name=resolved.name,
        log_path=settings.data_dir / "logs" / "model-server.log",
        die_with_parent=True,  # started from the main thread, which lives as long as kb serve
    )
    if server.cpu:
        server.max_model_len = cpu_context_length(resolved.path)
    return ModelPlan(spec, server)


class ModelServerService:
    """The vLLM child of `kb serve` (module docstring): started early, attached when it answers."""

    name = "model server"

    def __init__(
        self,
        server: VLLMServer,
        *,
        data_dir: Path,
        ready_timeout: float = READY_TIMEOUT_S,
        say: Say = log.warning,
    ) -> None:
        self.server = server
        self.data_dir = data_dir
        self.ready_timeout = ready_timeout
        self.say = say
        self.kb: KnowledgeBase | None = None
        self.client: LLM | None = None
        self.ready = asyncio.Event()  # the server answers and the knowledge base asks it
        self.settled = asyncio.Event()  # ready, or failed: watchers and tests wait on this
        self.down = asyncio.Event()  # failed to start, or died after starting
        self.failed: str | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._stopping = False
        self._launched_at = 0.0

    def attach(self, kb: KnowledgeBase) -> None:
        """Hold back the client `kb` was built with until the server answers: extractive until then."""
        self.kb = kb
        self.client, kb.llm = kb.llm, None

    @property
    def model(self) -> str:
        return self.server.served_name

    def _record(self, state: str, reason: str | None = None) -> None:
        write_model_state(self.data_dir, model=self.model, url=self.server.url, state=state, reason=reason,
                          log=str(self.server.log_path), server_pid=self._pid())  # fmt: skip

    def _pid(self) -> int | None:
        return self.server.process.pid if self.server.process is not None else None

    def launch(self) -> None:
        """Start the vLLM process unless it runs already; a failure is recorded, not raised."""
        if self.server.process is not None or self.failed is not None:
            return
        self._launched_at = time.monotonic()
        try:
            if self.server.log_path is not None:
                self.server.log_path.parent.mkdir(parents=True, exist_ok=True)
            self.server.start()
        except (KBError, OSError) as exc:
            self._fail(f"the model server could not start: {exc}")
            return
        self._record("starting")

    async def start(self) -> None:
        if self.kb is None:
            raise RuntimeError("attach(kb) the model server service before starting it")
        self.launch()
        if self.failed is None:
            self._watcher = asyncio.create_task(self._watch(), name="model server watcher")

    async def stop(self) -> None:
        self._stopping = True
        if self.kb is not None and self.kb.llm is self.client:
            self.kb.llm = None
        await asyncio.to_thread(self.server.stop)
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
        if self.client is not None:
            await self.client.aclose()
        clear_model_state(self.data_dir)

    async def _watch(self) -> None:
        try:
            await asyncio.to_thread(self.server.wait_ready, self.ready_timeout)
        except KBError as exc:
            if not self._stopping:
                reason = exc.message.splitlines()[0]
                self._fail(f"{reason} (log: {self.server.log_path})")
            return
        assert self.kb is not None
        self.kb.llm = self.client
        self.ready.set()
        self.settled.set()
        self._record("ready")
        seconds = time.monotonic() - self._launched_at
        self.say(
            f"Model {self.model} ready on {self.server.url} after {seconds:.0f} s: it writes the answers now."
        )
        assert self.server.process is not None
        code = await asyncio.to_thread(self.server.process.wait)
        if not self._stopping:
            self.kb.llm = None
            self._fail(f"the model server exited with code {code} (log: {self.server.log_path})")

    def _fail(self, reason: str) -> None:
        self.failed = reason
        self.ready.clear()
        self.settled.set()
        self.down.set()
        self._record("failed", reason)
        self.say(f"{reason}: answers are extractive")


__all__ = ["ModelPlan", "ModelServerService", "PortTaken", "available_memory_bytes", "prepare_model"]
