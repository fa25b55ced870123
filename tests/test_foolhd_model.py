"""FoolHD's parts against hand computations and independent re-derivations, no Ray (~10 s): the KBD window and the
MDCT (perfect reconstruction to 1e-5, coefficients against the textbook sum), the Kaldi VAD and sliding CMN, the
perceptual and Carlini-Wagner losses, the autoencoder's parameter count, gradients from the logits to the waveform,
SNR and the matched-SNR epsilon, the identification split."""
import math

import numpy as np
import pytest
import torch

from trainers.foolhd.attacks import AttackConfig, bim, eps_for_snr, fgsm, snr_db
from trainers.foolhd.frontend import FrontEndConfig, mfcc, sliding_cmn, vad_mask
from trainers.foolhd.gae import GatedAutoEncoder
from trainers.foolhd.losses import margin_loss, perceptual_loss
from trainers.foolhd.mdct import MDCT, kbd_window
from trainers.foolhd.xvector import XVectorSID


def test_kbd_window_is_princen_bradley_and_symmetric():
    w = kbd_window(640, 4.0)
    assert w.shape == (640,) and np.allclose(w, w[::-1])
    assert np.allclose(w[:320] ** 2 + w[320:] ** 2, 1.0, atol=1e-12)
    assert 0 < w[0] < 0.01 and w[319] > 0.999   # alpha 4: a narrow rise at the edges


@pytest.mark.parametrize("n", [700, 16000, 24321])
def test_mdct_perfect_reconstruction(n):
    m = MDCT(640)
    x = torch.randn(3, n, generator=torch.Generator().manual_seed(n))
    coeffs = m(x)
    assert coeffs.shape == (3, 320, m.num_frames(n))
    assert (m.inverse(coeffs, n) - x).abs().max() < 1e-5


def test_mdct_coefficients_are_the_textbook_sum():
    """X_t[k] = sum_n w[n] x[tM - pad + n] cos(pi / M (n + 1/2 + M/2)(k + 1/2)), written out with math."""
    N, M = 16, 8
    m = MDCT(N, pad=N)
    rng = np.random.default_rng(0)
    x = rng.standard_normal(40)
    w = kbd_window(N, 4.0)
    padded = np.concatenate([np.zeros(N), x, np.zeros(m.right_pad(len(x)))])
    got = m(torch.tensor(x, dtype=torch.float32)[None])[0].double().numpy()
    for t in (0, 3, got.shape[1] - 1):
        for k in (0, 5, M - 1):
            ref = sum(w[n] * padded[t * M + n] * math.cos(math.pi / M * (n + 0.5 + M / 2) * (k + 0.5))
                      for n in range(N))
            assert abs(got[k, t] - ref) < 1e-4


def test_mdct_inverse_is_the_textbook_overlap_add():
    """y[tM + n] += (4 / N) w[n] sum_k X_t[k] cos(pi / M (n + 1/2 + M/2)(k + 1/2)), the first `pad` samples trimmed,
    written out with math for arbitrary coefficients (not only ones a forward gave)."""
    N, M, T, length = 16, 8, 5, 30
    m = MDCT(N, pad=N)
    rng = np.random.default_rng(1)
    X = rng.standard_normal((M, T))
    w = kbd_window(N, 4.0)
    y = np.zeros((T + 1) * M)
    for t in range(T):
        for n in range(N):
            y[t * M + n] += 4 / N * w[n] * sum(X[k, t] * math.cos(math.pi / M * (n + 0.5 + M / 2) * (k + 0.5))
                                               for k in range(M))
    got = m.inverse(torch.tensor(X[None]), length)[0].numpy()
    assert np.abs(got - y[N:N + length]).max() < 1e-12


def test_mdct_gradients_pass_both_ways():
    m = MDCT(16, pad=16)
    x = torch.randn(2, 21, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda v: m.inverse(m(v) ** 2, 21), (x,))


def test_vad_by_hand():
    """threshold = 5.5 + 0.5 mean(C0); voiced when >= 12 % of the existing frames t-2..t+2 are above it."""
    cfg = FrontEndConfig()
    energy = torch.tensor([0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 30.0, 0.0, 0.0, 0.0, 0.0])   # mean 30/11, threshold ~6.86
    feats = torch.zeros(11, 30)
    feats[:, 0] = energy
    # one loud frame: each window of 5 frames holding it has 1/5 = 20 % >= 12 %; frames 4..8 see it
    assert vad_mask(feats, cfg).tolist() == [False] * 4 + [True] * 5 + [False] * 2
    cfg2 = FrontEndConfig(vad_proportion=0.25)    # 1/5 < 25 %, but at the edge 1/3 (frames 0..2 exist) would pass
    feats[:, 0] = torch.tensor([30.0] + [0.0] * 10)
    assert vad_mask(feats, cfg2).tolist() == [True, True, False] + [False] * 8


def test_sliding_cmn_against_kaldi_windows():
    """Kaldi's apply-cmvn-sliding --center: window [t - W//2, +W) shifted inside [0, T), written as a loop."""
    rng = np.random.default_rng(1)
    for T, W in ((50, 11), (7, 11), (30, 301), (40, 10)):
        x = rng.standard_normal((T, 3))
        got = sliding_cmn(torch.tensor(x), W).numpy()
        for t in range(T):
            start = t - W // 2
            end = start + W
            if start < 0:
                end, start = end - start, 0
            if end > T:
                start, end = max(start - (end - T), 0), T
            assert np.allclose(got[t], x[t] - x[start:end].mean(0))


