"""Tests of verified exact SIS (pathologies.sis.verified, sis.screen): a fast screen, strict fp32 decisions.

Every test compares against the strict engine (pathologies.sis.engine.backward_selection) run on the
same inputs: orders AND values must be equal bit for bit.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from conftest import kill_at_call, make_quadrant_dataset, make_spec
from pathologies.config import run_specs
from pathologies.errors import UserError
from pathologies.experiments import validate
from pathologies.io import h5py
from pathologies.models.registry import build_model
from pathologies.sis import screen as screen_module
from pathologies.sis import verified as verified_module
from pathologies.sis.engine import FunctionScorer, Masking, Scorer, backward_selection, sis_collection
from pathologies.sis.extract import run as extract
from pathologies.sis.jobs import sis_jobs
from pathologies.sis.screen import Screen
from pathologies.sis.verified import Verifier, verified_backward_selection
from pathologies.training.train import train_run

SCREENS = screen_module.supported_screens(torch.device("cpu"))  # channels_last, and bf16/fp16 where the units exist



def assert_same(strict, verified):
    assert len(strict) == len(verified)
    for a, b in zip(strict, verified, strict=True):
        assert a.class_index == b.class_index and a.f_start == b.f_start
        np.testing.assert_array_equal(a.order, b.order)
        assert a.values.tobytes() == b.values.tobytes()  # bit for bit, nan-safe
        assert a.evaluations == b.evaluations and a.remaining == b.remaining


def both(scorer, images, screen, **kwargs):
    strict = backward_selection(scorer, images, **kwargs)
    verifier = Verifier(scorer, images.device, screen, kwargs.get("batch_size", 256))
    verified = verified_backward_selection(scorer, images, verifier=verifier, **kwargs)
    return strict, verified, verifier.stats


def random_model(arch="small_cnn", size=6, channels=1, seed=0) -> nn.Module:
    torch.manual_seed(seed)
    return build_model(arch, 4, in_channels=channels, image_size=size).eval()


@pytest.mark.parametrize("screen", SCREENS + ["auto"])
@pytest.mark.parametrize("seeds", [None, [11, 12, 13]])
def test_equals_strict_on_a_random_model(screen, seeds, monkeypatch):
    # no mid-run review: its switches follow wall-clock timings, which a loaded machine makes random (they
    # re-measure the bound, 3 more calibration steps); the switching rule has its own tests
    monkeypatch.setattr(verified_module, "REVIEW_STEPS", 10**9)
    images = torch.randn(3, 1, 6, 6, generator=torch.Generator().manual_seed(1))
    strict, verified, stats = both(Scorer(random_model()), images, screen, batch_size=16, tie_break_seeds=seeds)
    assert_same(strict, verified)
    assert stats.candidates == sum(s.evaluations for s in strict)
    # one full strict step per image, then the measured bound (auto may find that no screen pays off)
    assert stats.calibration_steps == (0 if stats.screen == "none" and not stats.dropped else 3)


def test_equals_strict_on_a_random_resnet_with_patches_and_masked_features():
    images = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    masked = torch.zeros(2, 16, dtype=torch.bool)
    masked[0, [1, 5]] = True
    strict, verified, _ = both(Scorer(random_model("resnet20", 8, 3)), images, SCREENS[-1],
                               masking=Masking(patch=2, value=0.3), masked=masked, batch_size=7)
    assert_same(strict, verified)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(dataset, checkpoint) of a small CNN trained for 3 epochs on 6x6 quadrant images."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    folder = tmp_path_factory.mktemp("trained")
    dataset = make_quadrant_dataset(folder / "quadrants.h5", n_train=256, n_test=12, size=6)
    train_run(make_spec(epochs=3), dataset, model_out=folder / "model.pt", log_out=folder / "log.csv",
              predictions_out=folder / "predictions.h5", state_dir=folder / "state", device="cpu", progress=False)
    torch.set_num_threads(threads)
    return dataset, folder / "model.pt"


def sis_spec(**run) -> dict:
    config = validate({"datasets": {"quadrants": {"kind": "digits"}},
                       "models": {"m": {"dataset": "quadrants", "arch": "small_cnn", "seeds": [0]}},
                       "sis": {"runs": {"r": {"models": ["m"], **run}}}})
    (job,) = sis_jobs(config, run_specs(config)).values()
    return job.as_dict()


@pytest.mark.parametrize("screen", SCREENS)
def test_equals_strict_on_a_trained_model(trained, screen):
    from pathologies.data.layout import load_split, to_model_input
    from pathologies.models.checkpoint import load_model

    dataset, model_path = trained
    model, meta = load_model(model_path)
    images = to_model_input(load_split(dataset, "test").images[:6], meta["mean"], meta["std"])
    scorer = Scorer(model)
    strict, verified, stats = both(scorer, images, screen, batch_size=32)
    assert_same(strict, verified)
    assert 0 < stats.rescored_fraction < 1  # the screen ruled candidates out on a trained model
    # SIS collections through the verified engine equal the strict ones too
    verifier = Verifier(scorer, images.device, screen, 32)

    def select(*args, **kwargs):
        return verified_backward_selection(*args, verifier=verifier, **kwargs)

    strict_c = sis_collection(scorer, images, 0.9, batch_size=32)
    verified_c = sis_collection(scorer, images, 0.9, batch_size=32, select=select)
    assert [[s.tolist() for s in c] for c in strict_c] == [[s.tolist() for s in c] for c in verified_c]


class LinearNearTies(nn.Module):
    """Logit 0 = sum of pixel weights; weights differ by ~1e-7 relative: near-ties no screen resolves."""

    def __init__(self, p: int):
        super().__init__()
        weights = 1.0 + 1.2e-7 * (torch.arange(p) % 3).float()
        weights[::4] = 1.0  # exact ties among these
        self.register_buffer("w", weights)

    def forward(self, x):
        first = (x.flatten(1) * self.w).sum(dim=1)
        return torch.stack([first, -first, 0.5 * first], dim=1)


def test_equals_strict_on_constructed_near_and_exact_ties():
    images = torch.ones(3, 1, 5, 5)
    images[1, 0, :2] = 0.0  # already masked: masking these changes nothing, identical candidates
    images[2] *= 1 + 1e-6 * torch.randn(1, 5, 5, generator=torch.Generator().manual_seed(3))
    scorer = Scorer(LinearNearTies(25))
    for screen in SCREENS:
        for seeds in (None, [1, 2, 3]):
            strict, verified, _ = both(scorer, images, screen, batch_size=8, classes=[0, 0, 0],
                                       tie_break_seeds=seeds)
            assert_same(strict, verified)


class GrowingLogits(nn.Module):
    """A random CNN whose logits grow to ~1e4 x as pixels get masked: the screen's error explodes."""

    def __init__(self, base: nn.Module):
        super().__init__()
        self.base = base

    def forward(self, x):
        masked = (x == 0).flatten(1).float().mean(dim=1, keepdim=True)
        return self.base(x) * (1.0 + 1e4 * masked**2)


