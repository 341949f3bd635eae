"""Experiments, figures and the slider panel for notebook 07 (training comparisons).

Every experiment is a set of ``Settings`` trained by ``run``, which remembers the runs
this kernel has already trained: the figures, the sweeps and the slider panel share
them, and a slider moved back to a setting seen before redraws at once. Nothing is
precomputed or shipped; everything is seeded, so every run gives the same numbers.
torch is imported only when something trains.

Which networks train is a ``Network``: a builder with the signature of the notebook's
``build_mlp`` and a normalization layer class. ``your_network(build_mlp, BatchNorm2d)``
gives the student's (each piece once it passes its self-check); every experiment takes
it as ``network=`` and says in its title whose layer ran. The default, ``TORCH``, is the
course's builder with ``torch.nn.BatchNorm1d``.
"""

import functools
import time
from dataclasses import dataclass, replace

import ipywidgets as widgets
import matplotlib.pyplot as plt
import numpy as np

from bn_course import plots
from bn_course.demos._guard import say, self_check_problem, yours_or_ours
from bn_course.reference.numpy import percentile_trace, steps_to_reach
from bn_course.widgets import SliderPanel, grading

NO_BN, BN, NOISY_BN = "without BN", "with BN", "with BN + random shifts"
COLORS = {NO_BN: "C1", BN: "C0", NOISY_BN: "C2"}
PERCENTILES = (15, 50, 85)
FINAL_EVALUATIONS = 5  # "final accuracy": the mean of the last five evaluations
SKIP_FRACTION = 0.1    # the steadiness of a trace is measured after the first 10% of steps
CHANCE = 0.1           # ten classes


@dataclass(frozen=True)
class Network:
    """How the experiments build their networks. ``build(norm_layer, in_features, hidden,
    depth, num_classes)`` returns the sigmoid network (notebook 07's ``build_mlp``; None:
    the course's); ``norm_layer`` is the layer class of the networks with BN (None:
    ``torch.nn.BatchNorm1d``); ``name`` says whose layer it is, in the figures."""

    build: object = None
    norm_layer: object = None
    name: str = "torch.nn.BatchNorm1d"

    def layer_class(self):
        from torch import nn

        return self.norm_layer or nn.BatchNorm1d

    def with_torch_layer(self):
        """The same builder with torch.nn.BatchNorm1d."""
        return replace(self, norm_layer=None, name="torch.nn.BatchNorm1d")

    def model(self, bn, in_features, hidden, depth, num_classes):
        from bn_course.reference.torch import build_mlp

        norm_layer = self.layer_class() if bn else None
        return (self.build or build_mlp)(norm_layer, in_features, hidden, depth, num_classes)


TORCH = Network()


@dataclass(frozen=True)
class Settings:
    """One training run on the digits: a ``network`` of sigmoid layers and plain SGD.
    Frozen, hence hashable: ``run`` memoizes on it."""

    bn: bool = False
    lr: float = 1.0
    depth: int = 3
    batch_size: int = 60
    init_scale: float = 2.0
    steps: int = 200
    eval_every: int = 20
    bn_noise: float = 0.0
    record_preactivations: bool = False
    hidden: int = 100
    seed: int = 0
    network: Network = TORCH


# The miniature of Ioffe & Szegedy (2015), Figure 1: three sigmoid layers of 100 units,
# the same protocol for both networks. The weights start small (0.5 / sqrt(fan_in)), as the
# paper's "small random Gaussian values" do; `sweep("init_scale")` shows what that choice does.
PAPER = Settings(init_scale=0.5, steps=2000, eval_every=50, record_preactivations=True)
# The sweeps change one knob of this network, whose weights (2 / sqrt(fan_in)) let the
# network without BN train well: BN has to earn its place against a fair baseline.
SWEEP = Settings()
# In 200 steps, batches of 2 show the networks 400 examples, under a third of a pass: too
# few for either network to get anywhere. The batch-size sweep trains 300 steps.
SMALL_BATCHES = replace(SWEEP, steps=300, eval_every=25)
SWEEP_VALUES = {  # in the notebook's order
    "init_scale": (0.5, 1.0, 2.0, 4.0, 8.0),
    "lr": (0.1, 1.0, 3.0, 10.0, 30.0),
    "depth": (2, 3, 4, 6, 8),
    "batch_size": (2, 4, 8, 16, 60),
}
KNOB_NAMES = {"init_scale": "init scale", "lr": "learning rate", "depth": "hidden layers",
              "batch_size": "batch size"}
