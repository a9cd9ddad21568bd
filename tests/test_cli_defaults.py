"""Every number a CLI option defaults to is the library's own default (issue 22 item 9).

The CLI keeps its defaults as literals, so that `qembed --help` imports nothing heavy; this test
walks the real Typer app and compares each numeric default with the library value it stands for.
A new numeric option with no entry here fails, so it cannot drift unseen."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from typing import Any

import pytest


def _default(fn: Callable[..., Any], name: str) -> Any:
    return inspect.signature(fn).parameters[name].default


def _library() -> dict[tuple[str, str], Any]:
    from qembed.client import bulk
    from qembed.client import flow as client
    from qembed.fleet import top
    from qembed.fleet.bench.compare import compare
    from qembed.fleet.deploy import alerts, k8s
    from qembed.host import logfiles
    from qembed.serving import gateway
    from qembed.serving.profiles.model import Profile

    s = alerts.AlertSettings()
    return {
        ("bench", "seed"): _default(compare, "seed"),
        ("bench", "compare_texts"): _default(compare, "texts"),
        ("embed", "concurrency"): client.DEFAULT_CONCURRENCY,
        ("embed", "batch_size"): client.DEFAULT_BATCH_SIZE,
        ("embed", "chunk_rows"): bulk.DEFAULT_CHUNK_ROWS,
        ("gateway", "port"): Profile.model_fields["port"].default,  # where `qembed serve` listens
        ("gateway", "ready_timeout"): gateway.READY_TIMEOUT_S,
        ("logs", "lines"): _default(logfiles.read_log_tail, "lines"),
        ("top", "interval"): top.DEFAULT_INTERVAL_S,
        ("deploy k8s", "target_queue"): _default(k8s.manifests, "target_queue"),
        ("deploy k8s", "scale_down_window"): _default(k8s.manifests, "scale_down_window_s"),
        ("deploy alerts", "p99_slo"): s.p99_slo_s,
        ("deploy alerts", "error_rate"): s.error_rate,
        ("deploy alerts", "queue_minutes"): s.queue_minutes,
        ("deploy alerts", "gpu_memory"): s.gpu_memory_fraction,
    }


def _numeric_defaults() -> Iterator[tuple[tuple[str, str], Any]]:
    import typer.main

    import qembed.cli as cli

    cli._register()
    root = typer.main.get_command(cli._root_app)

    def walk(cmd: Any, path: tuple[str, ...]) -> Iterator[tuple[tuple[str, str], Any]]:
        if hasattr(cmd, "commands"):  # a group (Typer vendors Click: no isinstance check)
            for name, sub in cmd.commands.items():
                yield from walk(sub, (*path, name))
            return
        for p in cmd.params:
            if isinstance(p.default, int | float) and not isinstance(p.default, bool):
                yield (" ".join(path), str(p.name)), p.default

    yield from walk(root, ())


def test_every_numeric_cli_default_is_the_librarys() -> None:
    lib = _library()
    found = dict(_numeric_defaults())
    assert found, "the walk found no options"
    assert set(found) == set(lib), f"unmapped: {set(found) - set(lib)}; gone: {set(lib) - set(found)}"
    wrong = {k: (v, lib[k]) for k, v in found.items() if v != lib[k]}
    assert wrong == {}, "CLI default != library default: " + repr(wrong)


def test_the_comparison_can_fail(monkeypatch: pytest.MonkeyPatch) -> None:
    from qembed.client import flow as client

    monkeypatch.setattr(client, "DEFAULT_CONCURRENCY", client.DEFAULT_CONCURRENCY + 1)
    with pytest.raises(AssertionError, match="concurrency"):
        test_every_numeric_cli_default_is_the_librarys()
