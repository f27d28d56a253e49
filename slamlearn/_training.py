"""The torch training loop behind the estimators.

Given a module, a way to fetch batches of rows, a per-row loss and options,
run epochs of mini-batch optimisation with history, early stopping on held-out
labeled rows, NaN detection, mixed precision, distributed data parallelism
and resumable checkpoints.

Batches are planned so that a run gives the same result whatever the number
of processes: every epoch draws one permutation of the rows from
``(seed, epoch)``, identical on every rank; step ``s`` uses the global batch
``perm[s*B:(s+1)*B]``, and under DistributedDataParallel each rank takes an
equal slice of it. Each rank's loss is its rows' loss sum over the global
batch size, times the world size, so DDP's gradient averaging reproduces the
single-process gradient of the global batch mean.
"""

from __future__ import annotations

import copy
import os
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable

import numpy as np
import torch
from torch import nn

__all__ = ["BatchPlan", "Checkpoint", "DistInfo", "TrainConfig", "dist_info", "make_optimizer", "make_scheduler",
           "resolve_device", "train"]


def resolve_device(device) -> torch.device:
    """``"auto"`` picks CUDA when available, else the CPU."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not isinstance(device, str):
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or a torch.device; got {device!r}")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device='cuda' was requested but no CUDA device is available; use device='auto' or 'cpu'")
    return dev


@dataclass
class DistInfo:
    """This process's place in a distributed run (rank 0 of 1 when not distributed)."""

    rank: int = 0
    world_size: int = 1

    @property
    def active(self) -> bool:
        return self.world_size > 1


def dist_info(mode="auto", device: torch.device | None = None) -> DistInfo:
    """Join (or start) the default process group when launched by ``torchrun``.

    ``mode="auto"`` uses an initialised default group, or initialises one
    from torchrun's environment (``WORLD_SIZE`` > 1): gloo on CPU, nccl on
    CUDA. ``False`` always trains in this process alone.
    """
    if mode is False or not torch.distributed.is_available():
        return DistInfo()
    import torch.distributed as dist

    if not dist.is_initialized():
        if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or "MASTER_ADDR" not in os.environ:
            return DistInfo()
        backend = "nccl" if device is not None and device.type == "cuda" else "gloo"
        dist.init_process_group(backend)
    return DistInfo(dist.get_rank(), dist.get_world_size())


def make_optimizer(optimizer, params, *, lr: float, weight_decay: float, momentum: float) -> torch.optim.Optimizer:
    """Build an optimizer from a name ("adam", "adamw", "sgd") or a class."""
    if not lr > 0:
        raise ValueError(f"lr must be positive; got {lr}")
    if weight_decay < 0:
        raise ValueError(f"weight_decay must be non-negative; got {weight_decay}")
    if isinstance(optimizer, str):
        name = optimizer.lower()
        if name == "adam":
            return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
        if name == "adamw":
            return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
        if name == "sgd":
            return torch.optim.SGD(params, lr=lr, weight_decay=weight_decay, momentum=momentum)
        raise ValueError(f"optimizer must be 'adam', 'adamw', 'sgd' or a torch.optim.Optimizer class; got {optimizer!r}")
    if isinstance(optimizer, type) and issubclass(optimizer, torch.optim.Optimizer):
        return optimizer(params, lr=lr, weight_decay=weight_decay)
    raise ValueError(f"optimizer must be 'adam', 'adamw', 'sgd' or a torch.optim.Optimizer class; got {optimizer!r}")


