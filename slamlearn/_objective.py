"""The per-batch training objective of :class:`~slamlearn.SLaMClassifier`.

Each training row carries a target (one-hot truth for labeled rows, the
teacher's label for teacher rows) and per-row tensors prepared once before
training; :class:`BatchObjective` turns a batch of row indices into the mean
loss the optimiser minimises. Labeled rows always use the base loss on the
student's prediction; ``method`` decides how teacher rows are used.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from . import margins
from .losses import slam_loss
from .mixing import mix_coefficients
from .objectives import VIDHead, backward_corrected_loss, base_loss, ups_loss
from .students import logits_and_embedding


@dataclass
class RowData:
    """Per-row tensors on the training device (``n`` rows, ``L`` classes)."""

    X: torch.Tensor
    target: torch.Tensor          # (n, L)
    alpha: torch.Tensor           # (n,) 1 for labeled rows (and every row unless SLaM mixes)
    k: torch.Tensor               # (n,) k(x); 2 where unused
    is_teacher: torch.Tensor      # (n,) bool
    mask: torch.Tensor | None = None      # (n, L) bool top-k masks, when precomputed
    scores: torch.Tensor | None = None    # (n, L) teacher probabilities, to build masks per batch
    weight: torch.Tensor | None = None    # (n,) sample weight x fidelity weight
    positive: torch.Tensor | None = None  # (n, L) UPS labels
    negative: torch.Tensor | None = None
    features: torch.Tensor | None = None  # (n, D) teacher features for VID


@dataclass
class ObjectiveConfig:
    method: str
    base: str = "ce"
    base_kw: dict | None = None
    normalize: bool = False
    temperature_labeled: float = 1.0
    temperature_teacher: float = 1.0
    transition: torch.Tensor | None = None      # forward: T, (L, L)
    transition_inv: torch.Tensor | None = None  # backward: T^{-1}
    vid_weight: float = 0.0


class BatchObjective:
    """Mean loss of a batch of rows, for :func:`slamlearn._training.train`."""

    def __init__(self, module: nn.Module, data: RowData, rows: torch.Tensor, cfg: ObjectiveConfig,
                 vid_head: VIDHead | None = None):
        self.module, self.data, self.rows, self.cfg, self.vid_head = module, data, rows, cfg, vid_head
        self.tempered = cfg.temperature_labeled != 1.0 or cfg.temperature_teacher != 1.0

    def _mask(self, i: torch.Tensor) -> torch.Tensor:
        d = self.data
        return d.mask[i] if d.mask is not None else margins.topk_mask_torch(d.scores[i], d.k[i])

    def __call__(self, idx: torch.Tensor) -> torch.Tensor:
        d, cfg = self.data, self.cfg
        i = self.rows[idx]
        x = d.X[i]
        emb = None
        if cfg.vid_weight > 0:
            logits, emb = logits_and_embedding(self.module, x)
        else:
            logits = self.module(x)
        z = logits.float()
        teach = d.is_teacher[i]
        scale = None
        if self.tempered:
            # Hinton et al.: logits over T, loss times T^2 to keep gradient scale
            temp = torch.where(teach, cfg.temperature_teacher, cfg.temperature_labeled).to(z.dtype)
            z = z / temp[:, None]
            scale = temp * temp
        target = d.target[i]
        kw = cfg.base_kw or {}
        if cfg.method in ("slam", "vanilla", "weighted"):
            # alpha = 1 (so plain base loss) on labeled rows and for vanilla/weighted
            if cfg.base == "ce":
                row = slam_loss(z, target, d.alpha[i], self._mask(i), d.k[i] if cfg.normalize else None,
                                normalize=cfg.normalize, reduction="none")
            else:
                c, dd = mix_coefficients(d.alpha[i], self._mask(i).to(z.dtype),
                                         d.k[i].to(z.dtype) if cfg.normalize else None, normalize=cfg.normalize)
                row = base_loss(c * torch.softmax(z, 1) + dd, target, cfg.base, **kw)
        else:
            f = torch.softmax(z, 1)
            plain = base_loss(f, target, cfg.base, **kw)
            if cfg.method == "forward":
                noisy = base_loss(f @ cfg.transition, target, cfg.base, **kw)
            elif cfg.method == "backward":
                noisy = backward_corrected_loss(f, target, cfg.transition_inv, cfg.base, **kw)
            elif cfg.method == "ups":
                noisy = ups_loss(f, d.positive[i], d.negative[i])
            else:  # validated by the estimator
                raise ValueError(f"unknown method {cfg.method!r}")
            row = torch.where(teach, noisy, plain)
        if scale is not None:
            row = row * scale
        if d.weight is not None:
            row = row * d.weight[i]
        loss = row.mean()
        if emb is not None:
            loss = loss + cfg.vid_weight * self.vid_head(emb.flatten(1).float(), d.features[i]).mean()
        return loss
