"""The house rules of ``src/df2am`` (docs/architecture.md), checked on the source with ``ast``:

(a) no module imports a ``_``-prefixed name, or anything from a ``_``-prefixed module, of
    another module (``from __future__`` and dunder names such as ``__version__`` excepted);
(b) every room imports only the rooms the table in docs/architecture.md allows (the array-only
    ``evaluation`` leaf imports ``errors`` and nothing else of df2am; nothing but the
    deprecation shim ``df2am.engine`` imports ``df2am.engine``);
(c) no function is longer than :data:`MAX_FUNCTION_LINES` lines (``def`` to its last line)
    unless a ``# long:`` comment right above its ``def`` (a comment block that starts with
    ``# long:``) or between the ``def`` and its first body line says why.

The checker is tested on small synthetic modules first, so that it is known to fail on a
broken house and not only to pass on this one.
"""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "df2am"

#: The longest function allowed without a ``# long:`` reason (a screen).
MAX_FUNCTION_LINES = 80

#: What each room (first component under ``df2am``) may import of df2am besides itself and
#: the package root (``df2am.__version__``). The reasons are in docs/architecture.md.
BASE = {"errors", "config"}
ALLOWED: dict[str, set[str]] = {
    "errors": set(),
    "config": {"errors", "data"},  # valid data.dataset / protocol options: the registry
    "atomic": {"errors"},  # check_output raises OutputPathError
    "device": {"errors"},
    "lazy": set(),
    "data": BASE,
    "models": BASE,
    "losses": BASE | {"models"},
    "evaluation": {"errors"},
    "assess": BASE | {"atomic", "device", "lazy", "data", "models", "evaluation"},
    "train": BASE | {"atomic", "device", "lazy", "data", "models", "losses", "evaluation",
                     "assess"},
    "deploy": BASE | {"atomic", "device", "lazy", "data", "models", "evaluation", "assess",
                      "train"},
    "experiments": BASE | {"atomic", "device", "lazy", "data", "models", "evaluation", "assess",
                           "train", "deploy"},
    "web": BASE | {"data", "evaluation", "assess", "deploy"},
    "cli": BASE | {"atomic", "device", "data", "models", "evaluation", "assess", "train",
                   "deploy", "experiments", "web"},
    # The deprecation shim re-exports the old names from their new rooms (one release).
    "engine": BASE | {"atomic", "device", "assess", "train", "deploy", "experiments"},
    "configs": set(),
}

#: Where a room may import only some modules of another: deploy reads the checkpoint format that
#: training owns, and nothing else of training.
ONLY: dict[tuple[str, str], set[str]] = {("deploy", "train"): {"df2am.train.checkpoint"}}

#: Third-party packages the array-only evaluation leaf may use (besides the standard library).
EVALUATION_THIRD_PARTY = {"numpy", "torch"}


@dataclass(frozen=True)
class Violation:
    module: str
    line: int
    rule: str
    what: str

    def __str__(self) -> str:
        return f"{self.module}:{self.line}: [{self.rule}] {self.what}"


