"""Notebook 06, images and a PyTorch module: ``batchnorm2d_forward`` (NumPy) and
``BatchNorm2d`` (a torch.nn.Module written from scratch)."""

import numpy as np

from bn_course.checks import _cases, _probes, _steps
from bn_course.checks._core import (
    CandidateProblem,
    Case,
    Exercise,
    Mistake,
    Observation,
    explain_error,
    knob_mistake,
    unwatched,
)
from bn_course.checks.nb02_normalizing import EPS_MISTAKES
from bn_course.checks.nb03_scale_and_shift import affine_mistakes, forward_with, variance_mistakes
from bn_course.reference import numpy as ref

CHANNEL_HINT = ("x has shape (N, C, H, W): every channel has one mean and one variance, "
                "taken over axis=(0, 2, 3).")
BIASED_HINT = ("Normalize with the biased variance: divide by N * H * W, as "
               "np.var(x, axis=(0, 2, 3)) does by default.")


# --- batchnorm2d_forward ----------------------------------------------------------

def forward2d_cases(group):
    # Images as wide as they have channels: gamma and beta left as (C,) vectors then
    # broadcast along W and give wrong values instead of failing to broadcast.
    n, c, h = {"basic": (3, 4, 2), "awkward": (2, 3, 1), "float32": (2, 3, 2)}[group]
    square_rng = np.random.default_rng(170)
    x = square_rng.standard_normal((n, c, h, c)) * square_rng.uniform(0.5, 2, (1, c, 1, 1))
    square = (f"a {'float32 ' if group == 'float32' else ''}({n}, {c}, {h}, {c}) batch",
              x.astype(np.float32) if group == "float32" else x)
    return _cases.gamma_beta_cases(_cases.image_shapes(group) + [square],
                                   np.random.default_rng(17))


def _forward2d_with(layout="per-channel", affine_shape="(1, C, 1, 1)", **knobs):
    """layout "reshaped": x.reshape(-1, C) without moving C last first, so each
    'feature' mixes channels and pixels. affine_shape "(C,)": gamma and beta applied as
    they come, so NumPy broadcasts them along the last axis, W."""
    if affine_shape == "(C,)":
        x_hat_of = forward_with(**{"axis": (0, 2, 3), **knobs, "affine": "none"})

        def unshaped(x, gamma, beta, eps=1e-5):
            return _steps.scaled(x_hat_of(x, gamma, beta, eps), gamma, beta,
                                 knobs.get("affine", "right"))

        return unshaped
    forward = forward_with(**{"axis": (0, 2, 3), **knobs})
    if layout == "per-channel":
        return forward

    def reshaped(x, gamma, beta, eps=1e-5):
        c = x.shape[1]
        flat = x.reshape(-1, c)
        x_hat = (flat - flat.mean(axis=0)) / np.sqrt(flat.var(axis=0) + eps)
        return (x_hat * gamma + beta).reshape(x.shape)

    return reshaped


BATCHNORM2D_FORWARD = Exercise(
    "batchnorm2d_forward", ref.batchnorm2d_forward, "batchnorm2d_forward(x, gamma, beta, eps=1e-5)",
    forward2d_cases, build=_forward2d_with,
    probes=(_probes.wrong_defaults, _probes.ignores_eps, _probes.values_misplaced,
            _probes.statistics_axes, _probes.constant_factor),
    hint="One mean and one biased variance per channel over axis=(0, 2, 3) (keepdims=True), "
         "then gamma and beta reshaped to (1, C, 1, 1).",
    mistakes=affine_mistakes() + variance_mistakes(BIASED_HINT) + EPS_MISTAKES + [
        knob_mistake("stats-over-hw-only", "You took statistics over H and W of each image "
                     "separately (InstanceNorm).", CHANNEL_HINT, axis=(2, 3)),
        knob_mistake("stats-over-n-only", "You took statistics over the batch axis only, one "
                     "per pixel and channel.", CHANNEL_HINT, axis=0),
        knob_mistake("stats-per-example", "You normalized each example over all its channels "
                     "and pixels (LayerNorm).", CHANNEL_HINT, axis=(1, 2, 3)),
        knob_mistake("no-axis", "You took one mean and one variance over the whole tensor, not "
                     "one per channel.", CHANNEL_HINT, axis=None),
        knob_mistake("gamma-beta-not-reshaped", "You applied gamma and beta as (C,) vectors: "
                     "broadcasting lines them up with the last axis of (N, C, H, W), the width, "
                     "not the channels.", "Reshape them to (1, C, 1, 1): "
                     "gamma.reshape(1, -1, 1, 1).", affine_shape="(C,)"),
        knob_mistake("reshape-without-moving-channels", "You reshaped x to (N*H*W, C) without "
                     "moving the channels last first: x.reshape(-1, C) on an (N, C, H, W) array "
                     "mixes channels and pixels in each column.",
                     "Either reduce over axis=(0, 2, 3) directly, or move C last first: "
                     "x.transpose(0, 2, 3, 1).reshape(-1, C).", pairs=False, layout="reshaped"),
    ])


