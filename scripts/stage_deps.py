"""The project code each DVC stage runs: its command's import closure, against its deps.

    python scripts/stage_deps.py            # every stage: missing and extra code deps
    python scripts/stage_deps.py train@hog  # one stage: its closure, as dvc.yaml lines

A stage's command is ``invert SUBCOMMAND ...``; the code it runs is the transitive closure
of imports (module-level and inside functions; package ``__init__``s included) starting
from ``stages/cli.py`` and the subcommand's module (:data:`stages.cli.COMMANDS`, imported
lazily). Two imports are made by name at run time and resolved here: the subcommand's
module, and the extractor registry (:func:`pipeline.features.get`), which imports the
module of the stage's target (the ``@key`` of a foreach stage, or the feature argument of
``invert extract``); figures and report may decode any target, so they get every one.
For ``extract@F`` the other extractor modules (imported only to validate their params
sections) are left out, as they change nothing in F's store.
"""

from __future__ import annotations

import ast
import functools
import shlex
import sys
from collections.abc import Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("pipeline", "stages")


def module_file(module: str, root: Path = ROOT) -> Path | None:
    """The file of a project module (``pipeline.x`` -> ``pipeline/x.py``), else ``None``."""
    if module.split(".")[0] not in PACKAGES:
        return None
    base = root.joinpath(*module.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def _in_type_checking(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> bool:
    while node in parents:
        node = parents[node]
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            return True
    return False


@functools.cache
def imports_of(path: Path, root: Path = ROOT) -> frozenset[str]:
    """Project modules imported anywhere in ``path`` (functions included, type-only not)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    found: set[str] = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.Import | ast.ImportFrom) or _in_type_checking(node, parents):
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            # `from pipeline import features` imports the submodule pipeline.features
            for alias in node.names:
                if module_file(f"{node.module}.{alias.name}", root) is not None:
                    found.add(f"{node.module}.{alias.name}")
    return frozenset(m for m in found if module_file(m, root) is not None)


def closure(modules: Iterable[str], root: Path = ROOT) -> set[str]:
    """The project modules ``modules`` import, transitively, with their packages."""
    todo, seen = list(modules), set()
    while todo:
        module = todo.pop()
        if module in seen or module_file(module, root) is None:
            continue
        seen.add(module)
        parts = module.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts))]  # parent packages
        path = module_file(module, root)
        assert path is not None
        todo += sorted(imports_of(path, root))
    return seen


def _targets(stage: str, argv: list[str]) -> list[str]:
    """Registry names a stage's command may import by name (see the module docstring)."""
    from pipeline import features

    sub = argv[1] if len(argv) > 1 else ""
    if sub in ("figures", "report"):
        return list(features.names())
    if "@" in stage:
        return [stage.split("@", 1)[1]]
    if sub == "extract":
        names = []
        for arg in argv[2:]:
            if arg.startswith("-"):
                break
            names += list(features.FAMILIES.get(arg, (arg,)))
        return names
    return []


def stage_closure(stage: str, cmd: str, root: Path = ROOT) -> set[Path]:
    """The project files stage ``stage`` runs (paths relative to ``root``)."""
    from pipeline import features
    from stages.cli import COMMANDS

    argv = shlex.split(cmd)
    if not argv or argv[0] != "invert":
        raise ValueError(f"stage {stage}: command {cmd!r} is not an `invert` command")
    start = ["stages.cli"]
    if len(argv) > 1 and argv[1] in COMMANDS:
        start.append(COMMANDS[argv[1]].partition(":")[0])
    modules = closure(start, root)
    if "pipeline.features" in modules:
        modules |= closure([features.module_of(t) for t in _targets(stage, argv)], root)
    files = {module_file(m, root) for m in modules}
    return {p.relative_to(root) for p in files if p is not None}


def dvc_stages(root: Path = ROOT) -> dict[str, tuple[str, set[Path]]]:
    """Every stage of ``dvc.yaml`` (foreach expanded by DVC): name -> (cmd, code deps)."""
    from dvc.repo import Repo

    out: dict[str, tuple[str, set[Path]]] = {}
    with Repo(str(root)) as repo:
        for stage in repo.index.stages:
            deps = {Path(d.def_path) for d in stage.deps}
            code = {d for d in deps if d.parts and d.parts[0] in PACKAGES}
            out[stage.addressing] = (" ".join(str(stage.cmd).split()), code)
    return out


def _covers(dep: Path, path: Path) -> bool:
    return dep == path or dep in path.parents


def compare(runs: set[Path], deps: set[Path]) -> tuple[set[Path], set[Path]]:
    """(files in ``runs`` no dep covers, deps covering no file of ``runs``).

    A dep is a file or a folder (``pipeline/alexnet``: every file under it).
    """
    missing = {p for p in runs if not any(_covers(d, p) for d in deps)}
    extra = {d for d in deps if not any(_covers(d, p) for p in runs)}
    return missing, extra


def report(root: Path = ROOT) -> dict[str, tuple[set[Path], set[Path]]]:
    """Per stage: (code files its command runs but deps lack, deps it does not run)."""
    return {
        name: compare(stage_closure(name, cmd, root), deps)
        for name, (cmd, deps) in dvc_stages(root).items()
    }


def main(argv: list[str]) -> int:
    sys.path.insert(0, str(ROOT))
    if argv:
        stages = dvc_stages()
        for name in argv:
            if name not in stages:
                print(f"no stage {name!r} in dvc.yaml; stages: {', '.join(stages)}")
                return 2
            cmd, _ = stages[name]
            for path in sorted(stage_closure(name, cmd)):
                print(f"      - {path}")
        return 0
    bad = 0
    for name, (missing, extra) in report().items():
        for path in sorted(missing):
            print(f"{name}: missing dep {path}")
        for path in sorted(extra):
            print(f"{name}: dep {path} is code it does not run")
        bad += bool(missing or extra)
    print(f"{bad} stage(s) with incomplete or extra code deps")
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
