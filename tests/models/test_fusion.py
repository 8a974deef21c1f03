import pytest
import torch
from torch import nn

from segkit.models.fusion import fold_batchnorm

MODELS = ["dsc_segnet", "segnet", "segnet_mobilenetv2", "segnet_vgg16bn"]


def _with_trained_statistics(net: nn.Module) -> nn.Module:
    """BatchNorm running statistics and affine weights far from their initial 0/1, as after training."""
    generator = torch.Generator().manual_seed(0)
    for norm in (m for m in net.modules() if isinstance(m, nn.BatchNorm2d)):
        shape = norm.running_mean.shape
        norm.running_mean.copy_(torch.randn(shape, generator=generator) * 0.5)
        norm.running_var.copy_(torch.rand(shape, generator=generator) * 2 + 0.1)
        norm.weight.data.copy_(torch.rand(shape, generator=generator) + 0.5)
        norm.bias.data.copy_(torch.randn(shape, generator=generator) * 0.2)
    return net.eval()


@pytest.mark.parametrize("name", MODELS)
def test_folded_network_gives_the_unfolded_logits(model, name):
    net = _with_trained_statistics(model(name))
    folded = fold_batchnorm(net)
    images = torch.randn(2, 3, 67, 45, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected, actual = net(images), folded(images)
    # Tolerance: float32 rounding of the folded weights, 1e-5 of the logits' scale (they differ by ~1e-7 here).
    scale = expected.abs().max().item()
    assert (actual - expected).abs().max().item() <= 1e-5 * max(scale, 1.0)
    # Every BatchNorm after a convolution is gone from the copy; the article's BatchNorm on the input stays.
    norms = [m for m in folded.modules() if isinstance(m, nn.BatchNorm2d)]
    assert norms == ([folded.input_norm] if isinstance(net.input_norm, nn.BatchNorm2d) else [])
    # The network itself is untouched.
    assert sum(isinstance(m, nn.BatchNorm2d) for m in net.modules()) > len(norms)


def test_a_network_without_batchnorm_is_returned_as_it_is():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
    assert fold_batchnorm(net) is net


@pytest.mark.parametrize("name", ["dsc_segnet", "segnet_mobilenetv2"])
def test_pooling_of_an_onnx_export_computes_the_same_logits(model, monkeypatch, name):
    """The form `max_pool_2x2` and `max_unpool2d` take while exporting to ONNX (window places, a pixel shuffle)
    gives the logits of PyTorch's (flat indices, a scatter) exactly: odd sizes, ceil and floor windows, and
    ties between equal maxima (zeros after ReLU) included."""
    net = _with_trained_statistics(model(name))
    images = torch.randn(2, 3, 67, 45, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected = net(images)
        monkeypatch.setattr(torch.onnx, "is_in_onnx_export", lambda: True)
        actual = net(images)
    assert torch.equal(actual, expected)
