"""Mutation suite for notebook 09 (in practice): each wrong implementation below must be
named with its catalogue id (see tests/mutation.py), and the correct ones, written in other
ways, must pass."""

import functools

import pytest
import torch
import torch.nn.functional as F
from mutation import Mutants, assert_diagnosed, missing_mutants
from torch import nn

from bn_course.blocks import ResidualBlock
from bn_course.checks import check

MUTANTS = Mutants()
CORRECT = []
BN_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


def correct(exercise):
    def register(implementation):
        CORRECT.append((exercise, implementation))
        return implementation
    return register


def norms_in(module):
    return [m for m in module.modules() if isinstance(m, BN_TYPES)]


# --- freeze_batchnorm ------------------------------------------------------------------------

@MUTANTS.make("freeze_batchnorm", "changes-nothing")
def freeze_forgot_to_act(model):
    for module in model.modules():
        if isinstance(module, BN_TYPES):
            pass  # TODO
    return model


@MUTANTS.make("freeze_batchnorm", "eval-undone-by-train")
def freeze_by_training_flag(model):
    for bn in norms_in(model):
        bn.training = False
    return model


@MUTANTS.make("freeze_batchnorm", "frozen-until-model-train")
def freeze_with_apply(model):
    def freeze(module):
        if isinstance(module, BN_TYPES):
            module.eval()
            module.weight.requires_grad = False
            module.bias.requires_grad = False
    return model.apply(freeze)


@MUTANTS.make("freeze_batchnorm", "requires-grad-only")
def freeze_parameters_by_name(model):
    bn_names = {name for name, module in model.named_modules() if isinstance(module, BN_TYPES)}
    for name, parameter in model.named_parameters():
        if name.rsplit(".", 1)[0] in bn_names:
            parameter.requires_grad_(False)
    return model


@MUTANTS.make("freeze_batchnorm", "momentum-zero")
def freeze_statistics_with_momentum(model):
    for bn in norms_in(model):
        bn.momentum = 0  # "the running statistics never move now"
        bn.requires_grad_(False)
    return model


@MUTANTS.make("freeze_batchnorm", "freezes-every-layer")
def freeze_the_whole_model(model):
    model.eval()
    model.requires_grad_(False)
    model.train = lambda mode=True: model  # "no more train mode"
    return model


class TorchvisionStyleFrozenBN(nn.Module):
    def __init__(self, bn):
        super().__init__()
        self.register_buffer("weight", bn.weight.detach().clone())
        self.register_buffer("bias", bn.bias.detach().clone())
        self.register_buffer("running_mean", bn.running_mean.clone())
        self.register_buffer("running_var", bn.running_var.clone())

    def forward(self, x):
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                            training=False)


@MUTANTS.make("freeze_batchnorm", "replaces-bn-layers")
def freeze_by_swapping_modules(model):
    for name, module in list(model.named_modules()):
        if isinstance(module, BN_TYPES):
            parent_name, _, child = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            setattr(parent, child, TorchvisionStyleFrozenBN(module))
    return model


def keep_in_eval(bn, mode=True):
    return nn.Module.train(bn, False)


@MUTANTS.make("freeze_batchnorm", "misses-nested-bn")
def freeze_top_level_layers(model):
    for layer in model:  # a Sequential's layers, not what is inside them
        if isinstance(layer, BN_TYPES):
            layer.eval()
            layer.train = functools.partial(keep_in_eval, layer)
            layer.requires_grad_(False)
    return model


@MUTANTS.make("freeze_batchnorm", "only-batchnorm2d")
def freeze_conv_batchnorm_only(model):
    for module in model.modules():
        if type(module) is nn.BatchNorm2d:
            module.requires_grad_(False)
            module.register_forward_pre_hook(lambda m, args: m.eval() and None)
    return model


@correct("freeze_batchnorm")
def freeze_with_a_pre_hook(model):
    """Puts each BN layer back in eval mode before every call."""
    for bn in norms_in(model):
        bn.requires_grad_(False)
        bn.eval()
        bn.register_forward_pre_hook(lambda module, args: module.train(False) and None)
    return model


