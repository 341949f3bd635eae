"""Notebook 04, train vs eval: ``update_running_stats``, ``batchnorm_eval``, the
NumPy layer ``BatchNorm1d`` and ``keras_to_torch_momentum``."""

import copy

import numpy as np

from bn_course.checks import _cases, _probes, _steps
from bn_course.checks._core import (
    CandidateProblem,
    Case,
    Exercise,
    InputModified,
    Mistake,
    Observation,
    aligned,
    explain_error,
    knob_mistake,
)
from bn_course.checks.nb01_batch_statistics import BIASED_HINT
from bn_course.checks.nb02_normalizing import EPS_AS_FLOOR, EPS_MISTAKES
from bn_course.checks.nb03_scale_and_shift import (
    EPS_TIMES_VAR,
    RETURNS_OUT_AND_CACHE,
    SHIFT_THEN_SCALE,
    affine_mistakes,
    refusing_out_and_cache,
)
from bn_course.reference import numpy as ref

MOMENTUM_HINT = ("In PyTorch momentum weighs the new batch: "
                 "running = (1 - momentum) * running + momentum * batch.")
RUNNING_VAR_HINT = ("The running variance estimates the population's: use the unbiased batch "
                    "variance, np.var(x, axis=0, ddof=1), as PyTorch does.")
OLD_VALUE_CONVENTION = (
    "You followed the convention of Keras/TensorFlow, CS231n's assignment and d2l before "
    "2022: momentum weighs the OLD running value and the running variance is the biased "
    "batch variance. PyTorch does the opposite on both counts.")


# --- update_running_stats ----------------------------------------------------------

def _running_stats(rng, x):
    """Running statistics that are neither the start values nor the batch's."""
    d = x.shape[1]
    mean = (ref.batch_mean(x) + rng.standard_normal(d)).astype(x.dtype)
    var = (ref.batch_var(x) * rng.uniform(0.3, 3.0, d)).astype(x.dtype)
    return mean, var


def update_cases(group):
    rng = np.random.default_rng(13)
    cases = []
    for i, (desc, x) in enumerate(_cases.shapes(group)):
        running_mean, running_var = _running_stats(rng, x)
        momentum = _cases.momentum_for(i)
        kwargs = {} if momentum is None else {"momentum": momentum}
        text = "default momentum" if momentum is None else f"momentum={momentum}"
        cases.append(_cases.function_case(
            f"{desc}, {text}",
            {"running_mean": running_mean, "running_var": running_var, "x": x}, kwargs,
            labels=("new running mean", "new running var"),
            float32=x.dtype == np.float32, may_modify=("running_mean", "running_var")))
    return cases


def _update_with(weight_of_new="momentum", ddof=1, stat="var", update_var=True, blend=True,
                 fixed_momentum=None, swapped=False, weight_of_old="1 - new",
                 var_around="batch mean"):
    """fixed_momentum: the argument ignored, this value used instead; swapped: returns
    (var, mean); weight_of_old="1": the old value kept whole, not decayed;
    var_around="new running mean": the batch's squared deviations from the new running
    mean instead of from the batch mean."""

    def update_running_stats(running_mean, running_var, x, momentum=0.1):
        momentum = momentum if fixed_momentum is None else fixed_momentum
        new = momentum if weight_of_new == "momentum" else 1 - momentum
        old = 1 - new if weight_of_old == "1 - new" else 1
        mean, var = _steps.statistics(x, ddof=ddof, stat=stat)
        mean, var = mean[0], var[0]
        if blend:
            mean = old * running_mean + new * mean
            if var_around == "new running mean":
                var = ((x - mean) ** 2).sum(axis=0) / (len(x) - ddof)
            var = old * running_var + new * var if update_var else running_var
        return (var, mean) if swapped else (mean, var)

    return update_running_stats


