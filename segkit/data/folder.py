"""`data=folder`: your own images and masks, in the layouts that labelling tools and mmsegmentation write:

    <root>/images/<id>.<jpg|jpeg|png|bmp|tif|tiff|webp>
    <root>/masks/<id>.<png|bmp|tif|tiff>     class ids (mode L, I; mode P read as palette indices) or RGB colours

Splits, first match wins: `<root>/splits/{train,val,test}.txt` (one id per line; `splits_dir` points
elsewhere); mmseg folders `images/{train,val,test}/` with `masks/{train,val,test}/`; else a seeded random
split of the flat folder, written as split lists to `save_split_to` so that it can be reused.

Classes, first match wins: `classes` in the config; `<root>/labelmap.txt` as CVAT and the VOC devkit write
it (`name:r,g,b::` per class, in class-id order); `<root>/classes.txt` (one name per line); the colours of
`palette` (named class_0, ...); else the ids found in the masks, named class_0, class_1, ...
RGB masks are read through the class colours (`palette`, else the labelmap's); `ignore_colors` become
`ignore_index`.
"""

from __future__ import annotations

import functools
import logging
import os
import random
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from segkit.data.files import FileDataModule, LabelMap, SampleFiles
from segkit.data.io import read_mask, read_split_file
from segkit.runtime.images import IMAGE_SUFFIXES, InvalidFileError, MissingFileError, require_file

log = logging.getLogger(__name__)

MASK_SUFFIXES = (".png", ".bmp", ".tif", ".tiff")
LABELMAP = "labelmap.txt"
CLASS_LIST = "classes.txt"
LABELMAP_FORMAT = "name:r,g,b:: (CVAT and VOC devkit labelmap.txt, header '# label:color_rgb:parts:actions')"
LAYOUT = "data=folder reads <root>/images/<id>.<ext> and <root>/masks/<id>.png (README, Your own data)"

Colour = tuple[int, int, int]


@dataclass(frozen=True)
class FolderClasses:
    names: tuple[str, ...]
    colours: tuple[Colour, ...] | None  # one per class, in class-id order; None: masks hold class ids
    source: str  # where the names came from, for the log


def parse_colour(value: Any) -> Colour | None:
    """[r, g, b] (a list, or the text "r,g,b") as a tuple of three 0..255 integers; None if it is not one."""
    parts = value.split(",") if isinstance(value, str) else value
    try:
        colour = tuple(int(part) for part in parts)
    except (TypeError, ValueError):
        return None
    return colour if len(colour) == 3 and all(0 <= v <= 255 for v in colour) else None


def check_colours(colours: Sequence[Any], key: str) -> tuple[Colour, ...]:
    parsed = tuple(parse_colour(colour) for colour in colours)
    bad = [list(colour) for colour, ok in zip(colours, parsed) if ok is None]
    if bad:
        raise ValueError(f"{key}: {bad} are not colours; expected [r,g,b] lists of integers 0..255")
    return parsed


def check_unique(values: Sequence[Any], what: str, source: str | Path) -> None:
    repeated = [value for value, count in Counter(values).items() if count > 1]
    if repeated:
        raise InvalidFileError(f"{source}: {what} {repeated} appear more than once; expected one per class")


def read_labelmap(path: Path) -> tuple[tuple[str, ...], tuple[Colour, ...]]:
    """Class names and colours of a `labelmap.txt`, in class-id order."""
    require_file(path, "labelmap")
    names, colours = [], []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        fields = line.split(":")
        colour = parse_colour(fields[1]) if len(fields) == 4 and fields[0].strip() else None
        if colour is None:
            raise InvalidFileError(f"{path}, line {number}: {line!r}; expected {LABELMAP_FORMAT}")
        names.append(fields[0].strip())
        colours.append(colour)
    if not names:
        raise InvalidFileError(f"{path}: no class lines; expected {LABELMAP_FORMAT}")
    check_unique(names, "class names", path)
    check_unique(colours, "colours", path)
    return tuple(names), tuple(colours)


