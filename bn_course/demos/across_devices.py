"""Experiments and figures for notebook 10 (batch norm across devices).

Synchronized batch norm on a real ``torch.distributed`` group of worker processes on this
computer (gloo backend, see ``bn_course.distributed``): each worker holds part of every
batch, and the statistics of the whole batch are combined with the student's
``merge_batch_stats`` over the group. Then data-parallel training with per-worker BN and
with synced BN, and batch renormalization for small or class-sorted batches. Everything is
measured when it runs (seeded). Under nbgrader every function that starts processes,
trains or draws returns None without doing anything.
"""

import functools
from dataclasses import dataclass

import matplotlib.pyplot as plt
import numpy as np

from bn_course.demos._guard import yours_or_none, yours_or_ours
from bn_course.numerics import relative_error
from bn_course.widgets import grading


def _merge_or_ours(merge_batch_stats):
    from bn_course.reference.numpy import merge_batch_stats as ours

    return yours_or_ours("merge_batch_stats", merge_batch_stats, ours)


# --- 1. why the variances cannot just be averaged ----------------------------------------

def two_workers_figure(seed=0):
    """Two workers whose halves of a batch sit at different means: the average of their
    variances misses the spread between them. None under nbgrader."""
    if grading():
        return None
    rng = np.random.default_rng(seed)
    halves = [rng.normal(-1.5, 0.6, 6), rng.normal(1.5, 0.6, 10)]
    whole = np.concatenate(halves)
    fig, ax = plt.subplots(figsize=(8, 2.6))
    for i, (half, colour) in enumerate(zip(halves, ("C0", "C1"))):
        ax.plot(half, np.full_like(half, i), "o", color=colour,
                label=f"worker {i}: {len(half)} values, variance {half.var():.2f}")
    ax.plot(whole, np.full_like(whole, 2), "o", color="0.3",
            label=f"the whole batch: variance {whole.var():.2f}")
    ax.set(yticks=[0, 1, 2], yticklabels=["worker 0", "worker 1", "whole"], ylim=(-0.7, 2.7),
           title=f"Average of the workers' variances: "
                 f"{np.mean([h.var() for h in halves]):.2f}")
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    plt.close(fig)  # shown once, as the cell's value
    return fig


# --- 2. SyncBN on a real process group ---------------------------------------------------

def synced_statistics(x, merge_batch_stats):
    """The mean and biased variance of the whole batch, of which ``x`` (M, C) is this
    worker's part: every worker sends its (count, mean, variance) to every other
    (``all_gather``), and each merges them with ``merge_batch_stats``. float64 tensors."""
    import torch
    import torch.distributed as dist

    x = x.detach().double()
    mine = torch.cat([torch.tensor([float(len(x))], dtype=torch.float64), x.mean(dim=0),
                      x.var(dim=0, unbiased=False)])
    everyone = [torch.empty_like(mine) for _ in range(dist.get_world_size())]
    dist.all_gather(everyone, mine)
    table = torch.stack(everyone).numpy()
    channels = x.shape[1]
    mean, var = merge_batch_stats(table[:, 0], table[:, 1:1 + channels], table[:, 1 + channels:])
    return torch.as_tensor(np.asarray(mean, np.float64)).reshape(-1), \
        torch.as_tensor(np.asarray(var, np.float64)).reshape(-1), int(table[:, 0].sum())


def _sync_check_task(rank, world_size, batches, merge_batch_stats, momentum, eps):
    """In each worker: synced BN (train mode) on its part of every batch; returns its
    outputs and the running statistics at the end."""
    import torch

    running_mean, running_var = torch.zeros(batches[0].shape[1], dtype=torch.float64), \
        torch.ones(batches[0].shape[1], dtype=torch.float64)
    outputs = []
    for batch in batches:
        part = torch.from_numpy(np.array_split(batch, world_size)[rank])
        mean, var, count = synced_statistics(part, merge_batch_stats)
        outputs.append(((part - mean) / torch.sqrt(var + eps)).numpy())
        unbiased = var * count / (count - 1)  # as nn.BatchNorm's running variance
        running_mean = (1 - momentum) * running_mean + momentum * mean
        running_var = (1 - momentum) * running_var + momentum * unbiased
    return outputs, running_mean.numpy(), running_var.numpy()


