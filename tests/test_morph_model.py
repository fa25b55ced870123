"""Voice-guided face morphing: the gating controller, the losses and the retrieval measures against hand
computations and brute-force re-derivations (no Ray)."""
import itertools
import math

import numpy as np
import pytest
import torch

from trainers.morph.evaluate import chance_rate, first_hit_ranks, queries
from trainers.morph.model import FaceCNN, GatingController, MorphAutoencoder
from trainers.morph.task import MorphLearner, MorphTask, morph_losses


def test_gates_are_sigmoid_per_channel_and_split_per_block():
    ctl = GatingController(voice_dim=3, channels=[2, 1], hidden=4, kind="gates")
    with torch.no_grad():
        ctl.out.weight.zero_()
        ctl.out.bias.copy_(torch.tensor([0.0, 2.0, -1.0]))
    with torch.no_grad():
        (g1, s1), (g2, s2) = ctl(torch.randn(5, 3))
    assert s1 is None and s2 is None and g1.shape == (5, 2, 1, 1) and g2.shape == (5, 1, 1, 1)
    sig = [1 / (1 + math.exp(-b)) for b in (0.0, 2.0, -1.0)]   # by hand: 0.5, 0.8808, 0.2689
    assert torch.allclose(g1[0, :, 0, 0], torch.tensor(sig[:2])) and math.isclose(g2[0, 0, 0, 0], sig[2], rel_tol=1e-6)
    assert bool(((g1 > 0) & (g1 < 1)).all())


def test_gates_at_one_equal_the_no_voice_autoencoder():
    torch.manual_seed(0)
    ae = MorphAutoencoder(voice_dim=4, width=4, image_size=16).eval()
    x, v = torch.rand(2, 3, 16, 16) * 2 - 1, torch.randn(2, 4)
    with torch.no_grad():
        ae.controller.out.weight.zero_()
        ae.controller.out.bias.fill_(40.0)    # sigmoid(40) = 1 in float32
        assert torch.allclose(ae(x, v), ae(x, None), atol=1e-6)
        ae.controller.out.bias.fill_(0.0)     # gates 0.5: another image
        assert not torch.allclose(ae(x, v), ae(x, None), atol=1e-3)
    assert ae(x, v).shape == (2, 3, 16, 16) and float(ae(x, v).abs().max()) <= 1


def test_film_with_zero_scale_and_shift_is_the_no_voice_autoencoder():
    torch.manual_seed(0)
    ae = MorphAutoencoder(voice_dim=4, width=4, image_size=16, controller="film").eval()
    x, v = torch.rand(2, 3, 16, 16), torch.randn(2, 4)
    with torch.no_grad():
        ae.controller.out.weight.zero_()
        ae.controller.out.bias.zero_()
        assert torch.allclose(ae(x, v), ae(x, None))
        ae.controller.out.bias[-1] = 1.0      # one channel's shift
        assert not torch.allclose(ae(x, v), ae(x, None))


def test_bad_controller_and_size_refused():
    with pytest.raises(ValueError, match="controller"):
        MorphAutoencoder(4, controller="concat")
    with pytest.raises(ValueError, match="power of 2"):
        MorphAutoencoder(4, image_size=48)


def test_morph_losses_by_hand():
    x = torch.zeros(3, 1, 1, 2)
    y = torch.tensor([[[[0.2, 0.4]]], [[[1.0, -1.0]]], [[[0.5, 0.5]]]])   # per-image L1: 0.3, 1.0, 0.5
    a, b = torch.tensor([0, 1, 2]), torch.tensor([0, 2, 1])                # image 0 same identity, 1 and 2 cross
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    ce = [-math.log(math.exp(2) / (math.exp(2) + 2)), math.log(3), -math.log(math.e / (math.e + 2))]
    t = morph_losses(y, x, logits, a, b, w_rec=2.0, w_id=0.5, lam=3.0)
    assert math.isclose(t["rec"], 0.3, rel_tol=1e-6) and math.isclose(t["keep"], 0.75, rel_tol=1e-6)
    assert math.isclose(t["id"], sum(ce) / 3, rel_tol=1e-6)
    assert math.isclose(t["loss"], 2.0 * 0.3 + 0.5 * sum(ce) / 3 + 3.0 * 0.75, rel_tol=1e-6)


def test_classifier_stays_frozen_in_the_learner():
    torch.manual_seed(0)
    clf = FaceCNN(3, width=4, embed_dim=8)
    before = {k: v.clone() for k, v in clf.state_dict().items()}
    learner = MorphLearner(MorphAutoencoder(4, width=4, image_size=16), clf, 1.0, 1.0, 1.0).train()
    assert not clf.training and learner.ae.training
    opt = torch.optim.Adam(learner.parameters(), lr=0.1)
    loss, _, n = learner(torch.rand(4, 3, 16, 16), torch.tensor([0, 1, 2, 0]), torch.randn(4, 4),
                         torch.tensor([1, 1, 0, 2]))
    loss.backward()
    opt.step()
    assert n == 4 and all(torch.equal(before[k], v) for k, v in clf.state_dict().items())
    assert learner.ae.controller.out.weight.grad is not None


def test_voice_pairs_cross_identities_and_belong_to_their_owner():
    labels = np.array([0, 0, 1, 1, 2, 2, 3])
    task = MorphTask(4, np.zeros((7, 2), np.float32), labels, {}, 8, p_same=0.0)
    a = np.random.default_rng(0).integers(0, 4, 200)
    b, utt = task.pick_voices(a, np.random.default_rng(1))
    assert (b != a).all() and (labels[utt] == b).all() and set(b) == {0, 1, 2, 3}
    same = dataclasses_replace(task, p_same=0.999999)
    b, utt = same.pick_voices(a, np.random.default_rng(2))
    assert (b == a).all() and (labels[utt] == a).all()


def dataclasses_replace(task, **kw):
    import dataclasses

    return dataclasses.replace(task, **kw)


def test_first_hit_rank_and_exclusion_by_hand():
    gallery = np.eye(3, dtype=np.float32)
    labels = np.array([0, 1, 1])
    q = np.array([[0.9, 0.1, 0.0], [0.9, 0.1, 0.0]], np.float32)
    # query 0: order 0, 1, 2 -> first image of identity 1 at rank 2; query 1 excludes gallery image 0
    assert first_hit_ranks(q, gallery, labels, np.array([1, 0]), np.array([-1, 0])).tolist() == [2, 3]


@pytest.mark.parametrize("k", [1, 2, 3])
def test_chance_rate_equals_enumerating_every_ranking(k):
    labels = np.array([0, 1, 1, 2, 2])
    wanted, exclude = np.array([1, 2]), np.array([1, -1])
    expected = []
    for w, e in zip(wanted, exclude):
        gallery = [lab for i, lab in enumerate(labels) if i != e]
        perms = list(itertools.permutations(gallery))
        expected.append(sum(w in p[:k] for p in perms) / len(perms))
    assert math.isclose(chance_rate(labels, wanted, exclude, k), float(np.mean(expected)), rel_tol=1e-9)


def test_query_plan_pairs_every_other_identity():
    faces, voices = np.repeat(np.arange(4), 3), np.repeat(np.arange(4), 2)
    plan = queries(faces, voices, targets=2, voices=2, seed=0)
    assert len(plan["a"]) == 4 * 2 * 3 * 2
    assert (plan["a"] != plan["b"]).all() and (faces[plan["target"]] == plan["a"]).all()
    assert (voices[plan["utt"]] == plan["b"]).all()
    rand = voices[plan["rand_utt"]]
    assert ((rand != plan["a"]) & (rand != plan["b"])).all()
