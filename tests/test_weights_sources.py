"""Weights sources of a model (pathologies.models.weights): placed files with a SHA-256, torchvision names."""

from __future__ import annotations

import hashlib

import pytest
import torch

from pathologies.errors import UserError
from pathologies.experiments import check_weights
from pathologies.models import weights as W
from pathologies.models.registry import TORCHVISION_WEIGHTS, build_model


def test_normalise_accepts_the_three_forms_and_refuses_others():
    digest = "A" * 64
    assert W.normalise(None, "w") is None
    assert W.normalise("x.pt", "w") == {"file": "x.pt", "sha256": None}
    assert W.normalise({"file": "x.pt", "sha256": digest}, "w") == {"file": "x.pt", "sha256": "a" * 64}
    assert W.normalise({"torchvision": "IMAGENET1K_V1"}, "w") == {"torchvision": "IMAGENET1K_V1"}
    with pytest.raises(UserError, match=r"config key m\.weights\.sha256: 'abc' is not a SHA-256"):
        W.normalise({"file": "x.pt", "sha256": "abc"}, "m.weights")
    with pytest.raises(UserError, match=r"config key m\.weights: .* is not a weights source"):
        W.normalise({"file": "x.pt", "torchvision": "DEFAULT"}, "m.weights")


def test_file_sha256_is_the_digest_of_the_bytes(tmp_path):
    path = tmp_path / "w.bin"
    payload = bytes(range(256)) * 5000  # > 1 MiB block
    path.write_bytes(payload)
    assert W.file_sha256(path) == hashlib.sha256(payload).hexdigest()


def test_a_placed_file_with_the_declared_sha256_loads_and_a_wrong_one_is_one_line(tmp_path):
    torch.manual_seed(1)
    source = build_model("small_cnn", 3, image_size=8).eval()
    path = tmp_path / "w.pt"
    torch.save(source.state_dict(), path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    loaded = build_model("small_cnn", 3, image_size=8, weights={"file": str(path), "sha256": digest}).eval()
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        assert torch.equal(source(x), loaded(x))
    wrong = "0" * 64
    with pytest.raises(UserError) as err:
        build_model("small_cnn", 3, image_size=8, weights={"file": str(path), "sha256": wrong})
    message = str(err.value)
    assert "\n" not in message and str(path) in message and digest in message and wrong in message


def test_torchvision_names_resolve_for_tv_architectures_and_are_refused_otherwise():
    assert TORCHVISION_WEIGHTS["tv_resnet50"] == "resnet50"
    member = W.torchvision_weights("tv_resnet50", "resnet50", "IMAGENET1K_V2")
    assert type(member).__name__ == "ResNet50_Weights" and member.name == "IMAGENET1K_V2"
    assert len(member.meta["categories"]) == 1000
    with pytest.raises(UserError, match=r"'IMAGENET1K_V9' is not a weights name of torchvision's resnet18 "
                                        r"\(have: IMAGENET1K_V1, DEFAULT\)"):
        W.torchvision_weights("tv_resnet18", "resnet18", "IMAGENET1K_V9")
    with pytest.raises(UserError, match=r"architecture 'resnet18' is not built as a torchvision model"):
        W.torchvision_weights("resnet18", TORCHVISION_WEIGHTS.get("resnet18"), "IMAGENET1K_V1")


def test_config_check_names_the_key():
    check_weights({"arch": "tv_vit_b_16", "weights": {"torchvision": "IMAGENET1K_SWAG_E2E_V1"}}, "models.vit")
    with pytest.raises(UserError, match=r"config key models\.r\.weights\.torchvision: 'V3' is not a weights name"):
        check_weights({"arch": "tv_resnet18", "weights": {"torchvision": "V3"}}, "models.r")


def test_torchvision_weights_go_through_torchvision_api_with_weights_only(monkeypatch):
    """Offline: the download itself cannot run here; check that loading asks torchvision for the member's
    state dict with weights_only=True and loads what it returns."""
    torch.manual_seed(3)
    reference = build_model("tv_resnet18", 1000, image_size=32).eval()
    calls = []

    def fake_get_state_dict(self, **kwargs):
        calls.append((self.name, kwargs))
        return reference.state_dict()

    from torchvision.models import ResNet18_Weights

    monkeypatch.setattr(type(ResNet18_Weights.IMAGENET1K_V1), "get_state_dict", fake_get_state_dict)
    model = build_model("tv_resnet18", 1000, image_size=32, weights={"torchvision": "IMAGENET1K_V1"}).eval()
    assert calls == [("IMAGENET1K_V1", {"progress": False, "check_hash": True, "weights_only": True})]
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), reference(x))
