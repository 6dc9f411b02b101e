"""Adversarial attacks: FGSM and PGD against the closed-form optimum of linear models, the pixel-space wrap of
the normalisation, eps parsing, restarts, the optional torchattacks extra, `olsmooth attack` end to end, and the
attack registry (every registered attack through the command, unknown names, the docs table)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from olsmooth.analysis.attacks import (
    ATTACKS,
    NormalizedModel,
    attack_images,
    attack_names,
    fgsm,
    margin_loss,
    perturbation_size,
    pgd,
    to_pixels,
)
from olsmooth.cli import main
from olsmooth.data import build_datasets
from olsmooth.engine.attack import (
    Counts,
    attack_settings,
    channel_repeat,
    masking_warnings,
    parse_eps,
    sanity_warnings,
)
from olsmooth.engine.inference import evaluate_checkpoints
from olsmooth.errors import UserInputError
from olsmooth.models import create_model


def linear_model(classes: int, side: int = 4, seed: int = 0) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """A linear classifier on 1 x side x side images, its weights (K, d) and biases (K,)."""
    g = torch.Generator().manual_seed(seed)
    layer = nn.Linear(side * side, classes)
    with torch.no_grad():
        layer.weight.copy_(torch.randn(classes, side * side, generator=g))
        layer.bias.copy_(0.1 * torch.randn(classes, generator=g))
    return nn.Sequential(nn.Flatten(), layer).eval(), layer.weight.detach().clone(), layer.bias.detach().clone()


def inner_images(count: int, side: int = 4, seed: int = 1) -> torch.Tensor:
    """Images in [0.3, 0.7], so a ball of radius up to 0.3 (linf) stays inside the box [0, 1]."""
    return 0.3 + 0.4 * torch.rand(count, 1, side, side, generator=torch.Generator().manual_seed(seed))


def other_class(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For a binary model: the predicted labels and the other class."""
    y = model(x).argmax(1)
    return y, 1 - y


def optimal_margin(W: torch.Tensor, b: torch.Tensor, x: torch.Tensor, y: torch.Tensor, eps: float) -> torch.Tensor:
    """max over the linf ball (inside the box) of max_{j != y} z_j - z_y for a linear model, in closed form:
    max_j (w_j - w_y) . x + b_j - b_y + eps * ||w_j - w_y||_1."""
    diff = W[None] - W[y][:, None]
    value = (diff * x.flatten(1)[:, None]).sum(-1) + (b[None] - b[y][:, None]) + eps * diff.abs().sum(-1)
    value[torch.arange(len(y)), y] = float("-inf")
    return value.amax(dim=1)


# -- eps ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("text, value, canonical", [("8/255", 8 / 255, "8/255"), ("0.5", 0.5, "0.5"),
                                                    (" 4 / 255 ", 4 / 255, "4/255"), ("1e-3", 0.001, "0.001"),
                                                    ("0", 0.0, "0"), ("0.25/2", 0.125, "0.25/2")])
def test_eps_accepts_numbers_and_fractions(text, value, canonical):
    parsed, shown = parse_eps(text)
    assert parsed == pytest.approx(value, rel=1e-15) and shown == canonical


@pytest.mark.parametrize("text", ["1/0", "-1", "-8/255", "8/-255", "a/b", "nan", "inf", "1/2/3", "", "/",
                                  "__import__('os').getcwd()", "8//255"])
def test_eps_rejects_anything_else_in_one_line(text):
    with pytest.raises(UserInputError, match="--eps must be a number or a fraction"):
        parse_eps(text)


def test_flags_that_do_not_apply_are_refused():
    with pytest.raises(UserInputError, match="--steps does not apply to attack fgsm"):
        attack_settings("fgsm", "linf", "0.1", steps=5)
    with pytest.raises(UserInputError, match="--loss does not apply to attack apgd-ce"):
        attack_settings("apgd-ce", "linf", "0.1", loss="margin")
    with pytest.raises(UserInputError, match="--steps, --restarts do not apply to attack autoattack"):
        attack_settings("autoattack", "linf", "0.1", steps=5, restarts=2)
    s = attack_settings("pgd", "linf", "8/255", steps=10)
    assert s.step_size == pytest.approx(2.5 * (8 / 255) / 10) and s.restarts == 1 and s.loss == "ce"


