"""Every environment variable the code reads is in one of the README's tables of variables, and
every variable a table names is one the code knows.

The reads are found in the source (operator_service/): `env.get("X")`, `os.environ["X"]`,
`os.environ.get("X")`, `os.environ.setdefault("X", ...)`, `os.getenv("X")`, and any call given
the environment and a name, such as `env_int(env, "X", ...)` or a helper `_whole(env, "X", ...)`
(`env` inside a loop over something else, such as documents, is not the environment). A table of variables is a
README table whose first column is headed "variable"; each row names its variables in
backticks in that column.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "operator_service"
ENVIRONMENTS = ("env", "environ")  # the names the code gives the environment it reads


def _is_environment(node: ast.AST) -> bool:
    """`env`, `environ`, or `os.environ`."""
    if isinstance(node, ast.Name):
        return node.id in ENVIRONMENTS
    return isinstance(node, ast.Attribute) and node.attr == "environ"


def _text(node: ast.AST | None) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def _loops_over_other_things(tree: ast.AST) -> set[int]:
    """The nodes inside a loop or comprehension whose variable is called `env` (a document, say)."""
    inside: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.ListComp, ast.SetComp, ast.GeneratorExp, ast.DictComp)):
            targets = [generator.target for generator in node.generators]
        elif isinstance(node, (ast.For, ast.AsyncFor)):
            targets = [node.target]
        else:
            continue
        names = {name.id for target in targets for name in ast.walk(target) if isinstance(name, ast.Name)}
        if names & set(ENVIRONMENTS):
            inside.update(id(child) for child in ast.walk(node))
    return inside


def variables_read(source: str) -> set[str]:
    """The names of the environment variables `source` reads."""
    found: set[str] = set()
    tree = ast.parse(source)
    elsewhere = _loops_over_other_things(tree)
    for node in ast.walk(tree):
        if id(node) in elsewhere:
            continue
        if isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Load) and _is_environment(node.value):
            found.add(_text(node.slice) or "")
        elif isinstance(node, ast.Call) and node.args:
            func = node.func
            if isinstance(func, ast.Attribute) and _is_environment(func.value) and func.attr in ("get", "setdefault"):
                found.add(_text(node.args[0]) or "")  # env.get("X"), os.environ.setdefault("X", ...)
            elif isinstance(func, (ast.Name, ast.Attribute)) and getattr(func, "attr", None) == "getenv":
                found.add(_text(node.args[0]) or "")
            elif len(node.args) > 1 and _is_environment(node.args[0]):
                found.add(_text(node.args[1]) or "")  # env_int(env, "X", ...), _whole(env, "X", ...)
    return found - {""}


def code_reads() -> dict[str, list[str]]:
    """Every variable read under operator_service/, with the files that read it."""
    reads: dict[str, list[str]] = {}
    for path in sorted(SOURCE.rglob("*.py")):
        for name in variables_read(path.read_text(encoding="utf-8")):
            reads.setdefault(name, []).append(str(path.relative_to(ROOT)))
    return reads


def documented(readme: str) -> set[str]:
    """The variables named in the first column of the README's tables of variables."""
    names: set[str] = set()
    in_table = False
    for line in readme.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")] if line.startswith("|") else []
        if not cells:
            in_table = False
        elif cells[0].lower() == "variable":
            in_table = True
        elif in_table and not set(cells[0]) <= set("-: "):
            names.update(re.findall(r"`([^`]+)`", cells[0]))
    return names


def test_the_reader_finds_each_way_the_code_reads_a_variable() -> None:
    sample = """
import os
a = env.get("A")
b = os.environ["B"]
c = os.environ.get("C", "x")
d = os.getenv("D")
e = env_int(env, "E", 1, minimum=0)
f = _whole(env, "F", 0, 0)
os.environ.setdefault("G", "x")
ALGORITHM = "os.environ['NOT_READ']"
h = other.get("NOT_AN_ENVIRONMENT")
ids = [env.get("NOT_A_VARIABLE") for env in documents]
for env in documents:
    env["NOT_A_VARIABLE_EITHER"]
env["SET_FOR_A_CHILD"] = "1"
env.pop("REMOVED_FOR_A_CHILD", None)
"""
    assert variables_read(sample) == {"A", "B", "C", "D", "E", "F", "G"}


def test_the_tables_are_found() -> None:
    readme = """
| variable | default | meaning |
| --- | --- | --- |
| `A`, `B` | `1` | the `C` in the meaning is not a variable |

| Variable | Default |
|---|---|
| `D` | unset |

| route | what |
| --- | --- |
| `GET /` | not a variable |
"""
    assert documented(readme) == {"A", "B", "D"}


def test_every_variable_the_code_reads_is_in_a_readme_table() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    missing = {name: files for name, files in code_reads().items() if name not in documented(readme)}
    assert missing == {}, "add a row for each to a table of variables in README.md"


def test_every_variable_in_the_readme_tables_is_named_in_the_code() -> None:
    """A row for a variable nothing reads any more is stale (the name must at least appear in the code)."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    literals = {
        node.value
        for path in SOURCE.rglob("*.py")
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
    }
    assert sorted(documented(readme) - literals) == []
