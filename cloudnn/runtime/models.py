"""Built-in models (mlp, cnn, rnn, transformer) and user ``nn.Module`` factories.

Every model maps a batch of preprocessed inputs to raw outputs (N, K): logits
for classification, values for regression.
"""

from __future__ import annotations

import importlib
import inspect
import math
import sys
import warnings
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from cloudnn.errors import SpecError

if TYPE_CHECKING:
    from cloudnn.runtime.data import Preprocessor

__all__ = ["build_model", "predict_batches", "to_torchscript"]

_ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "tanh": nn.Tanh,
    "silu": nn.SiLU,
}


class MLP(nn.Module):
    def __init__(
        self,
        input_dim: int,
        hidden_sizes: list[int],
        num_outputs: int,
        *,
        activation: str = "relu",
        dropout: float = 0.0,
        batch_norm: bool = False,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width = input_dim
        for h in hidden_sizes:
            layers.append(nn.Linear(width, h))
            if batch_norm:
                layers.append(nn.BatchNorm1d(h))
            layers.append(_ACTIVATIONS[activation]())
            if dropout:
                layers.append(nn.Dropout(dropout))
            width = h
        layers.append(nn.Linear(width, num_outputs))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class CNN(nn.Module):
    def __init__(
        self,
        input_shape: tuple[int, int, int],
        channels: list[int],
        num_outputs: int,
        *,
        kernel_size: int = 3,
        hidden_size: int = 128,
        dropout: float = 0.25,
        batch_norm: bool = True,
    ) -> None:
        super().__init__()
        c, h, w = input_shape
        blocks: list[nn.Module] = []
        for out_c in channels:
            # "same" padding; odd kernels as an int, which every exporter handles
            pad: int | str = kernel_size // 2 if kernel_size % 2 else "same"
            blocks.append(nn.Conv2d(c, out_c, kernel_size, padding=pad))
            if batch_norm:
                blocks.append(nn.BatchNorm2d(out_c))
            blocks.append(nn.ReLU())
            if min(h, w) >= 4:  # pool while the feature map stays >= 2x2
                blocks.append(nn.MaxPool2d(2))
                h, w = h // 2, w // 2
            c = out_c
        self.features = nn.Sequential(*blocks)
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Dropout(dropout),
            nn.Linear(c * h * w, hidden_size),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden_size, num_outputs),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class _UniStack(nn.Module):
    """A unidirectional multi-layer LSTM/GRU; right padding cannot reach earlier steps."""

    def __init__(
        self, cell: str, input_size: int, hidden: int, layers: int, dropout: float
    ) -> None:
        super().__init__()
        rnn_cls = nn.LSTM if cell == "lstm" else nn.GRU
        self.rnn = rnn_cls(
            input_size,
            hidden,
            num_layers=layers,
            batch_first=True,
            dropout=dropout if layers > 1 else 0.0,
        )

    def forward(self, x: torch.Tensor, rev: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(x)
        return out


class _BiLayer(nn.Module):
    """One bidirectional layer whose backward pass starts at each sequence's end.

    ``nn.LSTM(bidirectional=True)`` would run the backward direction through
    the right padding first; reversing every sequence within its own length
    (``rev``) keeps padding out of both directions and stays exportable
    (a gather, no packed sequences).
    """

    def __init__(self, cell: str, input_size: int, hidden: int, dropout: float) -> None:
        super().__init__()
        rnn_cls = nn.LSTM if cell == "lstm" else nn.GRU
        self.fwd = rnn_cls(input_size, hidden, batch_first=True)
        self.bwd = rnn_cls(input_size, hidden, batch_first=True)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, rev: torch.Tensor) -> torch.Tensor:
        x = self.drop(x)
        f, _ = self.fwd(x)
        b, _ = self.bwd(x.gather(1, rev.expand(-1, -1, x.shape[2])))
        b = b.gather(
            1, rev.expand(-1, -1, b.shape[2])
        )  # the reversal is its own inverse
        return torch.cat([f, b], dim=2)


