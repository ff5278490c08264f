"""The documentation's executable parts: every tutorial runs, and the Sphinx site builds with -W.

Tutorials (``docs/tutorials/plot_*.py``) run in their fast mode (``BIOFA_FAST=1``), each in a
fresh interpreter with the Agg backend and a temporary working directory, as sphinx-gallery runs
them in the docs build. The full ``make docs`` build is slow and lives behind ``-m slow``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
TUTORIALS = sorted((DOCS / "tutorials").glob("plot_*.py"))
# Timeouts are hang guards, not speed requirements: a loaded machine may be many times slower.
HANG_S = 3600
PAGES = sorted(p for p in DOCS.rglob("*.rst")
               if not {"_build", "auto_tutorials", "gen_modules", "_templates"} & set(p.relative_to(DOCS).parts))


def python_blocks(page: Path) -> list[str]:
    """The ``.. code-block:: python`` blocks of an reST page, dedented, in order."""
    blocks, lines = [], page.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        if re.match(r"^(\s*)\.\. code-block:: python\s*$", lines[i]):
            indent = len(lines[i]) - len(lines[i].lstrip())
            i += 1
            while i < len(lines) and (not lines[i].strip() or lines[i].lstrip().startswith(":")):
                i += 1  # blank lines and directive options
            body = []
            while i < len(lines) and (not lines[i].strip() or len(lines[i]) - len(lines[i].lstrip()) > indent):
                body.append(lines[i])
                i += 1
            text = "\n".join(body).rstrip()
            margin = min(len(l) - len(l.lstrip()) for l in text.splitlines() if l.strip())
            blocks.append("\n".join(l[margin:] for l in text.splitlines()))
        else:
            i += 1
    return blocks


def _env(**extra) -> dict:
    env = dict(os.environ)
    env.update({"MPLBACKEND": "Agg", "OMP_NUM_THREADS": "1"})
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH", "")]))
    env.update(extra)
    return env


def test_there_are_tutorials():
    names = [p.name for p in TUTORIALS]
    assert "plot_quickstart.py" in names, names
    assert (DOCS / "tutorials" / "README.txt").is_file()


@pytest.mark.timeout(HANG_S + 60)
@pytest.mark.parametrize("script", TUTORIALS, ids=[p.stem for p in TUTORIALS])
def test_tutorial_runs_in_fast_mode(script, tmp_path):
    proc = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, env=_env(BIOFA_FAST="1"),
        capture_output=True, text=True, timeout=HANG_S,
    )
    assert proc.returncode == 0, f"{script.name} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"


PAGES_WITH_CODE = [p for p in PAGES if python_blocks(p)]

# Runs each page's blocks as one script, every page in a fresh namespace with torch's defaults
# restored, all in one interpreter (one torch import instead of one per page).
RUNNER = """
import runpy, sys, torch
for path in sys.argv[1:]:
    torch.set_default_dtype(torch.float32)
    torch.manual_seed(0)
    runpy.run_path(path, run_name="__main__")
    print("PAGE OK", path, flush=True)
"""


@pytest.mark.timeout(HANG_S + 60)
def test_guide_code_runs(tmp_path):
    """Every ``code-block:: python`` of every page, run in order: the examples stay true."""
    scripts = []
    for page in PAGES_WITH_CODE:
        script = tmp_path / (str(page.relative_to(DOCS)).replace("/", "__").replace(".rst", "_rst.py"))
        script.write_text("\n\n".join(python_blocks(page)) + "\n", encoding="utf-8")
        scripts.append(str(script))
    proc = subprocess.run([sys.executable, "-c", RUNNER, *scripts], cwd=tmp_path, env=_env(BIOFA_FAST="1"),
                          capture_output=True, text=True, timeout=HANG_S)
    done = [line.split()[-1] for line in proc.stdout.splitlines() if line.startswith("PAGE OK")]
    failed = next((Path(s).name for s in scripts if s not in done), None)
    assert proc.returncode == 0, f"code of {failed} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    assert done == scripts


def test_code_extraction_finds_the_guides():
    assert any(p.name == "feedback.rst" for p in PAGES_WITH_CODE)


@pytest.mark.parametrize("script", TUTORIALS, ids=[p.stem for p in TUTORIALS])
def test_tutorial_is_a_gallery_script(script):
    """sphinx-gallery needs a title docstring first; STYLE habit 14 wants it to cite its paper."""
    text = script.read_text(encoding="utf-8")
    assert text.startswith('"""'), f"{script.name}: the file must start with its title docstring"
    doc = text.split('"""')[1]
    lines = [line for line in doc.strip().splitlines()]
    assert len(lines) >= 2 and set(lines[1]) == {"="}, f"{script.name}: title must be underlined with '='"
    assert "# %%" in text, f"{script.name}: split the script into '# %%' cells"
    assert "BIOFA_FAST" in text, f"{script.name}: read BIOFA_FAST to shrink its work in the tests"
    assert any(year in doc for year in ("19", "20")), f"{script.name}: cite the paper in the docstring"


