"""AI settings as part of the one settings model: environment, config file, ``--model``, what counts
as configured, one validation, and a key that never shows."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import SecretStr

from netspy_tui.ai import DEFAULT_MODEL, AISettings
from netspy_tui.config import Settings, load_settings
from netspy_tui.errors import AIError, UsageError
from netspy_tui.textsafe import redact_url
from tests.ai.conftest import TEST_KEY


@pytest.fixture
def config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No ambient NETSPY_*/OPENAI_* variables; NETSPY_CONFIG points at a file the test may write."""
    import os

    for name in list(os.environ):
        if name.upper().startswith(("NETSPY_", "OPENAI_")):
            monkeypatch.delenv(name)
    path = tmp_path / "config.toml"
    monkeypatch.setenv("NETSPY_CONFIG", str(path))
    return path


def _ai(cli: dict[str, object] | None = None) -> tuple[AISettings, dict[str, str]]:
    settings, sources = load_settings(cli or {})
    return AISettings.from_settings(settings), sources


def test_every_variable_keeps_its_name(config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for var, value in {
        "OPENAI_API_KEY": TEST_KEY,
        "OPENAI_BASE_URL": "http://localhost:11434/v1",
        "NETSPY_MODEL": "llama3.2",
        "NETSPY_AI_TIMEOUT": "12.5",
        "NETSPY_AI_MAX_TOOL_ROUNDS": "2",
        "NETSPY_AI_CONTEXT_TOKENS": "4096",
        "NETSPY_AI_MAX_RETRIES": "0",
    }.items():
        monkeypatch.setenv(var, value)
    settings, sources = _ai()
    assert settings.api_key is not None and settings.api_key.get_secret_value() == TEST_KEY
    assert settings.base_url == "http://localhost:11434/v1"
    assert (settings.model, settings.timeout, settings.max_tool_rounds) == ("llama3.2", 12.5, 2)
    assert (settings.context_tokens, settings.max_retries) == (4096, 0)
    assert sources["openai_api_key"] == "env OPENAI_API_KEY" and sources["ai_timeout"] == "env NETSPY_AI_TIMEOUT"


def test_defaults_empty_values_and_the_command_line(config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "")
    monkeypatch.setenv("NETSPY_MODEL", "  ")
    settings, sources = _ai()
    assert settings.api_key is None and settings.model == DEFAULT_MODEL == "gpt-5-mini"
    assert settings.timeout == 60 and settings.max_tool_rounds == 4 and settings.context_tokens is None
    assert not settings.configured
    assert sources["openai_api_key"] == sources["model"] == "default"  # blank counts as unset
    monkeypatch.setenv("NETSPY_MODEL", "a")
    assert _ai({"model": "b"})[0].model == "b"
    assert _ai({"model": None})[0].model == "a"  # an unset CLI flag


def test_the_config_file_sets_ai_settings_below_env_and_command_line(
    config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config.write_text(
        f'openai_api_key = "{TEST_KEY}"\nopenai_base_url = "http://127.0.0.1:9/v1"\n'
        'model = "from-file"\nai_context_tokens = 8192\nai_timeout = 7\n'
    )
    settings, sources = _ai()
    assert settings.api_key is not None and settings.api_key.get_secret_value() == TEST_KEY
    assert (settings.base_url, settings.model, settings.context_tokens, settings.timeout) == (
        "http://127.0.0.1:9/v1",
        "from-file",
        8192,
        7,
    )
    assert sources["model"] == sources["openai_api_key"] == f"file {config}"
    monkeypatch.setenv("NETSPY_MODEL", "from-env")
    assert _ai()[0].model == "from-env" and _ai()[1]["model"] == "env NETSPY_MODEL"
    assert _ai({"model": "from-cli"})[0].model == "from-cli"


def test_from_settings_carries_every_ai_setting(config: Path) -> None:
    """Each AISettings field comes from its Settings field: none is left at its default by mistake."""
    changed = Settings(
        openai_api_key=SecretStr(TEST_KEY),
        openai_base_url="http://h:1/v1",
        model="m",
        ai_timeout=1.5,
        ai_max_tool_rounds=9,
        ai_context_tokens=1000,
        ai_max_retries=7,
    )
    ai = AISettings.from_settings(changed)
    assert all(getattr(ai, name) != field.default for name, field in AISettings.model_fields.items())


def test_configured_by_key_or_by_base_url() -> None:
    assert AISettings(api_key=SecretStr(TEST_KEY)).configured
    assert AISettings(base_url="http://127.0.0.1:8080/v1").configured
    assert not AISettings(api_key=SecretStr("")).configured
    assert AISettings(base_url="http://h/v1").key_for_client() == "not-needed"
    with pytest.raises(AIError, match="No AI model is configured") as info:
        AISettings().require_configured()
    assert "OPENAI_API_KEY" in (info.value.hint or "") and "openai_base_url" in (info.value.hint or "")
    AISettings(base_url="http://h/v1").require_configured()


def test_key_never_in_repr_str_or_describe(config: Path) -> None:
    settings = AISettings(api_key=SecretStr(TEST_KEY), base_url="http://user:pw@host:8000/v1")
    for text in (repr(settings), str(settings), settings.describe(), settings.model_dump_json()):
        assert TEST_KEY not in text
    assert settings.describe() == "gpt-5-mini at http://user:****@host:8000/v1 (key set)"
    assert redact_url("http://user:pw@host:8000/v1") == "http://user:****@host:8000/v1"
    assert redact_url("https://api.openai.com/v1") == "https://api.openai.com/v1"
    assert TEST_KEY not in repr(Settings(openai_api_key=SecretStr(TEST_KEY)))


@pytest.mark.parametrize(
    ("var", "value", "name"),
    [
        ("NETSPY_AI_TIMEOUT", "soon", "ai_timeout"),
        ("NETSPY_AI_TIMEOUT", "-1", "ai_timeout"),
        ("NETSPY_AI_MAX_TOOL_ROUNDS", "many", "ai_max_tool_rounds"),
        ("NETSPY_AI_CONTEXT_TOKENS", "12", "ai_context_tokens"),
        ("OPENAI_BASE_URL", "localhost:11434", "openai_base_url"),
        ("OPENAI_API_KEY", "sk-two words", "openai_api_key"),
    ],
)
def test_bad_values_name_the_setting_and_the_variable(
    config: Path, monkeypatch: pytest.MonkeyPatch, var: str, value: str, name: str
) -> None:
    monkeypatch.setenv(var, value)
    with pytest.raises(UsageError) as info:
        load_settings({})
    message = str(info.value)
    assert f"invalid setting {name}: " in message and f"(env {var})" in message and "\n" not in message
    if var == "OPENAI_API_KEY":
        assert "two words" not in message


def test_a_bad_value_in_the_file_names_the_file(config: Path) -> None:
    config.write_text("ai_max_retries = 99\n")
    with pytest.raises(UsageError, match=r"invalid setting ai_max_retries: .* \(file .*config.toml\)"):
        load_settings({})


def test_importing_the_ai_layer_stays_light() -> None:
    """No Textual, no MCP, and the openai SDK only on first use (the CLI starts fast)."""
    code = "import sys, netspy_tui.ai; print(sorted(m for m in ('textual', 'mcp', 'openai') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "[]"