# -- the closed-form optimum of linear models --------------------------------------------------------------------
@pytest.mark.parametrize("loss", ["ce", "margin"])
def test_fgsm_and_pgd_reach_the_linf_optimum_of_a_binary_linear_model(loss):
    model, W, _ = linear_model(2)
    x = inner_images(64)
    y, j = other_class(model, x)
    eps = 0.1
    optimum = x - eps * torch.sign(W[y] - W[j]).view_as(x)  # x - eps * sign(w_y - w_j)
    torch.testing.assert_close(fgsm(model, x, y, eps, "linf", loss), optimum, atol=1e-6, rtol=0)
    torch.testing.assert_close(pgd(model, x, y, eps, "linf", steps=10, loss=loss,
                                   generator=torch.Generator().manual_seed(3)), optimum, atol=1e-6, rtol=0)


@pytest.mark.parametrize("loss", ["ce", "margin"])
def test_fgm_and_pgd_reach_the_l2_optimum_of_a_binary_linear_model(loss):
    model, W, b = linear_model(2)
    x = inner_images(64)
    y, j = other_class(model, x)
    eps = 0.2
    direction = (W[j] - W[y]) / (W[j] - W[y]).norm(dim=1, keepdim=True)
    optimum = x + eps * direction.view_as(x)  # inside the box: 0.2 <= 0.3 from every pixel to the border
    torch.testing.assert_close(fgsm(model, x, y, eps, "l2", loss), optimum, atol=1e-6, rtol=0)
    torch.testing.assert_close(pgd(model, x, y, eps, "l2", steps=10, loss=loss, random_start=False), optimum,
                               atol=1e-6, rtol=0)
    # from a random start l2 PGD approaches the same margin, slowly (the radial projection shrinks the part of the
    # start orthogonal to the optimum by about eps / (eps + step) a step): within 5% after 40 steps
    best = margin_loss(model(optimum), y)
    found = margin_loss(model(pgd(model, x, y, eps, "l2", steps=40, loss=loss,
                                  generator=torch.Generator().manual_seed(0))), y)
    assert (found <= best + 1e-5).all() and (found >= best - 0.05 * eps * (W[j] - W[y]).norm(dim=1)).all()


def test_the_box_binds_as_in_the_closed_form_clipped_optimum():
    """With pixels at 0 and 1 and a large eps the feasible set is the box [x - eps, x + eps] cut by [0, 1]; for a
    linear objective the optimum moves each pixel to the end of its interval: clip(x - eps * s, 0, 1)."""
    model, W, _ = linear_model(2)
    x = torch.rand(64, 1, 4, 4, generator=torch.Generator().manual_seed(5)).round()  # pixels 0 or 1
    x[::2] = torch.rand(32, 1, 4, 4, generator=torch.Generator().manual_seed(6))
    y, j = other_class(model, x)
    eps = 0.4
    optimum = (x - eps * torch.sign(W[y] - W[j]).view_as(x)).clamp(0, 1)
    for adv in (fgsm(model, x, y, eps), pgd(model, x, y, eps, steps=10, generator=torch.Generator().manual_seed(0))):
        torch.testing.assert_close(adv, optimum, atol=1e-6, rtol=0)
        assert adv.min() >= 0 and adv.max() <= 1
        assert (perturbation_size(x, adv, "linf") <= eps + 1e-6).all()
    adv = pgd(model, x, y, 3.0, "l2", steps=10, generator=torch.Generator().manual_seed(0))
    assert adv.min() >= 0 and adv.max() <= 1 and (perturbation_size(x, adv, "l2") <= 3.0 + 1e-5).all()


def test_pgd_finds_every_sample_a_linear_multiclass_model_can_lose():
    """Robust accuracy under PGD (margin loss, restarts) equals the certified robust accuracy of the linear model:
    a sample is robust exactly when its optimal margin is negative."""
    model, W, b = linear_model(5)
    x = inner_images(200)
    y = model(x).argmax(1)
    for eps in (0.02, 0.05):
        certified_robust = optimal_margin(W, b, x, y, eps) < 0
        adv = pgd(model, x, y, eps, steps=20, loss="margin", restarts=5, generator=torch.Generator().manual_seed(1))
        found = margin_loss(model(adv), y)
        assert (found <= optimal_margin(W, b, x, y, eps) + 1e-5).all()  # never beyond the optimum: in the ball
        assert torch.equal(found < 0, certified_robust)
        assert 0 < certified_robust.sum() < len(y)  # the case is not trivial


