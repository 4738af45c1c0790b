"""An instructor who prefers nbgrader runs its own generate_assignment and autograde on our notebooks as they are."""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat

from diamond_lite import assignments

NOTEBOOK = "05_reward_termination_model.ipynb"  # one exercise, quick in the smoke profile


def nbgrader(course: Path, *args: str) -> subprocess.CompletedProcess:
    bin_dir = str(Path(sys.executable).parent)  # nbgrader calls alembic from the same environment
    env = dict(os.environ, PATH=bin_dir + os.pathsep + os.environ.get("PATH", ""), DIAMOND_PROFILE="smoke", OMP_NUM_THREADS="1")
    result = subprocess.run([sys.executable, "-m", "nbgrader", *args], cwd=course, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def test_nbgrader_generates_and_autogrades_a_course_notebook(tmp_path):
    course = tmp_path / "course"
    (course / "source" / "ps1").mkdir(parents=True)
    shutil.copy(assignments.NOTEBOOKS / NOTEBOOK, course / "source" / "ps1" / NOTEBOOK)
    (course / "nbgrader_config.py").write_text(
        "c = get_config()\n"
        f"c.CourseDirectory.root = {str(course)!r}\n"
        "c.ClearSolutions.code_stub = {'python': 'raise NotImplementedError()'}\n"
    )
    nbgrader(course, "generate_assignment", "ps1", "--force")
    released = nbformat.read(course / "release" / "ps1" / NOTEBOOK, as_version=4)
    text = "\n".join(c.source for c in released.cells)
    assert assignments.BEGIN_SOLUTION not in text and assignments.BEGIN_HIDDEN not in text
    assert "raise NotImplementedError()" in text

    # two students: one hands back the stubs, one the solutions
    for student, source in (("stubs", course / "release" / "ps1" / NOTEBOOK), ("solved", course / "source" / "ps1" / NOTEBOOK)):
        (course / "submitted" / student / "ps1").mkdir(parents=True)
        shutil.copy(source, course / "submitted" / student / "ps1" / NOTEBOOK)
        nbgrader(course, "db", "student", "add", student)
    nbgrader(course, "autograde", "ps1", "--force")
    nbgrader(course, "export", "--to", str(course / "grades.csv"))
    rows = {row["student_id"]: row for row in csv.DictReader(open(course / "grades.csv"))}
    assert float(rows["solved"]["score"]) == float(rows["solved"]["max_score"]) == 2.0
    assert float(rows["stubs"]["score"]) == 0.0
