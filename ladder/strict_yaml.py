"""YAML for recipes, strictly: ``yaml.safe_load`` silently keeps the last of two equal keys
(``lr`` given twice: one is ignored without a word) and reads an empty or binary file as
nothing; here each is an error of one line naming the file, line and key.

Bounded, too: aliases let a few lines of YAML stand for billions of values. PyYAML shares an
aliased object instead of copying it, so the bomb only goes off in whoever copies or walks the
data next (the recipe's overrides, its hash). The node graph is therefore measured as expanded,
with a file-size cap, before anything is constructed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml


class StrictYAMLError(ValueError):
    """The file is not a YAML document this project will read; the message says where."""


# A recipe is a few kilobytes and a few hundred values; these caps are far above any real one and
# far below what a copy of the expanded data can afford.
MAX_BYTES = 1 << 20
MAX_NODES = 100_000  # scalars, lists and mappings, counting each alias as a full copy


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


def _expanded_size(root: yaml.Node, where: str) -> int:
    """Nodes in the document with every alias expanded, counted without expanding: an aliased
    node is one object in the graph, so its size is computed once and reused."""
    sizes: dict[int, int] = {}
    open_: set[int] = set()

    def size(node: yaml.Node) -> int:
        if id(node) in sizes:
            return sizes[id(node)]
        if id(node) in open_:
            raise StrictYAMLError(f"{where}: an alias refers to a node that contains it "
                                  f"(line {node.start_mark.line + 1}); a recipe is a tree")
        open_.add(id(node))
        if isinstance(node, yaml.MappingNode):
            total = 1 + sum(size(k) + size(v) for k, v in node.value)
        elif isinstance(node, yaml.SequenceNode):
            total = 1 + sum(size(v) for v in node.value)
        else:
            total = 1
        open_.discard(id(node))
        sizes[id(node)] = total = min(total, MAX_NODES + 1)  # no big integers from a deep bomb
        return total

    return size(root)


def load_yaml_text(text: str, where: str) -> Any:
    """The document in ``text`` (``where`` names it in errors), refused before construction if
    aliases expand it beyond :data:`MAX_NODES` values."""
    loader = _UniqueKeyLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        if _expanded_size(node, where) > MAX_NODES:
            raise StrictYAMLError(f"{where}: its aliases (*name) expand to more than {MAX_NODES:,} "
                                  f"values; a recipe is far smaller (an alias bomb?)")
        return loader.construct_document(node)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        what = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise StrictYAMLError(f"{where}: not valid YAML{at}: {what}") from None
    except RecursionError:  # nesting deeper than Python's stack, e.g. 10,000 '['
        raise StrictYAMLError(f"{where}: nested too deeply to be a recipe") from None
    finally:
        loader.dispose()


def load_yaml_file(path: str | Path) -> Any:
    """The document in ``path``; empty, binary, non-UTF-8, oversized or invalid files raise
    :class:`StrictYAMLError` with one line saying what and where."""
    p = Path(path)
    with open(p, "rb") as f:
        raw = f.read(MAX_BYTES + 1)
    if len(raw) > MAX_BYTES:
        raise StrictYAMLError(f"{p}: larger than {MAX_BYTES >> 20} MiB; a recipe is a few kilobytes")
    if b"\0" in raw:
        raise StrictYAMLError(f"{p}: a binary file, not a YAML recipe")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise StrictYAMLError(f"{p}: not UTF-8 text (byte {e.start}); a recipe is a YAML text file") from None
    data = load_yaml_text(text, str(p))
    if data is None:
        raise StrictYAMLError(f"{p}: the file is empty (no YAML document); start from a recipe in "
                              f"recipes/, e.g. recipes/tiny-cpu.yaml")
    return data
