"""Sphinx configuration for the biofa documentation.

Build with ``make docs`` (``python -m sphinx -b html -W --keep-going docs docs/_build/html``).
The tutorials in ``docs/tutorials/plot_*.py`` are executed by sphinx-gallery; set
``BIOFA_FAST=1`` to run them in their fast mode (small data, few epochs), as the test suite does.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # document the checkout even without an editable install
sys.path.insert(0, str(Path(__file__).resolve().parent / "sphinxext"))

import biofa  # noqa: E402

os.environ.setdefault("MPLBACKEND", "Agg")

project = "biofa"
author = "the biofa developers"
copyright = "2026, the biofa developers"
release = biofa.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    # MathJax 3 from the sphinx-mathjax-offline wheel, copied into _static/mathjax: the pages render
    # their math without the network (sphinx.ext.mathjax alone loads it from a CDN)
    "sphinx-mathjax-offline",
    "sphinx.ext.viewcode",
    "sphinx_gallery.gen_gallery",
    "biofa_docstrings",  # sphinxext/: compact "name : description" parameter lines
]

exclude_patterns = ["_build", "Thumbs.db", ".DS_Store", "tutorials/README.txt"]
templates_path = ["_templates"]
nitpicky = False

# -- autodoc / autosummary / napoleon ------------------------------------------------------------
autosummary_generate = True
autosummary_imported_members = False
autosummary_ignore_module_all = False  # a package page lists exactly its __all__
autodoc_default_options = {
    "show-inheritance": True,
    "member-order": "bysource",
}
autodoc_typehints = "signature"
autodoc_inherit_docstrings = False  # torch.nn.Module's docstrings are not ours to render
autoclass_content = "class"
napoleon_google_docstring = False
napoleon_numpy_docstring = True
napoleon_use_rtype = False
napoleon_preprocess_types = False


# -- sphinx-gallery ----------------------------------------------------------------------------
FAST = os.environ.get("BIOFA_FAST", "0") not in ("", "0")

sphinx_gallery_conf = {
    "examples_dirs": "tutorials",
    "gallery_dirs": "auto_tutorials",
    "filename_pattern": r"/plot_",  # execute every plot_*.py
    "ignore_pattern": r"__init__\.py",
    "download_all_examples": False,
    "remove_config_comments": True,
    "within_subsection_order": "biofa_gallery.TutorialOrder",  # quickstart first
    "reset_modules": ("matplotlib", "biofa_gallery.reset_torch"),  # one process runs them all
    "matplotlib_animations": False,
    "image_scrapers": ("matplotlib",),
    "show_memory": False,
    "line_numbers": False,
    "min_reported_time": 1,
    "abort_on_example_error": True,
    "write_computation_times": False,
    "capture_repr": (),  # show what the scripts print, not the repr of a cell's last expression  # keep the source tree clean (timings print in the log)
}

# -- HTML --------------------------------------------------------------------------------------
html_theme = "alabaster"
html_title = f"biofa {release}"
html_theme_options = {
    "description": "Biologically constrained learning: Dale's law and separate feedback synapses",
    "fixed_sidebar": True,
    "page_width": "1100px",
    "sidebar_width": "240px",
}
html_static_path: list[str] = []
mathjax3_config = {"tex": {"macros": {"R": r"\mathbb{R}"}}}
