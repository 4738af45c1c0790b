"""Classroom assignments from the course notebooks: student releases and autograding.

    python -m diamond_lite.assignments release [--out release/] [NOTEBOOK ...]
    python -m diamond_lite.assignments grade STUDENT_NOTEBOOK ... [--json grades.json]

The exercises are marked the way nbgrader marks them, so an instructor can also use nbgrader itself:

* a **solution cell** (cell metadata ``nbgrader.solution = true``) holds the reference code between
  ``### BEGIN SOLUTION`` and ``### END SOLUTION``;
* a **test cell** (``nbgrader.grade = true``, ``nbgrader.points``) checks it with asserts against the package and
  against properties; lines between ``### BEGIN HIDDEN TESTS`` and ``### END HIDDEN TESTS`` are hidden tests.

``release`` writes student notebooks: every solution region becomes ``raise NotImplementedError()`` (keeping the
function's signature and docstring above it), hidden tests are removed, and outputs are cleared. ``grade`` runs a
student's notebook in the ``smoke`` profile with the hidden tests put back (taken from the course notebook of the
same name), cell by cell without stopping at errors, and gives each test cell its points if it ran cleanly.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import re
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
BEGIN_SOLUTION, END_SOLUTION = "### BEGIN SOLUTION", "### END SOLUTION"
BEGIN_HIDDEN, END_HIDDEN = "### BEGIN HIDDEN TESTS", "### END HIDDEN TESTS"
STUB = "raise NotImplementedError()"


def nbgrader_meta(cell) -> dict:
    return cell.get("metadata", {}).get("nbgrader", {})


def is_solution(cell) -> bool:
    return cell.cell_type == "code" and nbgrader_meta(cell).get("solution", False)


def is_test(cell) -> bool:
    return cell.cell_type == "code" and nbgrader_meta(cell).get("grade", False)


def exercises(nb) -> list[dict]:
    """The graded test cells of a notebook: their id and points."""
    return [{"grade_id": nbgrader_meta(c)["grade_id"], "points": nbgrader_meta(c).get("points", 1)} for c in nb.cells if is_test(c)]


def strip_solution(source: str) -> str:
    """Replace every solution region by a stub that raises, at the region's indentation."""
    out, inside = [], False
    for line in source.splitlines():
        stripped = line.strip()
        if stripped == BEGIN_SOLUTION:
            inside = True
            indent = line[: len(line) - len(line.lstrip())]
            out += [f"{indent}# YOUR CODE HERE", f"{indent}{STUB}"]
        elif stripped == END_SOLUTION:
            inside = False
        elif not inside:
            out.append(line)
    if inside:
        raise ValueError("a solution region is not closed with ### END SOLUTION")
    return "\n".join(out)


def strip_hidden(source: str) -> str:
    return re.sub(rf"[ \t]*{BEGIN_HIDDEN}.*?{END_HIDDEN}[ \t]*\n?", "", source, flags=re.S).rstrip()


def release_notebook(nb) -> nbformat.NotebookNode:
    """The student version of a course notebook (module docstring)."""
    nb = copy.deepcopy(nb)
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        if is_solution(cell):
            cell.source = strip_solution(cell.source)
        if is_test(cell):
            cell.source = strip_hidden(cell.source)
        cell.outputs, cell.execution_count = [], None
    nb.metadata.pop("diamond_lite", None)
    return nb


def graded_notebooks() -> list[Path]:
    return [p for p in sorted(NOTEBOOKS.glob("*.ipynb")) if exercises(nbformat.read(p, as_version=4))]


