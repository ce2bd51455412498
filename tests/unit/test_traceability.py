"""tools/traceability.py on small synthetic trees (tmp_path)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

TOOL = Path(__file__).resolve().parent.parent.parent / "tools" / "traceability.py"


def _load():
    spec = importlib.util.spec_from_file_location("traceability_tool", TOOL)
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


tr = _load()

REQUIREMENTS = """\
# Requirements

## A
- A-1 The first requirement, which is short.
- A-2 The second requirement has a long text that goes on and on over more than one line of
  the file, so that the table must shorten it before it fits in a cell.
- A-3 Nobody tests this one.

## B — other
- B-10 A later one with `backticks` and *stars*.
Not a requirement line.
"""

TEST_A = """\
import pytest

pytestmark = pytest.mark.req("B-10")


@pytest.mark.req("A-1", "A-2")
def test_one():
    assert True


def test_only_module_mark():
    assert True


def helper_not_a_test():
    pass


@pytest.mark.req("A-2")
class TestGroup:
    @pytest.mark.req("A-1")
    def test_in_class(self):
        assert True

    def helper(self):
        pass
"""

TEST_B = """\
from pytest import mark


@mark.req("A-1")
async def test_async():
    assert True


@mark.parametrize("x", [1])
@mark.req("ZZ-9")
def test_unknown_id(x):
    assert x
"""

README = """\
Title
=====

Intro.

.. traceability-start

old table

.. traceability-end

After.
"""


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    (tmp_path / "REQUIREMENTS.md").write_text(REQUIREMENTS)
    tests = tmp_path / "repo" / "tests"
    (tests / "unit").mkdir(parents=True)
    (tests / "unit" / "test_a.py").write_text(TEST_A)
    (tests / "integration").mkdir()
    (tests / "integration" / "test_b.py").write_text(TEST_B)
    (tests / "unit" / "conftest.py").write_text('import pytest\n@pytest.mark.req("A-3")\ndef test_x(): pass\n')
    (tmp_path / "repo" / "README.rst").write_text(README)
    return tmp_path


def test_reads_ids_and_joins_continuation_lines(tree: Path):
    reqs = tr.read_requirements(tree / "REQUIREMENTS.md")
    assert [r.id for r in reqs] == ["A-1", "A-2", "A-3", "B-10"]
    assert reqs[1].text.endswith("before it fits in a cell.")
    assert "over more than one line of the file" in reqs[1].text
    assert len(reqs[1].short) <= tr.SHORT_TEXT and reqs[1].short.endswith("…")
    assert reqs[0].short == "The first requirement, which is short."


def test_duplicate_requirement_id_is_an_error(tmp_path: Path):
    path = tmp_path / "R.md"
    path.write_text("- A-1 one\n- A-1 again\n")
    with pytest.raises(ValueError, match="A-1"):
        tr.read_requirements(path)


def test_scans_functions_classes_and_module_pytestmark(tree: Path):
    marks = tr.scan_tests(tree / "repo" / "tests", tree / "repo")
    assert marks == {
        "tests/unit/test_a.py::test_one": ["B-10", "A-1", "A-2"],
        "tests/unit/test_a.py::test_only_module_mark": ["B-10"],
        "tests/unit/test_a.py::TestGroup::test_in_class": ["B-10", "A-2", "A-1"],
        "tests/integration/test_b.py::test_async": ["A-1"],
        "tests/integration/test_b.py::test_unknown_id": ["ZZ-9"],
    }


def test_coverage_and_unknown_ids(tree: Path):
    reqs = tr.read_requirements(tree / "REQUIREMENTS.md")
    marks = tr.scan_tests(tree / "repo" / "tests", tree / "repo")
    table = tr.coverage(reqs, marks)
    assert table["A-1"] == [
        "tests/integration/test_b.py::test_async",
        "tests/unit/test_a.py::TestGroup::test_in_class",
        "tests/unit/test_a.py::test_one",
    ]
    assert table["A-3"] == []
    assert tr.unknown_ids(reqs, marks) == {"ZZ-9": ["tests/integration/test_b.py::test_unknown_id"]}
    text = tr.summary(reqs, marks)
    assert text.splitlines()[0] == "3 of 4 requirements covered by marked tests."
    assert "A-3" in text and "not covered" in text and "unknown requirement ZZ-9" in text


def test_write_then_check_via_the_command_line(tree: Path):
    repo = tree / "repo"
    readme = repo / "README.rst"
    cmd = [sys.executable, str(TOOL), "--requirements", str(tree / "REQUIREMENTS.md"),
           "--tests", str(repo / "tests")]
    stale = subprocess.run([*cmd, "--check", str(readme)], capture_output=True, text=True)
    assert stale.returncode == 1
    assert "stale" in stale.stderr

    wrote = subprocess.run([*cmd, "--write", str(readme)], capture_output=True, text=True)
    assert wrote.returncode == 0, wrote.stderr
    text = readme.read_text()
    assert text.startswith("Title\n=====\n\nIntro.\n\n.. traceability-start\n\n.. list-table::")
    assert text.endswith(".. traceability-end\n\nAfter.\n")
    assert "old table" not in text
    assert "(3 of 4 covered)" in text
    assert "   * - A-3\n     - Nobody tests this one.\n     - (none yet)\n" in text
    assert ("   * - A-1\n     - The first requirement, which is short.\n"
            "     - ``tests/integration/test_b.py::test_async``\n\n"
            "       ``tests/unit/test_a.py::TestGroup::test_in_class``\n\n"
            "       ``tests/unit/test_a.py::test_one``\n") in text
    assert "\\`backticks\\` and \\*stars\\*" in text

    fresh = subprocess.run([*cmd, "--check", str(readme)], capture_output=True, text=True)
    assert fresh.returncode == 0, fresh.stderr
    # Writing again changes nothing.
    assert subprocess.run([*cmd, "--write", str(readme)], capture_output=True).returncode == 0
    assert readme.read_text() == text

    # A new marked test makes the table stale again.
    (repo / "tests" / "unit" / "test_c.py").write_text(
        'import pytest\n\n@pytest.mark.req("A-3")\ndef test_three():\n    assert True\n')
    again = subprocess.run([*cmd, "--check", str(readme)], capture_output=True, text=True)
    assert again.returncode == 1


def test_missing_markers_is_an_error(tree: Path):
    readme = tree / "repo" / "README.rst"
    readme.write_text("No markers here.\n")
    code = tr.main(["--requirements", str(tree / "REQUIREMENTS.md"),
                    "--tests", str(tree / "repo" / "tests"), "--check", str(readme)])
    assert code == 2
    with pytest.raises(ValueError, match="markers"):
        tr.splice("text", "table")


def test_default_requirements_path_is_beside_the_repository():
    assert tr.DEFAULT_REQUIREMENTS == TOOL.parent.parent.parent / "shared" / "spec" / "REQUIREMENTS.md"


def test_readme_table_is_current():
    """The README traceability table matches the req marks of this suite (regenerate with --write)."""
    repo = Path(__file__).resolve().parents[2]
    requirements = repo.parent / "shared" / "spec" / "REQUIREMENTS.md"
    if not requirements.exists():
        pytest.skip("the requirements list is kept beside the repository, not in it")
    done = subprocess.run(
        [sys.executable, str(repo / "tools" / "traceability.py"), "--requirements", str(requirements),
         "--check", str(repo / "README.rst")],
        capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
