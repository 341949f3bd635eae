"""Notebook 09, batch norm in practice: ``freeze_batchnorm``, ``zero_init_last_bn`` and
``param_groups``, three functions on PyTorch models.

A case builds a small float64 model (seeded, so every candidate gets the same weights),
hands it to the candidate, then drives it the way a training script would and reports
what it observes as arrays and booleans: BN's statistics and parameters after training
steps in train mode, which parameters changed, whether a state_dict still loads, the
weight decay each parameter received. The model's own forward passes run out of sight
of the forbidden-call watch (they *are* PyTorch's batch norm); the candidate's call is
watched. Mistakes are ready variants, each written as the mistake is usually made.
"""

import copy

import numpy as np

from bn_course.checks._core import CandidateProblem, Case, Exercise, unwatched, variant_mistake


def _reference(name):
    """The course's answer ``name`` from bn_course.reference.torch, imported when first
    called: importing the checkers must not import torch (notebooks 01-03 use none)."""

    def reference(*args):
        from bn_course.reference import torch as answers

        return getattr(answers, name)(*args)

    reference.__name__ = name
    return reference


# --- models the cases are played on -------------------------------------------------------

def _mlp(seed):
    """Linear -> BN -> ReLU -> Linear -> BN -> ReLU -> Linear, float64, train mode."""
    import torch
    from torch import nn

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = nn.Sequential(nn.Linear(6, 8, bias=False), nn.BatchNorm1d(8), nn.ReLU(),
                              nn.Linear(8, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))
    return _randomized(model.double(), seed)


