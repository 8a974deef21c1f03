import pytest
import torch
import torch.nn.functional as F
from torch import nn

from segkit.config import CONFIG_DIR
from segkit.models import build_model, count_parameters
from segkit.models.blocks import DepthwiseSeparableConv2d
from segkit.models.encoders import Pool, get_encoder
from segkit.models.segnet import max_unpool2d
from segkit.models.summary import summarize

MODELS = sorted(p.stem for p in (CONFIG_DIR / "model").glob("*.yaml"))


def test_every_documented_model_has_a_config():
    assert {"segnet", "dsc_segnet", "segnet_vgg16bn", "segnet_mobilenetv2"} <= set(MODELS)


@pytest.mark.parametrize("name", MODELS)
def test_odd_sized_input_gives_logits_of_the_same_size_and_a_gradient(model, name):
    net = model(name)
    x = torch.randn(1, 3, 97, 131, requires_grad=True)
    logits = net(x)
    assert logits.shape == (1, 3, 97, 131)
    logits.square().mean().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is not None for p in net.parameters())


def _article_segnet_parameters(num_classes: int = 3) -> int:
    """Hand count of the article's standard SegNet: encoder convs with bias (as torchvision's VGG),
    decoder convs without (a BatchNorm follows), BN weight+bias per channel, classifier with bias."""
    channels, depths = (64, 128, 256, 512), (2, 2, 3, 3)
    total, previous = 2 * 3, 3  # input BatchNorm
    for c, d in zip(channels, depths):
        for _ in range(d):
            total += 9 * previous * c + c + 2 * c
            previous = c
    for level in reversed(range(4)):
        c = channels[level]
        for _ in range(depths[level] - 1):
            total += 9 * c * c + 2 * c
        if level > 0:
            total += 9 * c * channels[level - 1] + 2 * channels[level - 1]
        else:
            total += 9 * c * num_classes + num_classes
    return total


def test_segnet_parameters_match_the_hand_count_and_the_article(model):
    count = count_parameters(model("segnet"))
    assert count == _article_segnet_parameters() == 15_277_577
    assert count == pytest.approx(15.3e6, rel=0.01)
    assert count_parameters(model("dsc_segnet")) == pytest.approx(1.75e6, rel=0.01)


@pytest.mark.parametrize(("name", "dsc_overrides"), [("segnet", ["model=dsc_segnet"]),
                                                      ("segnet_vgg16bn", ["model.encoder.conv=dsc"])])
def test_dsc_makes_models_over_seven_times_smaller_and_cheaper(model, name, dsc_overrides):
    standard = summarize(model(name), (128, 128))
    dsc_name = "dsc_segnet" if dsc_overrides == ["model=dsc_segnet"] else name
    dsc = summarize(model(dsc_name, *[o for o in dsc_overrides if not o.startswith("model=")]), (128, 128))
    assert standard["params"] / dsc["params"] >= 7
    assert standard["macs"] / dsc["macs"] >= 7


@pytest.mark.parametrize(("name", "overrides"), [("dsc_segnet", []), ("segnet_vgg16bn", ["model.encoder.conv=dsc"]),
                                                 ("segnet_mobilenetv2", ["model.encoder.conv=dsc"])])
def test_dsc_leaves_no_dense_3x3_conv(model, name, overrides):
    net = model(name, *overrides)
    dense = [m for m in net.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3) and m.groups == 1]
    assert dense == []
    for block in (m for m in net.modules() if isinstance(m, DepthwiseSeparableConv2d)):
        depthwise, pointwise = block
        assert depthwise.groups == depthwise.in_channels == depthwise.out_channels
        assert pointwise.kernel_size == (1, 1)


def test_article_layout_is_64_128_256_512_with_2_2_3_3_blocks(model):
    net = model("segnet")
    assert net.encoder.stage_channels == (64, 128, 256, 512)
    assert net.encoder.decoder_depths == (2, 2, 3, 3)
    assert [len(stage) for stage in net.decoder.stages] == [3, 3, 2, 2]
    assert isinstance(net.input_norm, nn.BatchNorm2d)


def test_width_multiplier_scales_every_stage(model):
    net = model("segnet_vgg16bn", "model.encoder.width=0.5")
    assert net.encoder.stage_channels == (32, 64, 128, 256, 256)
    assert count_parameters(net) < 0.3 * count_parameters(model("segnet_vgg16bn"))


def test_unpooling_puts_values_back_where_the_maxima_were():
    x = torch.randn(2, 4, 7, 9)
    pooled, indices = F.max_pool2d(x, 2, 2, return_indices=True)
    unpooled = max_unpool2d(pooled, Pool(indices, x.shape[-2:]))
    assert torch.equal(unpooled, F.max_unpool2d(pooled, indices, 2, 2, output_size=x.shape[-2:]))
    # Single-channel indices (MobileNetV2's switches) are shared by all channels.
    shared = indices[:, :1]
    unpooled = max_unpool2d(pooled, Pool(shared, x.shape[-2:]))
    assert torch.equal(unpooled.flatten(2).gather(2, shared.expand(-1, 4, -1, -1).flatten(2)), pooled.flatten(2))
    assert (unpooled != 0).sum() == pooled.numel()


