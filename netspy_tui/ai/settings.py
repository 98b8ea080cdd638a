"""How to reach the AI model: an OpenAI account or any OpenAI-compatible server.

:class:`AISettings` is the AI layer's part of the one settings model (:class:`netspy_tui.config.Settings`:
config file, environment, ``--model``), taken with :meth:`AISettings.from_settings` once the settings
are loaded and validated. It shares that model's bounds, so it never disagrees with it.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, SecretStr

from netspy_tui.config import (
    DEFAULT_MODEL,
    AIContextTokens,
    AIModel,
    AIRetries,
    AITimeout,
    AIToolRounds,
    Settings,
    env_name,
)
from netspy_tui.errors import AIError
from netspy_tui.textsafe import redact_url

__all__ = ["DEFAULT_MODEL", "AISettings"]

#: Where the OpenAI SDK sends requests when no base URL is given.
OPENAI_BASE_URL = "https://api.openai.com/v1"

#: Sent as the API key to servers that need none (Ollama, llama.cpp, vLLM): the SDK insists on one.
PLACEHOLDER_KEY = "not-needed"

#: The environment variables behind the AI settings, for hints in error messages.
ENV_API_KEY = env_name("openai_api_key")
ENV_BASE_URL = env_name("openai_base_url")
ENV_TIMEOUT = env_name("ai_timeout")
ENV_MAX_TOOL_ROUNDS = env_name("ai_max_tool_rounds")
ENV_CONTEXT_TOKENS = env_name("ai_context_tokens")
ENV_MAX_RETRIES = env_name("ai_max_retries")

NOT_CONFIGURED_HINT = (
    f"Set {ENV_API_KEY} for OpenAI, or {ENV_BASE_URL} for a local OpenAI-compatible server "
    "(Ollama, llama.cpp, vLLM); or openai_api_key / openai_base_url in the config file"
)
#: Who answers when no model is configured: the local rule-based explainer (the dashboard's AI pane title).
RULES_LABEL = "rules (no AI configured)"


class AISettings(BaseModel):
    """Connection settings of the AI layer. ``repr``/``str`` never show the key (it is a SecretStr)."""

    model_config = ConfigDict(frozen=True)

    api_key: SecretStr | None = None
    """API key (``openai_api_key``, ``OPENAI_API_KEY``). Local servers usually need none."""
    base_url: str | None = None
    """OpenAI-compatible endpoint, e.g. ``http://localhost:11434/v1`` (``openai_base_url``,
    ``OPENAI_BASE_URL``); None means OpenAI."""
    model: AIModel = DEFAULT_MODEL
    """Model name (``model``, ``NETSPY_MODEL``, CLI ``--model``)."""
    timeout: AITimeout = 60.0
    """Seconds to wait for the server: to connect, and between two pieces of a streamed answer."""
    max_tool_rounds: AIToolRounds = 4
    """Rounds of tool calls a free-form question may use before the model must answer."""
    context_tokens: AIContextTokens | None = None
    """The model's context window in tokens (``ai_context_tokens``, ``NETSPY_AI_CONTEXT_TOKENS``).
    None: 128k for OpenAI; for other servers as they report it in ``GET /models`` (vLLM, llama.cpp,
    LM Studio and OpenRouter do), else 2048. Prompts are sized to fit it with room for the answer."""
    max_retries: AIRetries = 2
    """Retries of a failed request (connection errors, 429, 5xx) by the OpenAI SDK, with backoff."""

    @classmethod
    def from_settings(cls, settings: Settings) -> AISettings:
        """The AI part of the loaded settings (:func:`netspy_tui.config.load_settings` validated them)."""
        return cls(
            api_key=settings.openai_api_key,
            base_url=settings.openai_base_url,
            model=settings.model,
            timeout=settings.ai_timeout,
            max_tool_rounds=settings.ai_max_tool_rounds,
            context_tokens=settings.ai_context_tokens,
            max_retries=settings.ai_max_retries,
        )

    def require_configured(self) -> None:
        """Raise :class:`AIError` saying how to configure a model unless one is (see :attr:`configured`)."""
        if not self.configured:
            raise AIError("No AI model is configured", NOT_CONFIGURED_HINT)

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

    @property
    def engine_label(self) -> str:
        """Who answers in the dashboard: ``gpt-5-mini at http://host/v1 (key set)``, or the local rules."""
        return self.describe() if self.configured else RULES_LABEL
