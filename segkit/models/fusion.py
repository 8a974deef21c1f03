"""BatchNorm folded into the convolution before it, for inference: `fold_batchnorm(net)`.

In eval mode a BatchNorm is an affine map per channel, so conv -> BatchNorm is one convolution with scaled
weights and a bias: one pass over the activations less per block, for eval, predict, a training run's
validations and final report, and the ONNX exports. The logits are those of the unfolded network up to
float rounding (tests/models/test_fusion.py states the tolerance).
"""

from __future__ import annotations

import copy

from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval


def _foldable_pairs(net: nn.Module) -> list[tuple[nn.Sequential, int, nn.Sequential, int]]:
    """(Sequential, index of a BatchNorm2d in it, Sequential, index of the convolution before that BatchNorm)."""
    pairs = []
    for sequential in (m for m in net.modules() if isinstance(m, nn.Sequential)):
        for index in range(1, len(sequential)):
            norm = sequential[index]
            if type(norm) is not nn.BatchNorm2d or not norm.track_running_stats:
                continue
            conv_parent, conv_index = sequential, index - 1
            while isinstance(conv_parent[conv_index], nn.Sequential) and len(conv_parent[conv_index]) > 0:
                conv_parent, conv_index = conv_parent[conv_index], len(conv_parent[conv_index]) - 1
            if type(conv_parent[conv_index]) is nn.Conv2d:
                pairs.append((sequential, index, conv_parent, conv_index))
    return pairs


def fold_batchnorm(net: nn.Module) -> nn.Module:
    """An eval-mode copy of `net` in which every BatchNorm2d that directly follows a convolution in an
    `nn.Sequential` (segkit's blocks and depthwise-separable convolutions, torchvision's Conv2dNormActivation
    and inverted residuals) is folded into that convolution and replaced by `nn.Identity`; `net` itself is
    left as it is, and returned as it is when it has nothing to fold (an ONNX file run as a network). A
    BatchNorm after anything else (the article's BatchNorm on the input) stays."""
    # Written here: torch.ao's fuse_modules needs every pair named, and torch.fx cannot trace SegNet's input
    # checks; this walk finds the pairs of any network built from Sequentials.
    if not _foldable_pairs(net):
        return net
    folded = copy.deepcopy(net).eval()
    for norm_parent, norm_index, conv_parent, conv_index in _foldable_pairs(folded):
        conv_parent[conv_index] = fuse_conv_bn_eval(conv_parent[conv_index], norm_parent[norm_index])
        norm_parent[norm_index] = nn.Identity()
    return folded
