"""The Table 3 ResNet estimators: structure, parameter counts, options, shapes and errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from fdrl.config import load_config
from fdrl.flow import potential_gradient
from fdrl.nets import ESTIMATORS, build_estimator
from fdrl.nets.resnet import BasicBlock, SelfAttention

# Table 3 as (image size, stem channels, stages); a stage is a list of (channels, stride) per
# block, stride 2 being "ResBlock Down". Attention goes after the first 128-channel stage.
TABLE3 = {
    "resnet32": (32, 128, [[(128, 1)] * 3,
                           [(256, 2), (256, 1), (256, 1)],
                           [(256, 2), (256, 1), (256, 1)],
                           [(256, 2), (256, 1), (256, 1)]]),
    "resnet64": (64, 64, [[(64, 2)], [(128, 2), (128, 1)], [(256, 2), (256, 1)], [(256, 2), (256, 1)]]),
    "resnet64_shallow": (64, 64, [[(64, 2)], [(128, 2)], [(128, 2)], [(256, 2)]]),
    "resnet128": (128, 64, [[(64, 2)], [(128, 2)], [(128, 2), (128, 1)], [(256, 2), (256, 1)],
                            [(256, 2), (256, 1)]]),
}
# the two configurations added for the digit sets (not in the paper): strided blocks down to 4
# pixels, 8 -> 4 and 28 -> 14 -> 7 -> 4
DIGIT_SIZES = {
    "resnet8": (8, 128, [[(128, 1)], [(256, 2), (256, 1)]]),
    "resnet28": (28, 64, [[(64, 2)], [(128, 2), (128, 1)], [(256, 2), (256, 1)]]),
}
ALL = TABLE3 | DIGIT_SIZES


def table_parameter_count(in_channels: int, stem: int, stages) -> int:
    """Parameters implied by the table: bias-free 3x3 convolutions, a 1x1 projection shortcut
    where shape changes, and a dense 256 -> 1 layer with bias."""
    total, c = 9 * in_channels * stem, stem
    for stage in stages:
        for out, stride in stage:
            total += 9 * c * out + 9 * out * out + (c * out if (stride != 1 or c != out) else 0)
            c = out
    return total + c + 1


@pytest.mark.parametrize("name", list(ALL))
def test_blocks_channels_and_strides_follow_table3(name):
    size, stem, stages = ALL[name]
    net = build_estimator(name, (3, size, size))
    blocks = [m for m in net.modules() if isinstance(m, BasicBlock)]
    assert [(b.conv1.out_channels, b.conv1.stride[0]) for b in blocks] == [blk for st in stages for blk in st]
    assert net.stem[0].out_channels == stem and net.stem[0].kernel_size == (3, 3)
    assert isinstance(net.stem[1], nn.LeakyReLU) and net.stem[1].negative_slope == 0.2
    assert all(b.act.negative_slope == 0.2 for b in blocks)


@pytest.mark.parametrize("name", list(ALL))
def test_parameter_count_matches_table3(name):
    size, stem, stages = ALL[name]
    for channels in (3, 1):
        net = build_estimator(name, (channels, size, size))
        assert sum(p.numel() for p in net.parameters()) == table_parameter_count(channels, stem, stages)


def test_known_parameter_totals():
    # fixed numbers, so an accidental change to the table above is noticed too
    expected = {"resnet32": 11_374_209, "resnet64": 5_126_081, "resnet64_shallow": 1_537_985,
                "resnet128": 5_437_377}
    for name, count in expected.items():
        size = TABLE3[name][0]
        assert sum(p.numel() for p in build_estimator(name, (3, size, size)).parameters()) == count


@pytest.mark.parametrize("name", list(ALL))
def test_stage_resolutions_and_scalar_output(name):
    size, _, stages = ALL[name]
    net = build_estimator(name, (3, size, size), width=0.125)
    shapes = []
    hooks = [s.register_forward_hook(lambda m, i, o: shapes.append(tuple(o.shape[1:]))) for s in net.stages]
    out = net(torch.randn(3, 3, size, size))
    for h in hooks:
        h.remove()
    side = size
    for stage, shape in zip(stages, shapes):
        side = -(-side // stage[0][1])  # a 3x3 convolution of stride 2, padding 1: 7 -> 4
        assert shape == (round(stage[-1][0] * 0.125), side, side)
    assert shapes[-1][1] == 4  # every configuration ends at 4 x 4 before global mean pooling
    assert out.shape == (3,)


def test_registry_names_and_mlp_still_there():
    assert set(ALL) | {"mlp", "resnet"} <= set(ESTIMATORS)


@pytest.mark.parametrize("side", [8, 28, 32, 64, 128])
def test_resnet_picks_the_configuration_built_for_the_image_side(side):
    net = build_estimator("resnet", (1, side, side), width=0.0625)
    name = {8: "resnet8", 28: "resnet28", 32: "resnet32", 64: "resnet64", 128: "resnet128"}[side]
    assert [m.conv1.stride[0] for m in net.modules() if isinstance(m, BasicBlock)] == \
        [stride for stage in ALL[name][2] for _, stride in stage]
    with pytest.raises(ValueError, match="8, 28, 32, 64 or 128"):
        build_estimator("resnet", (1, side + 1, side + 1))


def test_spectral_norm_on_every_conv_and_linear():
    net = build_estimator("resnet64_shallow", (3, 64, 64), spectral_norm=True, self_attention=True, width=0.25)
    layers = [m for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert layers and all(parametrize.is_parametrized(m, "weight") for m in layers)
    plain = build_estimator("resnet64_shallow", (3, 64, 64), width=0.25)
    assert not any(parametrize.is_parametrized(m) for m in plain.modules())


@pytest.mark.parametrize("name", list(ALL))
def test_one_self_attention_at_the_128_channel_level(name):
    size, _, stages = ALL[name]
    net = build_estimator(name, (3, size, size), self_attention=True)
    found = [(i, m) for i, stage in enumerate(net.stages) for m in stage if isinstance(m, SelfAttention)]
    assert len(found) == 1
    index, attention = found[0]
    first_128 = next(i for i, st in enumerate(stages) if st[-1][0] == 128)
    assert index == first_128 and attention.query.in_channels == 128
    assert list(net.stages[index])[-1] is attention  # after the stage's blocks
    x = torch.randn(2, 128, 4, 4)
    assert torch.equal(attention(x), x)  # gamma = 0 at initialisation: starts as the identity
    with torch.no_grad():
        attention.gamma.fill_(1.0)
    assert not torch.allclose(attention(x), x)


def test_grayscale_width_and_input_gradient():
    net = build_estimator("resnet32", (1, 32, 32), width=0.0625)
    assert net.stem[0].in_channels == 1 and net.stem[0].out_channels == 8
    x = torch.randn(4, 1, 32, 32)
    grad = potential_gradient(net, x)  # what the flow of Eq. 9 needs
    assert grad.shape == x.shape and torch.isfinite(grad).all()


def test_channels_last_input_gives_the_same_output():
    torch.manual_seed(0)
    net = build_estimator("resnet64", (3, 64, 64), width=0.125, self_attention=True).eval()
    with torch.no_grad():
        net.stages[1][-1].gamma.fill_(0.5)
    x = torch.randn(2, 3, 64, 64)
    expected = net(x)
    assert torch.allclose(net(x.contiguous(memory_format=torch.channels_last)), expected, atol=1e-5)
    net = net.to(memory_format=torch.channels_last)
    assert torch.allclose(net(x.contiguous(memory_format=torch.channels_last)), expected, atol=1e-5)


def test_wrong_image_size_is_a_clear_error():
    with pytest.raises(ValueError, match=r"'resnet32' is built for C x 32 x 32.*use resnet64 or resnet64_shallow"):
        build_estimator("resnet32", (3, 64, 64))
    with pytest.raises(ValueError, match="resnet128"):
        build_estimator("resnet128", (3, 32, 32))
    with pytest.raises(ValueError, match="shape"):
        build_estimator("resnet32", (3072,))
    with pytest.raises(ValueError, match=r"unknown config key 'model\.params\.depth' for model 'resnet32'; valid keys here: "):
        build_estimator("resnet32", (3, 32, 32), depth=3)
    # a preset whose estimator does not fit the data's image size
    config = load_config("celeba64_lsif_chi2")
    with pytest.raises(ValueError, match="resnet64"):
        build_estimator(config.model.spec, (3, 32, 32))
