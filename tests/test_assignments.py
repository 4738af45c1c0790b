"""Student releases and autograding: stubs fail exactly their tests, solutions get full points, a wrong one loses
only its exercise."""

import json

import nbformat
import pytest

from diamond_lite import assignments

NB = assignments.NOTEBOOKS / "06_actor_critic_in_imagination.ipynb"


def grade(path, tmp_path):
    """Grade in a folder of the test's own, so its ../runs is not the one nbval's run of the same notebook uses."""
    return assignments.grade_notebook(path, workdir=tmp_path / "work" / "notebooks")


def solution_cell(nb, grade_id):
    return next(c for c in nb.cells if assignments.is_solution(c) and assignments.nbgrader_meta(c)["grade_id"] == grade_id)


def test_every_graded_notebook_has_well_formed_exercises():
    paths = assignments.graded_notebooks()
    assert {p.name for p in paths} >= {"05_reward_termination_model.ipynb", "06_actor_critic_in_imagination.ipynb"}
    for path in paths:
        nb = nbformat.read(path, as_version=4)
        ids = [assignments.nbgrader_meta(c)["grade_id"] for c in nb.cells if assignments.nbgrader_meta(c)]
        assert len(ids) == len(set(ids)), f"{path.name}: grade ids must be unique"
        for cell in nb.cells:
            if assignments.is_solution(cell):
                assert cell.source.count(assignments.BEGIN_SOLUTION) == cell.source.count(assignments.END_SOLUTION) >= 1


def test_release_stubs_solutions_and_removes_hidden_tests(tmp_path):
    [path] = assignments.release([NB], tmp_path)
    released = nbformat.read(path, as_version=4)
    text = "\n".join(c.source for c in released.cells)
    for marker in (assignments.BEGIN_SOLUTION, assignments.END_SOLUTION, assignments.BEGIN_HIDDEN, "lam * following"):
        assert marker not in text
    cell = solution_cell(released, "lambda_returns")
    assert cell.source.startswith("def lambda_returns_by_hand(") and "    raise NotImplementedError()" in cell.source
    assert all(c.get("outputs", []) == [] for c in released.cells if c.cell_type == "code")
    assert "diamond_lite" not in released.metadata


def test_released_notebook_fails_exactly_its_exercise_tests(tmp_path):
    [path] = assignments.release([NB], tmp_path)
    report = grade(path, tmp_path)
    assert report["score"] == 0 and report["max_score"] == 4 and len(report["exercises"]) == 2
    assert all("NotImplementedError" in r["error"] for r in report["exercises"])
    assert report["other_errors"] == []  # everything else in the notebook still runs


def test_solutions_get_full_points_and_a_sign_flip_loses_only_its_exercise(tmp_path):
    report = grade(NB, tmp_path)
    assert report["score"] == report["max_score"] == 4 and report["other_errors"] == []
    nb = nbformat.read(NB, as_version=4)
    cell = solution_cell(nb, "lambda_returns")
    assert "returns[t] = np.sign(rew[t]) + gamma" in cell.source
    cell.source = cell.source.replace("returns[t] = np.sign(rew[t]) + gamma", "returns[t] = np.sign(rew[t]) - gamma")
    wrong = tmp_path / NB.name
    nbformat.write(nb, wrong)
    report = grade(wrong, tmp_path)
    points = {r["grade_id"]: r["points"] for r in report["exercises"]}
    assert points == {"lambda_returns_tests": 0, "actor_critic_loss_tests": 2}


def test_a_weakened_test_cell_is_replaced_by_the_courses(tmp_path, capsys):
    [path] = assignments.release([NB], tmp_path / "release")
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if assignments.is_test(cell):
            cell.source = "pass"  # a student deletes the asserts
    nbformat.write(nb, path)
    out = tmp_path / "grades.json"
    assert assignments.main(["grade", str(path), "--json", str(out), "--workdir", str(tmp_path / "work" / "notebooks")]) == 0
    assert json.loads(out.read_text())[0]["score"] == 0
    assert "0/4" in capsys.readouterr().out
    with pytest.raises(ValueError, match="no course notebook"):
        assignments.grade_notebook(tmp_path / "unknown.ipynb")


EXERCISES = {  # notebook: its exercises' test cells and their points
    "01_edm_preconditioning.ipynb": {"precondition_tests": 2},
    "02_frame_stacked_unet.ipynb": {"ada_group_norm_tests": 2, "unet_forward_tests": 2},
    "03_sampling_the_world_model.ipynb": {"karras_schedule_tests": 2, "euler_step_tests": 2},
    "05_reward_termination_model.ipynb": {"reward_end_loss_tests": 2},
}


@pytest.mark.parametrize("name", sorted(EXERCISES))
def test_each_graded_notebook_released_scores_zero_and_solved_scores_full(tmp_path, name):
    expected = EXERCISES[name]
    [released] = assignments.release([assignments.NOTEBOOKS / name], tmp_path)
    report = grade(released, tmp_path)
    assert {r["grade_id"]: r["points"] for r in report["exercises"]} == dict.fromkeys(expected, 0)
    assert all("NotImplementedError" in r["error"] for r in report["exercises"]), report["exercises"]
    assert report["other_errors"] == [] and report["max_score"] == sum(expected.values())
    solved = grade(assignments.NOTEBOOKS / name, tmp_path)
    assert {r["grade_id"]: r["points"] for r in solved["exercises"]} == expected and solved["other_errors"] == []
