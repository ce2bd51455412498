"""Requirement traceability: which tests prove which requirement.

Reads the requirement IDs from a REQUIREMENTS file (lines ``- ID text``,
continuation lines indented) and finds, with :mod:`ast` (nothing is imported
or run), every ``pytest.mark.req("ID", ...)`` in the test tree: on test
functions, on test classes (it applies to their test methods) and in a
module's ``pytestmark``.

    python tools/traceability.py                    coverage summary
    python tools/traceability.py --write README.rst rewrite the table
    python tools/traceability.py --check README.rst exit 1 if the table is stale

The table sits between the lines ``.. traceability-start`` and
``.. traceability-end`` and is an RST ``list-table``.
"""

from __future__ import annotations

import argparse
import ast
import re
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_REQUIREMENTS = REPO.parent / "shared" / "spec" / "REQUIREMENTS.md"
START = ".. traceability-start"
END = ".. traceability-end"
SHORT_TEXT = 90

_REQ_LINE = re.compile(r"^- ([A-Z][A-Z0-9]*-[0-9]+)\s+(.*)$")


@dataclass(frozen=True)
class Requirement:
    id: str
    text: str

    @property
    def short(self) -> str:
        text = " ".join(self.text.split())
        if len(text) <= SHORT_TEXT:
            return text
        cut = text[: SHORT_TEXT - 1].rsplit(" ", 1)[0]
        return cut.rstrip(" ,;:") + "…"


def read_requirements(path: Path) -> list[Requirement]:
    """Requirements in file order; a requirement's text runs over its indented lines."""
    out: list[Requirement] = []
    current: list[str] | None = None
    ident = ""
    for line in path.read_text(encoding="utf-8").splitlines():
        match = _REQ_LINE.match(line)
        if match:
            if current is not None:
                out.append(Requirement(ident, " ".join(current)))
            ident, current = match.group(1), [match.group(2).strip()]
        elif current is not None and line.startswith((" ", "\t")) and line.strip():
            current.append(line.strip())
        elif current is not None:
            out.append(Requirement(ident, " ".join(current)))
            current = None
    if current is not None:
        out.append(Requirement(ident, " ".join(current)))
    seen: set[str] = set()
    for req in out:
        if req.id in seen:
            raise ValueError(f"{path.name}: requirement {req.id} is listed twice")
        seen.add(req.id)
    return out


def _req_ids(node: ast.expr) -> list[str]:
    """IDs of a ``[pytest.]mark.req("ID", ...)`` call, else []."""
    if not isinstance(node, ast.Call):
        return []
    func = node.func
    if not (isinstance(func, ast.Attribute) and func.attr == "req"):
        return []
    owner = func.value
    if not (isinstance(owner, ast.Attribute) and owner.attr == "mark") and not (
        isinstance(owner, ast.Name) and owner.id == "mark"
    ):
        return []
    return [a.value for a in node.args if isinstance(a, ast.Constant) and isinstance(a.value, str)]


def _marks_of(value: ast.expr) -> list[str]:
    items = value.elts if isinstance(value, (ast.List, ast.Tuple)) else [value]
    return [ident for item in items for ident in _req_ids(item)]


def _decorator_ids(node: ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) -> list[str]:
    return [ident for dec in node.decorator_list for ident in _req_ids(dec)]


def _is_test_function(node: ast.AST) -> bool:
    return isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name.startswith("test")


