"""AlexNet activations as features: shapes, one pass for many layers, weights, storage."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import zarr

from pipeline import alexnet, features
from pipeline.alexnet.activations import AlexNetParams, activations
from pipeline.errors import IncompatibleStoreError, WeightsError
from pipeline.extract import ExtractParams, extract_stores
from pipeline.provenance import open_feature_store
from pipeline.runner import RunnerParams
from pipeline.store import open_store
from tests.test_weights import reference_caffenet

RUN = ExtractParams(chunk_size=8, device="cpu", runner=RunnerParams(workers=2, batch_size=16))
CAFFENET_SHAPES = {
    "conv1": (96, 27, 27),
    "conv2": (256, 13, 13),
    "conv3": (384, 13, 13),
    "conv4": (384, 13, 13),
    "conv5": (256, 6, 6),
    "fc6": (4096,),
    "fc7": (4096,),
    "fc8": (1000,),
}


def test_every_layer_shape(photo_batch: np.ndarray) -> None:
    for layer, shape in CAFFENET_SHAPES.items():
        out = features.extract(layer, photo_batch[:2], weights="random:1")
        assert out.shape == (2, *shape) and out.dtype == np.float32 and np.isfinite(out).all()
    assert features.extract("conv1", photo_batch[:1], arch="torchvision").shape == (1, 64, 27, 27)


def test_activations_equal_a_forward_written_by_hand(photo_batch: np.ndarray) -> None:
    """Every layer against CaffeNet written with ``torch.nn.functional`` (test_weights.py).

    The weights are those of ``random:3`` (read from the built network); the forward, the
    crop, the BGR order and the mean are the reference's own, from the CaffeNet definition.
    """
    state = alexnet.build("caffenet", weights="random:3").state_dict()
    weights = {
        name: [state[f"{group}.{name}.weight"].numpy(), state[f"{group}.{name}.bias"].numpy()]
        for group, names in (("features", alexnet.LAYERS[:5]), ("classifier", alexnet.LAYERS[5:]))
        for name in names
    }
    with torch.no_grad():
        reference = reference_caffenet(photo_batch, weights)
    got = activations(photo_batch, AlexNetParams(weights="random:3"), alexnet.LAYERS)
    for layer in alexnet.LAYERS:
        ref = reference[layer].numpy()
        assert got[layer].shape == (len(photo_batch), *CAFFENET_SHAPES[layer]), layer
        assert np.abs(ref).max() > 0, layer  # a live network, not zeros everywhere
        atol = 1e-4 * float(np.abs(ref).max())  # test_weights.assert_activations_match's
        np.testing.assert_allclose(got[layer], ref, rtol=1e-4, atol=atol, err_msg=layer)


def test_several_layers_one_pass_into_float16_stores(
    image_store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = []
    original = alexnet.AlexNetBase.forward_layers

    def counting(self: alexnet.AlexNetBase, x: torch.Tensor, layers: list[str]) -> object:
        calls.append(tuple(layers))
        return original(self, x, layers)

    monkeypatch.setattr(alexnet.AlexNetBase, "forward_layers", counting)
    names = ["conv2", "conv5", "fc7"]
    outs = {n: tmp_path / f"{n}.zarr" for n in names}
    params = AlexNetParams(weights="random:2")
    extract_stores(names, image_store, outs, params=params, run=RUN)
    n = len(open_store(image_store))
    assert all(c == tuple(names) for c in calls)
    assert len(calls) == 3  # 3 shards of 16 images, one forward each, for all three layers
    images = open_store(image_store).array("images")[:]
    ref = activations(images, params, names)
    for name in names:
        group = zarr.open_group(outs[name], mode="r")
        stored = np.asarray(group["features"][:])
        assert stored.dtype == np.float16 and stored.shape == (n, *CAFFENET_SHAPES[name])
        scale = np.abs(ref[name]).max()
        assert np.abs(stored.astype(np.float32) - ref[name]).max() <= 1e-3 * scale
        attrs = dict(group.attrs)
        assert attrs["random_weights"] is True
        assert attrs["provenance"]["weights"] == {"kind": "random", "seed": 2}
        assert "layers" not in attrs["provenance"]["params"]
    with pytest.raises(IncompatibleStoreError, match=r"params\.weights"):
        open_feature_store(outs["conv5"], "conv5", AlexNetParams(weights="random:9"))
    open_feature_store(outs["conv5"], "conv5", AlexNetParams(weights="random:2", layers=("fc8",)))


def test_weights_file_is_recorded_and_wrong_architecture_refused(
    image_store: Path, tmp_path: Path
) -> None:
    tv = alexnet.build("torchvision", weights="random:4")
    pth = tmp_path / "alexnet-tv.pth"
    torch.save(tv.state_dict(), pth)
    params = AlexNetParams(arch="torchvision", weights=str(pth))
    out = extract_stores(
        ["conv5"], image_store, {"conv5": tmp_path / "c5.zarr"}, params=params, run=RUN
    )["conv5"]
    prov = open_store(out).provenance
    assert prov["weights"]["kind"] == "file" and len(prov["weights"]["sha256"]) == 64
    assert open_store(out).attrs["random_weights"] is False
    images = open_store(image_store).array("images")[:4]
    with torch.no_grad():
        ref = tv.forward_layers(alexnet.preprocess(images, "torchvision"), ["conv5"])["conv5"]
    np.testing.assert_allclose(
        open_store(out).array("features")[:4].astype(np.float32),
        ref.numpy(),
        rtol=2e-3,
        atol=2e-3 * float(ref.abs().max()),
    )
    with pytest.raises(WeightsError, match="torchvision"):
        features.extract("conv5", images, arch="caffenet", weights=str(pth))