def test_perceptual_loss_by_hand():
    a = torch.tensor([[1.0, 0.0], [1.0, 1.0], [2.0, 0.0]])
    b = torch.tensor([[0.0, 1.0], [1.0, 1.0], [1.0, 1.0]])
    expected = (1 - 0) + (1 - 1) + (1 - 2 / (2 * math.sqrt(2)))
    assert abs(float(perceptual_loss(a, b)) - expected) < 1e-6


def test_margin_loss_by_hand():
    z = torch.tensor([[1.0, 3.0, 2.0]])
    c = torch.tensor([1])
    assert float(margin_loss(z, c, targeted=False)) == pytest.approx(3 - 2)          # Z_c - max other
    assert float(margin_loss(z, torch.tensor([0]), targeted=False)) == pytest.approx(0)   # already fooled
    assert float(margin_loss(z, torch.tensor([0]), targeted=False, kappa=0.5)) == pytest.approx(-0.5)
    assert float(margin_loss(z, torch.tensor([2]), targeted=True)) == pytest.approx(3 - 2)   # max other - Z_t
    assert float(margin_loss(z, torch.tensor([1]), targeted=True)) == pytest.approx(0)
    two = torch.tensor([[1.0, 3.0, 2.0], [5.0, 0.0, 1.0]])
    assert float(margin_loss(two, torch.tensor([1, 0]), targeted=False)) == pytest.approx(1 + 4)   # summed


def test_autoencoder_parameters_by_hand_and_peak():
    """Gated layer c_in -> c_out: two 3x3 convs with bias = 2 (9 c_in c_out + c_out); BN: 2 c_out."""
    def gated(cin, cout):
        return 2 * (9 * cin * cout + cout) + 2 * cout
    expected = gated(1, 64) + 2 * gated(64, 64) + gated(65, 64) + 2 * gated(64, 64) + gated(64, 1)
    gae = GatedAutoEncoder()
    assert expected == 373_636 == sum(p.numel() for p in gae.parameters())
    x = 0.3 * torch.randn(2, 4000, generator=torch.Generator().manual_seed(0))
    y = gae.eval()(x)
    assert y.shape == x.shape and torch.allclose(y.abs().amax(1), x.abs().amax(1))


def _tiny_model(classes=3):
    torch.manual_seed(0)
    return XVectorSID(classes, width=8, stats_width=16, embed_dim=8, hidden=8, dropout=0.0).eval()


def test_gradient_reaches_the_waveform_through_the_front_end():
    model = _tiny_model()
    t = torch.arange(8000) / 8000
    wave = (0.3 * torch.sin(2 * math.pi * 220 * t) * (1 + torch.sin(2 * math.pi * 3 * t))).requires_grad_(True)
    model(wave[None])[0, 1].backward()
    assert wave.grad is not None and float(wave.grad.abs().sum()) > 0
    assert mfcc(wave.detach(), FrontEndConfig()).shape == (100, 30)   # snip_edges false: round(n / 80) frames


def test_snr_and_matched_epsilon():
    x = np.array([0.3, -0.4, 0.0, 0.5], dtype=np.float32)
    assert snr_db(x, x + np.float32(0.1)) == pytest.approx(10 * math.log10(0.5 / 0.04), abs=1e-4)
    assert snr_db(x, x) == math.inf
    rng = np.random.default_rng(0)
    wave = (0.2 * rng.standard_normal(4000)).astype(np.float32)
    eps = eps_for_snr(wave, 30.0)
    assert eps == pytest.approx(float(np.sqrt(np.mean(wave.astype(np.float64) ** 2))) * 10 ** -1.5)
    model = _tiny_model()
    adv = fgsm(model, wave, 0, eps)
    assert np.abs(adv - wave).max() <= eps * (1 + 1e-5)
    assert snr_db(wave, adv) == pytest.approx(30.0, abs=0.05)   # every sample moved by eps (no clipping here)
    adv = bim(model, wave, 0, eps, steps=5, step=eps / 5)
    assert np.abs(adv - wave).max() <= eps * (1 + 1e-5) and snr_db(wave, adv) >= 30.0 - 0.05


def test_attack_config_refuses_bad_values():
    for bad in ({"iterations": 0}, {"targeted_iterations": 0}, {"modes": ["sideways"]}, {"init": "zeros"},
                {"modes": ["targeted"]}):
        with pytest.raises(ValueError):
            AttackConfig(**bad).validate()
    AttackConfig(modes=["targeted"], baselines=[]).validate()


def test_identification_split(tmp_path):
    from conftest import write_wav

    from datasets.voxceleb.iden import identification_split

    for spk in ("id10001", "id10002"):
        for video in ("aaaaaaaaaaa", "bbbbbbbbbbb"):
            for u in ("00001", "00002"):
                write_wav(tmp_path / "wav" / spk / video / f"{u}.wav", np.zeros(800), 8000)
    split = identification_split(tmp_path, seed=0)
    assert split["speakers"] == ["id10001", "id10002"]
    for spk in split["speakers"]:   # one whole video per speaker tests, the other trains
        test_videos = {u.key.split("/")[1] for u in split["test"] if u.speaker == spk}
        train_videos = {u.key.split("/")[1] for u in split["train"] if u.speaker == spk}
        assert len(test_videos) == 1 and len(train_videos) == 1 and test_videos != train_videos
    (tmp_path / "iden_split.txt").write_text("1 id10001/aaaaaaaaaaa/00001.wav\n3 id10001/bbbbbbbbbbb/00001.wav\n"
                                             "1 id10002/aaaaaaaaaaa/00001.wav\n2 id10002/bbbbbbbbbbb/00002.wav\n")
    split = identification_split(tmp_path)
    assert [u.key for u in split["test"]] == ["id10001/bbbbbbbbbbb/00001"] and len(split["train"]) == 2
