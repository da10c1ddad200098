"""``ladder tokenize``: raw text -> sharded token files + manifest, streamed, in parallel.

The corpus is cut into units (newline-aligned byte ranges of .jsonl, row groups of .parquet,
whole .gz/.txt files); each worker process tokenizes one unit at a time, a batch of documents at
a time, into its own part file, so memory stays flat however big the corpus. Part ``i`` holds unit
``i``: the output is the same for any number of workers. Parts are renamed into place when
complete and the directory is renamed from ``OUT.partial`` to ``OUT`` only after the manifest is
written, so a crash never leaves output that looks complete; rerunning resumes the finished parts.
"""

from __future__ import annotations

import glob
import gzip
import hashlib
import json
import multiprocessing as mp
import os
import resource
import shutil
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from ladder.data.errors import DataError
from ladder.data.token_files import MANIFEST

UNIT_BYTES = 64 << 20  # input bytes per unit (~16M tokens: one part file of 32-64 MB)
BATCH_DOCS = 512  # documents encoded together (bounds a worker's memory)
FORMAT = "ladder-tokens/1"


def find_inputs(patterns: list[str]) -> list[str]:
    files = sorted({f for p in patterns for f in glob.glob(os.path.expanduser(p), recursive=True)
                    if os.path.isfile(f)})
    if not files:
        raise DataError(f"inputs: no files match {patterns}")
    for f in files:
        if _kind(f) is None:
            raise DataError(f"inputs: {f} is not .jsonl/.json(.gz), .parquet or .txt")
    return files


def _kind(path: str) -> str | None:
    name = path.lower()
    for ext, kind in ((".jsonl.gz", "jsonl.gz"), (".json.gz", "jsonl.gz"), (".jsonl", "jsonl"),
                      (".json", "jsonl"), (".parquet", "parquet"), (".txt", "txt"), (".md", "txt")):
        if name.endswith(ext):
            return kind
    return None


def plan_units(files: list[str], unit_bytes: int = UNIT_BYTES) -> list[tuple[str, int, int]]:
    """(file, start, end): byte ranges for jsonl, row-group ranges for parquet, whole otherwise."""
    units = []
    for f in files:
        kind = _kind(f)
        if kind == "jsonl":
            size, start = os.path.getsize(f), 0
            with open(f, "rb") as fh:
                while start < size:
                    end = min(size, start + unit_bytes)
                    if end < size:
                        fh.seek(end)
                        fh.readline()
                        end = fh.tell()
                    units.append((f, start, end))
                    start = end
        elif kind == "parquet":
            import pyarrow.parquet as pq

            meta = pq.ParquetFile(f).metadata
            acc, first = 0, 0
            for g in range(meta.num_row_groups):
                acc += meta.row_group(g).total_byte_size
                if acc >= unit_bytes or g == meta.num_row_groups - 1:
                    units.append((f, first, g + 1))
                    first, acc = g + 1, 0
        else:
            units.append((f, 0, -1))
    return units


def _texts(unit: tuple[str, int, int], field: str):
    """Documents of one unit, streamed."""
    path, start, end = unit
    kind = _kind(path)
    if kind == "txt":
        yield Path(path).read_text(encoding="utf-8", errors="replace")
        return
    if kind == "parquet":
        import pyarrow.parquet as pq

        pf = pq.ParquetFile(path)
        if field not in pf.schema_arrow.names:
            raise DataError(f"--text-field: {path} has no column {field!r}")
        for batch in pf.iter_batches(columns=[field], row_groups=range(start, end), batch_size=BATCH_DOCS):
            yield from batch.column(0).to_pylist()
        return
    fh = gzip.open(path, "rb") if kind == "jsonl.gz" else open(path, "rb")
    with fh:
        if kind == "jsonl":
            fh.seek(start)
        pos = start
        for line in fh:
            if kind == "jsonl":
                pos += len(line)
            if line.strip():
                try:
                    doc = json.loads(line)
                except json.JSONDecodeError as e:
                    raise DataError(f"{path}: a line near byte {pos} is not JSON ({e})") from e
                if field not in doc:
                    raise DataError(f"--text-field: {path} has a document without {field!r} "
                                    f"(fields: {', '.join(doc)})")
                yield doc[field]
            if kind == "jsonl" and pos >= end:
                break


_WORKER: dict = {}


def _init_worker(tokenizer_json: str, eos: int, dtype: str, field: str) -> None:
    os.environ["TOKENIZERS_PARALLELISM"] = "false"  # one thread per process: processes scale
    from tokenizers import Tokenizer

    _WORKER.update(tok=Tokenizer.from_str(tokenizer_json), eos=eos, dtype=np.dtype(dtype), field=field)


