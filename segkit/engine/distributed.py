"""DDP under Hydra (`trainer=ddp`): every process of a job trains in the job's one run folder.

Lightning's DDP starts the processes of ranks > 0 by running the command line again (`sys.argv`). Under Hydra
that goes wrong twice: in a multirun the command line holds `-m` and the sweep lists, so every child starts a
whole new sweep (and a sweeper such as Optuna samples other values there), and the child's run folder is the
parent's unused `hydra.run.dir`, a new time stamp, so runs get stray folders. `HydraDDPStrategy` starts each
child as a single run of exactly the parent's job instead: the job's overrides (a sweeper's values included), in
the job's output folder, with no `.hydra/` of its own and its own log file.
"""

from __future__ import annotations

import os
import subprocess
import sys

import torch
import torch.distributed as dist
from hydra.core.hydra_config import HydraConfig
from hydra.utils import to_absolute_path
from lightning import Trainer
from lightning.pytorch.plugins.layer_sync import LayerSync, TorchSyncBatchNorm
from lightning.pytorch.strategies import DDPStrategy
from lightning.pytorch.strategies.launchers.subprocess_script import _SubprocessScriptLauncher
from omegaconf import DictConfig
from torch import nn

# What the launcher sets in the parent's environment for the process group of a job.
DISTRIBUTED_ENVIRON = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE")


def _quoted(value: str) -> str:
    """`value` as one Hydra override value, whatever characters it holds."""
    return "'" + value.replace("'", "\\'") + "'"


def _config_arguments(hydra_cfg: DictConfig) -> list[str]:
    """The `--config-name`, `--config-path` and `--config-dir` the current job was composed from."""
    arguments = [f"--config-name={hydra_cfg.job.config_name}"]
    for source in hydra_cfg.runtime.config_sources:
        location = source.path if source.schema == "file" else f"{source.schema}://{source.path}"
        if source.provider == "main":
            arguments.append(f"--config-path={location}")
        elif source.provider == "command-line":
            arguments.append(f"--config-dir={location}")
    return arguments


def child_command(global_rank: int) -> tuple[list[str], str]:
    """The command line and working directory of the process of `global_rank`: the current Hydra job, run
    again as a single run (never `-m`) in the same output folder."""
    if not HydraConfig.initialized():
        raise RuntimeError(
            "trainer=ddp starts its processes by running the Hydra job again: start it as "
            "`python -m segkit.train trainer=ddp ...`, not by calling segkit.tasks.train.train(cfg)"
        )
    hydra_cfg = HydraConfig.get()
    import __main__  # here, as Lightning does: the module that was started, known only at run time

    if __main__.__spec__ is None:
        program = [sys.executable, to_absolute_path(sys.argv[0])]
    else:
        program = [sys.executable, "-m", __main__.__spec__.name]
    command = [
        *program,
        *_config_arguments(hydra_cfg),
        *hydra_cfg.overrides.task,
        f"hydra.run.dir={_quoted(hydra_cfg.runtime.output_dir)}",
        # The parent writes .hydra/; a child writes only its own log, <job name>_rank<N>.log.
        "hydra.output_subdir=null",
        f"hydra.job.name={hydra_cfg.job.name}_rank{global_rank}",
        f"hydra.job.chdir={str(bool(hydra_cfg.job.chdir)).lower()}",
    ]
    return command, hydra_cfg.runtime.cwd


