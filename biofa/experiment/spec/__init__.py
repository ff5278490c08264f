"""What a study is: its spec file read once, every key checked once, its runs listed.

Modules, in the order a spec flows through them:

- :mod:`.loader` finds the file (a path or a packaged name) and reads the TOML, once;
- :mod:`.paths` is the one alias table (``lr`` → ``train.optimizer.lr``), the dotted key paths
  and the ``[quick]`` / ``--set`` overrides, read the same way for every study kind;
- :mod:`.values` holds the checks of single values, :mod:`.schema` the grid study's tables;
- :mod:`.grid` validates a grid study into a :class:`Spec`, with :mod:`.search` (``[search]``,
  ``[compare]``) and :mod:`.published` (``[published]``);
- :mod:`.expand` turns a :class:`Spec` into its runs, each with a stable id.

Another kind of study (e.g. :mod:`biofa.experiment.conservation`) validates its own tables with
the same values, paths and overrides, and registers in :mod:`biofa.experiment.kinds`.
"""

from __future__ import annotations

from .expand import config_hash, expand, label, value_text
from .grid import KIND, Spec, from_dict, load
from .loader import read_tree, resolve_path
from .paths import ALIASES, canonical, display, flatten, get_path, parse_value, set_path, tomllib
from .schema import EXECUTION_KEYS, NONE_WORDS, SCHEMA, without_execution_keys

__all__ = ["Spec", "load", "from_dict", "expand", "label", "value_text", "config_hash", "read_tree",
           "resolve_path", "ALIASES", "canonical", "display", "flatten", "get_path", "set_path",
           "parse_value", "SCHEMA", "EXECUTION_KEYS", "NONE_WORDS", "without_execution_keys", "KIND",
           "tomllib"]
