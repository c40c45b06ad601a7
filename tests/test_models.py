"""Tests of the model registry (pathologies.models.registry).

Big networks are built on the ``meta`` device (shapes only, no memory, no initialisation cost),
so parameter counts and size limits of ImageNet-scale models stay cheap to check.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

from pathologies.errors import UserError
from pathologies.models.registry import (
    ARCHITECTURES,
    PixelDropout,
    build_model,
    count_parameters,
    load_weights,
)

CIFAR_ARCHS = ("small_cnn", "mlp", "resnet20", "resnet18", "vgg16_bn", "densenet121")
TORCHVISION_ARCHS = {
    # name: (torchvision constructor, extra options, published parameter count for 1000 classes)
    "tv_resnet18": (torchvision.models.resnet18, {}, 11_689_512),
    "tv_resnet50": (torchvision.models.resnet50, {}, 25_557_032),
    "tv_densenet121": (torchvision.models.densenet121, {}, 7_978_856),
    # 27,161,264 with the auxiliary classifier, which we leave out
    "tv_inception_v3": (torchvision.models.inception_v3, {"aux_logits": False, "init_weights": False}, 23_834_568),
    "tv_vgg11": (torchvision.models.vgg11, {}, 132_863_336),
    "tv_alexnet": (torchvision.models.alexnet, {}, 61_100_840),
    "tv_vit_b_16": (torchvision.models.vit_b_16, {}, 86_567_656),
    "tv_resnet152": (torchvision.models.resnet152, {}, 60_192_808),
    "tv_squeezenet1_1": (torchvision.models.squeezenet1_1, {}, 1_235_496),
    # Yalniz et al.'s SWSL ResNeXt-101 32x16d: 194M parameters
    "tv_resnext101_32x16d": (torchvision.models.resnext101_32x8d, {"width_per_group": 16}, 194_026_792),
}
CIFAR_STEM_ARCHS = ("tv_resnet18_cifar", "tv_densenet121_cifar")  # Meding et al.'s CIFAR-100 networks



def build_on_meta(arch: str, num_classes: int, **kwargs) -> nn.Module:
    with torch.device("meta"):
        return build_model(arch, num_classes, **kwargs)


# the robustness library's models behind its input normalisation (tests/test_foreign_checkpoints.py):
# kuangliu's / the library's CIFAR ResNet-50 (23.5M) and torchvision's ResNet-50
FOREIGN_ARCHS = {"robustness_cifar_resnet50": (10, 23_520_842), "robustness_tv_resnet50": (1000, 25_557_032)}


def test_registry_names():
    assert set(ARCHITECTURES) == set(CIFAR_ARCHS) | set(TORCHVISION_ARCHS) | set(FOREIGN_ARCHS) | set(CIFAR_STEM_ARCHS)


@pytest.mark.parametrize("arch", sorted(FOREIGN_ARCHS))
def test_foreign_architecture_parameter_counts(arch):
    classes, expected = FOREIGN_ARCHS[arch]
    assert count_parameters(build_on_meta(arch, classes, image_size=32)) == expected




def test_authors_cifar_resnet18_is_torchvision_with_a_3x3_stride_1_stem_and_the_max_pool():
    """Meding et al.'s ResNet18CIFAR: torchvision resnet18, conv1 -> 3x3/1/1 without bias, max-pool kept,
    100 outputs."""
    model = build_model("tv_resnet18_cifar", 100, image_size=32).eval()
    reference = torchvision.models.resnet18(weights=None, num_classes=100)
    conv = model.conv1
    assert (conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, conv.bias) == (
        3, 64, (3, 3), (1, 1), (1, 1), None)
    assert isinstance(model.maxpool, nn.MaxPool2d) and model.maxpool.kernel_size == 3 and model.maxpool.stride == 2
    assert model.fc.out_features == 100
    # every other parameter has torchvision's shape; conv1 has 64*3*3*3 instead of 64*3*7*7 weights
    shapes = {k: v.shape for k, v in model.state_dict().items()}
    expected = {k: v.shape for k, v in reference.state_dict().items()}
    assert shapes.keys() == expected.keys()
    assert [k for k in shapes if shapes[k] != expected[k]] == ["conv1.weight"]
    assert count_parameters(model) == count_parameters(reference) - 64 * 3 * (49 - 9)
    # 32x32 -> 32x32 after the stem, 16x16 after the max-pool, 2x2 at the last stage
    features = {}
    model.layer4.register_forward_hook(lambda m, i, o: features.update(layer4=tuple(o.shape)))
    model.maxpool.register_forward_hook(lambda m, i, o: features.update(maxpool=tuple(o.shape)))
    with torch.no_grad():
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 100)
    assert features == {"maxpool": (2, 64, 16, 16), "layer4": (2, 512, 2, 2)}


def test_authors_cifar_densenet121_has_a_3x3_stem_the_pool_and_a_new_classifier():
    torch.manual_seed(0)
    model = build_model("tv_densenet121_cifar", 100, image_size=32).eval()
    conv = model.features.conv0
    assert (conv.kernel_size, conv.stride, conv.padding, conv.bias) == ((3, 3), (1, 1), (1, 1), None)
    assert isinstance(model.features.pool0, nn.MaxPool2d)
    assert (model.classifier.in_features, model.classifier.out_features) == (1024, 100)
    # replaced after construction: default nn.Linear init, not torchvision's zero bias
    assert model.classifier.bias.abs().sum() > 0
    with torch.no_grad():
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 100)


# --- parameter counts ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "arch, expected",
    [
        ("resnet20", 269_722),  # He et al. 2016: 0.27M; akamaster/pytorch_resnet_cifar10
        ("resnet18", 11_173_962),  # kuangliu/pytorch-cifar
        ("vgg16_bn", 14_728_266),
        ("densenet121", 6_956_298),
        ("mlp", 3 * 32 * 32 * 128 + 128 + 128 * 10 + 10),
    ],
)
def test_cifar_parameter_counts(arch, expected):
    assert count_parameters(build_on_meta(arch, 10)) == expected


def test_parameter_count_scales_with_classes_and_channels():
    base = count_parameters(build_on_meta("resnet20", 10))
    assert count_parameters(build_on_meta("resnet20", 100)) == base + 90 * (64 + 1)
    assert count_parameters(build_on_meta("resnet20", 10, in_channels=1)) == base - 2 * 16 * 9


@pytest.mark.parametrize("arch", sorted(TORCHVISION_ARCHS))
def test_torchvision_parameter_counts(arch):
    constructor, options, published = TORCHVISION_ARCHS[arch]
    image_size = 224  # only the ViT uses it
    if arch == "tv_resnext101_32x16d":
        constructor = lambda weights, **kw: torchvision.models.resnet.ResNet(  # noqa: E731
            torchvision.models.resnet.Bottleneck, [3, 4, 23, 3], groups=32, **kw)
    assert count_parameters(build_on_meta(arch, 1000, image_size=image_size)) == published
    with torch.device("meta"):
        reference = constructor(weights=None, num_classes=7, **options)
    assert count_parameters(build_on_meta(arch, 7, image_size=image_size)) == count_parameters(reference)


def test_vit_takes_image_size():
    model = build_on_meta("tv_vit_b_16", 10, image_size=32)
    assert model.image_size == 32
    assert model.encoder.pos_embedding.shape[1] == (32 // 16) ** 2 + 1


def test_count_parameters_counts_shared_parameters_once():
    layer = nn.Linear(3, 4)
    assert count_parameters(nn.Sequential(layer, nn.ReLU(), layer)) == 16


# --- forward shapes and size limits ----------------------------------------------------------


@pytest.mark.parametrize("arch", ["small_cnn", "resnet20", "mlp"])
@pytest.mark.parametrize("image_size", [8, 16, 32])
@pytest.mark.parametrize("in_channels", [1, 3])
def test_small_models_output_shape(arch, image_size, in_channels):
    torch.manual_seed(0)
    model = build_model(arch, 7, in_channels=in_channels, image_size=image_size).eval()
    with torch.no_grad():
        logits = model(torch.randn(2, in_channels, image_size, image_size))
    assert logits.shape == (2, 7)
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("arch", ["resnet18", "vgg16_bn", "densenet121"])
@pytest.mark.parametrize("image_size", [8, 16])
def test_large_cifar_models_take_small_images(arch, image_size):
    model = build_model(arch, 5, in_channels=1, image_size=image_size).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 1, image_size, image_size)).shape == (2, 5)


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_min_image_size_is_exact(arch):
    """The declared minimum works and one pixel less does not (shape inference on meta)."""
    size = ARCHITECTURES[arch].min_image_size
    in_channels = 3
    model = build_on_meta(arch, 4, image_size=size).eval()
    assert model(torch.zeros(2, in_channels, size, size, device="meta")).shape == (2, 4)
    if size > 1 and arch != "tv_vit_b_16":  # ViT sizes are multiples of 16 instead
        with pytest.raises(RuntimeError):
            model(torch.zeros(2, in_channels, size - 1, size - 1, device="meta"))
        with pytest.raises(UserError, match=f"at least {size}x{size}"):
            build_on_meta(arch, 4, image_size=size - 1)


def test_cifar_models_on_32x32_are_deterministic_given_the_seed():
    torch.manual_seed(3)
    first = build_model("resnet20", 10)
    torch.manual_seed(3)
    second = build_model("resnet20", 10)
    for (name, a), b in zip(first.state_dict().items(), second.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_small_cnn_learns_digits():
    """The offline default: small_cnn reaches > 90 % test accuracy on sklearn digits in 10 epochs."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1)
    labels = torch.tensor(digits.target)
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))
    train, test = order[:1350], order[1350:]
    mean, std = images[train].mean(), images[train].std()
    images = (images - mean) / std

    torch.manual_seed(0)
    model = build_model("small_cnn", 10, in_channels=1, image_size=8)
    epochs, batch = 10, 64
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, epochs * math.ceil(len(train) / batch))
    for _ in range(epochs):
        model.train()
        shuffled = train[torch.randperm(len(train))]
        for start in range(0, len(train), batch):
            index = shuffled[start : start + batch]
            loss = nn.functional.cross_entropy(model(images[index]), labels[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
    model.eval()
    with torch.no_grad():
        accuracy = (model(images[test]).argmax(1) == labels[test]).float().mean().item()
    assert accuracy > 0.9


# --- input dropout ---------------------------------------------------------------------------


def test_pixel_dropout_zeroes_whole_pixels_at_the_right_rate_without_rescaling():
    torch.manual_seed(0)
    x = torch.rand(64, 3, 32, 32) + 1.0  # no zeros of its own
    dropout = PixelDropout(0.7).train()
    out = dropout(x)
    zero = out == 0
    assert torch.equal(zero, zero[:, :1].expand_as(zero)), "channels of a pixel must drop together"
    assert abs(zero[:, 0].float().mean().item() - 0.3) < 0.01
    assert torch.equal(out[~zero], x[~zero]), "kept pixels must keep their values"


def test_pixel_dropout_is_identity_in_eval_and_at_keep_one():
    x = torch.randn(4, 3, 8, 8)
    assert PixelDropout(0.5).eval()(x) is x
    assert PixelDropout(1.0).train()(x) is x


def test_pixel_dropout_draws_from_the_global_generator():
    x = torch.ones(8, 3, 8, 8)
    dropout = PixelDropout(0.5).train()
    torch.manual_seed(1)
    first = dropout(x)
    torch.manual_seed(1)
    assert torch.equal(dropout(x), first)
    assert not torch.equal(dropout(x), first)


def test_build_model_wraps_input_dropout():
    torch.manual_seed(0)
    model = build_model("small_cnn", 10, in_channels=1, image_size=8, input_dropout_keep=0.8)
    assert isinstance(model.input_dropout, PixelDropout) and model.input_dropout.keep == 0.8
    x = torch.randn(4, 1, 8, 8)
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x), model.net(x))
    assert not any(isinstance(m, PixelDropout) for m in build_model("small_cnn", 10).modules())


