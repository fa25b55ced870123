"""The main-speaker model's variants and the evaluation formulas, against hand computations and independent
re-derivations (scikit-learn's AP, a closed-form SI-SDR)."""
import numpy as np
import pytest
import torch

from trainers.avspeaker.evaluate import average_precision, match_switches, score, si_sdr_db
from trainers.avspeaker.model import N_FFT, AVSpeakerNet, si_sdr


def test_average_precision_by_hand_and_against_sklearn():
    # ranks 1..4: hit, miss, hit, miss -> AP = (1/1 + 2/3) / 2
    assert average_precision(np.array([0.9, 0.8, 0.7, 0.6]), np.array([1, 0, 1, 0])) == pytest.approx(5 / 6)
    # a tie between a hit and a miss at the top counts as one block: precision 1/2 there, then 2/3
    assert average_precision(np.array([0.9, 0.9, 0.5]), np.array([1, 0, 1])) == pytest.approx((0.5 + 2 / 3) / 2)
    from sklearn.metrics import average_precision_score

    rng = np.random.default_rng(0)
    y, s = rng.random(300) < 0.3, np.round(rng.random(300), 2)     # rounded: many ties
    assert average_precision(s, y) == pytest.approx(average_precision_score(y, s))


def test_switch_matching_by_hand():
    # 2 <-> 3 and 9 <-> 9 match within one segment; 5 is a false alarm, 12 a miss
    assert match_switches(np.array([2, 5, 9]), np.array([3, 9, 12]), tolerance=1) == (2, 1, 1)
    assert match_switches(np.array([2]), np.array([4]), tolerance=1) == (0, 1, 1)
    assert match_switches(np.array([2, 3]), np.array([3]), tolerance=1) == (1, 1, 0)   # one-to-one


def test_score_by_hand():
    # one window, 2 tracks, 4 segments; truth: track 0 holds segments 0-1, track 1 segments 2-3 (a switch at 2)
    prob = np.array([[[0.9, 0.8, 0.6, 0.1], [0.2, 0.3, 0.4, 0.7]]])
    roles = np.array([[[1, 1, 0, 0], [0, 2, 1, 1]]])
    pred = {"prob": prob, "valid": np.array([[True, True]]), "roles": roles, "main_id": np.array([[0, 0, 1, 1]])}
    r = score(pred, tolerance=1)
    # top track per segment: 0, 0, 0, 1 -> 3 of 4 right; predicted switch at segment 3, true at 2: matched (tol 1)
    assert r["accuracy"] == pytest.approx(0.75)
    assert r["switch_f1"] == pytest.approx(1.0)
    assert score(pred, tolerance=0)["switch_f1"] == pytest.approx(0.0)
    # AP over the 8 pairs: sorted 0.9+ 0.8+ 0.7+ 0.6- 0.4+ ... -> (1 + 1 + 1 + 4/5) / 4
    assert r["map"] == pytest.approx((3 + 4 / 5) / 4)


def test_si_sdr_closed_form():
    # est = 2 r + n with n orthogonal to r, |n| = |r| / 2: SI-SDR = 10 log10(|2r|^2 / |n|^2) = 10 log10(16)
    t = np.arange(16000) / 16000
    r, n = np.sin(2 * np.pi * 5 * t), 0.5 * np.cos(2 * np.pi * 5 * t)
    expected = 10 * np.log10(16)
    assert si_sdr_db(r[None], (2 * r + n)[None])[0] == pytest.approx(expected, abs=1e-6)
    assert float(si_sdr(torch.tensor(2 * r + n), torch.tensor(r))) == pytest.approx(expected, abs=1e-4)


def _batch(b=2, n=3, s=6, f=4, c=32, samples=16000 * 3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"faces": torch.randint(0, 255, (b, n, s, f, c, c), generator=g, dtype=torch.uint8),
            "mel": torch.randn(b, s, 50, 40, generator=g), "mix": torch.randn(b, samples, generator=g) * 0.1,
            "main": torch.randn(b, samples, generator=g) * 0.1,
            "roles": torch.randint(0, 3, (b, n, s), generator=g), "valid": torch.tensor([[1, 1, 0], [1, 1, 1]]).bool(),
            "main_id": torch.randint(-1, 2, (b, s), generator=g), "has_main": torch.tensor([True, False])}


@pytest.mark.parametrize("variant", ["transformer", "no_temporal", "concat"])
def test_variants_train_step_and_shapes(variant):
    torch.manual_seed(0)
    net = AVSpeakerNet(variant, dim=32, heads=4, layers=1)
    batch = _batch()
    loss, correct, n = net(**batch)
    loss.backward()
    assert torch.isfinite(loss) and 0 <= int(correct) <= n == int((batch["main_id"] >= 0).sum())
    net.eval()
    logits, h = net.detect(batch["faces"], batch["mel"], batch["valid"])
    assert logits.shape == (2, 3, 6) and h.shape == (2, 3, 6, 32)
    mask, est = net.highlight(batch["mix"], logits, h, batch["valid"])
    assert mask.shape[:2] == (2, N_FFT // 2 + 1) and est.shape == batch["mix"].shape
    assert float(mask.detach().min()) >= 0 and float(mask.detach().max()) <= 1


@pytest.mark.parametrize("variant,temporal", [("transformer", True), ("no_temporal", False), ("concat", False)])
def test_temporal_attention_only_in_the_full_model(variant, temporal):
    """Changing the faces and audio of the last segment moves the first segment's scores only where attention
    crosses segments (the paper's model), never in the two ablations."""
    torch.manual_seed(0)
    net = AVSpeakerNet(variant, dim=32, heads=4, layers=2).eval()
    b = _batch()
    other = {k: v.clone() for k, v in b.items()}
    other["faces"][:, :, -1] = 255 - other["faces"][:, :, -1]
    other["mel"][:, -1] += 3.0
    with torch.no_grad():
        first = net.detect(b["faces"], b["mel"], b["valid"])[0][:, :, 0]
        second = net.detect(other["faces"], other["mel"], other["valid"])[0][:, :, 0]
    moved = float((first - second).abs().max())
    assert (moved > 1e-4) == temporal, moved


def test_padded_tracks_do_not_leak():
    torch.manual_seed(0)
    net = AVSpeakerNet("transformer", dim=32, heads=4, layers=2).eval()
    b = _batch()
    other = b["faces"].clone()
    other[0, 2] = 0                          # window 0's third track is padding (valid False)
    with torch.no_grad():
        a = net.detect(b["faces"], b["mel"], b["valid"])[0][0, :2]
        c = net.detect(other, b["mel"], b["valid"])[0][0, :2]
    assert torch.allclose(a, c, atol=1e-5)


def test_unknown_variant():
    with pytest.raises(ValueError, match="variant"):
        AVSpeakerNet("lstm")
