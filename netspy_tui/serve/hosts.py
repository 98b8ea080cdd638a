"""DNS-rebinding protection for everything netspy-tui serves over HTTP (the eBPF API, ``/mcp``,
``mcp --http``): one policy, checked for every path by :class:`HostGuardMiddleware`.

A web page the operator opens can make the browser send requests to this server through a DNS name
it controls that resolves to 127.0.0.1 (or the host's address). Such requests carry the attacker's
name in ``Host`` (and in ``Origin``), never an address the server was bound to, so:

* ``Host`` must name the bound address: when bound to loopback, ``localhost`` or any loopback
  address; when bound to one address, that address; when bound to all addresses (``0.0.0.0``,
  ``::``) or to a host name, any IP address literal (a rebinding attack needs a DNS name), and
  ``localhost``. The bound host name itself and every ``--allow-host NAME`` are allowed too;
  ``--allow-host '*.SUFFIX'`` allows every name ending in ``.SUFFIX`` (a name of two labels or more,
  ``*.svc.cluster.local``: names only a resolver the operator trusts answers for, such as a cluster's
  DNS; ``*.com`` or ``*.local`` would let anyone's name through and are refused);
  ``--allow-host '*'`` turns the check off (e.g. behind a reverse proxy that checks names).
  The port is not compared. Otherwise: ``421 Misdirected Request``.
* ``Origin``, when a browser sends one, must be ``http(s)://`` with a host the same rule allows;
  otherwise (``null`` included): ``403 Forbidden``.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from urllib.parse import urlsplit

from starlette.types import ASGIApp, Receive, Scope, Send

from netspy_tui.textsafe import clean

_LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"})
_WILDCARDS = frozenset({"", "0.0.0.0", "::"})


def allow_host_entry(text: str) -> str:
    """One ``--allow-host`` value, checked: a name, ``*``, or ``*.SUFFIX`` with a suffix of two labels or
    more. Raises ValueError with the reason."""
    value = text.strip()
    if not value:
        raise ValueError("expected a host name, '*.SUFFIX' or '*', got an empty value")
    if value == "*" or not value.startswith("*"):
        if "*" in value:
            raise ValueError(f"'{clean(value, 80)}': '*' is allowed only alone or as the first label ('*.example.com')")
        return value
    suffix = _normal(value[1:])
    if not value.startswith("*.") or "*" in suffix or suffix.count(".") < 2 or ".." in suffix:
        raise ValueError(f"'{clean(value, 80)}': a wildcard is '*.' and a suffix of two labels or more "
                         "('*.svc.cluster.local'), or '*' alone")  # fmt: skip
    return value


def _normal(name: str) -> str:
    return name.strip().strip("[]").rstrip(".").lower()


def _ip(name: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(name)
    except ValueError:
        return None


def is_loopback(host: str) -> bool:
    """True for addresses only this machine can reach (127.0.0.0/8, ::1, localhost)."""
    name = _normal(host)
    if name in _LOOPBACK_NAMES:
        return True
    ip = _ip(name)
    return ip is not None and ip.is_loopback  # a host name or a wildcard: other machines may reach it


def host_of(header: str) -> str:
    """The host part of a ``Host`` header value (``[::1]:8080`` -> ``::1``, ``a.b:80`` -> ``a.b``)."""
    value = header.strip()
    if value.startswith("["):
        return _normal(value[1:].partition("]")[0])
    if value.count(":") > 1:  # an unbracketed IPv6 address (not valid in Host, but unambiguous)
        return _normal(value)
    return _normal(value.partition(":")[0])


class HostPolicy:
    """Which ``Host`` / ``Origin`` names a server bound to ``bind_host`` answers (see the module doc)."""

    def __init__(self, bind_host: str, allowed_hosts: Sequence[str] = ()) -> None:
        self.bind_host = bind_host
        self.allow_all = any(h.strip() == "*" for h in allowed_hosts)
        bind = _normal(bind_host)
        bind_ip = _ip(bind)
        named = [allow_host_entry(h) for h in allowed_hosts if h.strip() and h.strip() != "*"]
        #: ``--allow-host '*.SUFFIX'``: each as ``.suffix`` (a name allowed ends with it; the suffix alone is not)
        self.suffixes = tuple(_normal(h[1:]) for h in named if h.startswith("*."))
        self.names = {_normal(h) for h in named if not h.startswith("*.")}
        self.loopback = is_loopback(bind)
        self.any_ip = bind in _WILDCARDS or (bind_ip is None and not self.loopback)
        if self.loopback or self.any_ip:
            self.names |= _LOOPBACK_NAMES
        if bind not in _WILDCARDS:
            self.names.add(bind)
        self.bind_ip = bind_ip

    def allows(self, host: str) -> bool:
        """``host`` (a bare host name or address, no port) is one this server answers to."""
        if self.allow_all:
            return True
        name = _normal(host)
        if not name:
            return False
        if name in self.names:
            return True
        ip = _ip(name)
        if ip is None:
            return name.endswith(self.suffixes) and all(name.split("."))  # (no empty label: "..svc.cluster.local")
        return self.any_ip or ip == self.bind_ip or (self.loopback and ip.is_loopback)

    def allows_host_header(self, header: str | None) -> bool:
        return self.allow_all or (header is not None and self.allows(host_of(header)))

    def allows_origin(self, origin: str | None) -> bool:
        """No ``Origin`` (not a browser's cross-site request) passes; ``null`` and other schemes do not."""
        if origin is None or self.allow_all:
            return True
        try:
            parts = urlsplit(origin.strip())
            hostname = parts.hostname
        except ValueError:
            return False
        return parts.scheme in ("http", "https") and hostname is not None and self.allows(hostname)


class HostGuardMiddleware:
    """Refuse HTTP (and websocket) requests whose ``Host`` (421) or ``Origin`` (403) the policy does not allow."""

    def __init__(self, app: ASGIApp, policy: HostPolicy) -> None:
        self.app = app
        self.policy = policy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        host: str | None = None
        origin: str | None = None
        for name, value in scope.get("headers", []):
            if name == b"host" and host is None:
                host = value.decode("latin-1")
            elif name == b"origin" and origin is None:
                origin = value.decode("latin-1")
        if host is None and not self.policy.allow_all:  # (an HTTP/1.0 request may leave it out: no name to allow)
            status, text = 400, "Bad Request: the request has no Host header; send the name or address it is sent to"
        elif not self.policy.allows_host_header(host):
            status, text = (
                421,
                (
                    f"Misdirected Request: this server does not answer to Host "
                    f"'{clean(host or '', 80)}'; start it with --allow-host NAME to allow that name"
                ),
            )
        elif not self.policy.allows_origin(origin):
            status, text = 403, f"Forbidden: requests from Origin '{clean(origin or '', 80)}' are refused"
        else:
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008, "reason": text[:100]})
            return
        from netspy_tui.serve.app import text_response  # (app.py builds its middleware from this module)

        await text_response(status, text)(scope, receive, send)