@correct("freeze_batchnorm")
def freeze_by_changing_the_class(model):
    """Each BN layer becomes an instance of a subclass of its own class whose train() does
    nothing: same parameters and buffers, same state_dict."""
    for bn in norms_in(model):
        frozen = type(f"Frozen{type(bn).__name__}", (type(bn),),
                      {"train": lambda self, mode=True: nn.Module.train(self, False)})
        bn.__class__ = frozen
        bn.eval()
        for parameter in bn.parameters():
            parameter.requires_grad = False
    return model


@correct("freeze_batchnorm")
def freeze_with_a_lambda(model):
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.train(False)
            module.train = lambda mode=True: None  # returns nothing; nobody reads it
            module.weight.requires_grad_(False)
            module.bias.requires_grad_(False)
    return model


# --- zero_init_last_bn -----------------------------------------------------------------------

def blocks_in(model):
    return [m for m in model.modules() if isinstance(m, ResidualBlock)]


@MUTANTS.make("zero_init_last_bn", "changes-nothing")
def zero_init_only_finds_the_blocks(model):
    found = blocks_in(model)
    assert found is not None
    return model


@MUTANTS.make("zero_init_last_bn", "zeroes-every-bn")
def zero_init_all_norms(model):
    for bn in norms_in(model):
        nn.init.constant_(bn.weight, 0.0)
    return model


@MUTANTS.make("zero_init_last_bn", "zeroes-first-bn")
def zero_init_first_found(model):
    for block in blocks_in(model):
        bn = next(m for m in block.branch.modules() if isinstance(m, BN_TYPES))
        bn.weight.data.zero_()
    return model


@MUTANTS.make("zero_init_last_bn", "zeroes-shortcut-bn")
def zero_init_last_module_of_block(model):
    for block in blocks_in(model):
        nn.init.zeros_(list(filter(lambda m: isinstance(m, BN_TYPES), block.modules()))[-1].weight)
    return model


@MUTANTS.make("zero_init_last_bn", "zeroes-beta-too")
def zero_init_whole_bn(model):
    for block in blocks_in(model):
        last = norms_in(block.branch)[-1]
        with torch.no_grad():
            last.weight.fill_(0)
            last.bias.fill_(0)
    return model


@MUTANTS.make("zero_init_last_bn", "zeroes-beta")
def zero_init_the_shift(model):
    for block in blocks_in(model):
        nn.init.zeros_(norms_in(block.branch)[-1].bias)
    return model


@MUTANTS.make("zero_init_last_bn", "zeroes-last-bn-of-model")
def zero_init_last_bn_found(model):
    last = None
    for module in model.modules():
        if isinstance(module, BN_TYPES):
            last = module
    nn.init.zeros_(last.weight)
    return model