@pytest.mark.parametrize("keep", [0, 0.0, -0.1, 1.5, float("nan"), "0.5", True, None])
def test_bad_keep_probability(keep):
    with pytest.raises(UserError, match="input_dropout_keep"):
        build_model("small_cnn", 10, input_dropout_keep=keep)
    with pytest.raises(UserError, match="input_dropout_keep"):
        PixelDropout(keep)


# --- weights ---------------------------------------------------------------------------------


def tiny(arch="resnet20", seed=0, **kwargs):
    torch.manual_seed(seed)
    return build_model(arch, 10, in_channels=1, image_size=8, **kwargs)


def trained_like(model: nn.Module) -> nn.Module:
    """Give BN running statistics non-default values, so a round trip must carry them."""
    model.train()
    with torch.no_grad():
        model(torch.randn(16, 1, 8, 8) * 3 + 1)
    return model.eval()


def assert_same_outputs(a: nn.Module, b: nn.Module):
    x = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(5))
    a.eval(), b.eval()
    with torch.no_grad():
        assert torch.equal(a(x), b(x))


@pytest.mark.parametrize(
    "wrap",
    [
        lambda sd: sd,
        lambda sd: {"state_dict": sd, "epoch": torch.tensor(3)},
        lambda sd: {"model": sd},
        lambda sd: {f"module.{k}": v for k, v in sd.items()},
    ],
    ids=["raw", "state_dict", "model", "dataparallel"],
)
def test_weights_round_trip(tmp_path, wrap):
    source = trained_like(tiny(seed=1))
    path = tmp_path / "weights.pt"
    torch.save(wrap(source.state_dict()), path)
    loaded = tiny(seed=2, weights=path)
    assert_same_outputs(source, loaded)
    assert not torch.equal(tiny(seed=2).conv1.weight, loaded.conv1.weight)