@pytest.mark.slow
@pytest.mark.timeout(2 * HANG_S)
def test_sphinx_build_has_no_warnings(tmp_path):
    pytest.importorskip("sphinx")
    pytest.importorskip("sphinx_gallery")
    # Build from a copy: generated pages (gallery, autosummary) land beside the sources, and stale
    # ones from an earlier build must not hide or cause warnings.
    source = tmp_path / "docs"
    shutil.copytree(DOCS, source, ignore=shutil.ignore_patterns("_build", "auto_tutorials", "gen_modules"))
    for folder in ("circuits", "experiments"):  # the guides include the packaged specs
        shutil.copytree(ROOT / folder, tmp_path / folder)
    proc = subprocess.run(
        [sys.executable, "-m", "sphinx", "-b", "html", "-W", "--keep-going", "-q",
         "-d", str(tmp_path / "doctrees"), str(source), str(tmp_path / "html")],
        cwd=ROOT, env=_env(BIOFA_FAST="1"), capture_output=True, text=True, timeout=2 * HANG_S - 60,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    assert (tmp_path / "html" / "index.html").is_file()
    assert (tmp_path / "html" / "auto_tutorials" / "plot_quickstart.html").is_file()
    for page in ("guide/feedback.html", "guide/analysis.html"):
        assert_offline_math(tmp_path / "html", page)


# -- math renders offline ------------------------------------------------------------------------
MATHJAX_JS = "_static/mathjax/tex-chtml.js"


def assert_offline_math(html: Path, page: str):
    """The page has math, loads MathJax from the built site (no CDN), and the site has MathJax's
    script and the fonts of its HTML output."""
    text = (html / page).read_text(encoding="utf-8")
    assert re.search(r'class="math[^"]*"', text) and "\\(" in text, f"{page}: no math on the page"
    sources = re.findall(r'<(?:script|link)\b[^>]*?(?:src|href)="([^"]+)"', text)
    remote = [s for s in sources if re.match(r"(?:[a-z]+:)?//", s)]
    assert not remote, f"{page} loads {remote} from the network"
    depth = page.count("/")
    assert ("../" * depth + MATHJAX_JS) in sources, f"{page}: MathJax is not loaded from _static"
    assert "cdn.jsdelivr" not in text and "mathjax@" not in text
    assert (html / MATHJAX_JS).is_file()
    assert any((html / "_static/mathjax/output/chtml/fonts").rglob("*.woff"))


def test_math_renders_offline(tmp_path):
    """docs/conf.py's math settings (extensions, MathJax config) on a one-page site: equations are
    typeset by the MathJax copied into _static, never fetched from a CDN."""
    pytest.importorskip("sphinx")
    import runpy

    conf = runpy.run_path(str(DOCS / "conf.py"))
    source = tmp_path / "src"
    source.mkdir()
    math_ext = [e for e in conf["extensions"] if "math" in e]
    (source / "conf.py").write_text(f"extensions = {math_ext!r}\n"
                                    f"mathjax3_config = {conf['mathjax3_config']!r}\n", encoding="utf-8")
    (source / "index.rst").write_text("Math\n====\n\nInline :math:`W \\in \\R^{m \\times n}`.\n\n"
                                      ".. math:: \\delta_l = (B_{l+1} \\delta_{l+1}) \\odot f'(a_l)\n",
                                      encoding="utf-8")
    proc = subprocess.run([sys.executable, "-m", "sphinx", "-b", "html", "-W", "-q", str(source),
                           str(tmp_path / "html")], env=_env(), capture_output=True, text=True, timeout=HANG_S)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert_offline_math(tmp_path / "html", "index.html")


def test_compact_parameter_lines_become_numpydoc_descriptions():
    sys.path.insert(0, str(DOCS / "sphinxext"))
    try:
        from biofa_docstrings import split_compact_fields
    finally:
        sys.path.remove(str(DOCS / "sphinxext"))
    lines = [
        "Summary.", "", "Parameters", "----------",
        "feedback : rule name (``\"bp\"``, ``\"fa\"``,",
        "    or a table. Default ``\"fa\"``.",
        "size : int > 0",
        "    Number of neurons.",
        "a, b : as :class:`torch.nn.Linear`; W has shape (out, in).",
        "", "Returns", "-------",
        "out : this long line is in Returns and must be left exactly as it is, untouched.",
    ]
    assert split_compact_fields(lines) == [
        "Summary.", "", "Parameters", "----------",
        "feedback", "    rule name (``\"bp\"``, ``\"fa\"``,",
        "    or a table. Default ``\"fa\"``.",
        "size : int > 0",
        "    Number of neurons.",
        "a, b", "    as :class:`torch.nn.Linear`; W has shape (out, in).",
        "", "Returns", "-------",
        "out : this long line is in Returns and must be left exactly as it is, untouched.",
    ]
