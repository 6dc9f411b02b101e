"""Model registry and architectures, checked against published parameter counts, hand-worked counts, the
spatial sizes the papers' layouts imply and, for SAN's attention, a per-pixel loop of the paper's equations;
every registered name trains one step."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from olsmooth.errors import UserInputError
from olsmooth.models import accepts_in_chans, create_model, list_models
from olsmooth.models.san import PairwiseSelfAttention


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny batches gain nothing from two threads, and spinning OpenMP workers slow ten-fold on a busy 2-core box."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def n_params(name: str, num_classes: int = 10, in_chans: int = 3) -> int:
    with torch.device("meta"):  # shapes only: no memory, no init
        model = create_model(name, num_classes=num_classes, in_chans=in_chans)
    return sum(p.numel() for p in model.parameters())


def tolerance(published: str) -> float:
    """Relative tolerance for a count printed like "0.27M": 3%, or half a unit of the last printed digit."""
    digits = published[:-1]
    decimals = len(digits.partition(".")[2])
    return max(0.03, 0.5 * 10 ** -decimals / float(digits))


# (name, classes, published count, source). CIFAR counts are for 10 classes, ImageNet ones for 1000.
PUBLISHED = [
    ("cifar_resnet20", 10, "0.27M", "He et al., CVPR 2016, Table 6"),
    ("cifar_resnet32", 10, "0.46M", "He et al., CVPR 2016, Table 6"),
    ("cifar_resnet44", 10, "0.66M", "He et al., CVPR 2016, Table 6"),
    ("cifar_resnet56", 10, "0.85M", "He et al., CVPR 2016, Table 6"),
    ("cifar_resnet110", 10, "1.7M", "He et al., CVPR 2016, Table 6"),
    ("cifar_resnet1202", 10, "19.4M", "He et al., CVPR 2016, Table 6"),
    ("wrn40_4", 10, "8.9M", "Zagoruyko & Komodakis, BMVC 2016, CIFAR results table"),
    ("wrn16_8", 10, "11.0M", "Zagoruyko & Komodakis, BMVC 2016, CIFAR results table"),
    ("wrn28_10", 10, "36.5M", "Zagoruyko & Komodakis, BMVC 2016, CIFAR results table"),
    ("resnext29_8x64d", 10, "34.4M", "Xie et al., CVPR 2017, Table 7"),
    ("resnext29_16x64d", 10, "68.1M", "Xie et al., CVPR 2017, Table 7"),
    ("densenet_bc100_k12", 10, "0.8M", "Huang et al., CVPR 2017, Table 2"),
    ("densenet_bc250_k24", 10, "15.3M", "Huang et al., CVPR 2017, Table 2"),
    ("densenet_bc190_k40", 10, "25.6M", "Huang et al., CVPR 2017, Table 2"),
    ("pyramidnet110_a84", 10, "3.8M", "Han et al., CVPR 2017, Table 4"),
    ("pyramidnet110_a270", 10, "28.3M", "Han et al., CVPR 2017, Table 4"),
    ("san15", 1000, "14.1M", "Zhao, Jia & Koltun, CVPR 2020, Table 2 (SAN15, pairwise)"),
    ("shufflenetv2_cifar", 1000, "2.3M", "Ma et al., ECCV 2018 (1x); strides do not change the count"),
]


@pytest.mark.parametrize("name,classes,published,source", PUBLISHED, ids=[p[0] for p in PUBLISHED])
def test_parameter_count_matches_the_paper(name: str, classes: int, published: str, source: str) -> None:
    expected = float(published[:-1]) * 1e6
    assert abs(n_params(name, classes) - expected) <= tolerance(published) * expected, source


def pyramid_count(depth: int, alpha: int, classes: int) -> int:
    """Hand count of the additive PyramidNet: width of unit k is round(16 + alpha k / N), k = 1..N."""
    n_units = 3 * (depth - 2) // 6
    total, c = 3 * 16 * 9 + 2 * 16, 16                                     # stem conv + BN
    for k in range(1, n_units + 1):
        w = round(16 + alpha * k / n_units)
        total += 2 * c + 9 * c * w + 2 * w + 9 * w * w + 2 * w              # BN, conv, BN, conv, BN
        c = w
    return total + 2 * c + c * classes + classes                           # final BN, fc


def test_pyramidnet110_a48_count() -> None:
    # The paper (Table 4) prints 1.7M; the authors' PyTorch code, whose width rule we follow, has 1,772,706
    # (4% more). Check the exact hand count and stay within 5% of the printed figure.
    assert n_params("pyramidnet110_a48") == pyramid_count(110, 48, 10) == 1_772_706
    assert abs(1_772_706 - 1.7e6) / 1.7e6 < 0.05


def test_counts_built_on_torchvision_match_its_documented_counts() -> None:
    # torchvision's model docs: resnet18 11,689,512, resnet34 21,797,672, resnet50 25,557,032, mobilenet_v2
    # 3,504,872 (all 1000 classes). The CIFAR stem swaps a 7x7x3x64 conv for a 3x3x3x64 one.
    stem = 64 * 3 * 3 * 3 - 64 * 3 * 7 * 7
    for name, documented, features in (("resnet18", 11_689_512, 512), ("resnet34", 21_797_672, 512),
                                       ("resnet50", 25_557_032, 2048)):
        ten_class_head = -(features * 990 + 990)
        assert n_params(f"{name}_cifarstem") == documented + stem + ten_class_head
    assert n_params("mobilenetv2_cifar", 1000) == 3_504_872   # stride changes only


def preact_count(in_chans: int, classes: int, stem: int, widths: tuple, depths: tuple) -> int:
    """Hand count of a pre-activation ResNet: BN, 3x3 conv, BN, 3x3 conv (+ 1x1 projection) per unit."""
    total, c = 9 * in_chans * stem, stem
    for width, depth in zip(widths, depths):
        for i in range(depth):
            total += 2 * c + 9 * c * width + 2 * width + 9 * width * width
            if i == 0 and (c != width or width != widths[0]):
                total += c * width
            c = width
    return total + 2 * c + c * classes + classes


def test_hand_worked_counts_of_unpublished_networks() -> None:
    assert n_params("preact_resnet18") == preact_count(3, 10, 64, (64, 128, 256, 512), (2, 2, 2, 2))
    assert n_params("preact_resnet34") == preact_count(3, 10, 64, (64, 128, 256, 512), (3, 4, 6, 3))
    assert n_params("wrn16_4") == preact_count(3, 10, 16, (64, 128, 256), (2, 2, 2))
    # small_cnn, 1 channel: conv 3x3 1->32, 32->64, 64->128 (+BN each), fc 128->10
    assert n_params("small_cnn", in_chans=1) == 288 + 64 + 18432 + 128 + 73728 + 256 + 1290
    # small_resnet = ResNet-8, 1 channel: stem 3x3 1->16 + BN; one basic block per stage, option A; fc
    stem, s1, s2, s3 = 144 + 32, 2 * (2304 + 32), 4608 + 64 + 9216 + 64, 18432 + 128 + 36864 + 128
    assert n_params("small_resnet", in_chans=1) == stem + s1 + s2 + s3 + 650
    # mlp on 1x8x8: 64->512->256->10
    assert n_params("mlp", in_chans=1) == (64 * 512 + 512) + (512 * 256 + 256) + (256 * 10 + 10)
    # linear on 1x8x8: 64->10
    assert n_params("linear", in_chans=1) == 64 * 10 + 10


# Every name our registry lists, with its input side and the feature-map side the paper's layout gives.
FORWARD = {
    "mlp": (8, None), "linear": (8, None), "small_cnn": (8, 2), "small_resnet": (8, 2),
    "cifar_resnet20": (32, 8), "cifar_resnet32": (32, 8), "cifar_resnet44": (32, 8), "cifar_resnet56": (32, 8),
    "cifar_resnet110": (32, 8),
    "preact_resnet18": (32, 4), "preact_resnet34": (32, 4),
    "wrn16_4": (32, 8), "wrn16_8": (32, 8), "wrn28_10": (32, 8), "wrn40_4": (32, 8),
    "resnext29_2x64d": (32, 8), "resnext29_4x64d": (32, 8), "resnext29_32x4d": (32, 8),
    "densenet_bc100_k12": (32, 8), "pyramidnet110_a48": (32, 8),
    "shufflenetv2_cifar": (32, 4), "mobilenetv2_cifar": (32, 4),
    "resnet18_cifarstem": (32, 4), "resnet34_cifarstem": (32, 4), "resnet50_cifarstem": (32, 4),
    "san15": (64, 2),
}
# Too slow for a CPU test step (tens of GFLOPs or 1202 layers); their counts are checked above on "meta".
COUNT_ONLY = {"cifar_resnet1202", "resnext29_8x64d", "resnext29_16x64d", "densenet_bc190_k40",
              "densenet_bc250_k24", "pyramidnet110_a84", "pyramidnet110_a270"}


def test_every_listed_name_is_tested() -> None:
    assert set(list_models("olsmooth")) == set(FORWARD) | COUNT_ONLY


def final_feature_map(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The last spatial map before global pooling (ours: `features`; torchvision's: its last stage)."""
    trunk = next(getattr(model, attr) for attr in ("features", "layer4", "conv5") if hasattr(model, attr))
    seen = []
    handle = trunk.register_forward_hook(lambda _m, _i, out: seen.append(out))
    model(x)
    handle.remove()
    return seen[0]