# Santurkar et al. (2018) in miniature: the paper network with BN, every BN output moved
# and stretched at random at every step (see bn_course.train.RandomShift).
NOISE = replace(PAPER, bn=True, bn_noise=1.0, steps=1000)


# --- running (and remembering) -------------------------------------------------------

@functools.cache
def digits():
    from bn_course.data import load_digits

    return load_digits()


_trained = {}  # Settings -> History: every run this kernel has trained
_seconds = {}  # Settings -> how long its training took


def run(settings, progress=True):
    """The ``History`` of training the network that ``settings`` describes.

    Remembered for the whole kernel: equal settings give back the same History object
    (read it, do not modify it). A run that takes more than a second shows a progress bar,
    unless ``progress`` is False.
    """
    if not settings.bn:  # no normalization layer to build: one run for every layer
        settings = replace(settings, network=settings.network.with_torch_layer())
    if settings not in _trained:
        start = time.perf_counter()
        _trained[settings] = _train(settings, progress)
        _seconds[settings] = time.perf_counter() - start
    return _trained[settings]


def runs_trained():
    """How many runs this kernel has trained so far."""
    return len(_trained)


def _train(settings, progress):
    from bn_course.train import init_linear_layers, train, with_random_shifts

    data = digits()
    model = settings.network.model(settings.bn, data.num_features, settings.hidden,
                                   settings.depth, data.num_classes)
    if settings.bn_noise:
        model = with_random_shifts(model, settings.network.layer_class(), settings.bn_noise,
                                   settings.seed)
    init_linear_layers(model, settings.init_scale, settings.seed)
    return train(model, data, settings.steps, settings.lr, batch_size=settings.batch_size,
                 seed=settings.seed, eval_every=settings.eval_every, progress=progress,
                 record_preactivations=settings.record_preactivations)


def run_pair(settings):
    """``{NO_BN: History, BN: History}`` for ``settings`` without and with BN."""
    return {NO_BN: run(replace(settings, bn=False)), BN: run(replace(settings, bn=True))}


def _run_all(all_settings, description):
    """Train what is not remembered yet, with one progress bar for the lot."""
    from tqdm.auto import tqdm

    for settings in tqdm(all_settings, desc=description, delay=1.0, leave=False,
                         disable=grading()):
        run(settings)


# --- your network -----------------------------------------------------------------------

@functools.cache
def as_batchnorm1d(BatchNorm2d):
    """A subclass of ``BatchNorm2d`` (a class with torch.nn.BatchNorm2d's API) for (N, D)
    batches: each feature becomes a channel of 1x1 images, whose statistics over
    (N, 1, 1) are the feature's over the batch, exactly what BatchNorm1d computes."""

    class AsBatchNorm1d(BatchNorm2d):
        def forward(self, x):
            return super().forward(x[:, :, None, None])[:, :, 0, 0]

    AsBatchNorm1d.__name__ = AsBatchNorm1d.__qualname__ = f"{BatchNorm2d.__name__}As1d"
    return AsBatchNorm1d


def your_network(build_mlp, BatchNorm2d):
    """The ``Network`` of the student's ``build_mlp`` and ``BatchNorm2d`` (run on (N, D)
    batches by ``as_batchnorm1d``), each once it passes its self-check; the course's
    stands in for one that does not pass yet. Prints which ran."""
    if grading():
        return TORCH
    from bn_course.reference.torch import BatchNorm1d

    layer_problem = self_check_problem("BatchNorm2d", BatchNorm2d)
    build_problem = self_check_problem("build_mlp", build_mlp)
    if layer_problem is None:
        norm_layer, name = as_batchnorm1d(BatchNorm2d), "your BatchNorm2d"
        say("The experiments given this network normalize with your BatchNorm2d "
            "(each feature a channel of 1x1 images).")
    else:
        norm_layer, name = BatchNorm1d, "the course's BatchNorm1d"
        say("The experiments given this network normalize with the course's BatchNorm1d, "
            f"because your BatchNorm2d does not pass its self-check yet: {layer_problem}")
    if build_problem is None:
        say("They build it with your build_mlp.")
    else:
        say("They build it with the course's build_mlp, because yours does not pass its "
            f"self-check yet: {build_problem}")
    return Network(None if build_problem else build_mlp, norm_layer, name)


