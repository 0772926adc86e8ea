"""labkit.notebook: the lessons' set-up, and which systemd a notebook drives."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from labkit import notebook
from labkit.systemd import manager

UNAVAILABLE = os.environ.get("LABKIT_SYSTEMD_UNAVAILABLE")


@pytest.fixture
def clean_env(monkeypatch):
    """use_systemd() sets variables for the kernel's `!` cells: give them back after each test."""
    for name in ("XDG_RUNTIME_DIR", "XDG_CONFIG_HOME", "SYSTEMD_PAGER", "SYSTEMD_URLIFY", "DBUS_SESSION_BUS_ADDRESS"):
        monkeypatch.setenv(name, os.environ.get(name, "")) if name in os.environ else monkeypatch.delenv(name, raising=False)
    return monkeypatch


@pytest.mark.skipif(bool(UNAVAILABLE), reason=f"no systemd user manager here: {UNAVAILABLE}")
def test_use_systemd_points_the_kernels_systemctl_at_the_running_manager(clean_env, tmp_path):
    here = notebook.use_systemd(tmp_path, start=False)
    found = manager.find()
    assert here.real and here.manager == found and not here.started_here
    assert os.environ["XDG_RUNTIME_DIR"] == found.runtime_dir and here.unit_dir == found.unit_dir
    # what a `!systemctl --user ...` cell runs: this process's environment, nothing passed by hand
    unit = here.unit_dir / "labkit-test-notebook.service"
    unit.write_text("[Service]\nType=oneshot\nExecStart=/bin/true\n[Install]\nWantedBy=default.target\n")
    try:
        assert subprocess.run(["systemctl", "--user", "daemon-reload"], timeout=30).returncode == 0
        enabled = subprocess.run(["systemctl", "--user", "enable", unit.name], capture_output=True, text=True,
                                 timeout=30)
        assert enabled.returncode == 0, enabled.stderr
        state = subprocess.run(["systemctl", "--user", "is-enabled", unit.name], capture_output=True, text=True,
                               timeout=30)
        assert state.stdout.strip() == "enabled"
    finally:
        subprocess.run(["systemctl", "--user", "disable", unit.name], capture_output=True, timeout=30)
        unit.unlink()
        subprocess.run(["systemctl", "--user", "daemon-reload"], timeout=30)


def test_without_a_manager_use_systemd_says_why_and_gives_a_folder_for_the_runner(clean_env, tmp_path, capsys):
    clean_env.setenv("LABKIT_SYSTEMD_UNAVAILABLE", "no systemd here (a test)")
    here = notebook.use_systemd(tmp_path)
    assert not here.real and here.why_not == "no systemd here (a test)" and here.manager is None
    assert here.unit_dir == tmp_path / "units" and here.unit_dir.is_dir()
    here.fallback("running the unit with labkit's runner")
    assert capsys.readouterr().out.strip() == ("no systemd manager here (no systemd here (a test)): "
                                               "running the unit with labkit's runner")


# -- where a lesson's runs go ----------------------------------------------------------------------