def _tokenize_unit(job: tuple[int, tuple[str, int, int], str]) -> dict:
    """Tokenize one unit into ``part-<i>.npy`` (via a temp name) and return its stats."""
    i, unit, out_dir = job
    tok, eos, dtype = _WORKER["tok"], _WORKER["eos"], _WORKER["dtype"]
    final = Path(out_dir) / f"part-{i:05d}.npy"
    tmp = final.with_suffix(".npy.tmp")
    n_tokens = n_docs = 0
    batch: list[str] = []

    def flush(fh) -> None:
        nonlocal n_tokens
        for enc in tok.encode_batch(batch, add_special_tokens=False):
            ids = np.empty(len(enc.ids) + 1, dtype=dtype)
            ids[:-1] = enc.ids
            ids[-1] = eos
            fh.write(ids.tobytes())
            n_tokens += ids.size
        batch.clear()

    try:
        with open(tmp, "wb") as fh:
            for text in _texts(unit, _WORKER["field"]):
                if isinstance(text, str) and text:
                    batch.append(text)
                    n_docs += 1
                    if len(batch) >= BATCH_DOCS:
                        flush(fh)
            if batch:
                flush(fh)
            fh.flush()
            os.fsync(fh.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.rename(tmp, final)
    stats = dict(path=final.name, tokens=n_tokens, documents=n_docs, source=unit[0],
                 range=[unit[1], unit[2]], max_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    final.with_suffix(".json").write_text(json.dumps(stats))
    return stats


def tokenize_corpus(inputs: list[str], tokenizer, out: str | os.PathLike, *, workers: int = 1,
                    text_field: str = "text", unit_bytes: int = UNIT_BYTES, tokenizer_spec: str = "",
                    progress=None) -> dict:
    """Tokenize ``inputs`` into ``out``; returns the manifest. ``tokenizer`` is a loaded
    ``PreTrainedTokenizerFast`` (its backend JSON is what the workers load)."""
    from ladder.data.tokenizer import tokenizer_hash

    out = Path(out)
    if (out / MANIFEST).is_file():
        raise DataError(f"--out: {out} already holds tokenized data ({MANIFEST}); choose another "
                        "directory or delete it")
    if out.exists():
        raise DataError(f"--out: {out} exists and is not a finished `ladder tokenize` output")
    files = find_inputs(inputs)
    units = plan_units(files, unit_bytes)
    vocab = len(tokenizer)
    dtype = "uint16" if vocab <= 1 << 16 else "uint32"
    partial = out.with_name(out.name + ".partial")
    partial.mkdir(parents=True, exist_ok=True)
    stats_of = [(f, os.stat(f).st_size, os.stat(f).st_mtime_ns) for f in files]  # edited inputs: start over
    source_id = hashlib.sha256(json.dumps(stats_of).encode()).hexdigest()[:16]
    stamp = partial / "inputs.json"  # a .partial dir of other inputs/tokenizer is not resumed
    key = dict(inputs=source_id, tokenizer_hash=tokenizer_hash(tokenizer), dtype=dtype, units=len(units),
               unit_bytes=unit_bytes, text_field=text_field)
    if stamp.is_file() and json.loads(stamp.read_text()) != key:
        shutil.rmtree(partial)
        partial.mkdir(parents=True)
    stamp.write_text(json.dumps(key))
    done = {}
    for i in range(len(units)):
        s = partial / f"part-{i:05d}.json"
        if s.is_file() and (partial / f"part-{i:05d}.npy").is_file():
            done[i] = json.loads(s.read_text())
    todo = [(i, u, str(partial)) for i, u in enumerate(units) if i not in done]
    init = (tokenizer.backend_tokenizer.to_str(), int(tokenizer.eos_token_id), dtype, text_field)
    if workers <= 1:
        _init_worker(*init)
        results = map(_tokenize_unit, todo)
    else:
        pool = ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"),
                                   initializer=_init_worker, initargs=init)
        results = pool.map(_tokenize_unit, todo)
    try:
        for (i, _, _), stats in zip(todo, results):
            done[i] = stats
            if progress:
                progress(stats)
    finally:
        if workers > 1:
            pool.shutdown(cancel_futures=True)
    parts = [done[i] for i in range(len(units))]
    manifest = dict(format=FORMAT, tokenizer=tokenizer_spec, tokenizer_hash=key["tokenizer_hash"],
                    vocab_size=vocab, eos_token_id=int(tokenizer.eos_token_id), dtype=dtype,
                    text_field=text_field, tokens=sum(p["tokens"] for p in parts),
                    documents=sum(p["documents"] for p in parts),
                    inputs=[dict(path=f, bytes=os.path.getsize(f)) for f in files],
                    files=[{k: p[k] for k in ("path", "tokens", "documents", "source", "range")} for p in parts])
    for i in range(len(units)):
        (partial / f"part-{i:05d}.json").unlink()
    stamp.unlink()
    (partial / MANIFEST).write_text(json.dumps(manifest, indent=1))
    os.rename(partial, out)
    return manifest
