"""The repository stands on its own: no tracked file cites the briefing documents it grew from.

Background, equations and citations live in ``docs/background.rst``; a pointer such as
"REFERENCE §3" or a path into ``../shared`` names a document users never get.
"""

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FORBIDDEN = ("REFERENCE §", "../shared")


def _tracked_files() -> list[str]:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout: the tracked files are unknown")
    out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True)
    return [p for p in out.stdout.decode("utf-8").split("\0") if p]


def test_no_tracked_file_outside_tests_cites_the_briefing():
    files = [p for p in _tracked_files() if not p.startswith("tests/")]
    assert "docs/background.rst" in files and "README.md" in files  # the listing is the real one
    offenders = []
    for rel in files:
        path = ROOT / rel
        if not path.is_file():  # deleted in the work tree but still in the index
            continue
        text = path.read_bytes().decode("utf-8", errors="replace")
        for lineno, line in enumerate(text.splitlines(), 1):
            for needle in FORBIDDEN:
                if needle in line:
                    offenders.append(f"{rel}:{lineno}: {line.strip()[:100]}")
    assert not offenders, (
        "These lines cite documents outside the repository; point to docs/background.rst "
        "instead:\n" + "\n".join(offenders)
    )


def test_background_page_is_in_the_docs_toctree():
    index = (ROOT / "docs" / "index.rst").read_text(encoding="utf-8")
    assert any(line.strip() == "background" for line in index.splitlines())
