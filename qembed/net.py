"""Network facts used in several places, each written once.

:func:`is_loopback` is the one loopback test: the whole of ``127.0.0.0/8``, ``::1`` (with or
without brackets), IPv4-mapped loopback (``::ffff:127.0.0.1``) and the name ``localhost``
are loopback; wildcards (``0.0.0.0``, ``::``) and every other name are not.
"""

from __future__ import annotations

#: The proxy variables HTTP clients read (curl, requests, httpx, reqwest in smg). qembed's own
#: clients ignore them; `qembed gateway` takes them out of smg's environment, since worker traffic
#: (the key and every document) must never go through a proxy; SGLang keeps them, for Hub
#: downloads, with loopback added to ``NO_PROXY``.
PROXY_VARS: tuple[str, ...] = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")


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

    from qembed.errors import ConfigError

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


def clean_api_key(value: str | None, *, source: str = "the API key") -> str | None:
    """An API key as both sides use it: surrounding whitespace removed (the trailing ``\\n`` or
    ``\\r\\n`` of a CRLF ``.env`` file or ``kubectl create secret --from-file``), ``None`` when
    nothing is left. The one rule: ``qembed serve`` (:func:`qembed.serving.profiles.resolve.resolve_api_key`), the
    reference engine and every client apply it, so a key the server accepts is the key sent.

    ``source`` names where the key came from (a variable, an argument), for the error.

    Raises:
        ConfigError: a control character or non-ASCII character is left inside the key (an
            HTTP header cannot carry it). The message names ``source`` and the position, never
            the key.

    >>> clean_api_key("s3cret\\r\\n")
    's3cret'
    """
    if value is None:
        return None
    key = value.strip()
    if not key:
        return None
    for i, ch in enumerate(key):
        if not " " <= ch <= "~":
            from qembed.errors import ConfigError

            what = "a non-ASCII character" if ord(ch) > 0x9F else f"a control character (U+{ord(ch):04X})"
            raise ConfigError(f"{source} holds {what} at position {i + 1} of {len(key)}: an HTTP header "
                              "cannot carry it (the key is not shown)",
                              hint=f"set {source} to the key alone, one line of printable ASCII "
                              "(a trailing newline is fine)")
    return key


def auth_headers(api_key: str | None, *, source: str = "the API key") -> dict[str, str]:
    """``Authorization: Bearer <key>`` when there is a key (SGLang's and smg's scheme), else none.

    The key goes through :func:`clean_api_key` first: this is the one place the header is made.
    """
    key = clean_api_key(api_key, source=source)
    return {"Authorization": f"Bearer {key}"} if key else {}


__all__ = ["PROXY_VARS", "auth_headers", "base_url", "clean_api_key", "is_loopback", "is_this_machine"]