def _weight_of_batch(case, new_mean):
    """w in new = (1 - w) * old + w * batch mean, when one w fits every feature; else None."""
    old = np.asarray(case.args["running_mean"], dtype=np.float64)
    gap = np.asarray(case.args["x"], dtype=np.float64).mean(axis=0) - old
    new = aligned(old, new_mean)
    if new.shape != old.shape or not np.issubdtype(new.dtype, np.number):
        return None
    usable = np.abs(gap) > 1e-3 * np.max(np.abs(gap))
    weights = (new.astype(np.float64) - old)[usable] / gap[usable]
    return float(weights[0]) if np.allclose(weights, weights[0], rtol=case.tolerance,
                                            atol=case.tolerance) else None


def implied_momentum(exercise, candidate, played):
    """The weight the candidate gives the batch mean, case by case, when it is a
    moving average at all and the weight is not the momentum."""
    seen = {}
    for p in played:
        if p.outputs is None:
            continue
        weight = _weight_of_batch(p.case, p.outputs[0][1])
        if weight is None:
            return []
        seen[p.case.kwargs.get("momentum")] = weight  # None: the default momentum
    if not seen or all(abs(w - (0.1 if m is None else m)) <= 1e-4 for m, w in seen.items()):
        return []
    pairs = ", ".join(f"{w:.4g} for " + ("the default momentum" if m is None else f"momentum={m:g}")
                      for m, w in seen.items())
    return [Observation("momentum-weight",
                        f"Your new running mean is (1 - w) * old + w * batch mean with w = "
                        f"{pairs}. In PyTorch w is the momentum itself.")]


UPDATE_RUNNING_STATS = Exercise(
    "update_running_stats", ref.update_running_stats,
    "update_running_stats(running_mean, running_var, x, momentum=0.1)", update_cases,
    build=_update_with,
    probes=(_probes.wrong_defaults, _probes.loses_digits, implied_momentum,
            _probes.constant_factor),
    hint=MOMENTUM_HINT,
    mistakes=[
        knob_mistake("old-value-momentum-and-biased-running-var", OLD_VALUE_CONVENTION,
                     f"{MOMENTUM_HINT} And: {RUNNING_VAR_HINT}",
                     weight_of_new="1 - momentum", ddof=0),
        knob_mistake("momentum-convention-flipped", "You used momentum as the weight of the OLD "
                     "value (Keras' and CS231n's convention).", MOMENTUM_HINT,
                     weight_of_new="1 - momentum"),
        knob_mistake("running-var-biased", "You updated the running variance with the biased "
                     "batch variance (divide by N).", RUNNING_VAR_HINT, ddof=0),
        knob_mistake("returns-batch-statistics", "You returned the batch statistics and "
                     "dropped the running ones.", "Blend them: (1 - momentum) * running + "
                     "momentum * batch.", blend=False),
        knob_mistake("running-var-from-std", "You blended the batch standard deviation into "
                     "the running VARIANCE.", "Use np.var(x, axis=0, ddof=1) for the running "
                     "variance.", stat="std"),
        knob_mistake("forgot-running-var", "You updated the running mean but returned the "
                     "running variance unchanged.", "Update both statistics with the same "
                     "rule.", update_var=False),
        knob_mistake("ignores-momentum", "Your code ignores the momentum argument: it always "
                     "uses PyTorch's default, 0.1.", "Use the momentum you are given; 0.1 is "
                     "only its default value.", fixed_momentum=0.1),
        knob_mistake("outputs-swapped", "You returned (new running var, new running mean): the "
                     "order is (mean, var).", "Return the new mean first, then the new "
                     "variance.", swapped=True),
        knob_mistake("old-value-not-decayed", "You added momentum * batch to the old running "
                     "value without multiplying the old value by (1 - momentum).",
                     MOMENTUM_HINT, weight_of_old="1"),
        knob_mistake("var-around-new-running-mean", "You measured the batch's squared "
                     "deviations from the NEW running mean instead of from the batch's own "
                     "mean.", "The batch variance is np.var(x, axis=0, ddof=1): deviations "
                     "from x.mean(axis=0).", var_around="new running mean"),
    ])


# --- batchnorm_eval ------------------------------------------------------------------

