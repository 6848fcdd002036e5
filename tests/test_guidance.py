"""Class guidance (Eq. 12, 29-31), PGD-L2 adversarial training and classifier loaders."""

from __future__ import annotations

import argparse
import json
import math

import pytest
import torch
from torch import nn

from fdrl.classifier import DigitClassifier, load_classifier, load_torchvision_classifier
from fdrl.cli.compose import register as register_compose
from fdrl.config import load_config
from fdrl.flow import potential_gradient
from fdrl.guidance import ClassGuidance, all_labels, conditional_sample, guided_potential
from fdrl.model import FDRL
from fdrl.nets import MLP
from fdrl.objectives import OBJECTIVES
from fdrl.priors import StandardNormalPrior
from fdrl.train import Trainer
from fdrl_studies.classifier_training import pgd_l2, train_classifier
from fdrl_studies.robust_cifar import load_robust_cifar10_resnet50
from table2 import f_prime

SHAPE = (1, 8, 8)


def _estimator(objective) -> nn.Module:
    torch.manual_seed(0)
    net = MLP(SHAPE, width=16, depth=1)
    if objective.outputs_log_ratio:
        return net
    return nn.Sequential(net, nn.Softplus())  # LSIF: positive outputs, so log r is not clamped


def _classifier(num_classes: int = 10) -> DigitClassifier:
    torch.manual_seed(1)
    return DigitClassifier(SHAPE, num_classes, arch="mlp", width=4)


@pytest.mark.parametrize("name", list(OBJECTIVES))
def test_guided_potential_gradient_matches_hand_computation(name):
    objective = OBJECTIVES[name]
    estimator, classifier = _estimator(objective), _classifier()
    x = torch.randn(6, *SHAPE, generator=torch.Generator().manual_seed(2)) * 0.5
    labels, phi, n_classes = torch.tensor([0, 1, 2, 3, 9, 9]), 0.3, 10
    grad = potential_gradient(guided_potential(estimator, objective, classifier, labels, phi, n_classes), x)

    # by hand: r(x|y) = r(x) / N * p(y|x)^-phi (Eq. 12 with weight phi), then the naive f' of Table 2
    xr = x.clone().requires_grad_(True)
    out = estimator(xr)
    r = torch.exp(out) if objective.outputs_log_ratio else out
    p_y = torch.softmax(classifier(xr), -1)[torch.arange(6), labels]
    r_cond = r / n_classes * p_y.pow(-phi)
    (expected,) = torch.autograd.grad(f_prime(objective.divergence, r_cond).sum(), xr)
    assert torch.allclose(grad, expected, rtol=1e-4, atol=1e-6)
    assert grad.abs().sum() > 0


def test_lr_kl_guidance_is_eq31_and_phi_zero_is_unguided():
    objective = OBJECTIVES["lr-kl"]
    estimator, classifier = _estimator(objective), _classifier()
    x = torch.randn(4, *SHAPE, generator=torch.Generator().manual_seed(3))
    labels = torch.tensor([4, 5, 6, 7])
    grad = potential_gradient(guided_potential(estimator, objective, classifier, labels, 0.5, 10), x)
    xr = x.clone().requires_grad_(True)
    eq31 = estimator(xr) - 0.5 * torch.log_softmax(classifier(xr), -1)[torch.arange(4), labels]
    (expected,) = torch.autograd.grad(eq31.sum(), xr)
    assert torch.allclose(grad, expected, rtol=1e-4, atol=1e-6)
    unguided = potential_gradient(lambda z: objective.f_prime(estimator(z)), x)
    assert torch.allclose(potential_gradient(guided_potential(estimator, objective, classifier, labels, 0.0, 10), x),
                          unguided, atol=1e-6)


def _tiny_model(objective: str = "lr-kl") -> FDRL:
    return FDRL(_estimator(OBJECTIVES[objective]), objective, StandardNormalPrior(SHAPE), eta=0.1, noise=0.01, steps=2)


