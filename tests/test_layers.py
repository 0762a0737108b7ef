"""Layers only point down (docs/architecture.md): a module imports from its own layer or the ones below,
so the folder tree reads as the data's way and no stage reaches back into a later one."""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "harness"
# Bottom up; a module's layer is its folder's (the package's top-level modules are the front ends).
LAYERS = ("core", "config", "inputs", "engines", "run", "judging", "localize", "publish", "front")
RANK = {name: i for i, name in enumerate(LAYERS)}
RANK["config"] = RANK["core"]  # the packaged YAML and its loader sit with the schema they are checked against
FRONT = {"bench", "compat"}


def layer(module: str) -> str:
    parts = module.split(".")
    if (len(parts) == 2 and not (PACKAGE / parts[1]).is_dir()) or parts[1] in FRONT:  # harness.cli, harness.bench.*
        return "front"
    return parts[1]


def modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        name = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
        found[name] = path
    return found


def imports(path: Path) -> set[str]:
    """Every harness module the file imports, at the top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("harness.")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("harness"):
            found |= ({f"{node.module}.{a.name}" for a in node.names} if node.module == "harness" else {node.module})
    return found


def test_every_module_has_a_known_layer() -> None:
    unknown = {name for name in modules() if name != "harness" and layer(name) not in RANK}
    assert not unknown, f"modules outside the declared layers {LAYERS}: {sorted(unknown)}"


def test_imports_point_down() -> None:
    known = modules()
    upward = []
    for name, path in known.items():
        if name == "harness":
            continue
        for target in imports(path):
            while target not in known and "." in target:  # `from harness.x import name` names a module or not
                target = target.rsplit(".", 1)[0]
            if target == "harness":
                continue
            if RANK[layer(target)] > RANK[layer(name)]:
                upward.append(f"{name} ({layer(name)}) -> {target} ({layer(target)})")
    assert not upward, "imports that point up the layers:\n" + "\n".join(sorted(upward))
