"""Tests of :mod:`pipeline.deepsim`: DeePSiM losses, discriminator, pausing rule.

Expected values are written by hand (a 1x1-conv comparator, BCE of known logits with
``math.log``).
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import Tensor, nn

from pipeline import alexnet, deepsim
from pipeline.deepsim import (
    Alternation,
    Comparator,
    DeepSimParams,
    Discriminator,
    adversarial_losses,
    decide,
    feature_loss,
    total_generator_loss,
)
from pipeline.errors import ConfigError

SMALL_WIDTH = 0.125  # hidden layers floor at 8 channels: fast on CPU


def _conv1x1(weight: list[list[float]]) -> nn.Conv2d:
    """A fixed 1x1 conv ``(cout, 3)`` with no bias."""
    conv = nn.Conv2d(3, len(weight), kernel_size=1, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor(weight).view(len(weight), 3, 1, 1))
    return conv


class _FixedLogits(nn.Module):
    """A stand-in discriminator: the logit of an image is its first pixel value."""

    def forward(self, images: Tensor, feats: Tensor) -> Tensor:
        return images[:, 0, 0, 0]


# --- params -------------------------------------------------------------------------------


def test_defaults_are_the_paper_weights_in_project_units() -> None:
    params = DeepSimParams()
    assert params.loss == "pixel"
    assert params.comparator_layer == "conv5"
    assert params.pause_ratio == 0.1
    k = 2e-6 * 255**2 * 3 * 256**2  # λ_img[1] · 255² · P at 256×256
    assert params.lambda_img == 1.0
    assert params.lambda_feat == pytest.approx(0.01 / k)
    assert params.lambda_adv == pytest.approx(100 / k)
    assert params.lambda_adv / params.lambda_feat == pytest.approx(1e4)  # [1]'s ratio
    assert k == pytest.approx(25568.87, rel=1e-6)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"loss": "perceptual"}, r"unknown loss 'perceptual'; use one of \('pixel', 'deepsim'\)"),
        ({"lambda_img": -1.0}, r"lambda_img must be a finite weight >= 0, got -1.0"),
        ({"lambda_feat": -0.5}, r"lambda_feat must be a finite weight >= 0"),
        ({"lambda_adv": -2.0}, r"lambda_adv must be a finite weight >= 0"),
        ({"lambda_adv": math.nan}, r"lambda_adv must be a finite weight >= 0, got nan"),
        ({"comparator_layer": "pool5"}, r"unknown comparator_layer 'pool5'; use one of"),
        (
            {"loss": "deepsim", "comparator_layer": None},
            r"loss 'deepsim' with lambda_feat=.* needs a comparator: set comparator_layer",
        ),
        ({"pause_ratio": 0.0}, r"pause_ratio must be in \(0, 1\)"),
        ({"pause_ratio": 1.5}, r"pause_ratio must be in \(0, 1\)"),
        ({"disc_lr": 0.0}, r"disc_lr must be a learning rate > 0"),
        ({"disc_betas": (0.9, 1.0)}, r"disc_betas must be two Adam betas in \[0, 1\)"),
        ({"disc_betas": (0.9,)}, r"disc_betas must be two Adam betas"),
    ],
)
def test_params_validation(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        DeepSimParams(**kwargs)  # type: ignore[arg-type]


def test_deepsim_without_comparator_is_fine_without_feature_term() -> None:
    params = DeepSimParams(loss="deepsim", lambda_feat=0.0, comparator_layer=None)
    assert params.comparator_layer is None
    # the pixel loss never needs a comparator
    assert DeepSimParams(loss="pixel", comparator_layer=None).loss == "pixel"


def test_paper_weights_scale_with_output_size() -> None:
    img, feat, adv = deepsim.paper_weights(128)
    assert img == 1.0
    assert feat == pytest.approx(0.01 / (2e-6 * 255**2 * 3 * 128**2))
    assert adv / feat == pytest.approx(1e4)
    with pytest.raises(ConfigError, match="output_size must be a positive image side"):
        deepsim.paper_weights(0)


# --- feature loss -------------------------------------------------------------------------


def test_feature_loss_identity_comparator_by_hand() -> None:
    x = torch.zeros(2, 3, 2, 2)
    x_hat = torch.zeros(2, 3, 2, 2)
    x_hat[0, 0, 0, 0] = 1.0  # image 0: one value off by 1 -> 1
    x_hat[1, 2, 1, 1] = 2.0  # image 1: one value off by 2 -> 4
    x_hat[1, 1, 0, 1] = -3.0  # and one by 3 -> 9
    loss = feature_loss(nn.Identity(), x_hat, x)
    assert loss.item() == pytest.approx((1 + (4 + 9)) / 2)


def test_feature_loss_1x1_conv_comparator_by_hand() -> None:
    # C(x) = 2·R - G (one channel); target 0, reconstruction constant per channel
    comparator = _conv1x1([[2.0, -1.0, 0.0]])
    x = torch.zeros(1, 3, 2, 2)
    x_hat = torch.zeros(1, 3, 2, 2)
    x_hat[:, 0] = 1.0  # R = 1
    x_hat[:, 1] = 0.5  # G = 0.5 -> feature 1.5 at each of 4 positions
    x_hat[:, 2] = 7.0  # B ignored
    assert feature_loss(comparator, x_hat, x).item() == pytest.approx(4 * 1.5**2)


def test_feature_loss_grad_reaches_x_hat_not_comparator() -> None:
    comparator = _conv1x1([[1.0, 2.0, 3.0], [0.0, -1.0, 1.0]])
    assert all(p.requires_grad for p in comparator.parameters())
    x = torch.rand(2, 3, 4, 4)
    x_hat = torch.rand(2, 3, 4, 4, requires_grad=True)
    feature_loss(comparator, x_hat, x).backward()
    assert x_hat.grad is not None and torch.count_nonzero(x_hat.grad) > 0
    assert all(p.grad is None for p in comparator.parameters())


def test_feature_loss_one_forward_on_the_concatenated_batch() -> None:
    seen: list[tuple[int, ...]] = []

    class Spy(nn.Module):
        def forward(self, x: Tensor) -> Tensor:
            seen.append(tuple(x.shape))
            return x

    feature_loss(Spy(), torch.rand(3, 3, 4, 4), torch.rand(3, 3, 4, 4))
    assert seen == [(6, 3, 4, 4)]


def test_feature_loss_refuses_mismatched_shapes() -> None:
    with pytest.raises(ConfigError, match="resize the targets to the decoder's output"):
        feature_loss(nn.Identity(), torch.zeros(1, 3, 4, 4), torch.zeros(1, 3, 8, 8))


@pytest.fixture(scope="module")
def caffenet() -> alexnet.AlexNetBase:
    """A randomly initialised CaffeNet (the comparator tests do not need real weights)."""
    return alexnet.build("caffenet", weights="random:0")


def test_alexnet_comparator_is_frozen_and_takes_decoder_outputs(
    caffenet: alexnet.AlexNetBase,
) -> None:
    torch.manual_seed(0)
    model = caffenet
    comparator = Comparator(model, "conv5", "caffenet")
    comparator.train()
    assert not comparator.training and not model.training
    assert not any(p.requires_grad for p in comparator.parameters())
    x = torch.rand(1, 3, 192, 192) - 0.5  # a CONV5 decoder's output size
    x_hat = (x + 0.1 * torch.randn_like(x)).requires_grad_(True)
    loss = feature_loss(comparator, x_hat, x)
    loss.backward()
    assert torch.isfinite(loss) and loss.item() > 0
    assert x_hat.grad is not None and torch.isfinite(x_hat.grad).all()
    # same convention as alexnet.preprocess on a full 227 input (no crop at 227)
    image = torch.rand(1, 227, 227, 3)
    expected = model.forward_layers(alexnet.preprocess(image, "caffenet"), ["conv5"])["conv5"]
    got = comparator(image.permute(0, 3, 1, 2) - 0.5)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


def test_fc_comparator_resizes_to_the_network_input(caffenet: alexnet.AlexNetBase) -> None:
    comparator = Comparator(caffenet, "fc6", "caffenet")
    with torch.no_grad():
        feats = comparator(torch.rand(2, 3, 128, 128) - 0.5)  # an FC decoder's output size
    assert feats.shape == (2, 4096) and torch.isfinite(feats).all()


def test_comparator_refuses_wrong_layer_or_arch(caffenet: alexnet.AlexNetBase) -> None:
    model = caffenet
    with pytest.raises(ConfigError, match="unknown comparator layer 'conv6'"):
        Comparator(model, "conv6", "caffenet")
    with pytest.raises(ConfigError, match="pass the arch the model was built with"):
        Comparator(model, "conv5", "torchvision")


# --- adversarial losses -------------------------------------------------------------------


def test_adversarial_losses_by_hand() -> None:
    # logits: real 2.0 and 0.0, fake -1.0 and 3.0 (first pixel of each image)
    x = torch.zeros(2, 3, 2, 2)
    x[0, 0, 0, 0], x[1, 0, 0, 0] = 2.0, 0.0
    x_hat = torch.zeros(2, 3, 2, 2)
    x_hat[0, 0, 0, 0], x_hat[1, 0, 0, 0] = -1.0, 3.0
    d_loss, g_loss = adversarial_losses(_FixedLogits(), x_hat, x, torch.zeros(2, 5))

    def sig(z: float) -> float:
        return 1 / (1 + math.exp(-z))

    d_expected = (
        -math.log(sig(2.0))
        - math.log(1 - sig(-1.0))  # pair 0
        - math.log(sig(0.0))
        - math.log(1 - sig(3.0))  # pair 1
    ) / 2
    g_expected = (-math.log(sig(-1.0)) - math.log(sig(3.0))) / 2
    assert d_loss.item() == pytest.approx(d_expected, rel=1e-6)
    assert g_loss.item() == pytest.approx(g_expected, rel=1e-6)


def test_adversarial_gradients() -> None:
    torch.manual_seed(0)
    disc = Discriminator(feature_dim=5, width=SMALL_WIDTH, dropout=0.0)
    x = torch.rand(2, 3, 32, 32)
    x_hat = torch.rand(2, 3, 32, 32, requires_grad=True)
    d_loss, g_loss = adversarial_losses(disc, x_hat, x, torch.rand(2, 5))
    d_loss.backward()
    assert x_hat.grad is None  # the discriminator loss does not train the generator
    assert all(p.grad is not None for p in disc.parameters())
    g_loss.backward()
    assert x_hat.grad is not None and torch.count_nonzero(x_hat.grad) > 0


# --- discriminator ------------------------------------------------------------------------


@pytest.mark.parametrize("size", [128, 256])
@pytest.mark.parametrize("feature_shape", [(31, 4, 4), (4096,)])
def test_discriminator_shapes(size: int, feature_shape: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    disc = Discriminator(feature_dim=math.prod(feature_shape), width=SMALL_WIDTH)
    logits = disc(torch.rand(2, 3, size, size) - 0.5, torch.randn(2, *feature_shape))
    assert logits.shape == (2,)
    assert torch.isfinite(logits).all()


def test_discriminator_full_width_on_meta() -> None:
    with torch.device("meta"):
        disc = Discriminator(feature_dim=256 * 6 * 6)
        out = disc(torch.empty(4, 3, 192, 192), torch.empty(4, 256, 6, 6))
    assert out.shape == (4,)
    assert disc.image.conv1.out_channels == 32 and disc.image.conv5.out_channels == 256
    assert disc.features.fc1.out_features == 1024 and disc.joint.fc3.in_features == 256 + 512


def test_discriminator_validation() -> None:
    with pytest.raises(ConfigError, match="feature_dim must be >= 1"):
        Discriminator(feature_dim=0)
    with pytest.raises(ConfigError, match=r"width must be > 0 \(1.0 is the paper\)"):
        Discriminator(feature_dim=3, width=0.0)
    with pytest.raises(ConfigError, match=r"dropout must be in \[0, 1\)"):
        Discriminator(feature_dim=3, dropout=1.0)
    disc = Discriminator(feature_dim=3, width=SMALL_WIDTH)
    with pytest.raises(ConfigError, match="feature_dim = the decoder's input size"):
        disc(torch.rand(1, 3, 32, 32), torch.rand(1, 4))


# --- alternation --------------------------------------------------------------------------


def test_decide_rule() -> None:
    assert decide(None, None, 0.1) == deepsim.Decision(True, True)
    assert decide(0.05, 1.0, 0.1) == deepsim.Decision(False, True)  # D far ahead: pause D
    assert decide(0.1, 1.0, 0.1) == deepsim.Decision(True, True)  # at the threshold: run
    assert decide(1.0, 0.05, 0.1) == deepsim.Decision(True, False)  # G far ahead: pause G
    assert decide(1.0, 1.0, 0.1) == deepsim.Decision(True, True)


def test_alternation_on_a_hand_made_sequence() -> None:
    alt = Alternation(ratio=0.1)
    # (d_loss, g_adv) observed after each step, and what each step ran under
    sequence = [(1.4, 0.7), (0.05, 2.0), (0.08, 1.0), (0.5, 1.0), (3.0, 0.2), (1.0, 1.0)]
    expected = [
        (True, True),  # first step: no history
        (True, True),  # 1.4 vs 0.7: balanced
        (False, True),  # 0.05 < 0.1 * 2.0: discriminator paused
        (False, True),  # 0.08 < 0.1 * 1.0: still paused
        (True, True),  # 0.5 vs 1.0: resumes
        (True, False),  # 0.2 < 0.1 * 3.0: generator's adversarial term paused
    ]
    ran = [alt.observe(d, g) for d, g in sequence]
    assert [(r.update_disc, r.update_gen_adv) for r in ran] == expected
    assert (alt.disc_paused, alt.gen_paused) == (2, 1)
    assert alt.decision() == deepsim.Decision(True, True)


def test_alternation_state_round_trip() -> None:
    alt = Alternation(ratio=0.1)
    alt.observe(0.05, 2.0)
    alt.observe(0.01, 1.0)
    state = json.loads(json.dumps(alt.state_dict()))  # plain, JSON-safe
    again = Alternation.from_state_dict(state)
    assert again == alt
    assert again.decision() == alt.decision() == deepsim.Decision(False, True)
    with pytest.raises(ConfigError, match=r"written by another version of pipeline\.deepsim"):
        Alternation.from_state_dict({**state, "extra": 1})
    with pytest.raises(ConfigError, match=r"pause ratio must be in \(0, 1\)"):
        Alternation(ratio=1.0)


# --- total loss ---------------------------------------------------------------------------


def test_total_generator_loss() -> None:
    pixel, feat, adv = torch.tensor(0.5), torch.tensor(100.0), torch.tensor(0.7)
    assert total_generator_loss(DeepSimParams(), pixel, None, None) is pixel
    params = DeepSimParams(loss="deepsim", lambda_img=2.0, lambda_feat=0.01, lambda_adv=3.0)
    total = total_generator_loss(params, pixel, feat, adv)
    assert total.item() == pytest.approx(2.0 * 0.5 + 0.01 * 100 + 3.0 * 0.7)
    # a paused adversarial term drops out
    paused = total_generator_loss(params, pixel, feat, None)
    assert paused.item() == pytest.approx(2.0 * 0.5 + 0.01 * 100)
    with pytest.raises(ConfigError, match="no feature loss was passed"):
        total_generator_loss(params, pixel, None, adv)
    # all extra weights zero: the pixel objective
    plain = DeepSimParams(loss="deepsim", lambda_feat=0.0, lambda_adv=0.0)
    assert total_generator_loss(plain, pixel, None, adv).item() == pytest.approx(0.5)
