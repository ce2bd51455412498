"""mediad's layers import one way: io -> core -> proto -> iq (docs/mediad.md, "Layout").

Read from the source with ``ast``: every import counts, at module level, in a
function or under ``TYPE_CHECKING``, so that a later change that breaks the
layering fails here rather than in a review.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# What each layer may import of the project: a prefix of a dotted module name.
ALLOWED = {
    "proto": ("iq", "sdp_rules.errors", "mediad.proto"),
    "core": ("iq", "sdp_rules.errors", "mediad.proto", "mediad.core"),
    "io": ("iq", "sdp_rules.errors", "mediad.proto", "mediad.core", "mediad.io",
           # the process-level pieces an edge needs: its settings, Redis (the control secret)
           "mediad.config", "mediad.redis_client", "mediad.redis_keys", "mediad.state"),
}
PROJECT = ("iq", "sdp_rules", "mediad", "plugin", "tools", "tests", "bench", "fuzz", "deploy")
# sans-IO: a protocol module takes bytes and time and returns bytes and events
NO_IO = ("asyncio", "socket", "selectors", "uvloop")


def _is(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def imports(path: Path, source: str | None = None) -> set[str]:
    """The dotted names ``path`` imports (``from a import b`` gives ``a.b``: b may be a module)."""
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    if source is None:
        source = path.read_text(encoding="utf-8")
    out: set[str] = set()
    for node in ast.walk(ast.parse(source, str(path))):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parts = parts[:len(parts) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            out.update(f"{base}.{alias.name}" for alias in node.names)
    return out


def modules(layer: str) -> list[Path]:
    return sorted((ROOT / "mediad" / layer).glob("*.py"))


def offending(layer: str, path: Path, source: str | None = None) -> list[str]:
    allowed = ALLOWED[layer]
    return sorted(name for name in imports(path, source)
                  if any(_is(name, p) for p in PROJECT) and not any(_is(name, a) for a in allowed))


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_a_layer_imports_only_the_layers_below_it(layer):
    assert modules(layer), f"mediad/{layer}/ has no modules"
    wrong = {path.name: names for path in modules(layer) if (names := offending(layer, path))}
    assert wrong == {}, f"mediad/{layer}/ imports what it may not: {wrong}"


def test_a_protocol_module_does_no_io():
    wrong = {path.name: sorted(n for n in imports(path) if any(_is(n, m) for m in NO_IO))
             for path in modules("proto")}
    assert {name: names for name, names in wrong.items() if names} == {}


def test_the_access_termination_does_no_io():
    """The access termination's decisions are sans-IO too; its asyncio shell is ``relay.AccessChannel``."""
    path = ROOT / "mediad" / "core" / "termination.py"
    assert sorted(n for n in imports(path) if any(_is(n, m) for m in NO_IO)) == []
    assert sorted(n for n in imports(path) if _is(n, "mediad.core")) == []


def test_the_iq_contract_imports_nothing_of_either_end():
    wrong = {path.name: sorted(n for n in imports(path) if any(_is(n, p) for p in PROJECT if p != "iq"))
             for path in sorted((ROOT / "iq").glob("*.py"))}
    assert {name: names for name, names in wrong.items() if names} == {}


def test_the_checker_sees_every_kind_of_import():
    """A function-level, a TYPE_CHECKING and a relative import all count."""
    fake = ROOT / "mediad" / "proto" / "x.py"
    source = ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from mediad.core import session\n"
              "def f():\n    import mediad.io.ports\nfrom ..core import relay\nfrom mediad import daemon\n")
    assert offending("proto", fake, source) == ["mediad.core.relay", "mediad.core.session", "mediad.daemon",
                                                "mediad.io.ports"]