@pytest.mark.parametrize("screen", SCREENS)
def test_huge_logits_still_equal_strict_and_engage_the_fallback_where_the_screen_is_far_off(screen):
    images = torch.randn(2, 1, 6, 6, generator=torch.Generator().manual_seed(4))
    scorer = Scorer(GrowingLogits(random_model(seed=5)))
    strict, verified, stats = both(scorer, images, screen, batch_size=16)
    assert_same(strict, verified)
    if screen == "bf16":  # errors of ~0.4 % of logits that grow 1e4-fold: the bound cannot hold
        assert stats.fallback_steps > 0


class ScreenDiffers(nn.Module):
    """A random CNN whose copies (the screens work on deep copies) return ``change(x, logits)`` instead."""

    def __init__(self, base: nn.Module, change):
        super().__init__()
        self.base, self.change, self.home = base, change, id(self)

    def forward(self, x):
        z = self.base(x)
        return z if id(self) == self.home else self.change(x, z)


def lies(x, z):
    """Garbage once 2 pixels are masked."""
    lying = ((x == 0).flatten(1).sum(dim=1, keepdim=True) >= 2).float()
    return z + lying * 30 * torch.sin(1e3 * x.flatten(1).sum(dim=1, keepdim=True) + torch.arange(4))


def overflows(x, z):
    """inf/nan logits once pixel 0 is masked, as fp16 overflows."""
    return torch.where(x.flatten(1)[:, :1] == 0, torch.tensor([float("inf"), -float("inf"), float("nan"), 1.0]), z)


