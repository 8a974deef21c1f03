import math
from pathlib import Path

import pytest
import torch

import segkit.tasks.train
from segkit.checkpoints import CheckpointError, read_checkpoint
from segkit.engine.distillation import Distillation, distillation_kl
from segkit.engine.loading import build_distillation
from segkit.tasks.train import train
from tests.conftest import compose_train


@pytest.fixture(scope="module")
def teacher_checkpoint(tmp_path_factory) -> Path:
    """A segnet trained one tiny epoch on the shapes data: a teacher's checkpoint."""
    run_dir = tmp_path_factory.mktemp("teacher")
    metrics = train(compose_train("model=segnet", output_dir=run_dir))
    return Path(metrics["best_checkpoint"])


def test_distillation_term_equals_the_hand_computed_kl_on_labelled_pixels():
    # One image, two classes, three pixels; the third is unlabelled and must not count.
    student = torch.tensor([[[[2.0, 0.0, 5.0]], [[0.0, 1.0, -5.0]]]])
    teacher = torch.tensor([[[[0.0, 3.0, -5.0]], [[4.0, 0.0, 5.0]]]])
    target = torch.tensor([[[0, 1, 255]]])
    temperature = 2.0

    def softmax(logits: list[float]) -> list[float]:
        exps = [math.exp(value / temperature) for value in logits]
        return [value / sum(exps) for value in exps]

    expected = 0.0
    for pixel in range(2):
        p_teacher = softmax([teacher[0, c, 0, pixel].item() for c in range(2)])
        p_student = softmax([student[0, c, 0, pixel].item() for c in range(2)])
        expected += sum(t * math.log(t / s) for t, s in zip(p_teacher, p_student))
    expected = expected / 2 * temperature**2

    value = distillation_kl(student, teacher, target, temperature, ignore_index=255)
    assert value.item() == pytest.approx(expected, rel=1e-6)
    assert expected == pytest.approx(2.4731, abs=1e-4)  # (0.8288 + 0.4078) / 2 * 2^2, worked out by hand
    # No labelled pixel: nothing to average, 0.
    assert distillation_kl(student, teacher, torch.full_like(target, 255), temperature, 255).item() == 0.0


def test_loss_mixes_label_and_teacher_terms_by_weight():
    teacher = torch.nn.Conv2d(3, 2, 1)
    images = torch.randn(2, 3, 4, 4)
    target = torch.randint(0, 2, (2, 4, 4))
    label_loss = torch.tensor(0.8)
    distillation = Distillation(teacher, temperature=3.0, weight=0.25, ignore_index=255)

    # A student that predicts what the teacher does: the KL term is 0, the loss is the label term's share.
    assert distillation.loss(label_loss, teacher(images), images, target).item() == pytest.approx(0.75 * 0.8)
    student_logits = torch.randn(2, 2, 4, 4)
    kl = distillation_kl(student_logits, teacher(images), target, 3.0, 255)
    assert distillation.loss(label_loss, student_logits, images, target).item() == pytest.approx(
        0.75 * 0.8 + 0.25 * kl.item())
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())


@pytest.mark.parametrize(("key", "value"), [("temperature", 0.0), ("weight", 1.5)])
def test_bad_settings_name_the_key(teacher_checkpoint, key, value):
    config = {"teacher": str(teacher_checkpoint), "temperature": 4.0, "weight": 0.5, key: value}
    with pytest.raises(ValueError, match=rf"distill\.{key}={value}"):
        build_distillation(config, num_classes=3, ignore_index=255)


def test_a_teacher_of_other_classes_is_refused_naming_both_counts(teacher_checkpoint, tmp_path):
    config = {"teacher": str(teacher_checkpoint), "temperature": 4.0, "weight": 0.5}
    with pytest.raises(CheckpointError, match=r"teacher predicts 3 classes and the student 21 \(data.num_classes\)"):
        build_distillation(config, num_classes=21, ignore_index=255)


def test_a_missing_teacher_is_named_by_its_key(tmp_path):
    config = {"teacher": str(tmp_path / "none.ckpt"), "temperature": 4.0, "weight": 0.5}
    with pytest.raises(CheckpointError, match=r"distill\.teacher=.*none\.ckpt: checkpoint not found"):
        build_distillation(config, num_classes=3, ignore_index=255)


def test_a_distilled_run_leaves_the_teacher_unchanged_and_out_of_the_checkpoint(teacher_checkpoint, tmp_path,
                                                                               monkeypatch):
    teacher_state = read_checkpoint(teacher_checkpoint)["state_dict"]
    runs = []
    build = segkit.tasks.train.build
    monkeypatch.setattr(segkit.tasks.train, "build", lambda cfg: runs.append(build(cfg)) or runs[-1])
    cfg = compose_train(f"distill.teacher={teacher_checkpoint}", "distill.temperature=2.0", "distill.weight=0.7",
                        output_dir=tmp_path / "student")

    metrics = train(cfg)

    module = runs[0].module
    distillation = module.distillation
    assert (distillation.temperature, distillation.weight) == (2.0, 0.7)
    assert not distillation.teacher.training
    # Every weight and BatchNorm statistic of the teacher is what its checkpoint holds.
    for key, value in distillation.teacher.state_dict().items():
        assert torch.equal(value, teacher_state[key]), key
    # The student's parameters, checkpoint and optimizer are the student's alone.
    student_parameters = sum(p.numel() for p in module.parameters())
    assert student_parameters == metrics["params"] == 1_752_356
    optimizer_state = runs[0].trainer.optimizers[0].param_groups[0]["params"]
    assert sum(p.numel() for p in optimizer_state) == student_parameters
    saved = read_checkpoint(metrics["best_checkpoint"])
    assert set(saved["state_dict"]) == set(module.state_dict())
    assert not any(key.startswith(("teacher", "distillation")) for key in saved["state_dict"])
    assert saved["segkit_config"]["distill"]["teacher"] == str(teacher_checkpoint)
    assert metrics["epochs"] == 1 and 0.0 <= metrics["val/miou"] <= 1.0
    assert list(metrics["val/iou_per_class"]) == ["object", "background", "border"]