@pytest.mark.parametrize("name", sorted(FORWARD))
def test_one_training_step(name: str) -> None:
    torch.manual_seed(0)
    side, final_side = FORWARD[name]
    model = create_model(name, num_classes=7)
    x = torch.randn(2, 3, side, side)
    out = model(x)
    assert out.shape == (2, 7) and torch.isfinite(out).all()
    out.logsumexp(1).sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    if final_side is not None:
        with torch.no_grad():
            assert final_feature_map(model, x).shape[-2:] == (final_side, final_side)


def test_small_nets_take_digits_fashion_mnist_and_64px() -> None:
    for name in ("mlp", "linear", "small_cnn", "small_resnet"):
        model = create_model(name, num_classes=10, in_chans=1).eval()
        for side in (8, 28, 64):
            assert model(torch.randn(2, 1, side, side)).shape == (2, 10)


@pytest.mark.parametrize("name", sorted(FORWARD))
def test_single_channel_input(name: str) -> None:
    side = FORWARD[name][0]
    with torch.device("meta"):
        model = create_model(name, num_classes=5, in_chans=1)
        assert model(torch.empty(2, 1, side, side)).shape == (2, 5)
        with pytest.raises(RuntimeError):  # really built for one channel, not three
            model(torch.empty(2, 3, side, side))


