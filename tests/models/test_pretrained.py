"""The real loading path of torchvision's pretrained weights, offline (see the `offline` fixture)."""

import logging

import pytest
import torch

from segkit.models import build_model, count_parameters
from segkit.models.encoders import WeightsUnavailableError, get_encoder
from tests.conftest import ARCHITECTURES, WEIGHTS, cache_file

ENCODER_ARGS = {"vgg": {"layout": "vgg16"}, "mobilenetv2": {}}


@pytest.mark.parametrize("name", sorted(WEIGHTS))
def test_pretrained_encoder_equals_torchvision_features_stage_by_stage(offline, name):
    encoder = get_encoder(name, weights="imagenet", **ENCODER_ARGS[name]).eval()
    reference = ARCHITECTURES[name](weights=WEIGHTS[name]).features.eval()
    assert count_parameters(encoder) == count_parameters(reference)

    # Every tensor came from the file, buffers included.
    saved = torch.load(cache_file(offline, WEIGHTS[name]), weights_only=True)
    for key, value in encoder.features.state_dict().items():
        assert torch.equal(value, saved[f"features.{key}"]), key

    x = torch.randn(2, 3, 96, 128)
    with torch.no_grad():
        features, pools = encoder(x)
        stage_ends = _stage_ends(reference, name)
        assert len(features) == len(pools) == len(stage_ends) == 5
        for stage, end in enumerate(stage_ends):
            assert torch.equal(features[stage], reference[: end + 1](x)), f"stage {stage}"


def _stage_ends(features: torch.nn.Sequential, name: str) -> list[int]:
    """Index of the last layer of each stage in torchvision's features."""
    if name == "vgg":
        return [i for i, layer in enumerate(features) if isinstance(layer, torch.nn.MaxPool2d)]
    strided = [i for i, layer in enumerate(features) if getattr(layer, "stride", None) == 2 or i == 0]
    return [i - 1 for i in strided[1:]] + [len(features) - 1]


def test_pretrained_model_trains_from_the_weights(offline):
    net = build_model(3, {"name": "mobilenetv2", "weights": "imagenet"})
    assert net.encoder.weights == "imagenet"
    assert net.input_mean == (0.485, 0.456, 0.406) and net.input_std == (0.229, 0.224, 0.225)
    assert net(torch.randn(1, 3, 64, 64)).shape == (1, 3, 64, 64)


@pytest.mark.parametrize("name", sorted(WEIGHTS))
def test_missing_weights_name_the_file_the_url_and_the_override(monkeypatch, tmp_path, name):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    weights = WEIGHTS[name]
    with pytest.raises(WeightsUnavailableError) as error:
        get_encoder(name, weights="imagenet", **ENCODER_ARGS[name])
    message = str(error.value)
    assert str(cache_file(tmp_path, weights)) in message
    assert weights.url in message
    assert "model.encoder.weights=null" in message


def test_a_file_without_some_encoder_tensor_is_refused(offline, monkeypatch, tmp_path):
    state = torch.load(cache_file(offline, WEIGHTS["mobilenetv2"]), weights_only=True)
    del state["features.3.conv.2.weight"]
    broken_home = tmp_path / "home"
    path = cache_file(broken_home, WEIGHTS["mobilenetv2"])
    path.parent.mkdir(parents=True)
    torch.save(state, path)
    monkeypatch.setenv("TORCH_HOME", str(broken_home))
    with pytest.raises(RuntimeError, match=r"MobileNet_V2_Weights.IMAGENET1K_V2 does not fit.*missing.*3\.conv\.2\.weight"):
        get_encoder("mobilenetv2", weights="imagenet")


def test_dsc_or_narrower_encoders_start_from_scratch_and_say_so(offline, caplog):
    with caplog.at_level(logging.WARNING):
        encoder = get_encoder("vgg", layout="vgg16", weights="imagenet", conv="dsc")
    assert encoder.weights is None
    assert "no imagenet weights exist for conv=dsc" in caplog.text
