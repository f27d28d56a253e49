"""The SLaM loss in torch (Equation 2 of the SLaM paper).

``slam_loss(logits, target, alpha, mask)`` is the cross entropy between the
teacher's label ``target`` (soft probabilities, or one-hot for hard
distillation) and the mixed student prediction ``mix(softmax(logits))``
(:mod:`slamlearn.mixing`). Writing ``mix = c * f + d``, it is
``-sum_i y_i log(c_i f_i + d_i)`` per example.

It is a custom autograd function with the analytic gradient: with
``h_i = -y_i c_i f_i / mix_i``, ``dL/dz = h - f * sum(h)``. On CPU, forward
and gradient come from one native pass (``slamlearn._ext._loss``), because
per-operation overhead dominates at training batch sizes; ``slam_loss`` uses
a variant that takes the coefficients in row form (two values per example,
:func:`slamlearn.mixing.mix_row_coefficients`) and the mask, so the dense
coefficient matrices are never built. Elsewhere (GPU, or half precision) the
same computation runs as torch operations.

Numerical safety: where ``d_i = 0`` the log of the mixed probability is
taken as ``log(c_i) + log_softmax(z)_i``, so ``alpha = 1`` gives cross
entropy and tiny student probabilities do not underflow. Elsewhere the mixed
probability is clamped below at :func:`mix_eps` (1e-12 in float64, 1e-30 in
float32, the smallest normal number in half precision) before the log, so
probabilities of 0 or 1 never give NaN or infinity; clamped entries get no
gradient.
"""

from __future__ import annotations

import numpy as np
import torch

from ._ext import _loss
from .mixing import mix_coefficients, mix_row_coefficients

__all__ = ["mix_eps", "slam_loss", "slam_loss_from_coefficients"]

_EPS = {torch.float64: 1e-12, torch.float32: 1e-30}


def mix_eps(dtype: torch.dtype) -> float:
    """Lower clamp of the mixed probability before its log, for ``dtype``."""
    return _EPS.get(dtype, torch.finfo(dtype).tiny)


def _native_ok(*tensors: torch.Tensor) -> bool:
    t0 = tensors[0]
    return (
        t0.device.type == "cpu"
        and t0.dtype in (torch.float32, torch.float64)
        and all(t.dtype == t0.dtype and t.device.type == "cpu" for t in tensors)
    )


def _torch_forward(z, y, c, d, eps):
    """Torch-operations version of the native kernel (same rules)."""
    log_f = torch.log_softmax(z, dim=1)
    f = log_f.exp()
    m = torch.addcmul(d, c, f)
    off = d == 0
    live = torch.where(off, c > eps, m > eps)
    # off the mask mix = c f: log c + log f keeps tiny f exact (and alpha = 1 is CE)
    log_m = torch.where(off & live, c.clamp_min(eps).log() + log_f, m.clamp_min(eps).log())
    loss = -(y * log_m).sum(1)
    h = torch.where(off, -y, -(y * c * f) / m.clamp_min(eps)).masked_fill_(~live, 0.0)
    return loss, torch.addcmul(h, f, h.sum(1, keepdim=True), value=-1.0)


class _AffineSoftmaxXent(torch.autograd.Function):
    """Per-row ``-sum_i y_i log(c_i softmax(z)_i + d_i)``."""

    @staticmethod
    def forward(ctx, logits, target, c, d):
        eps = mix_eps(logits.dtype)
        if _native_ok(logits, target, c, d):
            z, y, cc, dd = (t.detach().contiguous() for t in (logits, target, c, d))
            loss = torch.empty(z.shape[0], dtype=z.dtype)
            grad = torch.empty_like(z)
            _loss.affine_softmax_xent(z.numpy(), y.numpy(), cc.numpy(), dd.numpy(), eps, loss.numpy(), grad.numpy())
        else:
            loss, grad = _torch_forward(logits.detach(), target, c, d, eps)
        ctx.save_for_backward(grad)
        return loss

    @staticmethod
    def backward(ctx, grad_loss):
        (grad,) = ctx.saved_tensors
        return grad * grad_loss[:, None], None, None, None


