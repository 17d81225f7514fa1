"""DeePSiM training (``train.loss: deepsim``): params, the step's alternation, resume, outputs.

The losses and the pausing rule themselves are tested in ``test_deepsim.py``; here, their
wiring into ``pipeline.deepsim_training`` (the step) and ``pipeline.training`` (the run).
Runs use the HOG decoder at width 0.125, batch 2, and the CONV1 comparator (the cheapest
AlexNet group) so that a step takes about a second.
"""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import pytest
import torch
from torch import nn

from pipeline.checkpoints import load_decoder
from pipeline.deepsim import Alternation, DeepSimParams, Discriminator
from pipeline.deepsim_training import Adversary, deepsim_step, step_rng
from pipeline.errors import CheckpointError, ConfigError
from pipeline.extract import ExtractParams, extract_store
from pipeline.loader import LoaderParams
from pipeline.runner import RunnerParams
from pipeline.training import TrainParams, parse_train_section, train, train_step

COMPARATOR = {"arch": "caffenet", "weights": "random:0"}

TINY = TrainParams(
    width=0.125,
    steps=4,
    batch_size=2,
    lr=1e-3,
    checkpoint_every=2,
    log_every=1,
    eval_batches=1,
    device="cpu",
    loader=LoaderParams(workers=0, block_reads=2),
    loss="deepsim",
    # pause_ratio 0.9: the generator's term pauses from the second step on (its loss is
    # about half the discriminator's), so the runs below exercise the rule's state
    deepsim=DeepSimParams(comparator_layer="conv1", pause_ratio=0.9),
)


@pytest.fixture(scope="module")
def hog_store(image_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("feat") / "hog.zarr"
    return extract_store(
        "hog", image_store, out, run=ExtractParams(chunk_size=8, runner=RunnerParams(workers=2))
    )


def _run(
    image_store: Path, hog_store: Path, root: Path, params: TrainParams, **kwargs: object
) -> Path:
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
        **{"comparator_params": COMPARATOR, **kwargs},  # type: ignore[arg-type]
    )
    return result.model_path


def _blob(path: Path) -> dict[str, object]:
    return torch.load(path, weights_only=True)


def _with(params: TrainParams, **changes: object) -> TrainParams:
    return TrainParams(**{**params.__dict__, **changes})


# --- params -------------------------------------------------------------------------------


def test_section_parsing_per_target_override_and_refusals() -> None:
    section = {
        "width": 0.25,
        "deepsim": {"lambda_adv": 0.5, "comparator_layer": "conv3"},
        "hog": {"loss": "deepsim", "deepsim": {"pause_ratio": 0.2}},
    }
    hog = parse_train_section(section, "hog")
    assert hog.loss == "deepsim" and hog.deepsim.loss == "deepsim"
    # the target's deepsim keys merge into the common ones
    assert hog.deepsim.pause_ratio == 0.2 and hog.deepsim.lambda_adv == 0.5
    assert hog.deepsim.comparator_layer == "conv3" and hog.deepsim.disc_lr == 2e-4
    lbp = parse_train_section(section, "lbp")
    assert lbp.loss == "pixel" and lbp.deepsim.loss == "pixel"
    assert parse_train_section({}, "hog").loss == "pixel"

    with pytest.raises(ConfigError, match=r"unknown key\(s\) 'lambda_fet'.*train.deepsim"):
        parse_train_section({"deepsim": {"lambda_fet": 1.0}}, "hog")
    with pytest.raises(ConfigError, match=r"unknown key\(s\) 'bogus'.*train.sift.deepsim"):
        parse_train_section({"sift": {"deepsim": {"bogus": 1}}}, "hog")
    with pytest.raises(ConfigError, match=r"'train.hog.deepsim.loss' is not allowed"):
        parse_train_section({"hog": {"deepsim": {"loss": "deepsim"}}}, "hog")
    with pytest.raises(ConfigError, match=r"'train.deepsim.loss' is not allowed"):
        parse_train_section({"deepsim": {"loss": "pixel"}}, "hog")
    with pytest.raises(ConfigError, match="must be one of 'pixel', 'deepsim'"):
        parse_train_section({"loss": "perceptual"}, "hog")
    with pytest.raises(ConfigError, match="needs a comparator"):
        parse_train_section({"loss": "deepsim", "deepsim": {"comparator_layer": None}}, "hog")
    # without a feature term no comparator is needed
    p = parse_train_section(
        {"loss": "deepsim", "deepsim": {"comparator_layer": None, "lambda_feat": 0}}, "hog"
    )
    assert p.deepsim.comparator_layer is None
    # the subsection's loss is train.loss's, however it was built
    assert TrainParams(deepsim=DeepSimParams(loss="deepsim")).deepsim.loss == "pixel"
    assert _with(TINY, loss="pixel").deepsim.loss == "pixel"


