import pytest
import torch
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix, MulticlassJaccardIndex

from segkit.engine.metrics import ConfusionMatrix
from segkit.engine.module import segmentation_metrics


def test_metrics_equal_torchmetrics_over_several_batches_with_ignored_pixels_and_absent_classes():
    torch.manual_seed(0)
    num_classes = 5  # class 4 never occurs in truth or prediction: left out of the macro mean
    reference = {
        "confmat": MulticlassConfusionMatrix(num_classes, ignore_index=255),
        "miou": MulticlassJaccardIndex(num_classes, average="macro", ignore_index=255),
        "acc": MulticlassAccuracy(num_classes, average="micro", ignore_index=255),
        "iou_per_class": MulticlassJaccardIndex(num_classes, average="none", ignore_index=255),
    }
    metrics = segmentation_metrics(num_classes, ignore_index=255).clone(prefix="val/")
    for _ in range(3):
        preds = torch.randint(0, 4, (2, 16, 16))
        target = torch.randint(0, 4, (2, 16, 16))
        target[:, :3] = 255
        metrics.update(preds, target)
        for metric in reference.values():
            metric.update(preds, target)
    values = metrics.compute()
    assert torch.equal(values["val/confmat"], reference["confmat"].compute())
    for name in ("miou", "acc", "iou_per_class"):
        assert values[f"val/{name}"].tolist() == pytest.approx(reference[name].compute().tolist(), abs=1e-6)
    assert values["val/confmat"].sum() == 3 * 2 * 13 * 16  # every pixel but the ignored rows, once
    # One compute group: after the first batch only one of the four metrics updates its matrix.
    assert list(metrics.compute_groups.values()) == [["confmat", "miou", "acc", "iou_per_class"]]


def test_confusion_matrix_reports_truth_values_that_are_neither_classes_nor_ignored():
    metric = ConfusionMatrix(num_classes=3, ignore_index=255)
    metric.update(torch.tensor([0, 1, 2, 0]), torch.tensor([0, 3, 255, 7]))
    with pytest.raises(ValueError, match=r"2 pixels have a true label outside the classes 0..2 .* ignore_index=255"):
        metric.compute()