# The one private Lightning API segkit uses, kept to this class and HydraDDPStrategy._configure_launcher: Lightning
# has no public hook for how DDP starts the processes of ranks 1.., and its own way (running the command line
# again) makes a new Hydra run folder, or a whole new sweep, in every process.
class HydraJobLauncher(_SubprocessScriptLauncher):
    """Starts the processes of local ranks 1.. of this node with `child_command`, and ends them with the job."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        # The parent's environment before this launcher set the process group's variables; None until it did.
        self.environ_before: dict[str, str | None] | None = None

    def _call_children_scripts(self) -> None:
        self._check_can_spawn_children()
        environment = self.cluster_environment
        first_rank = environment.node_rank() * self.num_processes
        # Before touching the environment: child_command fails outside a Hydra job.
        commands = {local_rank: child_command(first_rank + local_rank) for local_rank in range(1, self.num_processes)}
        self.environ_before = {key: os.environ.get(key) for key in DISTRIBUTED_ENVIRON}
        # In the parent too: later launches of this job (validate after fit) see the processes running already.
        os.environ.update(
            MASTER_ADDR=environment.main_address,
            MASTER_PORT=str(environment.main_port),
            NODE_RANK=str(environment.node_rank()),
            LOCAL_RANK=str(environment.local_rank()),
            WORLD_SIZE=str(self.num_processes * self.num_nodes),
        )
        for local_rank, (command, cwd) in commands.items():
            child_environ = {**os.environ, "LOCAL_RANK": str(local_rank)}
            self.procs.append(subprocess.Popen(command, env=child_environ, cwd=cwd))

    def end_job(self) -> None:
        """Waits for the processes this launcher started, leaves the process group and restores the
        environment, so that the next job of a multirun starts processes of its own."""
        if self.environ_before is None:
            return
        exit_codes = {rank: proc.wait() for rank, proc in enumerate(self.procs, start=1)}
        if dist.is_initialized():
            dist.destroy_process_group()
        for key, value in self.environ_before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        self.environ_before = None
        failed = {rank: code for rank, code in exit_codes.items() if code != 0}
        if failed:
            raise RuntimeError(f"DDP processes of this job failed (local rank: exit code): {failed}; errors above")


class HydraDDPStrategy(DDPStrategy):
    """Lightning's DDP whose processes are single runs of the parent's Hydra job (`HydraJobLauncher`), with
    sync batch norm that works on CPU processes too (`CPUSyncBatchNorm`)."""

    def _configure_launcher(self) -> None:
        if self._start_method != "popen":
            super()._configure_launcher()
            return
        self._launcher = HydraJobLauncher(self.cluster_environment, self.num_processes, self.num_nodes)

    def setup(self, trainer: Trainer) -> None:
        # Lightning's TorchSyncBatchNorm makes torch.nn.SyncBatchNorm layers, which run on GPUs only.
        if type(self._layer_sync) is TorchSyncBatchNorm and self.root_device.type == "cpu":
            self._layer_sync = CPUSyncBatchNormPlugin()
        super().setup(trainer)


def end_job(trainer: Trainer) -> None:
    """Ends the DDP processes that `trainer` started for this job, if it started any."""
    launcher = trainer.strategy.launcher
    if isinstance(launcher, HydraJobLauncher):
        launcher.end_job()


class _SumOverProcesses(torch.autograd.Function):
    """Sum over every process (all-reduce); its gradient is the sum of every process's gradient, as for any sum."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        total = tensor.clone()
        dist.all_reduce(total)
        return total

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        total = grad.clone()
        dist.all_reduce(total)
        return total


class CPUSyncBatchNorm(nn.modules.batchnorm._BatchNorm):
    """Batch norm synchronised over processes on CPU (gloo). torch's SyncBatchNorm needs GPUs (its
    `batch_norm_stats` kernels have no CPU version, and DistributedDataParallel refuses it on CPU). Training
    normalises with the statistics of the global batch, summed over every process, and its gradients are those
    of the global batch; evaluation and single processes use plain batch norm."""

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"batch norm expects (N, C, ...) input, got {input.dim()}D")

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(input)
        self._check_input_dim(input)
        features = input.float()  # statistics in float32, also under bf16 autocast
        dims = [0, *range(2, input.dim())]
        shape = [1, -1] + [1] * (input.dim() - 2)
        local_count = features.new_tensor([features.numel() / features.shape[1]])
        sums = _SumOverProcesses.apply(torch.cat([features.sum(dims), local_count]))
        count = sums[-1]
        mean = sums[:-1] / count
        centred = features - mean.view(shape)
        # Two passes (mean, then squared deviations) keep the variance exact where E[x^2] - E[x]^2 would cancel.
        variance = _SumOverProcesses.apply((centred * centred).sum(dims)) / count
        if self.track_running_stats and self.running_mean is not None:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                factor = self.momentum if self.momentum is not None else 1.0 / self.num_batches_tracked.item()
                self.running_mean.lerp_(mean, factor)
                self.running_var.lerp_(variance * count / (count - 1), factor)  # unbiased, as torch's
        output = centred * torch.rsqrt(variance + self.eps).view(shape)
        if self.affine:
            output = output * self.weight.view(shape) + self.bias.view(shape)
        return output.to(input.dtype)


class CPUSyncBatchNormPlugin(LayerSync):
    """Lightning's sync batch norm hook for `CPUSyncBatchNorm`: every batch norm layer changes class for training
    and back afterwards, keeping its parameters, buffers and identity (the classes share their state)."""

    def apply(self, model: nn.Module) -> nn.Module:
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(module, CPUSyncBatchNorm):
                module.unsynced_class = type(module)
                module.__class__ = CPUSyncBatchNorm
        return model

    def revert(self, model: nn.Module) -> nn.Module:
        for module in model.modules():
            if isinstance(module, CPUSyncBatchNorm):
                module.__class__ = module.__dict__.pop("unsynced_class")
        return model