def test_eps_zero_returns_the_clean_images():
    model, _, _ = linear_model(5)
    x = inner_images(16)
    y = model(x).argmax(1)
    for norm in ("linf", "l2"):
        assert torch.equal(fgsm(model, x, y, 0.0, norm), x)
        assert torch.equal(pgd(model, x, y, 0.0, norm, steps=3, generator=torch.Generator().manual_seed(0)), x)


def test_restarts_are_never_worse_than_one_start():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 32), nn.Tanh(), nn.Linear(32, 10)).eval()
    x = torch.rand(128, 1, 4, 4, generator=torch.Generator().manual_seed(2))
    y = torch.randint(0, 10, (128,), generator=torch.Generator().manual_seed(3))
    one = pgd(model, x, y, 0.05, steps=3, restarts=1, generator=torch.Generator().manual_seed(7))
    many = pgd(model, x, y, 0.05, steps=3, restarts=4, generator=torch.Generator().manual_seed(7))
    assert (margin_loss(model(many), y) >= margin_loss(model(one), y)).all()
    assert (model(many).argmax(1) == y).sum() <= (model(one).argmax(1) == y).sum()


# -- the pixel-space wrap ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("channels", [1, 3])
def test_the_wrapped_model_on_pixels_gives_the_logits_of_the_model_on_normalised_images(channels):
    bundle = build_datasets("digits", channels=channels)
    native = build_datasets("digits").test.items[:64]  # the stored 1 x 8 x 8 images in [0, 1]
    images = torch.stack([bundle.test[i][0] for i in range(64)])
    assert images.shape[1] == channels
    repeat = channel_repeat(bundle.test)
    assert repeat == channels  # grayscale repeated to RGB is undone: the attack perturbs the one real channel
    pixels = to_pixels(images, bundle.mean, bundle.std, repeat)
    torch.testing.assert_close(pixels, native, atol=1e-6, rtol=0)
    torch.manual_seed(0)
    model = create_model("small_cnn", num_classes=10, in_chans=channels).eval()
    wrapped = NormalizedModel(model, bundle.mean, bundle.std, repeat)
    with torch.no_grad():
        torch.testing.assert_close(wrapped(pixels), model(images), atol=1e-5, rtol=1e-5)


# -- the attacks extra -------------------------------------------------------------------------------------------
def test_a_missing_extra_is_one_line_and_exit_2(monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, "torchattacks", None)  # import torchattacks now fails
    code = main(["attack", "--checkpoint", str(tmp_path / "run"), "--attack", "apgd-ce", "--eps", "8/255"])
    assert code == 2
    assert capsys.readouterr().err == ("olsmooth: error: attack apgd-ce needs the attacks extra: "
                                       "pip install 'olsmooth[attacks]'\n")


def test_library_attacks_stay_in_the_ball_and_find_the_linear_optimum():
    pytest.importorskip("torchattacks")
    model, W, b = linear_model(2)
    x = inner_images(32)
    y, _ = other_class(model, x)
    eps = 0.05
    certified_robust = optimal_margin(W, b, x, y, eps) < 0
    for name in ("apgd-ce", "square"):
        settings = attack_settings(name, "linf", eps, steps=50 if name == "apgd-ce" else 300)
        adv = attack_images(model, x, y, settings, num_classes=2)
        assert adv.min() >= 0 and adv.max() <= 1 and (perturbation_size(x, adv, "linf") <= eps + 1e-5).all()
        robust = model(adv).argmax(1) == y
        assert (robust >= certified_robust).all()  # a certified sample is never fooled
        if name == "apgd-ce":
            assert torch.equal(robust, certified_robust)


def test_autoattack_finds_every_sample_a_linear_multiclass_model_can_lose():
    pytest.importorskip("torchattacks")
    model, W, b = linear_model(5)
    x = inner_images(48)
    y = model(x).argmax(1)
    eps = 0.05
    adv = attack_images(model, x, y, attack_settings("autoattack", "linf", eps), num_classes=5)
    assert (perturbation_size(x, adv, "linf") <= eps + 1e-5).all()
    assert torch.equal(model(adv).argmax(1) == y, optimal_margin(W, b, x, y, eps) < 0)


# -- sanity checks -----------------------------------------------------------------------------------------------
def record(attack: str, robust: float, surrogate: str | None = None, eps: float = 0.1, n: int = 100) -> dict:
    return {"command": "attack", "checkpoint": "/runs/a/best.pt", "attack": attack, "norm": "linf", "eps": eps,
            "eps_text": str(eps), "n": n, "robust_top1": robust, "surrogate": surrogate}


