"""A real Prometheus server for the real-engine lane: started from Debian's `prometheus` package
(the one that ships `promtool`), fed static targets with the labels Kubernetes service discovery
would give them, and queried through its HTTP API (https://prometheus.io/docs/prometheus/2.42/querying/api/).

Every wait is a polled condition with a deadline; the server is stopped (terminate, wait, kill)
by the context manager that started it.
"""

from __future__ import annotations

import contextlib
import math
import shutil
import subprocess
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.fake_site.harness import free_port, terminate, wait_until

#: 1 s scrapes: a counter's last value reaches Prometheus within ~1 s of the request that moved it
SCRAPE_INTERVAL_S = 1
#: Prometheus's scrape manager applies target updates at most every 5 s, so the first scrape of a
#: static target comes ~5 s after the start; this leaves room for a loaded 2-core box
READY_TIMEOUT_S = 60.0


def prometheus_binary() -> str:
    path = shutil.which("prometheus") or ("/usr/bin/prometheus" if Path("/usr/bin/prometheus").exists() else None)
    if path is None:  # never a skip: scripts/test.sh installs the package that ships promtool and the server
        pytest.fail("the prometheus server is not installed (Debian package `prometheus`); scripts/test.sh installs it")
    return path


@dataclass(frozen=True)
class Target:
    """One scrape target and the labels a `kubernetes_sd_configs` relabeling would attach."""

    what: str  # for messages: "prod worker"
    address: str  # host:port of its /metrics
    namespace: str
    pod: str


class PromError(AssertionError):
    """Prometheus refused a query (bad PromQL, or an evaluation error)."""


@dataclass
class Prometheus:
    url: str
    started_at: float  # Unix time the process was started
    proc: subprocess.Popen[bytes]
    log: Path

    def _api(self, path: str, params: Mapping[str, Any]) -> Any:
        r = httpx.get(f"{self.url}/api/v1/{path}", params=params, timeout=30, trust_env=False)
        try:
            body = r.json()
        except ValueError:
            raise PromError(f"Prometheus answered {r.status_code} to {path} {dict(params)}: {r.text[:300]}") from None
        if body.get("status") != "success":
            raise PromError(f"Prometheus refused {dict(params)}: {body.get('errorType')}: {body.get('error')}")
        if body.get("warnings"):
            raise PromError(f"Prometheus warned on {dict(params)}: {body['warnings']}")
        return body["data"]

    def query(self, expr: str, at: float | None = None) -> list[tuple[dict[str, str], float]]:
        """An instant query: each sample's labels and value (a scalar as one sample, no labels).

        Raises PromError (an AssertionError) naming the expression when Prometheus refuses it."""
        params: dict[str, Any] = {"query": expr}
        if at is not None:
            params["time"] = f"{at:.3f}"
        data = self._api("query", params)
        kind = data["resultType"]
        if kind == "vector":
            return [(s["metric"], float(s["value"][1])) for s in data["result"]]
        if kind == "scalar":
            return [({}, float(data["result"][1]))]
        raise PromError(f"{expr!r} is a {kind}, not an instant vector or a scalar")

    def samples(self, selector: str, window_s: int, at: float) -> list[tuple[dict[str, str], list[tuple[float, float]]]]:
        """The raw samples of ``selector`` in ``(at - window_s, at]``: [(labels, [(t, value), ...])]."""
        data = self._api("query", {"query": f"{selector}[{window_s}s]", "time": f"{at:.3f}"})
        assert data["resultType"] == "matrix", data
        return [(s["metric"], [(float(t), float(v)) for t, v in s["values"]]) for s in data["result"]]

    def series(self, match: str) -> list[dict[str, str]]:
        """``/api/v1/series``: the label sets of every series ``match`` selects since the start."""
        return list(self._api("series", {"match[]": match, "start": f"{self.started_at - 60:.3f}"}))

    def targets(self) -> list[dict[str, Any]]:
        return list(self._api("targets", {"state": "active"})["activeTargets"])


