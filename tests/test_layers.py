"""The layers: errors at the bottom, then the model and the log side by side, then the chat bot on top.

    proverbot_errors.py    imports none of proverbot's packages
    model/                 imports nothing of chatbot/ or storage/
    storage/               imports nothing of chatbot/ or model/
    chatbot/publishers/    platform clients only: nothing of storage/, the core or the posting workflow

Every import counts, at any depth (inside functions too), and importlib.import_module("...") with a literal name.
"""

import ast
from pathlib import Path

import pytest

from tests.conftest import ROOT

RULES = {
    "proverbot_errors.py": ("chatbot", "model", "storage"),
    "model": ("chatbot", "storage"),
    "storage": ("chatbot", "model"),
    "chatbot/publishers": ("storage", "chatbot.core", "chatbot.posting", "chatbot.context"),
}


def imported(tree: ast.AST, package: str) -> list[tuple[int, list[str]]]:
    """(line, names) for every import in the tree: `from a import b` names a and a.b (b may be a module).
    Relative imports are resolved against `package`, the dotted package of the file."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, [alias.name]) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, base] if base else parent)
            found.append((node.lineno, [base, *(f"{base}.{alias.name}" for alias in node.names)]))
        elif (isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", None))
              in ("import_module", "__import__") and node.args and isinstance(node.args[0], ast.Constant)
              and isinstance(node.args[0].value, str)):
            found.append((node.lineno, [node.args[0].value]))
    return found


def crossings(source: str, name: str, package: str, forbidden: tuple[str, ...]) -> list[str]:
    """'name:line imports module' for every import of a forbidden package (or of a module inside it)."""
    tree = ast.parse(source, filename=name)
    found = []
    for line, modules in sorted(imported(tree, package)):
        bad = [m for m in modules if any(m == f or m.startswith(f + ".") for f in forbidden)]
        if bad:
            found.append(f"{name}:{line} imports {bad[0]}")
    return found


def files(rule: str) -> list[Path]:
    path = ROOT / rule
    return [path] if path.is_file() else sorted(path.rglob("*.py"))


def package_of(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])


@pytest.mark.parametrize("rule", RULES)
def test_no_package_reaches_across(rule):
    assert files(rule), f"{rule} has no Python files: the rule checks nothing"
    found = []
    for path in files(rule):
        name = str(path.relative_to(ROOT))
        found += crossings(path.read_text(encoding="utf-8"), name, package_of(path), RULES[rule])
    assert not found, f"{rule} imports nothing of {', '.join(RULES[rule])}:\n" + "\n".join(found)


@pytest.mark.parametrize("source, flagged", [
    ("import os\nfrom proverbot_errors import ProverbotError\nfrom model.errors import SamplingError\n", []),
    ("import storage\n", ["model/x.py:1 imports storage"]),
    ("import storage.db as db\n", ["model/x.py:1 imports storage.db"]),
    ("def f():\n    if True:\n        from chatbot.core import Core\n", ["model/x.py:3 imports chatbot.core"]),
    ("from chatbot import config\n", ["model/x.py:1 imports chatbot"]),
    ("import importlib\nimportlib.import_module('storage.api')\n", ["model/x.py:2 imports storage.api"]),
    ("from ..storage import api\n", ["model/x.py:1 imports storage"]),
    ("from . import run\n", []),
    ("import chatbotx\nimport storagey\n", []),
])
def test_the_checker_flags_a_crossing(source, flagged):
    assert crossings(source, "model/x.py", "model", RULES["model"]) == flagged


def test_the_checker_flags_a_publisher_that_reaches_for_the_core():
    source = "from chatbot import posting\nfrom chatbot.publishers import Limits\nfrom chatbot.core import Context\n"
    assert crossings(source, "chatbot/publishers/x.py", "chatbot.publishers", RULES["chatbot/publishers"]) == [
        "chatbot/publishers/x.py:1 imports chatbot.posting", "chatbot/publishers/x.py:3 imports chatbot.core"]
