"""Make untrusted text (process names, hosts, server bodies, model output) inert.

Everything that came off the network or the kernel passes through :func:`clean` before it is
printed or rendered: control characters, escape sequences and bidi overrides become visible
``\\xNN``/``\\u....`` escapes, and very long values are cut with an ellipsis. This module has no
Textual dependency; the TUI wraps the result in ``rich.text.Text`` so it is never parsed as markup.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Iterable
from typing import Any, Literal
from urllib.parse import parse_qsl, unquote_plus, urlsplit, urlunsplit

ELLIPSIS = "…"

# Bidi controls and other invisible format characters that can reorder or hide text.
_FORMAT_CATEGORIES = {"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"}


def _escape(ch: str) -> str:
    code = ord(ch)
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def clean(value: object, max_len: int | None = 200, *, keep_newlines: bool = False) -> str:
    """Return ``value`` as a printable single-line (or multi-line) string.

    ``max_len`` counts characters of the result; longer values end with ``…``.
    """
    if isinstance(value, bytes):
        text = value.decode("utf-8", errors="backslashreplace")
    else:
        text = str(value)
    # (isprintable: no character of the "Other" and "Separator" categories but the space, a superset
    # of the ones escaped here; checked in C, it spares the loop below almost every value)
    if (text.replace("\n", "").replace("\t", "") if keep_newlines else text).isprintable():
        result = text
    else:
        out: list[str] = []
        for ch in text:
            if keep_newlines and ch in "\n\t":
                out.append(ch)
            elif ch == " " or unicodedata.category(ch) not in _FORMAT_CATEGORIES:
                out.append(ch)
            else:
                out.append(_escape(ch))
        result = "".join(out)
    if max_len is not None and len(result) > max_len:
        result = result[: max(0, max_len - 1)] + ELLIPSIS
    return result


def markup_literal(text: str) -> str:
    """``text`` as Textual markup that reads back as exactly ``text``: every ``[`` escaped (``\\[``; a backslash
    before anything else is itself). For the few places that take only markup (the command palette's titles);
    everywhere else untrusted text is a ``Text``/``Content``, never parsed. (Textual's ``escape`` escapes only a
    ``[`` that starts a tag of the look it knows: ``[ @click=app.quit]``, ``[$accent]`` or ``[RED]`` stayed
    markup.)"""
    return text.replace("[", "\\[")


def first_line(value: object, max_len: int = 200) -> str:
    """The first non-empty line of ``value``, cleaned — for error bodies."""
    text = value.decode("utf-8", errors="backslashreplace") if isinstance(value, bytes) else str(value)
    for line in text.splitlines():
        if line.strip():
            return clean(line.strip(), max_len)
    return ""


def valid_utf8(value: Any, errors: Literal["replace", "backslashreplace"]) -> Any:
    """``value`` (a string, or lists and dicts of them, keys too) as text UTF-8 can carry.

    Undecodable bytes that ``surrogateescape`` kept become U+FFFD (``replace``, as Go's JSON encoder
    does) or a readable ``\\xff`` (``backslashreplace``, which keeps the byte); other lone
    surrogates become ``?`` or ``\\udXXX``. Anything else is returned as it is.
    """
    if isinstance(value, str):
        try:
            return value.encode("utf-8", "surrogateescape").decode("utf-8", errors)
        except UnicodeEncodeError:  # a lone surrogate that is not an undecodable byte
            return value.encode("utf-8", errors).decode("utf-8")
    if isinstance(value, list):
        return [valid_utf8(v, errors) for v in value]
    if isinstance(value, dict):
        return {valid_utf8(k, errors): valid_utf8(v, errors) for k, v in value.items()}
    return value


#: query parameters whose values are credentials (``?api_key=``, ``?token=``, ``?sig=``): masked in every log line
_SECRET_PARAM = re.compile(r"key|token|secret|sig|pass|auth|cred|session", re.IGNORECASE)


def url_secrets(url: str) -> list[str]:
    """What ``url`` carries as credentials, to mask wherever it appears: the password of its ``user:password@``
    part, the values of its query parameters named like keys (``?api_key=…``, ``?token=…``: a proxy's key often
    rides there) and a bare word in the query, each as written (percent-encoded, as logs show the URL) and decoded.
    (Other values, ``?api-version=2024-06-01``, would garble every log line they appear in: messages and labels
    show the URL through :func:`redact_url`, which hides every value.)"""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:  # (a "[" in the password: urlsplit reads an IPv6 host; the HTTP client takes it)
        password = _password_by_hand(url)
        return [password] if password else []
    found = [password, _basic(parts.username or "", password)] if password else []
    for pair in filter(None, re.split(r"[&;]", parts.query)):
        name, eq, value = pair.partition("=")
        if not eq:
            found += [name, unquote_plus(name)]
        elif _SECRET_PARAM.search(unquote_plus(name)):
            found += [value, unquote_plus(value)]
    return [s for s in dict.fromkeys(found) if s]


def _basic(user: str, password: str) -> str:
    """The ``Authorization: Basic`` credential an HTTP client makes of a URL's user and password (a server that
    echoes it shows the password, in base64)."""
    import base64

    return base64.b64encode(f"{unquote_plus(user)}:{unquote_plus(password)}".encode()).decode("ascii")


def _authority(url: str) -> tuple[str, str, str]:
    """``url`` as (what comes before its authority, its authority, the rest), split by hand."""
    head, sep, tail = url.partition("://")
    if not sep:
        return "", "", url
    end = min((i for i in (tail.find(c) for c in "/?#") if i >= 0), default=len(tail))
    return head + sep, tail[:end], tail[end:]


def _password_by_hand(url: str) -> str | None:
    userinfo, at, _ = _authority(url)[1].rpartition("@")
    return userinfo.partition(":")[2] or None if at else None


def _redact_by_hand(url: str) -> str:
    """:func:`redact_url` of a URL urlsplit refuses: the password, the query and the fragment masked."""
    head, authority, rest = _authority(url)
    userinfo, at, host = authority.rpartition("@")
    if at and ":" in userinfo:
        authority = f"{userinfo.partition(':')[0]}:****@{host}"
    path, q, query = rest.partition("?")
    path, h, _ = path.partition("#")
    return head + authority + path + (q + "****" if q and query else q) + (h + "****" if h else "")


def redact_url(url: str) -> str:
    """``url`` with the password of its ``user:password@`` part and the values of its query replaced by ``****``
    (for messages and logs)."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:  # (not a URL urlsplit reads, e.g. "[" in its password: its credentials hidden all the same)
        return _redact_by_hand(url)
    if password:
        host = parts.netloc.rpartition("@")[2]
        parts = parts._replace(netloc=f"{parts.username or ''}:****@{host}")
    if parts.query:
        # (a bare word is masked whole: it may be the token itself)
        masked = [f"{name}=****" if value else "****" for name, value in parse_qsl(parts.query, keep_blank_values=True)]
        parts = parts._replace(query="&".join(masked) or "****")
    if parts.fragment:
        parts = parts._replace(fragment="****")
    if not password and not parts.query and not parts.fragment:
        return url
    return urlunsplit(parts)


def secret_forms(secret: str) -> list[str]:
    """``secret`` as a text that repeats it may carry it: as written, and as a JSON string spells it (a server's
    JSON body echoing it: ``\\"``, ``\\\\``, ``\\/``, ``\\uXXXX``)."""
    escaped = [json.dumps(secret)[1:-1], json.dumps(secret, ensure_ascii=False)[1:-1]]
    return list(dict.fromkeys([secret, *escaped, *(e.replace("/", "\\/") for e in escaped)]))


def mask_secrets(text: str, secrets: Iterable[str]) -> str:
    """``text`` with each of ``secrets`` (longest first) replaced by ``****``."""
    for secret in sorted(secrets, key=len, reverse=True):
        if secret and secret in text:
            text = text.replace(secret, "****")
    return text


def token_problem(token: str) -> str | None:
    """Why ``token`` (its outer whitespace dropped: a file's newline) cannot be a bearer token, else None: it must
    be visible ASCII, one line without spaces — what an HTTP header carries and every client can send, and what
    the log's masking finds whole (a control character would be escaped in a JSON echo of it). Never echoes it."""
    token = token.strip()
    if not token:
        return "is empty"
    if not all("!" <= ch <= "~" for ch in token):
        return "must be printable ASCII without spaces"
    return None


def _json_escape(match: re.Match[str]) -> str:
    ch = match.group()
    if unicodedata.category(ch) not in _FORMAT_CATEGORIES:
        return ch
    code = ord(ch)
    if code > 0xFFFF:  # a UTF-16 surrogate pair, as JSON spells characters beyond the BMP
        code -= 0x10000
        return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"
    return f"\\u{code:04x}"


_NOT_PLAIN_ASCII = re.compile(r"[^\x20-\x7e\n]")


def inert_json(document: str) -> str:
    """JSON text (from ``json.dumps``) with every control, format or bidi character inside its strings
    written as a ``\\uXXXX`` escape: the same JSON value, but nothing a terminal would act on.

    ``json.dumps`` already escapes C0 controls inside strings, so a raw newline left in the text is
    structural (indentation) and is kept.
    """
    return _NOT_PLAIN_ASCII.sub(_json_escape, document)