def test_a_transfer_or_black_box_attack_beating_white_box_is_flagged_as_masking():
    assert masking_warnings([record("pgd", 40.0), record("pgd", 30.0, surrogate="/runs/ce/best.pt")])
    assert masking_warnings([record("apgd-ce", 40.0), record("square", 39.0)])
    assert not masking_warnings([record("pgd", 30.0), record("pgd", 40.0, surrogate="/runs/ce/best.pt")])
    assert not masking_warnings([record("pgd", 40.0), record("square", 30.0, eps=0.2)])  # other eps
    assert not masking_warnings([record("pgd", 40.0), record("square", 30.0, n=50)])  # other samples


def test_failed_sanity_checks_are_reported():
    settings = attack_settings("pgd", "linf", "0")
    counts = Counts(n=10, clean=9, adversarial=9, robust=9, pipeline_mismatch=1, outside=0.5)
    base = {"clean_top1": 90.0, "adversarial_top1": 95.0, "robust_top1": 80.0, "fgsm_top1": 70.0,
            "large_eps": {"eps": 1.0, "robust_top1": 50.0}}
    found = " | ".join(sanity_warnings(settings, counts, base))
    for phrase in ("evaluation pipeline", "outside the eps ball", "at eps 0", "more often than the clean",
                   "PGD leaves more samples robust than FGSM", "likely gradient masking"):
        assert phrase in found
    fine = {"clean_top1": 90.0, "adversarial_top1": 90.0, "robust_top1": 90.0, "fgsm_top1": 90.0, "large_eps": None}
    assert sanity_warnings(settings, Counts(n=10), fine) == []


# -- the command end to end --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """One-epoch digits runs: OLS (the target), CE (a surrogate) and CE at another image size."""
    root = tmp_path_factory.mktemp("attack-runs")
    made = {}
    for name, extra in (("ols", []), ("ce", ["--method", "ce"]), ("ce16", ["--method", "ce", "--image-size", "16"])):
        made[name] = root / name
        assert main(["train", "--out", str(made[name]), "--epochs", "1", *extra]) == 0
    return made


def attack(capsys, *argv: str) -> tuple[int, dict | None, str]:
    code = main(["attack", *argv, "--json"])
    out, err = capsys.readouterr()
    return code, (json.loads(out) if code == 0 else None), err


def test_attack_command_end_to_end(runs, capsys):
    evaluated = evaluate_checkpoints([runs["ols"] / "best.pt"]).metrics  # the evaluation pipeline, normalised
    code, r, err = attack(capsys, "--checkpoint", str(runs["ols"]), "--attack", "pgd", "--eps", "8/255",
                          "--check-sanity", "--save-to-run")
    assert code == 0 and err == ""  # every sanity check passed
    for key in ("clean_top1", "robust_top1", "attack", "eps", "norm", "steps", "restarts", "n", "surrogate"):
        assert key in r
    assert r["clean_top1"] == pytest.approx(evaluated["top1"], abs=1e-9)  # the pixel-space wrap changes no prediction
    assert r["n"] == 355 and r["eps"] == pytest.approx(8 / 255) and r["surrogate"] is None
    assert r["robust_top1"] <= r["clean_top1"] and r["robust_top1"] <= r["fgsm_top1"]
    assert r["large_eps"]["eps"] == 1.0 and r["large_eps"]["robust_top1"] <= 2.0
    saved = json.loads((runs["ols"] / "results" / "attack-pgd-linf-8_255.json").read_text())
    assert saved["command"] == "attack" and saved["robust_top1"] == r["robust_top1"]

    code, zero, _ = attack(capsys, "--checkpoint", str(runs["ols"]), "--attack", "pgd", "--eps", "0", "--n", "100")
    assert code == 0 and zero["n"] == 100 and zero["robust_top1"] == zero["clean_top1"]


