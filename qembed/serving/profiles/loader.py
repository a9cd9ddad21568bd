"""The bounded YAML loader every profile file and ``--set`` value goes through.

A YAML text expands to at most :data:`MAX_NODES` values after aliases, nests at most
:data:`MAX_DEPTH` levels and uses at most :data:`MAX_ALIASES` aliases; a profile file is at most
:data:`MAX_BYTES` of UTF-8. Each bound is checked before anything is built, and every refusal is
a :class:`~qembed.errors.ProfileError` that names the text or file.

Example:
    >>> from qembed.serving.profiles.loader import load_yaml_text
    >>> load_yaml_text("port: 31000", "the example")
    {'port': 31000}
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from qembed.errors import ProfileError

# Bounds on what a profile (or a `--set` value) may be: a YAML text expands to at most
# MAX_NODES values after aliases, nests at most MAX_DEPTH levels and a file is at most MAX_BYTES.
MAX_BYTES = 1024 * 1024
MAX_DEPTH = 64
MAX_NODES = 100_000
MAX_ALIASES = 1_000


class _Unbounded(Exception):
    """A YAML text over one of the bounds (MAX_DEPTH, MAX_NODES, MAX_ALIASES)."""


def _expanded_size(root: Any) -> int:
    """How many values ``root`` (a composed YAML node) becomes once every alias is expanded.

    Memoised per node, so an alias bomb is measured in linear time instead of being built;
    also refuses an expansion deeper than MAX_DEPTH and an alias that contains itself.
    """
    import yaml

    sizes: dict[int, tuple[int, int]] = {}
    active: set[int] = set()

    def walk(node: Any) -> tuple[int, int]:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in active:
            raise _Unbounded("an alias refers to the value that contains it")
        active.add(key)
        count, depth = 1, 1
        if isinstance(node, yaml.SequenceNode):
            children: list[Any] = list(node.value)
        elif isinstance(node, yaml.MappingNode):
            children = [n for pair in node.value for n in pair]
        else:
            children = []
        for child in children:
            c, d = walk(child)
            count += c
            depth = max(depth, d + 1)
            if count > MAX_NODES:
                raise _Unbounded(f"it expands to more than {MAX_NODES:,} values (a YAML alias bomb?)")
            if depth > MAX_DEPTH:
                raise _Unbounded(f"it nests more than {MAX_DEPTH} levels deep")
        active.discard(key)
        sizes[key] = (count, depth)
        return count, depth

    return walk(root)[0]


def _loader_class() -> type[Any]:
    import yaml

    class BoundedLoader(yaml.SafeLoader):
        """SafeLoader that stops at MAX_DEPTH levels and MAX_ALIASES aliases while composing."""

        def __init__(self, stream: str) -> None:
            super().__init__(stream)
            self._qembed_depth = 0
            self._qembed_aliases = 0

        def compose_node(self, parent: Any, index: Any) -> Any:
            if self.check_event(yaml.AliasEvent):
                self._qembed_aliases += 1
                if self._qembed_aliases > MAX_ALIASES:
                    raise _Unbounded(f"it uses more than {MAX_ALIASES:,} aliases")
                return super().compose_node(parent, index)
            self._qembed_depth += 1
            try:
                if self._qembed_depth > MAX_DEPTH:
                    raise _Unbounded(f"it nests more than {MAX_DEPTH} levels deep")
                return super().compose_node(parent, index)
            finally:
                self._qembed_depth -= 1

    return BoundedLoader


def load_yaml_text(text: str, where: str) -> Any:
    """Parse a YAML text with the bounds every profile and ``--set`` value obeys.

    Refuses, with a :class:`ProfileError` naming ``where``: invalid YAML, more than
    :data:`MAX_DEPTH` levels of nesting, more than :data:`MAX_ALIASES` aliases, and texts that
    expand to more than :data:`MAX_NODES` values (alias bombs), before anything is built.
    """
    import yaml

    loader: Any = None
    try:
        loader = _loader_class()(text)  # the reader already refuses control characters
        node = loader.get_single_node()
        if node is None:
            return None
        _expanded_size(node)
        return loader.construct_document(node)
    except _Unbounded as exc:
        raise ProfileError(f"{where} is refused: {exc}",
                           hint=f"profiles nest at most {MAX_DEPTH} levels and expand to at most "
                           f"{MAX_NODES:,} values; remove the repeated aliases") from None
    except yaml.YAMLError as exc:
        marked = exc if isinstance(exc, yaml.MarkedYAMLError) else None
        mark = marked.problem_mark if marked else None
        at = f" at line {mark.line + 1}" if mark is not None else ""
        raise ProfileError(f"{where} is not valid YAML{at}",
                           details=[str((marked.problem if marked else None) or exc)]) from None
    except RecursionError:
        raise ProfileError(f"{where} is refused: it nests too deeply",
                           hint=f"profiles nest at most {MAX_DEPTH} levels") from None
    finally:
        if loader is not None:
            loader.dispose()


def _read_text(path: Path) -> str:
    """A profile file's text: at most MAX_BYTES, UTF-8. Errors name the file."""
    try:
        with path.open("rb") as fh:
            raw = fh.read(MAX_BYTES + 1)
    except FileNotFoundError as exc:
        raise ProfileError(f"profile file `{path}` does not exist",
                           hint="run `qembed profiles list` for the shipped profiles") from exc
    except IsADirectoryError as exc:
        raise ProfileError(f"profile `{path}` is a directory, not a YAML file") from exc
    except OSError as exc:
        raise ProfileError(f"cannot read profile file `{path}`: {exc.strerror or exc}") from exc
    if len(raw) > MAX_BYTES:
        raise ProfileError(f"profile file `{path}` is larger than {MAX_BYTES // 1024} KiB",
                           hint="a profile is a few lines of YAML; check that this is the right file")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ProfileError(f"profile file `{path}` is not UTF-8 text (byte {exc.start + 1} is 0x{raw[exc.start]:02x})",
                           hint="save it as UTF-8") from None


def load_yaml_file(path: Path) -> Any:
    """A profile file parsed by :func:`load_yaml_text`: at most :data:`MAX_BYTES`, UTF-8, bounded.

    Errors (missing, a directory, unreadable, too large, not UTF-8, not YAML) name the file.
    """
    return load_yaml_text(_read_text(path), f"`{path}`")


__all__ = ["MAX_ALIASES", "MAX_BYTES", "MAX_DEPTH", "MAX_NODES", "load_yaml_file", "load_yaml_text"]
