"""The README's Python API snippets, run as written, in order, in a fresh folder."""

import re

import numpy as np
import torch
from PIL import Image

from segkit.data import ShapesDataset
from tests.conftest import REPO


def python_api_snippets() -> list[str]:
    readme = (REPO / "README.md").read_text()
    section = readme.split("\n## Python API\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)


def test_readme_python_api_snippets_run_as_written(tmp_path, monkeypatch):
    snippets = python_api_snippets()
    assert len(snippets) == 3  # build by name; train from a script; load a checkpoint and predict
    monkeypatch.chdir(tmp_path)
    image, _ = ShapesDataset(1, (40, 56))[0]
    Image.fromarray(image).save(tmp_path / "photo.jpg")  # the image the snippet predicts
    namespace: dict = {}
    for snippet in snippets:
        exec(compile(snippet, "README.md", "exec"), namespace)  # noqa: S102 - the README's own code
    assert namespace["logits"].shape == torch.Size([1, 3, 64, 64])
    assert namespace["metrics"]["best_checkpoint"].startswith(str(tmp_path / "outputs" / "from_script"))
    assert 0.0 <= namespace["metrics"]["val/miou"] <= 1.0 and namespace["metrics"]["epochs"] == 1
    assert namespace["module"].class_names == ["object", "background", "border"]
    mask = namespace["mask"]
    assert mask.shape == (40, 56) and mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 1, 2}
