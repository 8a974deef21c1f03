"""Running an exported segkit model with onnxruntime alone: this package imports numpy, pillow and onnxruntime
(and the standard library), never torch, Lightning, Hydra or OmegaConf, directly or through another segkit
module (tests/test_imports.py checks it), so a deployment installs just those.

    python -m segkit.runtime model.int8.onnx photos/ --output masks/   # with torch: segkit predict onnx_path=...

- `metadata`: what `segkit export` writes into the file besides its graph (classes, colours, normalisation, size).
- `session`: `OnnxSegmenter`, the file in onnxruntime with its training's preprocessing.
- `tta`: test-time augmentation's views, shared with the PyTorch paths.
- `images`, `files`: reading images as segkit's datasets do; listing inputs and writing masks and overlays.
"""

from segkit.runtime.files import segment_files
from segkit.runtime.images import read_image
from segkit.runtime.metadata import ModelMetadata
from segkit.runtime.session import OnnxSegmenter
from segkit.runtime.tta import TestTimeAugmentation, build_tta

__all__ = ["ModelMetadata", "OnnxSegmenter", "TestTimeAugmentation", "build_tta", "read_image", "segment_files"]
