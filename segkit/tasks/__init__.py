"""What each command does, one module per command: `train` (a run: build, fit, report), `evaluate`, `predict`,
`export`, `lr_find`, `summary`, `data_check`, `tradeoff`; `run_log` is what every command prints and logs.
The commands (`segkit/<command>.py`) are thin Hydra or argparse shells over these."""