def eval_cases(group):
    rng = np.random.default_rng(14)
    cases = []
    for i, (desc, x) in enumerate(_cases.shapes(group)):
        running_mean, running_var = _running_stats(rng, x)
        gamma, beta = _cases.gamma_beta(rng, x.shape[1], x.dtype)
        eps = _cases.eps_for(i)
        args = {"x": x, "running_mean": running_mean, "running_var": running_var,
                "gamma": gamma, "beta": beta}
        cases.append(refusing_out_and_cache(_cases.function_case(
            f"{desc}, {_cases.eps_text(eps)}", args, _cases.with_eps({}, eps),
            float32=x.dtype == np.float32)))
    return cases


def _eval_with(batch_statistics=False, affine="right", **step_knobs):
    def batchnorm_eval(x, running_mean, running_var, gamma, beta, eps=1e-5):
        mean, var = _steps.statistics(x) if batch_statistics else (running_mean, running_var)
        x_hat = _steps.normalized(x, mean, var, eps, **step_knobs)
        return _steps.scaled(x_hat, gamma, beta, affine)
    return batchnorm_eval


BATCHNORM_EVAL = Exercise(
    "batchnorm_eval", ref.batchnorm_eval,
    "batchnorm_eval(x, running_mean, running_var, gamma, beta, eps=1e-5)", eval_cases,
    build=_eval_with, probes=_probes.FORWARD_PROBES,
    hint="Normalize with running_mean and running_var (not the batch's statistics), eps "
         "inside the square root, then scale by gamma and shift by beta.",
    mistakes=affine_mistakes() + EPS_MISTAKES + [
        knob_mistake("batch-stats-in-eval", "You normalized with the batch's own statistics. "
                     "In eval mode the running statistics are used, so one example's output "
                     "does not depend on the others.", "Use running_mean and running_var "
                     "instead of x.mean and x.var.", batch_statistics=True),
        knob_mistake("var-instead-of-std", "You divided by the running variance instead of "
                     "its square root.", "Divide by np.sqrt(running_var + eps).",
                     divide_by="var"),
        knob_mistake("forgot-running-mean", "You divided x by the running standard deviation "
                     "without subtracting running_mean first.", "Centre first: "
                     "(x - running_mean) / np.sqrt(running_var + eps).", centre="never"),
        EPS_AS_FLOOR, RETURNS_OUT_AND_CACHE, SHIFT_THEN_SCALE, EPS_TIMES_VAR,
    ])


# --- BatchNorm1d --------------------------------------------------------------------

