"""AISettings: environment, overrides, what counts as configured, and a key that never shows."""

from __future__ import annotations

import subprocess
import sys

import pytest
from pydantic import SecretStr

from netspy_tui.ai import DEFAULT_MODEL, AISettings
from netspy_tui.errors import AIError
from netspy_tui.textsafe import redact_url
from tests.ai.conftest import TEST_KEY


def test_from_env_reads_every_variable() -> None:
    settings = AISettings.from_env({
        "OPENAI_API_KEY": TEST_KEY, "OPENAI_BASE_URL": "http://localhost:11434/v1", "NETSPY_MODEL": "llama3.2",
        "NETSPY_AI_TIMEOUT": "12.5", "NETSPY_AI_MAX_TOOL_ROUNDS": "2",
    })
    assert settings.api_key is not None and settings.api_key.get_secret_value() == TEST_KEY
    assert settings.base_url == "http://localhost:11434/v1"
    assert (settings.model, settings.timeout, settings.max_tool_rounds) == ("llama3.2", 12.5, 2)


def test_defaults_overrides_and_empty_values() -> None:
    settings = AISettings.from_env({"OPENAI_API_KEY": "", "NETSPY_MODEL": "  "})
    assert settings.api_key is None and settings.model == DEFAULT_MODEL == "gpt-5-mini"
    assert settings.timeout == 60 and settings.max_tool_rounds == 4
    assert not settings.configured
    assert AISettings.from_env({"NETSPY_MODEL": "a"}, model="b").model == "b"
    assert AISettings.from_env({"NETSPY_MODEL": "a"}, model=None).model == "a"  # unset CLI flag


def test_configured_by_key_or_by_base_url() -> None:
    assert AISettings(api_key=SecretStr(TEST_KEY)).configured
    assert AISettings(base_url="http://127.0.0.1:8080/v1").configured
    assert not AISettings(api_key=SecretStr("")).configured
    assert AISettings(base_url="http://h/v1").key_for_client() == "not-needed"


def test_key_never_in_repr_str_or_describe() -> None:
    settings = AISettings(api_key=SecretStr(TEST_KEY), base_url="http://user:pw@host:8000/v1")
    for text in (repr(settings), str(settings), settings.describe(), settings.model_dump_json()):
        assert TEST_KEY not in text
    assert settings.describe() == "gpt-5-mini at http://user:****@host:8000/v1 (key set)"
    assert redact_url("http://user:pw@host:8000/v1") == "http://user:****@host:8000/v1"
    assert redact_url("https://api.openai.com/v1") == "https://api.openai.com/v1"


@pytest.mark.parametrize(("var", "value"), [("NETSPY_AI_TIMEOUT", "soon"), ("NETSPY_AI_TIMEOUT", "-1"),
                                            ("NETSPY_AI_MAX_TOOL_ROUNDS", "many")])
def test_bad_values_name_the_variable(var: str, value: str) -> None:
    with pytest.raises(AIError) as info:
        AISettings.from_env({var: value})
    assert var in str(info.value) and "\n" not in str(info.value)


def test_importing_the_ai_layer_stays_light() -> None:
    """No Textual, no MCP, and the openai SDK only on first use (the CLI starts fast)."""
    code = ("import sys, netspy_tui.ai; "
            "print(sorted(m for m in ('textual', 'mcp', 'openai') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "[]"