# --- BatchNorm2d, a torch.nn.Module ---------------------------------------------------

def _torch_batchnorm2d(num_features, eps=1e-5, momentum=0.1):
    """The oracle for the module exercise: PyTorch's own layer (its defaults written out,
    so that a probe can compare them with the candidate's)."""
    import torch
    return torch.nn.BatchNorm2d(num_features, eps=eps, momentum=momentum)


STATE_KEYS = ["bias", "num_batches_tracked", "running_mean", "running_var", "weight"]


def _numpy_of(tensor, what):
    if tensor is None:
        raise CandidateProblem(f"{what} is None: no gradient reached it. Is it an nn.Parameter, "
                               "and does the forward pass use only torch operations on it?")
    if not hasattr(tensor, "detach"):
        raise CandidateProblem(f"{what} should be a torch.Tensor, got {type(tensor).__name__}.")
    # A copy: for a float64 CPU tensor .numpy() is a view, and a snapshot of a
    # buffer must not follow the buffer's later in-place updates.
    return tensor.detach().cpu().double().numpy().copy()


def _module_case(description, batches, douts, weight, bias, loaded_state, kwargs, float32):
    """Drive a BatchNorm2d module the way training does: its start values, train
    steps with a backward pass, eval calls, then state_dict round trips with
    torch.nn.BatchNorm2d. Runs on CUDA when there is one."""

    def play(cls):
        from bn_course.train import one_thread  # these tensors are tiny: threads only cost time
        with one_thread():
            return play_on_one_thread(cls)

    def play_on_one_thread(cls):
        import torch
        device = "cuda" if torch.cuda.is_available() else "cpu"
        like = {"device": device, "dtype": torch.float32 if float32 else torch.float64}

        def tensor(values):
            return torch.tensor(values, **like)

        channels = batches[0].shape[1]
        layer = cls(channels, **kwargs)
        if not isinstance(layer, torch.nn.Module):
            raise CandidateProblem(f"BatchNorm2d({channels}) should build a torch.nn.Module, "
                                   f"got {type(layer).__name__}.")
        _check_no_builtin_inside(layer, torch)
        _check_state_keys(layer, sorted(layer.state_dict()))
        layer = layer.to(**like)
        _check_start_values(layer, channels)
        outputs = []
        with torch.no_grad():
            layer.weight.copy_(tensor(weight))
            layer.bias.copy_(tensor(bias))
        modes = ["train", "train", "train", "eval", "eval", "train"]
        for step, (mode, x_values, dout) in enumerate(zip(modes, batches, douts), start=1):
            layer.train(mode == "train")
            x = tensor(x_values).requires_grad_(True)
            where = f"call {step} ({mode} mode)"
            out = _forward(layer, x, where)
            outputs.append((f"output of {where}", _output_of(out, x, where)))
            _check_buffers_after_update(layer, where)
            _backward(out, tensor(dout), where)
            outputs += [(f"{name} after {where}", _numpy_of(value, f"{name} after {where}"))
                        for name, value in [("x.grad", x.grad), ("weight.grad", layer.weight.grad),
                                            ("bias.grad", layer.bias.grad),
                                            ("running_mean", layer.running_mean),
                                            ("running_var", layer.running_var),
                                            ("num_batches_tracked", layer.num_batches_tracked)]]
            layer.zero_grad()
        return outputs + _state_dict_round_trips(layer, cls, kwargs, tensor(batches[0]),
                                                 loaded_state, like)

    return Case(description, play, float32)


