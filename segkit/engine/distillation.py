"""Knowledge distillation: a small student trains on the labels and on a trained teacher's soft predictions.

    python -m segkit.train model=dsc_segnet distill.teacher=<teacher's .ckpt> [distill.temperature=4] [distill.weight=0.5]

The teacher is a segkit checkpoint, loaded as plain data with its config trust-checked
(`SegmentationModule.load_from_checkpoint`), so it never runs code. It predicts in eval mode, without
gradients, on the student's own augmented batch. It is held outside the student's modules: it is not in
the student's parameters (the optimizer never sees it), its state_dict (checkpoints stay the student's
alone) or Lightning's model summary.

The training loss is `(1 - weight) * label loss + weight * T^2 * KL(teacher/T || student/T)`, the KL
divergence of the temperature-softened class distributions averaged over the labelled pixels (those
that are not `ignore_index`); T^2 keeps the soft term's gradients at the label loss's scale (Hinton et
al., 2015). Validation and test losses are the label loss alone.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from segkit.utilities.checks import require_number, require_positive


def distillation_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, target: torch.Tensor,
                    temperature: float, ignore_index: int) -> torch.Tensor:
    """T^2 * KL(softmax(teacher / T) || softmax(student / T)) per pixel (N x C x H x W logits), averaged over
    the pixels whose `target` is not `ignore_index`; 0 when none is."""
    student_log_probs = F.log_softmax(student_logits.float() / temperature, dim=1)
    teacher_log_probs = F.log_softmax(teacher_logits.float() / temperature, dim=1)
    per_pixel = F.kl_div(student_log_probs, teacher_log_probs, reduction="none", log_target=True).sum(dim=1)
    labelled = target != ignore_index
    return per_pixel[labelled].sum() / labelled.sum().clamp(min=1) * temperature**2


def check_settings(temperature: Any, weight: Any) -> None:
    """Raises a `ConfigError` naming the key for a temperature that is not > 0 or a weight outside [0, 1]."""
    require_positive("distill.temperature", temperature)
    require_number("distill.weight", weight, 0, 1, what="the teacher term's weight")


class Distillation:
    """The teacher and how its predictions enter the student's training loss (a plain object, not an
    `nn.Module`, so that a `SegmentationModule` holding it does not take the teacher for a part of itself)."""

    def __init__(self, teacher: nn.Module, temperature: float, weight: float, ignore_index: int) -> None:
        self.teacher = teacher.eval().requires_grad_(False)
        self.temperature = temperature
        self.weight = weight
        self.ignore_index = ignore_index

    @torch.no_grad()
    def teacher_logits(self, images: torch.Tensor) -> torch.Tensor:
        device = images.device
        if next(self.teacher.parameters()).device != device:  # the student was moved (to a GPU, by Lightning)
            self.teacher.to(device)
        self.teacher.eval()  # stays so whatever the student's mode
        return self.teacher(images)

    def loss(self, label_loss: torch.Tensor, student_logits: torch.Tensor, images: torch.Tensor,
             target: torch.Tensor) -> torch.Tensor:
        """The training loss: `label_loss` mixed with the teacher's term on the same `images`."""
        soft = distillation_kl(student_logits, self.teacher_logits(images), target, self.temperature,
                               self.ignore_index)
        return (1 - self.weight) * label_loss + self.weight * soft
