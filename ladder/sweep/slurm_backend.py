"""The SLURM backend: each group of rungs with the same resources is one job array, the final
prediction one job after them all (afterok); what each rung does comes from scontrol and its
run directory. The scripts and their submission are in :mod:`ladder.sweep.slurm`."""

from __future__ import annotations

from pathlib import Path

from ladder.sweep.backend import BackendError, LaunchOptions, settings
from ladder.sweep.launcher import JobSpecError, Resources
from ladder.sweep.slurm import JOBS_JSON, SLURM_SUBDIR, SlurmConfig, SlurmSweep, cancel
from ladder.sweep.sweepdir import Sweep


class SlurmBackend:
    name = "slurm"

    def __init__(self, config: SlurmConfig):
        self.config = config

    @classmethod
    def from_plan(cls, plan) -> "SlurmBackend":
        recipe = plan.recipe
        try:
            return cls(SlurmConfig.from_dict(settings(recipe, cls.name), f"{recipe.source}: slurm",
                                             known_sizes=[r.size for _, r in plan.all_runs()]))
        except JobSpecError as e:
            raise BackendError(str(e)) from None

    def resources(self, size: str) -> Resources:
        return self.config.resources(size)

    def device_memory_gib(self, size: str) -> float | None:
        return self.config.gpu_memory_gib if self.resources(size).gpus_per_node else None

    def checks(self, plan, estimates: dict) -> list:
        from ladder.sweep.checks import gpu_checks

        return gpu_checks(plan, self, estimates)

    def _jobs(self, sweep: Sweep, options: LaunchOptions) -> SlurmSweep:
        cfg = self.config
        if options.max_retries is not None:
            cfg.max_retries = options.max_retries
        final = sweep.predict_job(cfg.defaults) if options.predict else None
        return SlurmSweep.from_config(sweep.dir, sweep.jobs(self.resources), final, cfg,
                                      job_prefix=sweep.recipe.name)

    def render(self, sweep: Sweep, options: LaunchOptions) -> str:
        ss = self._jobs(sweep, options)
        out = []
        for g in ss.groups:
            text = ss.render_array(g)
            out.append(f"{g.script_name} ({len(g.rungs)} rungs: {', '.join(j.name for j in g.rungs)}):")
            out += ["  " + ln for ln in text.splitlines()
                    if ln.startswith("#SBATCH") or ln.lstrip().startswith("srun")]
        if ss.final is not None:
            out.append("final.sbatch: the prediction, after every array succeeded (afterok)")
        return "\n".join(out)

    def launch(self, sweep: Sweep, options: LaunchOptions, echo) -> bool:
        record = self._jobs(sweep, options).submit()
        arrays = ", ".join(a["job_id"] for a in record.get("arrays", []))
        echo(f"submitted {sweep.recipe.name}: arrays {arrays or '-'}"
             + (f", prediction job {record['final']['job_id']}" if record.get("final") else ""))
        echo(f"follow it with: ladder status {sweep.dir}")
        return False  # the rungs run under SLURM; its final job predicts

    def status(self, sweep: Sweep):
        from ladder.sweep.slurm_status import status

        return status(sweep.dir)

    def cancel(self, sweep: Sweep) -> list[str]:
        return cancel(sweep.dir)

    @classmethod
    def owns(cls, sweep_dir: Path) -> bool:
        return (Path(sweep_dir) / SLURM_SUBDIR / JOBS_JSON).exists()