def _check_no_builtin_inside(layer, torch):
    """A torch.nn.BatchNorm* held inside the module does the work for it (the module
    itself may subclass nn.BatchNorm2d for its parameters and buffers)."""
    inside = [name for name, module in layer.named_modules()
              if name and isinstance(module, torch.nn.modules.batchnorm._BatchNorm)]
    if inside:
        raise CandidateProblem(f"Your module holds a torch.nn batch-norm layer (`{inside[0]}`).",
                               "uses-builtin-batchnorm")


START_VALUES = {"weight": 1.0, "bias": 0.0, "running_mean": 0.0, "running_var": 1.0}


def _check_start_values(layer, channels):
    """torch.nn.BatchNorm2d starts as the identity: weight 1, bias 0, running mean 0 and
    running variance 1, each a vector of shape (C,). Checked before anything else, since
    every later output builds on them."""
    for name in ("running_mean", "running_var"):
        if getattr(getattr(layer, name), "requires_grad", False):
            raise CandidateProblem(f"Your module's {name} requires grad.",
                                   "running-stats-are-parameters")
    for name, value in START_VALUES.items():
        start = _numpy_of(getattr(layer, name), f"{name} at start")
        if start.shape != (channels,):
            raise CandidateProblem(f"Your module's {name} has shape {start.shape}.",
                                   "not-per-channel-vectors")
        if not np.all(start == value):
            shown = np.array2string(start[:4], precision=4, separator=", ")
            mistake = "weight-not-ones" if name in ("weight", "bias") else "running-stats-start"
            raise CandidateProblem(f"Your module starts with {name} = {shown}"
                                   f"{'...' if start.size > 4 else ''}.", mistake)


def _check_buffers_after_update(layer, where):
    """The running buffers keep their shape (C,), and stay out of the autograd graph (a
    buffer that requires grad carries the graph of the step that updated it)."""
    channels = layer.weight.shape[0]
    for name in ("running_mean", "running_var"):
        buffer = getattr(layer, name, None)
        if getattr(buffer, "requires_grad", False):
            raise CandidateProblem(f"After {where}, your {name} requires grad: it is part of "
                                   "the autograd graph.", "running-stats-in-graph")
        if tuple(getattr(buffer, "shape", ())) != (channels,):
            raise CandidateProblem(f"After {where}, your {name} has shape "
                                   f"{tuple(getattr(buffer, 'shape', ()))}, not ({channels},).",
                                   "running-stats-change-shape")


def _check_state_keys(layer, keys):
    if keys == STATE_KEYS:
        return
    missing = [key for key in STATE_KEYS if key not in keys]
    extra = [key for key in keys if key not in STATE_KEYS]
    message = (f"Your module's state_dict differs from torch.nn.BatchNorm2d's: missing "
               f"{missing or 'nothing'}, unexpected {extra or 'nothing'}.")
    raise CandidateProblem(message, _state_keys_mistake(layer, missing, extra))


def _state_keys_mistake(layer, missing, extra):
    """The catalogue id for a state_dict with other keys than torch's, or None."""
    if extra and missing:  # gamma and beta, moving_mean... for PyTorch's names
        return "state-dict-names-differ"
    if extra:
        return None
    if missing == ["num_batches_tracked"]:
        return "num-batches-not-registered"
    # Missing running statistics that the module holds all the same: plain attributes.
    held = all(hasattr(getattr(layer, key, None), "shape") for key in missing
               if key != "num_batches_tracked")
    return "buffers-not-registered" if held else None


def _forward(layer, x, where):
    try:
        return layer(x)
    except NotImplementedError:
        raise
    except Exception as error:
        raise CandidateProblem(f"on {where}, forward() raised {explain_error(error)}") from None


def _output_of(out, x, where):
    if out is None:
        raise CandidateProblem(f"forward() returned None on {where}: is a `return` missing?")
    if not hasattr(out, "detach"):
        raise CandidateProblem(f"forward() returned a {type(out).__name__} on {where}; "
                               "it should return a torch.Tensor.")
    if tuple(out.shape) != tuple(x.shape):
        raise CandidateProblem(f"forward() returned shape {tuple(out.shape)} on {where}, "
                               f"expected the input's shape {tuple(x.shape)}.")
    return _numpy_of(out, f"the output of {where}")


