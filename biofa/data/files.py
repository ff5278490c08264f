"""Finding the data files a user provides, and saying clearly what is missing.

biofa never downloads: datasets that come as files (MNIST, Fashion-MNIST, CIFAR-10) are read from
a folder the user names with ``root=``. Without ``root`` the folder is ``$BIOFA_DATA`` (else
``./data``) joined with the dataset's usual sub-folder. A missing file raises
:class:`~biofa.errors.DataFileError` naming every expected file, the folders searched and where
to get the files.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

from ..errors import DataFileError

ENV_VAR = "BIOFA_DATA"


def default_base() -> Path:
    """``$BIOFA_DATA`` if set, else ``./data``."""
    return Path(os.environ.get(ENV_VAR, "data"))


def candidate_folders(root, subfolders: tuple[str, ...]) -> list[Path]:
    """Folders to search: ``root`` itself and ``root/<sub>`` for each usual sub-folder."""
    base = (default_base() if root is None else Path(root).expanduser()).absolute()
    return [base, *(base / sub for sub in subfolders)]


def locate(names: list[str], folders: list[Path], *, title: str, source: str,
           gz: bool = True) -> dict[str, Path]:
    """Path of every file in ``names`` (``name`` or ``name.gz``), all from the first folder that
    has them all; otherwise a :class:`DataFileError` that says what to do."""
    for folder in folders:
        found = {}
        for name in names:
            for candidate in (name, name + ".gz") if gz else (name,):
                if (folder / candidate).is_file():
                    found[name] = folder / candidate
                    break
        if len(found) == len(names):
            return found
    listed = ", ".join(f"{n}(.gz)" if gz else n for n in names)
    searched = ", ".join(str(f) for f in folders)
    raise DataFileError(
        f"{title} needs the files {listed}; none of the folders searched has them all: {searched}. "
        f"Download them from {source} and pass root=<the folder that holds them> "
        f"(or set ${ENV_VAR})."
    )


def read_bytes(path) -> bytes:
    """The content of ``path``, decompressed when it is gzip (detected by its magic bytes)."""
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            head = fh.read(2)
            fh.seek(0)
            if head == b"\x1f\x8b":
                with gzip.GzipFile(fileobj=fh) as gzf:
                    return gzf.read()
            return fh.read()
    except FileNotFoundError:
        raise DataFileError(f"data file {path} does not exist") from None
    except (OSError, EOFError) as err:
        raise DataFileError(f"data file {path} is corrupt or unreadable ({err}); download it again") from None
