"""Run by tests/test_compile.py in a fresh process (a one-process gloo group of its own): the
trainer's model, prepared as `ladder train` prepares it (DDP or FSDP2, torch.compile), trains
two steps with accumulation and is evaluated twice; prints Dynamo's recompile count as JSON.

    python tests/compile_probe.py STRATEGY LAYERS [BACKEND [PRECISION]]
"""

import functools
import json
import os
import socket
import sys

import numpy as np
import torch

strategy, layers = sys.argv[1], int(sys.argv[2])
backend = sys.argv[3] if len(sys.argv) > 3 else "eager"  # Dynamo decides recompiles, not the backend
precision = sys.argv[4] if len(sys.argv) > 4 else "no"  # "bf16": autocast, as on a GPU
with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", LOCAL_WORLD_SIZE="1", MASTER_ADDR="127.0.0.1",
                  MASTER_PORT=str(port))
torch.set_num_threads(1)
torch.compile = functools.partial(torch.compile, backend=backend)
torch.distributed.init_process_group("gloo")

from ladder import presets  # noqa: E402
from ladder.data.sequences import PackedSequences  # noqa: E402
from ladder.recipe import from_dict  # noqa: E402
from ladder.runplan import plan_run  # noqa: E402
from ladder.train.loop import _train_step, _validation  # noqa: E402
from ladder.train.parallel import SizeParallel, build_accelerator  # noqa: E402
from ladder.train.recompiles import RecompileCounter  # noqa: E402
from ladder.train.setup import build_model, build_optimizer, eval_module, prepare_model  # noqa: E402

name = f"tiny-{layers}l"
presets.PRESETS[name] = presets.Preset(name, 16, layers, 2, 32, vocab_size=256, tiny=True)
seq, micro = 16, 2
recipe = from_dict({"model": {"sizes": [name]}, "train": {"seq_len": seq, "batch_tokens": 2 * micro * seq,
                                                         "micro_batch_size": micro}})
plan = plan_run(recipe, name, 1.0, 0, 256)
acc = build_accelerator(SizeParallel(strategy=strategy), cpu_only=True, mixed_precision=precision,
                        timeout_minutes=2)
if strategy == "fsdp":
    from ladder.train.parallel import is_fsdp

    assert is_fsdp(acc), acc.distributed_type
model = build_model(plan)
model, opt = prepare_model(acc, model, build_optimizer(model, plan, acc.device), compile=True)
sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
seqs = PackedSequences(np.random.default_rng(0).integers(0, 256, seq * 16).astype(np.uint16), seq, "t")
byte_len = torch.ones(256)
with RecompileCounter() as rc:
    for step in range(2):
        _train_step(model, opt, sched, acc, seqs, np.arange(2 * micro) + step, micro, 2, 1.0)
    first = rc.count
    for _ in range(2):
        _validation(eval_module(model), acc, seqs, 6, 3, byte_len, "t")
    _train_step(model, opt, sched, acc, seqs, np.arange(2 * micro), micro, 2, 1.0)
print(json.dumps({"recompiles": rc.count, "after_first_steps": rc.count - first, "limit_hit": rc.limit_hit,
                  "reasons": rc.reasons[:3]}))
torch.distributed.destroy_process_group()
