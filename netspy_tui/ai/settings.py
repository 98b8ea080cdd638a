"""How to reach the AI model: an OpenAI account or any OpenAI-compatible server."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

from netspy_tui.errors import AIError
from netspy_tui.models import describe_validation_error
from netspy_tui.textsafe import redact_url

#: The model used when neither ``--model`` nor ``NETSPY_MODEL`` names one.
DEFAULT_MODEL = "gpt-5-mini"

#: Where the OpenAI SDK sends requests when no base URL is given.
OPENAI_BASE_URL = "https://api.openai.com/v1"

#: Sent as the API key to servers that need none (Ollama, llama.cpp, vLLM): the SDK insists on one.
PLACEHOLDER_KEY = "not-needed"

ENV_API_KEY = "OPENAI_API_KEY"
ENV_BASE_URL = "OPENAI_BASE_URL"
ENV_MODEL = "NETSPY_MODEL"
ENV_TIMEOUT = "NETSPY_AI_TIMEOUT"
ENV_MAX_TOOL_ROUNDS = "NETSPY_AI_MAX_TOOL_ROUNDS"
ENV_CONTEXT_TOKENS = "NETSPY_AI_CONTEXT_TOKENS"

NOT_CONFIGURED_HINT = (
    f"Set {ENV_API_KEY} for OpenAI, or {ENV_BASE_URL} for a local OpenAI-compatible server "
    "(Ollama, llama.cpp, vLLM)"
)


class AISettings(BaseModel):
    """Connection settings of the AI layer. ``repr``/``str`` never show the key (it is a SecretStr)."""

    model_config = ConfigDict(frozen=True)

    api_key: SecretStr | None = None
    """API key (``OPENAI_API_KEY``). Local servers usually need none."""
    base_url: str | None = None
    """OpenAI-compatible endpoint, e.g. ``http://localhost:11434/v1`` (``OPENAI_BASE_URL``); None means OpenAI."""
    model: str = Field(default=DEFAULT_MODEL, min_length=1)
    """Model name (``NETSPY_MODEL``, CLI ``--model``)."""
    timeout: float = Field(default=60.0, gt=0)
    """Seconds to wait for the server: to connect, and between two pieces of a streamed answer."""
    max_tool_rounds: int = Field(default=4, ge=0, le=20)
    """Rounds of tool calls a free-form question may use before the model must answer."""
    context_tokens: int | None = Field(default=None, ge=256, le=10_000_000)
    """The model's context window in tokens (``NETSPY_AI_CONTEXT_TOKENS``). None: 128k for OpenAI;
    for other servers as they report it in ``GET /models`` (vLLM, llama.cpp, LM Studio and
    OpenRouter do), else 2048. Prompts are sized to fit it with room for the answer."""
    max_retries: int = Field(default=2, ge=0, le=10)
    """Retries of a failed request (connection errors, 429, 5xx) by the OpenAI SDK, with backoff."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> AISettings:
        """Settings from the environment; keyword ``overrides`` (e.g. ``model=`` from the CLI) win.

        Empty variables count as unset. A bad value raises :class:`AIError` naming the variable.
        """
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for field_name, var in (
            ("api_key", ENV_API_KEY),
            ("base_url", ENV_BASE_URL),
            ("model", ENV_MODEL),
            ("timeout", ENV_TIMEOUT),
            ("max_tool_rounds", ENV_MAX_TOOL_ROUNDS),
            ("context_tokens", ENV_CONTEXT_TOKENS),
        ):
            raw = env.get(var, "").strip()
            if raw:
                values[field_name] = raw
        values.update({k: v for k, v in overrides.items() if v is not None})
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            field = str(exc.errors()[0]["loc"][0]) if exc.errors()[0]["loc"] else ""
            var = {"api_key": ENV_API_KEY, "base_url": ENV_BASE_URL, "model": ENV_MODEL, "timeout": ENV_TIMEOUT,
                   "max_tool_rounds": ENV_MAX_TOOL_ROUNDS, "context_tokens": ENV_CONTEXT_TOKENS}.get(field, field)
            raise AIError(f"Invalid AI setting {var}: {describe_validation_error(exc)}",
                          "fix the value or unset it") from None

    @property
    def configured(self) -> bool:
        """True when a model can be asked: a key is set, or a base URL (local servers need no key)."""
        return bool(self.api_key and self.api_key.get_secret_value()) or bool(self.base_url)

    @property
    def effective_base_url(self) -> str:
        return self.base_url or OPENAI_BASE_URL

    @property
    def display_url(self) -> str:
        """The base URL with the password of any ``user:password@`` part masked, safe to show and log."""
        return redact_url(self.effective_base_url)

    def key_for_client(self) -> str:
        """The key to hand to the SDK: the real one, or a placeholder for keyless local servers."""
        if self.api_key and self.api_key.get_secret_value():
            return self.api_key.get_secret_value()
        return PLACEHOLDER_KEY

    def describe(self) -> str:
        """One line for status bars and ``--verbose``: model and server, never the key."""
        key = "key set" if self.api_key and self.api_key.get_secret_value() else "no key"
        return f"{self.model} at {self.display_url} ({key})"
