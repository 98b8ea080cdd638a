"""Configuration: one documented model, one precedence — defaults < config file < env < CLI.

The file is TOML at ``$XDG_CONFIG_HOME/netspy-tui/config.toml`` (or ``NETSPY_CONFIG``); environment
variables use the ``NETSPY_`` prefix (``NETSPY_SERVER``, ``NETSPY_INTERVAL``, ...). OpenAI settings
keep their usual names (``OPENAI_API_KEY``, ``OPENAI_BASE_URL``) and are read by ``netspy_tui.ai``.
``netspy-tui --show-config`` prints every value with its source, secrets masked.

The file is read once, at most :data:`MAX_CONFIG_BYTES`; an unknown key in it is an error naming
the key (and the closest known one), as are a directory or an oversized file where it should be.
"""

from __future__ import annotations

import difflib
import os
import tomllib
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal

import httpx
from platformdirs import user_config_path, user_state_path
from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, InitSettingsSource, PydanticBaseSettingsSource, SettingsConfigDict

from netspy_tui.errors import UsageError
from netspy_tui.textsafe import clean, redact_url

APP_NAME = "netspy-tui"
DEFAULT_SERVER = "http://localhost:8080"
MAX_CONFIG_BYTES = 1024 * 1024
#: The config file's values while :func:`load_settings` builds Settings (so the file is read once).
_FILE_VALUES: ContextVar[dict[str, Any] | None] = ContextVar("netspy_file_values", default=None)


def config_file() -> Path:
    env = os.environ.get("NETSPY_CONFIG")
    return Path(env) if env else user_config_path(APP_NAME) / "config.toml"


def state_dir() -> Path:
    """Where logs and exports go by default; created only when something is written."""
    return user_state_path(APP_NAME)


class Settings(BaseSettings):
    """Every setting netspy-tui reads. Field docs are the reference in README."""

    model_config = SettingsConfigDict(env_prefix="NETSPY_", extra="ignore", validate_default=True)

    server: str | None = None
    """eBPF server URL. Unset: use http://localhost:8080 if it answers, else the embedded collector."""
    token: SecretStr | None = None
    """Bearer token for the eBPF server (client) or required by `netspy-tui serve --token`."""
    timeout: float = Field(10.0, gt=0, le=600)
    """Read timeout in seconds for eBPF server requests (connect timeout is min(3, timeout))."""
    retries: int = Field(2, ge=0, le=10)
    """Retries (with backoff) for idempotent reads on connection errors and 502/503/504."""
    collector: Literal["auto", "ebpf", "procfs", "replay"] = "auto"
    """Embedded collector: eBPF when it loads (root), else procfs sampling; or a replayed file."""
    replay: Path | None = None
    """JSON-lines recording to replay (implies collector=replay)."""
    replay_speed: float = Field(1.0, ge=0)
    """Replay speed multiplier; 0 replays as fast as possible."""
    record: Path | None = None
    """Write every collected event to this JSON-lines file as well."""
    db: Path | None = None
    """SQLite file keeping history across restarts (default: a private scratch file, removed on exit)."""
    retention: float = Field(24 * 3600, gt=0)
    """Seconds of history kept in the store."""
    interval: float = Field(1.0, ge=0.1, le=60)
    """Dashboard refresh interval in seconds."""
    window: int = Field(60, ge=1, le=7 * 24 * 3600)
    """Dashboard time window in seconds (cycle with `w`)."""
    procfs_interval: float = Field(1.0, ge=0.05, le=60)
    """Sampling interval of the procfs collector in seconds."""
    export_dir: Path | None = None
    """Where `e` in the dashboard writes exports (default: the per-user state directory's `exports`,
    ~/.local/state/netspy-tui/exports, created 0700)."""

    @field_validator("server")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        """An http(s) URL with a host, parsed the way the HTTP client will parse it."""
        if value is None:
            return None
        shown = clean(redact_url(value), 80)
        problem = ""
        try:
            url = httpx.URL(value.strip())
            if url.scheme not in ("http", "https"):
                problem = "it must start with http:// or https://"
            elif not url.host:
                problem = "it has no host name"
        except httpx.InvalidURL as exc:
            problem = clean(exc, 80)
        if problem:
            raise ValueError(f"'{shown}' is not a usable eBPF server URL ({problem}), e.g. http://localhost:8080")
        return value.strip()

    @field_validator("token")
    @classmethod
    def _printable_token(cls, value: SecretStr | None) -> SecretStr | None:
        """A bearer token: visible ASCII without spaces (outer whitespace, e.g. a file's newline, is dropped)."""
        if value is None:
            return None
        token = value.get_secret_value().strip()
        if not token:
            raise ValueError("the token is empty")
        if not all("!" <= ch <= "~" for ch in token):
            raise ValueError("the token must be printable ASCII without spaces")  # never echo the token itself
        return SecretStr(token)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        values = _FILE_VALUES.get()
        file_values = read_config_file(config_file()) if values is None else values
        return (init_settings, env_settings, InitSettingsSource(settings_cls, init_kwargs=file_values))


