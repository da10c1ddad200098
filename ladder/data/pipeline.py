"""Training data: corpus -> tokenizer -> cached token memmaps -> packed, seeded, sharded batches.

Tokenizing is done once per (corpus content, tokenizer) and cached as flat token files keyed by
both hashes, so every rung of a ladder (and every process of a run) reads the same memmap.
Documents are joined with EOS and cut into fixed-length sequences; the order of sequences is a
pure function of (seed, position), so a resumed run continues on exactly the batches it would
have seen, and any number of processes can read their shard of the same global batch.

Sources: ``pystdlib`` (this Python's standard library sources: offline, on every machine, the
embedded default), ``hf`` (hub dataset id), ``files`` (local jsonl/json/parquet/txt via
``datasets``) and ``tokens`` (pre-tokenized numpy token files, as OLMo ships its data).
"""

from __future__ import annotations

import glob
import hashlib
import json
import math
import os
import re
import sysconfig
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from ladder import integrity
from ladder.data import checks
from ladder.data.cache import atomic_dir, cache_dir
from ladder.data.errors import DataError
from ladder.data.sequences import (VALIDATION_LIMIT, IndexedSequences, PackedSequences, SkipHeldOut,
                                   held_out, permutation)
from ladder.data.token_files import TokenFiles, probe, resolve_token_files
from ladder.data.tokenizer import load_tokenizer, tokenizer_hash
from ladder.recipe import DataConfig, ModelConfig

# Standard-library directories left out of the embedded corpus: tests (huge, repetitive),
# GUI/demo code and anything installed (varies between machines).
_STDLIB_SKIP = {"test", "tests", "idlelib", "site-packages", "dist-packages", "lib2to3", "tkinter",
                "turtledemo", "ensurepip", "__pycache__"}


# ---------------------------------------------------------------------------- documents

_LARGE_TEXT = 1_000_000_000  # characters of text beyond which `ladder tokenize` is suggested


@dataclass
class Document:
    id: str
    text: str


def _pystdlib_docs(max_bytes: int | None, cut: list) -> Iterator[Document]:
    root = Path(sysconfig.get_paths()["stdlib"])
    files = []
    for d, dirs, names in os.walk(root):
        dirs[:] = sorted(x for x in dirs if x not in _STDLIB_SKIP and not x.startswith("config-"))
        files += [Path(d) / n for n in sorted(names) if n.endswith(".py")]
    total = 0
    for f in sorted(files, key=lambda f: f.relative_to(root).as_posix()):
        text = f.read_text(encoding="utf-8", errors="replace")
        if max_bytes is not None and total + len(text.encode()) > max_bytes and total > 0:
            cut.append(total)
            break
        total += len(text.encode())
        yield Document(f.relative_to(root).as_posix(), text)


def _datasets_docs(cfg: DataConfig, cut: list) -> Iterator[Document]:
    import datasets

    if cfg.source == "hf":
        ds = datasets.load_dataset(cfg.path, cfg.hf_config, split=cfg.split, streaming=True)
        where = f"hub dataset {cfg.path!r}"
    else:
        patterns = [cfg.path] if isinstance(cfg.path, str) else list(cfg.path or [])
        files = sorted({f for p in patterns for f in glob.glob(os.path.expanduser(p), recursive=True)})
        if not files:
            raise DataError(f"data.path: no files match {patterns}")
        exts = {Path(f).suffix.lower().lstrip(".") for f in files}
        if exts <= {"jsonl", "json"}:
            builder, kw = "json", {}
        elif exts <= {"parquet"}:
            builder, kw = "parquet", {}
        elif exts <= {"txt", "text", "md"}:
            builder, kw = "text", {"sample_by": "document"}
        else:
            raise DataError(f"data.path: files must all be .jsonl/.json, .parquet or .txt, got {sorted(exts)}")
        ds = datasets.load_dataset(builder, data_files=files, split="train", **kw)
        where = f"files {files[:3]}{'...' if len(files) > 3 else ''}"
    total = 0
    for i, ex in enumerate(ds):
        if cfg.text_field not in ex:
            raise DataError(f"data.text_field: {where} has no field {cfg.text_field!r} "
                            f"(fields: {', '.join(ex)})")
        text = ex[cfg.text_field]
        if not isinstance(text, str) or not text:
            continue
        n = len(text.encode())
        if cfg.max_bytes is not None and total + n > cfg.max_bytes and total > 0:
            cut.append(total)
            break
        total += n
        yield Document(str(ex.get("id", i)), text)