class RNN(nn.Module):
    """LSTM/GRU over (N, T, F) sequences, or over token ids with an embedding.

    Token id 0 is right padding: the lengths it implies decide the "last"
    step, the mean's mask, and where the backward direction starts.
    """

    def __init__(
        self,
        num_features: int,
        num_outputs: int,
        *,
        cell: str = "lstm",
        hidden_size: int = 64,
        num_layers: int = 1,
        bidirectional: bool = False,
        dropout: float = 0.0,
        pooling: str = "last",
        vocab_size: int = 0,
        embedding_dim: int = 64,
    ) -> None:
        super().__init__()
        self.text = vocab_size > 0
        self.embed = (
            nn.Embedding(vocab_size, embedding_dim, padding_idx=0)
            if self.text
            else None
        )
        size = embedding_dim if self.text else num_features
        self.hidden_size = hidden_size
        self.bidirectional = bidirectional
        layers: list[nn.Module] = []
        if bidirectional:
            for i in range(num_layers):
                # like nn.LSTM: dropout on the outputs of all but the last layer
                layers.append(
                    _BiLayer(cell, size, hidden_size, dropout if i > 0 else 0.0)
                )
                size = 2 * hidden_size
        else:
            layers.append(_UniStack(cell, size, hidden_size, num_layers, dropout))
        self.layers = nn.ModuleList(layers)
        self.mean_pool = pooling == "mean"
        self.head = nn.Linear(hidden_size * (2 if bidirectional else 1), num_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.embed is not None:
            mask = x != 0
            h = self.embed(x)
        else:
            if x.dim() == 2:  # tabular rows read as a sequence of scalars
                x = x.unsqueeze(-1)
            mask = torch.ones(x.shape[0], x.shape[1], dtype=torch.bool, device=x.device)
            h = x
        lengths = mask.sum(1, keepdim=True).clamp(min=1)  # (N, 1)
        steps = torch.arange(h.shape[1], device=h.device).unsqueeze(0)
        rev = torch.where(steps < lengths, lengths - 1 - steps, steps).unsqueeze(-1)
        for layer in self.layers:
            h = layer(h, rev)
        if self.mean_pool:
            keep = mask.unsqueeze(-1).to(h.dtype)
            pooled = (h * keep).sum(1) / keep.sum(1).clamp(min=1.0)
        else:
            rows = torch.arange(h.shape[0], device=h.device)
            last = h[rows, lengths.squeeze(1) - 1]
            if self.bidirectional:
                # the backward direction has read the whole sequence at step 0
                last = torch.cat(
                    [last[:, : self.hidden_size], h[:, 0, self.hidden_size :]], dim=1
                )
            pooled = last
        return self.head(pooled)


class TransformerClassifier(nn.Module):
    """Transformer encoder over token ids with learned positions; mean or CLS pooling."""

    def __init__(
        self,
        vocab_size: int,
        max_length: int,
        num_outputs: int,
        *,
        d_model: int = 64,
        nhead: int = 4,
        num_layers: int = 2,
        dim_feedforward: int = 128,
        dropout: float = 0.1,
        pooling: str = "mean",
    ) -> None:
        super().__init__()
        self.cls = pooling == "cls"
        self.embed = nn.Embedding(vocab_size, d_model, padding_idx=0)
        self.pos = nn.Parameter(torch.zeros(1, max_length + 1, d_model))
        nn.init.normal_(self.pos, std=0.02)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d_model))
        layer = nn.TransformerEncoderLayer(
            d_model, nhead, dim_feedforward, dropout, batch_first=True
        )
        # the nested-tensor fast path changes numerics between train/eval; keep one path
        self.encoder = nn.TransformerEncoder(
            layer, num_layers, enable_nested_tensor=False
        )
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, num_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pad = x == 0
        h = self.embed(x)
        if self.cls:
            h = torch.cat([self.cls_token.expand(h.shape[0], -1, -1), h], dim=1)
            pad = torch.cat(
                [
                    torch.zeros(pad.shape[0], 1, dtype=torch.bool, device=pad.device),
                    pad,
                ],
                1,
            )
        h = h + self.pos[:, : h.shape[1]]
        # an all-padding row would make attention NaN: let it attend to position 0
        pad = pad & ~(
            pad.all(1, keepdim=True)
            & (torch.arange(pad.shape[1], device=pad.device) == 0)
        )
        h = self.norm(self.encoder(h, src_key_padding_mask=pad))
        if self.cls:
            return self.head(h[:, 0])
        keep = (~pad).unsqueeze(-1).float()
        return self.head((h * keep).sum(1) / keep.sum(1).clamp(min=1.0))


def _vocab_size(pre: Preprocessor) -> int:
    return (max(pre.vocab.values()) + 1) if pre.vocab else 2