def check_names(classes: Sequence[Any]) -> tuple[str, ...]:
    names = tuple(str(name) for name in classes)
    if not names:
        raise ValueError("data.classes=[]: expected the class names in class-id order, or null to find them")
    check_unique(names, "class names", "data.classes")
    return names


def read_class_list(path: Path) -> tuple[str, ...]:
    names = tuple(line.strip() for line in path.read_text().splitlines() if line.strip())
    if not names:
        raise InvalidFileError(f"{path}: lists no class names; expected one name per line, in class-id order")
    check_unique(names, "class names", path)
    return names


def mask_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in MASK_SUFFIXES)


def scan_mask_ids(masks_dir: Path, ignore_index: int) -> tuple[int, ...]:
    """The class ids found in every mask below `masks_dir`, `ignore_index` left out."""
    paths = mask_files(masks_dir) if masks_dir.is_dir() else []
    if not paths:
        raise MissingFileError(f"{masks_dir}: no mask files ({' '.join(MASK_SUFFIXES)}) to count the classes in")
    # Config resolution asks for the classes several times per command; each file's mtime keys the cache.
    return _mask_ids(tuple((path, path.stat().st_mtime_ns) for path in paths), ignore_index)


@functools.cache
def _mask_ids(files: tuple[tuple[Path, int], ...], ignore_index: int) -> tuple[int, ...]:
    found: set[int] = set()
    for path, _ in files:
        try:
            found.update(np.unique(read_mask(path)).tolist())
        except InvalidFileError as error:
            raise InvalidFileError(f"{error} (to count the classes; an RGB colour mask is read through the class "
                                   f"colours of {LABELMAP} beside images/ and masks/, or of data.palette)") from None
    ids = tuple(sorted(found - {ignore_index}))
    if not ids:
        raise InvalidFileError(f"{files[0][0].parent}: every mask pixel is ignore_index={ignore_index}; no classes")
    return ids


def find_classes(root: Path, classes: Sequence[str] | None = None, palette: Sequence[Any] | None = None,
                 ignore_index: int = 255) -> FolderClasses:
    """The classes of the folder `root`, first match wins (see the module's docstring). Reads no file
    when `classes` and `palette` are given, as they are in a trained checkpoint's config."""
    colours, colour_source = None, "data.palette"
    if palette is not None:
        colours = check_colours(palette, "data.palette")
        check_unique(colours, "colours", "data.palette")
    if classes is not None and colours is not None:
        return FolderClasses(check_names(classes), colours, "data.classes")
    if not root.is_dir():
        raise MissingFileError(f"data.root={root}: folder not found; expected a folder holding images/ and masks/ "
                               f"(README, Your own data)")
    labelmap = read_labelmap(root / LABELMAP) if (root / LABELMAP).is_file() else None
    if colours is None and labelmap is not None:
        colours, colour_source = labelmap[1], str(root / LABELMAP)
    if classes is not None:
        names, source = check_names(classes), "data.classes"
    elif labelmap is not None:
        names, source = labelmap[0], str(root / LABELMAP)
    elif (root / CLASS_LIST).is_file():
        names, source = read_class_list(root / CLASS_LIST), str(root / CLASS_LIST)
    elif colours is not None:
        names, source = tuple(f"class_{i}" for i in range(len(colours))), "the colours of data.palette"
    else:
        ids = scan_mask_ids(root / "masks", ignore_index)
        names = tuple(f"class_{i}" for i in range(ids[-1] + 1))
        source = (f"no data.classes, {LABELMAP} or {CLASS_LIST}: the ids {list(ids)} found in {root / 'masks'}, "
                  f"named class_0..class_{ids[-1]}")
    if colours is not None and len(colours) != len(names):
        raise ValueError(f"{colour_source} has {len(colours)} colours for the {len(names)} classes {list(names)} of "
                         f"{source}; expected one colour per class")
    return FolderClasses(names, colours, source)


