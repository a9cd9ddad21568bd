"""Host and port helpers for the launcher and doctor: where to connect, whether a port is
free, and the user-facing error when it is not (naming the holder, from :mod:`qembed.host.procfs`).

Only the standard library is imported.
"""

from __future__ import annotations

import errno
import socket

from qembed.errors import PortInUse
from qembed.host.procfs import port_holder


def connect_host(host: str) -> str:
    """Where to connect to a server bound on ``host`` (wildcards map to loopback, as SGLang's
    own internal requests do)."""
    if host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if host in ("::", "[::]"):
        return "::1"
    return host


def connect_url(host: str, port: int) -> str:
    """The URL that reaches a server listening on ``host``:``port`` from this machine (via
    :func:`connect_host`). :func:`qembed.net.base_url` is another thing: it normalises a URL given."""
    h = connect_host(host)
    if ":" in h and not h.startswith("["):
        h = f"[{h}]"
    return f"http://{h}:{port}"


def port_is_free(host: str, port: int) -> bool:
    """True when ``host:port`` can be bound now (with ``SO_REUSEADDR``, as uvicorn binds)."""
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror:
        return True  # an unresolvable host fails later with SGLang's own message
    for family, socktype, proto, _, addr in infos:
        with socket.socket(family, socktype, proto) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(addr)
            except OSError as exc:
                if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                    return False
                continue  # e.g. EADDRNOTAVAIL for an address this host lacks: not "busy"
    return True


def find_free_port(host: str, start: int, *, tries: int = 100) -> int | None:
    """The first free port after ``start`` (None if ``tries`` ports are all busy)."""
    for port in range(start + 1, min(start + 1 + tries, 65536)):
        if port_is_free(host, port):
            return port
    return None


def check_port(host: str, port: int) -> None:
    """Raise :class:`PortInUse` (naming the holder and a free port) when the port is busy."""
    if port_is_free(host, port):
        return
    holder = port_holder(port)
    free = find_free_port(host, port)
    who = f" by {holder}" if holder else ""
    hint = f"pass `--port {free}` (free now)" if free else "pass a free `--port`"
    hint += ", or stop what holds it (`qembed ps` lists qembed's servers)"
    raise PortInUse(
        f"port {port} on {host} is already in use{who}",
        hint=hint,
        details=["SGLang would only notice after loading the model, then kill itself minutes later"],
    )


__all__ = ["check_port", "connect_host", "connect_url", "find_free_port", "port_is_free"]
