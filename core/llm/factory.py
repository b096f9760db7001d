"""The configured model client, built from Settings."""

from __future__ import annotations

from core.llm.protocol import LLM
from core.llm.vllm import VLLMClient
from core.settings import Settings


def llm_from_settings(settings: Settings) -> LLM | None:
    """The configured model client: vLLM when KB_LLM_URL is set, else None (extractive answers)."""
    if settings.llm.url is None:
        return None
    key = settings.llm.api_key.get_secret_value() if settings.llm.api_key else None
    return VLLMClient(str(settings.llm.url), api_key=key, model=settings.llm.model)