@dataclass(frozen=True)
class SyncCheck:
    """Relative errors against single-process nn.BatchNorm1d on the whole batches
    (float64): of the outputs and running statistics of synced BN, and of per-worker BN."""

    output_error: float
    running_mean_error: float
    running_var_error: float
    per_worker_output_error: float
    world_size: int
    batch_sizes: tuple


CHECK_BATCH_SIZES = (13, 16, 9)  # 13 and 9 split unevenly between 2 workers


def _check_batches(batch_sizes=CHECK_BATCH_SIZES, features=5, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.uniform(-3, 3, features) + rng.uniform(0.5, 2, features)
            * rng.standard_normal((n, features)) for n in batch_sizes]


def sync_check(merge_batch_stats, world_size=2, batch_sizes=CHECK_BATCH_SIZES, features=5,
               momentum=0.1, eps=1e-5, seed=0, timeout=60.0):
    """Run synced BN on ``world_size`` processes (each with its part of every batch; the
    parts differ in size when the batch does not split evenly) and compare it with
    nn.BatchNorm1d on one process, and with BN on each worker's part alone."""
    from bn_course.distributed import run_workers

    batches = _check_batches(batch_sizes, features, seed)
    results = run_workers(_sync_check_task, world_size,
                          (batches, merge_batch_stats, momentum, eps), timeout=timeout)
    return _compare_with_one_process(results, batches, momentum, eps)


def _compare_with_one_process(results, batches, momentum, eps):
    """A SyncCheck from the workers' results of ``_sync_check_task``."""
    import torch
    from torch import nn

    world_size, features = len(results), batches[0].shape[1]
    single = nn.BatchNorm1d(features, eps=eps, momentum=momentum).double()
    expected = [single(torch.from_numpy(b)).detach().numpy() for b in batches]
    synced = [np.concatenate([r[0][i] for r in results]) for i in range(len(batches))]
    per_worker = [np.concatenate([(part - part.mean(0)) / np.sqrt(part.var(0) + eps)
                                  for part in np.array_split(b, world_size)]) for b in batches]
    return SyncCheck(
        max(relative_error(s, e) for s, e in zip(synced, expected)),
        max(relative_error(r[1], single.running_mean.detach().numpy()) for r in results),
        max(relative_error(r[2], single.running_var.detach().numpy()) for r in results),
        max(relative_error(p, e) for p, e in zip(per_worker, expected)),
        world_size, tuple(len(b) for b in batches))


def _group_problem():
    """None when a process group can start here; else print why not and return True."""
    from bn_course.distributed import unavailable_reason

    reason = unavailable_reason()
    if reason:
        print(f"Skipped: this demo needs worker processes and torch.distributed, and here "
              f"{reason}. Everything else in this notebook works without them.")
    return reason


def _run_or_explain(experiment):
    """experiment(), or None with one line when the group cannot start, fails or times out."""
    from bn_course.distributed import GroupTimeout, GroupUnavailable, WorkerFailed

    try:
        return experiment()
    except (GroupUnavailable, WorkerFailed, GroupTimeout) as error:
        print(f"The process group did not complete: {error}")
        return None


def sync_check_lab(merge_batch_stats):
    """Print ``sync_check`` with your ``merge_batch_stats`` (the course's until yours passes
    its self-check), from ``group_lab``, which also trains for ``data_parallel_lab``.
    Nothing under nbgrader or where processes cannot start."""
    if grading() or _group_problem():
        return
    merge = _merge_or_ours(merge_batch_stats)
    results = _run_or_explain(lambda: group_lab(merge))
    if results is None:
        return
    result = results[0]
    print(f"{result.world_size} worker processes (gloo), batches of {result.batch_sizes} "
          "examples split between them; against nn.BatchNorm1d on the whole batch "
          "(float64), max relative error:")
    print(f"  synced BN, outputs              {result.output_error:.1e}")
    print(f"  synced BN, running mean         {result.running_mean_error:.1e}")
    print(f"  synced BN, running variance     {result.running_var_error:.1e}")
    print(f"  per-worker BN, outputs          {result.per_worker_output_error:.1e}")


