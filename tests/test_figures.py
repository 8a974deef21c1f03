"""segkit.figures: result figures, and TensorBoard getting them during a fit."""

from pathlib import Path

import numpy as np
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from segkit.figures import confusion_matrix_figure, gallery_figure, legend_handles
from segkit.run import train


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
    assert len(legend_handles(names, colormap, with_ignored=False)) == 3