def test_library_names_resolve_to_their_sources() -> None:
    import timm.models.resnet
    import torchvision.models

    for name, cls in (("tv/resnet18", torchvision.models.ResNet), ("resnet18", torchvision.models.ResNet),
                      ("timm/resnet18", timm.models.resnet.ResNet)):
        model = create_model(name, num_classes=7)
        assert type(model) is cls
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 7)
    timm_only = create_model("resnet10t", num_classes=4)   # not a torchvision name: falls through to timm
    assert type(timm_only) is timm.models.resnet.ResNet and timm_only.fc.out_features == 4


def test_torchvision_single_channel_keeps_the_initial_weights_of_the_first_channel() -> None:
    torch.manual_seed(0)
    rgb = create_model("tv/resnet18", num_classes=3)
    torch.manual_seed(0)
    gray = create_model("tv/resnet18", num_classes=3, in_chans=1)
    assert gray.conv1.in_channels == 1 and gray.conv1.stride == (2, 2) and gray.conv1.kernel_size == (7, 7)
    assert torch.equal(gray.conv1.weight, rgb.conv1.weight[:, :1])
    assert gray(torch.randn(2, 1, 32, 32)).shape == (2, 3)
    with torch.device("meta"):  # other families: the stem sits inside a Sequential, or is a patch embedding
        for name, side in (("mobilenet_v2", 32), ("vit_b_16", 224), ("googlenet", 64)):
            model = create_model(name, num_classes=3, in_chans=2).eval()
            assert model(torch.empty(1, 2, side, side)).shape == (1, 3)


def test_timm_in_chans_passes_through() -> None:
    with torch.device("meta"):
        model = create_model("timm/resnet18", num_classes=3, in_chans=1)
    assert model.conv1.in_channels == 1 and model.fc.out_features == 3


def test_accepts_in_chans() -> None:
    for name in ("small_cnn", "wrn28_10", "san15", "resnet18", "tv/mobilenet_v2", "timm/resnet18"):
        assert accepts_in_chans(name)
    with pytest.raises(UserInputError):
        accepts_in_chans("no_such_net")


@pytest.mark.parametrize("name,suggestion", [("cifar_resnet65", None), ("cifar_resnt56", "cifar_resnet56"),
                                             ("tv/resnet19", "resnet18"), ("timm/resnet18x", "resnet18"),
                                             ("wideresnet28_10", "wrn28_10")])
