"""Training: resume equals an uninterrupted run, checkpoints, refusals, outputs."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from pipeline.checkpoints import load_decoder
from pipeline.errors import (
    CheckpointError,
    ConfigError,
    CorruptStoreError,
    IncompatibleStoreError,
    PipelineError,
)
from pipeline.extract import ExtractParams, extract_store
from pipeline.images import prepare
from pipeline.loader import LoaderParams, StoreStream, make_loader, usable_indices
from pipeline.pixels import target_images
from pipeline.runner import RunnerParams
from pipeline.store import open_store
from pipeline.training import TrainParams, parse_train_section, train
from tests.conftest import small_prepare_params

TINY = TrainParams(
    width=0.125,
    steps=6,
    batch_size=4,
    lr=1e-3,
    checkpoint_every=3,
    log_every=1,
    eval_batches=1,
    loader=LoaderParams(workers=0, block_reads=2),
)


@pytest.fixture(scope="module")
def hog_store(image_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("feat") / "hog.zarr"
    return extract_store(
        "hog", image_store, out, run=ExtractParams(chunk_size=8, runner=RunnerParams(workers=2))
    )


def _run(image_store: Path, hog_store: Path, root: Path, params: TrainParams) -> Path:
    result = train(
        "hog",
        images_path=image_store,
        features_path=hog_store,
        out=root / "out",
        checkpoints=root / "ckpt",
        params=params,
        metrics_path=root / "m.json",
        plots_path=root / "loss.csv",
        progress=False,
    )
    return result.model_path


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)["model"]


def test_resume_reaches_the_same_weights(
    image_store: Path, hog_store: Path, tmp_path: Path
) -> None:
    clean = _weights(_run(image_store, hog_store, tmp_path / "clean", TINY))
    half = TrainParams(**{**TINY.__dict__, "steps": 3})
    _run(image_store, hog_store, tmp_path / "resumed", half)
    resumed = _weights(_run(image_store, hog_store, tmp_path / "resumed", TINY))
    assert clean.keys() == resumed.keys()
    for k in clean:
        torch.testing.assert_close(resumed[k], clean[k], rtol=0, atol=0)
    # and training changed the weights at all
    fresh = _weights(
        _run(image_store, hog_store, tmp_path / "one", TrainParams(**{**TINY.__dict__, "steps": 1}))
    )
    assert any(not torch.equal(fresh[k], clean[k]) for k in clean)


def test_outputs_metrics_plots_and_loading(
    image_store: Path, hog_store: Path, tmp_path: Path
) -> None:
    path = _run(image_store, hog_store, tmp_path, TINY)
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert metrics["steps"] == 6 and np.isfinite(metrics["train_loss"])
    assert np.isfinite(metrics["test_loss"])
    lines = (tmp_path / "loss.csv").read_text().splitlines()
    assert lines[0] == "step,loss" and len(lines) == 7
    model, config = load_decoder(path)
    assert config["target"] == "hog" and config["params"]["width"] == 0.125
    assert config["features_fingerprint"]
    out = model(torch.zeros(1, 31, 32, 32))
    assert out.shape == (1, 3, 256, 256)


def test_an_ensemble_is_its_members_plain_runs_and_decodes_with_their_mean(
    image_store: Path, hog_store: Path, tmp_path: Path
) -> None:
    """train.ensemble: 2 trains the runs of seeds 0 and 1 (member 0 shares the plain run's
    checkpoints) and its model file decodes with the mean of the two decoders."""
    from pipeline.decoders import Ensemble

    seeds = [
        _weights(_run(image_store, hog_store, tmp_path / f"seed{s}", replace(TINY, seed=s)))
        for s in (0, 1)
    ]
    assert any(not torch.equal(seeds[0][k], seeds[1][k]) for k in seeds[0])
    root = tmp_path / "ens"
    shutil.copytree(tmp_path / "seed0" / "ckpt", root / "ckpt")  # member 0: nothing to train
    path = _run(image_store, hog_store, root, replace(TINY, ensemble=2))
    blob = torch.load(path, weights_only=True)
    assert "model" not in blob and len(blob["members"]) == 2
    for member, alone in zip(blob["members"], seeds, strict=True):
        assert member.keys() == alone.keys()
        assert all(torch.equal(member[k], alone[k]) for k in alone)
    assert len(list((root / "ckpt").iterdir())) == 2  # one checkpoint folder per member
    model, config = load_decoder(path)
    assert isinstance(model, Ensemble) and config["params"]["ensemble"] == 2
    assert "ensemble" not in load_decoder(tmp_path / "seed0" / "out" / "model.pt")[1]["params"]
    x = torch.randn(2, 31, 32, 32)
    singles = [load_decoder(tmp_path / f"seed{s}" / "out" / "model.pt")[0] for s in (0, 1)]
    with torch.no_grad():
        expected = (singles[0](x) + singles[1](x)) / 2
        torch.testing.assert_close(model(x), expected)
    metrics = json.loads((root / "m.json").read_text())
    assert (
        metrics["parameters"]
        == 2 * json.loads((tmp_path / "seed0" / "m.json").read_text())["parameters"]
    )
    with pytest.raises(ConfigError, match="ensemble"):
        train(
            "hog",
            images_path=image_store,
            features_path=hog_store,
            out=tmp_path / "ft",
            checkpoints=tmp_path / "ft-ckpt",
            params=TINY,
            progress=False,
            init_from=path,
        )
    with pytest.raises(ConfigError, match=r"set train.hog.ensemble to 1"):
        train(
            "hog",
            images_path=image_store,
            features_path=None,
            out=tmp_path / "ae",
            checkpoints=tmp_path / "ae-ckpt",
            params=replace(TINY, ensemble=2, mode="autoencoder"),
            progress=False,
        )
    # one target's ensemble leaves the others' runs (an autoencoder here) alone
    section = {"steps": 10, "lbp": {"ensemble": 3, "collages": False}}
    assert parse_train_section({**section, "mode": "autoencoder"}, "conv2").ensemble == 1
    assert parse_train_section(section, "lbp").ensemble == 3
    with pytest.raises(ConfigError, match="ensemble"):
        replace(TINY, ensemble=0)


def test_divergence_rule() -> None:
    """A loss 1000x the recent median is a divergence; a young run, noise and spikes are not."""
    from pipeline.training import DIVERGENCE_WINDOW, diverged

    steady = [0.02] * DIVERGENCE_WINDOW
    assert diverged(steady, 3.7e5) and diverged(steady, 20.5)
    assert not diverged(steady, 19.9)
    assert not diverged(steady[:-1], 3.7e5)  # too few steps to judge (a start, a resume)
    rng = np.random.default_rng(0)
    curve = 0.1 * np.exp(-np.arange(2000) / 500) * rng.uniform(0.5, 1.5, 2000)
    curve[::97] *= 20  # occasional hard batches
    assert not any(diverged(list(curve[:k]), float(curve[k])) for k in range(len(curve)))


def test_a_diverging_run_stops_and_keeps_its_last_checkpoint(
    image_store: Path, hog_store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The run of the LBP study: stable, then exploding. Training stops with an error that
    says what to change, and nothing from the exploding steps is written."""
    import pipeline.training as training

    real, calls = training.train_step, []

    def exploding(*args: object, **kwargs: object) -> float:
        loss = real(*args, **kwargs)  # type: ignore[arg-type]
        calls.append(loss)
        return loss if len(calls) <= 55 else 1e6

    monkeypatch.setattr(training, "train_step", exploding)
    params = replace(TINY, steps=80, checkpoint_every=50)
    with pytest.raises(
        PipelineError, match=rf"\(seed {TINY.seed}\), step 55: the loss diverged .*lower train.lr"
    ):
        _run(image_store, hog_store, tmp_path, params)
    (folder,) = (tmp_path / "ckpt").iterdir()
    assert sorted(p.name for p in folder.iterdir()) == ["step-50.pt"]
    assert not (tmp_path / "out" / "model.pt").exists()