def test_pixel_record_has_no_deepsim_keys() -> None:
    """A pixel run records (and hashes) the keys it had before DeePSiM existed."""
    pixel = TrainParams()
    assert "loss" not in pixel.record() and "deepsim" not in pixel.record()
    assert "loss" not in pixel.identity_fields() and "deepsim" not in pixel.identity_fields()
    # the deepsim weights of a pixel run are not used, so they do not change its identity
    other = _with(pixel, deepsim=DeepSimParams(lambda_adv=1.0))
    assert other.identity_fields() == pixel.identity_fields()
    ds = TINY.record()
    assert ds["loss"] == "deepsim" and ds["deepsim"]["pause_ratio"] == 0.9
    assert "loss" not in ds["deepsim"]  # said once, by train.loss


def test_deepsim_without_a_comparator_is_refused(image_store: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"pass comparator_params.*lambda_feat: 0"):
        train(
            "hog",
            images_path=image_store,
            features_path=None,
            out=tmp_path / "out",
            checkpoints=tmp_path / "ckpt",
            params=TINY,
            progress=False,
        )
    assert not (tmp_path / "ckpt").exists()  # refused before any work


# --- one step -----------------------------------------------------------------------------


class _TinyDecoder(nn.Module):
    """Features (B, 4) -> images (B, 3, 16, 16): a decoder small enough to reason about."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 3 * 16 * 16)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        return self.fc(feats).view(-1, 3, 16, 16)  # (B, 3, 16, 16)


def _setup(last_d: float, last_g: float) -> tuple[nn.Module, torch.optim.Adam, Adversary]:
    torch.manual_seed(0)
    net = _TinyDecoder()
    # no feature term (comparator None); adversarial weight 1 so its effect is visible
    params = DeepSimParams(
        loss="deepsim", lambda_feat=0.0, lambda_adv=1.0, comparator_layer=None, pause_ratio=0.5
    )
    disc = Discriminator(feature_dim=4, width=0.125, dropout=0.0)
    alternation = Alternation(ratio=0.5, last_d_loss=last_d, last_g_adv=last_g)
    disc_opt = torch.optim.Adam(disc.parameters(), lr=1e-3)
    adversary = Adversary(params, None, disc, disc_opt, alternation)
    return net, torch.optim.Adam(net.parameters(), lr=1e-3), adversary


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(3, 4, generator=g), torch.rand(3, 3, 16, 16, generator=g) - 0.5


def _copy(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in state.items()}


def test_paused_discriminator_keeps_its_weights() -> None:
    # last d_loss 0.1 < 0.5 x g_adv 1.0: the discriminator is too far ahead and pauses
    net, opt, adversary = _setup(last_d=0.1, last_g=1.0)
    before = _copy(adversary.disc.state_dict())
    result = deepsim_step(net, opt, adversary, *_batch())
    assert not result.disc_trained and result.gen_adv_used
    for k, v in adversary.disc.state_dict().items():
        assert torch.equal(v, before[k]), k
    # its gradients from the generator's adversarial loss were dropped, not kept for later
    assert all(p.grad is None for p in adversary.disc.parameters())
    assert adversary.alternation.disc_paused == 1 and adversary.alternation.gen_paused == 0
    # the rule moves on with this step's measured losses
    assert adversary.alternation.last_d_loss == pytest.approx(result.adv_d)


def test_training_discriminator_changes_and_paused_generator_term_is_a_pixel_step() -> None:
    # last g_adv 0.1 < 0.5 x d_loss 1.0: the generator is too far ahead; its term pauses
    net, opt, adversary = _setup(last_d=1.0, last_g=0.1)
    before = _copy(adversary.disc.state_dict())
    pixel_net = copy.deepcopy(net)
    pixel_opt = torch.optim.Adam(pixel_net.parameters(), lr=1e-3)
    feats, targets = _batch()
    result = deepsim_step(net, opt, adversary, feats, targets)
    assert result.disc_trained and not result.gen_adv_used
    changed = [k for k, v in adversary.disc.state_dict().items() if not torch.equal(v, before[k])]
    assert "image.conv1.weight" in changed and "joint.fc4.weight" in changed
    assert adversary.alternation.gen_paused == 1 and adversary.alternation.disc_paused == 0
    # lambda_img = 1 and no other term: exactly the pixel step of the same decoder
    loss = train_step(pixel_net, pixel_opt, feats, targets)
    assert loss == pytest.approx(result.pixel, rel=0, abs=0)
    for k, v in pixel_net.state_dict().items():
        assert torch.equal(net.state_dict()[k], v), k


def test_generator_term_in_use_changes_the_decoder_update() -> None:
    net, opt, adversary = _setup(last_d=1.0, last_g=1.0)  # neither side pauses
    pixel_net = copy.deepcopy(net)
    pixel_opt = torch.optim.Adam(pixel_net.parameters(), lr=1e-3)
    feats, targets = _batch()
    result = deepsim_step(net, opt, adversary, feats, targets)
    assert result.disc_trained and result.gen_adv_used
    assert result.objective == pytest.approx(result.pixel + result.adv_g)  # weights 1 and 1
    train_step(pixel_net, pixel_opt, feats, targets)
    assert not torch.equal(net.fc.weight, pixel_net.fc.weight)


def _ddp_worker(rank: int, world: int, init_file: str, out: str) -> None:
    """One rank of :func:`test_ranks_stay_in_step`: 3 DeePSiM steps on this rank's data."""
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        net, opt, adversary = _setup(last_d=1.0, last_g=1.0)  # the same weights on every rank
        ddp = nn.parallel.DistributedDataParallel(net)
        g = torch.Generator().manual_seed(100 + rank)  # each rank its own batches
        for step in range(3):
            feats, targets = torch.randn(3, 4, generator=g), torch.rand(3, 3, 16, 16, generator=g)
            with step_rng(0, step, torch.device("cpu")):
                result = deepsim_step(ddp, opt, adversary, feats, targets - 0.5)
        state = {
            "disc": adversary.disc.state_dict(),
            "net": net.state_dict(),
            "alternation": adversary.alternation.state_dict(),
            "result": result.row(),
        }
        torch.save(state, Path(out) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_ranks_stay_in_step(tmp_path: Path) -> None:
    """Under torchrun every rank ends with the same decoder, discriminator and pausing
    rule, though each saw other batches: the discriminator's gradients and the losses the
    rule decides on are averaged across ranks (the decoder's by DDP)."""
    import torch.multiprocessing as mp

    mp.spawn(_ddp_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2)
    a, b = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    _, _, fresh = _setup(last_d=1.0, last_g=1.0)
    assert a["alternation"] == b["alternation"]
    ra, rb = torch.tensor(a["result"]), torch.tensor(b["result"])  # feature: NaN (no term)
    torch.testing.assert_close(rb, ra, rtol=0, atol=0, equal_nan=True)
    # the discriminator trained (it moved from its initialisation) and identically
    moved = [k for k, v in a["disc"].items() if not torch.equal(v, fresh.disc.state_dict()[k])]
    assert "joint.fc4.weight" in moved
    for key in ("disc", "net"):
        for k, v in a[key].items():
            torch.testing.assert_close(b[key][k], v, rtol=0, atol=0, msg=f"{key}.{k}")


def test_one_torchrun_process_runs_deepsim_through_ddp(
    image_store: Path, hog_store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Started by torchrun (world size 1), a DeePSiM run trains through DDP to the
    generator and discriminator of a plain run."""
    import socket

    import torch.distributed as dist

    plain = _blob(_run(image_store, hog_store, tmp_path / "plain", _with(TINY, steps=2)))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {"TORCHELASTIC_RUN_ID": "t", "RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1"}
    for key, value in {**env, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}.items():
        monkeypatch.setenv(key, value)
    try:
        ddp = _blob(_run(image_store, hog_store, tmp_path / "ddp", _with(TINY, steps=2)))
        assert dist.is_initialized()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    for key in ("model", "discriminator"):
        a, b = plain[key], ddp[key]
        assert isinstance(a, dict) and isinstance(b, dict) and a.keys() == b.keys()
        for k in a:
            torch.testing.assert_close(b[k], a[k], rtol=0, atol=0)


# --- runs ---------------------------------------------------------------------------------


def test_tiny_run_writes_a_model_that_loads(
    image_store: Path, hog_store: Path, tmp_path: Path
) -> None:
    path = _run(image_store, hog_store, tmp_path, TINY)
    blob = _blob(path)
    assert list(blob) == ["model", "config", "discriminator"]
    model, config = load_decoder(path)  # the generator alone, as evaluate needs it
    assert model(torch.zeros(1, 31, 32, 32)).shape == (1, 3, 256, 256)
    assert config["params"]["loss"] == "deepsim"
    assert config["params"]["deepsim"]["comparator_layer"] == "conv1"
    assert config["deepsim"]["comparator"]["weights"] == {"kind": "random", "seed": 0}
    assert config["deepsim"]["comparator"]["random_weights"] is True
    from pipeline.evaluation import load_inverter

    assert load_inverter(path, device="cpu").encoder is None

    lines = (tmp_path / "loss.csv").read_text().splitlines()
    assert lines[0] == "step,loss,pixel,feature,adv_g,adv_d,disc_trained,gen_adv_used"
    rows = [[float(v) for v in line.split(",")] for line in lines[1:]]
    assert [r[0] for r in rows] == [1, 2, 3, 4]
    assert rows[0][6] == 1 and rows[0][7] == 1  # the first step trains both sides
    assert all(r[7] == 0 for r in rows[1:])  # pause_ratio 0.9: then the generator's pauses
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert metrics["loss"] == "deepsim" and metrics["gen_paused"] == 3
    assert metrics["train_loss"] == pytest.approx(rows[-1][2], rel=1e-3)  # the pixel MSE
    # the discriminator was trained: not its initial weights
    torch.manual_seed(TINY.seed)
    initial = Discriminator(31 * 32 * 32, width=TINY.width).state_dict()
    disc = blob["discriminator"]
    assert isinstance(disc, dict)
    assert not torch.equal(disc["image.conv1.weight"], initial["image.conv1.weight"])


def test_resume_reaches_the_same_generator_and_discriminator(
    image_store: Path, hog_store: Path, tmp_path: Path
) -> None:
    clean = _blob(_run(image_store, hog_store, tmp_path / "clean", TINY))
    _run(image_store, hog_store, tmp_path / "resumed", _with(TINY, steps=2))  # stops at step 2
    resumed = _blob(_run(image_store, hog_store, tmp_path / "resumed", TINY))
    for key in ("model", "discriminator"):
        a, b = clean[key], resumed[key]
        assert isinstance(a, dict) and isinstance(b, dict) and a.keys() == b.keys()
        for k in a:
            torch.testing.assert_close(b[k], a[k], rtol=0, atol=0)
    ckpt_a = torch.load(next((tmp_path / "clean").glob("ckpt/*/step-4.pt")), weights_only=True)
    ckpt_b = torch.load(next((tmp_path / "resumed").glob("ckpt/*/step-4.pt")), weights_only=True)
    assert ckpt_a["alternation"] == ckpt_b["alternation"]
    assert ckpt_a["alternation"]["gen_paused"] == 3  # the restored rule kept counting
    assert ckpt_a["curve"] == ckpt_b["curve"]
    for k, v in ckpt_a["disc_optimizer"]["state"].items():
        torch.testing.assert_close(ckpt_b["disc_optimizer"]["state"][k], v, rtol=0, atol=0)


def test_checkpoints_of_another_loss_are_not_mixed(
    image_store: Path, hog_store: Path, tmp_path: Path
) -> None:
    other = DeepSimParams(comparator_layer="conv1", pause_ratio=0.9, lambda_adv=0.0)
    runs = {
        "pixel": _with(TINY, loss="pixel", steps=2),
        "deepsim": _with(TINY, steps=2),
        "other": _with(TINY, steps=2, deepsim=other),  # other deepsim weights
    }
    folders = {}
    for name, params in runs.items():
        _run(image_store, hog_store, tmp_path / name, params)
        (folders[name],) = (tmp_path / name / "ckpt").iterdir()
    # three identities: three checkpoint folders, whatever root they share
    assert len({f.name for f in folders.values()}) == 3
    # a pixel checkpoint where the deepsim run resumes is refused, not loaded
    for old in folders["deepsim"].glob("step-*.pt"):
        old.unlink()
    shutil.copy(folders["pixel"] / "step-2.pt", folders["deepsim"] / "step-2.pt")
    with pytest.raises(CheckpointError, match="belongs to another run"):
        _run(image_store, hog_store, tmp_path / "deepsim", TINY)


def test_step_rng_depends_on_seed_and_step_only() -> None:
    """Dropout masks of a DeePSiM step: fixed by (seed, step), new each step, RNG restored."""
    cpu = torch.device("cpu")
    torch.manual_seed(123)
    outside = torch.get_rng_state()

    def draw(seed: int, step: int) -> torch.Tensor:
        with step_rng(seed, step, cpu):
            return torch.rand(8)

    assert torch.equal(draw(0, 5), draw(0, 5))
    assert not torch.equal(draw(0, 5), draw(0, 6))
    assert not torch.equal(draw(0, 5), draw(1, 5))
    assert torch.equal(torch.get_rng_state(), outside)  # the global RNG is left as it was
