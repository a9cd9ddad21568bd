"""Network facts used in several places, each written once.

:func:`is_loopback` is the one loopback test: the whole of ``127.0.0.0/8``, ``::1`` (with or
without brackets), IPv4-mapped loopback (``::ffff:127.0.0.1``) and the name ``localhost``
are loopback; wildcards (``0.0.0.0``, ``::``) and every other name are not.
"""

from __future__ import annotations


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or a name, as in a URL or ``--host``) is this machine's
    loopback interface.

    >>> [is_loopback(h) for h in ("127.0.0.1", "127.0.0.2", "[::1]", "localhost", "0.0.0.0", "10.0.0.1")]
    [True, True, True, True, False, False]
    """
    import ipaddress

    h = host.strip().strip("[]").lower().rstrip(".")
    if h == "localhost" or h.endswith(".localhost"):
        return True
    try:
        addr = ipaddress.ip_address(h.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped.is_loopback
    return addr.is_loopback


def is_this_machine(host: str) -> bool:
    """Loopback, or a wildcard address (``0.0.0.0``, ``::``) that a local client reaches
    through loopback."""
    return is_loopback(host) or host.strip().strip("[]") in ("", "0.0.0.0", "::")


def base_url(url: str, *, what: str = "server URL", example: str = "--url http://127.0.0.1:30000") -> str:
    """A server's base URL as every part of qembed uses it: ``http://`` added when no scheme is
    given, no trailing ``/`` or ``/v1``. The one URL normaliser (client, ``top``, ``gateway``).

    Raises:
        ConfigError: a scheme other than http(s), or no host (exit 2: bad input).

    >>> base_url("127.0.0.1:30000/v1/")
    'http://127.0.0.1:30000'
    """
    from urllib.parse import urlsplit

    from .errors import ConfigError

    u = url.strip().rstrip("/")
    if "://" not in u:
        u = "http://" + u
    if u.endswith("/v1"):
        u = u[: -len("/v1")]
    parts = urlsplit(u)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"{what} `{url}` is not an http(s) URL",
                          hint=f"pass the server's base URL, e.g. `{example}`")
    return u


def auth_headers(api_key: str | None) -> dict[str, str]:
    """``Authorization: Bearer <key>`` when there is a key (SGLang's and smg's scheme), else none."""
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


__all__ = ["auth_headers", "base_url", "is_loopback", "is_this_machine"]
