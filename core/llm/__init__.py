"""Language models: the `LLM` Protocol, its adapters, the vLLM server launcher.

    from core.llm import LLM, Completion, VLLMClient, llm_from_settings

- `protocol`: the Protocol every caller depends on, its result types and errors;
- `wire`: the OpenAI wire format (bodies, server-sent events, error details);
- `breaker`: the circuit breaker that keeps a dead server from costing a timeout per question;
- `retry`: which failed attempts are retried, how long to wait, and what the breaker hears;
- `vllm`: the client for vLLM's OpenAI-compatible HTTP API (production);
- `local`: a Hugging Face folder run in-process (one machine, no server);
- `server`: starts and stops a vLLM server process (`kb llm serve`, tests);
- `factory`: the configured client, from Settings.
"""

from core.llm.breaker import CircuitBreaker
from core.llm.factory import llm_from_settings
from core.llm.local import TransformersLLM
from core.llm.protocol import (
    LLM,
    Completion,
    LLMBadRequest,
    LLMBadResponse,
    LLMError,
    LLMTimeout,
    LLMUnavailable,
    Message,
    TokenLogprob,
)
from core.llm.vllm import VLLMClient

__all__ = [
    "LLM",
    "CircuitBreaker",
    "Completion",
    "LLMBadRequest",
    "LLMBadResponse",
    "LLMError",
    "LLMTimeout",
    "LLMUnavailable",
    "Message",
    "TokenLogprob",
    "TransformersLLM",
    "VLLMClient",
    "llm_from_settings",
]
