"""Speaker encoders: shapes, variable length, registry errors, size, gradients."""
import pytest
import torch

from trainers.encoders import ENCODERS, build_encoder
from trainers.encoders.tdnn import XVector

NAMES = ["tdnn", "resnet18", "resnet34"]


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.mark.parametrize("name", NAMES)
def test_output_shape_train_batch(name):
    enc = build_encoder(name, feat_dim=80, embed_dim=128)
    assert enc(torch.randn(3, 200, 80)).shape == (3, 128)
    assert enc.embed_dim == 128


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("t", [15, 57, 200, 413])
def test_variable_length_batch_of_one_eval(name, t):
    enc = build_encoder(name).eval()
    with torch.no_grad():
        out = enc(torch.randn(1, t, 80))
    assert out.shape == (1, 256) and torch.isfinite(out).all()


@pytest.mark.parametrize("name", NAMES)
def test_eval_embedding_independent_of_batch(name):
    # In eval mode BN uses running stats: an utterance's embedding must not depend on its batch.
    enc = build_encoder(name).eval()
    x = torch.randn(3, 120, 80)
    with torch.no_grad():
        torch.testing.assert_close(enc(x)[1:2], enc(x[1:2]), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("feat_dim", [40, 64, 81])
def test_resnet_any_feat_dim(feat_dim):
    enc = build_encoder("resnet18", feat_dim=feat_dim, m_channels=8)
    assert enc(torch.randn(2, 50, feat_dim)).shape == (2, 256)


def test_resnet34_parameter_count():
    # WeSpeaker reports 6.63 M parameters for ResNet34 (m_channels=32, 80-dim fbank, embed 256).
    n = sum(p.numel() for p in build_encoder("resnet34", m_channels=32).parameters())
    assert 6.5e6 < n < 6.8e6, n
    thin = sum(p.numel() for p in build_encoder("resnet34", m_channels=16).parameters())
    assert 1.5e6 < thin < 2.5e6, thin  # voxceleb_trainer-width "thin" ResNet


def test_tdnn_size_and_too_short_input():
    n = sum(p.numel() for p in build_encoder("tdnn", embed_dim=512).parameters())
    assert 4.0e6 < n < 4.8e6, n  # the x-vector network is ~4.2-4.6 M parameters at 80-dim input
    with pytest.raises(ValueError, match=f"at least {XVector.MIN_FRAMES} frames"):
        build_encoder("tdnn")(torch.randn(2, XVector.MIN_FRAMES - 1, 80))


def test_two_emb_layer_option():
    one = build_encoder("tdnn", two_emb_layer=False)
    two = build_encoder("resnet18", m_channels=8, two_emb_layer=True)
    assert not hasattr(one.segment, "seg_2") and hasattr(two.segment, "seg_2")
    assert two(torch.randn(2, 40, 80)).shape == (2, 256)


@pytest.mark.parametrize("name", NAMES)
def test_gradients_reach_every_parameter(name):
    enc = build_encoder(name, embed_dim=32, **({} if name == "tdnn" else {"m_channels": 8}))
    enc(torch.randn(4, 60, 80)).pow(2).sum().backward()
    for pname, p in enc.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname
        assert p.grad.abs().sum() > 0, pname


def test_registry_errors():
    assert set(NAMES) <= set(ENCODERS)
    with pytest.raises(ValueError, match=r"unknown encoder 'ecapa'; choose one of: .*resnet34"):
        build_encoder("ecapa")
    with pytest.raises(ValueError, match=r"unknown argument 'channels'.*m_channels"):
        build_encoder("resnet34", channels=16)
    with pytest.raises(ValueError, match="positive"):
        build_encoder("tdnn", embed_dim=0)