@dataclass(frozen=True)
class LayerComparison:
    """The paper's BN run trained twice, same seed, same batches: with ``name``'s layer
    and with torch.nn.BatchNorm1d."""

    name: str
    steps: int
    seconds: float
    torch_seconds: float
    loss_difference: float   # largest |loss - torch's loss| over all steps
    accuracy_difference: float  # largest |test accuracy - torch's| over all evaluations
    evaluations: int

    def __str__(self):
        slower = self.seconds / self.torch_seconds
        return "\n".join([
            f"The paper's network with BN, {self.steps:,} steps, the same weights and batches:",
            f"  {self.name:<26} {self.seconds:5.1f} s",
            f"  {'torch.nn.BatchNorm1d':<26} {self.torch_seconds:5.1f} s  ({slower:.1f}x faster)",
            (f"largest difference in the training loss, over {self.steps:,} steps: "
             f"{self.loss_difference:.1e}"),
            (f"largest difference in the test accuracy, over {self.evaluations} evaluations: "
             f"{self.accuracy_difference:.3f}"),
        ])

    __repr__ = __str__


def compare_with_torch(network):
    """``LayerComparison`` of the paper's BN run with ``network``'s layer and with
    torch.nn.BatchNorm1d (the same builder). None under nbgrader."""
    if grading():
        return None
    yours = replace(PAPER, bn=True, network=network)
    torch_layer = replace(yours, network=network.with_torch_layer())
    mine, theirs = run(yours), run(torch_layer)
    return LayerComparison(
        network.name, PAPER.steps, _seconds[yours], _seconds[torch_layer],
        float(np.max(np.abs(np.subtract(mine.loss, theirs.loss)))),
        float(np.max(np.abs(np.subtract(mine.test_accuracy, theirs.test_accuracy)))),
        len(mine.eval_step))


# --- measuring a history ----------------------------------------------------------------

def final_accuracy(history, evaluations=FINAL_EVALUATIONS):
    """The mean test accuracy of the last ``evaluations`` evaluations."""
    return float(np.mean(history.test_accuracy[-evaluations:]))


def _first_step_reaching(steps, accuracy, target):
    """The course's answer to the notebook's ``steps_to_reach``, or None if never."""
    try:
        return steps_to_reach(steps, accuracy, target)
    except ValueError:
        return None


def _percentiles(values, q=PERCENTILES):
    """(T, len(q)) with the course's answer to the notebook's ``percentile_trace``."""
    return percentile_trace(values, q)


def relative_total_variation(steps, trace, skip_fraction=SKIP_FRACTION):
    """How restless the middle column of ``trace`` (T, 3: low, middle, high percentile
    at each of ``steps``) is, relative to the width of the band, after the first
    ``skip_fraction`` of training:

        sum_t |middle[t+1] - middle[t]|  /  mean_t (high[t] - low[t])

    0 for a median that never moves; 1 when it travels, in total, one band width; NaN or
    infinite for a band of width 0.
    """
    steps, trace = np.asarray(steps), np.asarray(trace, dtype=np.float64)
    kept = trace[steps >= skip_fraction * steps[-1]]
    travel = np.abs(np.diff(kept[:, 1])).sum()
    with np.errstate(divide="ignore", invalid="ignore"):
        return float(travel / np.mean(kept[:, 2] - kept[:, 0]))


def outcome(history):
    """"diverged" (a loss became NaN or infinite), "stalled" (final accuracy within
    0.1 of chance) or "trained"."""
    if history.diverged:
        return "diverged"
    return "stalled" if final_accuracy(history) < CHANCE + 0.1 else "trained"


# --- the paper's Figure 1 -----------------------------------------------------------------

