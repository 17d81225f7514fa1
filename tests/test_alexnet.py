"""The AlexNet family: layer groups, shapes, one forward for many layers, LRN, inputs, seeds.

Weight files and the comparison with an independent functional forward are in
``test_weights.py``; here the networks carry ``random:SEED`` weights.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from pipeline.alexnet import (
    ARCHITECTURES,
    LAYERS,
    CaffeNet,
    TorchvisionAlexNet,
    build,
    describe_weights,
    get_architecture,
    is_random_weights,
    output_shape,
    parse_random_seed,
    preprocess,
)
from pipeline.errors import ConfigError, ExtractionError, WeightsError

EXPECTED_SHAPES = {
    "caffenet": {
        "conv1": (96, 27, 27),
        "conv2": (256, 13, 13),
        "conv3": (384, 13, 13),
        "conv4": (384, 13, 13),
        "conv5": (256, 6, 6),
        "fc6": (4096,),
        "fc7": (4096,),
        "fc8": (1000,),
    },
    "torchvision": {
        "conv1": (64, 27, 27),
        "conv2": (192, 13, 13),
        "conv3": (384, 13, 13),
        "conv4": (256, 13, 13),
        "conv5": (256, 6, 6),
        "fc6": (4096,),
        "fc7": (4096,),
        "fc8": (1000,),
    },
}


@pytest.fixture(scope="module")
def models() -> dict[str, nn.Module]:
    return {arch: build(arch, weights="random:0") for arch in ARCHITECTURES}


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    """Two smooth 256x256 uint8 RGB images."""
    y, x = np.mgrid[0:256, 0:256] / 255.0
    first = np.stack([x, y, (x + y) / 2], axis=-1)
    second = np.stack([1 - y, np.sin(6 * x) ** 2, x * y], axis=-1)
    return np.round(np.stack([first, second]) * 255).astype(np.uint8)  # (2, 256, 256, 3)


@pytest.mark.parametrize("arch", ["caffenet", "torchvision"])
def test_every_group_has_the_documented_shape(
    models: dict[str, nn.Module], images: np.ndarray, arch: str
) -> None:
    with torch.no_grad():
        out = models[arch].forward_layers(preprocess(images, arch), LAYERS)
    assert list(out) == list(LAYERS)
    for layer, activation in out.items():
        assert tuple(activation.shape) == (2, *EXPECTED_SHAPES[arch][layer]), layer
        assert output_shape(arch, layer) == EXPECTED_SHAPES[arch][layer]
        assert torch.isfinite(activation).all(), layer
        assert activation.std() > 0, layer


@pytest.mark.parametrize("model_cls", [CaffeNet, TorchvisionAlexNet])
def test_group_table_points_at_the_last_step_of_each_group(model_cls: type) -> None:
    with torch.device("meta"):
        model = model_cls()
    assert tuple(model_cls.GROUP_ENDS) == LAYERS
    names = [name for name, _ in model.steps()]
    positions = [names.index(model_cls.GROUP_ENDS[layer]) for layer in LAYERS]
    assert positions == sorted(positions)
    kinds = {layer: type(model.get_submodule(model_cls.GROUP_ENDS[layer])) for layer in LAYERS}
    assert kinds["fc8"] is nn.Linear
    assert kinds["conv3"] is kinds["conv4"] is kinds["fc6"] is kinds["fc7"] is nn.ReLU
    if model_cls is CaffeNet:  # Table 1: conv1/conv2 end at the norm, conv5 at the pool
        assert kinds["conv1"] is kinds["conv2"] is nn.LocalResponseNorm
        assert kinds["conv5"] is nn.MaxPool2d
    for module_path in model_cls.PARAM_LAYERS.values():
        assert isinstance(model.get_submodule(module_path), (nn.Conv2d, nn.Linear))


def test_caffenet_follows_table_1() -> None:
    with torch.device("meta"):
        net = CaffeNet()
    convs = [net.get_submodule(f"features.conv{i}") for i in range(1, 6)]
    # (out channels, kernel, stride, padding, groups) of conv1..conv5
    expected = [(96, 11, 4, 0, 1), (256, 5, 1, 2, 2), (384, 3, 1, 1, 1), (384, 3, 1, 1, 2)]
    expected.append((256, 3, 1, 1, 2))
    got = [(c.out_channels, c.kernel_size[0], c.stride[0], c.padding[0], c.groups) for c in convs]
    assert got == expected
    for norm in (net.features.norm1, net.features.norm2):
        assert (norm.size, norm.alpha, norm.beta, norm.k) == (5, 1e-4, 0.75, 1.0)
    widths = [net.get_submodule(f"classifier.fc{i}").out_features for i in (6, 7, 8)]
    assert widths == [4096, 4096, 1000]


@pytest.mark.parametrize("arch", ["caffenet", "torchvision"])
def test_one_forward_equals_separate_calls(
    models: dict[str, nn.Module], images: np.ndarray, arch: str
) -> None:
    model = models[arch]
    x = preprocess(images, arch)
    with torch.no_grad():
        together = model.forward_layers(x, ["fc7", "conv2", "conv5"])
        assert list(together) == ["fc7", "conv2", "conv5"]  # the order asked for
        for layer, activation in together.items():
            assert torch.equal(activation, model.forward_layers(x, [layer])[layer]), layer
        assert torch.equal(model(x), model.forward_layers(x, "fc8")["fc8"])


def test_forward_stops_after_the_deepest_layer(
    models: dict[str, nn.Module], images: np.ndarray
) -> None:
    model = models["caffenet"]
    calls: list[str] = []
    handles = [
        model.get_submodule(path).register_forward_hook(lambda *_, p=path: calls.append(p))
        for path in ("features.conv3", "features.conv4", "classifier.fc6")
    ]
    try:
        with torch.no_grad():
            model.forward_layers(preprocess(images, "caffenet"), ["conv1", "conv3"])
    finally:
        for handle in handles:
            handle.remove()
    assert calls == ["features.conv3"]


def test_dropout_acts_only_in_training_and_after_the_fc6_tap(images: np.ndarray) -> None:
    model = build("caffenet", weights="random:1")
    assert not model.training
    x = preprocess(images, "caffenet")
    with torch.no_grad():
        evaluated = model.forward_layers(x, ["fc6", "fc7"])
        model.train()
        torch.manual_seed(0)
        trained = model.forward_layers(x, ["fc6", "fc7"])
    assert torch.equal(evaluated["fc6"], trained["fc6"])  # drop6 comes after relu6
    assert not torch.equal(evaluated["fc7"], trained["fc7"])


def test_lrn_matches_caffes_formula(models: dict[str, nn.Module]) -> None:
    """Caffe: b_c = a_c / (k + alpha / n * sum_{|c' - c| <= n // 2} a_c'^2) ** beta."""
    rng = np.random.default_rng(3)
    a = rng.normal(scale=80.0, size=(2, 7, 3, 4))  # (N, C, H, W), values where LRN matters
    n, alpha, beta, k = 5, 1e-4, 0.75, 1.0
    expected = np.empty_like(a)
    for c in range(a.shape[1]):
        window = a[:, max(0, c - n // 2) : c + n // 2 + 1]
        expected[:, c] = a[:, c] / (k + alpha / n * (window**2).sum(axis=1)) ** beta
    norm = models["caffenet"].get_submodule("features.norm1")
    got = norm(torch.from_numpy(a).float()).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    assert np.abs(expected - a).max() > 1.0  # the test tensor is normalised noticeably


def test_preprocess_caffenet_by_hand() -> None:
    rng = np.random.default_rng(4)
    images = rng.integers(0, 256, size=(2, 256, 256, 3), dtype=np.uint8)
    x = preprocess(images, "caffenet")
    assert x.shape == (2, 3, 227, 227) and x.dtype == torch.float32
    r, g, b = images[1, 14 + 5, 14 + 7].astype(np.float64)  # crop offset (256 - 227) // 2
    expected = [b - 104.00698793, g - 116.66876762, r - 122.67891434]  # BGR minus mean
    np.testing.assert_allclose(x[1, :, 5, 7].numpy(), expected, rtol=0, atol=2e-5)  # float32
    # a float tensor in [0, 1] gives the same input and keeps its gradient
    floats = (torch.from_numpy(images).double() / 255).requires_grad_()
    y = preprocess(floats, "caffenet")
    torch.testing.assert_close(y, x, rtol=0, atol=1e-4)
    y.sum().backward()
    assert floats.grad is not None and floats.grad.abs().sum() > 0


def test_preprocess_torchvision_by_hand() -> None:
    images = np.random.default_rng(5).integers(0, 256, size=(1, 256, 300, 3), dtype=np.uint8)
    x = preprocess(torch.from_numpy(images), "torchvision")
    assert x.shape == (1, 3, 224, 224)
    rgb = images[0, 16 + 3, 38 + 9] / 255.0  # crop offsets (256 - 224) // 2, (300 - 224) // 2
    expected = (rgb - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225]
    np.testing.assert_allclose(x[0, :, 3, 9].numpy(), expected, rtol=1e-5)


@pytest.mark.parametrize(
    ("images", "match"),
    [
        (np.zeros((256, 256, 3), np.uint8), r"expected RGB images \(N, H, W, 3\)"),
        (np.zeros((1, 256, 256, 4), np.uint8), "drop any alpha channel"),
        (np.zeros((1, 200, 256, 3), np.uint8), "images of 200x256 are too small"),
        (np.zeros((1, 256, 256, 3), np.int32), "expected uint8"),
    ],
)
def test_preprocess_errors(images: np.ndarray, match: str) -> None:
    with pytest.raises(ExtractionError, match=match):
        preprocess(images, "caffenet")


def test_forward_layers_errors(models: dict[str, nn.Module]) -> None:
    model = models["caffenet"]
    x = torch.zeros(1, 3, 227, 227)
    with pytest.raises(ConfigError, match="unknown AlexNet layer"):
        model.forward_layers(x, ["conv6"])
    with pytest.raises(ConfigError, match="no layers asked for"):
        model.forward_layers(x, [])
    with pytest.raises(ExtractionError, match=r"expected preprocessed images \(N, 3, H, W\)"):
        model.forward_layers(torch.zeros(1, 227, 227, 3), ["conv1"])
    with torch.no_grad():
        model.forward_layers(torch.zeros(1, 3, 255, 255), ["conv5"])  # convs take any size
        with pytest.raises(ExtractionError, match="feed 227x227 crops"):
            model.forward_layers(torch.zeros(1, 3, 255, 255), ["fc6"])


def test_registry_lookups() -> None:
    assert get_architecture("caffenet").input_size == 227
    assert get_architecture("torchvision").input_size == 224
    with pytest.raises(ConfigError, match="use one of caffenet, torchvision"):
        get_architecture("vgg16")
    with pytest.raises(ConfigError, match="unknown AlexNet layer"):
        output_shape("caffenet", "pool5")


def test_random_weights_are_deterministic_per_seed(images: np.ndarray) -> None:
    rng_state = torch.get_rng_state()
    first, again, other = (build("caffenet", weights=f"random:{s}") for s in (7, 7, 8))
    assert torch.equal(torch.get_rng_state(), rng_state)  # the global RNG is untouched
    for key, value in first.state_dict().items():
        assert torch.equal(value, again.state_dict()[key]), key
    assert not torch.equal(first.features.conv1.weight, other.features.conv1.weight)
    x = preprocess(images, "caffenet")
    with torch.no_grad():
        assert torch.equal(first(x), again(x))
        assert not torch.allclose(first(x), other(x))


def test_random_weight_specs(tmp_path: Path) -> None:
    assert is_random_weights("random:0")
    assert not is_random_weights(Path("random:0"))
    assert not is_random_weights("weights/random.caffemodel")
    assert parse_random_seed("random:42") == 42
    for bad in ("random:", "random:-1", "random:abc"):
        with pytest.raises(ConfigError, match="'random:SEED'"):
            build("caffenet", weights=bad)
    assert describe_weights("random:3") == {"kind": "random", "seed": 3}
    path = tmp_path / "w.npz"
    path.write_bytes(b"not really weights")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert describe_weights(path) == {"kind": "file", "file": "w.npz", "sha256": digest}
    with pytest.raises(WeightsError, match="no weights file at"):
        describe_weights(tmp_path / "absent.pth")
