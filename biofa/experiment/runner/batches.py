"""A run's data on its device: the batches of each split, and evaluation over them.

In-memory datasets are moved to the device once and batched by indexing, so a training step
copies nothing from the host; sums over a pass (loss, correct predictions) accumulate on the
device and are read once:

.. math:: \\bar L = \\frac1N \\sum_b \\sum_{n \\in b} L_n, \\qquad
          \\mathrm{acc} = \\frac1N \\sum_b \\#\\{n \\in b : \\arg\\max_k y_{nk} = c_n\\}
"""

from __future__ import annotations

import torch

from ... import data
from ...errors import ConfigError


class Batches:
    """The batches of one split for one run, on the run's device.

    In-memory datasets (tensors) are moved to the device once, in the run's dtype, and each batch
    is one index into them: no per-step host-to-device copy. The training order is a fresh
    permutation per pass from the run's own generator, drawn as :class:`~torch.utils.data.RandomSampler`
    draws it (so runs keep the batches they had when a DataLoader served them); its state is
    part of a checkpoint, so a resumed run sees the batches an uninterrupted one sees. Other
    datasets (decoded per example) go through :func:`biofa.data.loaders`, batch by batch.
    """

    def __init__(self, dataset, batch_size: int, device, dtype, *, seed: int | None = None, loader=None):
        from torch.utils.data import TensorDataset
        self.batch_size, self.device, self.dtype = batch_size, device, dtype
        self.n = len(dataset)
        self.loader = loader
        if loader is not None:  # its sampler's generator orders the batches
            self.generator = getattr(loader.batch_sampler.sampler, "generator", None)
        elif isinstance(dataset, TensorDataset):
            self.generator = torch.Generator().manual_seed(seed) if seed is not None else None
            x, y = dataset.tensors
            self.x, self.y = x.to(device=device, dtype=dtype), y.to(device)
        else:
            raise ConfigError(f"Batches: a {type(dataset).__name__} needs its DataLoader (loader=)")

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        if self.loader is not None:
            for x, y in self.loader:
                yield x.to(self.device, self.dtype, non_blocking=True), y.to(self.device, non_blocking=True)
            return
        if self.generator is None:
            for start in range(0, self.n, self.batch_size):
                yield self.x[start:start + self.batch_size], self.y[start:start + self.batch_size]
            return
        order = torch.randperm(self.n, generator=self.generator)
        torch.randperm(self.n, generator=self.generator)  # RandomSampler's second, unused draw per pass
        order = order.to(self.device)
        for start in range(0, self.n, self.batch_size):
            index = order[start:start + self.batch_size]
            yield self.x[index], self.y[index]


def sum_dtype(device) -> torch.dtype:
    return torch.float32 if device.type == "mps" else torch.float64  # MPS has no float64


@torch.no_grad()
def evaluate(model, batches: Batches, loss_fn) -> dict:
    """Mean loss and (classification) accuracy of ``model`` over ``batches``; the sums
    accumulate on the device and are read once."""
    model.eval()
    device = batches.device
    loss_sum = torch.zeros((), dtype=sum_dtype(device), device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    for x, y in batches:
        out = model(x)
        loss_sum += loss_fn(out, y, reduction="sum")
        if loss_fn.task == "classification":
            correct += (out.argmax(1) == y).sum()
    total = max(len(batches), 1)
    loss, hits = torch.stack([loss_sum, correct.to(loss_sum.dtype)]).tolist()
    return {"loss": loss / total, "acc": hits / total if loss_fn.task == "classification" else None}


def run_batches(splits, train_cfg, seed, device, dtype):
    """The (train, val, test) :class:`Batches` of a run."""
    eval_bs = train_cfg["eval_batch_size"]
    if splits.in_memory:
        return (Batches(splits.train, train_cfg["batch_size"], device, dtype, seed=seed),
                Batches(splits.val, eval_bs, device, dtype), Batches(splits.test, eval_bs, device, dtype))
    loaders = data.loaders(splits, train_cfg["batch_size"], seed=seed, eval_batch_size=eval_bs,
                           pin_memory=device.type == "cuda")
    return tuple(Batches(part, 0, device, dtype, loader=loader)
                 for part, loader in zip((splits.train, splits.val, splits.test), loaders))