def make_scheduler(spec, optimizer: torch.optim.Optimizer, epochs: int):
    """Per-epoch learning-rate schedule.

    ``None`` keeps the rate constant; ``"cosine"`` anneals it to zero over the
    epochs; ``"step"`` divides it by 10 at 50% and 75% of the epochs; a
    callable ``spec(optimizer, epochs)`` returns any torch scheduler.
    """
    if spec is None:
        return None
    if spec == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(epochs, 1))
    if spec == "step":
        milestones = sorted({max(1, epochs // 2), max(1, (3 * epochs) // 4)})
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=milestones, gamma=0.1)
    if callable(spec):
        return spec(optimizer, epochs)
    raise ValueError(f"lr_schedule must be None, 'cosine', 'step' or a callable; got {spec!r}")


class BatchPlan:
    """The rows each step of an epoch uses on this rank (see the module docstring)."""

    def __init__(self, rows: np.ndarray, batch_size: int, seed: int, dist: DistInfo):
        self.rows, self.batch_size, self.seed, self.dist = np.asarray(rows), int(batch_size), int(seed), dist

    def epoch(self, epoch: int) -> list[tuple[np.ndarray, int]]:
        """``(row ids for this rank, global batch size)`` for every step."""
        g = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
        perm = self.rows[torch.randperm(len(self.rows), generator=g).numpy()]
        steps = []
        W, r = self.dist.world_size, self.dist.rank
        for s in range(0, len(perm), self.batch_size):
            chunk = perm[s:s + self.batch_size]
            bounds = np.linspace(0, len(chunk), W + 1).astype(int)
            steps.append((chunk[bounds[r]:bounds[r + 1]], len(chunk)))
        return steps


class _PlannedBatches(torch.utils.data.Dataset):
    """Steps of one epoch as a map-style dataset: item ``s`` is the batch of
    step ``s`` (so a DataLoader can prefetch and pin it in worker processes)."""

    def __init__(self, steps, fetch):
        self.steps, self.fetch = steps, fetch

    def __len__(self):
        return len(self.steps)

    def __getitem__(self, s):
        ids, size = self.steps[s]
        return self.fetch(ids), size


@dataclass
class Checkpoint:
    """Where rank 0 saves training state after every epoch, and whether to
    resume from it."""

    path: str
    resume: bool = False

    def load(self):
        if self.resume and os.path.exists(self.path):
            return torch.load(self.path, map_location="cpu", weights_only=False)
        return None

    def save(self, state: dict, dist: DistInfo) -> None:
        if dist.rank != 0:
            return
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        tmp = self.path + ".tmp"
        torch.save(state, tmp)
        os.replace(tmp, self.path)  # atomic: a crash never leaves half a checkpoint


@dataclass
class TrainConfig:
    """Options of :func:`train` (validated by the estimator)."""

    epochs: int
    batch_size: int
    optimizer: object = "adam"
    lr: float = 1e-3
    weight_decay: float = 0.0
    momentum: float = 0.9
    lr_schedule: object = None
    n_iter_no_change: int = 10
    tol: float = 1e-4
    verbose: int = 0
    phase: str = "train"
    seed: int = 0
    num_workers: int = 0
    pin_memory: bool = False
    grad_scaler: bool = False
    history: list = field(default_factory=list)


def _holdout_accuracy(module: nn.Module, X: torch.Tensor, y: torch.Tensor, batch_size: int) -> float:
    was_training = module.training
    module.eval()
    correct = 0
    with torch.no_grad():
        for s in range(0, X.shape[0], batch_size * 4):
            correct += int((module(X[s:s + batch_size * 4]).argmax(1) == y[s:s + batch_size * 4]).sum())
    module.train(was_training)
    return correct / max(X.shape[0], 1)


def _batches(steps, fetch, cfg: TrainConfig) -> Iterable:
    if cfg.num_workers <= 0 and not cfg.pin_memory:
        return ((fetch(ids), size) for ids, size in steps)
    return torch.utils.data.DataLoader(_PlannedBatches(steps, fetch), batch_size=None, shuffle=False,
                                       num_workers=cfg.num_workers, pin_memory=cfg.pin_memory)


def train(module: nn.Module, trainable: nn.Module, plan: BatchPlan, fetch: Callable, row_loss: Callable,
          cfg: TrainConfig, *, device: torch.device, dist: DistInfo = DistInfo(),
          holdout: tuple[torch.Tensor, torch.Tensor] | None = None, checkpoint: Checkpoint | None = None,
          resume_state: dict | None = None, extra_state: Callable[[], dict] | None = None) -> None:
    """Optimise for ``cfg.epochs`` epochs.

    Parameters
    ----------
    module : nn.Module
        The student (evaluated for early stopping; its best weights are kept).
    trainable : nn.Module
        What the optimiser updates: the student plus any loss heads; wrapped
        in DistributedDataParallel under ``dist``.
    plan : BatchPlan
        Rows of every step.
    fetch : callable
        ``fetch(row_ids)`` returns the batch (any object with ``.to(device)``).
    row_loss : callable
        ``row_loss(model, batch)`` returns the per-row loss of a batch on the device.
    cfg : TrainConfig
        Options; one dict per epoch is appended to ``cfg.history``.
    holdout : (X, y) tensors, optional
        Labeled rows held out for early stopping on accuracy.
    checkpoint : Checkpoint, optional
        Rank 0 saves the training state after every epoch.
    resume_state : dict, optional
        A saved state of this phase to continue from.
    extra_state : callable, optional
        Extra entries saved with each checkpoint.
    """
    if cfg.epochs <= 0 or len(plan.rows) == 0:
        return
    model = trainable
    if dist.active:
        model = nn.parallel.DistributedDataParallel(
            trainable, device_ids=[device.index] if device.type == "cuda" else None)
    opt = make_optimizer(cfg.optimizer, trainable.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay,
                         momentum=cfg.momentum)
    sched = make_scheduler(cfg.lr_schedule, opt, cfg.epochs)
    scaler = torch.amp.GradScaler(device.type) if cfg.grad_scaler else None
    best_score, best_state, stale, first = -float("inf"), None, 0, 0
    if resume_state is not None:
        trainable.load_state_dict(resume_state["trainable"])
        opt.load_state_dict(resume_state["optimizer"])
        if sched is not None and resume_state.get("scheduler") is not None:
            sched.load_state_dict(resume_state["scheduler"])
        if scaler is not None and resume_state.get("scaler") is not None:
            scaler.load_state_dict(resume_state["scaler"])
        best_score, best_state, stale = resume_state["best_score"], resume_state["best_state"], resume_state["stale"]
        first = resume_state["epoch"] + 1
        cfg.history[:] = resume_state["history"]
    epochs = range(first, cfg.epochs)
    bar = None
    if cfg.verbose and dist.rank == 0:
        from tqdm.auto import tqdm

        bar = tqdm(epochs, desc=cfg.phase, unit="epoch", leave=cfg.verbose > 1)
        epochs = bar
    trainable.train()
    world = float(dist.world_size)
    stopped = False
    for epoch in epochs:
        start = time.perf_counter()
        losses = []
        for batch, size in _batches(plan.epoch(epoch), fetch, cfg):
            batch = batch.to(device, non_blocking=cfg.pin_memory)
            opt.zero_grad(set_to_none=True)
            rows = row_loss(model, batch)
            loss = rows.sum() * (world / size)
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
            else:
                loss.backward()
                opt.step()
            # Kept on the device: no host synchronisation per step.
            losses.append(loss.detach() / world)
        stacked = torch.stack(losses)
        if dist.active:  # every rank sees the same losses (and so the same history)
            torch.distributed.all_reduce(stacked)
        finite = torch.isfinite(stacked)
        if not bool(finite.all()):
            step = int((~finite).nonzero()[0, 0])
            raise FloatingPointError(
                f"the training loss became NaN or infinite in phase '{cfg.phase}', epoch {epoch + 1}, batch "
                f"{step + 1}; lower lr, check the inputs for extreme values, or use gradient-friendly settings"
            )
        record = {"phase": cfg.phase, "epoch": epoch + 1, "train_loss": float(stacked.mean()),
                  "lr": opt.param_groups[0]["lr"], "seconds": time.perf_counter() - start}
        if sched is not None:
            sched.step()
        if holdout is not None:
            score = _holdout_accuracy(module, holdout[0], holdout[1], cfg.batch_size)
            record["valid_accuracy"] = score
            if score > best_score + cfg.tol:
                best_score, stale = score, 0
                best_state = copy.deepcopy(module.state_dict())
            else:
                stale += 1
            stopped = stale >= cfg.n_iter_no_change
        cfg.history.append(record)
        if bar is not None:
            bar.set_postfix({k: round(v, 4) for k, v in record.items() if k in ("train_loss", "valid_accuracy")})
        if checkpoint is not None:
            state = {"phase": cfg.phase, "epoch": epoch if not stopped else cfg.epochs - 1,
                     "trainable": trainable.state_dict(), "optimizer": opt.state_dict(),
                     "scheduler": None if sched is None else sched.state_dict(),
                     "scaler": None if scaler is None else scaler.state_dict(), "best_score": best_score,
                     "best_state": best_state, "stale": stale, "history": list(cfg.history)}
            if extra_state is not None:
                state.update(extra_state())
            checkpoint.save(state, dist)
        if stopped:
            break
    if best_state is not None:
        module.load_state_dict(best_state)