#: Settings people look for in the file that are read from the environment only.
_ENV_ONLY = {"openai_api_key": "OPENAI_API_KEY", "openai_base_url": "OPENAI_BASE_URL", "model": "NETSPY_MODEL",
             "api_key": "OPENAI_API_KEY", "base_url": "OPENAI_BASE_URL"}


def _unknown_key(key: str) -> str:
    """'sever' (did you mean 'server'?) — names only: a value in the file may be a secret."""
    shown = f"'{clean(key, 40)}'"
    if key.lower() in _ENV_ONLY:
        return f"{shown} (set {_ENV_ONLY[key.lower()]} in the environment instead)"
    close = difflib.get_close_matches(key.lower(), list(Settings.model_fields), n=1, cutoff=0.6)
    return f"{shown} (did you mean '{close[0]}'?)" if close else shown


def read_config_file(path: Path) -> dict[str, Any]:
    """The config file's settings ({} when there is no file); UsageError (one line) when it is unusable.

    Read once and at most :data:`MAX_CONFIG_BYTES` (a config file is a few lines: a huge one is a
    mistake, and parsing it would stall the start)."""
    where = f"the config file {clean(path, 200)}"
    fix = "fix the file, or point NETSPY_CONFIG at another one"
    if path.is_dir():
        raise UsageError(f"{where} is a directory, not a file",
                         "point NETSPY_CONFIG at a TOML file" if os.environ.get("NETSPY_CONFIG")
                         else "remove the directory, or point NETSPY_CONFIG at a TOML file")
    try:
        with path.open("rb") as f:
            data = f.read(MAX_CONFIG_BYTES + 1)
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise UsageError(f"cannot read {where}: {exc.strerror or type(exc).__name__}", fix) from None
    if len(data) > MAX_CONFIG_BYTES:
        raise UsageError(f"{where} is larger than {MAX_CONFIG_BYTES // 1024 // 1024} MiB, too big for a config file",
                         fix)
    try:
        values = tomllib.loads(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise UsageError(f"cannot read {where}: not UTF-8 text (byte {exc.start})", fix) from None
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"cannot read {where}: not valid TOML ({clean(exc, 120)})", fix) from None
    unknown = [key for key in values if key not in Settings.model_fields]
    if unknown:
        names = "; ".join(_unknown_key(key) for key in unknown[:5])
        raise UsageError(f"unknown setting{'s' if len(unknown) > 1 else ''} {names} in {where}",
                         "the settings are: " + ", ".join(Settings.model_fields))
    return values


def load_settings(cli: dict[str, Any]) -> tuple[Settings, dict[str, str]]:
    """Settings with CLI values on top, and where each value came from.

    Raises :class:`pydantic.ValidationError` for a bad value and :class:`UsageError` for a config
    file that cannot be used (see :func:`read_config_file`).
    """
    given = {k: v for k, v in cli.items() if v is not None}
    path = config_file()
    file_values = read_config_file(path)
    reset = _FILE_VALUES.set(file_values)
    try:
        settings = Settings(**given)
    finally:
        _FILE_VALUES.reset(reset)
    sources: dict[str, str] = {}
    for name in Settings.model_fields:
        if name in given:
            sources[name] = "command line"
        elif f"NETSPY_{name.upper()}" in {k.upper() for k in os.environ}:
            sources[name] = f"env NETSPY_{name.upper()}"
        elif name in file_values:
            sources[name] = f"file {path}"
        else:
            sources[name] = "default"
    return settings, sources


def describe_settings(settings: Settings, sources: dict[str, str]) -> str:
    lines = [f"config file: {config_file()}" + ("" if config_file().is_file() else " (not present)")]
    for name in Settings.model_fields:
        value = getattr(settings, name)
        if isinstance(value, SecretStr):
            shown = "********"
        elif name == "server" and value is not None:
            shown = redact_url(value)
        else:
            shown = "(unset)" if value is None else str(value)
        lines.append(f"{name:<16} {shown:<40} {sources[name]}")
    key = os.environ.get("OPENAI_API_KEY")
    lines.append(f"{'OPENAI_API_KEY':<16} {('********' if key else '(unset)'):<40} env")
    lines.append(f"{'OPENAI_BASE_URL':<16} {redact_url(os.environ.get('OPENAI_BASE_URL', '(unset)')):<40} env")
    return "\n".join(lines)
