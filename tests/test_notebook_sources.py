"""The notebooks' sources: dev/notebooks/*.py, in jupytext's percent format, hold the same cells as notebooks/*.ipynb.

A notebook is edited as its source, then written with jupytext (dev/README.md); this keeps the two from drifting apart:
the same cells, in the same order, with the same text and the same nbgrader metadata for the graded exercises.
"""

from pathlib import Path

import jupytext
import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
SOURCES = sorted((ROOT / "dev" / "notebooks").glob("*.py"))


def cells(notebook) -> list[tuple]:
    return [(c.cell_type, c.source, c.metadata.get("nbgrader")) for c in notebook.cells]


def test_every_notebook_has_a_source():
    assert {p.stem for p in SOURCES} == {p.stem for p in (ROOT / "notebooks").glob("*.ipynb")}


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_a_source_and_its_notebook_hold_the_same_cells(source):
    notebook = nbformat.read(ROOT / "notebooks" / f"{source.stem}.ipynb", as_version=4)
    written = jupytext.read(source)
    assert written.metadata["jupytext"]["text_representation"]["format_name"] == "percent"
    assert cells(written) == cells(notebook), f"{source.name} and its notebook differ: write it again with jupytext"
    graded = [c for c in written.cells if "nbgrader" in c.metadata]
    assert all(c.metadata["nbgrader"]["schema_version"] == 3 for c in graded)