def test_transfer_attacks(runs, capsys):
    target = ["--checkpoint", str(runs["ols"]), "--attack", "pgd", "--eps", "0.1", "--n", "120"]
    _, white, _ = attack(capsys, *target)
    _, itself, _ = attack(capsys, *target, "--surrogate", str(runs["ols"]))
    assert itself["robust_top1"] == white["robust_top1"]  # crafted on the target itself: the white-box attack
    code, transfer, _ = attack(capsys, *target, "--surrogate", str(runs["ce"]), "--save-to-run")
    assert code == 0 and transfer["surrogate"].endswith("best.pt") and transfer["robust_top1"] <= transfer["clean_top1"]
    assert (runs["ols"] / "results" / "attack-pgd-linf-0.1-transfer.json").is_file()
    code, _, err = attack(capsys, *target, "--surrogate", str(runs["ce16"]))
    assert code == 2 and "sees other test images" in err


def test_a_broken_result_beside_the_checkpoint_is_one_line_not_skipped(runs, capsys):
    # the masking check reads the run's results/ under the rule of every reader (olsmooth.runs.results): a file
    # that is not a JSON object is named, not passed over in silence
    results = runs["ce"] / "results"
    made = not results.exists()
    results.mkdir(exist_ok=True)
    broken = results / "attack-square-linf-0.1.json"
    broken.write_text("{not json", encoding="utf-8")
    try:
        code, _, err = attack(capsys, "--checkpoint", str(runs["ce"]), "--attack", "fgsm", "--eps", "0.1", "--n", "20")
    finally:
        broken.unlink()
        if made:
            results.rmdir()
    assert code == 2 and f"{broken}: malformed JSON" in err and err.count("\n") == 1


def test_attack_command_bad_input(runs, capsys, tmp_path):
    ols = str(runs["ols"])
    for argv, message in (
            (["--checkpoint", ols, "--attack", "pgd", "--eps", "8/0"], "--eps must be"),
            (["--checkpoint", ols, "--attack", "pgd", "--eps", "0.1", "--n", "0"], "--n must be at least 1"),
            (["--checkpoint", ols, "--attack", "square", "--eps", "0.1", "--surrogate", ols], "black-box"),
            (["--checkpoint", str(tmp_path / "x.pt"), "--attack", "fgsm", "--eps", "0.1"], "checkpoint not found")):
        code, _, err = attack(capsys, *argv)
        assert code == 2 and message in err and err.count("\n") == 1


# -- the registry --------------------------------------------------------------------------------------------------
REGISTERED = ("fgsm", "pgd", "apgd-ce", "apgd-dlr", "square", "autoattack")


def test_an_unknown_attack_is_one_line_listing_the_registered_ones(capsys):
    with pytest.raises(UserInputError, match="^unknown attack 'bogus'; use one of " + ", ".join(REGISTERED) + "$"):
        attack_settings("bogus", "linf", "0.1")
    assert main(["attack", "--checkpoint", "x.pt", "--attack", "bogus", "--eps", "0.1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "invalid choice: 'bogus'" in err
    assert all(f"'{name}'" in err for name in REGISTERED)


@pytest.mark.parametrize("name", attack_names())
def test_every_registered_attack_runs_through_the_command(runs, capsys, name):
    """Each attack the registry holds runs end to end on a one-epoch digits model, with the smallest budget it
    takes, and writes its result under the name result_name gives."""
    entry = ATTACKS[name]
    if entry.extra:
        pytest.importorskip("torchattacks")
    budget = ["--steps", "2"] if "steps" in entry.options else []
    code, r, err = attack(capsys, "--checkpoint", str(runs["ols"]), "--attack", name, "--eps", "0.3", "--n", "24",
                          *budget, "--save-to-run")
    assert code == 0, err
    assert r["attack"] == name and r["n"] == 24 and r["robust_top1"] <= r["clean_top1"]
    assert r["steps"] == (2 if budget else {"fgsm": 1, "autoattack": None}[name])
    assert (r["fgsm_top1"] is not None) == (name == "pgd")
    saved = runs["ols"] / "results" / f"attack-{name}-linf-0.3.json"
    assert json.loads(saved.read_text())["robust_top1"] == r["robust_top1"]


def test_the_docs_table_shows_every_registered_attack_with_its_kind_and_default_budget():
    text = (Path(__file__).resolve().parents[1] / "docs" / "robustness.md").read_text(encoding="utf-8")
    section = text.split("\n## The attacks\n")[1].split("\n## ")[0]
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in section.splitlines()
            if line.startswith("| `") and not line.startswith("| `--attack`")]
    assert [row[0].strip("`") for row in rows] == list(attack_names())
    for row in rows:
        entry = ATTACKS[row[0].strip("`")]
        assert (row[1], row[-1]) == (entry.access, entry.budget_text()), row
