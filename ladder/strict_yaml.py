"""YAML for recipes, strictly: ``yaml.safe_load`` silently keeps the last of two equal keys
(``lr`` given twice: one is ignored without a word) and reads an empty or binary file as
nothing; here each is an error of one line naming the file, line and key.

Bounded, too: aliases let a few lines of YAML stand for billions of values. PyYAML shares an
aliased object instead of copying it, so the bomb only goes off in whoever copies or walks the
data next (the recipe's overrides, its hash). The node graph is therefore measured as expanded,
before anything is constructed, and nesting is capped. The file size is capped too, because even
libyaml (used where PyYAML has it) builds nodes at a bounded rate; the pure-Python reader is many
times slower, and its scanner is quadratic in the depth of '[' and '{' (capped as it reads them).
docs/reliability.md has the measured times."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml


class StrictYAMLError(ValueError):
    """The file is not a YAML document this project will read; the message says where."""


# A recipe is a few kilobytes and a few hundred values; these caps are far above any real one and
# far below what a copy of the expanded data can afford.
MAX_BYTES = 64 << 10
MAX_NODES = 100_000  # scalars, lists and mappings, counting each alias as a full copy
MAX_DEPTH = 64  # levels of lists and mappings, aliases expanded (a recipe has about 4)


class _PythonLoader(yaml.SafeLoader):
    """PyYAML's own reader, its nesting bounded as it reads: the scanner's work grows with the
    square of the depth of '[' and '{', and the composer recurses once per level."""

    depth = 0

    def fetch_flow_collection_start(self, TokenClass):
        if self.flow_level >= MAX_DEPTH:
            raise yaml.scanner.ScannerError(None, None, f"nested deeper than {MAX_DEPTH} levels",
                                            self.get_mark())
        super().fetch_flow_collection_start(TokenClass)

    def compose_node(self, parent, index):
        self.depth += 1
        try:
            if self.depth > MAX_DEPTH:
                raise yaml.composer.ComposerError(None, None, f"nested deeper than {MAX_DEPTH} levels",
                                                  self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


def _mapping(loader: yaml.SafeLoader, node: yaml.MappingNode, deep: bool = False):
    """Construct a mapping, refusing a key given twice."""
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


READERS: dict[str, type] = {"python": _PythonLoader}
if getattr(yaml, "__with_libyaml__", False):
    class _LibyamlLoader(yaml.CSafeLoader):
        """libyaml's reader: many times faster, and it stops at 1000 levels by itself."""

    READERS["libyaml"] = _LibyamlLoader
DEFAULT_READER = "libyaml" if "libyaml" in READERS else "python"
for _reader in READERS.values():  # subclasses: PyYAML's own loaders stay as they are
    _reader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)


def _check_expanded(root: yaml.Node, where: str) -> None:
    """Refuse a document whose aliases expand it beyond MAX_NODES values or MAX_DEPTH levels,
    measured without expanding: an aliased node is one object in the graph, so its size and
    height are computed once and reused."""
    known: dict[int, tuple[int, int]] = {}  # id -> (values, height)
    open_: set[int] = set()

    def measure(node: yaml.Node, level: int) -> tuple[int, int]:
        line = node.start_mark.line + 1
        if level >= MAX_DEPTH:
            raise StrictYAMLError(f"{where}: nested deeper than {MAX_DEPTH} levels (line {line}), "
                                  f"aliases (*name) expanded; a recipe is far shallower")
        if id(node) in open_:
            raise StrictYAMLError(f"{where}: an alias refers to a node that contains it "
                                  f"(line {line}); a recipe is a tree")
        if id(node) not in known:
            open_.add(id(node))
            kids = ([n for kv in node.value for n in kv] if isinstance(node, yaml.MappingNode) else
                    node.value if isinstance(node, yaml.SequenceNode) else [])
            sub = [measure(k, level + 1) for k in kids]
            open_.discard(id(node))
            known[id(node)] = (min(1 + sum(n for n, _ in sub), MAX_NODES + 1),  # no huge ints
                               1 + max((h for _, h in sub), default=0))
        values, height = known[id(node)]
        if level + height > MAX_DEPTH:
            raise StrictYAMLError(f"{where}: nested deeper than {MAX_DEPTH} levels (line {line}), "
                                  f"aliases (*name) expanded; a recipe is far shallower")
        return values, height

    if measure(root, 0)[0] > MAX_NODES:
        raise StrictYAMLError(f"{where}: more than {MAX_NODES:,} values, aliases (*name) expanded; "
                              f"a recipe is far smaller (an alias bomb?)")


def load_yaml_text(text: str, where: str, reader: str | None = None) -> Any:
    """The document in ``text`` (``where`` names it in errors), refused before construction if it
    nests deeper than :data:`MAX_DEPTH` or its aliases expand it beyond :data:`MAX_NODES` values.
    ``reader``: a key of :data:`READERS` (default: libyaml where available)."""
    loader = READERS[reader or DEFAULT_READER](text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_expanded(node, where)
        return loader.construct_document(node)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        what = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise StrictYAMLError(f"{where}: not valid YAML{at}: {what}") from None
    finally:
        loader.dispose()


def load_yaml_file(path: str | Path) -> Any:
    """The document in ``path``; empty, binary, non-UTF-8, oversized or invalid files raise
    :class:`StrictYAMLError` with one line saying what and where."""
    p = Path(path)
    with open(p, "rb") as f:
        raw = f.read(MAX_BYTES + 1)
    if len(raw) > MAX_BYTES:
        raise StrictYAMLError(f"{p}: larger than {MAX_BYTES >> 10} KiB; a recipe is a few kilobytes")
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