def test_unknown_names_suggest_close_ones(name: str, suggestion: str | None) -> None:
    with pytest.raises(UserInputError) as err:
        create_model(name, num_classes=10)
    message = str(err.value)
    assert "\n" not in message
    if suggestion is None:  # a family name with an impossible depth says why
        assert "6n+2" in message
    else:
        assert suggestion in message


def test_bad_arguments_are_user_errors() -> None:
    with pytest.raises(UserInputError, match="num_classes"):
        create_model("small_cnn", num_classes=0)
    with pytest.raises(UserInputError, match="in_chans"):
        create_model("small_cnn", num_classes=3, in_chans=True)
    with pytest.raises(UserInputError, match="bad options"):
        create_model("small_cnn", num_classes=3, depth=4)
    with pytest.raises(UserInputError, match="bad options"):
        create_model("tv/resnet18", num_classes=3, no_such_option=1)
    with pytest.raises(UserInputError, match="6n\\+4"):
        create_model("wrn27_10", num_classes=3)
    with pytest.raises(UserInputError, match="source"):
        list_models("pypi")


def test_list_models() -> None:
    ours = list_models("olsmooth")
    assert {"small_cnn", "cifar_resnet56", "wrn28_10", "san15", "resnext29_32x4d"} <= set(ours)
    assert ours == sorted(ours)
    tv = list_models("torchvision")
    assert "resnet50" in tv and "mobilenet_v2" in tv
    timm_names = list_models("timm")
    assert "resnet10t" in timm_names and len(timm_names) > 500
    assert set(list_models()) == set(ours) | set(tv) | set(timm_names)


def test_cifar_resnet_shortcut_options() -> None:
    # Option A adds no parameters; option B adds a 1x1 conv + BN at the two widening blocks.
    a = n_params("cifar_resnet20")
    with torch.device("meta"):
        b = create_model("cifar_resnet20", num_classes=10, shortcut="B")
    assert sum(p.numel() for p in b.parameters()) - a == (16 * 32 + 64) + (32 * 64 + 128)


def san_reference(op: PairwiseSelfAttention, x: torch.Tensor) -> torch.Tensor:
    """y_i = sum_{j in R(i)} softmax_j(gamma([phi(x_i) - psi(x_j), p_i - p_j])) * beta(x_j), pixel by pixel;
    R(i) is the k x k window around i restricted to the image; weight channel c % (C/share) serves channel c."""
    _, _, h, w = x.shape
    k = op.kernel_size
    phi, psi, beta = op.phi(x)[0], op.psi(x)[0], op.beta(x)[0]
    coords = torch.stack([torch.linspace(-1, 1, w).expand(h, w), torch.linspace(-1, 1, h)[:, None].expand(h, w)])
    pos = op.position(coords[None])[0]
    out = torch.zeros_like(beta)
    groups = op.gamma[-1].out_channels
    for i in range(h):
        for j in range(w):
            logits, values = [], []
            for di in range(-(k // 2), k // 2 + 1):
                for dj in range(-(k // 2), k // 2 + 1):
                    a, b = i + di, j + dj
                    if 0 <= a < h and 0 <= b < w:
                        relation = torch.cat([phi[:, i, j] - psi[:, a, b], pos[:, i, j] - pos[:, a, b]])
                        logits.append(op.gamma(relation[None, :, None, None])[0, :, 0, 0])
                        values.append(beta[:, a, b])
            weights = torch.softmax(torch.stack(logits), dim=0)          # over the window
            for c in range(beta.shape[0]):
                out[c, i, j] = sum(wt[c % groups] * v[c] for wt, v in zip(weights, values))
    return out[None]


def test_pairwise_attention_matches_the_per_pixel_formula() -> None:
    torch.manual_seed(0)
    op = PairwiseSelfAttention(in_channels=16, rel_channels=4, out_channels=16, kernel_size=3, share=8).eval()
    for bn in (op.gamma[0], op.gamma[3]):   # non-trivial running statistics: gamma is per-pair in eval mode
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 2.0)
    x = torch.randn(1, 16, 4, 5)            # not square: rows and columns cannot be swapped unnoticed
    with torch.no_grad():
        assert torch.allclose(op(x), san_reference(op, x), atol=1e-5)


def test_san15_native_resolution_ends_at_7x7() -> None:
    model = create_model("san15", num_classes=1000).eval()
    with torch.no_grad():
        assert model.features(torch.randn(1, 3, 224, 224)).shape == (1, 2048, 7, 7)
