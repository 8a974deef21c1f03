import pytest
import torch
from torch import nn

from segkit.models import MODELS, SegNet, build_model, count_parameters
from segkit.models.blocks import DepthwiseSeparableConv2d


@pytest.mark.parametrize("name", sorted(MODELS))
def test_odd_sized_input_gives_logits_of_the_same_size_and_a_gradient(name):
    net = build_model(name, num_classes=3)
    x = torch.randn(1, 3, 97, 131, requires_grad=True)
    logits = net(x)
    assert logits.shape == (1, 3, 97, 131)
    logits.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is not None for p in net.parameters())


@pytest.mark.parametrize(("name", "expected"), [("segnet", 15.3e6), ("dsc_segnet", 1.75e6)])
def test_parameter_counts_match_the_article(name, expected):
    assert count_parameters(build_model(name, num_classes=3)) == pytest.approx(expected, rel=0.01)


def test_dsc_segnet_is_over_seven_times_smaller_than_segnet():
    standard = count_parameters(build_model("segnet", num_classes=3))
    dsc = count_parameters(build_model("dsc_segnet", num_classes=3))
    assert standard / dsc > 7


@pytest.mark.parametrize(("conv", "expected"), [("standard", 796), ("dsc", 295)])
def test_parameter_count_of_a_tiny_layout_matches_the_hand_count(conv, expected):
    # Input BN(3): 6. Standard: enc 3->4 (108 + BN 8), 4->8 (288 + 16); dec 8->4 (288 + 8), classifier
    # 4->2 (72 + 2 bias) = 796. DSC: enc 27+12+8, 36+32+16; dec 72+32+8; classifier 36+8+2 = 295.
    net = SegNet(num_classes=2, stage_channels=(4, 8), stage_depths=(1, 1), conv=conv)
    assert count_parameters(net) == expected


def test_every_3x3_conv_of_dsc_segnet_is_depthwise_then_pointwise():
    net = build_model("dsc_segnet", num_classes=3)
    dense_3x3 = [m for m in net.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3) and m.groups == 1]
    assert dense_3x3 == []
    separable = [m for m in net.modules() if isinstance(m, DepthwiseSeparableConv2d)]
    assert len(separable) == 2 * (2 + 2 + 3 + 3)
    for block in separable:
        depthwise, pointwise = block
        assert depthwise.groups == depthwise.in_channels == depthwise.out_channels
        assert pointwise.kernel_size == (1, 1)


def test_stage_layout_is_64_128_256_512_with_2_2_3_3_blocks():
    net = build_model("segnet", num_classes=3)
    assert [len(stage) for stage in net.encoder.stages] == [2, 2, 3, 3]
    assert [stage[-1][0].out_channels for stage in net.encoder.stages] == [64, 128, 256, 512]
    assert [len(stage) for stage in net.decoder.stages] == [3, 3, 2, 2]
    assert isinstance(net.input_norm, nn.BatchNorm2d)


def test_decoder_unpools_to_the_positions_the_encoder_pooled_from():
    # One stage with identity convs: the 2x2 window's max (5) must come back at its own position and
    # the odd size 3 must be restored.
    net = SegNet(num_classes=1, in_channels=1, stage_channels=(1,), stage_depths=(1,), input_norm=False)
    encoder_stage, decoder_stage = net.encoder.stages[0], net.decoder.stages[0]
    encoder_stage[0] = nn.Identity()
    decoder_stage[0] = nn.Identity()
    x = torch.tensor([[[[1.0, 5.0, 0.0], [2.0, 3.0, 0.0], [0.0, 0.0, 9.0]]]])
    out = net(x)
    assert out.shape == (1, 1, 3, 3)
    assert out[0, 0].tolist() == [[0.0, 5.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]]


def test_unknown_model_name_lists_the_valid_names():
    with pytest.raises(ValueError, match=r"unknown model 'segnett'; valid names: dsc_segnet, segnet"):
        build_model("segnett", num_classes=3)


def test_unknown_conv_type_names_the_value_and_the_choices():
    with pytest.raises(ValueError, match=r"conv='depthwise'.*\['standard', 'dsc'\]"):
        build_model("segnet", num_classes=3, conv="depthwise")


def test_too_small_or_misshapen_input_fails_with_the_size():
    net = build_model("dsc_segnet", num_classes=3)
    with pytest.raises(ValueError, match=r"too small.*at least 16 x 16"):
        net(torch.randn(1, 3, 15, 64))
    with pytest.raises(ValueError, match=r"N x 3 x H x W.*\(3, 32, 32\)"):
        net(torch.randn(3, 32, 32))


def test_norm_and_activation_are_injectable():
    net = SegNet(num_classes=2, stage_channels=(8, 16), stage_depths=(1, 1), norm_layer=nn.Identity,
                 activation_layer=nn.GELU, input_norm=False)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in net.modules())
    assert sum(isinstance(m, nn.GELU) for m in net.modules()) == 3
    assert net(torch.randn(2, 3, 16, 16)).shape == (2, 2, 16, 16)
