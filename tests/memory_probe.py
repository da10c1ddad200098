"""Run by tests/test_fsdp.py: one rank of a FSDP2 (or DDP) rung on CPU (gloo), prepared as the
trainer prepares it, one optimizer step with gradient accumulation; prints this process's peak
resident memory of the step and PyTorch's own tensor accounting (MemTracker) as JSON.

    RANK=r WORLD_SIZE=w MASTER_ADDR=... MASTER_PORT=... python tests/memory_probe.py STRATEGY D LAYERS SEQ MICRO ACCUM
"""

import json
import os
import sys

import numpy as np
import torch

strategy, d, layers, seq, micro, accum = sys.argv[1], *map(int, sys.argv[2:7])
paper_sized = len(sys.argv) > 7 and sys.argv[7] == "paper"  # not a tiny preset: sharded initialisation
os.environ.setdefault("LOCAL_RANK", os.environ["RANK"])
torch.set_num_threads(1)
torch.distributed.init_process_group("gloo")
world = torch.distributed.get_world_size()

from torch.distributed._tools.mem_tracker import MemTracker  # noqa: E402

from ladder import presets  # noqa: E402
from ladder.data.sequences import PackedSequences  # noqa: E402
from ladder.recipe import from_dict  # noqa: E402
from ladder.runplan import plan_run  # noqa: E402
from ladder.train.host_memory import keep_freed_memory  # noqa: E402
from ladder.train.loop import _train_step  # noqa: E402
from ladder.train.parallel import SizeParallel, build_accelerator  # noqa: E402
from ladder.train.setup import build_model, build_optimizer, place_model, prepare_model  # noqa: E402
from tests.memory_tools import pay_first_use_costs, restart_peak, status  # noqa: E402

keep_freed_memory()
name = "probe"
presets.PRESETS[name] = presets.Preset(name, d, layers, 4, 4 * d, vocab_size=1024, tiny=not paper_sized)
batch = micro * accum * world
recipe = from_dict({"model": {"sizes": [name]},
                    "train": {"seq_len": seq, "batch_tokens": batch * seq, "micro_batch_size": micro}})
plan = plan_run(recipe, name, 1.0, 0, 1024)
acc = build_accelerator(SizeParallel(strategy=strategy), cpu_only=True, mixed_precision="no", timeout_minutes=5)
seqs = PackedSequences(np.random.default_rng(0).integers(0, 1024, seq * batch).astype(np.uint16), seq, "t")
idx = np.arange(acc.process_index, batch, world)


pay_first_use_costs()
model = place_model(plan, acc)
built_on_meta = next(model.parameters()).is_meta
model, opt = prepare_model(acc, model, build_optimizer(model, plan, acc.device), compile=False)
if paper_sized:  # the shards hold the weights one process builds
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    full = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    ref = build_model(plan).state_dict()
    if acc.is_main_process:
        assert full.keys() == ref.keys() and all(torch.equal(full[k], ref[k]) for k in ref), "weights differ"

sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
class EachMicroBatch:
    """The model as the step sees it, starting MemTracker's per-module statistics afresh at each
    micro-batch (it refuses a module called twice in one tracking); its peak is kept."""

    def __init__(self, module, tracker):
        self.module, self.tracker = module, tracker

    def __call__(self, *args, **kwargs):
        self.tracker.reset_mod_stats()
        return self.module(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.module, name)


# step 1 creates the optimizer's moments; step 2, measured, is every later step
_train_step(model, opt, sched, acc, seqs, idx, micro, accum, 1.0)
tracker = MemTracker()
tracker.track_external(model, opt)
base = status("VmRSS:")
restart_peak()
with tracker:
    loss, _ = _train_step(EachMicroBatch(model, tracker), opt, sched, acc, seqs, idx, micro, accum, 1.0)
tracked = tracker.get_tracker_snapshot("peak")[torch.device("cpu")]["Total"]
peak = status("VmHWM:") - base  # growth over the held state, for reference
print(json.dumps({"rank": acc.process_index, "world": world, "rss_peak": peak, "tracked_peak": tracked,
                  "built_on_meta": built_on_meta, "loss": float(loss)}))
torch.distributed.destroy_process_group()