def build_model(
    model_spec: Any, pre: Preprocessor, *, num_outputs: int | None = None
) -> nn.Module:
    """Instantiate the model ``model_spec`` describes for data shaped like ``pre``."""
    k = num_outputs or pre.num_outputs
    shape = tuple(pre.input_shape)
    kind = model_spec.type
    if kind == "mlp":
        if pre.kind == "text":
            raise SpecError(
                "model.type",
                "mlp does not take text",
                hint="use rnn or transformer for data.text",
            )
        return MLP(
            int(math.prod(shape)),
            list(model_spec.hidden_sizes),
            k,
            activation=model_spec.activation,
            dropout=model_spec.dropout,
            batch_norm=model_spec.batch_norm,
        )
    if kind == "cnn":
        if len(shape) != 3:
            raise SpecError(
                "model.input_shape",
                f"cnn needs images (C, H, W); the data has rows of shape {list(shape)}",
                hint="set model.input_shape, e.g. [1, 8, 8] for 64 pixel columns",
            )
        return CNN(
            shape,
            list(model_spec.channels),
            k,
            kernel_size=model_spec.kernel_size,
            hidden_size=model_spec.hidden_size,
            dropout=model_spec.dropout,
            batch_norm=model_spec.batch_norm,
        )
    if kind == "rnn":
        text = pre.kind == "text"
        return RNN(
            1 if len(shape) < 2 else int(shape[-1]),
            k,
            cell=model_spec.cell,
            hidden_size=model_spec.hidden_size,
            num_layers=model_spec.num_layers,
            bidirectional=model_spec.bidirectional,
            dropout=model_spec.dropout,
            pooling=model_spec.pooling,
            vocab_size=_vocab_size(pre) if text else 0,
            embedding_dim=model_spec.embedding_dim,
        )
    if kind == "transformer":
        if pre.kind != "text":
            raise SpecError(
                "model.type", "transformer takes token ids", hint="set data.text"
            )
        return TransformerClassifier(
            _vocab_size(pre),
            int(pre.max_length or shape[0]),
            k,
            d_model=model_spec.d_model,
            nhead=model_spec.nhead,
            num_layers=model_spec.num_layers,
            dim_feedforward=model_spec.dim_feedforward,
            dropout=model_spec.dropout,
            pooling=model_spec.pooling,
        )
    if kind == "module":
        return _user_module(model_spec, pre, k)
    raise SpecError(
        "model.type",
        f"cannot build a model of type {kind!r}",
        hint="use mlp|cnn|rnn|transformer",
    )


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _user_module(model_spec: Any, pre: Preprocessor, k: int) -> nn.Module:
    """Import ``pkg.mod:factory`` and call it with the keywords it accepts."""
    module_name, _, attr = model_spec.module.partition(":")
    if model_spec.path:
        path = str(model_spec.path)
        if path not in sys.path:
            sys.path.insert(0, path)
        importlib.invalidate_caches()  # the folder may have been written just now
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # ImportError, but also errors inside the module
        raise SpecError(
            "model.module",
            f"cannot import {module_name}: {_one_line(exc)}",
            hint="check the module path, and that the spec's folder (or model.path) "
            "holds it",
        ) from exc
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise SpecError(
            "model.module",
            f"{module_name} has no callable {attr!r}",
            hint=f"define `def {attr}(...)` returning an nn.Module in {module_name}",
        )
    params = dict(model_spec.params)
    offered = {
        "input_dim": int(math.prod(pre.input_shape)),
        "input_shape": tuple(int(d) for d in pre.input_shape),
        "num_outputs": k,
    }
    try:
        signature: inspect.Signature | None = inspect.signature(factory)
    except (TypeError, ValueError):  # builtins / C extensions: offer nothing
        signature = None
    if signature is not None:
        accepted = signature.parameters
        takes_kwargs = any(
            p.kind is inspect.Parameter.VAR_KEYWORD for p in accepted.values()
        )
        kwargs = {
            n: v
            for n, v in offered.items()
            if takes_kwargs
            or (
                n in accepted
                and accepted[n].kind is not inspect.Parameter.POSITIONAL_ONLY
            )
        }
        kwargs.update(params)  # model.params wins over what we offer
        try:
            signature.bind(**kwargs)
        except TypeError as exc:
            raise SpecError(
                "model.params",
                f"{model_spec.module}{signature} cannot take these arguments: {exc}",
                hint="match model.params to the factory's parameters",
            ) from None
    else:
        kwargs = params
    model = factory(**kwargs)
    if not isinstance(model, nn.Module):
        raise SpecError(
            "model.module",
            f"{model_spec.module} returned {type(model).__name__}, "
            "not a torch.nn.Module",
            hint="make the factory return an nn.Module instance",
        )
    return model


def to_torchscript(model: nn.Module, example: torch.Tensor) -> torch.jit.ScriptModule:
    """Script ``model`` (or trace it with ``example`` when scripting fails).

    The model is put in eval mode. Scripting keeps the batch size (and any
    data-dependent branches) dynamic; tracing is the fallback for modules
    with Python-only constructs.
    """
    model = model.eval()
    with warnings.catch_warnings():
        # torch >= 2.10 marks TorchScript deprecated; it is still what
        # TorchServe-style runtimes load, so keep the noise out of the logs
        warnings.simplefilter("ignore")
        try:
            return torch.jit.script(model)
        except Exception:
            with torch.no_grad():
                return torch.jit.trace(model, example, check_trace=False)


@torch.no_grad()
def predict_batches(
    model: nn.Module, x: torch.Tensor, *, batch_size: int = 1024
) -> torch.Tensor:
    """Eval-mode forward over ``x`` in batches; returns raw outputs on the CPU."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    outs = [
        model(x[i : i + batch_size].to(device)).cpu()
        for i in range(0, len(x), batch_size)
    ]
    model.train(was_training)
    if not outs:
        return torch.empty(0)
    return torch.cat(outs)