class _BuggyBatchNorm1d:
    """A NumPy BatchNorm1d with mistakes switched on (class attributes).

    Self-contained on purpose: the checker flags any candidate that calls the
    course's reference, and these variants are played as candidates in tests."""

    flipped_momentum = False   # running = momentum * running + (1 - momentum) * batch
    biased_running_var = False
    running_stat = "var"       # "std": the batch standard deviation blended in
    update_var = True          # False: running_var never changes
    updates_in_eval = False    # "after" or "before" normalizing
    no_update_in_train = False
    updates_before_normalizing = False
    batch_stats_in_eval = False
    no_error_for_one = False
    running_var_start = 1.0
    gamma_start = 1.0
    normalize_ddof = 0         # 1: train mode normalizes with the unbiased variance
    eps_place = "inside"       # see _steps.normalized
    affine = "right"           # see _steps.scaled
    # A slip of eps_place or affine made in one mode only (None: as in the other mode).
    train_eps_place = train_affine = eval_eps_place = eval_affine = None
    fixed_momentum = None      # the momentum argument ignored, this value used
    fixed_eps = None           # the eps argument ignored, this value used
    eps_in_running_var = False  # var + eps blended in: eval mode then adds eps twice
    first_batch_sets_running = False  # the first train batch replaces the start values

    def __init__(self, num_features, eps=1e-5, momentum=0.1):
        self.eps, self.momentum, self.training = eps, momentum, True
        self.gamma = np.full(num_features, self.gamma_start)
        self.beta = np.zeros(num_features)
        self.running_mean = np.zeros(num_features)
        self.running_var = np.full(num_features, self.running_var_start)

    def train(self):
        self.training = True

    def eval(self):
        self.training = False

    def _update(self, x):
        momentum = self.momentum if self.fixed_momentum is None else self.fixed_momentum
        weight_new = 1 - momentum if self.flipped_momentum else momentum
        _, var = _steps.statistics(x, ddof=0 if self.biased_running_var else 1,
                                   stat=self.running_stat)
        var = var[0] + (self.eps if self.eps_in_running_var else 0)
        if self.first_batch_sets_running and not getattr(self, "started", False):
            self.started, weight_new = True, 1.0
        self.running_mean = (1 - weight_new) * self.running_mean + weight_new * x.mean(axis=0)
        if self.update_var:
            self.running_var = (1 - weight_new) * self.running_var + weight_new * var

    def _scale_shift(self, x, mean, var):
        eps = self.eps if self.fixed_eps is None else self.fixed_eps
        x_hat = _steps.normalized(x, mean, var, eps, eps_place=self._slip("eps_place"))
        return _steps.scaled(x_hat, self.gamma, self.beta, self._slip("affine"))

    def _slip(self, knob):
        """The value of knob ("eps_place" or "affine") in the current mode."""
        in_this_mode = getattr(self, f"{'train' if self.training else 'eval'}_{knob}")
        return getattr(self, knob) if in_this_mode is None else in_this_mode

    def __call__(self, x):
        if self.training and len(x) < 2:
            if not self.no_error_for_one:
                raise ValueError("need at least two examples in train mode")
            return np.broadcast_to(self.beta, x.shape).copy()
        if self.updates_before_normalizing and self.training or (
                self.updates_in_eval == "before" and not self.training):
            self._update(x)
        use_batch = self.training and not self.updates_before_normalizing
        if use_batch or (not self.training and self.batch_stats_in_eval):
            ddof = self.normalize_ddof if self.training else 0
            out = self._scale_shift(x, *_steps.statistics(x, ddof=ddof))
        else:
            out = self._scale_shift(x, self.running_mean, self.running_var)
        should_update = (not self.no_update_in_train and not self.updates_before_normalizing
                         if self.training else self.updates_in_eval == "after")
        if should_update:
            self._update(x)
        return out


def _layer_with(**bugs):
    return type("BuggyBatchNorm1d", (_BuggyBatchNorm1d,), bugs)


LAYER_ARRAYS = ("gamma", "beta", "running_mean", "running_var")


def _arrays_of(layer, d):
    """The layer's four arrays, which must be separate NumPy arrays of shape (D,)."""
    arrays = {}
    for name in LAYER_ARRAYS:
        value = getattr(layer, name, None)
        if not isinstance(value, np.ndarray) or value.shape not in ((d,), (1, d)):
            raise CandidateProblem(f"Right after construction, layer.{name} is {_what(value)}, "
                                   f"not a NumPy array of shape ({d},).", "not-per-feature-arrays")
        arrays[name] = value
    for i, first in enumerate(LAYER_ARRAYS):
        for second in LAYER_ARRAYS[i + 1:]:
            if np.shares_memory(arrays[first], arrays[second]):
                raise CandidateProblem(
                    f"layer.{first} and layer.{second} are the same array (or share memory), "
                    f"so changing one changes the other. Give each its own array "
                    f"(np.ones(D) and np.ones(D), not one array assigned twice).",
                    "aliased-arrays")
    return arrays


def _what(value):
    if isinstance(value, np.ndarray):
        return f"an array of shape {value.shape}"
    return "None" if value is None else f"a {type(value).__name__}"


def _check_interface(layer):
    """PyTorch habits that a plain Python class does not share, named before any call."""
    if not callable(layer) and callable(getattr(layer, "forward", None)):
        raise CandidateProblem("Your layer defines forward() but not __call__, so layer(x) "
                               "raises TypeError.", "forward-without-call")
    if not hasattr(layer, "training"):
        flags = [name for name in ("is_training", "train_mode", "mode", "_training")
                 if hasattr(layer, name)]
        found = f" (it has `{flags[0]}`)" if flags else ""
        raise CandidateProblem(f"Right after construction, your layer has no attribute "
                               f"`training`{found}.", "no-training-attribute")


