"""Language models: the `LLM` Protocol, its adapters, the vLLM server launcher.

    from core.llm import LLM, Completion, llm_from_settings

- `protocol`: the Protocol every caller depends on, its result types and errors;
- `wire`: the OpenAI wire format (bodies, server-sent events, error details);
- `breaker`: the circuit breaker that keeps a dead server from costing a timeout per question;
- `vllm`: the client for vLLM's OpenAI-compatible HTTP API (production);
- `local`: a Hugging Face folder run in-process (one machine, no server);
- `server`: starts and stops a vLLM server process (`kb llm serve`, tests);
- `factory`: the configured client, from Settings.
"""

from core.llm.breaker import CircuitBreaker
from core.llm.factory import llm_from_settings
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
    "llm_from_settings",
]