@dataclass(frozen=True)
class PaperResult:
    """The numbers behind the miniature of Figure 1 (one sigmoid: ``unit`` of the last
    hidden layer; ``units_steadier``: the fraction of all its units whose median trace is
    steadier with BN)."""

    baseline_final: float
    bn_final: float
    baseline_steps: int
    bn_steps: int
    baseline_variation: float
    bn_variation: float
    units_steadier: float
    unit: int

    @property
    def ratio(self):
        """How many times fewer steps BN needs to reach the baseline's final accuracy
        (infinite if the untrained BN network already has it)."""
        return self.baseline_steps / self.bn_steps if self.bn_steps else float("inf")

    def __str__(self):
        return "\n".join([
            (f"final test accuracy (mean of the last {FINAL_EVALUATIONS} evaluations): "
             f"without BN {self.baseline_final:.3f}, with BN {self.bn_final:.3f}"),
            (f"steps to reach {self.baseline_final:.3f}: without BN {self.baseline_steps}, "
             f"with BN {self.bn_steps}  ->  {self.ratio:.1f}x fewer with BN"),
            (f"relative total variation of unit {self.unit}'s median: "
             f"without BN {self.baseline_variation:.2f}, with BN {self.bn_variation:.2f}"),
            (f"units of the last hidden layer whose median is steadier with BN: "
             f"{self.units_steadier:.0%}"),
        ])

    __repr__ = __str__


def paper_runs(network=TORCH):
    """The two runs of the paper's protocol: ``{NO_BN: History, BN: History}``."""
    return run_pair(replace(PAPER, network=network))


def paper_result(steps_to_reach=_first_step_reaching, percentile_trace=_percentiles, unit=0,
                 network=TORCH):
    """``PaperResult`` of the two runs of ``PAPER``, measured with the given functions
    (the notebook passes the student's; the course's stand in for one that does not pass
    its self-check yet). None under nbgrader, which trains nothing."""
    if grading():
        return None
    if steps_to_reach is not _first_step_reaching:
        steps_to_reach = yours_or_ours("steps_to_reach", steps_to_reach, _first_step_reaching,
                                       what="measurement")
    if percentile_trace is not _percentiles:
        percentile_trace = yours_or_ours("percentile_trace", percentile_trace, _percentiles,
                                         what="measurement")
    runs = paper_runs(network)
    baseline, with_bn = runs[NO_BN], runs[BN]
    target = final_accuracy(baseline)

    def variation(history, which_unit):
        trace = percentile_trace(history.unit_inputs(layer=-1, unit=which_unit), PERCENTILES)
        return relative_total_variation(history.eval_step, trace)

    units = baseline.preactivations[0].shape[-1]
    steadier = np.mean([variation(with_bn, u) < variation(baseline, u) for u in range(units)])
    return PaperResult(
        baseline_final=target, bn_final=final_accuracy(with_bn),
        baseline_steps=steps_to_reach(baseline.eval_step, baseline.test_accuracy, target),
        bn_steps=steps_to_reach(with_bn.eval_step, with_bn.test_accuracy, target),
        baseline_variation=variation(baseline, unit), bn_variation=variation(with_bn, unit),
        units_steadier=float(steadier), unit=unit)


class Gaps(dict):
    """``{label: (train accuracy, test accuracy, train - test)}``, shown as a table."""

    def __repr__(self):
        return "\n".join(f"{label:>10}: train {train:.3f}, test {test:.3f}, gap {gap:.3f}"
                         for label, (train, test, gap) in self.items())


def generalization_gaps(network=TORCH):
    """Final train and test accuracy of the paper's two runs and the gap between them
    (``Gaps``). None under nbgrader."""
    if grading():
        return None
    gaps = Gaps()
    for label, history in paper_runs(network).items():
        train = float(np.mean(history.train_accuracy[-FINAL_EVALUATIONS:]))
        test = final_accuracy(history)
        gaps[label] = (train, test, train - test)
    return gaps


