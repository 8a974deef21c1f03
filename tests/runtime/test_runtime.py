import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from segkit.runtime.metadata import ModelMetadata
from segkit.runtime.session import OnnxSegmenter, resize_bilinear
from segkit.tasks.export import export_onnx

METADATA = ModelMetadata(class_names=["pet", "background"], colormap=[[255, 128, 0], [0, 0, 0]], mean=[0.5] * 3,
                         std=[0.25] * 3, image_size=[32, 48], size_divisor=16, precision="int8", segkit_version="0.1.0")


@pytest.mark.parametrize("size", [(13, 29), (40, 64), (96, 30)], ids=["shrink", "grow", "mixed"])
def test_resize_bilinear_matches_cv2_and_torch(size):
    image = np.random.default_rng(0).uniform(0, 255, size=(40, 64, 3)).astype(np.float32)
    resized = resize_bilinear(image, size)
    # Training resizes images with cv2 (INTER_LINEAR), segkit.predict the logits with torch.
    expected_cv2 = cv2.resize(image, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
    expected_torch = F.interpolate(torch.from_numpy(image).permute(2, 0, 1)[None], size=size, mode="bilinear",
                                   align_corners=False)[0].permute(1, 2, 0).numpy()
    assert resized.shape == (*size, 3)
    np.testing.assert_allclose(resized, expected_cv2, rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(resized, expected_torch, rtol=1e-5, atol=1e-3)


def test_metadata_round_trips_and_bad_metadata_is_refused_by_key():
    assert ModelMetadata.from_props(METADATA.to_props(), "m.onnx") == METADATA
    props = METADATA.to_props()
    del props["segkit.mean"]
    with pytest.raises(ValueError, match=r"m.onnx: the ONNX metadata lacks \['segkit.mean'\]; export .*segkit.export"):
        ModelMetadata.from_props(props, "m.onnx")
    props = METADATA.to_props() | {"segkit.colormap": "[[0, 0, 0]]", "segkit.precision": '"int4"'}
    with pytest.raises(ValueError, match=r"m.onnx: invalid segkit metadata: 1 colours for 2 classes; precision 'int4'"):
        ModelMetadata.from_props(props, "m.onnx")
    with pytest.raises(ValueError, match=r"m.onnx: metadata segkit.std is not JSON"):
        ModelMetadata.from_props(METADATA.to_props() | {"segkit.std": "0.25,"}, "m.onnx")


def test_an_onnx_file_without_segkit_metadata_is_refused_by_name(tmp_path):
    path = export_onnx(torch.nn.Conv2d(3, 2, 1), tmp_path / "plain.onnx", (8, 8), exporter="torchscript")
    with pytest.raises(ValueError, match=f"{path}: the ONNX metadata lacks"):
        OnnxSegmenter(path)
    with pytest.raises(FileNotFoundError, match="onnx_path=.*missing.onnx: no such ONNX file"):
        OnnxSegmenter(tmp_path / "missing.onnx")
