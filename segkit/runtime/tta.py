"""Test-time augmentation (mmseg's "aug test"): the views whose class probabilities are averaged, in numpy or torch
alike, so that segkit's module, its `Predictor` and the torch-free `OnnxSegmenter` average the same views."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from segkit.utilities.checks import ConfigError, require_positive_numbers

TTA_MODES = (None, "flip")


def check_tta(tta: str | None) -> str | None:
    """`tta` if it names a test-time augmentation of TTA_MODES; else a `ConfigError` that lists them."""
    if tta not in TTA_MODES:
        raise ConfigError(f"tta={tta!r} is not a test-time augmentation; expected one of {list(TTA_MODES)}")
    return tta


def check_tta_scales(scales: Sequence[float] | None) -> tuple[float, ...]:
    """`tta_scales` as a tuple of distinct positive factors ((1.0,) for None); else a `ConfigError` naming the value."""
    if scales is None:
        return (1.0,)
    return require_positive_numbers("tta_scales", scales, distinct=True,
                                    expected="expected a list of distinct positive scale factors, e.g. [0.75, 1.0]")


@dataclass(frozen=True)
class TestTimeAugmentation:
    """The views whose class probabilities are averaged at test time (mmseg's "aug test"): the network's input
    resized by each of `scales`, and with `flip` the mirror image of each, its prediction flipped back. segkit's
    networks take any input size (SegNet unpools to the size before each pooling).

    Written here rather than taken from ttach: the same views must run in onnxruntime without torch."""

    __test__ = False  # a class named Test* that pytest must not collect

    flip: bool = False
    scales: tuple[float, ...] = (1.0,)

    def views(self) -> list[tuple[float, bool]]:
        """(scale, mirrored) of every view, in order."""
        return [(scale, mirrored) for scale in self.scales for mirrored in ((False, True) if self.flip else (False,))]

    @staticmethod
    def size(size: Sequence[int], scale: float) -> tuple[int, int]:
        """The (height, width) the network sees at `scale` for an input of `size`: each side times the scale,
        rounded."""
        height, width = (max(1, round(side * scale)) for side in size)
        return height, width

    def mean(self, view: Callable[[tuple[int, int], bool], Any], size: Sequence[int]) -> Any:
        """The mean over the views of `view(the size the network sees, mirrored)`, for an input of `size`: the
        class probabilities each caller computes its own way (torch batches, a photo, onnxruntime)."""
        views = self.views()
        return sum(view(self.size(size, scale), mirrored) for scale, mirrored in views) / len(views)

    def overrides(self) -> str:
        """The command-line settings that select it, e.g. `tta=flip tta_scales=[0.75,1]`."""
        scales = f"tta_scales=[{','.join(f'{scale:g}' for scale in self.scales)}]" if self.scales != (1.0,) else ""
        return " ".join(setting for setting in ("tta=flip" if self.flip else "", scales) if setting)


def build_tta(tta: str | None, scales: Sequence[float] | None = None) -> TestTimeAugmentation | None:
    """The test-time augmentation that `tta` (None or "flip") and `tta_scales` describe; None for a single view."""
    flip = check_tta(tta) == "flip"
    scales = check_tta_scales(scales)
    if not flip and scales == (1.0,):
        return None
    return TestTimeAugmentation(flip, scales)


def tta_settings(tta: TestTimeAugmentation | None) -> dict[str, str | list[float] | None]:
    """The `tta` and `tta_scales` that `build_tta` makes `tta` from, as runs and evaluations record them."""
    return {"tta": "flip" if tta is not None and tta.flip else None,
            "tta_scales": list(tta.scales) if tta is not None else None}
