"""Configuration: one documented model, one precedence — defaults < config file < env < CLI.

The file is TOML at ``$XDG_CONFIG_HOME/netspy-tui/config.toml`` (or ``NETSPY_CONFIG``), flat
``name = value`` lines; environment variables use the ``NETSPY_`` prefix (``NETSPY_SERVER``,
``NETSPY_MODEL``, ``NETSPY_AI_TIMEOUT``, ...), except the two OpenAI ones, which keep their usual
names (``OPENAI_API_KEY``, ``OPENAI_BASE_URL``; ``openai_api_key`` / ``openai_base_url`` in the file).
The AI layer takes its part of these through :meth:`netspy_tui.ai.settings.AISettings.from_settings`.
``netspy-tui --show-config`` prints every value with its source, secrets masked.

The file is read once, at most :data:`MAX_CONFIG_BYTES`; an unknown key in it is an error naming
the key (and the closest known one), as are a directory or an oversized file where it should be, and
a file root should not trust (another user's, one others can write, a FIFO: see :func:`read_config_file`).
"""

from __future__ import annotations

import os
import re
from contextvars import ContextVar
from pathlib import Path
from typing import Annotated, Any, Literal

from platformdirs import user_config_path, user_state_path
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, ValidationInfo, field_validator

from netspy_tui.errors import UsageError
from netspy_tui.textsafe import clean, redact_url, token_problem

APP_NAME = "netspy-tui"
DEFAULT_SERVER = "http://localhost:8080"
MAX_CONFIG_BYTES = 1024 * 1024
#: The config file's values while :func:`load_settings` builds Settings (so the file is read once).
_FILE_VALUES: ContextVar[dict[str, Any] | None] = ContextVar("netspy_file_values", default=None)

#: The model asked when neither the config file, ``NETSPY_MODEL`` nor ``--model`` names one.
DEFAULT_MODEL = "gpt-5-mini"

# The AI settings' bounds, shared with netspy_tui.ai.settings.AISettings (defined once, here).
AIModel = Annotated[str, Field(min_length=1, max_length=200)]
AITimeout = Annotated[float, Field(gt=0, le=3600)]
AIToolRounds = Annotated[int, Field(ge=0, le=20)]
AIContextTokens = Annotated[int, Field(ge=256, le=10_000_000)]
AIRetries = Annotated[int, Field(ge=0, le=10)]


def config_file() -> Path:
    env = os.environ.get("NETSPY_CONFIG")
    return Path(env) if env else user_config_path(APP_NAME) / "config.toml"


def state_dir() -> Path:
    """Where logs and exports go by default; created only when something is written."""
    return user_state_path(APP_NAME)


#: An http(s) URL of a plain form — a DNS name or a dotted IPv4 address, an optional port, an optional path of
#: unreserved characters — that httpx parses as given. Checked without importing httpx: the dashboard's
#: frame is drawn before the HTTP client loads. Anything else (IPv6, user info, a query) goes to httpx.
_PLAIN_URL = re.compile(
    r"https?://(?P<host>[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*)"
    r"(?::(?P<port>[0-9]{1,5}))?(?:/[A-Za-z0-9._~/-]*)?"
)
_DOTTED_QUAD = re.compile(r"[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+")


def _plain_http_url(value: str) -> bool:
    match = _PLAIN_URL.fullmatch(value) if len(value) <= 2048 else None
    if match is None:
        return False
    host, port = match["host"], match["port"]
    if port is not None and not 0 < int(port) <= 65535:  # (httpx keeps any port as given: refused below)
        return False
    if _DOTTED_QUAD.fullmatch(host):  # httpx reads it as an IPv4 address: it must be one
        import ipaddress

        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            return False
    return True


#: the longest retention taken (ten years, in seconds)
MAX_RETENTION = 10 * 365 * 24 * 3600
#: the slowest replay taken (above 0: as fast as it can): a thousandth of the recording's pace
MIN_REPLAY_SPEED = 0.001