def test_bad_guidance_input_is_one_line():
    classifier = _classifier(10)
    with pytest.raises(ValueError, match=r"^label 10 is out of range for a classifier of 10 classes"):
        ClassGuidance(classifier, 10, 0.1)
    with pytest.raises(ValueError, match="label -1 is out of range"):
        ClassGuidance(classifier, [0, -1], 0.1)
    with pytest.raises(ValueError, match=r"^phi must be a finite number >= 0, got -0.1"):
        ClassGuidance(classifier, 3, -0.1)
    with pytest.raises(ValueError, match="phi must be"):
        ClassGuidance(classifier, 3, float("nan"))
    with pytest.raises(ValueError, match=r"the classifier has 10 classes, but num_classes=5"):
        ClassGuidance(classifier, 3, 0.1, num_classes=5)
    # a plain module without num_classes: its output width is found by probing, then checked
    plain = nn.Sequential(nn.Flatten(), nn.Linear(64, 3))
    with pytest.raises(ValueError, match="label 7 is out of range for a classifier of 3 classes"):
        _tiny_model().sample(4, guidance=ClassGuidance(plain, 7, 0.1))
    with pytest.raises(ValueError, match="returns 3 logits but has 10 classes"):
        _tiny_model().sample(4, guidance=ClassGuidance(plain, 1, 0.1, num_classes=10))
    with pytest.raises(ValueError, match="3 labels were given for 4 samples"):
        _tiny_model().sample(4, guidance=ClassGuidance(classifier, [1, 2, 3], 0.1))
    wrong_shape = DigitClassifier((1, 28, 28), 10, arch="mlp", width=4)
    with pytest.raises(ValueError, match="does not take this model's samples"):
        _tiny_model().sample(2, guidance=ClassGuidance(wrong_shape, 1, 0.1))


def test_guided_sampling_keeps_prior_draws_and_leaves_the_classifier_as_it_was():
    model, classifier = _tiny_model(), _classifier()
    classifier.train()
    plain = model.sample(6, steps=0, seed=1)
    guided = conditional_sample(model, classifier, all_labels(6, 10), phi=1.0, steps=0, seed=1)
    assert torch.equal(plain, guided)  # zero steps: the prior draws of the same seed
    moved = conditional_sample(model, classifier, [3] * 6, phi=1.0, steps=3, seed=1, batch_size=4)
    assert moved.shape == (6, *SHAPE) and not torch.equal(moved, model.sample(6, steps=3, seed=1, batch_size=4))
    assert classifier.training and all(p.requires_grad for p in classifier.parameters())


# -- a tiny digits run: guidance shifts the class histogram ------------------------------------

@pytest.fixture(scope="module")
def digits_setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("guided")
    overrides = ["objective=lr-kl", "train.steps=60", "train.batch_size=64", "flow.steps=20", "flow.refine_steps=0",
                 "model.params.width=64", "model.params.depth=2", "train.checkpoint_every=60", "train.log_every=20",
                 "train.sample_every=1000", "device=cpu", f"prior.params.cache_dir={root / 'prior-cache'}"]
    Trainer(load_config("digits", overrides), root / "run", progress=False).fit()
    guide, _ = train_classifier("digits", root / "guide", seed=0, arch="cnn", epochs=3, width=8)
    judge, metrics = train_classifier("digits", root / "judge", seed=1, arch="mlp", epochs=5, width=16)
    assert metrics["test_accuracy"] > 0.85
    return root, FDRL.load(root / "run"), guide, judge


def test_conditional_sampling_shifts_the_judged_class_histogram(digits_setup):
    _, model, guide, judge = digits_setup
    n = 100
    with torch.no_grad():
        base = torch.bincount(judge(model.sample(n, seed=0)).argmax(1), minlength=10)
    for label in (3, 7):
        samples = conditional_sample(model, guide, label, phi=5.0, n=n, seed=0)
        with torch.no_grad():
            hist = torch.bincount(judge(samples).argmax(1), minlength=10)
        # an independent judge (other architecture and seed) sees many more of the requested class
        assert hist[label] >= base[label] + 10 and hist[label] >= 2 * base[label], (label, base.tolist(), hist.tolist())
        assert hist[label] == hist.max()


def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="fdrl")
    register_compose(parser.add_subparsers(dest="command"))
    return parser.parse_args(list(argv))


def test_sample_conditional_command(digits_setup, capsys):
    from safetensors.torch import load_file

    root, *_ = digits_setup
    out = root / "cond.safetensors"
    args = _parse("sample-conditional", str(root / "run"), "--classifier", str(root / "guide"), "--label", "all",
                  "--phi", "0.5", "--n", "20", "--steps", "2", "--out", str(out), "--device", "cpu")
    assert args.func(args) == 0
    saved = load_file(str(out))
    assert saved["samples"].shape == (20, *SHAPE) and saved["labels"].tolist() == [i % 10 for i in range(20)]
    png = root / "cond.png"
    args = _parse("sample-conditional", str(root / "run"), "--classifier", str(root / "guide"), "--label", "4",
                  "--n", "4", "--steps", "1", "--out", str(png), "--device", "cpu")
    assert args.func(args) == 0 and png.is_file()
    for argv, message in ((["--label", "10"], "label 10 is out of range"), (["--label", "2", "--phi", "-1"], "phi must be")):
        args = _parse("sample-conditional", str(root / "run"), "--classifier", str(root / "guide"), *argv,
                      "--n", "2", "--device", "cpu")
        with pytest.raises(ValueError, match=message):
            args.func(args)