def config(targets: list[Target], job: str) -> dict[str, Any]:
    """A scrape config with one static target per pod, labelled as `kubernetes_sd` would do."""
    return {
        "global": {"scrape_interval": f"{SCRAPE_INTERVAL_S}s", "scrape_timeout": f"{SCRAPE_INTERVAL_S}s",
                   "evaluation_interval": f"{SCRAPE_INTERVAL_S}s"},
        "scrape_configs": [{
            "job_name": job,
            "static_configs": [{"targets": [t.address], "labels": {"namespace": t.namespace, "pod": t.pod}}
                               for t in targets],
        }],
    }


def _log_tail(log: Path) -> str:
    return log.read_text(errors="replace")[-3000:] if log.exists() else "(no log)"


@contextlib.contextmanager
def running(targets: list[Target], tmp: Path, *, job: str) -> Iterator[Prometheus]:
    """Start Prometheus on a free port with its TSDB under ``tmp``; yield once every target was
    scraped up at least twice; stop it after (SIGTERM, then SIGKILL after 20 s)."""
    cfg = tmp / "prometheus.yml"
    cfg.write_text(yaml.safe_dump(config(targets, job), sort_keys=False))
    log = tmp / "prometheus.log"
    port = free_port()
    started_at = time.time()
    with log.open("wb") as out:
        proc = subprocess.Popen([prometheus_binary(), f"--config.file={cfg}", f"--storage.tsdb.path={tmp / 'tsdb'}",
                                 f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
                                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
    prom = Prometheus(url=f"http://127.0.0.1:{port}", started_at=started_at, proc=proc, log=log)
    try:
        def ready() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"prometheus exited ({proc.returncode}):\n{_log_tail(log)}")
            try:
                return httpx.get(f"{prom.url}/-/ready", timeout=2, trust_env=False).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(ready, timeout=READY_TIMEOUT_S, interval=0.1, what="prometheus /-/ready")
        want = {t.address for t in targets}

        def all_up() -> bool:
            health = {t["labels"]["instance"]: (t["health"], t["lastError"]) for t in prom.targets()}
            if set(health) != want:
                return False
            return all(h == "up" for h, _ in health.values())

        try:
            wait_until(all_up, timeout=READY_TIMEOUT_S, interval=0.2, what="every target `up` in /api/v1/targets")
        except AssertionError as exc:
            raise AssertionError(f"{exc}: {prom.targets()}\n{_log_tail(log)}") from None
        # two scrapes of each: a counter's pre-traffic value is stored before any traffic starts
        wait_until(lambda: len([v for _, v in prom.query(f'count_over_time(up{{job="{job}"}}[1m]) >= 2')]) == len(want),
                   timeout=READY_TIMEOUT_S, interval=0.2, what="two scrapes of every target")
        yield prom
    finally:
        terminate(proc)


def rate_bounds(increase: float, points: list[tuple[float, float]], window_s: float) -> tuple[float, float]:
    """The range Prometheus 2.42's ``rate(x[window])`` can take for a counter that rose by
    ``increase`` over the raw ``points`` of that window.

    ``rate`` is the increase between the first and last sample, extrapolated towards each end of
    the window by at most 1.1 average sample intervals (never below zero for a counter), divided by
    the window (promql/functions.go ``extrapolatedRate``). So ``rate * window`` lies in
    ``[increase, increase * (S + 2.2 * avg) / S]``, S being the time from the first sample to the
    last and avg the mean interval between samples."""
    assert len(points) >= 2, points
    span = points[-1][0] - points[0][0]
    avg = span / (len(points) - 1)
    assert span > 0 and math.isfinite(avg), points
    return increase / window_s, increase * (span + 2.2 * avg) / span / window_s


__all__ = ["PromError", "Prometheus", "Target", "config", "prometheus_binary", "rate_bounds", "running"]