def read_documents(cfg: DataConfig, notes: list[str] | None = None) -> list[Document]:
    """The whole corpus in memory: for corpora of up to a few hundred MB (larger ones: `ladder
    tokenize`, then data.source: tokens). A cut by ``data.max_bytes`` is added to ``notes``."""
    cut: list[int] = []
    docs = list(_pystdlib_docs(cfg.max_bytes, cut) if cfg.source == "pystdlib" else _datasets_docs(cfg, cut))
    if not docs:
        raise DataError(f"data ({cfg.source} {cfg.path or ''}): the corpus is empty")
    if cut and notes is not None:
        notes.append(f"data: data.max_bytes={cfg.max_bytes:,} cut the corpus after {len(docs):,} documents "
                     f"({cut[0]:,} bytes); set data.max_bytes: null to read all of it")
    size = sum(len(d.text) for d in docs)
    if size > _LARGE_TEXT and notes is not None:
        notes.append(f"data: {size / 1e9:.1f} GB of text held in memory and hashed at every start; for a "
                     "corpus this size run `ladder tokenize` once and train with data.source: tokens")
    return docs


def split_documents(docs: list[Document], fraction: float) -> tuple[list[Document], list[Document]]:
    """Held-out documents chosen by a hash of their id: stable when the corpus grows."""
    if len(docs) < 2:
        raise DataError(f"the corpus has {len(docs)} document(s); need at least 2 to hold out "
                        "a validation split")
    key = lambda d: hashlib.sha256(d.id.encode()).hexdigest()  # noqa: E731
    n_val = min(len(docs) - 1, max(1, math.ceil(fraction * len(docs))))
    val_ids = {d.id for d in sorted(docs, key=key)[:n_val]}
    return [d for d in docs if d.id not in val_ids], [d for d in docs if d.id in val_ids]


def _hash_docs(docs: list[Document]) -> str:
    h = hashlib.sha256()
    for d in docs:
        h.update(d.id.encode() + b"\0" + d.text.encode() + b"\0")
    return h.hexdigest()[:16]


# ---------------------------------------------------------------------------- token cache


def _tokenize_to(docs: list[Document], tok, path: Path, dtype: np.dtype) -> tuple[int, str]:
    """Tokens written, and the digest of the bytes, computed as they are written."""
    eos = tok.eos_token_id
    backend = tok.backend_tokenizer
    n, h = 0, integrity.new_hasher()
    with open(path, "wb") as f:
        for i in range(0, len(docs), 256):
            enc = backend.encode_batch([d.text for d in docs[i:i + 256]], add_special_tokens=False)
            for e in enc:
                data = np.asarray(e.ids + [eos], dtype=dtype).tobytes()
                f.write(data)
                h.update(data)
                n += len(e.ids) + 1
        f.flush()
        os.fsync(f.fileno())
    return n, h.hexdigest()


def _cache_problem(d: Path) -> str | None:
    """Why a token-cache entry cannot be trained on, or None: every file's size and digest
    against its meta.json, read in full (the cost is measured in docs/reliability.md)."""
    try:
        meta = json.loads((d / "meta.json").read_text())
        records = meta["files"]
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError):
        return "its meta.json is unreadable or was written before digests"
    if integrity.SEAL not in meta:
        return "its meta.json has no digest of its own"
    problem = integrity.seal_problem(meta, "meta.json")
    if problem:
        return problem
    if not isinstance(records, dict) or not {"train.bin", "val.bin"} <= set(records):
        return "its meta.json does not list its token files"
    return integrity.files_problem(d, records)


def _verified_cache(final: Path, build, notes: list[str]) -> Path:
    """The cache entry at ``final``, built if missing; a damaged one is set aside (kept as
    ``damaged-<name>-<time>`` for inspection) and built again, never trained on."""
    d = atomic_dir(final, build)
    problem = _cache_problem(d)
    if problem is None:
        return d
    aside = d.with_name(f"damaged-{d.name}-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}")
    try:
        os.rename(d, aside)
    except FileNotFoundError:  # another process set it aside first
        pass
    notes.append(f"data: the token cache {d} is damaged ({problem}); kept as {aside.name} and built again")
    d = atomic_dir(final, build)
    problem = _cache_problem(d)
    if problem is not None:
        raise DataError(f"the token cache {d} is damaged just after it was built ({problem}); "
                        "check the disk holding the cache (--cache or $LADDER_CACHE)")
    return d


