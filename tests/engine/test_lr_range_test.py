"""segkit.engine.lr_range_test: the range test's curve recovered, smoothed and read (no training)."""

import math

import numpy as np
import pytest
from PIL import Image

from segkit.engine.lr_range_test import BETA, analyse, plot, smooth, unsmooth


def lightning_smoothed(losses: list[float]) -> list[float]:
    """The curve Lightning's range test records: point i is taken at global step i + 1."""
    average, smoothed = 0.0, []
    for index, loss in enumerate(losses):
        average = BETA * average + (1 - BETA) * loss
        smoothed.append(average / (1 - BETA ** (index + 2)))
    return smoothed


def test_raw_losses_are_recovered_from_lightnings_curve_up_to_the_first_non_finite_point():
    losses = [2.0, 1.5, 1.7, 1.2, 0.9]
    assert unsmooth(lightning_smoothed(losses)) == pytest.approx(losses)
    assert lightning_smoothed(losses)[0] == pytest.approx(2.0 / 1.98)  # the artefact: half the first loss
    assert unsmooth([*lightning_smoothed(losses), math.nan, 3.0]) == pytest.approx(losses)


def test_smoothing_is_a_centred_mean_that_does_not_lag():
    assert smooth([2.0, 2.0, 2.0]) == pytest.approx([2.0, 2.0, 2.0])
    assert smooth([3.0, 1.0, 2.0, 6.0], window=3) == pytest.approx([2.0, 2.0, 3.0, 4.0])
    steps = [0.0] * 20 + [1.0] * 20
    assert smooth(steps)[19] == pytest.approx(4 / 9) and smooth(steps)[20] == pytest.approx(5 / 9)


def range_curve() -> tuple[np.ndarray, list[float]]:
    """100 steps from 1e-6 to 10: a flat loss that drops steeply around lr 1e-3, bottoms out near 0.1 and diverges,
    with noisy, large first steps."""
    lrs = np.logspace(-6, 1, 100)
    losses = 1.0 + 0.5 * np.tanh(-(np.log10(lrs) + 3) * 2) + np.where(lrs > 0.1, 40 * (lrs - 0.1), 0.0)
    losses[:5] += [3.0, -0.4, 2.0, -0.4, 1.0]  # the warm-up: a smoothed mean of few losses swings
    return lrs, losses.tolist()


def test_the_suggestion_is_the_steepest_descent_between_the_warm_up_and_the_minimum(tmp_path):
    lrs, losses = range_curve()
    test = analyse(lrs.tolist(), lightning_smoothed(losses), skip_begin=10)
    assert test.loss == pytest.approx(losses)
    assert 0.03 < test.minimum_lr < 0.3  # the raw minimum is at 0.1; the centred mean sees the divergence early
    # The steepest descent of the curve is at lr 1e-3: the centred mean does not move it.
    assert 7e-4 <= test.suggested_lr <= 1.5e-3
    assert test.to_json()["suggested_lr"] == test.suggested_lr
    plot(test, tmp_path / "lr_find.png")
    with Image.open(tmp_path / "lr_find.png") as image:
        assert image.format == "PNG" and image.width > 400


def test_a_diverged_tail_is_none_and_too_short_a_curve_has_no_suggestion(tmp_path):
    lrs, losses = range_curve()
    test = analyse(lrs[:62].tolist(), [*lightning_smoothed(losses[:60]), math.inf, math.nan], skip_begin=10)
    assert test.loss[60:] == [None, None] and test.smoothed_loss[61] is None
    short = analyse(lrs[:12].tolist(), lightning_smoothed(losses[:12]), skip_begin=10)
    assert short.suggested_lr is None
    plot(short, tmp_path / "short.png")  # draws without a suggestion
