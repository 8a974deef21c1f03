"""The names a script uses, gathered in one place: the same objects the commands build.

    from segkit.api import CONFIG_DIR, Predictor, build_model, load_module, read_image, train
"""

from segkit.config import CONFIG_DIR
from segkit.engine.loading import load_module, training_datamodule
from segkit.engine.module import SegmentationModule
from segkit.engine.predictor import Predictor
from segkit.models import build_model, model_names
from segkit.runtime.images import read_image
from segkit.runtime.session import OnnxSegmenter
from segkit.tasks.evaluate import evaluate
from segkit.tasks.export import export
from segkit.tasks.predict import predict
from segkit.tasks.train import build, train

__all__ = ["CONFIG_DIR", "OnnxSegmenter", "Predictor", "SegmentationModule", "build", "build_model", "evaluate",
           "export", "load_module", "model_names", "predict", "read_image", "train", "training_datamodule"]
