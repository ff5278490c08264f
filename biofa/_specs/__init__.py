"""Packaged spec files: ``circuits/`` and ``experiments/`` from the source tree (see pyproject)."""
