"""`kb llm`: run the vLLM server this product answers with, and check what it serves."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from app.support import JsonOption, cli_settings, err, friendly_errors, out, print_json
from core.errors import KBError

if TYPE_CHECKING:
    from core.llm.server import VLLMServer

llm_app = typer.Typer(help="The language model server (vLLM).", no_args_is_help=True)


def _parse_loras(values: list[str]) -> dict[str, Path]:
    loras: dict[str, Path] = {}
    for value in values:
        name, sep, path = value.partition("=")
        if not sep or not name or not path:
            raise KBError(f"--lora {value!r} is not NAME=DIR", hint="e.g. --lora hr-v2=models/hr-v2")
        if not Path(path).is_dir():
            raise KBError(f"--lora {name}: no adapter folder at {path}")
        loras[name] = Path(path)
    return loras


@llm_app.command("serve")
@friendly_errors
def serve(
    model: Annotated[
        str | None,
        typer.Option(
            help="Store model name (`kb models list`) or Hugging Face folder (default KB_LLM_MODEL)."
        ),
    ] = None,
    lora: Annotated[list[str] | None, typer.Option(help="LoRA adapter to serve: NAME=DIR.")] = None,
    name: Annotated[
        str | None, typer.Option(help="Served name (default KB_LLM_MODEL, else the model's).")
    ] = None,
    host: Annotated[str, typer.Option(help="Listen address.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Listen port.")] = 8000,
    max_model_len: Annotated[
        int | None, typer.Option(help="Context length to serve (CPU default 2048).")
    ] = None,
    max_lora_rank: Annotated[int, typer.Option(help="Largest LoRA rank loadable at run time.")] = 16,
    kv_cache_gib: Annotated[int | None, typer.Option(help="CPU KV cache in GiB (CPU default 1).")] = None,
    dtype: Annotated[
        str | None,
        typer.Option(help="Compute dtype (default: the model's; float32 on a CPU lacking bf16)."),
    ] = None,
    python: Annotated[Path | None, typer.Option(help="vLLM's bin/python (make vllm-env).")] = None,
    dry_run: Annotated[bool, typer.Option(help="Print the vLLM command as JSON and exit.")] = False,
) -> None:
    """Serve a store model or a model folder with vLLM (LoRA adapters loadable at run time) and wait."""
    from core.llm.server import VLLMServer, cpu_context_length, default_python
    from core.llm.store import ModelStore, resolve_model

    settings = cli_settings()
    spec = model or settings.llm.model
    if not spec:
        raise KBError(
            "no model to serve", hint="pass --model NAME|DIR or set KB_LLM_MODEL (see `kb models list`)"
        )
    resolved = resolve_model(spec, ModelStore(settings.llm.store))
    server = VLLMServer(
        resolved.path,
        python=default_python(python or settings.llm.vllm_python),
        host=host,
        port=port,
        # The client asks for KB_LLM_MODEL by name, so a server of that model answers to that name.
        served_name=name or (spec if spec == settings.llm.model else resolved.name),
        max_lora_rank=max_lora_rank,
        kv_cache_gib=kv_cache_gib,
        loras=_parse_loras(lora or []),
        dtype=dtype,
    )
    server.max_model_len = max_model_len or (cpu_context_length(resolved.path) if server.cpu else None)
    if dry_run:
        vllm_env = {k: v for k, v in server.environment().items() if k.startswith("VLLM_")}
        print_json(
            {
                "model": str(resolved.path),
                "served_name": server.served_name,
                "command": server.command(),
                "cpu": server.cpu,
                "env": vllm_env,
            }
        )
        return
    _run(server)


def _run(server: VLLMServer) -> None:
    err.print(f"starting vLLM: {' '.join(server.command())}", highlight=False, markup=False)
    server.start()
    try:
        with err.status(f"waiting for {server.url}/v1/models (log: {server.log_path})…"):
            server.wait_ready(timeout=600)
        err.print(
            f"Serving {server.served_name} on {server.url}; set KB_LLM_URL={server.url} for kb ask/serve."
        )
        signal.signal(signal.SIGTERM, _exit_on_signal)  # stop vLLM on SIGTERM too, not only Ctrl-C
        assert server.process is not None
        code = server.process.wait()
        raise KBError(f"the vLLM server exited with code {code}", hint=f"see its log in {server.log_path}")
    except KeyboardInterrupt:
        err.print("stopping vLLM…")
    finally:
        server.stop()


def _exit_on_signal(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


@llm_app.command("models")
@friendly_errors
def models(as_json: JsonOption = False) -> None:
    """The models and LoRA adapters the configured server (KB_LLM_URL) serves."""
    from core.llm import llm_from_settings

    settings = cli_settings()
    client = llm_from_settings(settings)
    if client is None:
        raise KBError("no model server is configured", hint="set KB_LLM_URL, e.g. http://127.0.0.1:8000")

    async def fetch() -> list[str]:
        try:
            return list(await client.models())
        finally:
            await client.aclose()

    names = asyncio.run(fetch())
    if as_json:
        print_json({"url": str(settings.llm.url), "models": names})
    else:
        for served in names:
            out.print(served, highlight=False)