def _backward(out, dout, where):
    """Backpropagate through the candidate's output, explaining why it can't."""
    if not out.requires_grad:
        raise CandidateProblem(f"The output of {where} is not connected to the input's graph: "
                               "does forward() detach, or go through NumPy?")
    try:
        out.backward(dout)
    except RuntimeError as error:
        if "second time" in str(error):
            raise CandidateProblem(f"Backpropagating on {where} failed: the running statistics "
                                   "carry the autograd graph of an earlier step.",
                                   "running-stats-in-graph") from None
        raise CandidateProblem(f"Backpropagating through your module failed on {where}: "
                               f"{error}") from None


def _state_dict_round_trips(layer, cls, kwargs, x, loaded_state, like):
    """Eval outputs after loading the candidate's state into torch's layer, and
    a torch layer's state (``loaded_state``: NumPy values) into the candidate's."""
    import torch
    channels = x.shape[1]
    with unwatched(), torch.no_grad():
        native = torch.nn.BatchNorm2d(channels, **kwargs).to(**like)
        native.load_state_dict(layer.state_dict())
        native_output = native.eval()(x)
        theirs = torch.nn.BatchNorm2d(channels, **kwargs).to(**like)
        for name, values in loaded_state.items():
            getattr(theirs, name).copy_(torch.from_numpy(values))
    yours = cls(channels, **kwargs).to(**like)
    yours.load_state_dict(theirs.state_dict())
    with torch.no_grad():
        return [("torch.nn.BatchNorm2d loaded with your state_dict, eval output",
                 _numpy_of(native_output, "the eval output")),
                ("your module loaded with torch.nn.BatchNorm2d's state_dict, eval output",
                 _numpy_of(yours.eval()(x), "the eval output"))]


def module_cases(group):
    rng = np.random.default_rng(18)
    cases = []
    for i, (desc, x) in enumerate(_cases.image_shapes(group)):
        if x.shape[0] * x.shape[2] * x.shape[3] < 2 or np.abs(x).max() > 1e5:
            continue  # float32 tensors cannot hold a 1e6 offset exactly
        batches = [x] + [x + rng.standard_normal((1, x.shape[1], 1, 1))
                         + 0.5 * rng.standard_normal(x.shape) for _ in range(5)]
        douts = [rng.standard_normal(x.shape) for _ in batches]
        channels = x.shape[1]
        weight, bias = _cases.gamma_beta(rng, channels, np.float64)
        # A state that is clearly not the start values, to load into the candidate.
        loaded_state = {"running_mean": rng.uniform(-1, 1, channels),
                        "running_var": rng.uniform(0.5, 2, channels),
                        "weight": rng.uniform(0.5, 2, channels)}
        eps, momentum = _cases.eps_for(i), _cases.momentum_for(i)
        kwargs = _cases.with_eps({} if momentum is None else {"momentum": momentum}, eps)
        text = ", ".join(f"{k}={v}" for k, v in kwargs.items()) or "default eps and momentum"
        cases.append(_module_case(f"{desc} ({text})", batches, douts, weight, bias,
                                  loaded_state, kwargs, float32=x.dtype == np.float32))
    return cases


def first_difference(exercise, candidate, played):
    """Where a module first goes wrong, in the order it was used: outputs, gradients and
    buffers are recorded step by step, and a later value often differs only because of an
    earlier one."""
    for p in played:
        wrong = {label for label, *_ in p.differences()}
        if not wrong:
            continue
        first = next(label for label, _ in p.outputs if label in wrong)
        return [Observation("first-difference",
                            f"On {p.case.description}, the first value that differs from "
                            f"torch.nn.BatchNorm2d's is {first}: every output, gradient and "
                            "buffer recorded before it matches.")]
    return []


