"""`kb llm`: run the vLLM server this product answers with, and check what it serves."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import Annotated

import typer

from app.support import JsonOption, cli_settings, err, friendly_errors, out, print_json
from core.errors import KBError

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
    model: Annotated[Path, typer.Option(help="Hugging Face model folder (config, weights, tokenizer).")],
    lora: Annotated[list[str] | None, typer.Option(help="LoRA adapter to serve: NAME=DIR.")] = None,
    name: Annotated[str | None, typer.Option(help="Served name (default KB_LLM_MODEL).")] = None,
    host: Annotated[str, typer.Option(help="Listen address.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Listen port.")] = 8000,
    max_model_len: Annotated[int | None, typer.Option(help="Context length to serve.")] = None,
    python: Annotated[Path | None, typer.Option(help="vLLM's bin/python (make vllm-env).")] = None,
) -> None:
    """Start vLLM's OpenAI-compatible server (LoRA enabled, adapters loadable at run time) and wait."""
    from core.llm.server import VLLMServer, default_python

    settings = cli_settings()
    server = VLLMServer(
        model,
        python=default_python(python or settings.vllm_python),
        host=host,
        port=port,
        served_name=name or settings.llm_model or model.name,
        max_model_len=max_model_len,
        loras=_parse_loras(lora or []),
    )
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
        print_json({"url": str(settings.llm_url), "models": names})
    else:
        for served in names:
            out.print(served, highlight=False)
