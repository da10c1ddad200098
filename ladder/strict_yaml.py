"""YAML for recipes, strictly: ``yaml.safe_load`` silently keeps the last of two equal keys
(``lr`` given twice: one is ignored without a word) and reads an empty or binary file as
nothing; here each is an error of one line naming the file, line and key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml


class StrictYAMLError(ValueError):
    """The file is not a YAML document this project will read; the message says where."""


class _UniqueKeyLoader(yaml.SafeLoader):
    """safe_load that refuses a key given twice in one mapping."""


def _mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False):
    loader.flatten_mapping(node)  # merge keys (<<) first, as SafeLoader does
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        try:
            first = seen.get(key)
        except TypeError:  # unhashable key: construct_mapping reports it
            continue
        if first is not None:
            raise yaml.constructor.ConstructorError(
                None, None, f"key {key!r} is given twice (first on line {first + 1})", key_node.start_mark)
        seen[key] = key_node.start_mark.line
    return loader.construct_mapping(node, deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)


def load_yaml_file(path: str | Path) -> Any:
    """The document in ``path``; empty, binary, non-UTF-8 or invalid files raise
    :class:`StrictYAMLError` with one line saying what and where."""
    p = Path(path)
    raw = p.read_bytes()
    if b"\0" in raw:
        raise StrictYAMLError(f"{p}: a binary file, not a YAML recipe")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise StrictYAMLError(f"{p}: not UTF-8 text (byte {e.start}); a recipe is a YAML text file") from None
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        what = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise StrictYAMLError(f"{p}: not valid YAML{where}: {what}") from None
    if data is None:
        raise StrictYAMLError(f"{p}: the file is empty (no YAML document); start from a recipe in "
                              f"recipes/, e.g. recipes/tiny-cpu.yaml")
    return data