def paper_figure(network=TORCH, unit=0):
    """(a) test accuracy over training, without and with BN; (b, c) the 15th, 50th and
    85th percentiles of what one sigmoid of the last hidden layer receives."""
    if grading():
        return None
    runs = paper_runs(network)
    result = paper_result(unit=unit, network=network)
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    _accuracy_panel(axes[0], runs, result.baseline_final)
    for label, x in [(NO_BN, result.baseline_steps), (BN, result.bn_steps)]:
        axes[0].axvline(x, color=COLORS[label], ls=":", lw=1.5)
    axes[0].set(ylim=(0.85, 1.0),
                title=f"(a) test accuracy: BN reaches {result.baseline_final:.3f}\n"
                      f"in {result.ratio:.1f}x fewer steps "
                      f"({result.bn_steps} vs {result.baseline_steps})")
    variations = {NO_BN: result.baseline_variation, BN: result.bn_variation}
    for ax, letter, label in [(axes[1], "b", NO_BN), (axes[2], "c", BN)]:
        history = runs[label]
        trace = _percentiles(history.unit_inputs(layer=-1, unit=unit))
        plots.percentile_band(ax, history.eval_step, trace, COLORS[label],
                              label="median, with the 15th-85th percentile band")
        ax.axvspan(0, SKIP_FRACTION * history.eval_step[-1], color="0.92", zorder=0)
        ax.set(xlabel="training step", ylabel="sigmoid input",
               title=f"({letter}) {label}: unit {unit} of the last hidden layer\n"
                     f"relative total variation of the median: {variations[label]:.2f}")
        ax.legend(fontsize=8, loc="lower right")
    low = min(ax.get_ylim()[0] for ax in axes[1:])
    high = max(ax.get_ylim()[1] for ax in axes[1:])
    for ax in axes[1:]:
        ax.set_ylim(low, high)  # the same scale, so the two bands compare at a glance
    fig.suptitle(f"{BN}: {network.name}", fontsize=10)
    fig.tight_layout()
    plt.close(fig)  # shown once, as the cell's value
    return fig


def _accuracy_panel(ax, runs, target=None, up_to=None):
    """Test accuracy over training of several runs; ``target`` as a dashed line."""
    series = {}
    for label, history in runs.items():
        steps, accuracy = np.asarray(history.eval_step), np.asarray(history.test_accuracy)
        shown = steps <= (up_to or steps[-1])
        series[label] = (steps[shown], accuracy[shown])
    plots.curves(ax, series, COLORS, lw=2)
    if target is not None:
        ax.axhline(target, color="0.4", ls="--", lw=1,
                   label=f"final accuracy without BN: {target:.3f}")
    ax.set(xlabel="training step", ylabel="test accuracy")
    ax.legend(fontsize=8, loc="lower right")


# --- sweeps -------------------------------------------------------------------------------

def sweep_centre(knob):
    """The settings that the sweep of ``knob`` starts from."""
    return SMALL_BATCHES if knob == "batch_size" else SWEEP


def sweep_runs(knob, values=None, centre=None, network=TORCH):
    """``{value: {NO_BN: History, BN: History}}`` with ``knob`` (a ``Settings`` field)
    set to each value and everything else as in ``centre`` (None: ``sweep_centre(knob)``),
    but the ``network``."""
    values = SWEEP_VALUES[knob] if values is None else values
    centre = sweep_centre(knob) if centre is None else centre
    settings = [replace(centre, network=network, **{knob: value}) for value in values]
    _run_all([replace(s, bn=bn) for s in settings for bn in (False, True)],
             f"{KNOB_NAMES.get(knob, knob)} sweep")
    return {value: run_pair(s) for value, s in zip(values, settings)}


def sweep(knob, values=None, centre=None, network=TORCH):
    """One panel per value of ``knob``: test accuracy over training without and with BN."""
    if grading():
        return None
    centre = sweep_centre(knob) if centre is None else centre
    runs = sweep_runs(knob, values, centre, network)
    fig, axes = plt.subplots(1, len(runs), figsize=(3.1 * len(runs), 3.3), sharey=True,
                             squeeze=False)
    for ax, (value, pair) in zip(axes[0], runs.items()):
        _accuracy_panel(ax, pair)
        ax.get_legend().remove()
        verdicts = ", ".join(f"{'BN' if label == BN else 'no BN'} {final_accuracy(h):.2f}"
                             + ("" if outcome(h) == "trained" else f" ({outcome(h)})")
                             for label, h in pair.items())
        ax.set(title=f"{KNOB_NAMES.get(knob, knob)} = {value:g}\n{verdicts}", ylim=(0, 1))
        ax.title.set_fontsize(9)
        if ax is not axes[0, 0]:
            ax.set_ylabel("")
    axes[0, 0].legend(fontsize=8, loc="lower right")
    fixed = ", ".join(f"{KNOB_NAMES[name]} {getattr(centre, name):g}"
                      for name in KNOB_NAMES if name != knob)
    layers = "sigmoid layers" if knob == "depth" else f"{centre.depth} sigmoid layers"
    fig.suptitle(f"{layers} of {centre.hidden}, {centre.steps} steps; {fixed}; "
                 f"BN: {network.name}", fontsize=10)
    fig.tight_layout()
    plt.close(fig)
    return fig