# --- 3. data-parallel training: per-worker BN vs synced BN --------------------------------

@functools.cache
def sync_batchnorm_function():
    """An autograd Function for synced BN in training mode, on (M, C) parts of a batch:
    ``apply(x, weight, bias, eps, merge_batch_stats) -> (out, mean, var, count)``, where
    mean, var (biased) and count describe the whole batch (not differentiable).

    Forward: normalize with the whole batch's statistics (``synced_statistics``).
    Backward: dx needs sum(dout) and sum(dout * x_hat) over the *whole* batch, so every
    worker adds in its own with ``all_reduce``; then the usual formula with the total count.
    Built on first use, so that importing this module does not import torch.
    """
    import torch
    import torch.distributed as dist

    class SyncBatchNorm(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, weight, bias, eps, merge_batch_stats):
            mean, var, count = synced_statistics(x, merge_batch_stats)
            mean, var = mean.to(x.dtype), var.to(x.dtype)
            inv_std = torch.rsqrt(var + eps)
            x_hat = (x - mean) * inv_std
            ctx.save_for_backward(x_hat, inv_std, weight)
            ctx.count = count
            count = torch.tensor(count)
            ctx.mark_non_differentiable(mean, var, count)
            return x_hat * weight + bias, mean, var, count

        @staticmethod
        def backward(ctx, dout, _dmean, _dvar, _dcount):
            x_hat, inv_std, weight = ctx.saved_tensors
            local = torch.stack([dout.sum(dim=0), (dout * x_hat).sum(dim=0)])
            sums = local.clone()
            dist.all_reduce(sums)  # the whole batch's sums
            dx = weight * inv_std * (dout - sums[0] / ctx.count - x_hat * sums[1] / ctx.count)
            return dx, local[1], local[0], None, None

    return SyncBatchNorm


def synced_bn_module(num_features, merge_batch_stats, momentum=0.1, eps=1e-5):
    """A BatchNorm1d whose training-mode forward uses ``sync_batchnorm_function`` and
    updates its running statistics with the whole batch's; eval mode is unchanged."""
    import torch
    from torch import nn

    class SyncedBatchNorm1d(nn.BatchNorm1d):
        def forward(self, x):
            if not self.training:
                return super().forward(x)
            out, mean, var, count = sync_batchnorm_function().apply(
                x, self.weight, self.bias, self.eps, merge_batch_stats)
            with torch.no_grad():
                unbiased = var * (count / (count - 1))
                self.running_mean.mul_(1 - self.momentum).add_(self.momentum * mean)
                self.running_var.mul_(1 - self.momentum).add_(self.momentum * unbiased)
            return out

    return SyncedBatchNorm1d(num_features, eps=eps, momentum=momentum)


def _data_parallel_task(rank, world_size, merge_batch_stats, per_worker_batch, steps, lr,
                        seed):
    """One worker: ``data_parallel_training`` with per-worker BN, then with synced BN."""
    return {name: data_parallel_training(rank, world_size, synced, merge_batch_stats,
                                         per_worker_batch, steps, lr, seed)
            for name, synced in [("per-worker BN", False), ("synced BN", True)]}


