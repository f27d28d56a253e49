"""Student networks and how an estimator builds one from its parameters.

A student is any ``torch.nn.Module`` mapping a batch of inputs to logits of
shape (batch, n_classes). Built-in students also expose ``embed(x)``, the
representation before the last layer, and ``forward_with_embedding(x)``
(both at once), used by feature-matching baselines (VID).
"""

from __future__ import annotations

import inspect
from typing import Callable

import torch
from torch import nn

__all__ = ["ConvNet", "MLP", "SoftmaxRegression", "build_student", "logits_and_embedding"]

_ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh, "elu": nn.ELU, "silu": nn.SiLU}


def _activation(name: str) -> nn.Module:
    try:
        return _ACTIVATIONS[name]()
    except KeyError:
        raise ValueError(f"activation must be one of {sorted(_ACTIVATIONS)}; got {name!r}") from None


class SoftmaxRegression(nn.Module):
    """Multinomial logistic regression: one linear layer on flattened inputs."""

    def __init__(self, n_features: int, n_classes: int):
        super().__init__()
        self.linear = nn.Linear(n_features, n_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)

    def forward_with_embedding(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        e = self.embed(x)
        return self.linear(e), e

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.embed(x))


class MLP(nn.Module):
    """Fully connected network on flattened inputs.

    Parameters
    ----------
    n_features, n_classes : int
    hidden_layer_sizes : tuple of int, default=(128,)
    activation : {"relu", "gelu", "tanh", "elu", "silu"}, default="relu"
    dropout : float, default=0.0
        Dropout after each hidden activation.
    """

    def __init__(self, n_features: int, n_classes: int, hidden_layer_sizes=(128,), activation: str = "relu",
                 dropout: float = 0.0):
        super().__init__()
        if isinstance(hidden_layer_sizes, int):
            hidden_layer_sizes = (hidden_layer_sizes,)
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1); got {dropout}")
        layers: list[nn.Module] = []
        width = n_features
        for h in hidden_layer_sizes:
            if int(h) < 1:
                raise ValueError(f"hidden_layer_sizes must hold positive ints; got {hidden_layer_sizes}")
            layers += [nn.Linear(width, int(h)), _activation(activation)]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = int(h)
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(width, n_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x.flatten(1))

    def forward_with_embedding(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        e = self.embed(x)
        return self.head(e), e

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(x))


class ConvNet(nn.Module):
    """A small convolutional network for (batch, channels, height, width) images.

    Blocks of 3x3 convolution, batch norm, ReLU and 2x2 max pooling, then
    global average pooling and a linear head.

    Parameters
    ----------
    in_channels, n_classes : int
    channels : tuple of int, default=(32, 64)
        Width of each convolution block.
    dropout : float, default=0.0
        Dropout before the head.
    """

    def __init__(self, in_channels: int, n_classes: int, channels=(32, 64), dropout: float = 0.0):
        super().__init__()
        blocks: list[nn.Module] = []
        width = in_channels
        for c in channels:
            blocks += [nn.Conv2d(width, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU(), nn.MaxPool2d(2, ceil_mode=True)]
            width = c
        self.features = nn.Sequential(*blocks)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(width, n_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 3:  # (batch, height, width): one channel
            x = x[:, None]
        return self.features(x).mean(dim=(2, 3))

    def forward_with_embedding(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        e = self.embed(x)
        return self.head(self.dropout(e)), e

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.embed(x)))


_BUILTIN = {"linear": SoftmaxRegression, "mlp": MLP, "cnn": ConvNet}


def logits_and_embedding(module: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and the embedding before the last layer, in one pass when the
    module offers ``forward_with_embedding`` (built-in students do), else
    with ``module(x)`` and ``module.embed(x)``."""
    if hasattr(module, "forward_with_embedding"):
        return module.forward_with_embedding(x)
    if hasattr(module, "embed"):
        return module(x), module.embed(x)
    raise TypeError(f"{type(module).__name__} exposes no embedding: feature-matching (vid_weight > 0) needs a "
                    "student with embed(x) or forward_with_embedding(x)")


def build_student(student, input_shape: tuple[int, ...], n_classes: int, module_kwargs: dict) -> nn.Module:
    """Instantiate a student.

    Parameters
    ----------
    student : {"linear", "mlp", "cnn"}, nn.Module class or callable
        Built-in name, or a class / factory returning an ``nn.Module``.
    input_shape : tuple of int
        Shape of one input (without the batch dimension).
    n_classes : int
    module_kwargs : dict
        Keyword arguments for the constructor (the estimator's ``module__*``
        parameters). For any constructor that takes ``n_features`` /
        ``in_channels`` / ``n_classes`` and was not given them, they are
        filled in from the data.
    """
    if isinstance(student, nn.Module):
        raise TypeError(
            "student must be a name, an nn.Module class or a factory, not a module instance "
            "(an instance could not be re-initialised by clone or refit)"
        )
    if isinstance(student, str):
        if student not in _BUILTIN:
            raise ValueError(f"student must be one of {sorted(_BUILTIN)}, an nn.Module class or a callable; "
                             f"got {student!r}")
        factory: Callable = _BUILTIN[student]
    elif callable(student):
        factory = student
    else:
        raise TypeError(f"student must be a name, an nn.Module class or a callable; got {type(student).__name__}")
    kwargs = dict(module_kwargs)
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        params = {}
    n_features = 1
    for s in input_shape:
        n_features *= int(s)
    fill = {"n_features": n_features, "in_channels": int(input_shape[0]) if len(input_shape) > 1 else 1,
            "n_classes": n_classes}
    for name, value in fill.items():
        if name in params and name not in kwargs:
            kwargs[name] = value
    try:
        module = factory(**kwargs)
    except TypeError as exc:
        raise TypeError(f"could not build the student {getattr(factory, '__name__', factory)!r} with "
                        f"module__ parameters {sorted(module_kwargs)}: {exc}") from exc
    if not isinstance(module, nn.Module):
        raise TypeError(f"student factory must return a torch.nn.Module; got {type(module).__name__}")
    return module
