"""A checkpoint is data, never code: checkpoints made only of plain data (they load with
`torch.load(weights_only=True)`) whose config names harmful targets are refused by eval, predict, export,
resume and `load_from_checkpoint` before anything is built; the allow-list is exactly what conf/ uses."""

import logging
import os
import pickle
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
from omegaconf import OmegaConf

import segkit.eval
from segkit.checkpoints import CheckpointError, read_trusted_checkpoint
from segkit.checkpoints.trust import SEGKIT_TARGETS, untrusted_entries
from segkit.config import CONFIG_DIR, to_plain
from segkit.engine.loading import load_module
from segkit.engine.module import SegmentationModule
from segkit.engine.predictor import Predictor
from segkit.export import export
from segkit.tasks.train import train
from segkit.utilities.checks import ConfigError
from tests.conftest import compose_train


def test_the_allow_list_is_exactly_the_targets_of_every_config_option():
    # Every option of every group a training config is composed of, and train.yaml itself; not the `hydra`
    # node (Hydra's own settings, never in a run's config or checkpoint).
    files = [CONFIG_DIR / "train.yaml", *(option for group in CONFIG_DIR.iterdir()
                                         if group.is_dir() and group.name not in ("hydra", "hparams_search")
                                         for option in group.glob("*.yaml"))]
    found = set()
    for file in files:
        config = OmegaConf.to_container(OmegaConf.load(file))
        config.pop("hydra", None)
        found |= {value for _, key, value in _walk(config) if key == "_target_"}
    assert len(files) > 30 and found == SEGKIT_TARGETS


def _walk(node, path=""):
    if isinstance(node, dict):
        for key, value in node.items():
            yield path, key, value
            yield from _walk(value, f"{path}.{key}")
    elif isinstance(node, list):
        for value in node:
            yield from _walk(value, path)