@pytest.mark.parametrize("screen", SCREENS)
def test_a_screen_far_off_engages_the_fallback_and_results_still_equal_strict(screen):
    images = torch.randn(3, 1, 6, 6, generator=torch.Generator().manual_seed(8))
    strict, verified, stats = both(Scorer(ScreenDiffers(random_model(seed=9), lies)), images, screen, batch_size=16)
    assert stats.fallback_steps >= 3  # every image, at least once
    assert_same(strict, verified)


def test_a_screen_the_device_lacks_is_one_clear_line(monkeypatch):
    monkeypatch.setattr(screen_module, "bf16_supported", lambda device: False)
    monkeypatch.setattr(screen_module, "fp16_supported", lambda device: False)
    scorer = Scorer(random_model())
    for name, needs in (("bf16", "bf16 units"), ("fp16", "fp16 units"),
                        ("tf32", "a CUDA GPU of compute capability 8.0 or newer")):
        with pytest.raises(UserError, match=f"screen {name} needs {needs}") as err:
            Verifier(scorer, torch.device("cpu"), name)
        assert "\n" not in str(err.value) and "use screen auto or channels_last" in str(err.value)
    with pytest.raises(UserError, match="screen 'fp8' is unknown"):
        Verifier(scorer, torch.device("cpu"), "fp8")
    assert screen_module.supported_screens(torch.device("cpu")) == ["channels_last"]


def test_the_tf32_screen_switches_tf32_on_only_while_it_runs():
    from pathologies.sis.engine import use_strict_fp32

    use_strict_fp32(torch.device("cuda"))  # sets the flags only (no GPU needed)

    def flags():
        return torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32

    with screen_module.tf32_enabled():
        assert flags() == (True, True)
    assert flags() == (False, False)
    with pytest.raises(RuntimeError, match="kernel failed"), screen_module.tf32_enabled():
        raise RuntimeError("kernel failed")
    assert flags() == (False, False)  # the strict path never runs with TF32, even after a failing screen


def test_overflowing_screen_scores_are_rescored_and_results_still_equal_strict(monkeypatch):
    images = torch.randn(3, 1, 6, 6, generator=torch.Generator().manual_seed(12))
    scorer = Scorer(ScreenDiffers(random_model(seed=13), overflows))
    strict, verified, stats = both(scorer, images, "channels_last", batch_size=16)
    assert_same(strict, verified)
    assert 0.3 < stats.rescored_fraction < 1  # inf/nan candidates re-scored, the others still screened
    # auto, with any screen paying off: one that overflows on the first step's candidates is not chosen
    monkeypatch.setattr(verified_module, "PAYS_OFF", 1e9)
    strict, verified, stats = both(scorer, images, "auto", batch_size=16)
    assert_same(strict, verified)
    assert stats.screen == "none" and set(stats.timings) >= {"strict", "channels_last"}
    control = both(Scorer(random_model(seed=13)), images, "auto", batch_size=16)[2]
    assert control.screen != "none" or control.dropped  # chosen (the clock may drop it later)


