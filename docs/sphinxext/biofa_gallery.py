"""sphinx-gallery hooks for the biofa tutorials (named in ``conf.py`` by their import path).

sphinx-gallery runs every tutorial in the same interpreter, so global torch state one tutorial
sets (a float64 default dtype, the global seed) would leak into the next: :func:`reset_torch`
restores it before each script. :class:`TutorialOrder` puts the quickstart first.
"""

from __future__ import annotations

from pathlib import Path

FIRST = ("plot_quickstart.py",)


def reset_torch(gallery_conf, fname) -> None:
    """Restore torch's global defaults: float32 default dtype, seed 0, gradients enabled."""
    import torch

    torch.set_default_dtype(torch.float32)
    torch.manual_seed(0)
    torch.set_grad_enabled(True)


class TutorialOrder:
    """Sort key within the gallery: the files in :data:`FIRST` first, then by file name."""

    def __init__(self, src_dir):
        self.src_dir = str(src_dir)

    def __call__(self, filename) -> tuple[int, str]:
        name = Path(filename).name
        rank = FIRST.index(name) if name in FIRST else len(FIRST)
        return rank, name

    def __repr__(self) -> str:
        return f"<{type(self).__name__}>"
