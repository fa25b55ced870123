"""The semi-weak losses against their formulas (computed here independently), the count-exact
assignment against brute force, and the count-consistency score."""
import itertools

import numpy as np
import pytest
import torch

from trainers.semiweak.model import BagLearner, count_consistent, count_loss
from trainers.semiweak.task import assign_to_counts, to_batch


def test_count_losses_match_their_formulas():
    lam = torch.tensor([[2.5, 0.3, 1.2], [0.1, 3.0, 0.9]])
    c = torch.tensor([[3.0, 0.0, 1.0], [0.0, 4.0, 0.0]])
    poisson = sum(float(lam[b, k] - c[b, k] * np.log(float(lam[b, k]) + 1e-6)) for b in range(2) for k in range(3)) / 2
    assert float(count_loss(lam, c, "poisson")) == pytest.approx(poisson, rel=1e-5)
    assert float(count_loss(lam, c, "mse")) == pytest.approx(float(((lam - c) ** 2).sum()) / 2, rel=1e-6)
    assert float(count_loss(lam, c, "l1")) == pytest.approx(float((lam - c).abs().sum()) / 2, rel=1e-6)
    with pytest.raises(ValueError, match="unknown count loss 'kl'"):
        count_loss(lam, c, "kl")


def bag_losses(kind: str, logits: torch.Tensor, bag: torch.Tensor, counts: torch.Tensor) -> float:
    """The learner's loss with its classifier replaced by given logits (the loss is what is tested)."""
    model = BagLearner(kind, 1, logits.shape[1], width=1)
    model.net.forward = lambda x: logits
    return float(model(torch.zeros(len(logits), 1, 4, 4), bag, counts)[0])


def test_llp_and_mil_losses_match_their_formulas():
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.5, 1.5, 0.0], [0.0, 0.0, 3.0], [1.0, -2.0, 0.0]])
    bag = torch.tensor([0, 0, 1, 1])
    counts = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 1.0]])
    p, c = torch.softmax(logits, 1).numpy(), counts.numpy()
    llp = mil = 0.0
    for b, members in enumerate(([0, 1], [2, 3])):
        mean = p[members].mean(0)
        llp += -sum(c[b, k] / 2 * np.log(mean[k]) for k in range(3))
        for k in range(3):
            present = 1 - np.prod(1 - p[members, k])          # noisy-OR
            mil += -np.log(present) if c[b, k] > 0 else -np.log(1 - present)
    assert bag_losses("llp", logits, bag, counts) == pytest.approx(llp / 2, rel=1e-5)
    assert bag_losses("mil", logits, bag, counts) == pytest.approx(mil / 2, rel=1e-5)


def test_entropy_regularizer_adds_the_mean_instance_entropy():
    logits = torch.tensor([[2.0, 0.0], [0.0, 0.0]])
    bag, counts = torch.tensor([0, 0]), torch.tensor([[1.0, 1.0]])
    p = torch.softmax(logits, 1)
    entropy = float(-(p * p.log()).sum(1).mean())
    model = BagLearner("count", 1, 2, width=1, reg_weight=0.5)
    model.net.forward = lambda x: logits
    plain = BagLearner("count", 1, 2, width=1)
    plain.net.forward = lambda x: logits
    x = torch.zeros(2, 1, 4, 4)
    assert float(model(x, bag, counts)[0]) == pytest.approx(float(plain(x, bag, counts)[0]) + 0.5 * entropy, rel=1e-6)


def test_losses_are_finite_for_confident_predictions():
    logits = torch.tensor([[80.0, -80.0], [80.0, -80.0]], requires_grad=True)
    bag, counts = torch.tensor([0, 0]), torch.tensor([[1.0, 1.0]])
    for kind in ("count", "llp", "mil"):
        model = BagLearner(kind, 1, 2, width=1)
        model.net.forward = lambda x: logits
        loss = model(torch.zeros(2, 1, 4, 4), bag, counts)[0]
        loss.backward()
        assert torch.isfinite(loss) and torch.isfinite(logits.grad).all(), kind
        logits.grad = None


def test_assignment_is_the_best_count_exact_labelling():
    rng = np.random.default_rng(0)
    for _ in range(20):
        log_p = np.log(rng.dirichlet(np.ones(3), size=5))
        counts = np.bincount(rng.integers(0, 3, 5), minlength=3)
        labels = assign_to_counts(log_p, counts)
        assert np.bincount(labels, minlength=3).tolist() == counts.tolist()
        best = max(sum(log_p[i, y] for i, y in enumerate(ys)) for ys in itertools.product(range(3), repeat=5)
                   if np.bincount(ys, minlength=3).tolist() == counts.tolist())
        assert sum(log_p[i, y] for i, y in enumerate(labels)) == pytest.approx(best)
    with pytest.raises(ValueError, match="do not describe a bag of 5 instances"):
        assign_to_counts(log_p, np.array([1, 1, 1]))


def test_count_consistency():
    predicted = torch.tensor([0, 0, 0, 1, 2, 2])
    bag = torch.tensor([0, 0, 0, 1, 1, 1])
    counts = torch.tensor([[1.0, 2.0, 0.0], [0.0, 1.0, 2.0]])
    # bag 0: predicted three 0s, holds one 0 -> 1 consistent; bag 1: all three fit its counts
    assert float(count_consistent(predicted, bag, counts)) == 4


def test_ragged_bags_batch():
    images = [np.zeros((3, 8, 8, 1), np.uint8), np.full((5, 8, 8, 1), 255, np.uint8)]
    batch = to_batch(images, np.array([[3.0, 0.0], [2.0, 3.0]], np.float32))
    assert batch["x"].shape == (8, 1, 8, 8) and batch["bag"].tolist() == [0, 0, 0, 1, 1, 1, 1, 1]
    assert float(batch["x"].min()) == -1.0 and float(batch["x"].max()) == 1.0
    model = BagLearner("count", 1, 2, width=2)
    loss, correct, n = model(**batch)
    loss.backward()
    assert n == 8 and 0 <= float(correct) <= 8


def test_bad_parameters():
    with pytest.raises(ValueError, match="unknown training kind 'weak'"):
        BagLearner("weak", 3, 10)
    with pytest.raises(ValueError, match="reg_weight must be >= 0"):
        BagLearner("count", 3, 10, reg_weight=-1)


def test_summary_scores():
    from trainers.semiweak.task import summarize

    scores = [{"counts": np.array([[2.0, 1.0, 0.0], [0.0, 0.0, 2.0]]),
               "predicted_counts": np.array([[1, 1, 1], [0, 0, 2]]),
               "correct": np.array([2, 2]), "instances": np.array([3, 2])}]
    s = summarize(scores)
    assert s["instance_accuracy"] == pytest.approx(4 / 5) and s["bag_exact"] == 0.5
    assert s["count_mae"] == pytest.approx(2 / 6)                  # |1-2| + |1-0| over 2 bags x 3 classes
    assert s["count_error"] == pytest.approx((2 / 6 + 0) / 2)      # bag 1: one of 3 instances unaccounted for