def test_a_failing_compile_falls_back_to_channels_last_by_name(monkeypatch, capsys):
    def broken(model, **kwargs):
        def run(x):
            raise RuntimeError("no compiler today")
        return run

    monkeypatch.setattr(torch, "compile", broken)
    scorer = Scorer(random_model())
    screen = Screen("compile", scorer, torch.device("cpu"), pad_to=8)
    x = torch.randn(3, 1, 6, 6)
    logits = screen.logits(x)
    assert screen.name == "channels_last" and logits.shape == (3, 4)
    assert "screen compile failed (RuntimeError: no compiler today); falling back to screen channels_last" \
        in capsys.readouterr().err
    torch.testing.assert_close(logits, scorer.logits(x), rtol=1e-4, atol=1e-4)


def test_non_deterministic_scorers_run_the_strict_engine_and_say_so(capsys):
    scorer = FunctionScorer(lambda x: x.flatten(1).sum(dim=1))
    images = torch.randn(2, 1, 3, 3, generator=torch.Generator().manual_seed(6))
    assert_same(backward_selection(scorer, images), verified_backward_selection(scorer, images))
    assert "falling back to strict fp32 selection" in capsys.readouterr().err


@pytest.mark.parametrize("arch", ["resnet20", "resnet18"])
def test_small_batches_score_the_bits_they_score_in_a_large_batch(arch):
    """oneDNN takes other kernels for small batches (ResNet18: below 16 on an Intel Xeon with AMX)."""
    scorer = Scorer(random_model(arch, 8, 3))
    x = torch.randn(40, 3, 8, 8, generator=torch.Generator().manual_seed(7))
    with torch.inference_mode():
        whole = scorer.logits(x)
        for size in range(1, 17):
            assert torch.equal(scorer.logits(x[:size]), whole[:size]), f"batch of {size}"


def test_extraction_with_verified_precision_equals_fp32_and_records_the_screen(trained, tmp_path):
    dataset, model_path = trained
    for precision in ("fp32", "verified"):
        extract([model_path], dataset, sis_spec(thresholds=[0.9], sample=6, precision=precision,
                                                lockstep_images=4, collection=True),
                out=tmp_path / f"{precision}.h5", device="cpu")
    with h5py.File(tmp_path / "fp32.h5") as strict, h5py.File(tmp_path / "verified.h5") as verified:
        assert verified.attrs["precision"] == "verified"
        assert set(verified.attrs["screen"].split(" -> ")) <= {"none", *SCREENS}  # e.g. "bf16 -> channels_last"
        assert 0 < verified.attrs["rescored_fraction"] <= 1
        assert verified.attrs["candidates"] >= 6 * 36 * 37 // 2  # the selections, plus the collection rounds
        assert "screen" not in strict.attrs
        for name in ("order", "curve", "class", "f_full", "sis/0.9/mask", "collection/0.9/member"):
            assert strict[name][()].tobytes() == verified[name][()].tobytes(), name


def test_verified_shards_merge_to_the_fp32_file_and_sum_their_screen_counts(trained, tmp_path):
    from pathologies.sis.merge import merge_shards

    dataset, model_path = trained
    spec = sis_spec(thresholds=[0.9], sample=6, precision="verified")
    shards = [tmp_path / f"shard{i}of2.h5" for i in range(2)]
    for i, out in enumerate(shards):
        extract([model_path], dataset, spec, shard=i, num_shards=2, out=out, device="cpu")
    merge_shards(shards, tmp_path / "merged.h5")
    extract([model_path], dataset, sis_spec(thresholds=[0.9], sample=6), out=tmp_path / "fp32.h5", device="cpu")
    with h5py.File(tmp_path / "merged.h5") as merged, h5py.File(tmp_path / "fp32.h5") as strict:
        parts = [h5py.File(path) for path in shards]
        try:
            for key in ("candidates", "rescored", "fallback_steps"):
                assert merged.attrs[key] == sum(int(part.attrs[key]) for part in parts)
            assert merged.attrs["rescored_fraction"] == merged.attrs["rescored"] / merged.attrs["candidates"]
        finally:
            for part in parts:
                part.close()
        for name in ("order", "curve", "sis/0.9/mask"):
            assert strict[name][()].tobytes() == merged[name][()].tobytes(), name


