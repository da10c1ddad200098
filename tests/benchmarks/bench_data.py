"""Data at scale: start-up time and peak memory of token files as an index, a 2-process CPU run
stepping on them, and raw-text tokenizing throughput, each against a baseline measured in the
same run. Prints figures; asserts nothing (docs/data.md records them).

    python tests/benchmarks/bench_data.py index    # 64 sparse files >= 1 TiB, 1,000 small files
    python tests/benchmarks/bench_data.py run2     # a 2-process CPU run on the 1 TiB files
    python tests/benchmarks/bench_data.py tokenize --mb 50 100   # raw text, two corpus sizes

Sparse files (``truncate``) cost no disk: all their tokens are 0, which is the EOS of the small
tokenizer used here.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1",
       "HF_DATASETS_OFFLINE": "1", "WANDB_MODE": "disabled"}

PREPARE = """
import json, resource, sys, time
t0 = time.perf_counter()
import numpy as np
from ladder.data.pipeline import prepare_data
from ladder.data.sequences import BatchSampler
from ladder.recipe import DataConfig, ModelConfig
from transformers import AutoTokenizer, PreTrainedTokenizerFast  # import time is not preparation
t1 = time.perf_counter()
cfg, tok, cache, old = json.loads(sys.argv[1])
if old:  # the loader before the index: every file concatenated into one in-memory array
    import glob
    arrays = [np.memmap(f, dtype=cfg["tokens_dtype"], mode="r") for f in sorted(glob.glob(cfg["path"]))]
    tokens = np.concatenate(arrays)
    n = len(tokens)
else:
    d = prepare_data(DataConfig(**cfg), ModelConfig(tokenizer=tok), cache)
    train, val = d.sequences(2048)
    x = train.get(BatchSampler(train.n, 256, seed=0).indices(0))
    n = len(d.train)
t2 = time.perf_counter()
print(json.dumps(dict(tokens=n, prepare_s=t2 - t1, imports_s=t1 - t0,
                      max_rss_mib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)))
