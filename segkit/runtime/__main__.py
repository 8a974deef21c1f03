"""python -m segkit.runtime model.onnx photos/ --output masks/: masks and overlays of image files from a segkit ONNX
export, with numpy, pillow and onnxruntime only (no torch)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from segkit.runtime.files import segment_files
from segkit.runtime.session import OnnxSegmenter


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m segkit.runtime", description="Masks and overlays of images "
                                     "from a segkit ONNX export, without torch.")
    parser.add_argument("onnx_path", help="a file written by python -m segkit.export")
    parser.add_argument("inputs", nargs="+", help="image files or folders")
    parser.add_argument("--output", default="masks", help="folder for <stem>.png and <stem>_overlay.png")
    parser.add_argument("--no-overlays", dest="overlays", action="store_false")
    parser.add_argument("--overlay-alpha", type=float, default=0.5)
    parser.add_argument("--tta", choices=["flip"], default=None)
    parser.add_argument("--tta-scales", type=float, nargs="+", default=None, metavar="SCALE",
                        help="also average the prediction at these multiples of the input size, e.g. 0.75 1")
    parser.add_argument("--threads", type=int, default=None, help="onnxruntime intra-op threads")
    args = parser.parse_args(argv)
    segmenter = OnnxSegmenter(args.onnx_path, tta=args.tta, threads=args.threads, tta_scales=args.tta_scales)
    segment_files(segmenter, segmenter.colormap, args.inputs, args.output, args.overlays, args.overlay_alpha)


if __name__ == "__main__":
    main()