def test_an_auto_screen_that_costs_more_than_strict_is_dropped_and_a_cheap_one_kept(capsys):
    from pathologies.sis.verified import REVIEW_STEPS

    scorer = Scorer(random_model())
    slow, cheap = (Verifier(scorer, torch.device("cpu"), "channels_last") for _ in range(2))
    for verifier, step_seconds in ((slow, 1.0), (cheap, 0.01)):
        verifier.clock.strict(1.0, 100)  # strict: 0.01 s per candidate
        for _ in range(REVIEW_STEPS):
            verifier.clock.step(step_seconds, 10, 1, verifier)  # 10 candidates a step: strict would take 0.1 s
    assert slow.screen is None and slow.stats.screen == "none" and slow.stats.dropped == ["channels_last"]
    message = "screen channels_last costs 16.0 s where strict fp32 would take ~1.6 s; dropping it"
    assert message in capsys.readouterr().err
    assert cheap.screen is not None and cheap.stats.screen == "channels_last" and not cheap.stats.dropped


def test_auto_switches_to_a_screen_that_the_growing_rescored_share_makes_cheaper(capsys):
    from pathologies.sis.verified import REVIEW_STEPS

    def review(live_seconds: float, rescored: int) -> Verifier:
        verifier = Verifier(Scorer(random_model()), torch.device("cpu"), "compile")  # compiles lazily: never runs
        verifier.stats.timings = {"strict": 0.01, "compile": 0.003, "channels_last": 0.005}
        verifier.stats.shares = {"compile": 0.05, "channels_last": 0.01}  # first-step shares
        verifier.clock.strict(1.0, 100)
        for _ in range(REVIEW_STEPS):
            verifier.clock.step(live_seconds, 10, rescored, verifier)
        return verifier

    # compile re-scores half its candidates (10x its first-step share): 0.009 s a candidate; channels_last
    # is estimated at 0.005 + 0.01 x min(1, 0.01 x 10) = 0.006 < 0.8 x 0.009: switch
    switched = review(0.09, 5)
    assert switched.stats.screen == "channels_last" and isinstance(switched.screen, Screen)
    assert switched.stats.history == "compile -> channels_last"
    assert "screen compile costs 1.4 s (re-scoring 50%); screen channels_last would take ~1.0 s; switching to it" \
        in capsys.readouterr().err
    # re-scoring as estimated (0.5 % x 10 = 5 %): 0.005 s a candidate, channels_last (0.0051) does not pay
    kept = review(0.05, 0)
    assert kept.stats.screen == "compile" and not kept.stats.dropped


def test_switching_screens_mid_selection_still_equals_strict(monkeypatch):
    from pathologies.sis import verified

    monkeypatch.setattr(verified, "PAYS_OFF", 1e9)  # any untried screen looks cheaper: switch at every review
    monkeypatch.setattr(verified, "REVIEW_STEPS", 2)
    choose = verified.choose_screen

    def strict_looks_slow(verifier, *args):
        choose(verifier, *args)
        verifier.stats.timings["strict"] = 1e9  # so the reviews switch between screens, not to strict
        verifier.stats.shares = dict.fromkeys(verifier.stats.shares, 0.0)

    monkeypatch.setattr(verified, "choose_screen", strict_looks_slow)
    images = torch.randn(3, 1, 6, 6, generator=torch.Generator().manual_seed(14))
    strict, verified_run, stats = both(Scorer(random_model(seed=15)), images, "auto", batch_size=16)
    assert_same(strict, verified_run)
    used = [name for name in stats.history.split(" -> ") if name != "none"]
    assert sorted(used) == sorted(SCREENS)  # every screen of this CPU, in turn
    if len(SCREENS) > 1:
        assert stats.calibration_steps > 3  # the bound was measured anew after the switch


