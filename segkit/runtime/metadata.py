"""What an exported file carries besides its graph: segkit's ONNX metadata schema (`metadata_props`, keys
`segkit.*`, JSON values), written by `segkit export` and read by the runtime."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path

METADATA_PREFIX = "segkit."
PRECISIONS = ("fp32", "fp16", "int8")


@dataclass(frozen=True)
class ModelMetadata:
    """What an exported file carries besides its graph; each field is the metadata key `segkit.<field>`."""

    class_names: list[str]
    colormap: list[list[int]]  # an RGB colour per class id (VOC-style datasets: 256 of them)
    mean: list[float]  # per channel, on the 0..1 scale, as training normalised
    std: list[float]
    image_size: list[int]  # [height, width] of training, what the network sees at inference
    size_divisor: int  # the network's total stride: validation pads whole images to a multiple of it
    precision: str
    segkit_version: str

    def to_props(self) -> dict[str, str]:
        return {METADATA_PREFIX + name: json.dumps(value) for name, value in asdict(self).items()}

    @classmethod
    def from_props(cls, props: Mapping[str, str], source: str | Path) -> ModelMetadata:
        """The metadata of an ONNX file's `metadata_props`; `source` names the file in errors."""
        names = [field.name for field in fields(cls)]
        missing = [METADATA_PREFIX + name for name in names if METADATA_PREFIX + name not in props]
        if missing:
            raise ValueError(f"{source}: the ONNX metadata lacks {missing}; export the checkpoint with "
                             f"`python -m segkit.export`, which writes them")
        values = {}
        for name in names:
            try:
                values[name] = json.loads(props[METADATA_PREFIX + name])
            except json.JSONDecodeError as error:
                raise ValueError(f"{source}: metadata {METADATA_PREFIX}{name} is not JSON ({error})") from error
        metadata = cls(**values)
        metadata._check(source)
        return metadata

    def _check(self, source: str | Path) -> None:
        problems = []
        if len(self.colormap) < len(self.class_names):
            problems.append(f"{len(self.colormap)} colours for {len(self.class_names)} classes")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            problems.append(f"mean {self.mean} and std {self.std} must be 3 values each, std > 0")
        if len(self.image_size) != 2 or min(self.image_size) < 1:
            problems.append(f"image_size {self.image_size} must be [height, width]")
        if self.precision not in PRECISIONS:
            problems.append(f"precision {self.precision!r} is not one of {list(PRECISIONS)}")
        if problems:
            raise ValueError(f"{source}: invalid segkit metadata: {'; '.join(problems)}")
