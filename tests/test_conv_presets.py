"""The convolutional presets for digits and MNIST (issue 14): they load, build the ResNet made
for their image side with spectral norm, train a couple of steps and sample digit-shaped images."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from fdrl import FDRL, Trainer, load_config
from fdrl.data import build_data
from fdrl.nets import build_estimator
from fdrl.nets.resnet import ResNet

CONV_PRESETS = {"digits_conv": ("resnet8", (1, 8, 8)), "mnist_conv": ("resnet28", (1, 28, 28))}
TINY = ["train.steps=2", "train.batch_size=8", "flow.steps=2", "flow.refine_steps=1", "train.log_every=1",
        "train.checkpoint_every=2", "train.sample_every=2", "train.sample_n=4", "model.params.width=0.0625"]


@pytest.mark.parametrize("preset", list(CONV_PRESETS))
def test_conv_preset_builds_the_resnet_for_its_image_side_with_spectral_norm(preset):
    arch, shape = CONV_PRESETS[preset]
    config = load_config(preset)
    assert config.model.name == arch and config.model.params["spectral_norm"] is True
    assert config.prior.name == "data_gaussian" and config.objective == "lsif-chi2"
    assert tuple(build_data(config.data.spec).shape) == shape
    net = build_estimator(config.model.spec, shape)
    layers = [m for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert layers and all(parametrize.is_parametrized(m, "weight") for m in layers)
    # `resnet` (what an image folder of that side gets) picks the same configuration
    assert [type(m) for m in build_estimator("resnet", shape, width=0.125).modules()] == \
        [type(m) for m in build_estimator(arch, shape, width=0.125).modules()]


@pytest.mark.parametrize("preset", list(CONV_PRESETS))
def test_conv_preset_trains_and_samples_images_of_its_shape(preset, tmp_path):
    _, shape = CONV_PRESETS[preset]
    trainer = Trainer(load_config(preset, TINY), tmp_path / "run", progress=False)
    before = [p.detach().clone() for p in trainer.net.parameters()]
    trainer.fit()
    assert trainer.step == 2
    assert any(not torch.equal(a, p) for a, p in zip(before, trainer.net.parameters()))  # the update ran
    model = FDRL.load(tmp_path / "run")
    assert isinstance(model.estimator, ResNet)
    x = model.sample(5, seed=0)
    assert x.shape == (5, *shape) and torch.isfinite(x).all()
    assert not torch.allclose(x, model.sample(5, seed=0, steps=0))  # the estimator's flow moved the prior draws


def test_spectral_norm_bounds_each_layer_of_the_conv_estimator_after_training(tmp_path):
    """After training the normalised weights have largest singular value about 1 (the power
    iteration has converged on the updated weights), so each layer is at most 1-Lipschitz
    (convolutions: in the reshaped-kernel sense Miyato et al. use)."""
    trainer = Trainer(load_config("digits_conv", TINY + ["train.steps=30", "train.checkpoint_every=30",
                                                         "train.sample_every=30"]),
                      tmp_path / "run", progress=False)
    trainer.fit()
    net = trainer.net.train()
    with torch.no_grad():
        for _ in range(50):  # converge the power iteration on the final weights
            net(torch.zeros(1, 1, 8, 8))
        net.eval()
        for m in net.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                sigma = torch.linalg.matrix_norm(m.weight.flatten(1), ord=2)
                assert sigma == pytest.approx(1.0, abs=1e-2)