@pytest.mark.parametrize("precision", ["fp32", "verified"])
def test_a_killed_shard_resumes_from_its_last_group_bit_identical(trained, tmp_path, monkeypatch, precision):
    from pathologies.sis import extract as extract_module

    dataset, model_path = trained
    spec = sis_spec(thresholds=[0.6, 0.9], sample=7, precision=precision, lockstep_images=2, collection=True,
                    tie_break="random")
    extract([model_path], dataset, spec, out=tmp_path / "whole.h5", device="cpu")
    state = tmp_path / "resume"
    wire = kill_at_call(monkeypatch, extract_module, "to_model_input", 3)  # dies at the third group
    with pytest.raises(KeyboardInterrupt):
        extract([model_path], dataset, spec, out=tmp_path / "resumed.h5", device="cpu", state_dir=state)
    assert (state / "state.npz").exists() and not (tmp_path / "resumed.h5").exists()
    wire.calls, wire.call = 0, None  # the rerun: only count the groups it runs
    extract([model_path], dataset, spec, out=tmp_path / "resumed.h5", device="cpu", state_dir=state)
    assert wire.calls == 2  # groups 3 and 4 of 4: the first two came from the state
    assert not state.exists()  # the state and its folder are removed once the output is written
    with h5py.File(tmp_path / "whole.h5") as whole, h5py.File(tmp_path / "resumed.h5") as resumed:
        names = []
        whole.visit(lambda name: names.append(name) if isinstance(whole[name], h5py.Dataset) else None)
        assert names
        for name in names:
            assert whole[name][()].tobytes() == resumed[name][()].tobytes(), name
        if precision == "verified":
            assert resumed.attrs["candidates"] == whole.attrs["candidates"]


def test_a_state_of_another_extraction_is_ignored(trained, tmp_path, capsys):
    dataset, model_path = trained
    state = tmp_path / "resume"
    extract([model_path], dataset, sis_spec(thresholds=[0.9], sample=4), out=tmp_path / "a.h5", device="cpu")
    from pathologies.sis import resume
    from pathologies.sis.extract import Extraction

    fake = Extraction(rows=np.arange(4), ids=np.arange(4), labels=np.zeros(4, np.int64),
                      classes=np.ones(4, np.int64), f_full=np.ones(4), order=np.zeros((4, 36), np.int32),
                      curve=np.zeros((4, 36)), masks={0.9: np.ones((4, 6, 6), bool)}, members={}, counts={})
    resume.save(state, "some other job", 4, fake)
    extract([model_path], dataset, sis_spec(thresholds=[0.9], sample=4), out=tmp_path / "b.h5", device="cpu",
            state_dir=state)
    assert "belongs to another extraction; starting from the first image" in capsys.readouterr().err
    with h5py.File(tmp_path / "a.h5") as a, h5py.File(tmp_path / "b.h5") as b:
        assert a["order"][()].tobytes() == b["order"][()].tobytes()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_on_cuda_verified_equals_strict():
    """cuDNN may pick another algorithm per batch size; bit-identity needs per-candidate results that do not."""
    from pathologies.sis.engine import use_strict_fp32

    device = torch.device("cuda")
    use_strict_fp32(device)
    model = random_model("resnet20", 16, 3).to(device)
    images = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(10)).to(device)
    screens = [name for name in screen_module.supported_screens(device) if name != "compile"]  # compiling: minutes
    for screen in ["auto", *screens]:  # auto, bf16, fp16, tf32, channels_last
        strict, verified, _ = both(Scorer(model), images, screen, batch_size=128)
        assert_same(strict, verified)