def _call(layer, x, where):
    """One call of the layer; the student's error names the call that raised."""
    try:
        return _cases.call_unmodified(layer, {"x": x}, {})
    except (NotImplementedError, InputModified):
        raise
    except Exception as error:
        raise CandidateProblem(f"{where}, your layer raised {explain_error(error)}") from None


def _layer_case(description, batches, gamma, beta, kwargs, float32):
    """Drive a BatchNorm1d class: check its start, three train steps, two eval
    calls, one more train step, then a batch of one in train mode (ValueError)."""

    def play(cls):
        d = batches[0].shape[1]
        layer = cls(d, **kwargs)
        _check_interface(layer)
        arrays = _arrays_of(layer, d)
        # Snapshots: a layer may update its running arrays in place later on.
        outputs = [("training right after construction", bool(getattr(layer, "training", None))),
                   *((f"{name} at start", arrays[name].copy()) for name in LAYER_ARRAYS)]
        # Written in place, so that an array shared with another attribute shows.
        arrays["gamma"][...] = gamma.reshape(arrays["gamma"].shape)
        arrays["beta"][...] = beta.reshape(arrays["beta"].shape)
        modes = ["train", "train", "train", "eval", "eval", "train"]
        for step, (mode, x) in enumerate(zip(modes, batches), start=1):
            layer.train() if mode == "train" else layer.eval()
            out = _call(layer, x, f"on call {step} ({mode} mode)")
            outputs += [
                (f"output of call {step} ({mode} mode)", out),
                (f"running_mean after call {step} ({mode} mode)",
                 copy.deepcopy(layer.running_mean)),
                (f"running_var after call {step} ({mode} mode)", copy.deepcopy(layer.running_var)),
            ]
        outputs.append(("a batch of one in train mode raises ValueError",
                        _raises_value_error(layer, batches[0][:1])))
        return outputs

    return Case(description, play, float32)


def _raises_value_error(layer, x):
    layer.train()
    try:
        layer(x.copy())
    except ValueError:
        return True
    except Exception as error:
        raise CandidateProblem(f"On a batch of one example in train mode, your layer raised "
                               f"{explain_error(error)}.", "batch-of-one-wrong-error") from None
    return False


def layer_cases(group):
    rng = np.random.default_rng(15)
    cases = []
    for i, (desc, x) in enumerate(_cases.shapes(group)):
        n, d = x.shape
        # Each call sees a new batch with shifted statistics, as in training.
        batches = [x] + [(x + rng.standard_normal(d) + 0.5 * rng.standard_normal((n, d)))
                         .astype(x.dtype) for _ in range(5)]
        gamma, beta = _cases.gamma_beta(rng, d, x.dtype)
        eps, momentum = _cases.eps_for(i), _cases.momentum_for(i)
        kwargs = _cases.with_eps({} if momentum is None else {"momentum": momentum}, eps)
        text = ", ".join(f"{k}={v}" for k, v in kwargs.items()) or "default eps and momentum"
        cases.append(_layer_case(f"{desc} ({text})", batches, gamma, beta, kwargs,
                                 float32=x.dtype == np.float32))
    return cases


START_VALUES = {"gamma": 1.0, "beta": 0.0, "running_mean": 0.0, "running_var": 1.0}


def _start_values(exercise, candidate, played):
    """Which of the layer's arrays start at values other than PyTorch's."""
    for p in played:
        wrong = {label for label, *_ in p.differences()}
        starts = dict(p.outputs or [])
        found = [f"{name} = {_short(starts[f'{name} at start'])} (PyTorch: all {value:g})"
                 for name, value in START_VALUES.items() if f"{name} at start" in wrong]
        if found:
            return [Observation("wrong-start-values",
                                f"Your layer starts with {'; '.join(found)}.")]
    return []


def _short(values):
    return np.array2string(np.asarray(values).ravel(), precision=3, threshold=4)