def _conv_net(seed):
    """Conv -> BN2d -> ReLU, a nested residual stage (a block with a projection shortcut
    and one without), pooling, then Linear -> BN1d -> ReLU -> Linear: BN layers of both
    kinds at three depths of nesting."""
    import torch
    from torch import nn

    from bn_course.blocks import conv_block

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = nn.Sequential(
            nn.Conv2d(2, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU(),
            nn.Sequential(conv_block(4, 6, stride=2), conv_block(6)),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
            nn.Linear(6, 5), nn.BatchNorm1d(5), nn.ReLU(), nn.Linear(5, 3))
    return _randomized(model.double(), seed)


def _residual_mlp(seed, blocks=3):
    """A stem, ``blocks`` residual MLP blocks with identity shortcuts, a head."""
    import torch
    from torch import nn

    from bn_course.blocks import mlp_block

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = nn.Sequential(nn.Linear(6, 5, bias=False), nn.BatchNorm1d(5), nn.ReLU(),
                              *[mlp_block(5) for _ in range(blocks)], nn.Linear(5, 3))
    return _randomized(model.double(), seed)


def _mixed_residual_mlp(seed):
    """Residual MLP blocks nested in a Sequential: one that widens (a projection shortcut
    with its own BN) and one whose branch nests its last BN one level deeper."""
    import torch
    from torch import nn

    from bn_course.blocks import ResidualBlock, mlp_block

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        deep_branch = nn.Sequential(nn.Linear(7, 7, bias=False), nn.BatchNorm1d(7), nn.ReLU(),
                                    nn.Sequential(nn.Linear(7, 7, bias=False), nn.BatchNorm1d(7)))
        model = nn.Sequential(nn.Linear(6, 5), nn.ReLU(),
                              nn.Sequential(mlp_block(5, 7), ResidualBlock(deep_branch)),
                              nn.Linear(7, 3))
    return _randomized(model.double(), seed)


def _tied_net(seed):
    """An autoencoder-like MLP whose last layer shares the first layer's weight (tied), and a
    BatchNorm1d without learnable parameters (affine=False)."""
    import torch
    from torch import nn

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = nn.Sequential(nn.Linear(6, 6), nn.BatchNorm1d(6, affine=False), nn.ReLU(),
                              nn.Linear(6, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, 6))
        model[6].weight = model[0].weight
    return _randomized(model.double(), seed)


def _randomized(model, seed):
    """BN state away from its start values (running mean 0, var 1, gamma 1, beta 0), so
    that whatever a candidate resets, zeroes or leaves alone shows."""
    import torch

    from bn_course.blocks import batchnorm_layers

    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for bn in batchnorm_layers(model):
            size = bn.running_mean.shape
            bn.running_mean.copy_(torch.rand(size, generator=generator, dtype=torch.float64) - 0.5)
            bn.running_var.copy_(torch.rand(size, generator=generator, dtype=torch.float64) + 0.5)
            if bn.affine:
                bn.weight.copy_(torch.rand(size, generator=generator, dtype=torch.float64) + 0.5)
                bn.bias.copy_(torch.rand(size, generator=generator, dtype=torch.float64) - 0.5)
    return model.train()


def _input_for(model, seed, n=6):
    import torch

    generator = torch.Generator().manual_seed(seed + 2)
    conv = isinstance(model[0], torch.nn.Conv2d)
    shape = (n, 2, 5, 5) if conv else (n, 6)
    return 1.0 + 2.0 * torch.randn(shape, generator=generator, dtype=torch.float64)


# --- what a case reports ------------------------------------------------------------------

def _flat(tensors):
    """One float64 NumPy vector of many tensors (an empty one when there are none)."""
    arrays = [t.detach().double().reshape(-1).numpy().copy() for t in tensors]
    return np.concatenate(arrays) if arrays else np.zeros(0)


def _bn_statistics(model):
    from bn_course.blocks import batchnorm_layers

    return _flat([t for bn in batchnorm_layers(model) for t in (bn.running_mean, bn.running_var)])


def _bn_parameters(model):
    from bn_course.blocks import batchnorm_layers

    return _flat([p for bn in batchnorm_layers(model) for p in bn.parameters()])


def _other_parameters(model):
    from bn_course.blocks import batchnorm_layers

    in_bn = {id(p) for bn in batchnorm_layers(model) for p in bn.parameters()}
    return _flat([p for p in model.parameters() if id(p) not in in_bn])


def _returned_model(result, name, model):
    import torch

    if result is None:
        raise CandidateProblem(f"{name} returned None: return the model (is a `return model` "
                               "missing?).")
    if not isinstance(result, torch.nn.Module):
        raise CandidateProblem(f"{name} should return the model, got {type(result).__name__}.")
    if type(result) is not type(model):
        raise CandidateProblem(f"{name} should return the model it was given (a "
                               f"{type(model).__name__}), got a {type(result).__name__}.")
    return result


def _training_steps(model, x, steps=2, lr=0.1):
    """What a fine-tuning loop does: model.train(), a forward and backward pass, an SGD step
    on the parameters that require gradients, ``steps`` times."""
    import torch

    target = torch.linspace(-1, 1, 3, dtype=torch.float64)
    for _ in range(steps):
        model.train()
        out = model(x)
        loss = (out * target).sum() + (out ** 2).mean()
        trainable = [p for p in model.parameters() if p.requires_grad]
        if not trainable:
            continue
        gradients = torch.autograd.grad(loss, trainable, allow_unused=True)
        with torch.no_grad():
            for parameter, gradient in zip(trainable, gradients):
                if gradient is not None:
                    parameter -= lr * gradient


def _loads_into_original(model, build, seed):
    fresh = build(seed + 7)
    try:
        fresh.load_state_dict(model.state_dict())
    except (RuntimeError, KeyError, ValueError):
        return False
    return True


def _copy_stays_frozen(model, x):
    """A deep copy, switched to train mode and run once: are BN's statistics unchanged?"""
    import torch

    twin = copy.deepcopy(model)
    before = _bn_statistics(twin)
    twin.train()
    with torch.no_grad():
        twin(x)
    return bool(np.array_equal(before, _bn_statistics(twin)))


def _freeze_case(description, build, seed):
    def play(candidate):
        import torch

        from bn_course.train import one_thread

        model = build(seed)
        x = _input_for(model, seed)
        model = _returned_model(candidate(model), "freeze_batchnorm", model)
        with unwatched(), one_thread():
            first_output = model(x).detach().numpy().copy()
            _training_steps(model, x)
            outputs = [
                ("output of the returned model (before any model.train())", first_output),
                ("BN running statistics after 2 training steps in train mode",
                 _bn_statistics(model)),
                ("BN gamma and beta after those steps", _bn_parameters(model)),
                ("the other layers' parameters after those steps", _other_parameters(model)),
            ]
            with torch.no_grad():
                outputs.append(("output after model.train()", model.train()(x).numpy().copy()))
            outputs += [
                ("a deep copy, after .train() and a forward pass, keeps BN's statistics",
                 _copy_stays_frozen(model, x)),
                ("its state_dict loads into a fresh copy of the original architecture",
                 _loads_into_original(model, build, seed)),
            ]
        return outputs

    return Case(description, play)


def _zero_init_case(description, build, seed):
    def play(candidate):
        model = build(seed)
        model = _returned_model(candidate(model), "zero_init_last_bn", model)
        with unwatched():
            return [("every BN weight (gamma), in the order of model.modules()",
                     _flat([bn.weight for bn in _affine_batchnorms(model)])),
                    ("every BN bias (beta)", _flat([bn.bias for bn in _affine_batchnorms(model)])),
                    ("every other parameter", _other_parameters(model)),
                    ("BN running statistics", _bn_statistics(model))]

    return Case(description, play)


def _affine_batchnorms(model):
    from bn_course.blocks import batchnorm_layers

    return [bn for bn in batchnorm_layers(model) if bn.weight is not None]


WEIGHT_DECAY = 0.0123  # not a round number: a decay typed in by hand does not pass


def _decay_of_each_parameter(model, groups):
    """(decay per parameter in named_parameters() order, NaN where unlisted; how many
    times each is listed; how many listed tensors are not the model's parameters)."""
    import torch

    if isinstance(groups, (dict, torch.Tensor)) or not isinstance(groups, (list, tuple)):
        raise CandidateProblem("param_groups should return a list of dicts like "
                               "{'params': [...], 'weight_decay': 0.0}, got "
                               f"{type(groups).__name__}.")
    decay, listed, foreign = {}, {}, 0
    own = {id(p) for p in model.parameters()}
    for i, group in enumerate(groups):
        if not isinstance(group, dict) or "params" not in group:
            raise CandidateProblem(f"group {i} should be a dict with a 'params' list, got "
                                   f"{type(group).__name__}.")
        if "weight_decay" not in group:
            raise CandidateProblem(f"group {i} has no 'weight_decay': the optimizer would give "
                                   "it its own default. Give every group its decay.")
        params = group["params"]
        params = [params] if isinstance(params, torch.Tensor) else list(params)
        for p in params:
            if id(p) not in own:
                foreign += 1
                continue
            decay.setdefault(id(p), float(group["weight_decay"]))
            listed[id(p)] = listed.get(id(p), 0) + 1
    parameters = list(model.parameters())
    return [("weight decay of each parameter, in model.parameters() order (nan: not listed)",
             np.array([decay.get(id(p), np.nan) for p in parameters])),
            ("how many times each parameter is listed",
             np.array([float(listed.get(id(p), 0)) for p in parameters])),
            ("how many listed tensors are not parameters of the model", np.array(float(foreign)))]


def _groups_case(description, build, seed):
    def play(candidate):
        model = build(seed)
        groups = candidate(model, WEIGHT_DECAY)
        with unwatched():
            return _decay_of_each_parameter(model, groups)

    return Case(description, play)


FREEZE_MODELS = {
    "basic": [("an MLP with two BN layers", _mlp, 0), ("another MLP", _mlp, 1)],
    "awkward": [("a conv net with BN2d and BN1d layers nested three deep", _conv_net, 2),
                ("a residual MLP (BN layers inside blocks)", _residual_mlp, 3)],
    "float32": [],
}
ZERO_INIT_MODELS = {
    "basic": [("a residual MLP with 3 blocks (identity shortcuts)", _residual_mlp, 4)],
    "awkward": [("a conv net whose nested stage has a block with a projection shortcut",
                 _conv_net, 5),
                (("nested MLP blocks: one widening (projection shortcut with BN), one whose "
                  "last BN sits in a nested Sequential"), _mixed_residual_mlp, 6)],
    "float32": [],
}
GROUP_MODELS = {
    "basic": [("an MLP with biases and two BN layers", _mlp, 7)],
    "awkward": [("a conv net with BN2d and BN1d layers nested three deep", _conv_net, 8),
                ("a residual MLP with nested blocks", _mixed_residual_mlp, 9),
                ("an MLP with a tied weight and a BN without parameters", _tied_net, 10)],
    "float32": [],
}


def _cases_from(models, make_case):
    def cases(group):
        return [make_case(description, build, seed) for description, build, seed in models[group]]

    return cases


# --- freeze_batchnorm mistakes -------------------------------------------------------------

def _is_bn(module):
    from torch import nn

    return isinstance(module, nn.modules.batchnorm._BatchNorm)


def _freeze_with(layers="bn", where="all", train_override=True, eval_mode=True,
                 parameters=True, momentum_zero=False):
    """freeze_batchnorm with its steps chosen: which layers (BN, BN2d only, every layer),
    how deep (all modules or the top level), and which of the freezing steps it takes."""

    def freeze_batchnorm(model):
        from torch import nn

        modules = model.modules() if where == "all" else model.children()
        for module in list(modules):
            chosen = {"bn": _is_bn(module), "bn2d": isinstance(module, nn.BatchNorm2d),
                      "every": True}[layers]
            if not chosen:
                continue
            if eval_mode:
                module.eval()
            if train_override:
                module.train = lambda mode=True, module=module: nn.Module.train(module, False)
            if parameters:
                for parameter in module.parameters(recurse=False):
                    parameter.requires_grad_(False)
            if momentum_zero:
                module.momentum = 0.0
        return model

    return freeze_batchnorm


def _replaced_by_frozen_class(model):
    """BN layers swapped for a frozen class with weight, bias and statistics as buffers (as
    torchvision's FrozenBatchNorm2d), without num_batches_tracked."""
    import torch
    from torch import nn

    class FrozenBatchNorm(nn.Module):
        def __init__(self, bn):
            super().__init__()
            for name in ("weight", "bias", "running_mean", "running_var"):
                self.register_buffer(name, getattr(bn, name).detach().clone())
            self.eps = bn.eps

        def forward(self, x):
            shape = (1, -1) + (1,) * (x.dim() - 2)
            scale = self.weight * torch.rsqrt(self.running_var + self.eps)
            return (x - self.running_mean.reshape(shape)) * scale.reshape(shape) \
                + self.bias.reshape(shape)

    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if _is_bn(child):
                setattr(parent, name, FrozenBatchNorm(child))
    return model


FREEZE_HINT = ("For every BN layer (any nn.modules.batchnorm._BatchNorm in model.modules()): "
               "eval(), requires_grad_(False) on its weight and bias, and a `train` of its own "
               "that keeps it in eval mode, so that model.train() cannot undo it.")

FREEZE_MISTAKES = [
    variant_mistake("changes-nothing", lambda model: model,
                    "Nothing is frozen: every BN layer trains and updates its statistics.",
                    FREEZE_HINT),
    variant_mistake("eval-undone-by-train", _freeze_with(train_override=False, parameters=False),
                    "You called eval() on the BN layers once. The training loop's model.train() "
                    "puts them back in train mode: their statistics and gamma, beta change "
                    "again.", FREEZE_HINT),
    variant_mistake("frozen-until-model-train", _freeze_with(train_override=False),
                    "gamma and beta are frozen, but eval() alone does not survive "
                    "model.train(): the running statistics move again during training.",
                    FREEZE_HINT),
    variant_mistake("requires-grad-only", _freeze_with(train_override=False, eval_mode=False),
                    "requires_grad=False freezes gamma and beta only: the running statistics "
                    "are buffers, and train mode still updates them (and normalizes with the "
                    "batch's).", FREEZE_HINT),
    variant_mistake("momentum-zero", _freeze_with(train_override=False, eval_mode=False,
                                                  momentum_zero=True),
                    "momentum = 0 keeps the running statistics, but in train mode BN still "
                    "normalizes with each batch's own statistics.", FREEZE_HINT),
    variant_mistake("freezes-every-layer", _freeze_with(layers="every"),
                    "You froze every layer, not only the BN layers: nothing learns any more.",
                    "Freeze only the batch-norm layers; the other layers must keep "
                    "requires_grad=True."),
    variant_mistake("replaces-bn-layers", _replaced_by_frozen_class,
                    "You replaced the BN layers with another class: the model's state_dict no "
                    "longer loads into the original architecture.",
                    "Keep the nn.BatchNorm layers and change how they behave (eval mode, "
                    "requires_grad, their own train method)."),
    variant_mistake("misses-nested-bn", _freeze_with(where="top"),
                    "You froze the BN layers among the model's direct children only: those "
                    "nested inside blocks still train.",
                    "model.modules() walks every submodule, however deep; model.children() "
                    "only the first level."),
    variant_mistake("only-batchnorm2d", _freeze_with(layers="bn2d"),
                    "You froze nn.BatchNorm2d layers only: BatchNorm1d layers still train.",
                    "isinstance(module, nn.modules.batchnorm._BatchNorm) covers BatchNorm1d, "
                    "2d, 3d and SyncBatchNorm."),
]


# --- zero_init_last_bn mistakes ------------------------------------------------------------

def _zero_init_with(which="branch-last", where="all", target="weight"):
    """zero_init_last_bn with a choice of BN (or layer) to zero, where to look for blocks,
    and which parameter to zero."""

    def zero_init_last_bn(model):
        import torch
        from torch import nn

        from bn_course.blocks import ResidualBlock

        def norms(module):
            return [m for m in module.modules() if _is_bn(m)]

        if which == "every":
            chosen = norms(model)
        elif which == "model-last":
            chosen = norms(model)[-1:]
        else:
            blocks = model.modules() if where == "all" else model.children()
            chosen = []
            for block in blocks:
                if not isinstance(block, ResidualBlock):
                    continue
                if which == "branch-first":
                    chosen.append(norms(block.branch)[0])
                elif which == "block-last":
                    chosen.append(norms(block)[-1])
                elif which == "branch-last-layer":
                    chosen.append([m for m in block.branch.modules()
                                   if isinstance(m, (nn.Linear, nn.Conv2d))][-1])
                else:
                    chosen.append(norms(block.branch)[-1])
        with torch.no_grad():
            for module in chosen:
                for name in {"weight": ["weight"], "bias": ["bias"],
                             "both": ["weight", "bias"]}[target]:
                    getattr(module, name).zero_()
        return model

    return zero_init_last_bn


ZERO_INIT_HINT = ("For each ResidualBlock in model.modules(), take the BN layers of block.branch "
                  "(in block.branch.modules() order) and zero the weight of the last one.")

ZERO_INIT_MISTAKES = [
    variant_mistake("changes-nothing", lambda model: model,
                    "No gamma was set to 0.", ZERO_INIT_HINT),
    variant_mistake("zeroes-every-bn", _zero_init_with(which="every"),
                    "You zeroed gamma in every BN layer: the stem's and the shortcuts' BN then "
                    "pass nothing at all.", ZERO_INIT_HINT),
    variant_mistake("zeroes-first-bn", _zero_init_with(which="branch-first"),
                    "You zeroed the first BN of each branch: the second BN then normalizes a "
                    "constant, and the block does not start as the identity.", ZERO_INIT_HINT),
    variant_mistake("zeroes-shortcut-bn", _zero_init_with(which="block-last"),
                    "You zeroed the last BN of the whole block, which in a block with a "
                    "projection shortcut is the shortcut's: the signal itself is cut.",
                    "Look only inside block.branch; leave block.shortcut alone."),
    variant_mistake("zeroes-beta-too", _zero_init_with(target="both"),
                    "You zeroed beta as well as gamma.", "Zero only the weight (gamma); beta "
                    "keeps its value."),
    variant_mistake("zeroes-beta", _zero_init_with(target="bias"),
                    "You zeroed beta (the BN's bias) instead of gamma (its weight).",
                    ZERO_INIT_HINT),
    variant_mistake("zeroes-last-bn-of-model", _zero_init_with(which="model-last"),
                    "You zeroed only the last BN of the whole model, not one per block.",
                    ZERO_INIT_HINT),
    variant_mistake("zeroes-layer-before-bn", _zero_init_with(which="branch-last-layer"),
                    "You zeroed the weights of the branch's last linear or convolution layer, "
                    "not the BN's gamma.", ZERO_INIT_HINT),
    variant_mistake("misses-nested-blocks", _zero_init_with(where="top"),
                    "You looked for blocks among the model's direct children only: blocks "
                    "nested in a stage (an nn.Sequential of blocks) were missed.",
                    "model.modules() walks every submodule, however deep."),
]


# --- param_groups mistakes -----------------------------------------------------------------

def _groups_with(exempt="bn-and-biases", walk="modules", dedupe=True, swap=False):
    """param_groups with a choice of rule for the exempt parameters and of how the model is
    walked."""

    def param_groups(model, weight_decay):
        from torch import nn

        def is_exempt(module, name):
            return {"bn-and-biases": _is_bn(module) or name.endswith("bias"),
                    "biases": name.endswith("bias"),
                    "bn": _is_bn(module),
                    "bn2d-and-biases": isinstance(module, nn.BatchNorm2d) or name.endswith("bias"),
                    "nothing": False}[exempt]

        if walk == "modules":
            pairs = [(m, n, p) for m in model.modules()
                     for n, p in m.named_parameters(recurse=False)]
        elif walk == "recursive":
            pairs = [(m, n, p) for m in model.modules() for n, p in m.named_parameters()]
        else:  # top level: a child's nested parameters are judged by the child's type
            pairs = [(child, n, p) for child in model.children()
                     for n, p in child.named_parameters()]
        decay, no_decay, seen = [], [], set()
        for module, name, parameter in pairs:
            if dedupe and id(parameter) in seen:
                continue
            seen.add(id(parameter))
            (no_decay if is_exempt(module, name) != swap else decay).append(parameter)
        return [{"params": decay, "weight_decay": weight_decay},
                {"params": no_decay, "weight_decay": 0.0}]

    return param_groups


GROUPS_HINT = ("Walk model.modules() and each module's own parameters, "
               "module.named_parameters(recurse=False): exempt every parameter of a BN layer and "
               "every parameter named 'bias', decay the rest, and list each parameter once.")

GROUPS_MISTAKES = [
    variant_mistake("decays-everything", _groups_with(exempt="nothing"),
                    "Every parameter gets weight decay, BN's gamma and beta and the biases too.",
                    GROUPS_HINT),
    variant_mistake("decays-bn-weight", _groups_with(exempt="biases"),
                    "BN's gamma (its `weight`) gets weight decay: only parameters named 'bias' "
                    "are exempt.", "Exempt every parameter of a BN layer, its weight included."),
    variant_mistake("decays-biases", _groups_with(exempt="bn"),
                    "The biases of linear and convolution layers get weight decay.",
                    "Exempt every parameter named 'bias' as well as the BN layers' parameters."),
    variant_mistake("decay-swapped", _groups_with(swap=True),
                    "Your groups are the wrong way round: BN parameters and biases get the "
                    "decay, the weights get none.", GROUPS_HINT),
    variant_mistake("duplicates-parameters", _groups_with(walk="recursive", dedupe=False),
                    "Some parameters are listed more than once (module.named_parameters() "
                    "inside a walk over model.modules() returns nested parameters again for "
                    "every enclosing module); an optimizer refuses that.",
                    "Use module.named_parameters(recurse=False) for each module."),
    variant_mistake("misses-nested-bn", _groups_with(walk="top", dedupe=False),
                    "You judged each parameter by the type of the model's direct child that "
                    "holds it: BN layers nested inside blocks are not recognised, and their "
                    "gamma gets weight decay.", GROUPS_HINT),
    variant_mistake("only-batchnorm2d", _groups_with(exempt="bn2d-and-biases"),
                    "Only nn.BatchNorm2d layers are exempt: BatchNorm1d's gamma gets weight "
                    "decay.", "isinstance(module, nn.modules.batchnorm._BatchNorm) covers "
                    "BatchNorm1d, 2d, 3d and SyncBatchNorm."),
    variant_mistake("lists-tied-weight-twice", _groups_with(dedupe=False),
                    "A weight shared by two layers (tied) is listed twice; an optimizer "
                    "refuses a parameter that appears twice.",
                    "Remember the parameters already listed (a set of id(parameter))."),
]


FREEZE_BATCHNORM = Exercise(
    "freeze_batchnorm", _reference("freeze_batchnorm"), "freeze_batchnorm(model)",
    _cases_from(FREEZE_MODELS, _freeze_case), mistakes=FREEZE_MISTAKES, hint=FREEZE_HINT,
    needs_torch=True, time_limit_s=30.0)
ZERO_INIT_LAST_BN = Exercise(
    "zero_init_last_bn", _reference("zero_init_last_bn"), "zero_init_last_bn(model)",
    _cases_from(ZERO_INIT_MODELS, _zero_init_case), mistakes=ZERO_INIT_MISTAKES,
    hint=ZERO_INIT_HINT, needs_torch=True, time_limit_s=30.0)
PARAM_GROUPS = Exercise(
    "param_groups", _reference("param_groups"), "param_groups(model, weight_decay)",
    _cases_from(GROUP_MODELS, _groups_case), mistakes=GROUPS_MISTAKES, hint=GROUPS_HINT,
    needs_torch=True, time_limit_s=30.0)

EXERCISES = [FREEZE_BATCHNORM, ZERO_INIT_LAST_BN, PARAM_GROUPS]