def test_weights_load_across_the_input_dropout_wrapper(tmp_path):
    wrapped = trained_like(tiny(seed=1, input_dropout_keep=0.5))
    torch.save(wrapped.state_dict(), tmp_path / "wrapped.pt")
    bare = tiny(seed=2, weights=tmp_path / "wrapped.pt")
    assert_same_outputs(wrapped, bare)

    torch.save(bare.state_dict(), tmp_path / "bare.pt")
    rewrapped = tiny(seed=3, input_dropout_keep=0.9, weights=str(tmp_path / "bare.pt"))
    assert_same_outputs(bare, rewrapped)


def test_torchvision_weights_round_trip(tmp_path):
    source = build_model("tv_resnet18", 3, image_size=32).eval()
    torch.save(source.state_dict(), tmp_path / "tv.pt")
    loaded = build_model("tv_resnet18", 3, image_size=32, weights=tmp_path / "tv.pt")
    x = torch.randn(2, 3, 32, 32)
    loaded.eval()
    with torch.no_grad():
        assert torch.equal(source(x), loaded(x))


def test_torchvision_inception_weights_with_their_aux_classifier_load(tmp_path):
    """torchvision's pretrained Inception files hold AuxLogits.* and expect transform_input."""
    torch.manual_seed(0)
    source = torchvision.models.inception_v3(weights=None, num_classes=5, aux_logits=True,
                                             init_weights=False, transform_input=True).eval()
    torch.save(source.state_dict(), tmp_path / "inception.pt")
    loaded = build_model("tv_inception_v3", 5, image_size=80, weights=tmp_path / "inception.pt").eval()
    assert not hasattr(loaded, "AuxLogits") or loaded.AuxLogits is None
    x = torch.randn(2, 3, 80, 80)
    with torch.no_grad():
        assert torch.equal(source(x), loaded(x))