@dataclass
class TokenData:
    """The run's data: a train and a validation token stream plus what evaluation needs.

    Text sources give two cached memmaps (documents split by a hash of their id); token files
    give a :class:`TokenFiles` index over the files and, without ``data.validation_path``, a seeded
    sample of whole sequences held out of it (chosen once ``seq_len`` is known)."""

    train: np.ndarray | TokenFiles
    val: np.ndarray | TokenFiles | None  # None: held out of ``train`` by sequence
    tokenizer: object
    name: str  # validation-set name in metric columns
    corpus_hash: str
    tokenizer_hash: str
    val_docs: list[str] | None  # raw held-out documents (text sources)
    cache_path: Path | None = None
    validation_fraction: float = 0.05
    notes: list[str] = field(default_factory=list)  # lines for the user (cuts, repeats, gaps)
    _seqs: tuple | None = field(default=None, repr=False)

    @property
    def eos_id(self) -> int:
        return int(self.tokenizer.eos_token_id)

    def sequences(self, seq_len: int) -> tuple:
        """(train, validation) sequences of ``seq_len`` tokens, each with ``.n`` and ``.get(idx)``."""
        if self._seqs is None or self._seqs[0] != seq_len:
            self._seqs = (seq_len, *self._make_sequences(seq_len))
        return self._seqs[1], self._seqs[2]

    def _make_sequences(self, L: int) -> tuple:
        if isinstance(self.train, np.ndarray):
            return PackedSequences(self.train, L, "train"), PackedSequences(self.val, L, "validation")
        n = len(self.train) // L
        if self.val is not None:
            nv = len(self.val) // L
            if n < 1 or nv < 1:
                what, have = ("train", len(self.train)) if n < 1 else ("validation", len(self.val))
                raise DataError(f"the {what} token files hold {have:,} tokens, fewer than one sequence "
                                f"of train.seq_len={L}")
            # scored in a seeded order, so the first validation_tokens span all the files
            return (IndexedSequences(self.train, L, lambda j: j, n),
                    IndexedSequences(self.val, L, permutation(nv, [0, nv]), nv))
        if n < 2:
            raise DataError(f"data.path: the token files hold {len(self.train):,} tokens, fewer than "
                            f"two sequences of train.seq_len={L} (one to train on, one to validate)")
        k = min(n - 1, max(1, math.ceil(self.validation_fraction * n)), VALIDATION_LIMIT)
        if k == VALIDATION_LIMIT:
            self.notes.append(f"data: validation holds out {k:,} sequences, fewer than "
                              f"data.validation_fraction={self.validation_fraction:g} of {n:,}")
        val = held_out(n, k)
        return (IndexedSequences(self.train, L, SkipHeldOut(val), n - k),
                IndexedSequences(self.train, L, lambda j: val[j], k))

    def validation_texts(self, limit: int | None = None) -> list[str]:
        """The validation split's raw documents (for in-distribution task building)."""
        if self.val_docs is not None:
            return list(self.val_docs[:limit])
        docs: list[str] = []
        if isinstance(self.val, np.ndarray):
            pieces = [np.asarray(self.val[: 4_000_000])]
        else:  # whole documents inside validation sequences (the pieces cut at their edges dropped)
            L = self._seqs[0] if self._seqs else _TEXT_SEQ  # the run's split once it has one
            _, val = self.sequences(L)
            seqs = val.get(np.arange(min(val.n, 4_000_000 // L)))
            pieces = [s[np.flatnonzero(s == self.eos_id)[0] + 1:] for s in seqs if (s == self.eos_id).any()]
        for toks in pieces:
            cur: list[int] = []
            for t in toks.tolist():
                if t == self.eos_id:
                    if cur:
                        docs.append(self.tokenizer.decode(cur))
                        cur = []
                        if limit and len(docs) >= limit:
                            return docs
                else:
                    cur.append(t)
        return docs


_TEXT_SEQ = 4096  # sequence length for validation_texts of token files (when none is chosen yet)


def valset_name(cfg: DataConfig) -> str:
    """The validation set's name in metric columns (``eval/<name>-validation/...``)."""
    if cfg.name:
        return cfg.name
    if cfg.source == "pystdlib":
        return "pystdlib"
    first = cfg.path if isinstance(cfg.path, str) else (cfg.path or [""])[0]
    p = Path(first.rstrip("/"))
    stem = re.sub(r"[*?\[\]]", "", p.name.split(".")[0]) or re.sub(r"[*?\[\]]", "", p.parent.name)
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", stem).strip("_")
    return stem or cfg.source


def prepare_data(cfg: DataConfig, model: ModelConfig, cache: Path | None = None) -> TokenData:
    """Read (or reuse from the cache) the tokenized corpus. Safe to call from every process:
    cache entries are built in temp dirs and renamed into place."""
    root = cache_dir(cache)
    if cfg.source == "tokens":
        return _token_files(cfg, model, root)
    notes: list[str] = []
    docs = read_documents(cfg, notes)
    train_docs, val_docs = split_documents(docs, cfg.validation_fraction)
    chash = _hash_docs(docs) + f"-v{cfg.validation_fraction:g}"
    tok = load_tokenizer(model, train_docs, _hash_docs(train_docs), root)
    thash = tokenizer_hash(tok)
    dtype = np.uint16 if len(tok) <= 65_536 else np.uint32

    def build(tmp: Path) -> None:
        n_train, train_digest = _tokenize_to(train_docs, tok, tmp / "train.bin", dtype)
        n_val, val_digest = _tokenize_to(val_docs, tok, tmp / "val.bin", dtype)
        with open(tmp / "val_docs.jsonl", "w") as f:
            for d in val_docs:
                f.write(json.dumps({"id": d.id, "text": d.text}) + "\n")
        files = {"train.bin": integrity.file_record(tmp / "train.bin", train_digest),
                 "val.bin": integrity.file_record(tmp / "val.bin", val_digest),
                 "val_docs.jsonl": integrity.file_record(tmp / "val_docs.jsonl")}
        (tmp / "meta.json").write_text(json.dumps(integrity.seal(dict(
            source=cfg.source, path=cfg.path, corpus_hash=chash, tokenizer_hash=thash,
            dtype=np.dtype(dtype).name, train_tokens=n_train, val_tokens=n_val,
            train_docs=len(train_docs), val_docs=len(val_docs), files=files)), indent=2))

    d = _verified_cache(root / "tokens" / f"{chash}-{thash}", build, notes)
    meta = json.loads((d / "meta.json").read_text())
    train = np.memmap(d / "train.bin", dtype=meta["dtype"], mode="r")
    val = np.memmap(d / "val.bin", dtype=meta["dtype"], mode="r")
    return TokenData(train=train, val=val, tokenizer=tok, name=valset_name(cfg), corpus_hash=chash,
                     tokenizer_hash=thash, val_docs=[x.text for x in val_docs], cache_path=d,
                     validation_fraction=cfg.validation_fraction, notes=notes)


def _token_files(cfg: DataConfig, model: ModelConfig, root: Path) -> TokenData:
    """Token files through an index (never concatenated in memory), checked against the tokenizer."""
    if model.tokenizer == "embedded":
        raise DataError("model.tokenizer: pre-tokenized data (data.source: tokens) needs the "
                        "tokenizer it was made with ('olmo', a tokenizer.json or a hub id), not 'embedded'")
    tok = load_tokenizer(model, cache=root)
    if cfg.eos_token_id is not None:
        tok.eos_token = tok.convert_ids_to_tokens(cfg.eos_token_id)
    thash, notes = tokenizer_hash(tok), []

    def index(spec, key: str) -> tuple[TokenFiles, str]:
        files, manifest = resolve_token_files(spec, key)
        dtype = cfg.tokens_dtype
        if manifest is not None:  # written by `ladder tokenize`: it says how it was made
            dtype = manifest["dtype"]
            if manifest["tokenizer_hash"] != thash:
                raise DataError(f"{key}: {spec} was tokenized with {manifest['tokenizer']!r} "
                                f"(hash {manifest['tokenizer_hash']}), not model.tokenizer "
                                f"{model.tokenizer!r} (hash {thash})")
        checks.check_dtype_holds_vocab("data.tokens_dtype", dtype, len(tok), model.tokenizer)
        tf = TokenFiles(files, dtype, key)
        p = probe(tf, int(tok.eos_token_id))
        checks.check_ids_fit(key, p.max_file, p.max_id, len(tok), model.tokenizer)
        if p.no_eos_end:
            notes.append(f"data: {len(p.no_eos_end)} of {len(files)} files of {key} do not end with EOS "
                         f"(id {tok.eos_token_id}), e.g. {p.no_eos_end[0]}: a sequence across that "
                         "boundary joins two documents without a separator (mid-document shards, or "
                         "the data's EOS is not the tokenizer's: data.eos_token_id)")
        return tf, p.content_hash

    train, chash = index(cfg.path, "data.path")
    val = None
    if cfg.validation_path is not None:
        val, vh = index(cfg.validation_path, "data.validation_path")
        chash = f"{chash}-{vh}"
    else:
        chash = f"{chash}-v{cfg.validation_fraction:g}"
    notes.insert(0, f"data: {len(train):,} tokens in {len(train.files):,} token files"
                 + (f"; validation: {len(val):,} tokens in {len(val.files):,} files" if val else
                    f"; validation: a seeded {cfg.validation_fraction:g} of their sequences"))
    return TokenData(train=train, val=val, tokenizer=tok, name=valset_name(cfg), corpus_hash=chash,
                     tokenizer_hash=thash, val_docs=None, validation_fraction=cfg.validation_fraction,
                     notes=notes)