# --- tiny batches -------------------------------------------------------------------------

def normalized_in_batches(values, batch_size, seed=0):
    """``values`` (N,) cut into shuffled batches of ``batch_size``, each normalized with
    its own mean and (biased) variance, as BN does in training; the remainder is dropped."""
    rng = np.random.default_rng(seed)
    usable = len(values) // batch_size * batch_size
    batches = rng.permutation(values)[:usable].reshape(-1, batch_size)
    centred = batches - batches.mean(axis=1, keepdims=True)
    return (centred / np.sqrt(batches.var(axis=1, keepdims=True) + 1e-5)).ravel()


def tiny_batch_histograms(batch_sizes=(2, 4, 16, 60), seed=0):
    """What BN makes of one unit's input on batches of a few examples: the unit is a random
    linear function of the digits' pixels, normalized batch by batch. None under nbgrader."""
    if grading():
        return None
    data = digits()
    weights = np.random.default_rng(seed).standard_normal(data.num_features)
    unit = data.x_train.astype(np.float64) @ weights
    fig, axes = plt.subplots(1, len(batch_sizes), figsize=(3.2 * len(batch_sizes), 3),
                             sharex=True)
    bins = np.linspace(-4, 4, 81)
    for ax, size in zip(axes, batch_sizes):
        label = f"batch of {size}"
        plots.histograms(ax, {label: normalized_in_batches(unit, size, seed)}, bins=bins,
                         colors={label: "C0"})
        limit = np.sqrt(size - 1)  # no normalized value can lie further out than this
        if limit < 4:
            for sign in (-1, 1):
                ax.axvline(sign * limit, color="C3", ls=":", lw=1.5)
        ax.set(title=f"batch of {size}: |value| <= {limit:.2f}", xlabel="normalized value",
               yticks=[])
    axes[0].set_ylabel("density")
    fig.tight_layout()
    plt.close(fig)
    return fig


# --- Santurkar et al. in miniature ------------------------------------------------------

@dataclass(frozen=True)
class NoiseResult:
    """Steps to reach the baseline's final (2,000-step) accuracy, and the relative total
    variation of one sigmoid's median over the first ``NOISE.steps`` steps."""

    target: float
    steps: dict
    variation: dict


def noise_runs(network=TORCH):
    """The paper's two runs and the BN run with random shifts (``NOISE``)."""
    runs = paper_runs(network)
    return {NO_BN: runs[NO_BN], BN: runs[BN], NOISY_BN: run(replace(NOISE, network=network))}


def _up_to(history, last_step, unit):
    """eval steps, test accuracy and one unit's 15/50/85 trace up to ``last_step``."""
    steps = np.asarray(history.eval_step)
    kept = steps <= last_step
    trace = _percentiles(history.unit_inputs(layer=-1, unit=unit))[kept]
    return steps[kept], np.asarray(history.test_accuracy)[kept], trace


def noise_result(unit=0, network=TORCH):
    """``NoiseResult`` of ``noise_runs``, for ``unit`` of the last hidden layer. None under
    nbgrader."""
    if grading():
        return None
    runs = noise_runs(network)
    target = final_accuracy(runs[NO_BN])
    steps, variation = {}, {}
    for label, history in runs.items():
        eval_steps, accuracy, trace = _up_to(history, NOISE.steps, unit)
        steps[label] = _first_step_reaching(eval_steps, accuracy, target)
        variation[label] = relative_total_variation(eval_steps, trace)
    return NoiseResult(target, steps, variation)


def noise_figure(network=TORCH, unit=0):
    """Left: test accuracy of the three networks; right: the median of what one sigmoid of
    the last hidden layer receives, as training sees it."""
    if grading():
        return None
    runs = noise_runs(network)
    result = noise_result(unit, network)
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4))
    _accuracy_panel(left, runs, result.target, up_to=NOISE.steps)

    short = {NO_BN: "no BN", BN: "BN", NOISY_BN: "BN + shifts"}
    reached = ", ".join(f"{short[label]} {'never' if step is None else step}"
                        for label, step in result.steps.items())
    left.set(ylim=(0, 1), title=f"test accuracy over the first {NOISE.steps} steps\n"
                                f"first step at {result.target:.3f} or more: {reached}")
    for label, history in runs.items():
        eval_steps, _, trace = _up_to(history, NOISE.steps, unit)
        right.plot(eval_steps, trace[:, 1], color=COLORS[label], lw=2, marker=".",
                   label=f"{label}: relative variation {result.variation[label]:.2f}")
    right.set(xlabel="training step", ylabel="median sigmoid input",
              title=f"unit {unit} of the last hidden layer: where its distribution sits")
    right.legend(fontsize=8)
    fig.suptitle(f"BN: {network.name}", fontsize=10)
    fig.tight_layout()
    plt.close(fig)
    return fig


