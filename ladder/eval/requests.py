"""Tokenised requests of the ladder's tasks, cached on disk.

For every request (context, continuation) we keep the context's and the continuation's tokens
and the continuation's character and UTF-8 byte counts. Character and byte counts follow the
code that produced the OLMo-ladder logs: the continuation's first character (the separating
space) is not counted (see docs/evaluation.md). Contexts shared by a document's choices are
tokenised once; tokenised tasks are cached on disk per (request data, tokenizer, document
selection), so in-loop evaluation tokenises once per machine.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ladder.eval.tasks import Doc, Task, load_docs, source_fingerprint

log = logging.getLogger(__name__)

CACHE_VERSION = "1"


def bos_prefix(tokenizer) -> list[int]:
    """[BOS] when the tokenizer itself starts sequences with BOS (e.g. Llama), else [].

    OLMo's tokenizers do not add BOS, and the paper's in-loop evaluation fed contexts without it."""
    bos = getattr(tokenizer, "bos_token_id", None)
    if bos is None:
        return []
    with_special = tokenizer("a", add_special_tokens=True)["input_ids"]
    return [bos] if with_special and with_special[0] == bos else []


def tokenizer_fingerprint(tokenizer) -> str:
    """Stable hash of everything that decides the token ids of a string."""
    h = hashlib.sha256(type(tokenizer).__name__.encode())
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        h.update(backend.to_str().encode())
    else:
        h.update(json.dumps(sorted(tokenizer.get_vocab().items())).encode())
    h.update(json.dumps([bos_prefix(tokenizer), getattr(tokenizer, "eos_token_id", None)]).encode())
    return h.hexdigest()


def _norm_length(s: str) -> tuple[int, int]:
    """(characters, UTF-8 bytes) used for normalisation: the first character (the separating
    space) is not counted, as in the code that produced the paper's logs. At least 1."""
    rest = s[1:]
    return max(len(rest), 1), max(len(rest.encode("utf-8")), 1)


@dataclass
class TokenizedTask:
    """Tokenised requests of one task (documents in file order, requests grouped by document)."""

    task: Task
    doc_index: np.ndarray  # (n_docs,) position of each document in the task's file order
    labels: np.ndarray  # (n_docs,) gold choice
    req_doc: np.ndarray  # (n_req,) document (row of labels) of each request
    req_choice: np.ndarray  # (n_req,) choice index within the document
    req_ctx: np.ndarray  # (n_req,) index into contexts (shared by the choices of a document)
    ctx_tokens: list[np.ndarray]
    cont_tokens: list[np.ndarray]
    n_chars: np.ndarray  # (n_req,) normalisation characters of the continuation
    n_bytes: np.ndarray  # (n_req,) normalisation UTF-8 bytes of the continuation
    n_chars_full: np.ndarray  # (n_req,) all characters
    n_bytes_full: np.ndarray  # (n_req,) all bytes

    @property
    def n_docs(self) -> int:
        return len(self.labels)

    @property
    def n_requests(self) -> int:
        return len(self.req_doc)

    @property
    def n_tokens(self) -> np.ndarray:
        return np.array([len(t) for t in self.cont_tokens], dtype=np.int64)

    # --- disk cache (npz of flat arrays; never pickled)
    def save(self, path: Path) -> None:
        def flat(seqs):
            off = np.zeros(len(seqs) + 1, dtype=np.int64)
            off[1:] = np.cumsum([len(s) for s in seqs])
            return (np.concatenate(seqs) if seqs else np.zeros(0, np.int64)).astype(np.int64), off
        ctx, ctx_off = flat(self.ctx_tokens)
        cont, cont_off = flat(self.cont_tokens)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        with open(tmp, "wb") as f:
            np.savez(f, doc_index=self.doc_index, labels=self.labels, req_doc=self.req_doc,
                     req_choice=self.req_choice, req_ctx=self.req_ctx, ctx=ctx, ctx_off=ctx_off,
                     cont=cont, cont_off=cont_off, n_chars=self.n_chars, n_bytes=self.n_bytes,
                     n_chars_full=self.n_chars_full, n_bytes_full=self.n_bytes_full)
        os.replace(tmp, path)  # atomic: a cache file is complete or absent

    @classmethod
    def load(cls, task: Task, path: Path) -> "TokenizedTask":
        with np.load(path, allow_pickle=False) as z:
            a = {k: z[k] for k in z.files}
        split = lambda flat, off: [flat[off[i]:off[i + 1]] for i in range(len(off) - 1)]  # noqa: E731
        return cls(task, a["doc_index"], a["labels"], a["req_doc"], a["req_choice"], a["req_ctx"],
                   split(a["ctx"], a["ctx_off"]), split(a["cont"], a["cont_off"]), a["n_chars"],
                   a["n_bytes"], a["n_chars_full"], a["n_bytes_full"])