def scan_file(path: Path, root: Path) -> dict[str, list[str]]:
    """``{test id: [requirement IDs]}`` for one test module (test id ``file::Class::test``)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    rel = path.relative_to(root).as_posix()
    module_ids: list[str] = []
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "pytestmark" for t in node.targets
        ):
            module_ids += _marks_of(node.value)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) \
                and node.target.id == "pytestmark" and node.value is not None:
            module_ids += _marks_of(node.value)
    found: dict[str, list[str]] = {}

    def add(name: str, ids: list[str]) -> None:
        unique = list(dict.fromkeys(ids))
        if unique:
            found[f"{rel}::{name}"] = unique

    for node in tree.body:
        if _is_test_function(node):
            add(node.name, module_ids + _decorator_ids(node))
        elif isinstance(node, ast.ClassDef) and node.name.startswith("Test"):
            class_ids = module_ids + _decorator_ids(node)
            for stmt in node.body:
                if isinstance(stmt, ast.Assign) and any(
                    isinstance(t, ast.Name) and t.id == "pytestmark" for t in stmt.targets
                ):
                    class_ids = class_ids + _marks_of(stmt.value)
            for item in node.body:
                if _is_test_function(item):
                    add(f"{node.name}::{item.name}", class_ids + _decorator_ids(item))
    return found


def scan_tests(tests_dir: Path, root: Path | None = None) -> dict[str, list[str]]:
    """Every marked test under ``tests_dir`` (files ``test_*.py`` / ``*_test.py``)."""
    root = root or tests_dir.parent
    out: dict[str, list[str]] = {}
    files = sorted(set(tests_dir.rglob("test_*.py")) | set(tests_dir.rglob("*_test.py")))
    for path in files:
        out.update(scan_file(path, root))
    return out


def coverage(requirements: list[Requirement], marks: dict[str, list[str]]) -> dict[str, list[str]]:
    """``{requirement id: [test ids]}`` in requirement order."""
    table: dict[str, list[str]] = {req.id: [] for req in requirements}
    for test, ids in sorted(marks.items()):
        for ident in ids:
            if ident in table:
                table[ident].append(test)
    return table


def unknown_ids(requirements: list[Requirement], marks: dict[str, list[str]]) -> dict[str, list[str]]:
    known = {req.id for req in requirements}
    out: dict[str, list[str]] = {}
    for test, ids in sorted(marks.items()):
        for ident in ids:
            if ident not in known:
                out.setdefault(ident, []).append(test)
    return out


def render_table(requirements: list[Requirement], marks: dict[str, list[str]]) -> str:
    """The RST list-table (without the markers)."""
    table = coverage(requirements, marks)
    covered = sum(1 for tests in table.values() if tests)
    lines = [
        f".. list-table:: Requirements and the tests that prove them ({covered} of {len(requirements)} covered)",
        "   :header-rows: 1",
        "   :widths: 8 42 50",
        "",
        "   * - ID",
        "     - Requirement",
        "     - Tests",
    ]
    for req in requirements:
        tests = table[req.id]
        lines.append(f"   * - {req.id}")
        lines.append(f"     - {_rst_escape(req.short)}")
        if tests:
            lines.append(f"     - ``{tests[0]}``")
            for test in tests[1:]:
                lines.append("")
                lines.append(f"       ``{test}``")
        else:
            lines.append("     - (none yet)")
    return "\n".join(lines) + "\n"


def _rst_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("`", "\\`").replace("*", "\\*").replace("|", "\\|")


def splice(document: str, table: str) -> str:
    """``document`` with the text between the markers replaced by ``table``."""
    start = document.find(START)
    end = document.find(END)
    if start < 0 or end < 0 or end < start:
        raise ValueError(f"the markers '{START}' and '{END}' are missing or out of order")
    head = document[: start + len(START)]
    tail = document[end:]
    return f"{head}\n\n{table}\n{tail}"


def summary(requirements: list[Requirement], marks: dict[str, list[str]]) -> str:
    table = coverage(requirements, marks)
    covered = [ident for ident, tests in table.items() if tests]
    lines = [f"{len(covered)} of {len(requirements)} requirements covered by marked tests."]
    for ident, tests in table.items():
        lines.append(f"  {ident:<8} {len(tests):>3} test(s)" if tests else f"  {ident:<8}   - not covered")
    for ident, tests in unknown_ids(requirements, marks).items():
        lines.append(f"  unknown requirement {ident} marked on {', '.join(tests)}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="traceability", description=__doc__.split("\n\n")[0])
    parser.add_argument("--requirements", type=Path, default=DEFAULT_REQUIREMENTS,
                        help="the REQUIREMENTS file (default: %(default)s)")
    parser.add_argument("--tests", type=Path, default=REPO / "tests", help="the test tree")
    action = parser.add_mutually_exclusive_group()
    action.add_argument("--write", type=Path, metavar="README", help="rewrite the table in README")
    action.add_argument("--check", type=Path, metavar="README", help="exit 1 if README's table is stale")
    args = parser.parse_args(argv)

    try:
        requirements = read_requirements(args.requirements)
    except OSError as exc:
        print(f"traceability: cannot read requirements: {exc}", file=sys.stderr)
        return 2
    marks = scan_tests(args.tests, args.tests.resolve().parent)
    table = render_table(requirements, marks)
    if args.write or args.check:
        target: Path = args.write or args.check
        try:
            document = target.read_text(encoding="utf-8")
            updated = splice(document, table)
        except (OSError, ValueError) as exc:
            print(f"traceability: {target.name}: {exc}", file=sys.stderr)
            return 2
        if args.write:
            if updated != document:
                target.write_text(updated, encoding="utf-8")
            print(f"traceability: {target.name} table written")
            return 0
        if updated != document:
            print(f"traceability: {target.name} table is stale; run tools/traceability.py --write "
                  f"{target.name}", file=sys.stderr)
            return 1
        print(f"traceability: {target.name} table is up to date")
        return 0
    print(summary(requirements, marks))
    return 0


if __name__ == "__main__":
    sys.exit(main())
