"""Where a run trains: ``[train] device`` resolved to a :class:`torch.device`, and the placement
of a study's worker processes over several GPUs.

``device`` is ``"auto"`` (CUDA if available, else Apple's MPS, else the CPU), ``"cpu"``,
``"cuda"``, ``"cuda:N"`` or ``"mps"``. With ``"cuda"`` (or ``"auto"`` on a CUDA machine) and
:math:`G` visible GPUs, the worker in slot :math:`k` of a study (``k = 0`` without workers)
trains on GPU :math:`k \\bmod G`: ``--jobs N`` spreads its N workers round-robin over the GPUs,
each GPU getting :math:`\\lceil N/G \\rceil` workers or fewer. ``"cuda:N"`` pins every run to one GPU.
"""

from __future__ import annotations

import multiprocessing

import torch

from ...errors import ConfigError

from ..spec.values import CUDA_INDEX, device_name as valid_name


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def check(name: str) -> None:
    """Raise :class:`~biofa.errors.ConfigError` when ``name`` names a device this machine lacks."""
    if not valid_name(name):
        raise ConfigError(f"[train] device must be one of 'auto', 'cpu', 'cuda', 'cuda:N', 'mps', got {name!r}")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"[train] device = {name!r} but torch.cuda.is_available() is False: this "
                              f"machine (torch {torch.__version__}) has no usable CUDA GPU; use "
                              "device = 'cpu' or 'auto', or run on a machine with a GPU and a CUDA build "
                              "of torch")
        match = CUDA_INDEX.fullmatch(name)
        count = torch.cuda.device_count()
        if match and int(match.group(1)) >= count:
            raise ConfigError(f"[train] device = {name!r} but this machine has {count} CUDA device(s) "
                              f"(cuda:0 to cuda:{count - 1})")
    if name == "mps" and not _mps_available():
        raise ConfigError("[train] device = 'mps' but torch.backends.mps.is_available() is False; use "
                          "device = 'cpu' or 'auto'")


def worker_slot() -> int:
    """The slot of this process among a study's workers: 0 in the main process, ``k - 1`` in the
    k-th worker process started by the study's pool."""
    identity = multiprocessing.current_process()._identity  # (k,) in the k-th child; () in the main one
    return identity[-1] - 1 if identity else 0


def resolve(name: str, slot: int | None = None) -> torch.device:
    """The :class:`torch.device` a run asking for ``name`` trains on, in worker ``slot``
    (default: :func:`worker_slot`). Raises :class:`~biofa.errors.ConfigError` like :func:`check`."""
    check(name)
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else ("mps" if _mps_available() else "cpu")
    if name == "cuda":
        slot = worker_slot() if slot is None else slot
        return torch.device("cuda", slot % torch.cuda.device_count())
    return torch.device(name)