def module_name(path: Path, src: Path = SRC) -> str:
    """``src/df2am/train/trainer.py`` → ``df2am.train.trainer`` (a package: its folder)."""
    parts = list(path.relative_to(src.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _room(module: str) -> str:
    """The room of a df2am module: its first component under ``df2am`` ("" for the root)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _imports(tree: ast.AST, module: str, is_package: bool) -> list[tuple[int, str, list[str]]]:
    """(line, imported module, names) of every import, lazy ones inside functions included;
    relative imports resolved against ``module``."""
    out: list[tuple[int, str, list[str]]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = module.split(".")
                package = package if is_package else package[:-1]
                package = package[: len(package) - (node.level - 1)]
                base = ".".join(package + ([base] if base else []))
            out.append((node.lineno, base, [alias.name for alias in node.names]))
    return out


def _says_why(lines: list[str], node: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    """A ``# long:`` comment in the comment block right above the ``def`` (or its
    decorators), or between the ``def`` line and the first body line."""
    above = min([node.lineno] + [d.lineno for d in node.decorator_list]) - 1  # 1-based
    while above > 0 and lines[above - 1].lstrip().startswith("#"):
        if lines[above - 1].lstrip().startswith("# long:"):
            return True
        above -= 1
    return any("# long:" in lines[n - 1] for n in range(node.lineno, node.body[0].lineno + 1))


def check_source(
    source: str, module: str, *, is_package: bool = False, max_lines: int = MAX_FUNCTION_LINES
) -> list[Violation]:
    """Every violation of rules (a), (b), (c) in one module's source text."""
    tree = ast.parse(source)
    lines = source.splitlines()
    found: list[Violation] = []
    room = _room(module)
    for line, target, names in _imports(tree, module, is_package):
        # (a) private names and private modules of another module
        private_parts = [p for p in target.split(".") if _is_private(p)]
        if private_parts:
            found.append(Violation(module, line, "private", f"imports from private module "
                                                            f"{target}"))
        for name in names:
            if _is_private(name):
                found.append(Violation(module, line, "private", f"imports {name} from {target}"))
        # (b) the room rules
        top = target.split(".")[0]
        if top == "df2am":
            other = _room(target)
            if other == "engine" and room != "engine":
                found.append(Violation(module, line, "rooms", f"imports the deprecated "
                                                              f"{target} (use its new room)"))
            elif other and other != room and other not in ALLOWED.get(room, set()):
                found.append(Violation(module, line, "rooms", f"room {room!r} may not import "
                                                              f"{target}"))
            elif (room, other) in ONLY and target not in ONLY[room, other]:
                found.append(Violation(module, line, "rooms", f"room {room!r} may import only "
                                       f"{sorted(ONLY[room, other])} of {other}, not {target}"))
        elif room == "evaluation" and top and top not in EVALUATION_THIRD_PARTY and (
            top not in sys.stdlib_module_names
        ):
            found.append(Violation(module, line, "rooms", f"the array-only evaluation leaf "
                                                          f"imports {target}"))
    # (c) function length
    for node in ast.walk(tree):
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        length = node.end_lineno - node.lineno + 1  # type: ignore[operator]
        if length <= max_lines:
            continue
        if not _says_why(lines, node):
            found.append(Violation(module, node.lineno, "length",
                                   f"{node.name} is {length} lines (> {max_lines}) and no "
                                   "'# long:' comment says why"))
    return found


def check_tree(src: Path = SRC) -> list[Violation]:
    found: list[Violation] = []
    for path in sorted(src.rglob("*.py")):
        found += check_source(path.read_text(encoding="utf-8"), module_name(path, src),
                              is_package=path.name == "__init__.py")
    return found


# --------------------------------------------------------------------------- the checker itself


BROKEN = '''
from __future__ import annotations
from df2am.errors import EvaluationError, __version__
from df2am.models import build_model
from df2am.data.loader import _private_helper
from df2am.evaluation._hidden import thing
from . import _sibling
import df2am.engine
import pandas

def long_one():
{body}

def excused():  # long: one table of constants, clearer in one piece
{body}
'''


def _body(n: int) -> str:
    return "\n".join(f"    x{i} = {i}" for i in range(n))


def test_the_checker_finds_each_kind_of_violation():
    source = BROKEN.format(body=_body(MAX_FUNCTION_LINES))
    found = check_source(source, "df2am.evaluation.broken")
    got = sorted((v.rule, v.what) for v in found)
    assert got == sorted([
        ("rooms", "room 'evaluation' may not import df2am.models"),
        ("rooms", "room 'evaluation' may not import df2am.data.loader"),
        ("private", "imports _private_helper from df2am.data.loader"),
        ("private", "imports from private module df2am.evaluation._hidden"),
        ("private", "imports _sibling from df2am.evaluation"),
        ("rooms", "imports the deprecated df2am.engine (use its new room)"),
        ("rooms", "the array-only evaluation leaf imports pandas"),
        ("length", f"long_one is {MAX_FUNCTION_LINES + 1} lines (> {MAX_FUNCTION_LINES}) and "
                   "no '# long:' comment says why"),
    ]), "\n".join(map(str, found))


def test_the_checker_passes_a_clean_module():
    clean = (
        "from __future__ import annotations\n"
        "import numpy as np\n"
        "from df2am.errors import EvaluationError, __version__\n"
        "from .distance import pairwise_distance\n\n"
        "# long: a reason\n"
        f"def f():\n{_body(MAX_FUNCTION_LINES + 5)}\n\n"
        f"def g():\n{_body(MAX_FUNCTION_LINES - 1)}\n"
    )
    assert check_source(clean, "df2am.evaluation.clean") == []


def test_a_long_function_needs_its_reason_right_above_or_at_the_top():
    body = _body(MAX_FUNCTION_LINES)
    block = f"# long: a reason that takes\n# two lines\n@decorator\ndef f():\n{body}\n"
    inside = f"def f():  # long: one screen of a table\n{body}\n"
    first_line = f"def f():\n    # long: the reason\n{body}\n"
    for ok in (block, inside, first_line):
        assert check_source(ok, "df2am.train.x") == [], ok[:60]
    unrelated = f"# a comment, not a reason\ndef f():\n{body}\n"
    apart = f"# long: too far away\n\ndef f():\n{body}\n"
    for bad in (unrelated, apart):
        assert [v.rule for v in check_source(bad, "df2am.train.x")] == ["length"], bad[:60]


def test_relative_imports_resolve_to_their_room():
    found = check_source("from ..models import build_model\n", "df2am.evaluation.metrics")
    assert [v.what for v in found] == ["room 'evaluation' may not import df2am.models"]
    found = check_source("from .plan import _key\n", "df2am.experiments.sweep",
                         is_package=True)
    assert [v.what for v in found] == ["imports _key from df2am.experiments.sweep.plan"]


def test_deploy_reads_only_the_checkpoint_format_of_training():
    assert check_source("from df2am.train.checkpoint import load_checkpoint\n",
                        "df2am.deploy.api") == []
    found = check_source("from df2am.train.trainer import train\n", "df2am.deploy.api")
    assert [v.rule for v in found] == ["rooms"]


def test_the_shim_alone_may_import_the_old_engine():
    assert check_source("from df2am.engine import load_model\n", "df2am.engine.api") == []
    assert check_source("from df2am.engine import load_model\n", "df2am.cli.x") != []


# --------------------------------------------------------------------------- the house


@pytest.mark.parametrize("rule", ["private", "rooms", "length"])
def test_the_package_keeps_the_rule(rule):
    found = [v for v in check_tree() if v.rule == rule]
    assert not found, "\n".join(map(str, found))


def test_every_room_is_known():
    """A new top-level module or folder needs its line in :data:`ALLOWED` (and in the table
    of docs/architecture.md)."""
    rooms = {_room(module_name(p)) for p in SRC.rglob("*.py")} - {""}
    assert rooms <= set(ALLOWED), sorted(rooms - set(ALLOWED))
