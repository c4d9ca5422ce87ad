"""The layout shows the architecture (issue #19): the installed package ``moodlake`` holds the product;
benchmarks, the experiment runner, test doubles, the test cluster and the demo live beside it in
``lib/moodlake_dev``, which the product never imports at import time. No Spark: a fresh interpreter
imports the package and builds the CLI's parser, and the sources are read, not run.
"""
from __future__ import annotations

import ast
import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import moodlake

REPO = Path(__file__).resolve().parents[1]
PRODUCT = REPO / "lib" / "moodlake"
DEV = "moodlake_dev"
# module and package names that are not the product's, wherever they would appear under lib/moodlake
NOT_PRODUCT = {"bench", "benchmarks", "testing", "experiments", "demo", "fake_flickr", "synthetic_flickr",
               "spark_cluster", "table_probe", DEV}
# the only place the product may name the companion: `moodlake demo`, inside the function that runs it
ALLOWED_LAZY = {("cli.py", "moodlake_dev.demo")}

# A fresh interpreter: import the package and the CLI, build its parser, parse a few commands (the demo
# among them); print the modules of sys.modules that are not the product's.
CHILD = """
import json, re, sys
{extra}
import moodlake
import moodlake.cli as cli
parser = cli.build_parser()
for argv in (["demo"], ["tables"], ["sql", "SELECT 1"], ["ingest", "synthetic", "--n", "5"], ["nightly", "--dry-run"]):
    cli.parse_args(argv, parser)
pattern = re.compile({pattern!r})
print("FOREIGN " + json.dumps(sorted(m for m in sys.modules if pattern.match(m))))
"""
FOREIGN = r"^(moodlake_dev|moodlake\.(bench|testing|demo|evaluation\.experiments))(\.|$)"


def _foreign_modules_after_import(extra: str = "") -> list[str]:
    env = dict(os.environ)
    # the child imports the moodlake this test imported (a worktree's, say, not only an installed one)
    env["PYTHONPATH"] = os.pathsep.join([str(Path(moodlake.__file__).resolve().parents[1]),
                                         *filter(None, [env.get("PYTHONPATH")])])
    out = subprocess.run([sys.executable, "-c", CHILD.format(extra=extra, pattern=FOREIGN)], env=env,
                         capture_output=True, text=True, timeout=120, cwd=REPO)
    assert out.returncode == 0, out.stderr
    line = next(ln for ln in out.stdout.splitlines() if ln.startswith("FOREIGN "))
    return json.loads(line[len("FOREIGN "):])


def test_importing_the_package_and_the_cli_imports_nothing_beside_the_product():
    assert _foreign_modules_after_import() == []


def test_the_import_check_sees_a_companion_module():
    """The check above can fail: a module of the companion imported along is reported."""
    assert {DEV, f"{DEV}.doubles"} <= set(_foreign_modules_after_import(f"import {DEV}.doubles"))


def _product_sources() -> list[Path]:
    files = [p for p in PRODUCT.rglob("*.py")]
    files += [p for p in (REPO / "models").rglob("*.py")] + [p for p in (REPO / "jobs").glob("*.py")]
    return sorted(f for f in files if "__pycache__" not in f.parts)


def test_the_product_package_holds_no_benchmarks_test_support_or_experiments():
    found = [str(p.relative_to(PRODUCT)) for p in PRODUCT.rglob("*")
             if "__pycache__" not in p.parts and {part.removesuffix(".py") for part in p.relative_to(PRODUCT).parts}
             & NOT_PRODUCT]
    assert found == [], f"lib/moodlake is the product; these belong in lib/{DEV}: {found}"


def _imports(tree: ast.AST, in_function: bool = False):
    """(module imported, whether inside a function) for every import statement of ``tree``."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, in_function
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module, in_function
            for alias in node.names:  # from moodlake import demo
                yield f"{node.module}.{alias.name}", in_function
        yield from _imports(node, in_function or isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)))


def test_no_product_module_imports_the_companion():
    """The product (lib/moodlake, models/, jobs/) names the companion only where ``moodlake demo``
    runs, inside a function: never when a module is imported."""
    offenders = []
    for path in _product_sources():
        for module, in_function in _imports(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            allowed = in_function and any(path.name == name and (module == lazy or module.startswith(lazy + "."))
                                          for name, lazy in ALLOWED_LAZY)
            if re.match(FOREIGN, module) and not allowed:
                offenders.append(f"{path.relative_to(REPO)}: {module}{' (in a function)' if in_function else ''}")
    assert offenders == []


def test_the_companion_modules_that_commands_name_exist():
    """Every ``python -m moodlake_dev...`` of the Makefile, README.md and BENCHMARKS.md, and the demo,
    resolves (an editable install made before lib/moodlake_dev existed does not map it: ``make setup``)."""
    named = {"moodlake_dev.demo", "moodlake_dev.cluster.lake", "moodlake_dev.cluster.standalone",
             "moodlake_dev.cluster.table_probe", "moodlake_dev.doubles.fake_flickr"}
    for doc in ("Makefile", "README.md", "BENCHMARKS.md"):
        named |= set(re.findall(r"-m (moodlake_dev(?:\.\w+)+)", (REPO / doc).read_text(encoding="utf-8")))
    assert {"moodlake_dev.bench.ingest", "moodlake_dev.experiments", "moodlake_dev.bench.cluster"} <= named
    missing = sorted(m for m in named if importlib.util.find_spec(m) is None)
    assert missing == [], f"named but not importable: {missing}"
