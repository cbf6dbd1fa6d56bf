"""`WorldDataModule`: LocoWorld training pairs and the fixed probe set, as Lightning wants them."""

from __future__ import annotations

from typing import Literal

import lightning as L
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset

from loco_lightning.data.world.dataset import WorldDataset
from loco_lightning.data.world.probes import collate_probes, probe_set
from loco_lightning.data.world.vocab import Vocabulary


class Pool(Dataset):
    """A dataset whose items are made once, on first use, then served from memory.

    Each item carries its index as ``pool_index``: a consumer may memoize by it what it derives
    from the item alone (the world trainer keeps each render's VAE posterior).
    """

    def __init__(self, dataset: Dataset) -> None:
        self.dataset, self.items = dataset, {}

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict:
        if index not in self.items:
            self.items[index] = {**self.dataset[index], "pool_index": index}
        return self.items[index]


class WorldDataModule(L.LightningDataModule):
    """Training pairs from one deterministic `WorldDataset` stream; probes for validation/test.

    An epoch is `max_steps` batches of the stream from item `global_step * batch_size` on, so a
    resumed run continues the stream instead of repeating it (`max_steps` ends the run).
    A module that trains on caption variants (planted training) names them in its
    `caption_variants` attribute; the training items then carry them (see `WorldDataset`).

    Under DDP (``--trainer.devices 2 --trainer.strategy ddp --threads 1``: on two cores a
    world-sd1 step takes 0.233 s against one process's 0.261, ``bench/world_processes.py``)
    process r of N takes items r, r + N, ... of the step's range, ``batch_size / N`` at a time,
    so a step's global batch is the same items as in one process, and resuming works alike;
    validation and test split the probes without repeating any.

    Args:
        batch_size: training pairs per step, over all processes.
        seed: seed of the training stream.
        vocab: vocabulary YAML (None: the packaged one); must match the model's.
        named_p: fraction of named-concept captions.
        drop_p: per-attribute caption dropout (keeps attribute-removed prompts in distribution).
        empty_p: fraction of empty captions (the unconditional branch of guidance).
        jitter: pose noise scale of the renders.
        steps: run length in steps when the Trainer sets no `max_steps`.
        val_per_concept: probes per named concept (plain probes: every attribute combination).
        val_seed: seed of the probe set (generation seeds and draws).
        val_batch_size: probes per validation/test batch (guidance doubles the UNet batch).
        val: ``probes`` (captions to generate from, for text-to-image models) or ``renders``
            (held-out `WorldDataset` items of stream ``val_seed`` with their labels, for models
            of images alone such as the world autoencoder).
        val_size: number of held-out renders when ``val`` is ``renders``.
        num_workers: DataLoader workers; 0 keeps rendering in the training process, which is
            right on a 2-core machine: a batch of 64 renders in 35 ms, and one worker takes that
            out of the step but slows the training threads by as much (world-sd1: 0.284 s a
            step either way, ``bench/world_step.py``).
        pool: render only the stream's first ``pool`` items, each once, and cycle through them
            (item i is item ``i % pool``; noise, timesteps and the latents' posterior samples are
            still drawn fresh): rendering, and a latent world's VAE encoding, then cost ``pool``
            items instead of ``batch_size`` every step. None: every item new.
    """

    def __init__(
        self,
        batch_size: int = 64,
        seed: int = 0,
        vocab: str | None = None,
        named_p: float = 0.15,
        drop_p: float = 0.2,
        empty_p: float = 0.1,
        jitter: float = 1.0,
        steps: int = 3000,
        val_per_concept: int = 16,
        val_seed: int = 0,
        val_batch_size: int = 336,
        val: Literal["probes", "renders"] = "probes",
        val_size: int = 1024,
        num_workers: int = 0,
        pool: int | None = None,
    ) -> None:
        super().__init__()
        if val == "renders" and val_seed == seed:
            raise ValueError(f"val_seed={val_seed} equals the training seed; choose another")
        if pool is not None and pool < 1:
            raise ValueError(f"pool={pool} must be a positive number of items (or null: no pool)")
        self.save_hyperparameters()

    def _steps(self) -> int:
        max_steps = self.trainer.max_steps if self.trainer is not None else -1
        return max_steps if max_steps and max_steps > 0 else self.hparams.steps

    def _split(self, dataset: Dataset) -> DistributedSampler:
        """This process's share of ``dataset``: items rank, rank + N, ... of N processes, none
        repeated (a DistributedSampler, so Lightning leaves the split as it is)."""
        trainer = self.trainer
        processes, rank = (trainer.world_size, trainer.global_rank) if trainer else (1, 0)
        return UnrepeatedDistributedSampler(dataset, processes, rank, shuffle=False)

    def train_dataloader(self) -> DataLoader:
        hp = self.hparams
        trainer = self.trainer
        module = trainer.lightning_module if trainer is not None else None
        processes = trainer.world_size if trainer is not None else 1
        if hp.batch_size % processes:
            raise ValueError(
                f"batch_size={hp.batch_size} does not split over {processes} processes; "
                f"make it a multiple of trainer.devices={processes}"
            )
        start = (trainer.global_step if trainer is not None else 0) * hp.batch_size
        n_items = self._steps() * hp.batch_size
        dataset = WorldDataset(
            length=start + n_items,
            seed=hp.seed,
            vocab=hp.vocab,
            named_p=hp.named_p,
            drop_p=hp.drop_p,
            empty_p=hp.empty_p,
            jitter=hp.jitter,
            variants=getattr(module, "caption_variants", ()),
        )
        indices = range(start, start + n_items)
        if hp.pool:
            dataset, indices = Pool(dataset), [i % hp.pool for i in indices]
        items = Subset(dataset, indices)
        return DataLoader(
            items,
            batch_size=hp.batch_size // processes,
            sampler=self._split(items),
            num_workers=hp.num_workers,
            drop_last=True,
        )

    def _probes(self) -> DataLoader:
        hp = self.hparams
        if hp.val == "renders":
            renders = WorldDataset(
                length=hp.val_size, seed=hp.val_seed, vocab=hp.vocab, jitter=hp.jitter, empty_p=0.0
            )
            return DataLoader(renders, hp.val_batch_size, sampler=self._split(renders))
        vocab = None if hp.vocab is None else Vocabulary.from_yaml(hp.vocab)
        probes = probe_set(vocab, hp.val_per_concept, hp.val_seed)
        return DataLoader(
            probes, hp.val_batch_size, sampler=self._split(probes), collate_fn=collate_probes
        )

    def val_dataloader(self) -> DataLoader:
        return self._probes()

    def test_dataloader(self) -> DataLoader:
        return self._probes()