class MakesFolder:
    """Pickles into a call of os.mkdir, for the bytes numpy.load would unpickle."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def __reduce__(self):
        return os.mkdir, (str(self.folder),)


def payloads(sentinel: Path) -> dict[str, tuple[str, object]]:
    """Harmful plain-data configs by name: (where in the checkpoint, the config). Each makes `sentinel` if built."""
    pickled = pickle.dumps(MakesFolder(sentinel))
    return {
        "write_text_in_net_name": ("hyper_parameters.net.name", {
            "_target_": "pathlib.Path.write_text",
            "self": {"_target_": "pathlib.Path", "_args_": [str(sentinel)]}, "data": "written"}),
        "numpy_load_pickle_as_encoder": ("hyper_parameters.net.encoder", {
            "_target_": "numpy.load", "allow_pickle": True,
            "file": {"_target_": "io.BytesIO", "_args_": [pickled]}}),
        "os_system_as_transform": ("segkit_config.data.train_transforms", [
            {"_target_": "albumentations.Resize", "height": 32, "width": 32},
            {"_target_": "os.system", "_args_": [f"mkdir {sentinel}"]}]),
        "instantiator": ("hyper_parameters._instantiator", "lightning.pytorch.cli.instantiate_module"),
        "interpolation": ("segkit_config.data.root", "${oc.env:HOME}"),
        # What a checkpoint says it trusts is never read.
        "self_trusted": ("hyper_parameters.net", {"_target_": "os.mkdir", "_args_": [str(sentinel)],
                                                  "trusted_targets": ["os.mkdir"]}),
    }


@pytest.fixture(scope="module")
def segkit_checkpoint(tmp_path_factory) -> dict:
    """A checkpoint as segkit.train writes it (tiny untrained net, TINY shapes config), loaded as plain data."""
    folder = tmp_path_factory.mktemp("segkit_checkpoint")
    cfg = compose_train(output_dir=folder / "run")
    module = SegmentationModule(to_plain(cfg.model), num_classes=3, optimizer=to_plain(cfg.optimizer),
                                class_names=["background", "pet", "border"], pretrained=False)
    module.segkit_config = to_plain(cfg)
    trainer = L.Trainer(accelerator="cpu", max_steps=0, logger=False, enable_progress_bar=False)
    trainer.strategy.connect(module)
    trainer.save_checkpoint(folder / "segkit.ckpt")
    return torch.load(folder / "segkit.ckpt", weights_only=True)


def _set(checkpoint: dict, key_path: str, value) -> None:
    *parents, last = key_path.split(".")
    node = checkpoint
    for key in parents:
        node = node[key]
    node[last] = value


@pytest.fixture(params=list(payloads(Path("x"))))
def crafted(request, segkit_checkpoint, tmp_path) -> tuple[Path, str, Path]:
    """(file, the key path it is refused for, the sentinel that building it would make)."""
    sentinel = tmp_path / "code-ran"
    key_path, payload = payloads(sentinel)[request.param]
    checkpoint = pickle.loads(pickle.dumps(segkit_checkpoint))  # a deep copy, tensors included
    _set(checkpoint, key_path, payload)
    path = tmp_path / "crafted.ckpt"
    torch.save(checkpoint, path)
    torch.load(path, weights_only=True)  # plain data: torch's safe loading lets it through
    return path, key_path, sentinel


def test_crafted_checkpoints_are_refused_by_every_command_before_anything_runs(crafted, make_config, monkeypatch,
                                                                              tmp_path):
    path, key_path, sentinel = crafted
    refused = rf"{path}: refusing to build from this checkpoint: {key_path}"
    with pytest.raises(CheckpointError, match=refused):
        SegmentationModule.load_from_checkpoint(path)
    with pytest.raises(CheckpointError, match=refused):
        export(path, tmp_path / "model.onnx", exporter="torchscript")
    with pytest.raises(CheckpointError, match=refused):
        Predictor.from_checkpoint(path)
    with pytest.raises(CheckpointError, match=refused):
        load_module(path)
    monkeypatch.setattr(sys, "argv", ["segkit.eval", f"ckpt_path={path}"])
    with pytest.raises(SystemExit, match=f"segkit.eval: {refused}"):
        segkit.eval.main()
    with pytest.raises(ConfigError, match=f"ckpt_path={refused}"):
        train(make_config(f"ckpt_path={path}"))
    assert not sentinel.exists()


def test_trusted_targets_extends_the_allow_list_with_a_warning(segkit_checkpoint, tmp_path, caplog):
    checkpoint = pickle.loads(pickle.dumps(segkit_checkpoint))
    checkpoint["hyper_parameters"]["net"]["_target_"] = "my_models.build"
    path = tmp_path / "mine.ckpt"
    torch.save(checkpoint, path)
    with pytest.raises(CheckpointError, match=r"hyper_parameters.net._target_: 'my_models.build', not a target"):
        read_trusted_checkpoint(path)
    with caplog.at_level(logging.WARNING, logger="segkit.checkpoints.trust"):
        checkpoint = read_trusted_checkpoint(path, ["my_models.build"])
    assert checkpoint["hyper_parameters"]["net"]["_target_"] == "my_models.build"
    assert "trusted_targets lists them: ['my_models.build']" in caplog.text
    assert read_trusted_checkpoint(path, "my_models.build")  # one name, as trusted_targets=my_models.build gives
    # segkit.eval checks the checkpoint before Hydra composes its config: from the command line.
    assert segkit.eval.trusted_targets_override([f"ckpt_path={path}", "trusted_targets=[my_models.build,b.c]"]) == [
        "my_models.build", "b.c"]


def test_the_check_reaches_every_depth_and_lists_every_finding():
    data = {"a": [{"b": {"_target_": "os.system"}}], "c": ({"_target_": "segkit.models.build_model"},),
            "d": {"defaults": ["x"], "e": "${oc.env:HOME}"}, "f": torch.zeros(2)}
    assert untrusted_entries(data) == [
        "a[0].b._target_: 'os.system', not a target segkit builds",
        "d.defaults: a Hydra defaults list, which would compose other configs",
        "d.e: '${oc.env:HOME}', an interpolation that would be resolved",
    ]


def test_a_model_checkpoint_state_naming_files_outside_its_folder_is_refused(segkit_checkpoint, tmp_path, make_config):
    checkpoint = pickle.loads(pickle.dumps(segkit_checkpoint))
    [state] = [state for state in checkpoint["callbacks"].values() if "best_k_models" in state]
    keep = tmp_path / "precious.txt"
    keep.write_text("not a checkpoint")
    state["best_k_models"] = {str(keep): torch.tensor(0.0)}  # the worst of the top-k: deleted by the next save
    path = tmp_path / "crafted.ckpt"
    torch.save(checkpoint, path)
    with pytest.raises(ConfigError, match=rf"{path}: refusing to build from this checkpoint: callbacks\.ModelCheckpoint"
                                          rf".*: '{keep}', a checkpoint file outside the callback's folder None"):
        train(make_config(f"ckpt_path={path}"))
    assert keep.read_text() == "not a checkpoint"


def test_checkpoints_of_earlier_versions_name_retired_targets_and_still_load():
    stored = {"segkit_config": {"callbacks": {"stop_on_non_finite_loss": {"_target_": "segkit.callbacks.StopOnNonFiniteLoss"}},
                                "logger": {"csv": {"_target_": "lightning.pytorch.loggers.CSVLogger"}}}}
    assert untrusted_entries(stored) == []
    # Before segkit.callbacks and segkit.engine.loggers, the callbacks and loggers lived in segkit.resume and segkit.dashboard.
    moved = {"callbacks": {"last_checkpoint": {"_target_": "segkit.resume.LastCheckpoint"},
                           "wandb_dashboard": {"_target_": "segkit.dashboard.WandbDashboard"}},
             "logger": {"csv": {"_target_": "segkit.resume.ResumableCSVLogger"},
                        "wandb": {"_target_": "segkit.dashboard.wandb_logger"}}}
    assert untrusted_entries({"segkit_config": moved}) == []
