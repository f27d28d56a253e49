"""The torch training loop behind the estimators.

Kept apart from the estimator so that it reads as one thing: given a module,
tensors already on the device, a per-row loss and options, run epochs of
mini-batch optimisation with history, early stopping on held-out labeled
rows, NaN detection and an optional progress bar.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

__all__ = ["TrainConfig", "make_optimizer", "make_scheduler", "resolve_device", "train"]


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
    generator: torch.Generator | None = None
    history: list = field(default_factory=list)


def _batches(n: int, batch_size: int, generator, device) -> list[torch.Tensor]:
    order = torch.randperm(n, generator=generator).to(device)
    return list(torch.split(order, batch_size))


def _holdout_accuracy(module: nn.Module, X: torch.Tensor, y: torch.Tensor, batch_size: int) -> float:
    was_training = module.training
    module.eval()
    correct = 0
    with torch.no_grad():
        for s in range(0, X.shape[0], batch_size * 4):
            correct += int((module(X[s:s + batch_size * 4]).argmax(1) == y[s:s + batch_size * 4]).sum())
    module.train(was_training)
    return correct / max(X.shape[0], 1)


def train(module: nn.Module, n_rows: int, row_loss: Callable[[torch.Tensor], torch.Tensor], cfg: TrainConfig,
          holdout: tuple[torch.Tensor, torch.Tensor] | None = None, device=None, extra_params=()) -> None:
    """Optimise ``module`` for ``cfg.epochs`` epochs over ``n_rows`` rows.

    Parameters
    ----------
    module : nn.Module
        Trained in place.
    n_rows : int
        Number of training rows; batches are index tensors into them.
    row_loss : callable
        ``row_loss(idx)`` returns the mean loss of the batch of row indices
        ``idx`` (it runs the module itself, so methods can use embeddings).
    cfg : TrainConfig
        Options; one dict per epoch is appended to ``cfg.history``.
    holdout : (X, y) tensors, optional
        Labeled rows held out for early stopping on accuracy; the best
        weights are restored at the end.
    extra_params : iterable of tensors
        Parameters trained alongside the module's (e.g. a loss head).
    """
    if cfg.epochs <= 0 or n_rows == 0:
        return
    opt = make_optimizer(cfg.optimizer, [*module.parameters(), *extra_params], lr=cfg.lr,
                         weight_decay=cfg.weight_decay, momentum=cfg.momentum)
    sched = make_scheduler(cfg.lr_schedule, opt, cfg.epochs)
    best_score, best_state, stale = -float("inf"), None, 0
    epochs = range(cfg.epochs)
    bar = None
    if cfg.verbose:
        from tqdm.auto import tqdm

        bar = tqdm(epochs, desc=cfg.phase, unit="epoch", leave=cfg.verbose > 1)
        epochs = bar
    module.train()
    for epoch in epochs:
        start = time.perf_counter()
        losses = []
        for idx in _batches(n_rows, cfg.batch_size, cfg.generator, device):
            opt.zero_grad(set_to_none=True)
            loss = row_loss(idx)
            loss.backward()
            opt.step()
            # Kept on the device: no host synchronisation per step.
            losses.append(loss.detach())
        stacked = torch.stack(losses)
        finite = torch.isfinite(stacked)
        if not bool(finite.all()):
            batch = int((~finite).nonzero()[0, 0])
            raise FloatingPointError(
                f"the training loss became NaN or infinite in phase '{cfg.phase}', epoch {epoch + 1}, batch "
                f"{batch + 1}; lower lr, check the inputs for extreme values, or use gradient-friendly settings"
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
        cfg.history.append(record)
        if bar is not None:
            bar.set_postfix({k: round(v, 4) for k, v in record.items() if k in ("train_loss", "valid_accuracy")})
        if holdout is not None and stale >= cfg.n_iter_no_change:
            break
    if best_state is not None:
        module.load_state_dict(best_state)