def data_parallel_training(rank, world_size, synced, merge_batch_stats, per_worker_batch,
                           steps, lr, seed):
    """One worker of data-parallel training: the same initial weights everywhere, its
    slice of every global batch, gradients averaged over the group after each backward
    (what DistributedDataParallel does). Returns (its losses, its test accuracy)."""
    import torch
    import torch.distributed as dist
    import torch.nn.functional as F

    from bn_course.data import load_digits
    from bn_course.train import evaluate, make_mlp

    data = load_digits(seed=seed)
    model = make_mlp(data.num_features, hidden=64, depth=2, num_classes=10, bn=True, seed=seed)
    if synced:
        for i, layer in enumerate(model):
            if isinstance(layer, torch.nn.BatchNorm1d):
                model[i] = synced_bn_module(layer.num_features, merge_batch_stats)
    x_train, y_train = data.to_torch("train")
    order = torch.Generator().manual_seed(seed)  # the same global batches on every worker
    parameters = list(model.parameters())
    losses = []
    model.train()
    for _ in range(steps):
        batch = torch.randperm(len(x_train), generator=order)[:world_size * per_worker_batch]
        mine = batch[rank * per_worker_batch:(rank + 1) * per_worker_batch]
        loss = F.cross_entropy(model(x_train[mine]), y_train[mine])
        gradients = torch.autograd.grad(loss, parameters)
        flat = torch.cat([g.reshape(-1) for g in gradients])
        dist.all_reduce(flat)
        flat /= world_size
        with torch.no_grad():
            offset = 0
            for parameter in parameters:
                parameter -= lr * flat[offset:offset + parameter.numel()].view_as(parameter)
                offset += parameter.numel()
        losses.append(loss.item())
    # Per-worker BN leaves each worker with running statistics of its own parts; DDP
    # would copy rank 0's to the others (broadcast_buffers), as a checkpoint from rank 0 does.
    return np.array(losses), evaluate(model, *data.to_torch("test"))


@dataclass(frozen=True)
class DataParallelRuns:
    """{"per-worker BN" / "synced BN": (worker 0's losses, its test accuracy)}, settings."""

    runs: dict
    world_size: int
    per_worker_batch: int
    steps: int


PER_WORKER_BATCH, STEPS, LR = 2, 150, 0.05  # the data-parallel run of the notebook


def data_parallel_experiment(merge_batch_stats, world_size=2, per_worker_batch=PER_WORKER_BATCH,
                             steps=STEPS, lr=LR, seed=0, timeout=120.0):
    """Train the same MLP data-parallel on ``world_size`` processes, with per-worker BN and
    with synced BN: the same weights, batches and steps; only the statistics differ."""
    from bn_course.distributed import run_workers

    results = run_workers(_data_parallel_task, world_size,
                          (merge_batch_stats, per_worker_batch, steps, lr, seed), timeout=timeout)
    return DataParallelRuns(results[0], world_size, per_worker_batch, steps)


def _both_task(rank, world_size, check_args, training_args):
    return (_sync_check_task(rank, world_size, *check_args),
            _data_parallel_task(rank, world_size, *training_args))


@functools.lru_cache(maxsize=1)
def group_lab(merge_batch_stats, world_size=2, timeout=180.0):
    """The notebook's two experiments, ``sync_check`` and ``data_parallel_experiment`` with
    their defaults, in ONE run of the group: starting the processes (each imports torch)
    costs more than both experiments. Memoized for the latest function, so that the second
    notebook cell shows what the first one computed. Returns (SyncCheck, DataParallelRuns)."""
    from bn_course.distributed import run_workers

    batches, momentum, eps = _check_batches(), 0.1, 1e-5
    results = run_workers(
        _both_task, world_size,
        ((batches, merge_batch_stats, momentum, eps),
         (merge_batch_stats, PER_WORKER_BATCH, STEPS, LR, 0)), timeout=timeout)
    return (_compare_with_one_process([r[0] for r in results], batches, momentum, eps),
            DataParallelRuns(results[0][1], world_size, PER_WORKER_BATCH, STEPS))


def data_parallel_figure(result):
    from bn_course.plots import running_mean

    fig, ax = plt.subplots(figsize=(8, 3.4))
    for (name, (losses, accuracy)), colour in zip(result.runs.items(), ("C3", "C0")):
        ax.plot(np.arange(20, len(losses) + 1), running_mean(losses, 20), color=colour,
                label=f"{name}: test accuracy {100 * accuracy:.1f}%")
    ax.set(xlabel="training step", ylabel="training loss on worker 0 (20-step average)",
           title=f"{result.world_size} workers x {result.per_worker_batch} examples per step")
    ax.legend(fontsize=8)
    fig.tight_layout()
    plt.close(fig)  # shown once, as the cell's value
    return fig


def data_parallel_lab(merge_batch_stats):
    """``data_parallel_experiment`` with your ``merge_batch_stats`` (the course's until yours
    passes its self-check). None under nbgrader or where processes cannot start."""
    if grading() or _group_problem():
        return None
    merge = _merge_or_ours(merge_batch_stats)
    results = _run_or_explain(lambda: group_lab(merge))
    return None if results is None else data_parallel_figure(results[1])


