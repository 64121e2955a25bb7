"""The packages import downward only: commands → demo → desk → mail → store → understand/config → ground."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "processor"

# Higher numbers may import lower ones, never the reverse.
LAYERS = {"commands": 6, "demo": 5, "desk": 4, "mail": 3, "store": 2, "understand": 1, "config": 1,
          "clock": 0, "logs": 0, "names": 0, "display": 0, "progress": 0, "resources": 0, "__main__": 7}


def _layer(module: str) -> tuple[str, int]:
    top = module.split(".")[1] if module.count(".") else module
    return top, LAYERS[top]


def _imports(path: Path):
    """Every processor module a file imports, at top level or inside a function."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("processor"):
            if node.module == "processor":
                yield from (f"processor.{a.name}" for a in node.names)
            else:
                yield node.module
        elif isinstance(node, ast.Import):
            yield from (a.name for a in node.names if a.name.startswith("processor."))


def test_every_module_belongs_to_a_known_layer():
    for path in PACKAGE.rglob("*.py"):
        top = path.relative_to(PACKAGE).parts[0].removesuffix(".py")
        assert top == "__init__" or top in LAYERS, f"{path}: add it to a layer in tests/test_layout.py"


def test_no_package_imports_a_higher_one():
    upward = []
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE)
        top = rel.parts[0].removesuffix(".py")
        if top == "__init__":
            continue
        own = LAYERS[top]
        for module in _imports(path):
            target, level = _layer(module)
            if target != top and level >= own:
                upward.append(f"processor/{rel} imports {module}")
    assert upward == []


def test_the_layer_check_sees_an_upward_import(tmp_path, monkeypatch):
    # The check above must be able to fail: a store module importing the desk is caught.
    fake = tmp_path / "processor" / "store"
    fake.mkdir(parents=True)
    (fake / "bad.py").write_text("from processor.desk import registry\n")
    assert list(_imports(fake / "bad.py")) == ["processor.desk"]
    assert _layer("processor.desk")[1] > LAYERS["store"]


def test_no_module_is_over_600_lines():
    long = {str(p.relative_to(PACKAGE)): n for p in PACKAGE.rglob("*.py")
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > 600}
    assert long == {}
