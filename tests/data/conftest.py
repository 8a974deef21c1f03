"""What the data tests share: the real Pets sample turned into each layout that `data=folder` reads
(`convert_pets`). Images are linked, not copied; masks are written from the trimaps (1 pet, 2 background, 3 border).

Layouts (split lists: the first N ids of Pets' trainval list as train.txt, of its test list as val.txt):
    lists   images/ + masks/ of class ids (mode L) + classes.txt + splits/{train,val}.txt
    rgb     images/ + masks/ of RGB colours + labelmap.txt (pet, background) + splits/; the border drawn
            in VOC's border colour, to be read with data.ignore_colors=[[224,224,192]]
    mmseg   images/{train,val}/ + masks/{train,val}/ of palette PNGs (mode P) + classes.txt
    flat    images/ + masks/ of class ids, nothing else: split drawn and classes counted by data=folder
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from segkit.data.io import read_split_file
from segkit.data.palettes import IGNORE_COLOUR, PETS_CLASS_NAMES, TRIMAP_COLORMAP

LAYOUTS = ("lists", "rgb", "mmseg", "flat")
PETS = "oxford-iiit-pet"


def pets_split_ids(shared_data: Path, num_train: int | None, num_val: int | None) -> dict[str, list[str]]:
    """The ids data=pets reads with data.num_train / data.num_val: the first ones of trainval and test."""
    lists = shared_data / PETS / "annotations"
    return {"train": read_split_file(lists / "trainval.txt")[:num_train],
            "val": read_split_file(lists / "test.txt")[:num_val]}


def trimap_ids(shared_data: Path, sample_id: str) -> np.ndarray:
    """Pets' trimap as the class ids of data=pets: 0 pet, 1 background, 2 border."""
    return np.asarray(Image.open(shared_data / PETS / "annotations" / "trimaps" / f"{sample_id}.png")) - 1


def write_mask(ids: np.ndarray, layout: str, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if layout == "rgb":
        colours = np.vstack([TRIMAP_COLORMAP[:2], IGNORE_COLOUR])  # pet, background, border (ignored)
        Image.fromarray(colours[ids]).save(path)
    elif layout == "mmseg":
        mask = Image.fromarray(ids.astype(np.uint8), mode="P")
        mask.putpalette(TRIMAP_COLORMAP.ravel().tolist())
        mask.save(path)
    else:
        Image.fromarray(ids.astype(np.uint8), mode="L").save(path)


def convert_pets(shared_data: Path, out: Path, layout: str, num_train: int | None = None,
                 num_val: int | None = None) -> dict[str, list[str]]:
    """Writes the Pets sample's first `num_train` trainval and `num_val` test samples in `layout` below
    `out`; returns the ids per split."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout={layout!r}; expected one of {LAYOUTS}")
    split_ids = pets_split_ids(shared_data, num_train, num_val)
    for split, ids in split_ids.items():
        subfolder = split if layout == "mmseg" else ""
        for sample_id in ids:
            image = out / "images" / subfolder / f"{sample_id}.jpg"
            image.parent.mkdir(parents=True, exist_ok=True)
            image.symlink_to((shared_data / PETS / "images" / f"{sample_id}.jpg").resolve())
            write_mask(trimap_ids(shared_data, sample_id), layout, out / "masks" / subfolder / f"{sample_id}.png")
        if layout in ("lists", "rgb"):
            (out / "splits").mkdir(exist_ok=True)
            (out / "splits" / f"{split}.txt").write_text("".join(f"{i}\n" for i in ids))
    if layout in ("lists", "mmseg"):
        (out / "classes.txt").write_text("".join(f"{name}\n" for name in PETS_CLASS_NAMES["trimap"]))
    if layout == "rgb":
        lines = [f"{name}:{','.join(map(str, colour))}::" for name, colour in zip(PETS_CLASS_NAMES["binary"],
                                                                                   TRIMAP_COLORMAP.tolist())]
        (out / "labelmap.txt").write_text("\n".join(["# label:color_rgb:parts:actions", *lines]) + "\n")
    return split_ids
