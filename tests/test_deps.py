"""dvc.yaml's code deps are exactly the code each stage's command runs.

A stage whose deps miss a module it imports keeps stale outputs when that module changes;
a dep on code it does not run reruns it for nothing. ``scripts/stage_deps.py`` computes each
command's import closure (module-level and function-level imports, package ``__init__``s,
the lazily imported subcommand and the target's extractor module) and compares it with the
stage's deps as DVC resolves them.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest
import yaml

from pipeline import alexnet, decoders, features

ROOT = Path(__file__).resolve().parents[1]


def _stage_deps() -> ModuleType:
    spec = importlib.util.spec_from_file_location("stage_deps", ROOT / "scripts" / "stage_deps.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["stage_deps"] = module
    spec.loader.exec_module(module)
    return module


SD = _stage_deps()
STAGES = SD.dvc_stages(ROOT)  # DVC resolves dvc.yaml once for the module


def test_every_stage_lists_exactly_the_code_it_runs() -> None:
    problems = []
    for stage, (cmd, deps) in STAGES.items():
        missing, extra = SD.compare(SD.stage_closure(stage, cmd, ROOT), deps)
        problems += [f"{stage}: missing dep {p}" for p in sorted(missing)]
        problems += [f"{stage}: dep {p} is code it does not run" for p in sorted(extra)]
    assert not problems, "\n".join(problems) + "\n(python scripts/stage_deps.py STAGE prints"
    " the closure)"


def test_the_closures_are_narrow() -> None:
    """A stage imports only what it runs: the SIFT extractor is not in the HOG decoder's
    stages, and evaluation and [1] do not import the training loop (training imports AlexNet:
    the DeePSiM comparator)."""

    def runs(stage: str) -> set[str]:
        return {str(p) for p in SD.stage_closure(stage, STAGES[stage][0], ROOT)}

    for stage in ("train@hog", "evaluate@hog", "extract@hog"):
        assert not any(p.startswith("pipeline/features/sift") for p in runs(stage)), stage
    # training can run the DeePSiM loss (train.loss per target), whose comparator is AlexNet
    for stage in ("evaluate@hog", "extract@hog"):
        assert not any(p.startswith("pipeline/alexnet") for p in runs(stage)), stage
    assert "pipeline/deepsim.py" in runs("train@hog")
    for stage in ("evaluate@hog", "evaluate@conv5", "baseline@conv5", "evaluate_ae@fc8"):
        assert "pipeline/training.py" not in runs(stage), stage
    for stage in ("train@hog", "train@conv5", "train_ae@conv5"):
        assert {"pipeline/extract.py", "pipeline/runner.py"}.isdisjoint(runs(stage)), stage
    assert "pipeline/alexnet/weights.py" in runs("train@conv5")
    assert "pipeline/training.py" in runs("train@sift")


def test_the_checker_sees_a_missing_dep(tmp_path: Path) -> None:
    """The comparison is not vacuous: a dropped dep or a function-level import is caught."""
    runs = SD.stage_closure("train@hog", "invert train hog --images x", ROOT)
    deps = set(runs) - {Path("pipeline/loader.py")}
    missing, extra = SD.compare(runs, deps | {Path("pipeline/figures.py")})
    assert missing == {Path("pipeline/loader.py")} and extra == {Path("pipeline/figures.py")}
    # a folder dep covers the files under it
    assert SD.compare(runs, {Path("pipeline"), Path("stages")}) == (set(), set())
    fake = tmp_path / "pipeline"
    fake.mkdir()
    (fake / "__init__.py").write_text("")
    (fake / "a.py").write_text("def f():\n    from pipeline import b\n")
    (fake / "b.py").write_text("import os\n")
    (fake / "c.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import pipeline.b\n"
    )
    assert SD.closure(["pipeline.a"], tmp_path) == {"pipeline", "pipeline.a", "pipeline.b"}
    assert SD.closure(["pipeline.c"], tmp_path) == {"pipeline", "pipeline.c"}


def test_the_layer_lists_agree() -> None:
    """The AlexNet layers are defined once in code; dvc.yaml and params.yaml repeat them."""
    dvc = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    layers = list(alexnet.LAYERS)
    assert list(features.FAMILIES["alexnet"]) == layers
    assert list(params["extract"]["alexnet"]["layers"]) == layers
    shallow = ["hog", "sift", "lbp"]
    assert list(dvc["train"]["foreach"]) == shallow + layers == list(decoders.TARGETS)
    assert list(dvc["evaluate"]["foreach"]) == shallow + layers
    # the embedded default trains autoencoders and runs [1] for a subset of the layers
    assert list(dvc["train_ae"]["foreach"]) == list(dvc["evaluate_ae"]["foreach"])
    assert set(dvc["train_ae"]["foreach"]) <= set(layers)
    first, *rest = dvc["baseline"]["foreach"]
    assert first == "hog" and set(rest) <= set(layers)
    assert list(dvc["extract"]["foreach"]) == shallow
    for stage in ("extract", "train", "evaluate"):
        for target, item in dvc[stage]["foreach"].items():
            if stage != "extract":
                assert item["section"] == features.get(target).section, (stage, target)
            module = features.module_of(target).replace(".", "/")
            # a module file, or a package folder (pipeline/alexnet, pipeline/features/sift)
            code = module + ".py" if (ROOT / (module + ".py")).is_file() else module
            assert code == item["code"] or code.startswith(item["code"] + "/"), (stage, target)


@pytest.mark.parametrize("stage", ["train", "baseline"])
def test_network_settings_are_read_from_extract_only(stage: str) -> None:
    """arch and weights are set once, in extract.alexnet."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    assert {"arch", "weights"} <= set(params["extract"]["alexnet"])
    assert not {"arch", "weights"} & set(params[stage])


def test_bytecode_caches_are_not_part_of_a_code_folder_dep() -> None:
    """pipeline/alexnet and pipeline/features are folder deps: __pycache__ must not count."""
    ignored = (ROOT / ".dvcignore").read_text().split()
    assert "__pycache__/" in ignored and "*.pyc" in ignored


def test_no_stage_output_is_tracked_by_git() -> None:
    """DVC refuses to write an output git tracks, after the stage has run (minutes lost)."""
    import subprocess

    tracked = set(
        subprocess.run(
            ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.split()
    )
    if not tracked:
        pytest.skip("not a git checkout")
    from dvc.repo import Repo

    outs: list[str] = []
    with Repo(str(ROOT)) as repo:
        for stage in repo.index.stages:
            outs += [str(o.def_path) for o in stage.outs if o.use_cache]
    clash = sorted(
        o for o in outs if o in tracked or any(t.startswith(o.rstrip("/") + "/") for t in tracked)
    )
    assert not clash, f"git tracks these DVC-cached outputs: {clash}; git rm --cached them"
