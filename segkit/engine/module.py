"""SegmentationModule: loss, metrics and optimisation for any network that maps N x 3 x H x W images
to N x C x H x W logits. It knows no dataset: classes, ignore index and weights are arguments."""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import lightning as L
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities.warnings import PossibleUserWarning
from torch import nn
from torchmetrics import MetricCollection
from torchmetrics.aggregation import MeanMetric

from segkit.checkpoints import CONFIG_KEY, check_checkpoint_matches, read_trusted_checkpoint
from segkit.engine.metrics import ConfusionMatrix, IoUPerClass, MeanIoU, PixelAccuracy
from segkit.engine.schedules import BudgetSchedule, training_progress
from segkit.models import without_pretrained_weights
from segkit.models.fusion import fold_batchnorm
from segkit.models.losses import SegmentationLoss, check_class_weights, class_weights_from_counts, count_class_pixels

if TYPE_CHECKING:
    from segkit.engine.distillation import Distillation
    from segkit.runtime.tta import TestTimeAugmentation

log = logging.getLogger(__name__)

# segkit's epoch values are equal on every rank before they are logged (_log_epoch_metrics); Lightning cannot know
# that, and its advice, sync_dist=True, is what made trainer=ddp deadlock.
warnings.filterwarnings("ignore", r"It is recommended to use `self\.log\('(train|val|test|lr)/", PossibleUserWarning)

# Where a checkpoint keeps the seconds of fitting that led to it (a resumed run's clock goes on from there).
ELAPSED_KEY = "segkit_elapsed_seconds"

# A Hydra config with `_target_` and `_partial_: true`, or a callable taking what it completes.
PartialSpec = Mapping[str, Any] | Callable[..., Any]


def _complete(spec: PartialSpec, *args: Any) -> Any:
    factory = instantiate(spec) if isinstance(spec, Mapping) else spec
    return factory(*args)


def segmentation_metrics(num_classes: int, ignore_index: int) -> MetricCollection:
    """Dataset-level metrics: one confusion matrix over every pixel seen, `ignore_index` pixels dropped.

    mIoU is the macro mean of per-class IoU over the whole set, the number papers report (not a mean
    of per-image IoUs). The metrics share one confusion matrix (rows truth, columns prediction), updated
    once per batch (`segkit.engine.metrics`).
    """
    metrics = {
        "confmat": ConfusionMatrix(num_classes, ignore_index),
        "miou": MeanIoU(num_classes, ignore_index),
        "acc": PixelAccuracy(num_classes, ignore_index),
        "iou_per_class": IoUPerClass(num_classes, ignore_index),
    }
    return MetricCollection(metrics, compute_groups=[list(metrics)])


def micro_iou(confmat: torch.Tensor, classes: Sequence[int]) -> torch.Tensor:
    """IoU pooled over `classes`: sum of their true positives over the sum of their unions. With Pets'
    pet and border it is the article's metric (background left out)."""
    true_positives = confmat.diag()[classes]
    unions = confmat.sum(dim=0)[classes] + confmat.sum(dim=1)[classes] - true_positives
    return true_positives.sum() / unions.sum().clamp(min=1)