@MUTANTS.make("zero_init_last_bn", "zeroes-layer-before-bn")
def zero_init_last_weights(model):
    for block in blocks_in(model):
        layers = [m for m in block.branch.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
        nn.init.zeros_(layers[-1].weight)
    return model


@MUTANTS.make("zero_init_last_bn", "misses-nested-blocks")
def zero_init_direct_children(model):
    for _, child in model.named_children():
        if isinstance(child, ResidualBlock):
            nn.init.zeros_(norms_in(child.branch)[-1].weight)
    return model


@correct("zero_init_last_bn")
def zero_init_searching_backwards(model):
    for block in blocks_in(model):
        for module in reversed(list(block.branch.modules())):
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.weight.data.mul_(0)
                break
    return model


@correct("zero_init_last_bn")
def zero_init_by_name(model):
    for block_name, block in model.named_modules():
        if isinstance(block, ResidualBlock):
            names = [n for n, m in block.branch.named_modules() if isinstance(m, BN_TYPES)]
            weight = block.branch.get_submodule(names[-1]).weight
            with torch.no_grad():
                weight.copy_(torch.zeros_like(weight))
    return model


# --- param_groups ----------------------------------------------------------------------------

def split(model, exempt):
    """Two groups from a predicate on (module, name), walking each module's own params."""
    decay, no_decay, seen = [], [], set()
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            if id(p) not in seen:
                seen.add(id(p))
                (no_decay if exempt(module, name) else decay).append(p)
    return decay, no_decay


@MUTANTS.make("param_groups", "decays-everything")
def groups_one_for_all(model, weight_decay):
    return [{"params": list(model.parameters()), "weight_decay": weight_decay}]


@MUTANTS.make("param_groups", "decays-bn-weight")
def groups_by_parameter_name(model, weight_decay):
    named = list(model.named_parameters())
    return [{"params": [p for n, p in named if not n.endswith(".bias")],
             "weight_decay": weight_decay},
            {"params": [p for n, p in named if n.endswith(".bias")], "weight_decay": 0.0}]


@MUTANTS.make("param_groups", "decays-biases")
def groups_batchnorm_only(model, weight_decay):
    bn_ids = {id(p) for bn in norms_in(model) for p in bn.parameters()}
    return [{"params": [p for p in model.parameters() if id(p) not in bn_ids],
             "weight_decay": weight_decay},
            {"params": [p for p in model.parameters() if id(p) in bn_ids], "weight_decay": 0}]


@MUTANTS.make("param_groups", "decay-swapped")
def groups_wrong_way_round(model, weight_decay):
    decay, no_decay = split(model, lambda m, n: isinstance(m, BN_TYPES) or n == "bias")
    return [{"params": no_decay, "weight_decay": weight_decay},
            {"params": decay, "weight_decay": 0.0}]


@MUTANTS.make("param_groups", "duplicates-parameters")
def groups_recursive_per_module(model, weight_decay):
    decay, no_decay = [], []
    for module in model.modules():
        if isinstance(module, BN_TYPES):
            no_decay += list(module.parameters())
        else:
            for name, p in module.named_parameters():  # recursive: nested ones again
                (no_decay if name.endswith("bias") else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


@MUTANTS.make("param_groups", "misses-nested-bn")
def groups_by_top_level_layer(model, weight_decay):
    decay, no_decay = [], []
    for layer in model.children():
        for name, p in layer.named_parameters():
            (no_decay if isinstance(layer, BN_TYPES) or "bias" in name.split(".")[-1:]
             else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


@MUTANTS.make("param_groups", "only-batchnorm2d")
def groups_for_convnets(model, weight_decay):
    decay, no_decay = split(model, lambda m, n: isinstance(m, nn.BatchNorm2d) or n == "bias")
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


@MUTANTS.make("param_groups", "lists-tied-weight-twice")
def groups_without_memory(model, weight_decay):
    decay, no_decay = [], []
    for _, module in model.named_modules():
        for name, p in module.named_parameters(recurse=False):
            (no_decay if isinstance(module, BN_TYPES) or name == "bias" else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


@correct("param_groups")
def groups_by_dimension(model, weight_decay):
    """timm's rule: no decay on 1-D parameters. For models with no LayerNorm or other 1-D
    weights (the checker's), the same groups."""
    params = list(model.parameters())
    return [{"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0},
            {"params": [p for p in params if p.ndim > 1], "weight_decay": weight_decay}]


@correct("param_groups")
def groups_three_ways(model, weight_decay):
    bn_ids = {id(p) for bn in norms_in(model) for p in bn.parameters()}
    named = dict(model.named_parameters())  # unique parameters, one name each
    bn = (p for p in named.values() if id(p) in bn_ids)
    biases = [p for n, p in named.items() if n.endswith("bias") and id(p) not in bn_ids]
    weights = [p for n, p in named.items() if not n.endswith("bias") and id(p) not in bn_ids]
    return [{"params": weights, "weight_decay": weight_decay},
            {"params": bn, "weight_decay": 0.0},
            {"params": biases, "weight_decay": 0.0}]


# --- the tests -----------------------------------------------------------------------------

def test_every_mistake_of_the_notebook_has_a_mutant():
    assert not missing_mutants(MUTANTS, "09")


@pytest.mark.parametrize("exercise, mistake_id, implementation", MUTANTS, ids=MUTANTS.ids())
def test_mutant_is_diagnosed(exercise, mistake_id, implementation):
    assert_diagnosed(exercise, mistake_id, implementation)


@pytest.mark.parametrize("exercise, implementation", CORRECT,
                         ids=[impl.__name__ for _, impl in CORRECT])
def test_correct_answers_written_otherwise_pass(exercise, implementation):
    result = check(exercise, implementation)
    assert result.passed, result.message


def test_answers_that_return_nothing_are_told_so():
    def freeze_without_return(model):
        freeze_with_a_pre_hook(model)

    result = check("freeze_batchnorm", freeze_without_return)
    assert not result.passed and "return model" in result.message
