import lightning as L
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from segkit.data import ShapesDataset
from segkit.engine.module import SegmentationModule, micro_iou, segmentation_metrics

TINY_NET = {"_target_": "segkit.models.build_model", "num_classes": 3, "input_norm": True,
            "encoder": {"name": "vgg", "layout": "article", "conv": "dsc", "width": 0.125}}
ADAM = {"_target_": "torch.optim.Adam", "_partial_": True, "lr": 0.01}

# Hand-checked case; the last pixel is ignored (255). Kept pixels as (truth, prediction):
# (0,0) (0,1) (1,1) (1,1) (2,2). IoU: class 0 1/2, class 1 2/3 (one false positive), class 2 1/1.
TARGET = torch.tensor([[[0, 0, 1], [1, 2, 255]]])
PREDICTION = torch.tensor([[[0, 1, 1], [1, 2, 0]]])
EXPECTED_IOU = [1 / 2, 2 / 3, 1.0]


def test_metrics_match_hand_computed_values_and_drop_ignored_pixels():
    metrics = segmentation_metrics(num_classes=3, ignore_index=255)
    metrics.update(PREDICTION, TARGET)
    values = metrics.compute()
    assert values["iou_per_class"].tolist() == pytest.approx(EXPECTED_IOU)
    assert values["miou"].item() == pytest.approx(sum(EXPECTED_IOU) / 3)
    assert values["acc"].item() == pytest.approx(4 / 5)


def test_miou_is_over_the_whole_set_not_a_mean_over_images():
    # Image 1: class 0 right on 1 pixel; image 2: class 0 wrong on 3 pixels (predicted 1).
    # Set level: IoU0 = 1/4, IoU1 = 0/3 -> 0.125. The per-image mean would be (1 + 0)/2 for class 0.
    metrics = segmentation_metrics(num_classes=2, ignore_index=255)
    metrics.update(torch.tensor([[[0]]]), torch.tensor([[[0]]]))
    metrics.update(torch.tensor([[[1, 1, 1]]]), torch.tensor([[[0, 0, 0]]]))
    values = metrics.compute()
    assert values["iou_per_class"].tolist() == pytest.approx([0.25, 0.0])
    assert values["miou"].item() == pytest.approx(0.125)


def test_loss_ignores_255_and_applies_class_weights():
    module = SegmentationModule(TINY_NET, num_classes=3, optimizer=ADAM, class_weights=[1.0, 2.0, 0.5])
    logits = torch.randn(1, 3, 2, 3)
    expected = F.cross_entropy(logits, TARGET, weight=torch.tensor([1.0, 2.0, 0.5]), ignore_index=255)
    assert module.criterion(logits, TARGET).item() == pytest.approx(expected.item())
    target_without_ignored = TARGET.clone()
    target_without_ignored[0, 1, 2] = 0
    assert module.criterion(logits, target_without_ignored).item() != pytest.approx(expected.item())


@pytest.mark.parametrize("class_weights", [None, [1.0, 2.0, 0.5]])
def test_batch_whose_pixels_are_all_ignored_has_zero_loss_and_gradients_not_nan(class_weights):
    """torch's mean over no labelled pixel is 0/0 = NaN, which the non-finite check blamed on the learning rate."""
    module = SegmentationModule(TINY_NET, num_classes=3, optimizer=ADAM, class_weights=class_weights)
    images = torch.randn(2, 3, 32, 32)
    loss = module.criterion(module(images), torch.full((2, 32, 32), 255))
    loss.backward()
    assert loss.item() == 0.0
    assert all(torch.equal(p.grad, torch.zeros_like(p)) for p in module.net.parameters() if p.grad is not None)


def test_loss_decreases_on_a_fixed_batch():
    torch.manual_seed(0)
    module = SegmentationModule(TINY_NET, num_classes=3, optimizer=ADAM)
    samples = ShapesDataset(4, image_size=(32, 32), seed=1)
    images = torch.stack([torch.from_numpy(samples[i][0]).permute(2, 0, 1).float() / 255 for i in range(4)])
    masks = torch.stack([torch.from_numpy(samples[i][1]).long() for i in range(4)])
    optimizer = module.configure_optimizers()["optimizer"]
    losses = []
    for _ in range(40):
        loss = module.criterion(module(images), masks)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_scheduler_config_is_completed_with_the_optimizer_and_monitors_val_miou():
    cosine = {"_target_": "torch.optim.lr_scheduler.CosineAnnealingLR", "_partial_": True, "T_max": 4}
    module = SegmentationModule(TINY_NET, num_classes=3, optimizer=ADAM, scheduler=cosine)
    config = module.configure_optimizers()
    assert isinstance(config["optimizer"], torch.optim.Adam)
    assert config["optimizer"].param_groups[0]["lr"] == 0.01
    assert isinstance(config["lr_scheduler"]["scheduler"], torch.optim.lr_scheduler.CosineAnnealingLR)
    assert config["lr_scheduler"]["monitor"] == "val/miou"