def test_truncated_checkpoint_falls_back_then_refuses(
    image_store: Path, hog_store: Path, tmp_path: Path
) -> None:
    _run(image_store, hog_store, tmp_path, TINY)
    ckpts = sorted((tmp_path / "ckpt").glob("*/step-*.pt"))
    assert [p.name for p in ckpts] == ["step-3.pt", "step-6.pt"]
    data = ckpts[1].read_bytes()
    ckpts[1].write_bytes(data[: len(data) // 2])
    longer = TrainParams(**{**TINY.__dict__, "steps": 7})
    _run(image_store, hog_store, tmp_path, longer)  # resumes from step 3 with a warning
    assert json.loads((tmp_path / "m.json").read_text())["steps"] == 7
    for p in (tmp_path / "ckpt").glob("*/step-*.pt"):
        p.write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match=r"truncated or corrupt.*delete the folder"):
        _run(image_store, hog_store, tmp_path, TrainParams(**{**TINY.__dict__, "steps": 8}))
    (tmp_path / "bad.pt").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="cannot read decoder"):
        load_decoder(tmp_path / "bad.pt")


def test_feature_store_of_other_images_is_refused(hog_store: Path, tmp_path: Path) -> None:
    other = prepare("sample", tmp_path / "other.zarr", small_prepare_params(seed=7))
    with pytest.raises(IncompatibleStoreError, match="input_fingerprint"):
        _run(other, hog_store, tmp_path, TINY)