# --- 4. batch renormalization ------------------------------------------------------------

def renorm_check(batch_renorm_forward, seed=0):
    """Your NumPy ``batch_renorm_forward`` against the torch batch renorm layer that the
    training below uses (float64), for a few r_max and d_max. Nothing under nbgrader."""
    if grading():
        return
    batch_renorm_forward = yours_or_none("batch_renorm_forward", batch_renorm_forward)
    if batch_renorm_forward is None:
        return
    import torch

    from bn_course.reference.torch import batch_renorm

    rng = np.random.default_rng(seed)
    x = 2.0 + 3.0 * rng.standard_normal((6, 4))
    running_mean, running_var = rng.uniform(-1, 1, 4), rng.uniform(0.5, 2, 4)
    gamma, beta = rng.uniform(0.5, 2, 4), rng.uniform(-1, 1, 4)
    print("your batch_renorm_forward vs the torch layer used for training (max relative error):")
    for r_max, d_max in [(1.0, 0.0), (1.5, 0.5), (3.0, 5.0)]:
        theirs = batch_renorm(*(torch.tensor(a) for a in (x, running_mean, running_var, gamma,
                                                          beta)),
                              r_max=r_max, d_max=d_max, training=True)
        mine = batch_renorm_forward(x, running_mean, running_var, gamma, beta, r_max, d_max)
        print(f"  r_max={r_max:g}, d_max={d_max:g}: {relative_error(mine, theirs.numpy()):.1e}")


NORMS = ("BN", "batch renorm", "GroupNorm")


def renorm_mlp(norm, seed=0, width=64):
    """Two Linear -> norm -> ReLU blocks and a linear head; norm is one of NORMS
    (GroupNorm with 8 groups of 8 units, per example)."""
    from torch import nn

    from bn_course.reference.torch import BatchRenorm
    from bn_course.train import make_mlp

    if norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
    model = make_mlp(64, hidden=width, depth=2, num_classes=10, bn=True, seed=seed)
    for i, layer in enumerate(model):
        if isinstance(layer, nn.BatchNorm1d) and norm == "batch renorm":
            model[i] = BatchRenorm(width)
        elif isinstance(layer, nn.BatchNorm1d) and norm == "GroupNorm":
            model[i] = nn.GroupNorm(8, width)
    return model


def _class_sorted_batches(labels, batch_size, generator):
    """Endless batches that each hold examples of ONE class (non-i.i.d. batches)."""
    import torch

    by_class = [torch.nonzero(labels == c).reshape(-1) for c in range(10)]
    while True:
        for c in torch.randperm(10, generator=generator).tolist():
            members = by_class[c][torch.randperm(len(by_class[c]), generator=generator)]
            yield members[:batch_size]


def _random_batches(n, batch_size, generator):
    import torch

    while True:
        yield torch.randperm(n, generator=generator)[:batch_size]


def train_norm(norm, batches, steps, lr=0.05, seed=0, warmup=50):
    """Train ``renorm_mlp(norm)`` on the digits with the given batches; batch renorm's r_max
    and d_max ramp from 1 and 0 (plain BN) to 3 and 5 over the first ``warmup`` steps, as
    the paper does (there over thousands of steps). Returns the test accuracy."""
    import torch
    import torch.nn.functional as F

    from bn_course.data import load_digits
    from bn_course.reference.torch import BatchRenorm
    from bn_course.train import _sgd_step, evaluate, one_thread

    data = load_digits(seed=seed)
    x_train, y_train = data.to_torch("train")
    model = renorm_mlp(norm, seed)
    parameters = list(model.parameters())
    generator = torch.Generator().manual_seed(seed)
    source = (_class_sorted_batches(y_train, batches[1], generator) if batches[0] == "sorted"
              else _random_batches(len(x_train), batches[1], generator))
    with one_thread():
        model.train()
        for step in range(steps):
            ramp = min(1.0, step / warmup)
            for layer in model.modules():
                if isinstance(layer, BatchRenorm):
                    layer.r_max, layer.d_max = 1.0 + 2.0 * ramp, 5.0 * ramp
            index = next(source)
            _sgd_step(parameters, F.cross_entropy(model(x_train[index]), y_train[index]), lr)
    return evaluate(model, *data.to_torch("test"))


