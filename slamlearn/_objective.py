"""Rows, batches and the per-batch objective of :class:`~slamlearn.SLaMClassifier`.

* :class:`RowStore` holds the raw per-row inputs -- as tensors on the training
  device when they fit in memory, or as host arrays / memory maps / a torch
  ``Dataset`` when they do not -- and gathers the raw rows of a batch.
* :func:`prepare_batch` turns raw rows into what the loss needs, on the
  training device: targets (one-hot truth for labeled rows; the teacher's
  label, tempered or made hard, for teacher rows), top-k masks, UPS labels,
  importance weights.
* :class:`BatchObjective` returns the per-row loss of a batch. Labeled rows
  always get the base loss on the student's prediction; ``method`` decides
  how teacher rows are used.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

import numpy as np
import torch
from torch import nn

from . import margins
from .losses import slam_loss
from .mixing import mix_coefficients
from .sparse import TopKProba
from .objectives import backward_corrected_loss, base_loss, importance_weights, temper, ups_loss, ups_selection

__all__ = ["BatchObjective", "ObjectiveConfig", "RowBatch", "RowStore", "prepare_batch"]


@dataclass
class RowBatch:
    """One batch, ready for the loss (all tensors on one device)."""

    X: torch.Tensor
    labels: torch.Tensor            # (B,) encoded true labels, -1 for teacher rows
    alpha: torch.Tensor             # (B,) 1 unless SLaM mixes this row
    k: torch.Tensor                 # (B,)
    teacher: torch.Tensor | None = None      # (B, L) teacher probabilities (zeros on labeled rows)
    mask: torch.Tensor | None = None         # (B, L) bool, when precomputed
    weight: torch.Tensor | None = None       # (B,)
    uncertainty: torch.Tensor | None = None  # (B,) or (B, L)
    features: torch.Tensor | None = None     # (B, D)
    # filled in by prepare_batch
    target: torch.Tensor | None = None
    positive: torch.Tensor | None = None
    negative: torch.Tensor | None = None

    @property
    def is_teacher(self) -> torch.Tensor:
        return self.labels < 0

    def to(self, device, non_blocking: bool = False) -> "RowBatch":
        def move(v):
            return v.to(device, non_blocking=non_blocking) if isinstance(v, torch.Tensor) else v

        return RowBatch(**{f.name: move(getattr(self, f.name)) for f in fields(self)})

    def pin_memory(self) -> "RowBatch":  # called by DataLoader(pin_memory=True)
        return RowBatch(**{f.name: (v.pin_memory() if isinstance(v, torch.Tensor) else v)
                           for f in fields(self) for v in [getattr(self, f.name)]})


def _take(store, ids: np.ndarray, dtype=None) -> torch.Tensor:
    """Rows ``ids`` of a tensor, array or memory map, as a tensor (sorted reads
    keep memory-map access sequential; the order is restored after)."""
    if isinstance(store, torch.Tensor):
        return store[torch.as_tensor(ids, device=store.device)]
    if isinstance(store, TopKProba):  # top-m rows: expanded by the missing-mass rule
        t = torch.from_numpy(store.to_dense(np.asarray(ids)))
        return t.to(dtype) if dtype is not None else t
    order = np.argsort(ids, kind="stable")
    rows = np.asarray(store[ids[order]])
    out = np.empty_like(rows)
    out[order] = rows
    t = torch.from_numpy(out)
    return t.to(dtype) if dtype is not None else t


@dataclass
class RowStore:
    """Per-row training inputs (``n`` rows, ``L`` classes).

    ``X`` is a tensor on the device, a host array or memory map, or a torch
    ``Dataset`` whose items are feature tensors (or tuples starting with one).
    ``teacher`` is read only on teacher rows.
    """

    X: object
    labels: object
    alpha: object
    k: object
    teacher: object | None = None
    mask: object | None = None
    weight: object | None = None
    uncertainty: object | None = None
    features: object | None = None
    n_classes: int = 0
    extras: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.labels)

    def _features(self, ids: np.ndarray) -> torch.Tensor:
        X = self.X
        if isinstance(X, (torch.Tensor, np.ndarray)):
            return _take(X, ids, torch.float32)
        items = []
        for i in ids:  # a torch Dataset: one item at a time
            item = X[int(i)]
            if isinstance(item, (tuple, list)):
                item = item[0]
            items.append(torch.as_tensor(item, dtype=torch.float32))
        return torch.stack(items)

    def take(self, ids) -> RowBatch:
        ids = ids.cpu().numpy() if isinstance(ids, torch.Tensor) else np.asarray(ids)
        labels = _take(self.labels, ids)
        teacher = None
        if self.teacher is not None:
            teacher = _take(self.teacher, ids, torch.float32)
            # rows other than teacher rows may hold anything: never let them in
            teacher = torch.where((labels < 0)[:, None], teacher, torch.zeros((), dtype=teacher.dtype,
                                                                               device=teacher.device))
        opt = {name: (_take(getattr(self, name), ids) if getattr(self, name) is not None else None)
               for name in ("mask", "weight", "uncertainty", "features")}
        if opt["features"] is not None:
            opt["features"] = opt["features"].float()
        return RowBatch(X=self._features(ids), labels=labels, alpha=_take(self.alpha, ids),
                        k=_take(self.k, ids), teacher=teacher, **opt)


@dataclass
class ObjectiveConfig:
    method: str
    n_classes: int
    base: str = "ce"
    base_kw: dict | None = None
    normalize: bool = False
    distillation: str = "soft"
    temperature_labeled: float = 1.0
    temperature_teacher: float = 1.0
    transition: torch.Tensor | None = None      # forward: T, (L, L)
    transition_inv: torch.Tensor | None = None  # backward: T^{-1}
    vid_weight: float = 0.0
    ups: dict | None = None                     # UPS thresholds
    # weighted distillation: the frozen pre-trained student and the global scale
    reference: nn.Module | None = None
    importance_scale: float = 1.0
    importance_max_weight: float = 10.0


def raw_importance(reference: nn.Module, batch: RowBatch, cfg: ObjectiveConfig, label: torch.Tensor) -> torch.Tensor:
    """Unscaled importance weights of a batch's teacher labels (see
    :func:`slamlearn.objectives.importance_weights`), from the frozen
    pre-trained student ``reference``."""
    with torch.no_grad():
        student = torch.softmax(reference(batch.X).float(), 1)
    return importance_weights(student, label, batch.alpha, batch.mask.to(student.dtype),
                              batch.k.to(student.dtype) if cfg.normalize else None, normalize=cfg.normalize,
                              max_weight=cfg.importance_max_weight, rescale=False)


def prepare_batch(batch: RowBatch, cfg: ObjectiveConfig) -> RowBatch:
    """Targets, masks and method-specific labels of a batch (on its device)."""
    labels = batch.labels
    teach = labels < 0
    n_classes = cfg.n_classes
    target = torch.zeros(labels.shape[0], n_classes, device=labels.device)
    target[~teach, labels[~teach]] = 1.0
    if batch.teacher is not None and bool(teach.any()):
        P = batch.teacher
        if cfg.distillation == "soft":
            tl = temper(P, cfg.temperature_teacher)
        else:
            tl = torch.nn.functional.one_hot(P.argmax(1), n_classes).to(P.dtype)
        if batch.mask is None:
            batch.mask = margins.topk_mask_torch(P, batch.k).to(P.device) if cfg.method in ("slam", "weighted") \
                else torch.zeros_like(P, dtype=torch.bool)
        if cfg.method == "weighted":
            tl = tl * raw_importance(cfg.reference, batch, cfg, tl) * cfg.importance_scale
        target = torch.where(teach[:, None], tl, target)
        if cfg.method == "ups":
            pos, neg = ups_selection(P, batch.uncertainty, **cfg.ups)
            batch.positive = (pos & teach[:, None]).float()
            batch.negative = (neg & teach[:, None]).float()
    if batch.mask is None:
        batch.mask = torch.zeros(labels.shape[0], n_classes, dtype=torch.bool, device=labels.device)
    batch.target = target
    return batch


class BatchObjective:
    """Per-row loss of a prepared batch, for :func:`slamlearn._training.train`.

    ``model(x, features)`` returns the logits and the per-row VID term (or
    None); ``autocast`` holds ``torch.autocast`` arguments for mixed
    precision, which covers the model only: the loss runs in float32.
    """

    def __init__(self, cfg: ObjectiveConfig, autocast: dict | None = None):
        self.cfg = cfg
        self.tempered = cfg.temperature_labeled != 1.0 or cfg.temperature_teacher != 1.0
        self.autocast = autocast

    def __call__(self, model: nn.Module, batch: RowBatch) -> torch.Tensor:
        cfg = self.cfg
        if self.autocast is not None:
            with torch.autocast(**self.autocast):
                logits, vid = model(batch.X, batch.features)
        else:
            logits, vid = model(batch.X, batch.features)
        z = logits.float()
        teach = batch.is_teacher
        scale = None
        if self.tempered:
            # Hinton et al.: logits over T, loss times T^2 to keep gradient scale
            temp = torch.where(teach, cfg.temperature_teacher, cfg.temperature_labeled).to(z.dtype)
            z = z / temp[:, None]
            scale = temp * temp
        target = batch.target
        kw = cfg.base_kw or {}
        if cfg.method in ("slam", "vanilla", "weighted"):
            # alpha = 1 (so the plain base loss) on labeled rows and for vanilla/weighted
            alpha = batch.alpha if cfg.method == "slam" else torch.ones_like(batch.alpha)
            if cfg.base == "ce":
                row = slam_loss(z, target, alpha, batch.mask, batch.k if cfg.normalize else None,
                                normalize=cfg.normalize, reduction="none")
            else:
                c, d = mix_coefficients(alpha.to(z.dtype), batch.mask.to(z.dtype),
                                        batch.k.to(z.dtype) if cfg.normalize else None, normalize=cfg.normalize)
                row = base_loss(c * torch.softmax(z, 1) + d, target, cfg.base, **kw)
        else:
            f = torch.softmax(z, 1)
            plain = base_loss(f, target, cfg.base, **kw)
            if cfg.method == "forward":
                noisy = base_loss(f @ cfg.transition, target, cfg.base, **kw)
            elif cfg.method == "backward":
                noisy = backward_corrected_loss(f, target, cfg.transition_inv, cfg.base, **kw)
            elif cfg.method == "ups":
                noisy = ups_loss(f, batch.positive, batch.negative)
            else:  # validated by the estimator
                raise ValueError(f"unknown method {cfg.method!r}")
            row = torch.where(teach, noisy, plain)
        if scale is not None:
            row = row * scale
        if batch.weight is not None:
            row = row * batch.weight
        if vid is not None:
            row = row + cfg.vid_weight * vid.float()
        return row
