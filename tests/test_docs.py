"""The examples in the docstrings run and print what they show.

README's Python blocks name files the reader brings (``config.yaml``, ``train.csv``), so they
are not run here; the docstring examples are self-contained.
"""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import plait

# ``plait.__main__`` runs the command line when imported.
MODULES = sorted(name for _, name, _ in pkgutil.walk_packages(plait.__path__, "plait.")
                 if name != "plait.__main__")


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name: str) -> None:
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE,
                             verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples in {name} failed (see output)"


def test_the_package_documents_itself_with_examples() -> None:
    finder = doctest.DocTestFinder()
    examples = {name: sum(len(test.examples) for test in finder.find(importlib.import_module(name)))
                for name in MODULES}
    assert examples["plait.model"] > 0 and examples["plait.merges"] > 0
    assert sum(examples.values()) >= 30