SETTINGS = {"random batches of 32": ("random", 32), "random batches of 4": ("random", 4),
            "batches of 32 from one class": ("sorted", 32)}


def renorm_experiment(steps=200, seeds=(0,)):
    """Test accuracy of each norm in each of SETTINGS, averaged over ``seeds``."""
    return {setting: {norm: float(np.mean([train_norm(norm, batches, steps, seed=seed)
                                           for seed in seeds]))
                      for norm in NORMS}
            for setting, batches in SETTINGS.items()}


def renorm_figure(results):
    fig, ax = plt.subplots(figsize=(9, 3.4))
    width = 0.27
    for i, (norm, colour) in enumerate(zip(NORMS, ("C0", "C2", "C1"))):
        values = [100 * results[s][norm] for s in results]
        bars = ax.bar(np.arange(len(results)) + (i - 1) * width, values, width, color=colour,
                      label=norm)
        ax.bar_label(bars, fmt="%.0f", fontsize=8)
    ax.set(xticks=range(len(results)), xticklabels=list(results), ylim=(0, 110),
           ylabel="test accuracy (%), eval mode", title="The same MLP, three normalizations")
    ax.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    plt.close(fig)  # shown once, as the cell's value
    return fig


def renorm_lab():
    """The batch renorm experiment: accuracies and a bar chart. None under nbgrader."""
    if grading():
        return None
    return renorm_figure(renorm_experiment())


def renorm_slider_figure(batch_renorm_forward, r_max, d_max, seed=0):
    """One feature, a batch of 4 drawn far from the running statistics: the outputs of
    train-mode BN, of eval-mode BN (running statistics) and of batch renorm with the given
    r_max and d_max, which sit between the two."""
    rng = np.random.default_rng(seed)
    x = 1.0 + 0.4 * rng.standard_normal((4, 1))
    running_mean, running_var = np.zeros(1), np.ones(1)
    gamma, beta = np.ones(1), np.zeros(1)
    as_bn = (x - x.mean(0)) / np.sqrt(x.var(0) + 1e-5)
    as_eval = (x - running_mean) / np.sqrt(running_var + 1e-5)
    renormed = np.asarray(batch_renorm_forward(x, running_mean, running_var, gamma, beta,
                                               r_max, d_max)).reshape(x.shape)
    fig, ax = plt.subplots(figsize=(8, 2.8))
    for row, (label, values, colour) in enumerate([
            ("BN, train mode (batch statistics)", as_bn, "C0"),
            (f"batch renorm, r_max={r_max:g}, d_max={d_max:g}", renormed, "C2"),
            ("BN, eval mode (running statistics)", as_eval, "C3")]):
        ax.plot(values.ravel(), np.full(len(values), row), "o", ms=9, color=colour)
        ax.text(3.3, row, label, va="center", fontsize=9)
    ax.set(yticks=[], xlim=(-3, 7), ylim=(-0.6, 2.6), xlabel="normalized value",
           title="4 examples with mean ~1 and spread ~0.4; running mean 0, variance 1")
    fig.tight_layout()
    return fig  # the panel shows it, then closes it


def renorm_panel(batch_renorm_forward):
    """Sliders for r_max and d_max over ``renorm_slider_figure`` with your
    ``batch_renorm_forward`` (the course's until yours passes its self-check)."""
    if grading():
        return None
    import ipywidgets as widgets

    from bn_course.reference.numpy import batch_renorm_forward as ours
    from bn_course.widgets import slider_panel

    renorm = yours_or_ours("batch_renorm_forward", batch_renorm_forward, ours)
    return slider_panel(
        functools.partial(renorm_slider_figure, renorm),
        r_max=widgets.FloatSlider(value=1.0, min=1.0, max=5.0, step=0.25, description="r_max",
                                  continuous_update=False),
        d_max=widgets.FloatSlider(value=0.0, min=0.0, max=5.0, step=0.25, description="d_max",
                                  continuous_update=False))