# -- PGD-L2 and adversarial training ----------------------------------------------------------

def test_pgd_step_increases_the_loss_and_respects_the_epsilon_ball():
    classifier = _classifier()
    before = {k: v.clone() for k, v in classifier.state_dict().items()}
    x = torch.rand(16, *SHAPE, generator=torch.Generator().manual_seed(4)) * 1.6 - 0.8
    y = torch.randint(10, (16,), generator=torch.Generator().manual_seed(5))
    loss = nn.functional.cross_entropy
    for eps, steps in ((0.5, 1), (0.5, 5), (2.0, 3)):
        adv = pgd_l2(classifier, x, y, eps=eps, steps=steps, step_size=2.5 * eps / steps)
        norms = (adv - x).flatten(1).norm(dim=1)
        assert (norms <= eps + 1e-5).all() and adv.min() >= -1 and adv.max() <= 1
        with torch.no_grad():
            assert loss(classifier(adv), y) > loss(classifier(x), y)
    assert torch.equal(pgd_l2(classifier, x, y, eps=0.0, steps=3, step_size=0.1), x)
    assert all(torch.equal(before[k], v) for k, v in classifier.state_dict().items())
    assert all(p.grad is None for p in classifier.parameters())
    with pytest.raises(ValueError, match="PGD needs eps >= 0"):
        pgd_l2(classifier, x, y, eps=-1.0, steps=1, step_size=0.1)


def test_adversarial_training_is_saved_and_loaded(tmp_path):
    model, metrics = train_classifier("digits", tmp_path / "robust", seed=0, arch="mlp", epochs=1, width=4,
                                      adversarial_eps=0.5, pgd_steps=2)
    info = json.loads((tmp_path / "robust" / "classifier.json").read_text())
    assert info["training"]["adversarial"] == {"norm": "l2", "eps": 0.5, "steps": 2, "step_size": 0.625}
    assert 0 <= metrics["test_robust_accuracy"] <= metrics["test_accuracy"] + 0.05
    loaded = load_classifier(tmp_path / "robust")
    assert loaded.info["training"]["adversarial"]["eps"] == 0.5
    with pytest.raises(ValueError, match="adversarial epsilon must be"):
        train_classifier("digits", None, epochs=1, width=4, arch="mlp", adversarial_eps=-1.0)
    with pytest.raises(ValueError, match="needs >= 1 PGD step"):
        train_classifier("digits", None, epochs=1, width=4, arch="mlp", adversarial_eps=0.5, pgd_steps=0)


def test_train_classifier_command_takes_the_pgd_flags(tmp_path, capsys):
    from fdrl.cli.images import register

    parser = argparse.ArgumentParser(prog="fdrl")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["train-classifier", "digits", "--out", str(tmp_path / "c"), "--arch", "mlp",
                              "--epochs", "1", "--width", "4", "--adversarial-eps", "0.3", "--pgd-steps", "1",
                              "--pgd-step-size", "0.3", "--device", "cpu", "--quiet"])
    assert args.func(args) == 0
    assert "test_robust_accuracy" in capsys.readouterr().out
    info = json.loads((tmp_path / "c" / "classifier.json").read_text())
    assert info["training"]["adversarial"] == {"norm": "l2", "eps": 0.3, "steps": 1, "step_size": 0.3}


# -- torchvision-style classifiers ------------------------------------------------------------

