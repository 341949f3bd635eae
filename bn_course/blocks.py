"""Network pieces shared by notebooks 09-10, their demos, checkers and reference answers.

A residual block here is a ``ResidualBlock``: ``relu(branch(x) + shortcut(x))``, the shape of
ResNet's basic block (He et al., 2016) and of torchvision's ``BasicBlock``. Its ``branch``
holds the layers that learn the residual and ends in a batch norm; its ``shortcut`` is the
identity, or a projection (a linear layer or 1x1 convolution with its own batch norm) when
the branch changes the shape.
"""

import torch
from torch import nn

__all__ = ["ResidualBlock", "batchnorm_layers", "conv_block", "mlp_block"]


def batchnorm_layers(model):
    """Every batch-norm layer inside ``model`` (BatchNorm1d/2d/3d, SyncBatchNorm, and the
    course's own layers, which subclass none of them but are named BatchNorm*)."""
    return [m for m in model.modules() if is_batchnorm(m)]


def is_batchnorm(module):
    return (isinstance(module, nn.modules.batchnorm._BatchNorm)
            or type(module).__name__.startswith(("BatchNorm", "BatchRenorm")))


class ResidualBlock(nn.Module):
    """relu(branch(x) + shortcut(x)); the shortcut is the identity unless one is given."""

    def __init__(self, branch, shortcut=None):
        super().__init__()
        self.branch = branch
        self.shortcut = nn.Identity() if shortcut is None else shortcut

    def forward(self, x):
        return torch.relu(self.branch(x) + self.shortcut(x))


def mlp_block(width, out_width=None):
    """Linear -> BN -> ReLU -> Linear -> BN, plus x (projected by Linear -> BN when
    ``out_width`` differs from ``width``)."""
    out_width = out_width or width
    branch = nn.Sequential(nn.Linear(width, out_width, bias=False), nn.BatchNorm1d(out_width),
                           nn.ReLU(), nn.Linear(out_width, out_width, bias=False),
                           nn.BatchNorm1d(out_width))
    shortcut = None
    if out_width != width:
        shortcut = nn.Sequential(nn.Linear(width, out_width, bias=False),
                                 nn.BatchNorm1d(out_width))
    return ResidualBlock(branch, shortcut)


def conv_block(in_channels, out_channels=None, stride=1):
    """torchvision's BasicBlock: two 3x3 convolutions with BN, and a 1x1 convolution with BN
    on the shortcut when the stride or the number of channels changes."""
    out_channels = out_channels or in_channels
    branch = nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(out_channels), nn.ReLU(),
        nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels))
    shortcut = None
    if stride != 1 or out_channels != in_channels:
        shortcut = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
            nn.BatchNorm2d(out_channels))
    return ResidualBlock(branch, shortcut)
