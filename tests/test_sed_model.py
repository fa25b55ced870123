"""SEDModel (arXiv 2106.06858): shapes and ranges per pooling, the loss as BCE + alpha * MSE, argument errors,
and overfitting a tiny synthetic batch where class k is energy in frequency band k."""
import pytest
import torch

from trainers.sed.model import POOLINGS, SEDModel, clip_bce

T, F, C = 32, 16, 3


@pytest.fixture
def one_thread():
    """torch's intra-op threads spin-wait: on a loaded 2-core machine two of them made a 1 s training
    run take 30 s. One thread, as Ray gives a 1-CPU worker."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _band_batch(seed=0, n=8):
    """(log-mel (n, T, F), weak (n, C), frame activity (n, T, C)): clip i holds class k iff bit k of i is
    set, as +2 in mel bins [5k, 5k + 5) over a random run of 8-15 frames."""
    g = torch.Generator().manual_seed(seed)
    x = 0.3 * torch.randn(n, T, F, generator=g)
    weak = torch.zeros(n, C)
    active = torch.zeros(n, T, C, dtype=torch.bool)
    for i in range(n):
        for k in range(C):
            if (i >> k) & 1:
                on = int(torch.randint(0, T // 2, (1,), generator=g))
                off = on + T // 4 + int(torch.randint(0, T // 4, (1,), generator=g))
                x[i, on:off, 5 * k:5 * k + 5] += 2.0
                weak[i, k], active[i, on:off, k] = 1.0, True
    return x, weak, active


@pytest.mark.parametrize("pooling", POOLINGS)
def test_shapes_and_ranges(pooling):
    torch.manual_seed(0)
    model = SEDModel(C, n_mels=F, width=2, pooling=pooling)
    x, weak, _ = _band_batch(n=3)
    loss, correct, n = model(x, weak)
    assert loss.shape == () and torch.isfinite(loss) and n == 3 and 0 <= int(correct) <= 3
    clip, frame = model.predict(x)
    assert clip.shape == (3, C) and frame.shape == (3, T, C)
    for p in (clip, frame):
        assert p.min() >= 0 and p.max() <= 1
    assert model.reconstruct(x).shape == (3, T, F)
    # any number of frames: no layer depends on T
    clip, frame = model.predict(x[:, :11])
    assert clip.shape == (3, C) and frame.shape == (3, 11, C)


def test_loss_is_bce_plus_alpha_mse():
    torch.manual_seed(0)
    x, weak, _ = _band_batch(n=4)
    with_dec = SEDModel(C, n_mels=F, width=2, alpha=0.5).eval()
    without = SEDModel(C, n_mels=F, width=2, aux_decoder=False).eval()
    assert without.load_state_dict(with_dec.state_dict(), strict=False).unexpected_keys  # the decoder's
    with torch.no_grad():
        loss_on, loss_off = with_dec(x, weak)[0], without(x, weak)[0]
        clip, _ = with_dec.predict(x)
        p = clip.double()
        bce = -(weak * p.log() + (1 - weak) * (1 - p).log()).mean()
        mse = ((with_dec.reconstruct(x) - x) ** 2).mean()
    assert float(loss_off) == pytest.approx(float(bce), rel=1e-5)
    assert float(loss_on) == pytest.approx(float(bce + 0.5 * mse), rel=1e-5)
    assert float(mse) > 0.01  # so the two differ
    with pytest.raises(RuntimeError, match="aux_decoder=False"):
        without.reconstruct(x)


def test_correct_counts_exact_label_vectors():
    class Fixed(SEDModel):
        def _pool(self, class_map):
            clip = torch.tensor([[0.9, 0.1, 0.6], [0.9, 0.1, 0.4], [0.2, 0.7, 0.8]])
            return clip, torch.zeros(3, C, class_map.shape[2])

    model = Fixed(C, n_mels=F, width=1, aux_decoder=False)
    weak = torch.tensor([[1, 0, 1], [1, 0, 1], [0, 1, 1]])
    _, correct, n = model(torch.zeros(3, T, F), weak)
    assert (int(correct), n) == (2, 3)


def test_clip_bce_is_finite_at_saturation():
    p = torch.tensor([[0.0, 1.0, 1.0, 0.0]])
    y = torch.tensor([[0.0, 1.0, 0.0, 1.0]])
    loss = clip_bce(p, y)
    assert 7.5 < float(loss) < 8.5  # two of four terms at -log(1e-7) = 16.1


@pytest.mark.parametrize("kwargs, match", [
    ({"num_classes": 0}, "num_classes"), ({"num_classes": 2.5}, "num_classes"),
    ({"width": 0}, "width"), ({"n_mels": 0}, "n_mels"),
    ({"alpha": -0.1}, "alpha"), ({"alpha": "x"}, "alpha"), ({"alpha": float("nan")}, "alpha"),
    ({"pooling": "attention"}, "two_step, time_attention, average, max"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SEDModel(**{"num_classes": C, **kwargs})


def test_wrong_input_shape():
    model = SEDModel(C, n_mels=F, width=1)
    with pytest.raises(ValueError, match="16 mel bins"):
        model.predict(torch.zeros(2, T, F + 1))


@pytest.mark.parametrize("pooling", POOLINGS)
def test_overfits_band_energy(pooling, one_thread):
    """60 Adam steps: every pooling fits the weak labels; the attention poolings (and max) also localize,
    the frame activity of a present class being higher inside its active frames than outside (average
    pooling raises whole clips: no localization to check)."""
    torch.manual_seed(0)
    x, weak, active = _band_batch()
    model = SEDModel(C, n_mels=F, width=4, pooling=pooling)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    with torch.no_grad():
        bce0 = float(clip_bce(model.eval().predict(x)[0], weak))
    model.train()
    for _ in range(60):
        loss, correct, _ = model(x, weak)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        clip, frame = model.eval().predict(x)
    bce = float(clip_bce(clip, weak))
    assert bce < 0.5 * bce0 and int(correct) == 8
    inside, outside = frame[active].mean(), frame[~active & weak.bool()[:, None, :]].mean()
    if pooling in ("two_step", "time_attention"):
        assert bce < 0.05 and inside > outside + 0.15
    elif pooling == "max":
        assert inside > outside
