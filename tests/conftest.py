"""What the tests share: the tiny run (`TINY`, `compose_train`) and the other configs composed as the commands
compose them, commands run in a subprocess, the offline weight cache, and small datasets written in the exact
layouts and formats of the official archives (the real Pets sample is beside the project, in ../shared)."""

from __future__ import annotations

import os
import signal
import struct
import subprocess
import sys
import zlib
from collections.abc import Callable
from pathlib import Path
from urllib.error import URLError

import numpy as np
import pytest
import scipy.io
import scipy.sparse
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, open_dict
from PIL import Image
from torchvision.models import MobileNet_V2_Weights, VGG16_BN_Weights, mobilenet_v2, vgg16_bn

from segkit.config import CONFIG_DIR
from segkit.data.palettes import voc_palette
from segkit.tasks.evaluate import register_checkpoint_data

# The checkout the tests run: commands started in a subprocess import its segkit.
REPO = Path(__file__).resolve().parent.parent

# A run small enough for the fast suite: tiny images, a few batches, no progress bar or summary.
TINY = [
    "data.image_size=[32,32]",
    "data.num_train=32",
    "data.num_val=16",
    "data.batch_size=8",
    "trainer.max_epochs=1",
    "trainer.accelerator=cpu",
    "trainer.log_every_n_steps=1",
    "callbacks.rich_progress_bar=null",
    "callbacks.model_summary=null",
    "+trainer.enable_progress_bar=false",
    "+trainer.enable_model_summary=false",
]


def compose_train(*overrides: str, output_dir: Path, tiny: bool = True) -> DictConfig:
    """Composes conf/train.yaml as `python -m segkit.train <overrides>` would, writing into output_dir."""
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=[*(TINY if tiny else []), *overrides])
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
    return cfg


@pytest.fixture
def make_config(tmp_path: Path) -> Callable[..., DictConfig]:
    """`compose_train` writing into tmp_path."""

    def _make(*overrides: str, tiny: bool = True) -> DictConfig:
        return compose_train(*overrides, output_dir=tmp_path / "run", tiny=tiny)

    return _make


@pytest.fixture
def voc_root(tmp_path: Path) -> Path:
    """A VOC 2012 layout of `VOC_SPLITS` in tmp_path."""
    write_voc(tmp_path, VOC_SPLITS)
    return tmp_path


WEIGHTS = {"vgg": VGG16_BN_Weights.IMAGENET1K_V1, "mobilenetv2": MobileNet_V2_Weights.IMAGENET1K_V2}
ARCHITECTURES = {"vgg": vgg16_bn, "mobilenetv2": mobilenet_v2}


def cache_file(torch_home: Path, weights) -> Path:
    return torch_home / "hub" / "checkpoints" / Path(weights.url).name


@pytest.fixture(scope="session")
def torch_home(tmp_path_factory) -> Path:
    """A torchvision cache holding randomly initialised weights with the official keys and shapes, so
    the real loading code runs with no download."""
    home = tmp_path_factory.mktemp("torch_home")
    torch.manual_seed(0)
    for name, weights in WEIGHTS.items():
        state = ARCHITECTURES[name]().state_dict()
        for key, value in state.items():  # non-trivial BatchNorm statistics, so a skipped load would show
            if key.endswith(("running_mean", "running_var")):
                value.uniform_(0.5, 1.5)
        path = cache_file(home, weights)
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(state, path)
    return home


@pytest.fixture(autouse=True)
def offline(monkeypatch, torch_home) -> Path:
    """Every test: weights come from the test cache, and any download attempt fails at once."""
    monkeypatch.setenv("TORCH_HOME", str(torch_home))

    def no_network(url, *args, **kwargs):
        raise URLError(f"tests never download ({url})")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    return torch_home


def compose_eval(ckpt_path: Path, *overrides: str, output_dir: Path) -> DictConfig:
    """conf/eval.yaml as `python -m segkit.eval ckpt_path=... <overrides>` composes it."""
    register_checkpoint_data(ckpt_path)
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("eval", overrides=[f"ckpt_path={ckpt_path}", "trainer.accelerator=cpu",
                                         "+trainer.enable_progress_bar=false", *overrides])
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
    return cfg


