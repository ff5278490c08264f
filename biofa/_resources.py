"""Where the packaged TOML specs live, in a source checkout and in an installed wheel."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

_REPO_ROOT = Path(__file__).resolve().parent.parent


def packaged_dir(kind: str) -> Path:
    """Folder of the ready-made specs of ``kind`` (``"circuits"`` or ``"experiments"``).

    A source checkout reads the top-level folder directly; an installed wheel carries the same
    files as the data package ``biofa._specs.<kind>``.
    """
    if kind not in ("circuits", "experiments"):
        raise ValueError(f"kind must be 'circuits' or 'experiments', got {kind!r}")
    source = _REPO_ROOT / kind
    if source.is_dir() and (_REPO_ROOT / "pyproject.toml").is_file():
        return source
    return Path(str(resources.files(f"biofa._specs.{kind}")))
