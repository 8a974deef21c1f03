"""segkit: efficient semantic segmentation with PyTorch Lightning and Hydra.

`segkit/<command>.py` is the command `segkit <command>` (`python -m segkit.<command>`); the work lives in packages
named for what they hold (docs/development.md draws the layout). `segkit.api` gathers the names a script uses.
Importing this package imports nothing else, so the torch-free `segkit.runtime` stays torch-free.
"""