def colour_to_id(colours: Sequence[Colour] | None, ignore_colors: Sequence[Colour],
                 ignore_index: int) -> dict[Colour, int] | None:
    """How RGB masks read: each class colour to its id, each ignored colour to `ignore_index`."""
    if colours is None and not ignore_colors:
        return None
    mapping = {colour: class_id for class_id, colour in enumerate(colours or ())}
    clashes = [colour for colour in ignore_colors if colour in mapping]
    if clashes:
        raise ValueError(f"data.ignore_colors: {[list(c) for c in clashes]} are class colours (of class ids "
                         f"{[mapping[c] for c in clashes]}); expected colours that no class uses")
    return {**mapping, **{colour: ignore_index for colour in ignore_colors}}


def index_files(folder: Path, suffixes: Sequence[str], what: str) -> dict[str, Path]:
    """The files of `folder` with one of `suffixes`, by id (file stem); two files with one id are an error."""
    if not folder.is_dir():
        raise MissingFileError(f"{folder}: {what} folder not found; {LAYOUT}")
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.is_file() and path.suffix.lower() in suffixes and not path.name.startswith("."):
            if path.stem in found:
                raise InvalidFileError(f"{found[path.stem]} and {path}: two {what}s with the id {path.stem!r}; "
                                       f"expected one {what} per id")
            found[path.stem] = path
    if not found:
        raise MissingFileError(f"{folder}: no {what} files ({' '.join(suffixes)})")
    return found


def pair_by_id(ids: Sequence[str], image_dir: Path, mask_dir: Path, listed_in: Path | None = None
               ) -> list[SampleFiles]:
    """The (image, mask) files of `ids`. An id without a mask is read as <id>.png, whose absence is then
    that sample's error; in a folder (not a split list), a mask without an image is an error at once."""
    images = index_files(image_dir, IMAGE_SUFFIXES, "image")
    masks = index_files(mask_dir, MASK_SUFFIXES, "mask")
    if listed_in is not None:
        unknown = [i for i in ids if i not in images]
        if unknown:
            raise MissingFileError(f"{listed_in}: {len(unknown)} ids have no image in {image_dir}, e.g. {unknown[:5]}; "
                                   f"expected <id>{'|'.join(IMAGE_SUFFIXES)}")
    else:
        orphans = sorted(set(masks) - set(images))
        if orphans:
            unmasked = sorted(set(images) - set(masks))
            raise InvalidFileError(
                f"{mask_dir}: {len(orphans)} masks have no image of the same id in {image_dir}, e.g. {orphans[:5]}"
                f"{f' (images without a mask: {unmasked[:5]})' if unmasked else ''}; an image and its mask share "
                f"their file stem: images/<id>.jpg, masks/<id>.png"
            )
    return [SampleFiles(i, images[i], masks.get(i, mask_dir / f"{i}.png")) for i in ids]


def random_split(ids: Sequence[str], val_fraction: float, seed: int) -> dict[str, list[str]]:
    """`val_fraction` of `ids` (at least one) drawn for validation with `seed`, the rest for training."""
    shuffled = sorted(ids)
    random.Random(seed).shuffle(shuffled)
    num_val = max(1, round(len(shuffled) * val_fraction))
    if num_val >= len(shuffled):
        raise ValueError(f"data.val_fraction={val_fraction} leaves no training images of the {len(shuffled)} found")
    return {"train": sorted(shuffled[num_val:]), "val": sorted(shuffled[:num_val])}