@pytest.fixture
def lesson_env(monkeypatch, tmp_path):
    """A private LABKIT_HOME; setup() edits PATH and thread variables: given back after each test."""
    for name in ("PATH", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.setenv(name, os.environ.get(name, "")) if name in os.environ else monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("LABKIT_HOME", str(tmp_path / "home"))
    return monkeypatch


def test_setup_puts_runs_under_labkit_home_one_folder_per_notebook_folder(lesson_env, tmp_path, capsys):
    """nbgrader's generate_assignment copies what is beside the notebooks to students, and
    generate_feedback copies it into feedback: no run, script or unit may land there."""
    notebooks, other = tmp_path / "course" / "notebooks", tmp_path / "clone" / "notebooks"
    for folder in (notebooks, other):
        folder.mkdir(parents=True)
    lesson_env.chdir(notebooks)
    runs = notebook.setup()
    assert runs.is_dir() and runs.parent == tmp_path / "home" / "runs" and runs.name.startswith("notebooks-")
    assert list(notebooks.iterdir()) == [], "nothing is written beside the notebook"
    assert capsys.readouterr().out.strip().endswith(f"ready; runs go to {runs}/")
    assert notebook.setup() == runs == notebook.runs_folder(notebooks) == notebook.runs_folder()
    # another folder of the same name (a second clone, each student's autograded/NAME/ps1): its own runs
    assert notebook.runs_folder(other) != runs and notebook.runs_folder(other).name.startswith("notebooks-")
    # from the lessons, the exercises' runs are found by the exercises' folder
    lesson_env.chdir(other)
    assert notebook.runs_folder("../../course/notebooks") == runs


def test_setup_still_takes_an_explicit_runs_folder(lesson_env, tmp_path, capsys):
    lesson_env.chdir(tmp_path)
    assert notebook.setup("mine") == Path("mine") and (tmp_path / "mine").is_dir()
    assert "runs go to mine/" in capsys.readouterr().out


def test_without_a_manager_the_units_folder_is_in_the_runs_folder(clean_env, lesson_env, tmp_path):
    clean_env.setenv("LABKIT_SYSTEMD_UNAVAILABLE", "no systemd here (a test)")
    lesson_env.chdir(tmp_path)
    assert notebook.use_systemd().unit_dir == notebook.runs_folder() / "units"
    assert list(tmp_path.iterdir()) == [tmp_path / "home"]


def test_a_graded_submissions_runs_stay_in_its_own_sandbox(tmp_path):
    """labkit grade gives each submission its own HOME and LABKIT_HOME: its runs land there and
    vanish with it, never in the grader's LABKIT_HOME nor beside the submission."""
    import nbformat

    from labkit.course.grade import grade

    def notebook_with(answer: str) -> nbformat.NotebookNode:
        def meta(grade_id, **flags):
            return {"nbgrader": {"grade_id": grade_id, "schema_version": 3, "grade": False, "solution": False,
                                 "locked": False, **flags}}

        nb = nbformat.v4.new_notebook(metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                               "language": "python"}})
        nb.cells = [
            nbformat.v4.new_code_cell("import os\nfrom pathlib import Path\nfrom labkit.notebook import setup\n"
                                      "RUNS = setup()", metadata=meta("setup", locked=True), id="setup"),
            nbformat.v4.new_code_cell(answer, metadata=meta("answer", solution=True), id="answer"),
            nbformat.v4.new_code_cell(
                "assert RUNS.is_relative_to(Path(os.environ['LABKIT_HOME'])), RUNS\n"
                "assert RUNS.is_relative_to(Path(os.environ['HOME'])), (RUNS, os.environ['HOME'])\n"
                "assert (RUNS / 'note.txt').read_text() == 'hello', sorted(os.listdir(RUNS))\n"
                "assert not Path('runs').exists()",
                metadata=meta("runs_inside", grade=True, locked=True, points=1), id="runs_inside"),
        ]
        return nb

    solutions, submitted = tmp_path / "solutions", tmp_path / "submitted" / "alice"
    solutions.mkdir()
    submitted.mkdir(parents=True)
    right = "(RUNS / 'note.txt').write_text('hello')"
    nbformat.write(notebook_with(f"### BEGIN SOLUTION\n{right}\n### END SOLUTION"), solutions / "90_runs.ipynb")
    nbformat.write(notebook_with(right), submitted / "90_runs.ipynb")
    grader_home = Path(os.environ["LABKIT_HOME"])
    before = set((grader_home / "runs").glob("*")) if (grader_home / "runs").is_dir() else set()
    [result] = grade([submitted / "90_runs.ipynb"], tmp_path / "out", solutions_dir=solutions)
    assert (result.score, result.max_score, result.status) == (1, 1, "ok"), result
    assert sorted(path.name for path in submitted.iterdir()) == ["90_runs.ipynb"]
    after = set((grader_home / "runs").glob("*")) if (grader_home / "runs").is_dir() else set()
    assert after == before, "the submission wrote runs into the grader's own LABKIT_HOME"