def test_load_from_checkpoint_rebuilds_the_network_without_passing_it(tmp_path):
    module = SegmentationModule(TINY_NET, num_classes=3, optimizer=ADAM, class_names=["a", "b", "c"])
    trainer = L.Trainer(accelerator="cpu", max_steps=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)
    batch = (torch.randn(2, 3, 32, 32), torch.randint(0, 3, (2, 32, 32)))
    trainer.fit(module, train_dataloaders=DataLoader(TensorDataset(*batch), batch_size=2))
    path = tmp_path / "module.ckpt"
    trainer.save_checkpoint(path)

    # weights_only: the checkpoint holds tensors and plain configs, nothing that runs code on load.
    restored = SegmentationModule.load_from_checkpoint(path, weights_only=True)
    assert restored.class_names == ["a", "b", "c"]
    module.eval()
    restored.eval()
    with torch.no_grad():
        assert torch.equal(module(batch[0]), restored(batch[0]))


def test_mismatched_class_names_or_weights_fail_with_the_counts():
    with pytest.raises(ValueError, match=r"class_names has 2 names \['a', 'b'\] for num_classes=3"):
        SegmentationModule(TINY_NET, num_classes=3, optimizer=ADAM, class_names=["a", "b"])
    with pytest.raises(ValueError, match=r"class_weights has 4 values \[1, 1, 1, 1\] for num_classes=3"):
        SegmentationModule(TINY_NET, num_classes=3, optimizer=ADAM, class_weights=[1, 1, 1, 1])


def test_micro_iou_pools_the_chosen_classes():
    # Kept pixels (truth, prediction): (0,0) (0,1) (1,1) (1,1) (2,2). Over classes 0 and 2:
    # TP 1 + 1, unions 2 + 1 -> 2/3. Class 1 alone: TP 2, union 3.
    metrics = segmentation_metrics(num_classes=3, ignore_index=255)
    metrics.update(PREDICTION, TARGET)
    confmat = metrics.compute()["confmat"]
    assert micro_iou(confmat, [0, 2]).item() == pytest.approx(2 / 3)
    assert micro_iou(confmat, [1]).item() == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match=r"micro_iou_classes \['cat'\] are not classes of the data"):
        SegmentationModule(TINY_NET, num_classes=3, optimizer=ADAM, class_names=["a", "b", "c"],
                           micro_iou_classes=["cat"])


def test_encoder_lr_factor_gives_the_encoder_its_own_learning_rate():
    module = SegmentationModule(TINY_NET, num_classes=3, optimizer={**ADAM, "encoder_lr_factor": 0.1})
    optimizer = module.configure_optimizers()["optimizer"]
    encoder_group, rest_group = optimizer.param_groups
    assert encoder_group["lr"] == pytest.approx(0.001) and rest_group["lr"] == pytest.approx(0.01)
    assert {id(p) for p in encoder_group["params"]} == {id(p) for p in module.net.encoder.parameters()}
    assert len(encoder_group["params"]) + len(rest_group["params"]) == len(list(module.parameters()))
    # The factor is segkit's: it never reaches the optimizer, and 1.0 keeps one group.
    plain = SegmentationModule(TINY_NET, num_classes=3, optimizer={**ADAM, "encoder_lr_factor": 1.0})
    assert len(plain.configure_optimizers()["optimizer"].param_groups) == 1


def test_checkpoints_rebuild_without_fetching_pretrained_weights(tmp_path, monkeypatch):
    net = {**TINY_NET, "input_norm": False, "encoder": {"name": "mobilenetv2", "weights": "imagenet"}}
    module = SegmentationModule(net, num_classes=3, optimizer=ADAM)  # weights from the test cache
    trainer = L.Trainer(accelerator="cpu", max_steps=0, logger=False, enable_progress_bar=False)
    trainer.strategy.connect(module)
    trainer.save_checkpoint(tmp_path / "m.ckpt")

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-cache"))  # the weights file is gone now
    restored = SegmentationModule.load_from_checkpoint(tmp_path / "m.ckpt", weights_only=True)
    assert restored.hparams.net["encoder"]["weights"] == "imagenet"  # the record of how it was trained
    images = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(module.eval()(images), restored.eval()(images))


def test_validation_runs_the_folded_network_and_training_never_sees_it():
    """Validation epochs run the network with BatchNorm folded (logits within 1e-5 of the unfolded network's);
    training steps and the state dict are those of the network itself; `train()` drops the folded copy."""
    torch.manual_seed(0)
    module = SegmentationModule(TINY_NET, num_classes=3, optimizer=ADAM)
    batch = (torch.randn(4, 3, 32, 32), torch.randint(0, 3, (4, 32, 32)))
    seen = []

    class Record(L.Callback):
        def on_validation_batch_start(self, trainer, pl_module, *args):
            seen.append(("val", "folded" in pl_module._inference))

        def on_train_batch_start(self, trainer, pl_module, *args):
            seen.append(("train", "folded" in pl_module._inference))

    loader = DataLoader(TensorDataset(*batch), batch_size=2)
    trainer = L.Trainer(accelerator="cpu", max_epochs=2, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=[Record()],
                        num_sanity_val_steps=0)
    trainer.fit(module, train_dataloaders=loader, val_dataloaders=loader)
    assert {("train", False), ("val", True)} == set(seen)
    assert "folded" not in module._inference
    keys = set(module.state_dict())
    module.fold_batchnorm()
    assert not module.training and set(module.state_dict()) == keys
    with torch.no_grad():
        folded = module(batch[0])
        module.unfold_batchnorm()
        unfolded = module(batch[0])
    assert (folded - unfolded).abs().max() <= 1e-5 * max(unfolded.abs().max().item(), 1.0)
    module.fold_batchnorm().train()
    assert "folded" not in module._inference
