import lightning as L
import torch
from lightning.pytorch.callbacks import EMAWeightAveraging
from torch.utils.data import DataLoader, TensorDataset

from segkit.callbacks import ForeachEMA
from segkit.engine.module import SegmentationModule

TINY_NET = {"_target_": "segkit.models.build_model", "num_classes": 3, "input_norm": True,
            "encoder": {"name": "vgg", "layout": "article", "conv": "dsc", "width": 0.125}}
ADAM = {"_target_": "torch.optim.Adam", "_partial_": True, "lr": 0.01}


def _averaged_weights(callback: L.Callback) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    module = SegmentationModule(TINY_NET, num_classes=3, optimizer=ADAM)
    batch = (torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(1)),
             torch.randint(0, 3, (4, 32, 32), generator=torch.Generator().manual_seed(2)))
    trainer = L.Trainer(accelerator="cpu", max_steps=6, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=[callback])
    trainer.fit(module, train_dataloaders=DataLoader(TensorDataset(*batch), batch_size=2))
    return {key: value.clone() for key, value in module.state_dict().items()}  # the average, swapped in at fit end


def test_foreach_ema_averages_as_lightnings_ema_does():
    expected = _averaged_weights(EMAWeightAveraging(decay=0.9, update_starting_at_step=2))
    actual = _averaged_weights(ForeachEMA(decay=0.9, update_starting_at_step=2))
    assert expected.keys() == actual.keys()
    for key in expected:
        torch.testing.assert_close(actual[key], expected[key], rtol=1e-5, atol=1e-6, msg=key)
    # Not just the raw weights: the average differs from a run without it.
    raw = _averaged_weights(L.Callback())
    assert any(not torch.allclose(raw[key].float(), actual[key].float()) for key in actual)