def _buggy_module(**bugs):
    """A from-scratch torch BatchNorm2d with mistakes (the class is built on first
    use, so that importing the checkers does not import torch)."""

    default_momentum = bugs.get("default_momentum", 0.1)  # Keras' and CS231n's differ

    def build(num_features, eps=1e-5, momentum=default_momentum):
        import torch

        class BuggyBatchNorm2d(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.eps, self.momentum = eps, momentum
                self.weight = torch.nn.Parameter(torch.full((num_features,),
                                                            bugs.get("weight_start", 1.0)))
                self.bias = torch.nn.Parameter(torch.zeros(num_features))
                buffers = {"running_mean": torch.zeros(num_features),
                           "running_var": torch.full((num_features,),
                                                     bugs.get("running_var_start", 1.0)),
                           "num_batches_tracked": torch.tensor(0)}
                for name, value in buffers.items():
                    if bugs.get("plain_attributes"):
                        setattr(self, name, value)
                    else:
                        self.register_buffer(name, value)

            def forward(self, x):
                if bugs.get("counts_in_eval") and not self.training:
                    self.num_batches_tracked += 1
                if self.training and bugs.get("running_stats_in_train"):
                    with torch.no_grad():
                        self._update(x)  # and then normalize with the updated buffers
                axes = bugs.get("axes", (0, 2, 3))
                batch_mean = x.mean(axes, keepdim=True)
                batch_var = x.var(axes, unbiased=bool(bugs.get("unbiased")), keepdim=True)
                use_batch = (self.training and not bugs.get("running_stats_in_train")
                             or bugs.get("batch_stats_in_eval"))
                mean = batch_mean if use_batch else self.running_mean.view(1, -1, 1, 1)
                var = batch_var if use_batch else self.running_var.view(1, -1, 1, 1)
                eps = 0.0 if bugs.get("eval_forgot_eps") and not use_batch else self.eps
                if bugs.get("eps_outside_sqrt"):
                    out = (x - mean) / (torch.sqrt(var) + eps)
                else:
                    out = (x - mean) / torch.sqrt(var + eps)
                out = out * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)
                if bugs.get("running_stats_in_train"):
                    return out
                if self.training or bugs.get("updates_in_eval"):
                    if bugs.get("update_in_graph"):
                        self._update(x)
                    else:
                        with torch.no_grad():
                            self._update(x)
                return out

            def _update(self, x):
                if bugs.get("no_running_update"):
                    self.num_batches_tracked += 1
                    return
                n = x.shape[0] if bugs.get("bessel_with_batch_size") else x.numel() // x.shape[1]
                var = x.var((0, 2, 3), unbiased=False)
                if not bugs.get("biased_running_var"):
                    var = var * n / (n - 1)
                if bugs.get("running_std"):
                    var = var.sqrt()
                new = 1 - self.momentum if bugs.get("flipped_momentum") else self.momentum
                self.running_mean = (1 - new) * self.running_mean + new * x.mean((0, 2, 3))
                self.running_var = (1 - new) * self.running_var + new * var
                if not bugs.get("forgets_num_batches_tracked"):
                    self.num_batches_tracked += 1

        return BuggyBatchNorm2d()

    return build


