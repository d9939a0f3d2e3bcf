"""The built-in trainer: one loop for single-process and DDP runs, on any backend.

Determinism is a feature: the epoch permutation is a pure function of
``(seed, epoch)``, every RNG state is checkpointed, and a resumed run continues
bit-identically to an uninterrupted one (same seed, same thread count).

The hot loop does only what a hand-written PyTorch loop does (forward, loss,
backward, step) plus one tensor add for the running loss; metrics are
computed once per epoch in eval mode.
"""

from __future__ import annotations

import copy
import math
import random
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from cloudnn.runtime import checkpoint as ckpt
from cloudnn.runtime.context import RuntimeContext
from cloudnn.runtime.events import EXIT_PREEMPTED, emit
from cloudnn.runtime.models import predict_batches

if TYPE_CHECKING:
    from cloudnn.runtime.data import Dataset
    from cloudnn.spec import Spec

__all__ = ["TrainResult", "emit", "predict_batches", "train"]

#: rows used to measure the training metric each epoch (eval mode, no dropout)
TRAIN_METRIC_ROWS = 2048


@dataclass
class TrainResult:
    metrics: dict[str, Any]
    history: list[dict[str, Any]]
    model_dir: Path
    preempted: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


class _Preemption:
    """SIGTERM sets a flag; the loop saves a checkpoint at the next step boundary."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None

    def __enter__(self) -> _Preemption:
        if hasattr(signal, "SIGTERM"):
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        self.requested = True

    def __exit__(self, *exc: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)


def seed_everything(seed: int, *, deterministic: bool) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        if torch.backends.cudnn.is_available():
            torch.backends.cudnn.benchmark = False
            torch.backends.cudnn.deterministic = True


def _rng_state() -> dict[str, Any]:
    # numpy's state as a tensor and numbers: checkpoints load weights_only
    numpy_state: Any = np.random.get_state()
    name, keys, pos, has_gauss, cached = numpy_state
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": (
            name,
            torch.from_numpy(np.asarray(keys).astype(np.int64)),
            int(pos),
            int(has_gauss),
            float(cached),
        ),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def pick_device(spec: Spec, ctx: RuntimeContext) -> torch.device:
    choice = spec.providers.local.device if ctx.platform == "local" else "auto"
    if choice == "cpu" or not torch.cuda.is_available():
        if choice == "cuda":
            raise RuntimeError("providers.local.device is 'cuda' but no GPU is visible")
        return torch.device("cpu")
    return torch.device("cuda", ctx.local_rank % torch.cuda.device_count())


def build_optimizer(spec: Spec, params: Any) -> torch.optim.Optimizer:
    o = spec.train.optimizer
    if o.name == "adam":
        return torch.optim.Adam(params, lr=o.lr, weight_decay=o.weight_decay)
    if o.name == "adamw":
        return torch.optim.AdamW(params, lr=o.lr, weight_decay=o.weight_decay)
    if o.name == "sgd":
        return torch.optim.SGD(
            params, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay
        )
    return torch.optim.RMSprop(
        params, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay
    )


def build_scheduler(spec: Spec, optimizer: torch.optim.Optimizer) -> Any:
    s = spec.train.scheduler
    sched: Any = None
    if s.name == "step":
        sched = torch.optim.lr_scheduler.StepLR(optimizer, s.step_size, gamma=s.gamma)
    elif s.name == "cosine":
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(
            optimizer, T_max=max(1, spec.train.epochs - s.warmup_epochs)
        )
    elif s.name == "exponential":
        sched = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=s.gamma)
    elif s.name == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, factor=s.gamma, patience=s.patience
        )
    if s.warmup_epochs:
        warm = torch.optim.lr_scheduler.LinearLR(
            optimizer,
            start_factor=1.0 / (s.warmup_epochs + 1),
            total_iters=s.warmup_epochs,
        )
        if sched is None:
            return warm
        return torch.optim.lr_scheduler.SequentialLR(
            optimizer, [warm, sched], milestones=[s.warmup_epochs]
        )
    return sched


def build_loss(spec: Spec) -> nn.Module:
    name = spec.train.loss
    if name == "auto":
        name = "cross_entropy" if spec.task == "classification" else "mse"
    if name == "cross_entropy":
        return nn.CrossEntropyLoss(label_smoothing=spec.train.label_smoothing)
    return {"mse": nn.MSELoss(), "mae": nn.L1Loss(), "huber": nn.HuberLoss()}[name]


def _adapt_output(out: torch.Tensor, y: torch.Tensor, task: str) -> torch.Tensor:
    # regression with a single target: the model emits (N, 1), labels are (N,)
    if task == "regression" and y.dim() == 1 and out.dim() == 2 and out.shape[1] == 1:
        return out[:, 0]
    return out


def epoch_permutation(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The sample order of ``epoch``: a pure function, so resume needs no state."""
    g = torch.Generator().manual_seed((seed * 1_000_003 + epoch) % 2**63)
    return torch.randperm(n, generator=g)