class _SLaMXent(torch.autograd.Function):
    """SLaM loss from row-structured coefficients (CPU, native): the dense
    ``(c, d)`` matrices are never built, and a mean or weighted sum is taken
    in the same pass."""

    @staticmethod
    def forward(ctx, logits, target, mask, c_off, c_on, d_on, weight, reduction):
        z, y, co, cn, dn = (t.detach().contiguous() for t in (logits, target, c_off, c_on, d_on))
        m = mask.contiguous().numpy().view(np.uint8)
        w = _NO_WEIGHT[z.dtype] if weight is None else weight.detach().to(z.dtype).contiguous().numpy()
        loss = torch.empty(z.shape[0], dtype=z.dtype)
        grad = torch.empty_like(z)
        scale = 1.0 / max(z.shape[0], 1) if reduction == "mean" else 1.0
        total = _loss.slam_xent(z.numpy(), y.numpy(), m, co.numpy(), cn.numpy(), dn.numpy(), w, scale,
                                mix_eps(z.dtype), loss.numpy(), grad.numpy())
        ctx.save_for_backward(grad)
        ctx.per_row = reduction == "none"
        if ctx.per_row:
            # the kernel's gradient rows carry the weights; the output does too
            return loss if weight is None else loss * weight
        return torch.tensor(total, dtype=z.dtype)

    @staticmethod
    def backward(ctx, grad_out):
        (grad,) = ctx.saved_tensors
        g = grad * grad_out[:, None] if ctx.per_row else grad * grad_out
        return g, None, None, None, None, None, None, None


# "no weights" for the kernel: an empty array of the logits' dtype
_NO_WEIGHT = {torch.float32: np.empty(0, dtype=np.float32), torch.float64: np.empty(0, dtype=np.float64)}


def _reduce(per_row: torch.Tensor, sample_weight, reduction: str) -> torch.Tensor:
    if sample_weight is not None:
        per_row = per_row * sample_weight
    if reduction == "none":
        return per_row
    if reduction == "sum":
        return per_row.sum()
    if reduction == "mean":
        return per_row.mean()
    raise ValueError(f"reduction must be 'mean', 'sum' or 'none'; got {reduction!r}")


def slam_loss_from_coefficients(logits, target, c, d, *, sample_weight=None, reduction="mean"):
    """SLaM loss for precomputed mixing coefficients ``(c, d)`` (see
    :func:`slamlearn.mixing.mix_coefficients`).

    Also the generic form: with ``c = 1, d = 0`` it is cross entropy.
    """
    return _reduce(_AffineSoftmaxXent.apply(logits, target, c, d), sample_weight, reduction)


def slam_loss(logits, target, alpha, mask, k=None, *, normalize=False, sample_weight=None, reduction="mean"):
    """Cross entropy between the teacher label and the mixed student prediction.

    Parameters
    ----------
    logits : Tensor of shape (n, L)
        Student logits.
    target : Tensor of shape (n, L)
        Teacher label: soft probabilities, or one-hot for hard distillation.
    alpha : Tensor of shape (n,)
        Teacher accuracy alpha(x) per example.
    mask : Tensor of shape (n, L)
        ``top(ys; k(x))`` per example, bool or float (see
        :func:`slamlearn.margins.topk_mask_torch`).
    k : Tensor of shape (n,), optional
        k(x); needed only with ``normalize=True``.
    normalize : bool, default=False
        Use Equation 1's ``1/(k-1)`` normalisation; the default is the
        un-normalised mixing of Remark B.1 (what the paper's experiments use).
    sample_weight : Tensor of shape (n,), optional
        Per-example weights applied before the reduction.
    reduction : {"mean", "sum", "none"}, default="mean"

    Returns
    -------
    Tensor
        Scalar, or shape (n,) with ``reduction="none"``.
    """
    if logits.ndim != 2 or target.shape != logits.shape or mask.shape != logits.shape:
        raise ValueError(
            f"logits, target and mask must share one (n, L) shape; got {tuple(logits.shape)}, "
            f"{tuple(target.shape)} and {tuple(mask.shape)}"
        )
    if alpha.shape != logits.shape[:1]:
        raise ValueError(f"alpha must have shape ({logits.shape[0]},); got {tuple(alpha.shape)}")
    dtype = logits.dtype
    kk = None if k is None else k.to(dtype)
    alpha = alpha.to(dtype)
    target = target.to(dtype)
    if sample_weight is not None and sample_weight.shape != logits.shape[:1]:
        raise ValueError(f"sample_weight must have shape ({logits.shape[0]},); got {tuple(sample_weight.shape)}")
    # the native path gives no gradient to the weights: differentiable weights take the generic one
    if (_native_ok(logits, target, alpha) and mask.device.type == "cpu"
            and (sample_weight is None or not sample_weight.requires_grad)):
        if mask.dtype != torch.bool:
            mask = mask != 0
        if reduction not in ("mean", "sum", "none"):
            raise ValueError(f"reduction must be 'mean', 'sum' or 'none'; got {reduction!r}")
        c_off, c_on, d_on = mix_row_coefficients(alpha, kk, normalize=normalize)
        return _SLaMXent.apply(logits, target, mask, c_off, c_on, d_on, sample_weight, reduction)
    c, d = mix_coefficients(alpha, mask.to(dtype), kk, normalize=normalize)
    return slam_loss_from_coefficients(logits, target, c, d, sample_weight=sample_weight, reduction=reduction)