def _encode(tokenizer, texts: list[str]) -> list[list[int]]:
    if not texts:
        return []
    return list(tokenizer(texts, add_special_tokens=False)["input_ids"])


def tokenize_docs(task: Task, docs: list[Doc], doc_index: list[int], tokenizer) -> TokenizedTask:
    """Tokenise contexts and continuations separately (as the reference evaluators do), prepending
    BOS when the tokenizer uses one. Contexts shared by a document's choices are encoded once."""
    prefix = bos_prefix(tokenizer)
    fallback = prefix or [t for t in (getattr(tokenizer, "eos_token_id", None),) if t is not None]
    ctx_texts: list[str] = []
    req_doc, req_choice, req_ctx, conts = [], [], [], []
    for d, doc in enumerate(docs):
        seen: dict[str, int] = {}
        for c, (ctx, cont) in enumerate(zip(doc.contexts, doc.continuations)):
            if ctx not in seen:
                seen[ctx] = len(ctx_texts)
                ctx_texts.append(ctx)
            req_doc.append(d)
            req_choice.append(c)
            req_ctx.append(seen[ctx])
            conts.append(cont)
    ctx_tok = []
    for i, ids in enumerate(_encode(tokenizer, ctx_texts)):
        ids = prefix + list(ids) if (not prefix or not ids or ids[0] != prefix[0]) else list(ids)
        if not ids:  # empty context: condition on BOS/EOS if the tokenizer has one
            if not fallback:
                raise ValueError(f"task {task.id}: a document has an empty context and the "
                                 f"tokenizer has neither a BOS nor an EOS token to condition on")
            ids = list(fallback)
        ctx_tok.append(np.asarray(ids, dtype=np.int64))
    cont_tok = [np.asarray(ids, dtype=np.int64) for ids in _encode(tokenizer, conts)]
    for i, t in enumerate(cont_tok):
        if len(t) == 0:
            raise ValueError(f"task {task.id}: continuation {conts[i]!r} tokenises to nothing")
    norm = np.array([_norm_length(s) for s in conts], dtype=np.int64).reshape(-1, 2)
    full = np.array([(len(s), len(s.encode("utf-8"))) for s in conts], dtype=np.int64).reshape(-1, 2)
    return TokenizedTask(
        task, np.asarray(doc_index, dtype=np.int64), np.array([d.label for d in docs], dtype=np.int64),
        np.asarray(req_doc, dtype=np.int64), np.asarray(req_choice, dtype=np.int64),
        np.asarray(req_ctx, dtype=np.int64), ctx_tok, cont_tok, norm[:, 0], norm[:, 1],
        full[:, 0], full[:, 1])


def select_docs(n_docs: int, limit: int | None, subset: str, seed: int) -> list[int]:
    """Indices of the documents to evaluate, in file order: all, the first `limit`, or a
    fixed-seed random `limit` (the same documents at every call, so curves are comparable)."""
    if limit is None or limit >= n_docs:
        return list(range(n_docs))
    if limit < 1:
        raise ValueError(f"limit must be >= 1 (got {limit})")
    if subset == "first":
        return list(range(limit))
    if subset == "random":
        return sorted(random.Random(seed).sample(range(n_docs), limit))
    raise ValueError(f"subset must be 'first' or 'random' (got {subset!r})")


def default_cache_dir() -> Path | None:
    env = os.environ.get("LADDER_EVAL_CACHE")
    if env:
        return None if env.lower() in ("off", "0", "none", "false") else Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "ladder" / "eval"


def prepare_task(task: Task, tokenizer, *, limit: int | None, subset: str, seed: int,
                 corpus_texts: list[str] | None = None, cache_dir: Path | None = None,
                 tok_fp: str | None = None) -> TokenizedTask:
    """Documents of a task, tokenised, from the disk cache when the same request data, tokenizer
    and document selection were tokenised before."""
    path = None
    if cache_dir is not None:
        key = hashlib.sha256(json.dumps([
            CACHE_VERSION, source_fingerprint(task, corpus_texts),
            tok_fp or tokenizer_fingerprint(tokenizer), limit, subset, seed]).encode()).hexdigest()
        path = Path(cache_dir) / f"{task.id}-{key[:32]}.npz"
        if path.is_file():
            try:
                return TokenizedTask.load(task, path)
            except Exception as e:  # damaged cache entry: rebuild it
                log.warning("ignoring unreadable tokenisation cache %s (%s)", path, e)
    if subset == "first" or limit is None:
        docs = load_docs(task, limit, corpus_texts)
        index = list(range(len(docs)))
    else:
        all_docs = load_docs(task, None, corpus_texts)
        index = select_docs(len(all_docs), limit, subset, seed)
        docs = [all_docs[i] for i in index]
    tt = tokenize_docs(task, docs, index, tokenizer)
    if path is not None:
        try:
            tt.save(path)
        except OSError as e:
            log.warning("could not write tokenisation cache %s (%s)", path, e)
    return tt
