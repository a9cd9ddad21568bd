"""``qembed doctor``'s running-server sections: which server to check (``--url``, the recorded
one, else the client's default URL), its ``/health``, models, one checked embedding and
``dimensions`` (:func:`qembed.probe.probe_server`), and the diagnosis of its newest log.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from qembed import env as qenv
from qembed.errors import ConfigError, ProfileError
from qembed.fleet.doctor_rows import FAIL, PASS, SKIP, WARN, Check, Ctx, Status

if TYPE_CHECKING:
    import httpx

    from qembed.host.state import Record
    from qembed.serving.profiles.model import Profile


def default_url(c: Ctx) -> str | None:
    """The URL doctor checks when none is given and no server is recorded: the client's default
    (``QEMBED_URL``, else ``http://127.0.0.1:30000``), when something listens there; else a SKIP."""
    if c.url or recorded_url()[0]:
        return c.url
    import socket
    from urllib.parse import urlparse

    url = qenv.URL.get() or qenv.DEFAULT_URL
    parsed = urlparse(url)
    host, port = parsed.hostname or "127.0.0.1", parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return url
    except OSError:
        c.add("Server", "server", SKIP, f"nothing answers at {url} (the client's default URL), and no "
              "running `qembed serve` is recorded")
        return None


def healthy_checked_server(c: Ctx, checked: str | None) -> None:
    """A port held by the healthy embedding server doctor just checked is not a FAIL."""
    if c.port_row is None or not checked:
        return
    from urllib.parse import urlparse

    port = c.settings.port
    try:
        checked_port = urlparse(checked).port
    except ValueError:
        return
    server = {r.name: r.status for r in c.rows if r.section == "Server"}
    if checked_port == port and server.get("/health") == PASS and server.get("embedding") in (PASS, WARN):
        row = c.rows[c.port_row]
        c.rows[c.port_row] = Check(row.section, row.name, PASS,
                                   f"{row.found.split(' is in use')[0]} is held by the healthy embedding "
                                   f"server being checked ({checked.rstrip('/')})")


def own_record(c: Ctx) -> Record | None:
    """The running server this run checks, by its record: the one at ``--url``; without
    ``--url``, the newest live server started from this profile (its name, on its port), as
    ``qembed serve -p PROFILE`` records it. ``None`` when there is none."""
    try:
        from qembed.host import state

        records = [r for r in state.list_records(clean=True) if r.role != "replica"]
    except Exception:  # state is best effort here: a broken record must not break doctor
        return None
    if c.url:
        want = c.url.rstrip("/")
        return next((r for r in reversed(records) if r.url.rstrip("/") == want), None)
    if c.profile is None:
        return None
    mine = [r for r in records if r.profile == c.profile.name and r.port == c.profile.port]
    return mine[-1] if mine else None


def recorded_url() -> tuple[str | None, str | None]:
    try:
        from qembed.host import state

        rec = state.default_server()
    except Exception:
        return None, None
    return (rec.url, rec.name) if rec is not None else (None, None)


def _api_key(profile: Profile | None) -> str | None:
    if profile is not None:
        from qembed.serving.profiles.resolve import resolve_api_key

        try:
            key = resolve_api_key(profile)
        except (ProfileError, ConfigError):  # an unreadable key file: the variable may still hold one
            key = None
        if key:
            return key
    from qembed.net import clean_api_key

    try:
        return clean_api_key(qenv.API_KEY.get(), source=f"`{qenv.API_KEY.name}`")
    except ConfigError:  # doctor reports; the key row is not the place to stop
        return None


def server_checks(c: Ctx, transport: httpx.BaseTransport | None) -> None:
    from qembed.probe import API_KEY_HINT, probe_server, serves_generator

    s = "Server"
    own = own_record(c)
    url, name = c.url, own.name if own is not None else None
    if not url:
        url, name = (own.url, own.name) if own is not None else recorded_url()
    if not url:
        c.add(s, "server", SKIP, "no --url given and no running `qembed serve` recorded")
        return
    # a healthy /health runs a 1-token forward after sleeping 1 s: allow far more than 1 s
    f = probe_server(url, _api_key(c.profile), timeout=30.0, dimensions=True, transport=transport)
    label = f"{f.url}" + (f" (`{name}`)" if name else "")
    if f.health != 200:
        fix = ("start it with `qembed serve`, or pass the right `--url`" if f.health is None
               else "503 = still starting or unhealthy; see `qembed logs`")
        c.add(s, "/health", FAIL, f"{label}: {f.health_error}", fix)
        return
    c.add(s, "/health", PASS, f"{label}: 200 in {f.health_seconds or 0:.1f} s")
    if f.models_error is None and f.model is not None:
        c.add(s, "/v1/models", PASS, f"{f.model}, max_model_len {f.max_model_len}")
    else:
        c.add(s, "/v1/models", WARN, f"unexpected answer: {f.models_error or 'no model listed'}",
              "check the server log (`qembed logs`)")
    err = f.embedding_error
    if err is not None:
        if serves_generator(err):
            c.add(s, "embedding", FAIL, err.message[:300],
                  "the server runs the model as a text generator: start it with `qembed serve` (it passes "
                  "`--is-embedding`)")
        elif f.embedding_status == 401:
            c.add(s, "embedding", FAIL, err.message[:300], API_KEY_HINT)
        elif f.embedding_status is not None and f.embedding_status != 200:
            c.add(s, "embedding", FAIL, err.message[:300], "see `qembed logs`")
        else:
            c.add(s, "embedding", FAIL, err.message[:300], err.hint or "see `qembed logs`")
        return
    if f.size_mismatch:
        c.add(s, "embedding", FAIL, f"{f.size_mismatch} (norm {f.norm:.4f})",
              "another model or a broken server answers at this URL; see `qembed ps` and `qembed logs`")
        return
    c.add(s, "embedding", PASS, f"{f.dimensions} dimensions, norm {f.norm:.4f}")
    dims = f.matryoshka_dimensions
    if f.supports_dimensions:
        c.add(s, "dimensions", PASS, f"`dimensions: {dims}` works (Matryoshka on)")
    elif f.supports_dimensions is None:
        c.add(s, "dimensions", WARN, f.dimensions_error or "not checked")
    else:
        # probe_server: "HTTP <status>: ..." for a refusal, else what was wrong with the reply
        refused = (f.dimensions_error or "").startswith("HTTP ")
        what = "refused" if refused else "answered with a wrong truncation"
        c.add(s, "dimensions", WARN,
              f"`dimensions` {what} ({f.dimensions_error}); qembed's client already truncates and "
              "renormalises itself for this server (the same vectors as a right server)",
              "nothing to change for qembed's client; for other clients turn Matryoshka on and restart: "
              "`matryoshka: true` in the profile (SGLang `is_matryoshka`; vLLM `--hf-overrides "
              "'{\"is_matryoshka\": true}'`)")


def _log_name(c: Ctx) -> str | None:
    """The server name whose newest log this run reads: the server being checked, else the name
    ``qembed serve -p PROFILE`` gives (the profile's); ``None`` (any server's) without a profile."""
    own = own_record(c)
    if own is not None:
        return own.name
    return (c.profile.name or "default") if c.profile is not None else None


def _latest_log(name: str | None) -> Path | None:
    from qembed.host import state

    try:
        return state.latest_log(name)  # the one rule for which file is a qembed serve log
    except OSError:
        return None


def diagnosis_checks(c: Ctx) -> None:
    from qembed.serving.diagnose import diagnose_file

    s = "Last failure"
    explicit = c.log is not None
    name = None if explicit else _log_name(c)
    path = Path(c.log) if c.log else _latest_log(name)
    if path is None:
        whose = f" of server `{name}`" if name else ""
        c.add(s, "log", SKIP, f"no `qembed serve` log{whose} yet (pass `--log FILE` to read another)")
        return
    try:
        found = diagnose_file(path, profile=c.profile)
    except OSError as exc:
        c.add(s, "log", FAIL, f"cannot read {path}: {exc}", "pass a readable `--log FILE`")
        return
    if not found:
        c.add(s, "log", PASS, f"{path.name}: no known failure signature")
        return
    for d in found:
        # a log found on its own may be from a launch that was fixed since: warn, don't fail
        status: Status = FAIL if (explicit and d.level == "error") else WARN
        where = f"line {d.line_no}: " if d.line_no else ""
        evidence = d.evidence if len(d.evidence) <= 200 else d.evidence[:199] + "…"
        c.add(s, d.title, status, f"{path.name}: {d.cause}. {where}{evidence}", d.fix)


__all__ = ["default_url", "diagnosis_checks", "healthy_checked_server", "own_record", "recorded_url", "server_checks"]
