"""A quiet CPU Trainer for short from-scratch training runs."""

import lightning as L
import pytest


@pytest.fixture
def quick_trainer():
    def make(max_steps: int) -> L.Trainer:
        return L.Trainer(
            accelerator="cpu",
            max_steps=max_steps,
            limit_val_batches=0,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
        )

    return make