def test_torchvision_state_dict_loader(tmp_path):
    import torchvision

    torch.manual_seed(0)
    net = torchvision.models.resnet18(weights=None, num_classes=3).eval()
    path = tmp_path / "r18.pt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in net.state_dict().items()}}, path)
    model = load_torchvision_classifier(path, "resnet18", 3, strip_prefix="module.", mean=(0.5, 0.5, 0.5),
                                        std=(0.25, 0.25, 0.25))
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        assert torch.allclose(model(x), net(((x + 1) / 2 - 0.5) / 0.25), atol=1e-5)
    assert model.num_classes == 3 and ClassGuidance(model, 2, 0.1).num_classes == 3
    with pytest.raises(ValueError, match="unknown torchvision architecture"):
        load_torchvision_classifier(path, "no_such_net", 3)
    with pytest.raises(ValueError, match="cannot load resnet18 weights"):
        load_torchvision_classifier(path, "resnet18", 5, strip_prefix="module.")
    evil = tmp_path / "evil.pt"
    torch.save({"state_dict": argparse.Namespace(a=1)}, evil)
    with pytest.raises(ValueError, match="cannot load resnet18 weights"):
        load_torchvision_classifier(evil, "resnet18", 3)


def test_robustness_library_checkpoint_layout(tmp_path):
    """A checkpoint shaped like the robustness library's CIFAR10 ResNet-50 (model dict with
    module.model.*, module.attacker.model.*, module.normalizer.*; CIFAR stem; ``linear``)."""
    import torchvision

    from fdrl.classifier import _cifar_stem
    from fdrl_studies.robust_cifar import CIFAR10_MEAN, CIFAR10_STD

    torch.manual_seed(0)
    net = _cifar_stem(torchvision.models.resnet50(weights=None, num_classes=10)).eval()
    state = {("linear." + k[3:] if k.startswith("fc.") else k): v for k, v in net.state_dict().items()}
    model_dict = {**{f"module.model.{k}": v for k, v in state.items()},
                  **{f"module.attacker.model.{k}": v for k, v in list(state.items())[:3]},
                  "module.normalizer.new_mean": torch.tensor(CIFAR10_MEAN)[:, None, None],
                  "module.normalizer.new_std": torch.tensor(CIFAR10_STD)[:, None, None]}
    path = tmp_path / "cifar_l2_1_0.pt"
    torch.save({"model": model_dict, "epoch": 150}, path)
    model = load_robust_cifar10_resnet50(path)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    mean, std = torch.tensor(CIFAR10_MEAN)[:, None, None], torch.tensor(CIFAR10_STD)[:, None, None]
    with torch.no_grad():
        assert torch.allclose(model(x), net(((x + 1) / 2 - mean) / std), atol=1e-4)
    assert math.isclose(float(model.mean.flatten()[0]), CIFAR10_MEAN[0], rel_tol=1e-6)


def test_composition_benchmark_runs_on_a_tiny_configuration(digits_setup, tmp_path):
    import importlib.util
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "composition_digits.py"
    spec = importlib.util.spec_from_file_location("composition_digits", script)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    root, *_ = digits_setup
    code = bench.main(["conditional", "--run", str(root / "run"), "--out", str(tmp_path / "cond"), "--guide",
                       str(root / "guide"), "--judge", str(root / "judge"), "--validator", str(root / "judge"),
                       "--phis", "0.1,1", "--n-per-class", "4", "--steps", "3"])
    metrics = json.loads((tmp_path / "cond" / "metrics.json").read_text())
    assert code == (0 if metrics["passed"] else 1)
    selection = metrics["phi_selection"]  # docs/studies/conditional.md's rule: the smallest phi the validator accepts
    accepted = [row["phi"] for row in selection["table"] if row["min_class_accuracy"] >= selection["threshold"]]
    assert metrics["phi"] == (accepted[0] if accepted else selection["table"][-1]["phi"])
    assert metrics["phi"] in (0.1, 1.0) and [row["phi"] for row in metrics["phi_selection"]["table"]] == [0.1, 1.0]
    assert set(metrics["per_class_accuracy"]) == {str(c) for c in range(10)}
    assert (tmp_path / "cond" / "conditional.png").is_file()
    code = bench.main(["translate", "--out", str(tmp_path / "t"), "--dataset", "digits", "--judge", str(root / "judge"),
                       "--steps", "2", "train.steps=3", "train.batch_size=16", "flow.steps=2", "flow.refine_steps=0",
                       "model.params.width=16", "model.params.depth=1", "device=cpu"])
    metrics = json.loads((tmp_path / "t" / "metrics.json").read_text())
    # three training steps teach nothing; what must hold is the measurement itself: the judge
    # calls the untranslated 3s 3s, they are far from the 8s, and the 8s' floor is close
    assert metrics["n"] > 20 and metrics["source_rate_before"] > 0.8 and metrics["target_rate_before"] < 0.1
    assert metrics["frechet_floor_target_train_vs_test"] < 0.5 * metrics["frechet_to_target_before"]
    assert (tmp_path / "t" / "translation.png").is_file() and code == (0 if metrics["passed"] else 1)
    code = bench.main(["domains", "--out", str(tmp_path / "d"), "--classifier-epochs", "1", "--steps", "2",
                       "train.steps=3", "train.batch_size=16", "flow.steps=2", "flow.refine_steps=0",
                       "model.params.width=16", "model.params.depth=1", "device=cpu"])
    metrics = json.loads((tmp_path / "d" / "metrics.json").read_text())
    assert code == 0 and metrics["n"] == 359 and metrics["target"] == "mnist8"  # the held-out digits
    assert metrics["frechet_floor_target_train_vs_test"] < metrics["frechet_to_target_before"]
    assert (tmp_path / "d" / "translation.png").is_file()
    code = bench.main(["refine", "--out", str(tmp_path / "r"), "--classifier", str(root / "judge"), "--steps", "2",
                       "train.steps=3", "train.batch_size=16", "flow.steps=2", "flow.refine_steps=0",
                       "model.params.width=16", "model.params.depth=1", "device=cpu"])
    metrics = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert code == (0 if metrics["passed"] else 1) and metrics["n"] == 359
    assert metrics["frechet_floor_train_vs_test"] < metrics["frechet_degraded"]  # the degradation is visible
    assert (tmp_path / "r" / "refinement.png").is_file() and (tmp_path / "r" / "degraded_train.npy").is_file()