def _metric(task: str, out: torch.Tensor, y: torch.Tensor) -> float:
    if len(y) == 0:
        return float("nan")
    if task == "classification":
        return float((out.argmax(1) == y).float().mean())
    pred = _adapt_output(out, y, task)
    ss_res = float(((y - pred) ** 2).sum())
    ss_tot = float(((y - y.mean(0)) ** 2).sum())
    return 1.0 - ss_res / ss_tot if ss_tot > 0 else 0.0


def _to_tensors(ds: Dataset, task: str) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.from_numpy(np.ascontiguousarray(ds.x))
    y = torch.from_numpy(np.ascontiguousarray(ds.y))
    y = y.long() if task == "classification" else y.float()
    if x.dtype == torch.float64:
        x = x.float()
    return x, y


class _Distributed:
    """Thin wrapper over torch.distributed that is a no-op for one process."""

    def __init__(self, ctx: RuntimeContext, device: torch.device) -> None:
        self.rank = ctx.rank
        self.world = ctx.world_size
        self.enabled = self.world > 1
        self.device = device
        if self.enabled and not torch.distributed.is_initialized():
            backend = "nccl" if device.type == "cuda" else "gloo"
            torch.distributed.init_process_group(
                backend=backend, rank=self.rank, world_size=self.world
            )

    def mean(self, value: torch.Tensor) -> torch.Tensor:
        if self.enabled:
            value = value.to(self.device, copy=True)
            torch.distributed.all_reduce(value)
            value /= self.world
        return value

    def any_flag(self, flag: bool) -> bool:
        if not self.enabled:
            return flag
        t = torch.tensor([1.0 if flag else 0.0], device=self.device)
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
        return bool(t.item())

    def barrier(self) -> None:
        if self.enabled:
            torch.distributed.barrier()

    def close(self) -> None:
        if self.enabled and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def train(spec: Spec, ctx: RuntimeContext, *, resume: bool = True) -> TrainResult:
    """Train ``spec``'s built-in or module model under ``ctx``; write the model dir."""
    from cloudnn.runtime.data import load_datasets
    from cloudnn.runtime.models import build_model

    t_start = time.time()
    cfg = spec.train
    seed_everything(cfg.seed, deterministic=cfg.deterministic)
    device = pick_device(spec, ctx)
    dist = _Distributed(ctx, device)
    is_main = dist.rank == 0

    input_shape = getattr(spec.model, "input_shape", None)
    train_ds, val_ds, test_ds, pre = load_datasets(
        spec.data, spec.task, seed=spec.data.split.seed, input_shape=input_shape
    )
    x_tr, y_tr = _to_tensors(train_ds, spec.task)
    x_va, y_va = _to_tensors(val_ds, spec.task)
    if device.type != "cpu":
        x_tr, y_tr = x_tr.to(device), y_tr.to(device)

    # model init draws from the torch RNG: reseed so every rank starts identical
    torch.manual_seed(cfg.seed)
    model = build_model(spec.model, pre, num_outputs=pre.num_outputs).to(device)
    net: nn.Module = model
    if dist.enabled:
        net = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    optimizer = build_optimizer(spec, net.parameters())
    scheduler = build_scheduler(spec, optimizer)
    loss_fn = build_loss(spec)

    if is_main:
        emit(
            "start",
            run_id=ctx.run_id,
            epochs=cfg.epochs,
            train_rows=len(train_ds),
            validation_rows=len(val_ds),
            test_rows=len(test_ds),
            parameters=sum(p.numel() for p in model.parameters()),
            device=str(device),
            world_size=dist.world,
        )

    # ---- resume -----------------------------------------------------------
    start_epoch, start_step = 0, 0
    history: list[dict[str, Any]] = []
    best: dict[str, Any] = {"value": math.inf, "epoch": -1, "state": None, "bad": 0}
    partial = {"loss_sum": 0.0, "steps": 0}
    latest = ckpt.latest_checkpoint(ctx.checkpoint_dir) if resume else None
    if latest is not None:
        state = ckpt.load_checkpoint(latest)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if scheduler is not None and state.get("scheduler") is not None:
            scheduler.load_state_dict(state["scheduler"])
        _set_rng_state(state["rng"])
        start_epoch, start_step = state["epoch"], state["step"]
        history = state["history"]
        best = state["best"]
        partial = state["partial"]
        if is_main:
            emit("resume", checkpoint=latest.name, epoch=start_epoch, step=start_step)

    def snapshot(epoch: int, step: int, loss_sum: float, steps: int) -> dict[str, Any]:
        return {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict() if scheduler is not None else None,
            "rng": _rng_state(),
            "epoch": epoch,
            "step": step,
            "history": history,
            "best": best,
            "partial": {"loss_sum": loss_sum, "steps": steps},
            "spec_hash": spec.spec_hash(),
        }

    n = len(x_tr)
    per_rank = n // dist.world
    # train.batch_size is the global batch: each of W ranks takes 1/W of it,
    # so DDP takes the same optimiser steps as one process would
    bs = max(1, cfg.batch_size // dist.world)
    steps_per_epoch = max(1, math.ceil(per_rank / bs))
    metric_rows = epoch_permutation(n, cfg.seed, -1)[:TRAIN_METRIC_ROWS]
    patience = cfg.early_stopping
    preempted = False
    stopped_early = False

    # decided once, outside the hot loop
    squeeze = spec.task == "regression" and y_tr.dim() == 1
    on_cpu = device.type == "cpu"
    clip = cfg.grad_clip

    with _Preemption() as preemption:
        net.train()
        for epoch in range(start_epoch, cfg.epochs):
            t_epoch = time.perf_counter()
            perm = epoch_permutation(n, cfg.seed, epoch)[: per_rank * dist.world]
            mine = perm[dist.rank :: dist.world]
            if device.type != "cpu":
                mine = mine.to(device)
            first = start_step if epoch == start_epoch else 0
            # CPU: a float is the cheapest running sum; on a GPU keep a tensor
            # so the loop never waits for the device
            loss_acc: Any = 0.0 if on_cpu else torch.zeros((), device=device)
            done_before = int(partial["steps"]) if epoch == start_epoch else 0
            loss_before = partial["loss_sum"] if epoch == start_epoch else 0.0
            step = first
            for step in range(first, steps_per_epoch):
                # DDP ranks must stop at the same step, so they only agree on
                # preemption at epoch boundaries (one all-reduce per epoch)
                if preemption.requested and not dist.enabled:
                    break
                idx = mine[step * bs : (step + 1) * bs]
                xb, yb = x_tr[idx], y_tr[idx]
                optimizer.zero_grad(set_to_none=True)
                out = net(xb)
                if squeeze:
                    out = out[:, 0]
                loss = loss_fn(out, yb)
                loss.backward()
                if clip is not None:
                    nn.utils.clip_grad_norm_(net.parameters(), clip)
                optimizer.step()
                loss_acc += loss.item() if on_cpu else loss.detach()
            else:
                step = steps_per_epoch
            if preemption.requested and not dist.enabled:
                steps_done = done_before + (step - first)
                loss_total = loss_before + float(loss_acc)
                path = ckpt.save_checkpoint(
                    ctx.checkpoint_dir,
                    snapshot(epoch, step, loss_total, steps_done),
                    epoch=epoch,
                    step=step,
                    keep=cfg.checkpoint.keep,
                )
                if is_main:
                    emit("preempted", epoch=epoch, step=step, checkpoint=path.name)
                preempted = True
                break

            steps_done = done_before + (steps_per_epoch - first)
            train_loss = float(
                dist.mean(
                    torch.tensor((loss_before + float(loss_acc)) / max(1, steps_done))
                )
            )
            epoch_seconds = time.perf_counter() - t_epoch
            row = _epoch_row(
                spec,
                model,
                loss_fn,
                epoch,
                train_loss,
                x_tr,
                y_tr,
                metric_rows,
                x_va,
                y_va,
            )
            row["seconds"] = round(epoch_seconds, 4)
            row["steps"] = steps_done
            row["lr"] = optimizer.param_groups[0]["lr"]
            history.append(row)

            if scheduler is not None:
                if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                    scheduler.step(
                        row["val_loss"] if row["val_loss"] is not None else train_loss
                    )
                else:
                    scheduler.step()

            if patience is not None:
                value = _monitored(row, patience.monitor, spec.task)
                if value < best["value"] - patience.min_delta:
                    best = {
                        "value": value,
                        "epoch": epoch,
                        "state": copy.deepcopy(model.state_dict())
                        if patience.restore_best
                        else None,
                        "bad": 0,
                    }
                else:
                    best["bad"] += 1
                if best["bad"] >= patience.patience:
                    stopped_early = True

            if is_main:
                emit("epoch", total=cfg.epochs, **row)
            last_epoch = epoch + 1 == cfg.epochs or stopped_early
            stop_now = dist.any_flag(preemption.requested)
            if stop_now or (
                cfg.checkpoint.enabled
                and ((epoch + 1) % cfg.checkpoint.every_epochs == 0 or last_epoch)
            ):
                if is_main:
                    ckpt.save_checkpoint(
                        ctx.checkpoint_dir,
                        snapshot(epoch + 1, 0, 0.0, 0),
                        epoch=epoch + 1,
                        step=0,
                        keep=cfg.checkpoint.keep,
                    )
                dist.barrier()
            if stop_now and not last_epoch:
                if is_main:
                    emit("preempted", epoch=epoch + 1, step=0)
                preempted = True
                break
            if stopped_early:
                if is_main:
                    emit("early_stop", epoch=epoch, best_epoch=best["epoch"])
                break

    if preempted:
        dist.close()
        return TrainResult(
            metrics={}, history=history, model_dir=ctx.model_dir, preempted=True
        )

    restored = (
        patience is not None and patience.restore_best and best.get("state") is not None
    )
    if restored:
        model.load_state_dict(best["state"])

    result_metrics: dict[str, Any] = {}
    if is_main:
        from cloudnn.runtime.report import finish_run

        result_metrics = finish_run(
            spec=spec,
            ctx=ctx,
            model=model,
            pre=pre,
            history=history,
            datasets={"train": train_ds, "validation": val_ds, "test": test_ds},
            extra={
                "stopped_early": stopped_early,
                "best_epoch": best["epoch"] + 1 if best["epoch"] >= 0 else None,
                "restored_best": bool(restored),
                "epochs_run": len(history),
                "world_size": dist.world,
                "device": str(device),
                "train_seconds": round(time.time() - t_start, 3),
                "imputed": pre.extra.get("imputed"),
            },
        )
    dist.barrier()
    dist.close()
    return TrainResult(metrics=result_metrics, history=history, model_dir=ctx.model_dir)


def _monitored(row: dict[str, Any], monitor: str, task: str) -> float:
    if monitor == "val_metric" and row.get("val_metric") is not None:
        return -float(row["val_metric"])  # higher is better: minimise the negative
    value = row.get("val_loss")
    return float(value if value is not None else row["train_loss"])


def _epoch_row(
    spec: Spec,
    model: nn.Module,
    loss_fn: nn.Module,
    epoch: int,
    train_loss: float,
    x_tr: torch.Tensor,
    y_tr: torch.Tensor,
    metric_rows: torch.Tensor,
    x_va: torch.Tensor,
    y_va: torch.Tensor,
) -> dict[str, Any]:
    sub = metric_rows.to(x_tr.device)
    out_tr = predict_batches(model, x_tr[sub])
    row: dict[str, Any] = {
        "epoch": epoch + 1,
        "train_loss": train_loss,
        "train_metric": _metric(spec.task, out_tr, y_tr[sub].cpu()),
        "val_loss": None,
        "val_metric": None,
    }
    if len(x_va):
        out_va = predict_batches(model, x_va)
        with torch.no_grad():
            row["val_loss"] = float(
                loss_fn(_adapt_output(out_va, y_va, spec.task), y_va)
            )
        row["val_metric"] = _metric(spec.task, out_va, y_va)
    return row


def main_exit(result: TrainResult) -> int:
    return EXIT_PREEMPTED if result.preempted else 0
