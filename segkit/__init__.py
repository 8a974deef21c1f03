"""segkit: efficient semantic segmentation with PyTorch Lightning and Hydra. The layout is described in the
README's "Development" section."""

try:
    # conf/'s resolvers (data_num_classes, new_folder), registered for any composition of it: a command, or a
    # library user's Hydra `compose`.
    from segkit import config  # noqa: F401
except ModuleNotFoundError:  # a deployment that runs ONNX files only (segkit.runtime) has no Hydra
    pass