def _in_one_mode(mode, mistakes):
    """The same slips of eps or of the scale and shift, made in one of the layer's paths
    only (say a train path that calls batchnorm_forward, an eval path written again)."""
    return [knob_mistake(m.id, f"Only in {mode} mode: {m.diagnosis}", m.hint,
                         **{f"{mode}_{knob}": value for knob, value in m.knobs})
            for m in mistakes]


_EPS_AND_AFFINE_SLIPS = [EPS_AS_FLOOR, *EPS_MISTAKES, EPS_TIMES_VAR, SHIFT_THEN_SCALE,
                         *affine_mistakes()]


UPDATES_IN_EVAL = ("Your layer changes its running statistics in eval mode.",
                   "Only train mode updates them; eval mode just reads them.")
BATCHNORM1D = Exercise(
    "BatchNorm1d", ref.BatchNorm1d, "BatchNorm1d(num_features, eps=1e-5, momentum=0.1)",
    layer_cases, build=_layer_with, probes=(_probes.wrong_defaults, _start_values),
    hint="Train mode: batchnorm_forward, then update_running_stats. Eval mode: batchnorm_eval.",
    mistakes=[
        knob_mistake("old-value-momentum-and-biased-running-var", OLD_VALUE_CONVENTION,
                     f"{MOMENTUM_HINT} And: {RUNNING_VAR_HINT}",
                     flipped_momentum=True, biased_running_var=True),
        knob_mistake("updates-in-eval", *UPDATES_IN_EVAL, updates_in_eval="after"),
        knob_mistake("updates-in-eval", *UPDATES_IN_EVAL, updates_in_eval="before"),
        knob_mistake("no-update-in-train", "Your layer never updates its running statistics in "
                     "train mode.", "In train mode, after computing the output, update "
                     "running_mean and running_var (update_running_stats).",
                     no_update_in_train=True),
        knob_mistake("updates-before-normalizing", "In train mode your layer updates the "
                     "running statistics first and normalizes with them, instead of with the "
                     "batch's statistics.", "Train mode normalizes with the batch mean and "
                     "variance; the update is a side effect.", updates_before_normalizing=True),
        knob_mistake("batch-stats-in-eval", "In eval mode your layer normalizes with the "
                     "batch's statistics.", "In eval mode use running_mean and running_var "
                     "(batchnorm_eval).", batch_stats_in_eval=True),
        knob_mistake("momentum-convention-flipped", "Your layer uses momentum as the weight of "
                     "the OLD running value.", MOMENTUM_HINT, flipped_momentum=True),
        knob_mistake("running-var-biased", "Your layer updates the running variance with the "
                     "biased batch variance.", RUNNING_VAR_HINT, biased_running_var=True),
        knob_mistake("no-error-for-batch-of-one", "In train mode your layer accepts a batch of "
                     "one example, whose variance is 0.", "Raise ValueError when x.shape[0] < 2 "
                     "in train mode, as PyTorch does.", no_error_for_one=True),
        knob_mistake("running-var-starts-at-zero", "Your layer starts with running_var = 0.",
                     "Start with running_mean = zeros and running_var = ones, as PyTorch does: "
                     "an untrained layer in eval mode then leaves its input unchanged.",
                     running_var_start=0.0),
        knob_mistake("gamma-starts-at-zero", "Your layer starts with gamma = 0, so its output "
                     "is beta whatever the input, and no gradient reaches the layers below.",
                     "Start with gamma = ones and beta = zeros: the layer then begins as a "
                     "plain normalization.", gamma_start=0.0),
        Mistake("aliased-arrays", "Two of your layer's arrays are one and the same.",
                "Create each with its own np.ones / np.zeros call."),
        Mistake("not-per-feature-arrays", "Each of gamma, beta, running_mean and running_var "
                "must exist as soon as the layer is built, one value per feature.",
                "Create them in __init__ with np.ones(num_features) / np.zeros(num_features); "
                "a number, or None filled in at the first call, is not a per-feature array."),
        Mistake("forward-without-call", "Only an nn.Module turns layer(x) into "
                "layer.forward(x); this layer is a plain Python class.",
                "Name the method __call__ (or add `def __call__(self, x): return "
                "self.forward(x)`)."),
        Mistake("no-training-attribute", "PyTorch's layers keep their mode in a boolean "
                "attribute named `training`, which train() and eval() set.",
                "Set self.training = True in __init__, and let train() and eval() set it."),
        Mistake("batch-of-one-wrong-error", "PyTorch raises ValueError for a batch of one in "
                "train mode, and code that catches it expects that type.",
                "Raise ValueError (not assert, not another exception) when x.shape[0] < 2 in "
                "train mode."),
        knob_mistake("forgot-running-var", "Your layer updates running_mean but never "
                     "running_var.", "Update both running statistics with the same rule.",
                     update_var=False),
        knob_mistake("running-var-from-std", "Your layer blends the batch standard deviation "
                     "into the running VARIANCE.", RUNNING_VAR_HINT, running_stat="std"),
        knob_mistake("unbiased-variance", "In train mode your layer normalizes with the "
                     "unbiased variance (divide by N - 1).", BIASED_HINT, normalize_ddof=1),
        knob_mistake("ignores-momentum", "Your layer ignores its momentum: it always uses "
                     "PyTorch's default, 0.1.", "Use self.momentum, set from the constructor's "
                     "argument.", fixed_momentum=0.1),
        knob_mistake("ignores-eps", "Your layer ignores its eps: it always uses PyTorch's "
                     "default, 1e-5.", "Use self.eps, set from the constructor's argument.",
                     fixed_eps=1e-5),
        knob_mistake("eps-in-running-var", "Your layer adds eps to the batch variance before "
                     "blending it into running_var, so eval mode adds eps twice.",
                     "Keep eps out of the statistics: it is added only where you divide.",
                     eps_in_running_var=True),
        knob_mistake("running-stats-start-from-first-batch", "Your layer's first train step "
                     "replaces running_mean and running_var with that batch's statistics "
                     "instead of blending them into the start values.",
                     "Every train step, the first one included, blends: (1 - momentum) * "
                     "running + momentum * batch, starting from zeros and ones.",
                     first_batch_sets_running=True),
        knob_mistake("eval-forgets-scale-and-shift", "In eval mode your layer returns the "
                     "normalized x without gamma and beta.", "Eval mode scales and shifts too: "
                     "only the statistics change between the modes.", eval_affine="none"),
        *_EPS_AND_AFFINE_SLIPS,
        *_in_one_mode("train", _EPS_AND_AFFINE_SLIPS),
        # returns-normalized-not-scaled in eval mode only is eval-forgets-scale-and-shift.
        *_in_one_mode("eval", [m for m in _EPS_AND_AFFINE_SLIPS
                               if m.id != "returns-normalized-not-scaled"]),
    ])


# --- keras_to_torch_momentum ------------------------------------------------------

def keras_cases(group):
    values = {"basic": [0.99, 0.9], "awkward": [0.0, 1.0, 0.999], "float32": [np.float32(0.99)]}
    return [_cases.function_case(f"Keras momentum {m}", {"m": m}, float32=group == "float32")
            for m in values[group]]


KERAS_TO_TORCH_MOMENTUM = Exercise(
    "keras_to_torch_momentum", ref.keras_to_torch_momentum, "keras_to_torch_momentum(m)",
    keras_cases, hint="Keras' momentum weighs the old value, PyTorch's the new one.",
    mistakes=[
        Mistake("keras-momentum-not-converted", "You returned Keras' momentum unchanged.",
                "Keras' momentum weighs the old value, PyTorch's the new one: they add up "
                "to 1.", variant=lambda m: m),
        Mistake("keras-conversion-sign-flipped", "You returned m - 1, a negative momentum.",
                "PyTorch's momentum is 1 - m.", variant=lambda m: m - 1),
    ])

EXERCISES = [UPDATE_RUNNING_STATS, BATCHNORM_EVAL, BATCHNORM1D, KERAS_TO_TORCH_MOMENTUM]