def save_split(split: dict[str, list[str]], folder: Path) -> None:
    """Writes each split's ids to <folder>/<split>.txt; a list already there must hold the same ids."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, ids in split.items():
        path, text = folder / f"{name}.txt", "".join(f"{i}\n" for i in ids)
        if path.is_file():
            if path.read_text() != text:
                raise InvalidFileError(f"{path}: holds another {name} split than the one drawn now (the images "
                                       f"changed?); set data.splits_dir={folder} to reuse it, or data.save_split_to "
                                       f"to another folder")
            continue
        # Written whole, then renamed: DDP ranks draw the same split and may write it at the same time.
        partial = path.with_name(f".{path.name}.{os.getpid()}")
        partial.write_text(text)
        partial.replace(path)


class FolderDataModule(FileDataModule):
    """Your own folder of images and masks (see the module's docstring): its layout is detected when a
    split is first read, its classes when the datamodule is built."""

    splits = ("train", "val", "test")
    layout_dirs = ()  # images/ and masks/ are checked as they are listed, with the layouts' own message

    def __init__(
        self,
        root: str | Path,
        classes: Sequence[str] | None = None,
        palette: Sequence[Sequence[int]] | None = None,
        ignore_colors: Sequence[Sequence[int]] = (),
        splits_dir: str | Path | None = None,
        val_fraction: float = 0.2,
        seed: int = 0,
        save_split_to: str | Path | None = None,
        ignore_index: int = 255,
        **kwargs,
    ) -> None:
        self.found = find_classes(Path(root).expanduser(), classes, palette, ignore_index)
        self.class_names = self.found.names
        if self.found.colours is not None:
            self.colormap = np.array(self.found.colours, dtype=np.uint8)
        super().__init__(root=root, ignore_index=ignore_index, **kwargs)
        if not 0 < val_fraction < 1:
            raise ValueError(f"data.val_fraction={val_fraction}: expected a fraction between 0 and 1")
        num_classes = len(self.class_names)
        self.label_map = LabelMap({**{i: i for i in range(num_classes)}, ignore_index: ignore_index},
                                  f"the class ids 0..{num_classes - 1} and {ignore_index} (ignored)")
        self.colour_to_id = colour_to_id(self.found.colours, check_colours(ignore_colors, "data.ignore_colors"),
                                         ignore_index)
        self.splits_dir = Path(splits_dir).expanduser() if splits_dir is not None else None
        self.val_fraction = val_fraction
        self.seed = seed
        self.save_split_to = Path(save_split_to).expanduser() if save_split_to is not None else None
        self.drawn_split: dict[str, list[str]] | None = None
        log.info("data=folder: %d classes %s from %s", num_classes, list(self.class_names), self.found.source)

    @classmethod
    def config_class_names(cls, config: Mapping[str, Any]) -> tuple[str, ...]:
        return find_classes(Path(config["root"]).expanduser(), config.get("classes"), config.get("palette"),
                            config.get("ignore_index", 255)).names

    def config_found_in_data(self) -> dict[str, Any]:
        colours = [list(colour) for colour in self.found.colours] if self.found.colours is not None else None
        return {"classes": list(self.class_names), "palette": colours}

    def split_samples(self, split: str) -> list[SampleFiles]:
        images, masks = self.root / "images", self.root / "masks"
        split_lists = self.splits_dir or self.root / "splits"
        if self.splits_dir is not None or split_lists.is_dir():
            path = split_lists / f"{split}.txt"
            log.info("data=folder: %s split from the list %s", split, path)
            return pair_by_id(read_split_file(path), images, masks, listed_in=path)
        if (images / "train").is_dir():
            log.info("data=folder: %s split from the mmseg-style folders %s and %s", split, images / split,
                     masks / split)
            return pair_by_id(sorted(index_files(images / split, IMAGE_SUFFIXES, "image")), images / split,
                              masks / split)
        if split == "test":
            raise MissingFileError(f"{split_lists / 'test.txt'}: a flat folder has no test split; list one there "
                                   f"(with train.txt and val.txt), or evaluate data.split=val")
        if self.drawn_split is None:
            ids = sorted(index_files(images, IMAGE_SUFFIXES, "image"))
            self.drawn_split = random_split(ids, self.val_fraction, self.seed)
            if self.save_split_to is not None:
                save_split(self.drawn_split, self.save_split_to)
            log.info("data=folder: %s holds no split lists or split folders: drew %d train and %d val images "
                     "(data.val_fraction=%s, data.seed=%s)%s", self.root, len(self.drawn_split["train"]),
                     len(self.drawn_split["val"]), self.val_fraction, self.seed,
                     f", saved to {self.save_split_to}" if self.save_split_to is not None else "")
        return pair_by_id(self.drawn_split[split], images, masks)