def release(paths: list[Path], out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for path in paths:
        target = out / path.name
        nbformat.write(release_notebook(nbformat.read(path, as_version=4)), target)
        written.append(target)
    return written


def with_hidden_tests(student, reference) -> nbformat.NotebookNode:
    """The student's notebook with each test cell replaced by the course's full one (hidden tests included):
    a student can not weaken a test by editing it."""
    tests = {nbgrader_meta(c)["grade_id"]: c.source for c in reference.cells if is_test(c)}
    nb = copy.deepcopy(student)
    for cell in nb.cells:
        if is_test(cell) and nbgrader_meta(cell)["grade_id"] in tests:
            cell.source = tests[nbgrader_meta(cell)["grade_id"]]
    return nb


def grade_notebook(path: Path, *, reference_dir: Path = NOTEBOOKS, workdir: Path | None = None, timeout: int = 600) -> dict:
    """Execute ``path`` in the smoke profile and score its test cells (module docstring).

    The notebook runs in ``workdir`` (default ``reference_dir``), so what it writes lands in ``workdir/../runs`` as
    when a student runs it; the tests give each grading its own folder, since two notebooks that share ``runs/``
    must not run at once."""
    from nbclient import NotebookClient

    reference_path = reference_dir / Path(path).name
    if not reference_path.exists():
        raise ValueError(f"{path} has no course notebook of the same name in {reference_dir}")
    student = nbformat.read(path, as_version=4)
    nb = with_hidden_tests(student, nbformat.read(reference_path, as_version=4))
    old = os.environ.get("DIAMOND_PROFILE")
    if workdir is not None:
        Path(workdir).mkdir(parents=True, exist_ok=True)
    os.environ["DIAMOND_PROFILE"] = "smoke"
    try:
        client = NotebookClient(nb, timeout=timeout, allow_errors=True,
                                resources={"metadata": {"path": str(workdir or reference_dir)}})  # fmt: skip
        client.execute()
    finally:
        if old is None:
            os.environ.pop("DIAMOND_PROFILE", None)
        else:
            os.environ["DIAMOND_PROFILE"] = old
    results, other_errors = [], []
    for index, cell in enumerate(nb.cells):
        if cell.cell_type == "code" and not is_test(cell):
            other_errors += [f"cell {index}: {o['ename']}: {o['evalue']}" for o in cell.get("outputs", []) if o.get("output_type") == "error"]
        if not is_test(cell):
            continue
        meta = nbgrader_meta(cell)
        errors = [o for o in cell.get("outputs", []) if o.get("output_type") == "error"]
        passed = not errors and cell.get("execution_count") is not None
        results.append({"grade_id": meta["grade_id"], "points": meta.get("points", 1) if passed else 0,
                        "max_points": meta.get("points", 1), "passed": passed,
                        "error": f"{errors[0]['ename']}: {errors[0]['evalue']}" if errors else None})  # fmt: skip
    return {"notebook": str(path), "exercises": results, "score": sum(r["points"] for r in results),
            "max_score": sum(r["max_points"] for r in results), "other_errors": other_errors}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    rel = sub.add_parser("release", help="write student notebooks")
    rel.add_argument("notebooks", nargs="*", type=Path, help="course notebooks (default: every one with exercises)")
    rel.add_argument("--out", type=Path, default=ROOT / "release")
    gra = sub.add_parser("grade", help="execute and score student notebooks")
    gra.add_argument("notebooks", nargs="+", type=Path)
    gra.add_argument("--json", type=Path, default=None, help="write the report here, for a gradebook")
    gra.add_argument("--workdir", type=Path, default=None,
                     help="run the notebooks in this folder (their data goes to its ../runs); default notebooks/")
    args = parser.parse_args(argv)
    try:
        if args.command == "release":
            for path in release(args.notebooks or graded_notebooks(), args.out):
                print(f"wrote {path}")
            return 0
        reports = [grade_notebook(p, workdir=args.workdir) for p in args.notebooks]
    except (ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for report in reports:
        print(f"{report['notebook']}: {report['score']}/{report['max_score']}")
        for r in report["exercises"]:
            print(f"  {r['grade_id']:32} {r['points']}/{r['max_points']}" + (f"   {r['error']}" if r["error"] else ""))
    if args.json:
        args.json.write_text(json.dumps(reports, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
