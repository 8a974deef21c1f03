"""segkit's callbacks, each in its own module: Lightning callbacks (conf/callbacks/, conf/logger/wandb.yaml) and
the Hydra callback that summarises a multirun (conf/train.yaml)."""

from segkit.callbacks.batch_norm import RecomputeBatchNormStats
from segkit.callbacks.epoch_log import EpochLog
from segkit.callbacks.last_checkpoint import INTERRUPTED_EXIT_CODE, LastCheckpoint, last_checkpoint_path
from segkit.callbacks.model_summary import ModelSummary
from segkit.callbacks.non_finite import NonFiniteError, StopOnNonFinite
from segkit.callbacks.sweep_summary import MultirunSummary
from segkit.callbacks.tensorboard_figures import TensorBoardFigures
from segkit.callbacks.wandb_dashboard import WandbDashboard
from segkit.callbacks.weight_average import ForeachEMA

__all__ = ["INTERRUPTED_EXIT_CODE", "EpochLog", "ForeachEMA", "LastCheckpoint", "ModelSummary", "MultirunSummary", "NonFiniteError",
           "RecomputeBatchNormStats", "StopOnNonFinite", "TensorBoardFigures", "WandbDashboard", "last_checkpoint_path"]