def test_missing_weights_file(tmp_path):
    with pytest.raises(UserError, match=r"weights file .*nope\.pt does not exist"):
        tiny(weights=tmp_path / "nope.pt")


def test_weights_of_another_shape(tmp_path):
    torch.save(build_model("resnet20", 100).state_dict(), tmp_path / "cifar100.pt")
    with pytest.raises(UserError, match=r"cifar100\.pt does not fit architecture 'resnet20'.*linear\.weight"):
        build_model("resnet20", 10, weights=tmp_path / "cifar100.pt")


def test_weights_of_another_architecture(tmp_path):
    torch.save(tiny("small_cnn").state_dict(), tmp_path / "cnn.pt")
    with pytest.raises(UserError, match=r"missing keys.*unexpected keys"):
        tiny("resnet20", weights=tmp_path / "cnn.pt")


@pytest.mark.parametrize(
    "content", [b"not a torch file", None, {"epoch": 3}, {"conv1.weight": np.zeros(3)}], ids=str
)
def test_unusable_weights_file(tmp_path, content):
    path = tmp_path / "bad.pt"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        torch.save(content, path)
    with pytest.raises(UserError, match=r"weights file .*bad\.pt (is not a readable|holds no state dict)"):
        tiny(weights=path)


def test_load_weights_error_is_one_line(tmp_path):
    torch.save(tiny("small_cnn").state_dict(), tmp_path / "cnn.pt")
    with pytest.raises(UserError) as err:
        load_weights(tiny("resnet20"), tmp_path / "cnn.pt", arch="resnet20")
    assert "\n" not in str(err.value)


# --- argument errors -------------------------------------------------------------------------


def test_unknown_architecture_lists_known_names():
    with pytest.raises(UserError, match=r"unknown model architecture 'resnet21'.*small_cnn.*tv_vit_b_16"):
        build_model("resnet21", 10)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"num_classes": 1}, "num_classes=1"),
        ({"num_classes": 2.5}, "num_classes=2.5"),
        ({"in_channels": 0}, "in_channels=0"),
        ({"image_size": 0}, "image_size=0"),
    ],
)
def test_bad_sizes(kwargs, message):
    args = {"arch": "small_cnn", "num_classes": 10} | kwargs
    with pytest.raises(UserError, match=message):
        build_model(**args)


def test_torchvision_models_need_rgb():
    with pytest.raises(UserError, match=r"'tv_resnet18' takes 3-channel.*in_channels=1"):
        build_model("tv_resnet18", 10, in_channels=1)


def test_vit_image_size_must_be_a_multiple_of_the_patch_size():
    with pytest.raises(UserError, match="multiple of 16, got image_size=40"):
        build_on_meta("tv_vit_b_16", 10, image_size=40)