class Settings(BaseModel):
    """Every setting netspy-tui reads. Field docs are the reference in README.

    ``Settings(**values)`` takes ``values`` (the command line's) over the environment over the config file over
    the defaults. The environment is read here (:func:`_env_values`), not by pydantic-settings: importing that
    package was ~15 ms of CPU of every start (the dashboard's first frame, each ``--tool``) for one loop."""

    # populate_by_name: the file and the command line name the two OpenAI settings by field name.
    model_config = ConfigDict(extra="ignore", validate_default=True, populate_by_name=True)

    def __init__(self, **values: Any) -> None:
        file_values = _FILE_VALUES.get()
        if file_values is None:
            file_values = read_config_file(config_file())
        super().__init__(**{**file_values, **_env_values(), **values})

    server: str | None = None
    """eBPF server URL. Unset: http://localhost:8080 if an eBPF server answers there, else the embedded collector."""
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
    replay_times: Literal["now", "recorded"] = "now"
    """``now``: every replayed time moved by one offset so the recording's newest event lands now (windows of
    "the last N seconds" show it); ``recorded``: the recording's own times (``--since``/``--until`` as they were)."""
    record: Path | None = None
    """Write every collected event to this JSON-lines file as well."""
    db: Path | None = None
    """SQLite file keeping history across restarts (default: a private scratch file, removed on exit)."""
    retention: float = Field(24 * 3600, gt=0, le=MAX_RETENTION)
    """Seconds of history kept in the store (at most ten years: ``inf`` was taken, and every write failed at the
    first prune)."""
    interval: float = Field(1.0, ge=0.1, le=60)
    """Dashboard refresh interval in seconds."""
    window: int = Field(60, ge=1, le=7 * 24 * 3600)
    """Dashboard time window in seconds (cycle with `w`)."""
    procfs_interval: float = Field(1.0, ge=0.05, le=60)
    """Sampling interval of the procfs collector in seconds."""
    raw_rate: int = Field(50_000, ge=0)
    """Raw events the host keeps per second at most, all CPUs together, with the eBPF collector (``--raw-rate``;
    0: no cap): the rest are shed and reported as shed, their counts kept. (The collector's own default, shown
    as the effective value by ``--show-config``.)"""
    dns: bool = True
    """Name destinations (``/etc/hosts``, then reverse DNS in the background); false: addresses only,
    no question sent (``--no-dns``)."""
    dns_server: str | None = None
    """``ADDR[:PORT]`` of the name server to ask instead of ``/etc/resolv.conf``'s (``--dns-server``)."""
    export_dir: Path | None = None
    """Where `e` in the dashboard writes exports (default: the per-user state directory's `exports`,
    ~/.local/state/netspy-tui/exports, created 0700)."""

    # --- AI: OpenAI or any OpenAI-compatible server (Ollama, llama.cpp, vLLM) ---
    openai_api_key: SecretStr | None = Field(None, validation_alias="OPENAI_API_KEY")
    """API key (env OPENAI_API_KEY). Local servers usually need none. Never shown or logged."""
    openai_base_url: str | None = Field(None, validation_alias="OPENAI_BASE_URL")
    """OpenAI-compatible endpoint, e.g. http://localhost:11434/v1 (env OPENAI_BASE_URL); unset: OpenAI."""
    model: AIModel = DEFAULT_MODEL
    """AI model name (`--model`)."""
    ai_timeout: AITimeout = 60.0
    """Seconds to wait for the AI server: to connect, and between two pieces of a streamed answer."""
    ai_max_tool_rounds: AIToolRounds = 4
    """Rounds of tool calls a free-form question may use before the model must answer."""
    ai_context_tokens: AIContextTokens | None = None
    """The model's context window in tokens; prompts are sized to fit it with room for the answer.
    Unset: 128k for OpenAI, else what the server reports in `GET /models`, else 2048."""
    ai_max_retries: AIRetries = 2
    """Retries of a failed AI request (connection errors, 429, 5xx), with backoff."""

    @field_validator("openai_api_key", "openai_base_url", "model", "ai_context_tokens", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: Any, info: ValidationInfo) -> Any:
        """A blank value (``NETSPY_MODEL=" "``) is unset: the default applies."""
        if isinstance(value, SecretStr):
            blank = not value.get_secret_value().strip()
        else:
            blank = isinstance(value, str) and not value.strip()
        if not blank:
            return value
        return DEFAULT_MODEL if info.field_name == "model" else None

    @field_validator("db", "record", "replay", "export_dir", mode="before")
    @classmethod
    def _no_empty_path(cls, value: Any) -> Any:
        if isinstance(value, str) and not value.strip():  # (Path("") is the working directory: an aggregator's
            raise ValueError("must name a file or directory, not be empty (leave it unset for the default)")
        if isinstance(value, str | Path) and "\0" in str(value):  # (the OS refuses it: "unexpected error" it was)
            raise ValueError("must not hold a NUL character")
        return value

    @field_validator("db", "record", "replay", "export_dir")
    @classmethod
    def _home(cls, value: Path | None) -> Path | None:
        """``~`` is the home directory, as a shell would read it (``record = "~/rec.jsonl"`` made ``./~/``)."""
        return value.expanduser() if value is not None else None

    @field_validator("replay_speed")
    @classmethod
    def _replay_speed(cls, value: float) -> float:
        if 0 < value < MIN_REPLAY_SPEED:  # (1e-9 was taken, and the replay's clock overflowed: no events, exit 0)
            raise ValueError(f"must be 0 (as fast as it can) or at least {MIN_REPLAY_SPEED}")
        return value

    @field_validator("dns_server")
    @classmethod
    def _dns_server(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        from netspy_tui.names.resolver import parse_server

        parse_server(value)  # ValueError -> one line naming the setting
        return value.strip()

    @field_validator("server", "openai_base_url")
    @classmethod
    def _http_url(cls, value: str | None, info: ValidationInfo) -> str | None:
        """An http(s) URL with a host, parsed the way the HTTP client will parse it."""
        if value is None:
            return None
        if _plain_http_url(value.strip()):
            return value.strip()
        import httpx  # (~40 ms: only for a URL the plain form above does not cover)

        what = "AI server" if info.field_name == "openai_base_url" else "eBPF server"
        example = "http://localhost:11434/v1" if info.field_name == "openai_base_url" else "http://localhost:8080"
        shown = clean(redact_url(value), 80)
        problem = ""
        try:
            url = httpx.URL(value.strip())
            if url.scheme not in ("http", "https"):
                problem = "it must start with http:// or https://"
            elif not url.host:
                problem = "it has no host name"
            elif url.port is not None and not 0 < url.port <= 65535:
                problem = f"port {url.port} is not one: ports are 1-65535"
        except httpx.InvalidURL as exc:
            problem = clean(exc, 80)
        if problem:
            raise ValueError(f"'{shown}' is not a usable {what} URL ({problem}), e.g. {example}")
        return value.strip()

    @field_validator("token", "openai_api_key")
    @classmethod
    def _printable_token(cls, value: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        """A bearer token or key: visible ASCII without spaces (outer whitespace, e.g. a newline, is dropped)."""
        if value is None:
            return None
        what = "the API key" if info.field_name == "openai_api_key" else "the token"
        problem = token_problem(value.get_secret_value())  # (the rule every server token follows; never echoed)
        if problem:
            raise ValueError(f"{what} {problem}")
        return SecretStr(value.get_secret_value().strip())


def env_name(name: str) -> str:
    """The environment variable of setting ``name``: ``NETSPY_SERVER``, or its own name where the
    field has one (``OPENAI_API_KEY``)."""
    alias = Settings.model_fields[name].validation_alias
    return alias if isinstance(alias, str) else f"NETSPY_{name.upper()}"


def _env_values() -> dict[str, str]:
    """The settings given in the environment, by field name. Names match in any case (``netspy_server``); an
    empty variable counts as unset (``OPENAI_API_KEY= netspy-tui``); other variables are ignored."""
    environ: dict[str, str] = {}
    for key, value in os.environ.items():
        upper = key.upper()
        if key == upper or upper not in environ:  # (the documented name wins over another case, in any order)
            environ[upper] = value
    # (a blank one too: "NETSPY_EXPORT_DIR= " exported into a directory named " ", and errors blamed "default")
    return {name: value for name in Settings.model_fields if (value := environ.get(env_name(name).upper(), "")).strip()}


def _unknown_key(key: str) -> str:
    """'sever' (did you mean 'server'?) — names only: a value in the file may be a secret."""
    shown = f"'{clean(key, 40)}'"
    wanted = key.lower()
    by_env = {env.lower(): name for name, env in ((n, env_name(n)) for n in Settings.model_fields)}
    if wanted in by_env:  # an environment variable's name: OPENAI_API_KEY, NETSPY_SERVER
        return f"{shown} (did you mean '{by_env[wanted]}'?)"
    import difflib

    close = difflib.get_close_matches(wanted, list(Settings.model_fields), n=1, cutoff=0.6)
    return f"{shown} (did you mean '{close[0]}'?)" if close else shown


def _trust_hint(path: Path) -> str:
    if os.environ.get("NETSPY_CONFIG"):
        return "point NETSPY_CONFIG at a regular file of the user running netspy-tui that only that user can write"
    return (
        "keep there a regular file of the user running netspy-tui that only that user can write, "
        "or point NETSPY_CONFIG at one"
    )


def read_config_file(path: Path) -> dict[str, Any]:
    """The config file's settings ({} when there is no file); UsageError (one line) when it is unusable.

    Read once and at most :data:`MAX_CONFIG_BYTES` (a config file is a few lines: a huge one is a
    mistake, and parsing it would stall the start). Read only when it is a regular file that belongs to the
    user running netspy-tui (or root) and that no one else can write, reached through no other user's link
    (:func:`netspy_tui.safefs.open_trusted_for_reading`): root keeping a user's ``HOME`` (``sudo -E``) never
    takes its server, token or AI endpoint from a file that user wrote, and a FIFO there never blocks."""
    where = f"the config file {clean(path, 200)}"
    fix = "fix the file, or point NETSPY_CONFIG at another one"
    if path.is_dir():
        raise UsageError(
            f"{where} is a directory, not a file",
            "point NETSPY_CONFIG at a TOML file"
            if os.environ.get("NETSPY_CONFIG")
            else "remove the directory, or point NETSPY_CONFIG at a TOML file",
        )
    from netspy_tui import safefs

    try:  # (root takes settings only from its own or its user's file: never another user's, nor a FIFO's)
        fd = safefs.open_trusted_for_reading(path, "the config file", _trust_hint(path))
        with os.fdopen(fd, "rb") as f:
            data = f.read(MAX_CONFIG_BYTES + 1)
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise UsageError(f"cannot read {where}: {exc.strerror or type(exc).__name__}", fix) from None
    if len(data) > MAX_CONFIG_BYTES:
        raise UsageError(
            f"{where} is larger than {MAX_CONFIG_BYTES // 1024 // 1024} MiB, too big for a config file", fix
        )
    import tomllib  # (~6 ms: only when there is a file)

    try:
        values = tomllib.loads(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise UsageError(f"cannot read {where}: not UTF-8 text (byte {exc.start})", fix) from None
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"cannot read {where}: not valid TOML ({clean(exc, 120)})", fix) from None
    unknown = [key for key in values if key not in Settings.model_fields]
    if unknown:
        names = "; ".join(_unknown_key(key) for key in unknown[:5])
        raise UsageError(
            f"unknown setting{'s' if len(unknown) > 1 else ''} {names} in {where}",
            "the settings are: " + ", ".join(Settings.model_fields),
        )
    for key, value in values.items():
        problem = _toml_type_problem(key, value)
        if problem:
            raise UsageError(f"invalid setting {key} in {where}: {problem}", fix)
    return values


def _toml_kind(name: str) -> str:
    """What TOML value setting ``name`` takes: ``bool``, ``int``, ``number`` or ``text``."""
    import typing

    kinds = {bool: "bool", int: "int", float: "number"}
    annotation = Settings.model_fields[name].annotation
    for arm in typing.get_args(annotation) or (annotation,):  # (``X | None``: X)
        arm = typing.get_args(arm)[0] if typing.get_origin(arm) is Annotated else arm
        if arm in kinds:
            return kinds[arm]
    return "text"


def _toml_type_problem(name: str, value: Any) -> str | None:
    """Why a config file's ``value`` is not one setting ``name`` takes, or None. TOML values are typed, so they
    are taken as written: ``retries = true`` is not 1, ``dns = "yes"`` not true (the environment's text is
    converted; a file's is not), and a text setting set to "" is a mistake, not its default."""
    kind = _toml_kind(name)
    if kind == "bool":
        return None if type(value) is bool else "expected true or false"
    if kind == "int":
        return None if type(value) is int else "expected a whole number"
    if kind == "number":
        return None if type(value) in (int, float) else "expected a number"
    if type(value) is not str:
        return "expected a quoted text"
    return None if value.strip() else "empty (remove the line to use the default)"


def load_settings(cli: dict[str, Any]) -> tuple[Settings, dict[str, str]]:
    """Settings with CLI values on top, and where each value came from; validated here, once.

    Raises :class:`UsageError` (one line) for a bad value, naming the setting and where the value
    came from (never the value: it may be a secret), and for a config file that cannot be used (see
    :func:`read_config_file`).
    """
    given = {k: v for k, v in cli.items() if v is not None}
    path = config_file()
    file_values = read_config_file(path)
    reset = _FILE_VALUES.set(file_values)
    try:
        settings = Settings(**given)
    except ValidationError as exc:
        err = exc.errors()[0]
        first = str(err["loc"][0]) if err["loc"] else ""
        name = next((n for n in Settings.model_fields if first in (n, env_name(n))), first)
        where = setting_source(name, given, file_values, path) if name in Settings.model_fields else ""
        msg = str(err["msg"]).removeprefix("Value error, ")
        raise UsageError(
            f"invalid setting {name}: {msg}" + (f" ({where})" if where else ""),
            "check the flag, NETSPY_*/OPENAI_* variables and the config file",
        ) from None
    finally:
        _FILE_VALUES.reset(reset)
    return settings, {name: setting_source(name, given, file_values, path) for name in Settings.model_fields}


def setting_source(name: str, given: dict[str, Any], file_values: dict[str, Any], path: Path) -> str:
    """Where the value of setting ``name`` comes from, by the precedence CLI > env > file > default."""
    if name in given:
        return "command line"
    var = env_name(name)
    if any(k.upper() == var and v.strip() for k, v in os.environ.items()):  # empty counts as unset
        return f"env {var}"
    if name in file_values:
        return f"file {path}"
    return "default"


def describe_settings(settings: Settings, sources: dict[str, str]) -> str:
    """Every setting, its value (secrets masked, URL passwords hidden) and its source, one per line."""
    lines = [f"config file: {config_file()}" + ("" if config_file().is_file() else " (not present)")]
    for name in Settings.model_fields:
        value = getattr(settings, name)
        if isinstance(value, SecretStr):
            shown = "********"
        elif name in ("server", "openai_base_url") and value is not None:
            shown = redact_url(value)
        else:
            shown = "(unset)" if value is None else str(value)
        lines.append(f"{name:<18} {clean(shown, 60):<40} {sources[name]}")
    return "\n".join(lines)