def test_degrade_blurs_and_noises_within_the_image_range():
    from fdrl_studies.composition import degrade

    x = torch.zeros(2, 1, 8, 8)
    x[:, :, 4, 4] = 1.0
    clean = degrade(x, blur_sigma=1.0, noise=0.0)
    assert clean[0, 0, 4, 4] < 1.0 and clean[0, 0, 4, 5] > 0.0  # the spike spreads to its neighbours
    assert torch.allclose(clean.sum(), x.sum(), atol=1e-5)  # blurring keeps the mass (no border here)
    noisy = degrade(x, blur_sigma=1.0, noise=5.0, seed=3)
    assert noisy.min() >= -1 and noisy.max() <= 1 and torch.equal(noisy, degrade(x, 1.0, 5.0, seed=3))


class _PhiStub:
    """A stand-in model whose guided samples are one-hot in their label when phi >= 1, else all
    one-hot in class 0: select_phi must pick the smallest phi that works."""

    device = torch.device("cpu")
    prior = StandardNormalPrior((4,))

    def sample(self, n, steps=None, seed=0, batch_size=None, guidance=None):
        x = torch.zeros(n, 4)
        hot = guidance.labels_for(n) if guidance.phi >= 1 else torch.zeros(n, dtype=torch.long)
        x[torch.arange(n), hot] = 1.0
        return x


def test_select_phi_takes_the_smallest_phi_the_validator_accepts():
    from fdrl_studies.composition import select_phi

    validator = nn.Identity()  # logits = the one-hot sample
    picked = select_phi(_PhiStub(), nn.Linear(4, 4), validator, [3.0, 0.1, 1.0], 5, None, 0, 8, 0.95)
    assert picked["phi"] == 1.0 and [row["phi"] for row in picked["table"]] == [0.1, 1.0, 3.0]
    assert picked["table"][0]["min_class_accuracy"] == 0.0 and picked["table"][1]["min_class_accuracy"] == 1.0
    never = select_phi(_PhiStub(), nn.Linear(4, 4), validator, [0.1, 0.5], 5, None, 0, 8, 0.95)
    assert never["phi"] == 0.5  # none reaches the threshold: the largest
    with pytest.raises(ValueError, match="at least one candidate phi"):
        select_phi(_PhiStub(), nn.Linear(4, 4), validator, [], 5, None, 0, 8, 0.95)


def test_composition_script_bad_input_is_one_line_with_exit_code_2(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "composition_digits.py"
    for args, expected in ((["conditional", "--run", str(tmp_path / "none"), "--out", str(tmp_path / "o")],
                            "neither a saved model"),
                           (["refine", "--out", str(tmp_path / "o"), "--classifier", str(tmp_path / "no_clf")],
                            "no classifier in"),
                           (["conditional", "--run", str(tmp_path), "--out", str(tmp_path / "o"), "--phi", "x"],
                            "phi must be a number or 'auto'")):
        done = subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, timeout=120)
        assert done.returncode == 2 and expected in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "o" / "run").exists()  # the bad classifier path failed before any training