def _wraps_torch_layer(num_features, eps=1e-5, momentum=0.1):
    import torch

    class Wrapper(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = torch.nn.BatchNorm2d(num_features, eps=eps, momentum=momentum)

        def forward(self, x):
            return self.inner(x)

    return Wrapper()


OLD_VALUE_AND_BIASED = ("Your module follows the CS231n / d2l (before 2022) convention: "
                        "momentum weighs the OLD running value and the running variance is "
                        "biased.")
MOMENTUM_HINT = ("PyTorch: momentum=0.1 by default, and running = (1 - momentum) * running + "
                 "momentum * batch.")
OLD_VALUE_DEFAULT = ("Your module follows the Keras / CS231n momentum convention: its default "
                     "momentum (0.9 or 0.99) is the weight of the OLD running value.")

MODULE_HINT = ("Mirror torch.nn.BatchNorm2d: nn.Parameter weight and bias, register_buffer for "
               "running_mean, running_var and num_batches_tracked.")


def _module_mistake(mistake_id, diagnosis, hint, **knobs):
    # Each step of a module case runs a forward and a backward pass: pairs would cost
    # seconds, so module mistakes are tried one at a time.
    return knob_mistake(mistake_id, diagnosis, hint, pairs=False, **knobs)


BATCHNORM2D = Exercise(
    "BatchNorm2d", _torch_batchnorm2d,
    "BatchNorm2d(num_features, eps=1e-5, momentum=0.1), a torch.nn.Module", module_cases,
    build=_buggy_module, needs_torch=True, time_limit_s=30.0, hint=MODULE_HINT,
    probes=(_probes.wrong_defaults, first_difference),
    mistakes=[
        # With PyTorch's default momentum, and with CS231n's default of 0.9.
        *[_module_mistake("old-value-momentum-and-biased-running-var", OLD_VALUE_AND_BIASED,
                          "PyTorch: running = (1 - momentum) * running + momentum * batch, "
                          "with the unbiased batch variance.", flipped_momentum=True,
                          biased_running_var=True, default_momentum=default)
          for default in (0.1, 0.9)],
        *[_module_mistake("old-value-momentum-by-default", OLD_VALUE_DEFAULT, MOMENTUM_HINT,
                          flipped_momentum=True, default_momentum=default)
          for default in (0.9, 0.99)],
        _module_mistake("momentum-convention-flipped", "Your module uses momentum as the weight "
                        "of the OLD running value.", "PyTorch: running = (1 - momentum) * "
                        "running + momentum * batch.", flipped_momentum=True),
        _module_mistake("running-var-biased", "Your module updates the running variance with "
                        "the biased batch variance.", "Multiply the biased variance by "
                        "M / (M - 1), M = N * H * W values per channel.", biased_running_var=True),
        _module_mistake("ignores-training-flag", "Your module behaves the same in train and "
                        "eval mode: in eval mode it still normalizes with the batch's "
                        "statistics and updates its running statistics (a mode flag of your "
                        "own, or none, instead of self.training).", "Branch on self.training, "
                        "which model.train() and model.eval() set: eval mode uses the running "
                        "buffers and leaves them alone.", batch_stats_in_eval=True,
                        updates_in_eval=True),
        _module_mistake("unbiased-variance", "Your module normalizes with the unbiased batch "
                        "variance (torch's x.var() divides by M - 1 by default).", "Normalize "
                        "with x.var(dim=(0, 2, 3), unbiased=False); the unbiased variance "
                        "belongs in the running_var update only.", unbiased=True),
        _module_mistake("eps-outside-sqrt", "Your module adds eps to the standard deviation, "
                        "outside the square root.", "Divide by torch.sqrt(var + self.eps).",
                        eps_outside_sqrt=True),
        _module_mistake("running-stats-in-train", "In train mode your module normalizes with "
                        "its running statistics (just updated) instead of the batch's own.",
                        "Train mode normalizes with the batch's mean and biased variance; the "
                        "running statistics are only updated there, and used in eval mode.",
                        running_stats_in_train=True),
        _module_mistake("bessel-with-batch-size", "Your module corrects the running variance "
                        "with N / (N - 1), N the batch size, but each channel's variance is "
                        "taken over M = N * H * W values.", "Multiply the biased variance by "
                        "M / (M - 1), M = x.numel() // x.shape[1].",
                        bessel_with_batch_size=True),
        _module_mistake("running-stats-never-updated", "Your module never updates "
                        "running_mean and running_var in train mode.", "After normalizing a "
                        "training batch, blend its statistics into the buffers: running = "
                        "(1 - momentum) * running + momentum * batch.", no_running_update=True),
        _module_mistake("running-var-holds-std", "Your module updates running_var with the "
                        "batch's standard deviation, not its variance.", "running_var holds a "
                        "variance: blend in the unbiased batch variance, x.var(dim=(0, 2, 3)).",
                        running_std=True),
        _module_mistake("counts-batches-in-eval", "Your module adds 1 to num_batches_tracked in "
                        "eval mode as well.", "Count only training steps: increment "
                        "num_batches_tracked where the running statistics are updated.",
                        counts_in_eval=True),
        _module_mistake("eval-forgets-eps", "In eval mode your module divides by "
                        "sqrt(running_var), without eps.", "Eval mode normalizes exactly as "
                        "train mode does, with the running statistics: "
                        "torch.sqrt(running_var + self.eps).", eval_forgot_eps=True),
        Mistake("running-stats-are-parameters", "Your running statistics are trainable "
                "nn.Parameters: an optimizer would change them, and every forward pass would "
                "build a graph through them.", "Register them with self.register_buffer(name, "
                "tensor): buffers are saved in the state_dict and move with .to(device), but "
                "are not trained."),
        Mistake("state-dict-names-differ", "Your module names its parameters or buffers "
                "differently from torch.nn.BatchNorm2d (gamma and beta, moving_mean...), so "
                "the two cannot exchange state_dicts.", "Use PyTorch's names: weight, bias "
                "(nn.Parameter), running_mean, running_var and num_batches_tracked "
                "(register_buffer)."),
        Mistake("not-per-channel-vectors", "Your module keeps a parameter or buffer in "
                "another shape than torch.nn.BatchNorm2d's vectors of shape (C,), so the two "
                "cannot exchange state_dicts.", "Keep weight, bias, running_mean and running_var "
                "as (C,) vectors, and reshape them in forward: self.weight.view(1, -1, 1, 1)."),
        Mistake("running-stats-change-shape", "Your module's running statistics change shape "
                "when they are updated (statistics taken with keepdim=True are (1, C, 1, 1)).",
                "Update the buffers with per-channel vectors of shape (C,): "
                "x.mean(dim=(0, 2, 3)) without keepdim, or .flatten() the kept dimensions."),
        _module_mistake("running-stats-start", "Your module does not start with running_mean "
                        "= 0 and running_var = 1.", "Start as torch.nn.BatchNorm2d does: "
                        "torch.zeros(C) for running_mean, torch.ones(C) for running_var (a "
                        "running variance of 0 would divide by sqrt(eps) in eval mode).",
                        running_var_start=0.0),
        _module_mistake("updates-in-eval", "Your module updates its running statistics in eval "
                        "mode.", "Update them only when self.training is True.",
                        updates_in_eval=True),
        _module_mistake("batch-stats-in-eval", "In eval mode your module normalizes with the "
                        "batch's statistics.", "In eval mode (self.training is False) use the "
                        "running buffers.", batch_stats_in_eval=True),
        _module_mistake("stats-over-hw-only", "Your module takes statistics over H and W of "
                        "each image separately.", CHANNEL_HINT, axes=(2, 3)),
        _module_mistake("num-batches-not-tracked", "Your module never increments "
                        "num_batches_tracked.", "Add 1 to num_batches_tracked at every training "
                        "step, as torch.nn.BatchNorm2d does (momentum=None uses it for a "
                        "cumulative average).", forgets_num_batches_tracked=True),
        _module_mistake("weight-not-ones", "Your module does not start with weight = 1 (and "
                        "bias = 0).", "Start as torch.nn.BatchNorm2d does: torch.ones(C) for "
                        "the weight, torch.zeros(C) for the bias.", weight_start=0.0),
        _module_mistake("buffers-not-registered", "Your running statistics are plain "
                        "attributes, so they are missing from the state_dict and do not move "
                        "with .to(device).", MODULE_HINT, plain_attributes=True),
        Mistake("num-batches-not-registered", "Your module has no num_batches_tracked buffer, "
                "which torch.nn.BatchNorm2d's state_dict holds, so the two cannot exchange "
                "state_dicts.", "self.register_buffer('num_batches_tracked', torch.tensor(0, "
                "dtype=torch.long)) in __init__, and add 1 to it at every training step."),
        _module_mistake("running-stats-in-graph", "Your module updates its running statistics "
                        "inside the autograd graph, so the buffers remember how they were "
                        "computed, and a later backward pass through them fails (PyTorch's own "
                        "message suggests retain_graph=True, which is not the fix).",
                        "Update the buffers under `with torch.no_grad():` (or from "
                        "x.detach()): they are statistics, not something to differentiate.",
                        update_in_graph=True),
        Mistake("uses-builtin-batchnorm", "Your module wraps or calls PyTorch's own batch norm "
                "(its forward, F.batch_norm or torch.batch_norm).",
                "Write the forward pass yourself from torch operations: that is the exercise. "
                "Subclassing nn.BatchNorm2d for its parameters and buffers is fine, as long as "
                "your forward does the work.", variant=_wraps_torch_layer),
    ])

EXERCISES = [BATCHNORM2D_FORWARD, BATCHNORM2D]
