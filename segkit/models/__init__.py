"""segkit's segmentation networks: SegNet over any registered encoder (`segkit.models.encoders`)."""

from segkit.models.build import (
                                 MODEL_CONFIG_DIR,
                                 build_model,
                                 count_parameters,
                                 model_config,
                                 model_names,
                                 without_pretrained_weights,
)
from segkit.models.encoders import ENCODERS, Encoder, get_encoder
from segkit.models.segnet import SegNet

__all__ = ["ENCODERS", "MODEL_CONFIG_DIR", "Encoder", "SegNet", "build_model", "count_parameters", "get_encoder",
           "model_config", "model_names", "without_pretrained_weights"]