# --- the slider panel -------------------------------------------------------------------

LR_OPTIONS = (0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0)
BATCH_OPTIONS = (2, 4, 8, 16, 32, 60, 128)
INIT_OPTIONS = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
BN_CHOICES = {"off": (NO_BN,), "on": (BN,), "both": (NO_BN, BN)}
LOSS_WINDOW = 10  # steps averaged in the loss curve: one batch's loss is noisy


class TrainingPanel(SliderPanel):
    """A ``SliderPanel`` whose redraw may train: a status line says "training..." as soon
    as a slider moves, then how long it took and whether the runs came from memory."""

    def __init__(self, draw, **sliders):
        self.status = widgets.HTML()
        super().__init__(draw, **sliders)
        controls = widgets.HBox(list(sliders.values()),
                                layout=widgets.Layout(flex_flow="row wrap"))
        self.widget = widgets.VBox([controls, self.status, self.output])

    def redraw(self):
        trained_before = runs_trained()
        self.status.value = "<b>training...</b>"
        start = time.perf_counter()
        super().redraw()
        trained = runs_trained() - trained_before
        how = f"trained {trained} new run(s)" if trained else "from memory"
        self.status.value = f"{how}, {time.perf_counter() - start:.1f} s"


def draw_runs(runs, title):
    """Training loss (a running mean over ``LOSS_WINDOW`` steps) and test accuracy."""
    fig, (loss_ax, accuracy_ax) = plt.subplots(1, 2, figsize=(12, 3.8))
    for label, history in runs.items():
        window = min(LOSS_WINDOW, len(history.loss))
        loss = plots.running_mean(history.loss, window)
        verdict = "" if outcome(history) == "trained" else f" ({outcome(history)})"
        loss_ax.plot(history.step[window - 1:], loss, color=COLORS[label], lw=1.5,
                     label=label + verdict)
    loss_ax.set(xlabel="training step", ylabel="training loss", yscale="log",
                title=f"training loss (mean of {LOSS_WINDOW} steps)")
    loss_ax.legend(fontsize=8)
    _accuracy_panel(accuracy_ax, runs)
    accuracy_ax.set(ylim=(0, 1), title="test accuracy")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def training_panel(centre=SWEEP, network=TORCH):
    """Sliders for the learning rate, the depth, the batch size, the weight-init scale and
    BN (off, on, or both side by side); each move trains what it has not seen before."""
    if grading():
        return None

    def draw(lr, depth, batch_size, init_scale, bn):
        settings = replace(centre, lr=lr, depth=depth, batch_size=batch_size,
                           init_scale=init_scale, network=network)
        # No progress bars: the status line says "training...", and a finished bar would
        # stay above the figure.
        runs = {label: run(replace(settings, bn=label == BN), progress=False)
                for label in BN_CHOICES[bn]}
        return draw_runs(runs, f"{depth} sigmoid layers of {centre.hidden}, learning rate "
                               f"{lr:g}, batch {batch_size}, init scale {init_scale:g}, "
                               f"{centre.steps} steps; BN: {network.name}")

    wide_label = {"description_width": "initial"}

    def choice(options, value, description):
        return widgets.SelectionSlider(options=options, value=value, description=description,
                                       continuous_update=False, style=wide_label)

    return TrainingPanel(
        draw,
        lr=choice(LR_OPTIONS, centre.lr, "learning rate"),
        depth=widgets.IntSlider(value=centre.depth, min=1, max=8, description="depth",
                                continuous_update=False, style=wide_label),
        batch_size=choice(BATCH_OPTIONS, centre.batch_size, "batch size"),
        init_scale=choice(INIT_OPTIONS, centre.init_scale, "init scale"),
        bn=widgets.ToggleButtons(options=list(BN_CHOICES), value="both",
                                 description="batch norm", style=wide_label),
    )