"""


def small_tokenizer(d: Path) -> str:
    """A 512-token byte-level BPE (EOS id 0) saved as tokenizer.json."""
    from ladder.data.tokenizer import train_bpe_tokenizer

    if not (d / "tokenizer.json").is_file():
        texts = [p.read_text(errors="replace") for p in sorted(Path(sysconfig.get_paths()["stdlib"]).glob("a*.py"))]
        train_bpe_tokenizer(texts, 512, d)
    return str(d / "tokenizer.json")


def sparse_files(d: Path, n: int, nbytes: int) -> str:
    d.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        fd = os.open(d / f"part-{i:05d}.npy", os.O_CREAT | os.O_WRONLY)
        os.ftruncate(fd, nbytes)
        os.close(fd)
    return str(d / "*.npy")


def measure_prepare(path: str, tok: str, cache: Path, old: bool = False) -> dict:
    cfg = dict(source="tokens", path=path, tokens_dtype="uint32", validation_fraction=0.001)
    out = subprocess.run([sys.executable, "-c", PREPARE, json.dumps([cfg, tok, str(cache), old])], env=ENV,
                         capture_output=True, text=True)
    if out.returncode:
        return {"error": out.stderr.strip().splitlines()[-1]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def bench_index(args) -> None:
    work = Path(args.dir or tempfile.mkdtemp(prefix="bench-data-"))
    tok = small_tokenizer(work / "tok")
    cases = [("64 files, 1 TiB", 64, (1 << 40) // 64), ("1,000 files, 1 TiB", 1000, (1 << 40) // 1000 // 4 * 4),
             ("8 files, 1 GiB", 8, (1 << 30) // 8)]
    for name, n, size in cases:
        path = sparse_files(work / name.replace(" ", "").replace(",", ""), n, size)
        new = measure_prepare(path, tok, work)
        print(f"{name:>20}: index  prepare {new.get('prepare_s', float('nan')):6.2f} s  peak RSS "
              f"{new.get('max_rss_mib', float('nan')):7.0f} MiB (imports {new.get('imports_s', 0):.1f} s) "
              f"{new.get('error', '')}")
        if size * n <= 1 << 30:  # the copying loader only where it fits in memory
            old = measure_prepare(path, tok, work, old=True)
            print(f"{'':>20}  copy   prepare {old['prepare_s']:6.2f} s  peak RSS {old['max_rss_mib']:7.0f} MiB "
                  f"(the loader before the index)")


def bench_run2(args) -> None:
    import yaml

    work = Path(args.dir or tempfile.mkdtemp(prefix="bench-data-"))
    tok = small_tokenizer(work / "tok")
    path = sparse_files(work / "64files", 64, (1 << 40) // 64)
    recipe = {"name": "bench-data", "model": {"sizes": ["tiny-9k"], "tokenizer": tok},
              "data": {"source": "tokens", "path": path, "tokens_dtype": "uint32", "validation_fraction": 0.001,
                       "validation_tokens": 4096},
              "multipliers": [0.1], "train": {"seq_len": 128, "batch_tokens": 2048, "cpu_threads": 1},
              "evaluation": {"count": 2, "early": 0}, "tracking": {"log_interval": 5}}
    (work / "r.yaml").write_text(yaml.safe_dump(recipe))
    torchrun = Path(sys.executable).with_name("torchrun")
    cmd = ["/usr/bin/time", "-f", "%M %e", "-o", str(work / "time.txt"), str(torchrun), "--nproc_per_node", "2",
           "-m", "ladder", "train", str(work / "r.yaml"), "--out", str(work / "run"), "--no-progress",
           "--cache", str(work / "cache")]
    t = time.perf_counter()
    out = subprocess.run(cmd, env=ENV, capture_output=True, text=True, cwd=work)
    wall = time.perf_counter() - t
    rss_kib, _ = (work / "time.txt").read_text().split()[-2:]
    meta = json.loads((work / "run" / "run.json").read_text()) if (work / "run" / "run.json").is_file() else {}
    rows = (work / "run" / "metrics.jsonl").read_text().splitlines() if (work / "run" / "metrics.jsonl").is_file() else []
    print(f"2-process CPU run on 64 sparse files (1 TiB): exit {out.returncode}, {wall:.1f} s, "
          f"{meta.get('num_processes')} processes, {meta.get('total_steps')} steps, {len(rows)} evaluations, "
          f"peak RSS of the largest process {int(rss_kib) / 1024:.0f} MiB")
    if out.returncode:
        print(out.stderr[-3000:])
    else:
        print("\n".join(x for x in out.stderr.splitlines() if x.startswith("data:")))


def gen_jsonl(path: Path, mb: float) -> None:
    """Documents cut from this Python's standard library sources (seeded), ``mb`` MB of jsonl."""
    import random

    if path.is_file():
        return
    texts = [p.read_text(errors="replace") for p in sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py"))]
    rng, n, i = random.Random(0), 0, 0
    with open(path, "w") as f:
        while n < mb * 1e6:
            t = rng.choice(texts)
            a = rng.randrange(max(1, len(t) - 4000))
            line = json.dumps({"id": f"d{i}", "text": t[a:a + rng.randrange(500, 6000)]}) + "\n"
            f.write(line)
            n, i = n + len(line), i + 1


def timed(cmd: list[str], work: Path) -> tuple[float, float, float, str]:
    """(wall s, peak RSS MiB of the largest process, CPU s of all its processes, output) of a
    command. CPU s / wall = the cores it got: on a shared machine, fewer than its processes."""
    t = time.perf_counter()
    out = subprocess.run(["/usr/bin/time", "-f", "%M %U %S", "-o", str(work / "t.txt"), *cmd], env=ENV,
                         capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(out.stderr[-2000:])
    rss, user, system = (work / "t.txt").read_text().split()[-3:]
    return time.perf_counter() - t, int(rss) / 1024, float(user) + float(system), out.stdout + out.stderr


def bench_tokenize(args) -> None:
    work = Path(args.dir or tempfile.mkdtemp(prefix="bench-data-"))
    from ladder.data.tokenizer import olmo_tokenizer_file

    tok = str(olmo_tokenizer_file())  # GPT-NeoX/dolma-v1.5, 50,280 tokens
    old = ("import sys, json; from pathlib import Path; from ladder.data.pipeline import prepare_data; "
           "from ladder.recipe import DataConfig, ModelConfig; "
           "d = prepare_data(DataConfig(source='files', path=sys.argv[1]), ModelConfig(tokenizer=sys.argv[2]), "
           "Path(sys.argv[3])); print('TOKENS', len(d.train) + len(d.val))")
    for mb in args.mb:
        src = work / f"c{mb:g}.jsonl"
        gen_jsonl(src, mb)
        n_tokens = None
        if not args.skip_old:
            wall, rss, cpu, text = timed([sys.executable, "-c", old, str(src), tok, str(work / f"cache{mb:g}")],
                                         work)
            n_tokens = int(text.split("TOKENS")[1].split()[0])
            print(f"{mb:>6g} MB  old (datasets, one process)   {wall:7.1f} s  {n_tokens / wall:>10,.0f} tokens/s  "
                  f"peak RSS {rss:6.0f} MiB  cores used {cpu / wall:4.2f}")
            base = n_tokens / wall
        for w in args.workers:
            out = work / f"tok{mb:g}-w{w}"
            subprocess.run(["rm", "-rf", str(out)])
            wall, rss, cpu, _ = timed([sys.executable, "-m", "ladder", "tokenize", str(src), "--tokenizer", tok,
                                  "--out", str(out), "--workers", str(w), "--unit-mb", str(args.unit_mb)], work)
            n = json.loads((out / "manifest.json").read_text())["tokens"]
            rel = f"  {n / wall / base:4.2f}x old" if n_tokens else ""
            print(f"{mb:>6g} MB  ladder tokenize --workers {w}    {wall:7.1f} s  {n / wall:>10,.0f} tokens/s  "
                  f"peak RSS {rss:6.0f} MiB (largest process)  cores used {cpu / wall:4.2f}{rel}")
            if w == args.workers[0]:
                base1 = n / wall
            else:
                print(f"{'':>9}{w} workers / 1: {n / wall / base1:.2f}x")
    print(f"load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("what", choices=["index", "run2", "tokenize"])
    p.add_argument("--dir", help="work directory (default: a new temp dir)")
    p.add_argument("--mb", type=float, nargs="+", default=[100, 200], help="tokenize: corpus sizes (MB)")
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    p.add_argument("--unit-mb", type=float, default=16, help="tokenize: MB per unit (parallel grain)")
    p.add_argument("--skip-old", action="store_true")
    args = p.parse_args()
    sys.path.insert(0, str(ROOT))
    {"index": bench_index, "run2": bench_run2, "tokenize": bench_tokenize}[args.what](args)


if __name__ == "__main__":
    main()
