"""Data-parallel training hooks: which worker this process is, and the few collective steps the one training
loop (encoders/training.py) needs to run on several workers.

Single-process training uses `WorkerGroup()` (rank 0 of 1): every hook is a no-op. Under Ray Train (or any
launcher that initialises `torch.distributed`), `WorkerGroup.current()` reads the process group, and:

- every worker draws the same global batches (same seed) and trains on its contiguous share of each one
  (`shard`), so the global batch and the number of steps are the single-process run's; each worker's mean
  loss is weighted by its share of the batch's examples (`share_weight`), so the averaged gradient is the
  global batch's;
- the loss module is wrapped in DistributedDataParallel (`wrap`): gradients are averaged across workers in
  backward (gloo on CPU, NCCL on GPUs), so every worker takes the same optimiser step and the towers, the
  cached catalogue bank and the sampled negatives stay identical everywhere;
- validation, checkpoints, the metrics CSV and progress bars happen on rank 0 only; its metrics are
  broadcast (`broadcast`) so every worker makes the same early-stopping decision, and any worker running
  out of time stops them all (`any`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class WorkerGroup:
    """This process's place among the data-parallel training workers."""

    rank: int = 0
    world_size: int = 1

    @classmethod
    def current(cls) -> "WorkerGroup":
        """From the initialised torch.distributed process group; a single worker when there is none."""
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            return cls(dist.get_rank(), dist.get_world_size())
        return cls()

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def shard(self, batch: Sequence) -> tuple:
        """This worker's contiguous share of a global batch (tensors and lists, sliced along the first axis;
        shares differ by at most one example)."""
        n = len(batch[0])
        start, stop = self.rank * n // self.world_size, (self.rank + 1) * n // self.world_size
        return tuple(part[start:stop] for part in batch)

    def wrap(self, module: nn.Module, device: torch.device) -> nn.Module:
        """`module` in DistributedDataParallel when there are several workers (gradients averaged in
        backward), else `module` itself. Parameters that a step leaves unused (e.g. adapters switched off
        after `bert_epochs`) are allowed."""
        if not self.distributed:
            return module
        from torch.nn.parallel import DistributedDataParallel

        ids = [device.index if device.index is not None else torch.cuda.current_device()] \
            if device.type == "cuda" else None
        return DistributedDataParallel(module, device_ids=ids, find_unused_parameters=True)

    def _collective(self, values: Sequence[float], op: str) -> list[float]:
        import torch.distributed as dist

        backend_device = "cuda" if dist.get_backend() == "nccl" else "cpu"
        tensor = torch.tensor([float(v) for v in values], dtype=torch.float64, device=backend_device)
        if op == "broadcast":
            dist.broadcast(tensor, src=0)
        else:
            dist.all_reduce(tensor, op=dist.ReduceOp.MAX if op == "max" else dist.ReduceOp.SUM)
            if op == "mean":
                tensor /= self.world_size
        return tensor.cpu().tolist()

    def broadcast(self, values: Sequence[float]) -> list[float]:
        """Rank 0's `values` on every worker."""
        return self._collective(values, "broadcast") if self.distributed else list(values)

    def mean(self, values: Sequence[float]) -> list[float]:
        """The element-wise mean of `values` over the workers."""
        return self._collective(values, "mean") if self.distributed else list(values)

    def share_weight(self, n: int) -> float:
        """`n` (this worker's examples) × workers ÷ all workers' examples: scaling each worker's mean loss by it
        makes DDP's average of the workers' gradients the gradient of the global batch's mean loss."""
        if not self.distributed:
            return 1.0
        return n * self.world_size / max(self._collective([n], "sum")[0], 1.0)

    def sync_parameters(self, module: nn.Module) -> None:
        """Rank 0's parameter values into every worker's `module` (after work each worker did on its own, such as
        the item–item pre-stage, whose dropout draws differ); nothing on one worker."""
        if not self.distributed:
            return
        import torch.distributed as dist

        with torch.no_grad():
            for parameter in module.parameters():
                dist.broadcast(parameter.data, src=0)

    def any(self, flag: bool) -> bool:
        """True on every worker when it is true on any."""
        return bool(self._collective([flag], "max")[0]) if self.distributed else bool(flag)


class LossModule(nn.Module):
    """The training step's forward pass as a module (`forward` = `loss_fn(*args)`), so DistributedDataParallel
    can wrap it: DDP synchronises gradients only for what runs inside its wrapped module's `forward`."""

    def __init__(self, model: nn.Module, loss_fn) -> None:
        super().__init__()
        self.model = model  # registered: its parameters are the ones DDP averages
        self.loss_fn = loss_fn

    def forward(self, *args):
        return self.loss_fn(*args)