def test_sigkill_during_train_then_rerun_equals_clean_run(
    image_store: Path, hog_store: Path, tmp_path: Path
) -> None:
    params = {
        "train": {
            "width": 0.125,
            "steps": 40,
            "batch_size": 4,
            "lr": 1e-3,
            "checkpoint_every": 2,
            "eval_batches": 0,
            "loader": {"workers": 0, "block_reads": 2},
        }
    }
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    cmd = [
        sys.executable,
        "-m",
        "stages",
        "train",
        "hog",
        "--images",
        str(image_store),
        "--features",
        str(hog_store),
        "--out",
        str(tmp_path / "out"),
        "--checkpoints",
        str(tmp_path / "ckpt"),
        "--params",
        str(tmp_path / "params.yaml"),
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if list(tmp_path.glob("ckpt/*/step-4.pt")):
            os.kill(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.01)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "training finished before it could be killed"
    assert not (tmp_path / "out" / "model.pt").exists()
    subprocess.run(cmd, check=True, capture_output=True)
    # the uninterrupted reference runs the same way (a process with the same thread count:
    # float sums in another order would differ in the last bits)
    clean = [
        *cmd[: cmd.index("--out") + 1],
        str(tmp_path / "clean"),
        "--checkpoints",
        str(tmp_path / "clean-ckpt"),
        "--params",
        str(tmp_path / "params.yaml"),
    ]
    subprocess.run(clean, check=True, capture_output=True)
    ref = _weights(tmp_path / "clean" / "model.pt")
    got = _weights(tmp_path / "out" / "model.pt")
    for k in ref:
        torch.testing.assert_close(got[k], ref[k], rtol=0, atol=0)


def test_loader_resume_with_workers(image_store: Path, hog_store: Path) -> None:
    lp = LoaderParams(workers=2, block_reads=1)
    full = list(
        zip(
            range(9),
            make_loader(
                StoreStream(image_store, hog_store, batch_size=4, params=lp), pin_memory=False
            ),
        )
    )
    later = list(
        zip(
            range(4),
            make_loader(
                StoreStream(image_store, hog_store, batch_size=4, params=lp, start_batch=5),
                pin_memory=False,
            ),
        )
    )
    for (_, (f1, x1)), (_, (f2, x2)) in zip(full[5:], later):
        assert torch.equal(f1, f2) and torch.equal(x1, x2)
    f, x = full[0][1]
    assert f.shape == (4, 31, 32, 32) and x.shape == (4, 3, 256, 256) and x.dtype == torch.uint8


def test_train_section_parsing() -> None:
    section = {
        "width": 0.25,
        "steps": 100,
        "hog": {"steps": 50, "loader": {"workers": 1}},
        "lbp": {"lr": 1e-3},
    }
    p = parse_train_section(section, "hog")
    assert p.steps == 50 and p.width == 0.25 and p.loader.workers == 1
    assert parse_train_section(section, "lbp").steps == 100
    with pytest.raises(ConfigError, match=r"unknown key\(s\) 'stpes' \(did you mean 'steps'\?\)"):
        parse_train_section({"hog": {"stpes": 3}}, "hog")
    with pytest.raises(ConfigError, match=r"unknown key\(s\) 'lerning_rate'"):
        parse_train_section({"sift": {"lerning_rate": 3}}, "hog")
    with pytest.raises(ConfigError, match="unknown target 'hgo'"):
        parse_train_section({}, "hgo")
    with pytest.raises(ConfigError, match=r"invalid train value.*lr"):
        parse_train_section({"lr": -1.0}, "hog")


def test_target_images_sizes() -> None:
    x = torch.randint(0, 256, (2, 3, 256, 256), dtype=torch.uint8)
    assert target_images(x, "hog").shape == (2, 3, 256, 256)
    assert target_images(x, "conv1").shape == (2, 3, 216, 216)
    assert target_images(x, "fc8").shape == (2, 3, 128, 128)
    y = target_images(x, "hog")
    assert float(y.min()) >= -0.5 and float(y.max()) <= 0.5


def test_autoencoder_trains_the_encoder_too(image_store: Path, tmp_path: Path) -> None:
    params = TrainParams(**{**TINY.__dict__, "mode": "autoencoder", "steps": 2})
    result = train(
        "conv5",
        images_path=image_store,
        features_path=None,
        out=tmp_path / "out",
        checkpoints=tmp_path / "ckpt",
        params=params,
        feature_params={"weights": "random:0"},
        progress=False,
    )
    from pipeline import alexnet
    from pipeline.evaluation import load_inverter

    encoder = load_inverter(result.model_path, device="cpu").encoder
    assert encoder is not None
    blob = torch.load(result.model_path, weights_only=True)
    initial = alexnet.build("caffenet", weights="random:0")
    # the inverter's encoder is the trained one: same outputs as the stored weights give
    trained = alexnet.build("caffenet", weights="random:1")
    trained.load_state_dict(blob["encoder"])
    x = torch.randint(0, 256, (1, 3, 256, 256), dtype=torch.uint8)
    images = x.permute(0, 2, 3, 1).float() / 255.0
    expected = trained.forward_layers(alexnet.preprocess(images, "caffenet"), ["conv5"])["conv5"]
    torch.testing.assert_close(encoder(x), expected)
    changed = [k for k, v in blob["encoder"].items() if not torch.equal(v, initial.state_dict()[k])]
    assert "features.conv1.weight" in changed
    _, config = load_decoder(result.model_path)
    assert config["random_weights"] is True and config["in_channels"] == 256


def test_online_hog_equals_the_store(image_store: Path, hog_store: Path, tmp_path: Path) -> None:
    stored = _weights(_run(image_store, hog_store, tmp_path / "a", TINY))
    online = TrainParams(**{**TINY.__dict__, "online": True})
    result = train(
        "hog",
        images_path=image_store,
        features_path=None,
        out=tmp_path / "b",
        checkpoints=tmp_path / "ckpt",
        params=online,
        progress=False,
    )
    got = _weights(result.model_path)
    for k in stored:  # the same features, computed on the device instead of read
        torch.testing.assert_close(got[k], stored[k], rtol=1e-4, atol=1e-5)
    with pytest.raises(ConfigError, match="not available for 'sift'"):
        train(
            "sift",
            images_path=image_store,
            features_path=None,
            out=tmp_path / "c",
            checkpoints=tmp_path / "ckpt",
            params=online,
            progress=False,
        )


@pytest.mark.slow
def test_torchrun_two_processes_on_cpu(image_store: Path, hog_store: Path, tmp_path: Path) -> None:
    """DistributedDataParallel with the gloo backend: two ranks, rank 0 writes the outputs."""
    params = {
        "train": {
            "width": 0.125,
            "steps": 4,
            "batch_size": 4,
            "lr": 1e-3,
            "checkpoint_every": 2,
            "eval_batches": 1,
            "device": "cpu",
            "loader": {"workers": 0, "block_reads": 1},
        }
    }
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        "29517",
        "-m",
        "stages",
        "train",
        "hog",
        "--images",
        str(image_store),
        "--features",
        str(hog_store),
        "--out",
        str(tmp_path / "out"),
        "--checkpoints",
        str(tmp_path / "ckpt"),
        "--params",
        str(tmp_path / "params.yaml"),
        "--metrics",
        str(tmp_path / "m.json"),
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((tmp_path / "m.json").read_text())["steps"] == 4
    assert len(list(tmp_path.glob("ckpt/*/step-*.pt"))) == 2


def test_one_torchrun_process_trains_through_ddp(
    image_store: Path, hog_store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Started by torchrun (its environment), one process joins a gloo group and trains
    through DistributedDataParallel, to the weights of a plain run."""
    import socket

    import torch.distributed as dist

    plain = _weights(_run(image_store, hog_store, tmp_path / "plain", TINY))
    wrapped: list[int] = []

    class Spy(torch.nn.parallel.DistributedDataParallel):
        def __init__(self, module: torch.nn.Module, **kwargs: object) -> None:
            super().__init__(module, **kwargs)  # type: ignore[arg-type]
            wrapped.append(dist.get_world_size())

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {"TORCHELASTIC_RUN_ID": "t", "RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1"}
    for key, value in {**env, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(torch.nn.parallel, "DistributedDataParallel", Spy)
    try:
        ddp = _weights(_run(image_store, hog_store, tmp_path / "ddp", TINY))
        assert dist.is_initialized() and dist.get_backend() == "gloo"
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    assert wrapped == [1]
    for k in plain:
        torch.testing.assert_close(ddp[k], plain[k], rtol=0, atol=0)


@pytest.fixture(scope="module")
def hog_store_per_sample(image_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """HOG with one sample per chunk (the default): every copy checked by its crc32c."""
    out = tmp_path_factory.mktemp("feat1") / "hog.zarr"
    return extract_store("hog", image_store, out, run=ExtractParams(runner=RunnerParams(workers=2)))


@pytest.mark.parametrize("features", ["hog_store", "hog_store_per_sample"])
def test_loader_epoch_pairs_every_sample_with_its_own_features(
    image_store: Path, features: str, request: pytest.FixtureRequest
) -> None:
    """One epoch: each usable train sample exactly once, its features beside its image.

    Images have one sample per chunk (copies checked one by one); the features 8 samples
    per chunk (verified whole when read) or one.
    """
    hog_store = request.getfixturevalue(features)
    images = open_store(image_store).array("images")[:]
    feats = open_store(hog_store).array("features")[:]
    usable = usable_indices(hog_store, "train")
    by_image = {images[i].tobytes(): i for i in usable}
    assert len(by_image) == len(usable)  # the photographs' crops are all different
    stream = StoreStream(
        image_store, hog_store, batch_size=4, params=LoaderParams(workers=0, block_reads=2)
    )
    seen: list[int] = []
    for f, x in stream:
        for k in range(len(x)):
            i = by_image[x[k].permute(1, 2, 0).numpy().tobytes()]
            np.testing.assert_array_equal(f[k].numpy(), feats[i])
            seen.append(i)
        if len(seen) >= len(usable) - len(usable) % 4:
            break
    assert len(set(seen)) == len(seen)  # no sample twice within the epoch
    assert set(seen) <= set(usable.tolist())


def test_loader_names_a_damaged_sample(image_store: Path, tmp_path: Path) -> None:
    """A flipped byte inside one photograph: the batch holding it fails, naming its chunk."""
    store = tmp_path / "images.zarr"
    shutil.copytree(image_store, store)
    images = open_store(store).array("images")
    assert images.chunks[0] == 1
    k = int(usable_indices(store, "train")[3])  # a training sample of shard 0
    assert k < 16
    shard = store / "images" / "c" / "0" / "0" / "0" / "0"
    row = int(np.prod(images.shape[1:]))
    data = bytearray(shard.read_bytes())
    data[(k % 16) * (row + 4) + row // 2] ^= 0x01  # one bit, in the middle of the image
    shard.write_bytes(bytes(data))
    stream = StoreStream(store, None, batch_size=4, params=LoaderParams(workers=0))
    seen = 0
    with pytest.raises(CorruptStoreError, match=rf"array 'images': chunk \({k}, 0, 0, 0\)"):
        for _, x in stream:
            seen += len(x)
            assert seen <= len(usable_indices(store, "train")) + 4  # within one epoch
