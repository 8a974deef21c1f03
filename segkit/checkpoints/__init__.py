"""Checkpoint files: writing them so a crash never loses one (`io`), reading them as data that never runs code
(`io`, `trust`), and telling whether one fits the network, classes and settings asked of it (`matching`).

conf/trainer/default.yaml names `segkit.checkpoints.AtomicCheckpointIO`, and so do the configs stored in every
checkpoint written so far: the name stays importable here.
"""

from segkit.checkpoints.io import AtomicCheckpointIO, CheckpointError, read_checkpoint, save_atomically
from segkit.checkpoints.matching import (
                                         CONFIG_KEY,
                                         check_checkpoint_matches,
                                         check_resume_settings,
                                         read_training_config,
                                         require_training_config,
)
from segkit.checkpoints.trust import read_trusted_checkpoint, untrusted_entries

__all__ = ["CONFIG_KEY", "AtomicCheckpointIO", "CheckpointError", "check_checkpoint_matches", "check_resume_settings",
           "read_checkpoint", "read_trusted_checkpoint", "read_training_config", "require_training_config",
           "save_atomically", "untrusted_entries"]
