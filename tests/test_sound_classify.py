"""Classifiers of the ESC-50 workflow: vector models, the log-mel CNN (and its early fusion), the
generated ESC-50-layout corpus, the confusion matrix."""
import numpy as np
import pytest
import torch

from datasets.esc50.meta import SUM_FILE, THREE_RATERS_FILE, read_esc50, read_sum, read_three_raters
from datasets.synthetic.esc50 import generate_esc50_corpus
from trainers.esc50.audio import LogMelCNN
from trainers.esc50.vectors import VectorClassifier, confusion_matrix
from trainers.features import LogMel


def test_vector_classifier_standardizes_with_stored_training_stats():
    mean, std = np.array([1.0, 5.0, 2.0]), np.array([2.0, 1.0, 0.0])    # a constant third feature
    m = VectorClassifier("logreg", 3, 4, mean, std)
    with torch.no_grad():
        m.net.weight.copy_(torch.eye(4, 3))
        m.net.bias.zero_()
    z = m.logits(torch.tensor([[3.0, 4.0, 9.0]]))
    assert torch.allclose(z, torch.tensor([[1.0, -1.0, 0.0, 0.0]]))        # (x - mean) / std, constant -> 0
    m2 = VectorClassifier("logreg", 3, 4, mean, std)
    m2.load_state_dict(m.state_dict())                                     # the buffers travel with the model
    assert torch.equal(m2.logits(torch.tensor([[3.0, 4.0, 9.0]])), z)
    with pytest.raises(ValueError, match="unknown vector model 'svm'"):
        VectorClassifier("svm", 3, 4, mean, std)


def test_confusion_matrix_counts():
    m = confusion_matrix(np.array([0, 0, 1, 2, 2]), np.array([0, 1, 1, 2, 0]), 3)
    assert m.tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 1]]


def test_logmel_cnn_shapes_fusion_and_overfit():
    torch.manual_seed(0)
    x = torch.randn(6, 40, 32)
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    av = torch.randn(6, 5)
    plain = LogMelCNN(3, width=4)
    fused = LogMelCNN(3, width=4, av_dim=5, av_mean=[0.0] * 5, av_std=[1.0] * 5)
    assert plain.embed(x).shape == (6, 32) and plain.logits(x).shape == (6, 3)
    fused.eval()
    assert not torch.allclose(fused.logits(x, av), fused.logits(x, av + 1.0))   # the vector is used
    for i, k in enumerate(y.tolist()):          # class k: energy in mel bins 10k .. 10k + 9
        x[i, :, 10 * k:10 * k + 10] += 2.0
    opt = torch.optim.Adam(plain.parameters(), lr=1e-2)
    for _ in range(40):
        loss, correct, n = plain(x, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.3 and int(correct) == n == 6


def test_demo_corpus_uses_real_names_folds_and_classes(tmp_path):
    root = generate_esc50_corpus(tmp_path / "esc", clips_per_fold=1, sample_rate=8000)
    clips = read_esc50(root)
    real = read_sum(SUM_FILE).set_index("filename")
    assert len(clips) == 250 and {c.fold for c in clips} == {1, 2, 3, 4, 5}
    for c in clips:
        assert (real.loc[c.filename, "fold"], real.loc[c.filename, "target"]) == (c.fold, c.target)
        assert real.loc[c.filename, "category"] == c.category
    ratings = read_three_raters(THREE_RATERS_FILE)
    assert set(ratings["filename"]) >= {c.filename for c in clips}            # the real vectors attach
    feats = LogMel(8000, 512, 256, 32).logmel(__import__("soundfile").read(clips[0].path)[0])
    assert feats.shape == (1 + (5 * 8000 - 512) // 256, 32)
    again = generate_esc50_corpus(tmp_path / "esc", clips_per_fold=1, sample_rate=8000)
    assert again == root                                                       # a rerun is a no-op


class _Planted:
    """Unpickling this would create a file: the proof that code from a weights file ran."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_embedding_weights_that_are_not_a_state_dict_are_refused_without_running(tmp_path):
    from trainers.esc50.audio import load_extractor

    marker = tmp_path / "ran"
    planted = tmp_path / "planted.pt"
    torch.save({"state": _Planted(marker)}, planted)
    with pytest.raises(ValueError, match="is not a plain state dict .* nothing in it was run") as err:
        load_extractor("logmel_cnn", str(planted))
    assert not marker.exists() and "weights_only" not in str(err.value)
    with pytest.raises(ValueError, match="cannot load embedding weights .*No such file"):
        load_extractor("logmel_cnn", str(tmp_path / "absent.pt"))
