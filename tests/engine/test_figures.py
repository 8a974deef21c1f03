"""segkit.engine.figures: result figures, and TensorBoard getting them during a fit."""

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from segkit.engine.figures import (
    confusion_matrix_figure,
    gallery_figure,
    legend_handles,
    stored_samples_with_predictions,
)
from segkit.tasks.train import build, train


def test_tensorboard_gets_the_confusion_matrix_iou_chart_and_gallery_each_epoch(make_config):
    cfg = make_config("logger=tensorboard", "trainer.max_epochs=2", "callbacks.tensorboard_figures.num_images=2")
    train(cfg)
    [events] = (Path(cfg.paths.output_dir) / "tensorboard").glob("events.out.tfevents.*")
    accumulator = EventAccumulator(str(events), size_guidance={"images": 0})
    accumulator.Reload()
    images = accumulator.Tags()["images"]
    assert sorted(images) == ["val/confusion_matrix", "val/gallery", "val/iou_per_class"]
    assert [len(accumulator.Images(tag)) for tag in images] == [2, 2, 2]  # one per epoch, none for the final check


def test_figures_show_row_fractions_titles_and_a_legend_of_the_class_colours():
    names = ["pet", "background", "border"]
    colormap = np.array([[255, 128, 0], [0, 0, 0], [255, 255, 255]], dtype=np.uint8)
    figure = confusion_matrix_figure(np.array([[8, 2, 0], [0, 5, 0], [1, 1, 2]]), names)
    cells = [text.get_text() for text in figure.axes[0].texts]
    assert cells[:3] == ["0.80", "0.20", "0.00"] and cells[-1] == "0.50"
    image = np.zeros((8, 12, 3), dtype=np.uint8)
    mask = np.zeros((8, 12), dtype=np.int64)
    gallery = gallery_figure([image], [mask], [mask], names, colormap, ignore_index=255)
    titles = [text.get_text() for axes in gallery.axes for text in axes.texts]
    assert titles == ["image", "truth", "prediction"]
    [legend] = gallery.legends
    assert [text.get_text() for text in legend.get_texts()] == [*names, "ignored"]
    handles = legend_handles(names, colormap, with_ignored=False)
    assert [handle.get_label() for handle in handles] == names
    # The white border class is outlined, or it would not show on a white page.
    assert all(handle.get_edgecolor()[:3] == (0.5, 0.5, 0.5) for handle in handles)


def test_pictured_samples_are_shown_as_stored_with_predictions_resized_back(make_config):
    # Validation feeds the network 32 x 64 (squashed); pictures show the stored 32 x 32 samples, and the
    # prediction is the network's logits resized back to that size, as segkit.predict does.
    cfg = make_config("data.val_transforms=[{_target_: albumentations.Resize, height: 32, width: 64}]")
    run = build(cfg)
    run.datamodule.setup("validate")
    dataset = run.datamodule.val_set
    images, truths, predictions = stored_samples_with_predictions(run.module, dataset, run.datamodule.val_collate, 2)
    assert run.module.training  # left as found
    for index in range(2):
        image, truth = dataset.samples[index]
        assert np.array_equal(images[index], image) and np.array_equal(truths[index], truth)
        fed = dataset[index][0]
        assert fed.shape[-2:] == (32, 64)
        run.module.eval()
        with torch.no_grad():
            logits = F.interpolate(run.module(fed[None]), size=(32, 32), mode="bilinear", align_corners=False)
        run.module.train()
        assert predictions[index].shape == (32, 32)
        assert np.array_equal(predictions[index], logits.argmax(1)[0].numpy())
