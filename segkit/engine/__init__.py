"""What training and inference run on: the LightningModule (`module`: loss, metrics, optimisation), its metrics,
schedules, distillation, loggers, figures, DDP under Hydra (`distributed`), the LR range test, the PyTorch
`Predictor`, an ONNX file as a network (`onnx_net`) and loading a trained module (`loading`)."""