def compose_predict(model_path: Path, *overrides: str, output_dir: Path, key: str = "ckpt_path") -> DictConfig:
    """conf/predict.yaml with `<key>=<model_path>`, key ckpt_path or onnx_path."""
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("predict", overrides=[f"{key}={model_path}", "device=cpu", *overrides])
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
    return cfg


# The command of issue 16, which hung at the end of the first epoch with the default callbacks, on tiny data. Not
# TINY: it turns the progress bar and the model summary off, and the hang came from the progress bar.
DDP = ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "trainer.max_epochs=1",
       "trainer.limit_train_batches=2", "trainer.limit_val_batches=2",
       "data.image_size=[32,32]", "data.num_train=32", "data.num_val=16", "data.batch_size=8",
       "trainer.log_every_n_steps=1"]


def run_train(arguments: list[str], cwd: Path, timeout_s: float = 300, **environ: str) -> subprocess.CompletedProcess:
    """`python -m segkit.train <arguments>` started in `cwd`, importing this checkout's segkit; on a timeout (a
    deadlock) every process it started is killed and the test fails with their output."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1", **environ}
    command = [sys.executable, "-m", "segkit.train", *arguments]
    # A session of its own: the processes of ranks > 0 are killed with it.
    process = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    try:
        stdout, stderr = process.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        stdout, stderr = process.communicate()
        pytest.fail(f"still running after {timeout_s} s, killed: {stdout[-2000:]}{stderr[-4000:]}")
    assert process.returncode == 0, stdout[-2000:] + stderr[-4000:]
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


def multirun(tmp_path: Path, *overrides: str, timeout: int = 600) -> tuple[Path, str]:
    tmp_path.mkdir(parents=True, exist_ok=True)
    sweep_dir = tmp_path / "sweep"
    result = subprocess.run(
        [sys.executable, "-m", "segkit.train", "-m", *TINY, *overrides, f"hydra.sweep.dir={sweep_dir}"],
        cwd=tmp_path, capture_output=True, text=True, timeout=timeout,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return sweep_dir, result.stdout


# The real two-breed Pets sample, beside the project: <repo>/../shared/data/oxford-iiit-pet.
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


# A small VOC layout: ids of both splits, in list order.
VOC_SPLITS = {"train": ["2007_000032", "2007_000039", "2008_000002"], "val": ["2007_000033", "2009_000001"]}


def require_shared_pets() -> Path:
    """The shared data root; skips the test where the sample is absent, fails on CI where it must be."""
    if not (SHARED_DATA / "oxford-iiit-pet").is_dir():
        reason = f"the real Pets sample is not at {SHARED_DATA / 'oxford-iiit-pet'}"
        if os.environ.get("CI") == "true":
            pytest.fail(reason + " (CI=true: it must be)")
        pytest.skip(reason)
    return SHARED_DATA


def sample_size(index: int) -> tuple[int, int]:
    """Different (height, width) per sample, none a multiple of 32, so padding shows."""
    return 40 + 7 * (index % 4), 50 + 5 * (index % 3)


def class_mask(index: int, num_classes: int, border: int | None = 255) -> np.ndarray:
    """Background 0 with a rectangle of class 1 + index % (num_classes - 1), ringed by `border`."""
    height, width = sample_size(index)
    mask = np.zeros((height, width), dtype=np.uint8)
    mask[8:-8, 10:-10] = 1 + index % (num_classes - 1)
    if border is not None:
        mask[8:-8, 10] = mask[8:-8, -11] = mask[8, 10:-10] = mask[-9, 10:-10] = border
    return mask


def write_image(path: Path, size: tuple[int, int], seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, size=(*size, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, format="JPEG")


def write_list(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{line}\n" for line in lines))


def write_voc(root: Path, splits: dict[str, list[str]], mask_dir: str = "SegmentationClass",
              palette: bool = True) -> dict[str, np.ndarray]:
    """VOCdevkit/VOC2012 with JPEGs, palette PNG masks (255 on borders) and split lists; returns the masks."""
    base = root / "VOCdevkit" / "VOC2012"
    masks = {}
    for index, sample_id in enumerate(sorted({i for ids in splits.values() for i in ids})):
        masks[sample_id] = class_mask(index, 21)
        write_image(base / "JPEGImages" / f"{sample_id}.jpg", masks[sample_id].shape, seed=index)
        mask = Image.fromarray(masks[sample_id], mode="P" if palette else "L")
        if palette:
            mask.putpalette(voc_palette())
        (base / mask_dir).mkdir(parents=True, exist_ok=True)
        mask.save(base / mask_dir / f"{sample_id}.png")
    for split, ids in splits.items():
        write_list(base / "ImageSets" / "Segmentation" / f"{split}.txt", ids)
    return masks


def write_sbd(root: Path, splits: dict[str, list[str]]) -> dict[str, np.ndarray]:
    """benchmark_RELEASE/dataset with JPEGs, cls/*.mat GTcls structs (no borders, as SBD) and split lists."""
    base = root / "benchmark_RELEASE" / "dataset"
    masks = {}
    for index, sample_id in enumerate(sorted({i for ids in splits.values() for i in ids})):
        masks[sample_id] = class_mask(index + 5, 21, border=None)
        write_image(base / "img" / f"{sample_id}.jpg", masks[sample_id].shape, seed=100 + index)
        (base / "cls").mkdir(parents=True, exist_ok=True)
        # Beside Segmentation, GTcls holds a 20 x 1 cell of sparse boundary maps and the classes present.
        boundaries = np.empty((20, 1), dtype=object)
        for k in range(20):
            boundaries[k, 0] = scipy.sparse.csc_matrix(masks[sample_id] == k + 1, dtype=np.uint8)
        present = np.unique(masks[sample_id][masks[sample_id] > 0]).astype(np.uint8)
        scipy.io.savemat(base / "cls" / f"{sample_id}.mat", {"GTcls": {
            "Segmentation": masks[sample_id], "Boundaries": boundaries, "CategoriesPresent": present}})
    for split, ids in splits.items():
        write_list(base / f"{split}.txt", ids)
    return masks


def write_pets(root: Path, splits: dict[str, list[str]]) -> dict[str, np.ndarray]:
    """oxford-iiit-pet with JPEGs, mode-L trimaps (1 pet, 2 background, 3 border) and split lists;
    returns the trimaps as stored (values 1..3)."""
    base = root / "oxford-iiit-pet"
    trimaps = {}
    for index, sample_id in enumerate(sorted({i for ids in splits.values() for i in ids})):
        # class_mask's 0 background, 1 object, 9 border -> the trimap's 2, 1, 3.
        trimaps[sample_id] = np.array([2, 1, 0, 0, 0, 0, 0, 0, 0, 3], dtype=np.uint8)[class_mask(index, 2, border=9)]
        write_image(base / "images" / f"{sample_id}.jpg", trimaps[sample_id].shape, seed=200 + index)
        (base / "annotations" / "trimaps").mkdir(parents=True, exist_ok=True)
        Image.fromarray(trimaps[sample_id], mode="L").save(base / "annotations" / "trimaps" / f"{sample_id}.png")
    for split, ids in splits.items():
        write_list(base / "annotations" / f"{split}.txt", [f"{i} {1 + n % 2} {1 + n % 2} 1" for n, i in enumerate(ids)])
    return trimaps


def write_decompression_bomb(path: Path, side: int = 20000) -> None:
    """A PNG that declares side x side RGB pixels (1.2 GB decoded for 20000) and holds none: PIL refuses it when
    opening, before decoding, so a few bytes stand in for the 20000 x 20000 file."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)  # 8-bit RGB, no interlacing
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b""))