class SegmentationModule(L.LightningModule):
    """Trains and evaluates a segmentation network.

    `net` is either an `nn.Module` or the Hydra config that builds one. Given as config, it is saved in
    the checkpoint's hyperparameters, so `SegmentationModule.load_from_checkpoint(path)` rebuilds the
    network without being handed it again; the same holds for the optimizer and scheduler configs.
    """

    def __init__(
        self,
        net: nn.Module | Mapping[str, Any],
        num_classes: int,
        optimizer: PartialSpec,
        scheduler: PartialSpec | None = None,
        ignore_index: int = 255,
        class_weights: Sequence[float] | str | None = None,
        label_smoothing: float = 0.0,
        dice_weight: float = 0.0,
        lovasz_weight: float = 0.0,
        class_names: Sequence[str] | None = None,
        monitor: str = "val/miou",
        channels_last: bool = False,
        pretrained: bool = True,
        micro_iou_classes: Sequence[str] | None = None,
    ) -> None:
        super().__init__()
        net_given_as_module = isinstance(net, nn.Module)
        self.save_hyperparameters(ignore=["net"] if net_given_as_module else None, logger=False)
        self.net = net if net_given_as_module else instantiate(net if pretrained else without_pretrained_weights(net))
        # NHWC: faster convolutions on CPU (oneDNN) and on tensor-core GPUs; results are the same.
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.net.to(memory_format=self.memory_format)
        if class_names is not None and len(class_names) != num_classes:
            raise ValueError(f"class_names has {len(class_names)} names {list(class_names)} for num_classes={num_classes}")
        check_class_weights(class_weights, num_classes, key="class_weights")
        self.class_names = list(class_names) if class_names is not None else [str(i) for i in range(num_classes)]
        unknown = [name for name in micro_iou_classes or () if name not in self.class_names]
        if unknown:
            raise ValueError(f"micro_iou_classes {unknown} are not classes of the data; classes: {self.class_names}")
        self.micro_iou_classes = [self.class_names.index(name) for name in micro_iou_classes or ()]
        # Weights computed from the data (a weighting's name) start at 1 and are set when fitting starts (on_fit_start);
        # a checkpoint carries them in the loss's state.
        weight = (torch.ones(num_classes) if isinstance(class_weights, str)
                  else torch.tensor(class_weights, dtype=torch.float32) if class_weights is not None else None)
        self.criterion = SegmentationLoss(weight, ignore_index, label_smoothing, dice_weight, lovasz_weight)
        metrics = segmentation_metrics(num_classes, ignore_index)
        self.train_metrics = metrics.clone(prefix="train/")
        self.val_metrics = metrics.clone(prefix="val/")
        self.test_metrics = metrics.clone(prefix="test/")
        # Each stage's mean loss over the epoch, weighted by batch size. In tensors, not `self.log` per batch:
        # a call per batch is a visible share of a small model's training step. NaN stays in the mean.
        self.train_loss = MeanMetric(nan_strategy="disable")
        self.val_loss = MeanMetric(nan_strategy="disable")
        self.test_loss = MeanMetric(nan_strategy="disable")
        # The resolved config of the training run, a plain dict that `segkit.tasks.train.build` sets; checkpoints
        # carry it under `CONFIG_KEY`, so segkit.eval and segkit.predict know the data and its preprocessing.
        self.segkit_config: dict[str, Any] | None = None
        # The last epoch's confusion matrix of each stage ("train", "val", "test"), for callbacks to draw.
        self.confusion_matrices: dict[str, torch.Tensor] = {}
        # The views whose softmax the validation and test loops average (segkit.eval's `tta` and `tta_scales`, and
        # the final evaluation of a training run); None: each image once. The training steps never average.
        self.test_time_augmentation: TestTimeAugmentation | None = None
        # A teacher whose soft predictions join the training loss (segkit.engine.distillation; `segkit.tasks.train.build`
        # sets it from distill.teacher). Not a submodule: its weights stay out of this module's parameters and checkpoints.
        self.distillation: Distillation | None = None
        # The network with BatchNorm folded into its convolutions (`fold_batchnorm`), which eval-mode forwards run
        # while it is set: during each validation and test epoch, and after `fold_batchnorm()` for inference. In a
        # dict, so that it is no submodule (no parameters, no checkpoint entries); dropped by `train()`.
        self._inference: dict[str, nn.Module] = {}
        # Seconds of fitting before this process's (a resumed run's earlier ones, from its checkpoint), and when this
        # process's fit began: each validation of a fit logs `time/elapsed_s`, the run's training time so far.
        self._elapsed_before = 0.0
        self._fit_began: float | None = None

    @classmethod
    def load_from_checkpoint(  # type: ignore[override]
        cls,
        checkpoint_path: str | Path,
        map_location: Any = None,
        hparams_file: str | Path | None = None,
        strict: bool | None = None,
        trusted_targets: Iterable[str] = (),
        weights_only: bool | None = None,
        **kwargs: Any,
    ) -> SegmentationModule:
        """Lightning's `load_from_checkpoint`, after `read_trusted_checkpoint` has read the file as plain data
        and refused a config that names anything segkit does not build, or a file that is no SegmentationModule's
        (a `CheckpointError` naming the file and the key), so the network is built only from trusted targets;
        `trusted_targets` adds the user's own.
        `weights_only` is always True: a segkit module never unpickles code.
        """
        if weights_only is False:
            raise ValueError("SegmentationModule.load_from_checkpoint loads plain data only: weights_only=False "
                             "is not supported")
        # One trust read, tensors left on disk; it must be a SegmentationModule's before Lightning builds from it.
        checkpoint = read_trusted_checkpoint(checkpoint_path, trusted_targets, mmap=True)
        check_checkpoint_matches(checkpoint_path, None, None, checkpoint)
        return super().load_from_checkpoint(checkpoint_path, map_location, hparams_file, strict, weights_only=True,
                                            **kwargs)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        net = self.net if self.training else self._inference.get("folded", self.net)
        return net(images.contiguous(memory_format=self.memory_format))

    def fold_batchnorm(self) -> SegmentationModule:
        """Puts the module in eval mode, where its forwards run a copy of the network with every BatchNorm after a
        convolution folded into it (`segkit.models.fusion`): the same logits up to float rounding, one pass
        over the activations less per block. `train()` drops the copy, so training and the weights it changes
        never see it; validation and test epochs fold anew (after callbacks have swapped in averaged weights or
        recomputed statistics). Returns the module."""
        self.eval()
        self._inference["folded"] = fold_batchnorm(self.net).to(memory_format=self.memory_format)
        return self

    def unfold_batchnorm(self) -> None:
        """Eval-mode forwards run the network itself again."""
        self._inference.clear()

    def train(self, mode: bool = True) -> SegmentationModule:
        if mode:
            self.unfold_batchnorm()
        return super().train(mode)

    def predict_logits(self, images: torch.Tensor) -> torch.Tensor:
        """The network's logits of `images`, or with `test_time_augmentation` set, the log of the mean softmax over
        its views (each resized back bilinearly, mirrored ones flipped back), which the loss and the metrics take as
        they take the network's logits."""
        tta = self.test_time_augmentation
        if tta is None:
            return self(images)
        probabilities = tta.mean(partial(self._view_probabilities, images), images.shape[-2:])
        return probabilities.clamp(min=torch.finfo(probabilities.dtype).tiny).log()

    def _view_probabilities(self, images: torch.Tensor, size: tuple[int, int], mirrored: bool) -> torch.Tensor:
        """The softmax of `images` fed to the network at `size` (and mirrored), at the images' own size."""
        view = images if size == images.shape[-2:] else F.interpolate(images, size=size, mode="bilinear",
                                                                      align_corners=False)
        logits = self(view.flip(-1)).flip(-1) if mirrored else self(view)
        if size != images.shape[-2:]:
            logits = F.interpolate(logits, size=images.shape[-2:], mode="bilinear", align_corners=False)
        return logits.softmax(dim=1)

    def _step(
        self, batch: tuple[torch.Tensor, torch.Tensor], metrics: MetricCollection, loss_mean: MeanMetric,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The batch's loss and predicted class ids (N x H x W), both added to the stage's epoch figures."""
        images, masks = batch
        logits = self(images) if self.training else self.predict_logits(images)
        loss = self.criterion(logits, masks)
        if self.distillation is not None and self.training:
            loss = self.distillation.loss(loss, logits, images, masks)
        predictions = logits.argmax(dim=1)
        metrics.update(predictions, masks)
        # Weighted by the images with a labelled pixel: one with none has no loss to average in.
        labelled_images = (masks != self.criterion.ignore_index).flatten(1).any(dim=1).sum()
        loss_mean.update(loss.detach(), labelled_images)
        return loss, predictions

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = self._step(batch, self.train_metrics, self.train_loss)[0]
        # The step loss goes to the loggers and the progress bar on the steps the loggers write
        # (trainer.log_every_n_steps), the only ones where logging it has an effect on the loggers.
        # sync_dist: under DDP it is the mean over every process's batch, not rank 0's alone; a step value
        # is reduced here, as it is logged, on every process alike.
        if self._loggers_write_this_step():
            self.log("train/loss_step", loss, on_step=True, on_epoch=False, prog_bar=True, sync_dist=True)
        return loss

    def _loggers_write_this_step(self) -> bool:
        """Whether the loggers write the values of this training step: every `log_every_n_steps`-th
        optimizer step, the last one, and every step of a fast_dev_run."""
        trainer = self.trainer
        return ((trainer.global_step + 1) % trainer.log_every_n_steps == 0 or trainer.should_stop
                or bool(trainer.fast_dev_run))

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        # The predictions reach callbacks' on_validation_batch_end (the dashboard draws some).
        return self._step(batch, self.val_metrics, self.val_loss)[1]

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._step(batch, self.test_metrics, self.test_loss)

    def _log_epoch_metrics(self, metrics: MetricCollection, loss_mean: MeanMetric, loss_name: str) -> None:
        """Logs the set's mean loss, mIoU, pixel accuracy and one IoU per class, then starts the next epoch afresh."""
        # compute() gathers every process's state under DDP, here, on every rank in the same order, so all
        # ranks log equal values. No sync_dist: Lightning reduces such values lazily, when a metric is first
        # read, and the progress bar and the wandb dashboard read them on rank 0 only: a collective that the
        # other ranks never join (a deadlock, issue 16).
        self.log(loss_name, loss_mean.compute(), prog_bar=True)
        loss_mean.reset()
        values = metrics.compute()
        metrics.reset()
        per_class = values.pop(f"{metrics.prefix}iou_per_class")
        confmat = values.pop(f"{metrics.prefix}confmat")
        self.confusion_matrices[metrics.prefix.rstrip("/")] = confmat
        if self.micro_iou_classes:
            values[f"{metrics.prefix}micro_iou"] = micro_iou(confmat, self.micro_iou_classes)
        values.update({f"{metrics.prefix}iou_{name}": iou for name, iou in zip(self.class_names, per_class)})
        miou = values.pop(f"{metrics.prefix}miou")
        self.log(f"{metrics.prefix}miou", miou, prog_bar=True)
        self.log_dict(values)

    def weigh_classes_from(self, masks: Iterable[Any]) -> list[float]:
        """Sets the loss's class weights by the weighting `class_weights` names, from the training `masks`
        (class-id arrays); returns them."""
        class_pixels, image_pixels = count_class_pixels(masks, len(self.class_names))
        weights = class_weights_from_counts(self.hparams.class_weights, class_pixels, image_pixels, self.class_names)
        self.criterion.weight.copy_(torch.tensor(weights))
        log.info("loss.class_weights=%s from the training masks: %s", self.hparams.class_weights,
                 dict(zip(self.class_names, weights)))
        return weights

    def elapsed_seconds(self) -> float:
        """Seconds of fitting so far, a resumed run's earlier ones included (between fits: those before)."""
        return self._elapsed_before + (time.monotonic() - self._fit_began if self._fit_began is not None else 0.0)

    def on_fit_start(self) -> None:
        self._fit_began = time.monotonic()
        # From the data, when fitting starts rather than when the module is built: building needs no data
        # (summary, bench, config checks). The same on every rank; a resumed run computes the same weights.
        if isinstance(self.hparams.class_weights, str):
            self.weigh_classes_from(self.trainer.datamodule.training_masks())

    def on_fit_end(self) -> None:
        self._elapsed_before, self._fit_began = self.elapsed_seconds(), None

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        for config in self.trainer.lr_scheduler_configs:
            if isinstance(config.scheduler, BudgetSchedule):
                config.scheduler.progress = training_progress(self.trainer)

    def on_train_epoch_start(self) -> None:
        for index, group in enumerate(self.optimizers().param_groups):
            # The same on every rank: nothing to reduce (see _log_epoch_metrics for why no sync_dist).
            self.log(f"lr/group{index}", group["lr"], on_epoch=True, on_step=False)

    def on_train_epoch_end(self) -> None:
        # `_epoch`: beside the step losses (train/loss_step), as Lightning names a value logged per step and epoch.
        self._log_epoch_metrics(self.train_metrics, self.train_loss, "train/loss_epoch")

    def on_validation_epoch_start(self) -> None:
        # After the callbacks' hooks (Lightning calls them first): averaged weights and recomputed statistics are in.
        self.fold_batchnorm()

    def on_test_epoch_start(self) -> None:
        self.fold_batchnorm()

    def on_validation_epoch_end(self) -> None:
        self.unfold_batchnorm()  # the weight average's callback has already swapped the training weights back
        self._log_epoch_metrics(self.val_metrics, self.val_loss, "val/loss")
        if self.trainer.state.fn == TrainerFn.FITTING and not self.trainer.sanity_checking:
            # The time at which the run's validation figures were reached (tasks/train.time_to_miou reads it back).
            self.log("time/elapsed_s", self.elapsed_seconds())

    def on_test_epoch_end(self) -> None:
        self.unfold_batchnorm()
        self._log_epoch_metrics(self.test_metrics, self.test_loss, "test/loss")

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # The checkpoint holds every weight: rebuilding it must not fetch the pretrained init again.
        checkpoint["hyper_parameters"]["pretrained"] = False
        checkpoint[ELAPSED_KEY] = self.elapsed_seconds()
        if self.segkit_config is not None:
            checkpoint[CONFIG_KEY] = self.segkit_config

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # A resumed run keeps its own config (build set it); a module loaded on its own gets the checkpoint's.
        if self.segkit_config is None:
            self.segkit_config = checkpoint.get(CONFIG_KEY)
        self._elapsed_before = float(checkpoint.get(ELAPSED_KEY, 0.0))

    def _parameter_groups(self, encoder_lr_factor: float, lr: float) -> list[dict[str, Any]]:
        """The encoder's parameters at `lr * encoder_lr_factor` (as fine-tuning recipes do), the rest at `lr`."""
        encoder = getattr(self.net, "encoder", None)
        if not isinstance(encoder, nn.Module):
            raise ValueError(f"optimizer.encoder_lr_factor={encoder_lr_factor} needs a network with an `encoder`; "
                             f"{type(self.net).__name__} has none")
        encoder_ids = {id(p) for p in encoder.parameters()}
        return [
            {"params": list(encoder.parameters()), "lr": lr * encoder_lr_factor},
            {"params": [p for p in self.parameters() if id(p) not in encoder_ids]},
        ]

    def configure_optimizers(self) -> dict[str, Any]:
        spec = self.hparams.optimizer
        params: Any = self.parameters()
        if isinstance(spec, Mapping):
            # encoder_lr_factor is segkit's key, not the optimizer's argument.
            spec = dict(spec)
            encoder_lr_factor = spec.pop("encoder_lr_factor", 1.0)
            if encoder_lr_factor != 1.0:
                params = self._parameter_groups(encoder_lr_factor, spec["lr"])
        optimizer = _complete(spec, params)
        if self.hparams.scheduler is None:
            return {"optimizer": optimizer}
        scheduler = _complete(self.hparams.scheduler, optimizer)
        # `monitor` matters to ReduceLROnPlateau only; torch's schedulers step every epoch, a BudgetSchedule
        # every optimizer step (it follows the run's progress, see on_train_batch_start).
        interval = "step" if isinstance(scheduler, BudgetSchedule) else "epoch"
        return {"optimizer": optimizer,
                "lr_scheduler": {"scheduler": scheduler, "monitor": self.hparams.monitor, "interval": interval}}