def test_unpooling_keeps_a_channels_last_input_channels_last_with_the_same_values():
    x = torch.randn(2, 4, 7, 9).contiguous(memory_format=torch.channels_last)
    pooled, indices = F.max_pool2d(x, 2, 2, return_indices=True)
    assert pooled.is_contiguous(memory_format=torch.channels_last)
    for pool_indices in (indices, indices[:, :1]):  # per-channel (VGG) and shared (MobileNetV2) indices
        unpooled = max_unpool2d(pooled, Pool(pool_indices, x.shape[-2:]))
        assert unpooled.is_contiguous(memory_format=torch.channels_last)
        assert torch.equal(unpooled, max_unpool2d(pooled.contiguous(), Pool(pool_indices.contiguous(), x.shape[-2:])))
    # And through a whole network: the decoder's convolutions all get channels_last activations.
    net = build_model(3, "dsc_segnet").to(memory_format=torch.channels_last).eval()
    formats = []
    for conv in (m for m in net.decoder.modules() if isinstance(m, torch.nn.Conv2d)):
        conv.register_forward_pre_hook(lambda _, inputs: formats.append(
            inputs[0].is_contiguous(memory_format=torch.channels_last)))
    with torch.no_grad():
        net(torch.randn(2, 3, 32, 32).contiguous(memory_format=torch.channels_last))
    assert formats and all(formats)


def test_mobilenetv2_switches_mark_the_strongest_position_of_each_window(model):
    encoder = model("segnet_mobilenetv2").encoder.eval()
    x = torch.randn(1, 3, 65, 97)
    features, pools = encoder(x)
    assert [tuple(p.size) for p in pools] == [(65, 97), (33, 49), (17, 25), (9, 13), (5, 7)]
    assert [tuple(f.shape[-2:]) for f in features] == [(33, 49), (17, 25), (9, 13), (5, 7), (3, 4)]
    strongest = x.amax(dim=1).flatten(1)
    chosen = strongest.gather(1, pools[0].indices.flatten(1))
    top_left_window = x.amax(dim=1)[0, :2, :2].max()
    assert chosen[0, 0] == top_left_window


def test_bilinear_upsampling_is_the_alternative_to_unpooling(model):
    net = model("segnet_mobilenetv2", "model.upsample=bilinear")
    assert net.decoder.upsample == "bilinear"
    assert net(torch.randn(1, 3, 64, 64)).shape == (1, 3, 64, 64)


def test_unknown_names_list_the_valid_ones():
    with pytest.raises(ValueError, match=r"unknown encoder 'resnet'; valid names: mobilenetv2, vgg"):
        get_encoder("resnet")
    with pytest.raises(ValueError, match=r"conv='depthwise'.*\['standard', 'dsc'\]"):
        get_encoder("vgg", conv="depthwise")
    with pytest.raises(ValueError, match=r"unknown VGG layout 'vgg19'; valid layouts: article, vgg16"):
        get_encoder("vgg", layout="vgg19")
    with pytest.raises(ValueError, match=r"upsample='nearest'.*\['unpool', 'bilinear'\]"):
        build_model(3, {"name": "vgg", "layout": "article"}, upsample="nearest")


def test_too_small_or_misshapen_input_fails_with_the_size(model):
    net = model("segnet_vgg16bn")
    with pytest.raises(ValueError, match=r"too small for segnet_vgg16bn: 5 downsamplings need at least 32 x 32"):
        net(torch.randn(1, 3, 31, 64))
    with pytest.raises(ValueError, match=r"N x 3 x H x W input, got shape \(3, 32, 32\)"):
        net(torch.randn(3, 32, 32))


def test_norm_and_activation_are_injectable():
    encoder = get_encoder("vgg", layout="article", width=0.125, norm_layer=nn.Identity, activation_layer=nn.GELU)
    net = build_model(2, {"name": "vgg", "layout": "article", "width": 0.125}, norm_layer=nn.Identity,
                      activation_layer=nn.GELU)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in encoder.modules())
    assert sum(isinstance(m, nn.GELU) for m in encoder.modules()) == 10
    assert not any(isinstance(m, (nn.BatchNorm2d, nn.ReLU)) for m in net.decoder.modules())
    assert net(torch.randn(2, 3, 16, 16)).shape == (2, 2, 16, 16)


def test_build_model_by_the_name_of_its_config():
    net = build_model(3, "dsc_segnet")
    assert net.name == "dsc_segnet" and count_parameters(net) == 1_752_356
    assert net(torch.zeros(1, 3, 32, 32)).shape == (1, 3, 32, 32)
    assert build_model(2, "dsc_segnet", upsample="bilinear").decoder.upsample == "bilinear"
    with pytest.raises(ValueError, match="unknown model 'unet'; valid names: dsc_segnet, segnet, segnet_mobilenetv2, "
                                         "segnet_vgg16bn"):
        build_model(3, "unet")
