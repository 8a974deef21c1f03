"""python -m segkit.predict ckpt_path=... input=...: class masks and overlays of image files, at each
image's own size, from a trained checkpoint or its ONNX export.

    python -m segkit.predict ckpt_path=outputs/train/runs/<run>/checkpoints/last.ckpt input=photos/ output=masks/
    python -m segkit.predict ckpt_path=... input=[a.jpg,b.png] tta=flip [tta_scales=[0.75,1.0]]
    python -m segkit.predict ckpt_path=<trained on crops> input=scan.tif sliding_window=true   # docs/eval.md
    python -m segkit.predict onnx_path=model.int8.onnx input=photos/       # through segkit.runtime (onnxruntime)

Writes `<stem>.png`, a palette PNG whose pixel values are class ids (in the dataset's colours),
`<stem>_overlay.png`, the image blended with the coloured mask, and `legend.png`, the class of each colour.
Images are read as segkit's datasets read them (EXIF orientation, grayscale, palette and RGBA to RGB) and
normalised as training did.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from segkit.config import CONFIG_PATH
from segkit.tasks.predict import predict
from segkit.utilities.allocator import keep_freed_memory


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="predict")
def main(cfg: DictConfig) -> None:
    keep_freed_memory()
    predict(cfg)


if __name__ == "__main__":
    main()
