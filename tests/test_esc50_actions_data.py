"""ESC-50 meta and action-vector annotations: readers on the shipped real files and on fixtures in
the real layouts, aggregation (sum, mean, MajorityVote, DawidSkene, GLAD), Fleiss' kappa, bad input."""
import csv
import hashlib
import time

import numpy as np
import pytest
import soundfile as sf

from datasets.errors import LayoutError
from datasets.esc50.action_vectors import (
    AGGREGATORS,
    PSEUDO_WORKER_NOTICE,
    action_vectors,
    aggregate,
    agreement,
    fleiss_kappa,
    pseudo_worker_notice,
)
from datasets.esc50.meta import (
    ACTIONS,
    OUTSIDE_META,
    SHIPPED_ANNOTATIONS,
    SUM_FILE,
    THREE_RATERS_FILE,
    read_crowd,
    read_esc50,
    read_sum,
    read_three_raters,
)

ESC50_HEADER = ["filename", "fold", "target", "category", "esc10", "src_file", "take"]
# The first rows of the real meta/esc50.csv.
ESC50_ROWS = [["1-100032-A-0.wav", "1", "0", "dog", "True", "100032", "A"],
              ["1-100038-A-14.wav", "1", "14", "chirping_birds", "False", "100038", "A"],
              ["1-100210-A-36.wav", "1", "36", "vacuum_cleaner", "False", "100210", "A"]]
SHA256 = {"actionvector_three_per_audiofile.csv": "6ade315f74427d3a1e2157f77a6e04597c4916ef8431e9c998ab36d9f7dd78b4",
          "actionvector_one_per_audiofile_sum.csv": "35df6adf7d2ee8e4c35767e7fa8a60e7ff0e2e59ce730617d363182097783538",
          "LICENSE": "c71d239df91726fc519c6eb72d318ec65820627232b2f796219e87dcf35d0ab4"}


def _write_csv(path, header, rows):
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows([header, *rows])
    return path


def _esc50_root(tmp_path, rows=ESC50_ROWS):
    """A tiny ESC-50 in the real layout: meta/esc50.csv and 5 s of silence per clip in audio/."""
    (tmp_path / "meta").mkdir()
    (tmp_path / "audio").mkdir()
    for row in rows:
        sf.write(tmp_path / "audio" / row[0], np.zeros(44100 * 5, dtype=np.float32), 44100)
    _write_csv(tmp_path / "meta" / "esc50.csv", ESC50_HEADER, rows)
    return tmp_path


def _real_lines(path, n):
    """Header and the first n data rows of a shipped file, as lists of fields."""
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    return rows[0], rows[1:n + 1]


def _crowd_rows(ratings):
    """A ratings frame in the crowd format: one row per (task, worker, action)."""
    return [[r.filename, r.rater, a, str(getattr(r, a))] for r in ratings.itertuples() for a in ACTIONS]


# ----------------------------------------------------------------------------- shipped real files

@pytest.fixture(scope="module")
def real():
    return read_three_raters(THREE_RATERS_FILE)


def test_shipped_copy_is_unmodified():
    for name, digest in SHA256.items():
        assert hashlib.sha256((SHIPPED_ANNOTATIONS / name).read_bytes()).hexdigest() == digest, name
    assert (SHIPPED_ANNOTATIONS / "NOTE.md").is_file()


def test_actions_are_the_real_header():
    for path, skip in ((THREE_RATERS_FILE, 2), (SUM_FILE, 4)):
        header, _ = _real_lines(path, 0)
        assert tuple(header[skip:]) == ACTIONS


def test_real_three_raters(real):
    assert list(real.columns) == ["filename", "rater", *ACTIONS]
    assert len(real) == 6000 and real["filename"].nunique() == 2000
    assert (real.groupby("filename")["rater"].apply(tuple) == ("r1", "r2", "r3")).all()
    assert real[list(ACTIONS)].isin(range(5)).all().all()
    assert pseudo_worker_notice(real) == PSEUDO_WORKER_NOTICE


def test_real_sum_file_equals_sum_of_three_raters(real):
    sums = read_sum(SUM_FILE)
    assert len(sums) == 2000 and sorted(sums["fold"].value_counts()) == [400] * 5
    assert set(sums["target"]) == set(range(50))
    aggregated = aggregate(real, "sum")
    assert sorted(aggregated) == sorted(sums["filename"])
    for row in sums.itertuples(index=False):
        np.testing.assert_array_equal(aggregated[row.filename], np.array(row[4:], dtype=float), err_msg=row.filename)


def test_real_mean_and_majority_vote(real):
    mean, mv = aggregate(real, "mean"), aggregate(real, "mv")
    x = real.sort_values(["filename", "rater"])[list(ACTIONS)].to_numpy().reshape(2000, 3, len(ACTIONS))
    files = sorted(mean)
    np.testing.assert_allclose(np.stack([mean[f] for f in files]), x.mean(axis=1))
    np.testing.assert_array_equal(np.stack([mv[f] for f in files]), ((x >= 2).sum(axis=1) >= 2).astype(float))


def test_real_dawid_skene_and_glad_give_binary_vectors(real):
    # GLAD on all 2000 files takes ~45-60 s here (crowd-kit's E-step loops over tasks in Python):
    # it runs on fold 1 only (400 real files) to keep this module fast.
    fold1 = real[real["filename"].str.startswith("1-")]
    mv = aggregate(real, "mv")
    for method, ratings in (("ds", real), ("glad", fold1)):
        start = time.perf_counter()
        vectors = aggregate(ratings, method)
        print(f"{method}: {ratings['filename'].nunique()} files in {time.perf_counter() - start:.1f} s")
        assert sorted(vectors) == sorted(ratings["filename"].unique())
        stacked = np.stack(list(vectors.values()))
        assert stacked.shape == (len(vectors), len(ACTIONS)) and set(np.unique(stacked)) <= {0.0, 1.0}
        # three anonymous raters of similar skill: the worker models agree with the majority
        assert all(np.array_equal(v, mv[f]) for f, v in vectors.items())


def test_real_fleiss_kappa(real):
    kappas = agreement(real)
    assert set(kappas) == {*ACTIONS, "overall"}
    # the paper reports 0.23; pooling every (file, action) pair as a subject gives 0.221 here
    assert kappas["overall"] == pytest.approx(0.2207, abs=1e-4)
    assert all(0.0 < kappas[a] < 0.5 for a in ACTIONS)


# ----------------------------------------------------------------------------- fixtures in the real layouts

def test_read_esc50(tmp_path):
    clips = read_esc50(_esc50_root(tmp_path))
    assert [c.filename for c in clips] == [r[0] for r in ESC50_ROWS]
    dog = clips[0]
    assert (dog.fold, dog.target, dog.category, dog.esc10, dog.src_file, dog.take) == (1, 0, "dog", True, "100032", "A")
    assert dog.path == str((tmp_path / "audio" / "1-100032-A-0.wav").resolve())
    assert not clips[1].esc10


def test_annotation_fixtures_checked_against_meta(tmp_path):
    meta = read_esc50(_esc50_root(tmp_path))
    header, rows = _real_lines(THREE_RATERS_FILE, 9)
    ratings = read_three_raters(_write_csv(tmp_path / "three.csv", header, rows), meta)
    assert len(ratings) == 9 and list(ratings["rater"][:3]) == ["r1", "r2", "r3"]
    assert list(ratings.loc[0, ["calling", "gasping", "wailing"]]) == [2, 1, 3]
    header, rows = _real_lines(SUM_FILE, 3)
    sums = read_sum(_write_csv(tmp_path / "sum.csv", header, rows), meta)
    np.testing.assert_array_equal(np.stack(list(aggregate(ratings, "sum").values())), sums[list(ACTIONS)].to_numpy())


def test_read_crowd(tmp_path, real):
    part = real[real["filename"].isin(sorted(real["filename"].unique())[:4])].reset_index(drop=True)
    part = part.assign(rater=part["rater"].map({"r1": "w17", "r2": "w3", "r3": "w8"}))
    crowd = read_crowd(_write_csv(tmp_path / "crowd.csv", ["task", "worker", "action", "label"], _crowd_rows(part)))
    assert list(crowd.columns) == ["filename", "rater", *ACTIONS]
    key = ["filename", "rater"]
    assert crowd.sort_values(key).reset_index(drop=True).equals(part.sort_values(key).reset_index(drop=True))
    assert pseudo_worker_notice(crowd) is None
    for method in ("sum", "mv"):
        a, b = aggregate(crowd, method), aggregate(part, method)
        assert all(np.array_equal(a[f], b[f]) for f in b)


# ----------------------------------------------------------------------------- aggregation by hand

def _ratings(table):
    """{filename: [[rater 1's 20 ratings], ...]} -> ratings frame (raters r1, r2, ...)."""
    import pandas as pd
    return pd.DataFrame([(f, f"r{i + 1}", *r) for f, rows in table.items() for i, r in enumerate(rows)],
                        columns=["filename", "rater", *ACTIONS])


def test_sum_mean_and_majority_by_hand():
    z = [0] * 17
    ratings = _ratings({"b.wav": [[4, 2, 1, *z], [0, 2, 1, *z], [4, 0, 3, *z]],
                        "a.wav": [[0, 1, 2, *z], [1, 1, 2, *z], [0, 4, 0, *z]]})
    assert list(aggregate(ratings, "sum")) == ["a.wav", "b.wav"]
    np.testing.assert_array_equal(aggregate(ratings, "sum")["b.wav"][:4], [8, 4, 5, 0])
    np.testing.assert_allclose(aggregate(ratings, "mean")["a.wav"][:4], [1 / 3, 2, 4 / 3, 0])
    mv = aggregate(ratings, "mv")
    np.testing.assert_array_equal(mv["b.wav"][:4], [1, 1, 0, 0])   # >= 2 by 2 of 3, 2 of 3, 1 of 3, none
    np.testing.assert_array_equal(mv["a.wav"][:4], [0, 0, 1, 0])
    assert mv["a.wav"].dtype == np.float64 and mv["a.wav"].shape == (len(ACTIONS),)
    np.testing.assert_array_equal(aggregate(ratings, "mv", threshold=1)["a.wav"][:3], [0, 1, 1])


def test_crowdkit_aggregators_on_a_clear_case():
    """Unanimous files fix the workers' skills; every method returns the unanimous answer."""
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 2, size=(40, len(ACTIONS))) * 4
    ratings = _ratings({f"{i}.wav": [row, row, row] for i, row in enumerate(truth.tolist())})
    for method in ("mv", "ds", "glad"):
        vectors = aggregate(ratings, method)
        np.testing.assert_array_equal(np.stack([vectors[f"{i}.wav"] for i in range(40)]), truth / 4, err_msg=method)


def test_crowdkit_aggregators_are_deterministic():
    """No seeds needed (crowd-kit draws no random numbers here): same input, same vectors, whatever the row order."""
    rng = np.random.default_rng(1)
    noisy = np.zeros((30, 3, len(ACTIONS)), dtype=int)
    noisy[..., :2] = rng.integers(0, 5, size=(30, 3, 2))    # two noisy actions, the rest all 0
    ratings = _ratings({f"{i}.wav": rows.tolist() for i, rows in enumerate(noisy)})
    shuffled = ratings.sample(frac=1.0, random_state=0)
    for method in ("ds", "glad"):
        first, again, reordered = (aggregate(r, method) for r in (ratings, ratings, shuffled))
        assert all(np.array_equal(first[f], again[f]) and np.array_equal(first[f], reordered[f]) for f in first)


def test_crowdkit_actions_as_ray_tasks_give_the_same_vectors(ray_local):
    noisy = np.zeros((12, 3, len(ACTIONS)), dtype=int)
    noisy[..., 1:4] = np.random.default_rng(3).integers(0, 5, size=(12, 3, 3))   # three actions to aggregate
    ratings = _ratings({f"{i}.wav": rows.tolist() for i, rows in enumerate(noisy)})
    local, remote = aggregate(ratings, "ds"), aggregate(ratings, "ds", on_ray=True)
    assert list(local) == list(remote) and all(np.array_equal(local[f], remote[f]) for f in local)
    assert {tuple(v) for v in remote.values()} != {tuple(np.zeros(len(ACTIONS)))}   # not all absent


def test_crowdkit_aggregations_are_kept_for_a_rerun(tmp_path):
    """A rerun on the same ratings reads a crowd-kit aggregation back from the cache (a file per method); other
    ratings or another threshold are aggregated afresh; sum and mean are never cached (nothing to save)."""
    noisy = np.zeros((12, 3, len(ACTIONS)), dtype=int)
    noisy[..., :2] = np.random.default_rng(2).integers(0, 5, size=(12, 3, 2))   # two actions to aggregate
    ratings = _ratings({f"{i}.wav": rows.tolist() for i, rows in enumerate(noisy)})
    first = action_vectors(["sum", "ds"], ratings, None, 2, cache=tmp_path)
    [cached] = tmp_path.iterdir()
    assert cached.name.startswith("ds-threshold2-") and cached.suffix == ".npz"
    for method in ("sum", "ds"):
        assert all(np.array_equal(first[method][f[:-4]], v) for f, v in aggregate(ratings, method).items())
    # the cache is what a rerun reads: an edited file comes back as edited
    saved = dict(np.load(cached))
    np.savez(cached, files=saved["files"], vectors=1 - saved["vectors"])
    again = action_vectors(["ds"], ratings, None, 2, cache=tmp_path)["ds"]
    assert all(np.array_equal(again[f[:-4]], 1 - v) for f, v in aggregate(ratings, "ds").items())
    edited = ratings.copy()
    edited.loc[0, ACTIONS[0]] = 4 - edited.loc[0, ACTIONS[0]]
    action_vectors(["ds"], edited, None, 2, cache=tmp_path)
    action_vectors(["ds"], ratings, None, 3, cache=tmp_path)
    assert len(list(tmp_path.glob("ds-*.npz"))) == 3


def test_aggregate_rejects_unknown_method_and_threshold(real):
    with pytest.raises(ValueError, match="unknown aggregator 'median'"):
        aggregate(real, "median")
    with pytest.raises(ValueError, match="threshold must be 1-4"):
        aggregate(real, "mv", threshold=0)
    assert AGGREGATORS == ("sum", "mean", "mv", "ds", "glad")


# ----------------------------------------------------------------------------- Fleiss' kappa

def test_fleiss_kappa_textbook_example():
    """Fleiss (1971) as worked on Wikipedia: 10 subjects, 14 raters, 5 categories;
    P-bar = 0.378, P-bar_e = 0.213, kappa = 0.210."""
    table = [[0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
             [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7]]
    assert fleiss_kappa(table) == pytest.approx(0.2099, abs=1e-4)


def test_fleiss_kappa_by_hand():
    # 2 subjects, 3 raters: [3, 0] and [1, 2]: P_i = 1 and 1/3, P-bar = 2/3; p = (4/6, 2/6),
    # P-bar_e = 5/9; kappa = (2/3 - 5/9) / (1 - 5/9) = 1/4
    assert fleiss_kappa([[3, 0], [1, 2]]) == pytest.approx(0.25)
    assert fleiss_kappa([[3, 0], [0, 3]]) == pytest.approx(1.0)
    assert np.isnan(fleiss_kappa([[3, 0], [3, 0]]))
    with pytest.raises(ValueError, match="same number"):
        fleiss_kappa([[3, 0], [1, 1]])


def test_agreement_per_action_and_overall_by_hand():
    z = [0] * 18
    ratings = _ratings({"a.wav": [[4, 0, *z], [4, 1, *z], [0, 2, *z]], "b.wav": [[1, 3, *z]] * 3})
    kappas = agreement(ratings)
    # blowing: counts [1,0,0,0,2] and [0,3,0,0,0]
    assert kappas["blowing"] == pytest.approx(fleiss_kappa([[1, 0, 0, 0, 2], [0, 3, 0, 0, 0]]))
    assert np.isnan(kappas["wailing"])    # every rating 0
    pooled = [[1, 0, 0, 0, 2], [1, 1, 1, 0, 0], *[[3, 0, 0, 0, 0]] * 18,
              [0, 3, 0, 0, 0], [0, 0, 0, 3, 0], *[[3, 0, 0, 0, 0]] * 18]
    assert kappas["overall"] == pytest.approx(fleiss_kappa(pooled))
    with pytest.raises(ValueError, match="same number of raters"):
        agreement(ratings.iloc[1:])


# ----------------------------------------------------------------------------- bad input

def _three(tmp_path, edit):
    header, rows = _real_lines(THREE_RATERS_FILE, 9)
    header, rows = edit(header, rows) or (header, rows)
    return _write_csv(tmp_path / "three.csv", header, rows)


def _set(rows, i, column, value, header):
    rows[i][header.index(column)] = value


BAD_THREE = {
    "rating 5": (lambda h, r: _set(r, 2, "sizzling", "5", h),
                 r"three.csv line 4: sizzling = '5' is not a rating \(0-4\)"),
    "rating -1": (lambda h, r: _set(r, 0, "blowing", "-1", h), r"three.csv line 2: blowing = '-1' is not a rating"),
    "rating 2.5": (lambda h, r: _set(r, 0, "blowing", "2.5", h), r"three.csv line 2: blowing = '2.5' is not a rating"),
    "missing action": (lambda h, r: ([c for c in h if c != "rolling"],
                                     [[v for c, v in zip(h, row) if c != "rolling"] for row in r]),
                       r"three.csv line 1: missing column\(s\) rolling"),
    "four rows": (lambda h, r: (h, [*r[:3], r[0], *r[3:]]), r"three.csv line 5: 1-100032-A-0.wav has more than 3 rows"),
    "two rows": (lambda h, r: (h, r[:8]), r"three.csv line 8: 1-100210-A-36.wav has 2 row\(s\)"),
    "category": (lambda h, r: _set(r, 0, "category", "cat", h),
                 r"three.csv line 2: 1-100032-A-0.wav has category 'cat'"),
    "empty": (lambda h, r: _set(r, 3, "tapping", "", h), r"three.csv line 5: empty or missing field\(s\) tapping"),
}


@pytest.mark.parametrize("case", sorted(BAD_THREE))
def test_bad_three_raters(tmp_path, case):
    meta = read_esc50(_esc50_root(tmp_path))
    edit, message = BAD_THREE[case]
    with pytest.raises(LayoutError, match=message):
        read_three_raters(_three(tmp_path, edit), meta)


BAD_SUM = {
    "fold 0": ("fold", "0", r"sum.csv line 3: fold = '0' is not one of ESC-50's official folds \(1-5\)"),
    "fold 6": ("fold", "6", r"sum.csv line 3: fold = '6' is not one of ESC-50's official folds"),
    "sum 13": ("calling", "13.0", r"sum.csv line 3: calling = '13.0' is not a sum of 3 ratings \(0-12\)"),
    "target": ("target", "15", r"sum.csv line 3: 1-100038-A-14.wav has target 15 here but 14"),
}


@pytest.mark.parametrize("case", sorted(BAD_SUM))
def test_bad_sum(tmp_path, case):
    meta = read_esc50(_esc50_root(tmp_path))
    column, value, message = BAD_SUM[case]
    header, rows = _real_lines(SUM_FILE, 3)
    _set(rows, 1, column, value, header)
    with pytest.raises(LayoutError, match=message):
        read_sum(_write_csv(tmp_path / "sum.csv", header, rows), meta)


def test_bad_sum_missing_action_and_duplicate(tmp_path):
    with pytest.raises(LayoutError, match=r"sum.csv not found"):
        read_sum(tmp_path / "sum.csv")
    header, rows = _real_lines(SUM_FILE, 3)
    with pytest.raises(LayoutError, match=r"sum.csv line 1: missing column\(s\) wailing"):
        read_sum(_write_csv(tmp_path / "sum.csv", header[:-1], [r[:-1] for r in rows]))
    with pytest.raises(LayoutError, match=r"sum.csv line 5: 1-100032-A-0.wav is listed twice \(also at line 2\)"):
        read_sum(_write_csv(tmp_path / "sum.csv", header, [*rows, rows[0]]))


BAD_CROWD = {
    "duplicate": (lambda r: [*r, r[5]], r"crowd.csv line 62: worker 'r1' rated 'exhaling' of 1-100032-A-0.wav "
                                         r"twice \(also at line 7\)"),
    "rating 7": (lambda r: [*r[:10], [*r[10][:3], "7"], *r[11:]], r"crowd.csv line 12: label = '7' is not a rating"),
    "unknown action": (lambda r: [*r[:3], [*r[3][:2], "barking", "1"], *r[4:]],
                       r"crowd.csv line 5: unknown action 'barking'"),
    "missing action": (lambda r: r[:19] + r[20:], r"crowd.csv line 2: worker 'r1' rated 1-100032-A-0.wav but not "
                                                  r"action\(s\) wailing"),
}


@pytest.mark.parametrize("case", sorted(BAD_CROWD))
def test_bad_crowd(tmp_path, case, real):
    meta = read_esc50(_esc50_root(tmp_path))
    rows = _crowd_rows(real.iloc[:3])      # 3 raters x 20 actions of 1-100032-A-0.wav: lines 2-61
    edit, message = BAD_CROWD[case]
    with pytest.raises(LayoutError, match=message):
        read_crowd(_write_csv(tmp_path / "crowd.csv", ["task", "worker", "action", "label"], edit(rows)), meta)


def test_rows_of_clips_outside_the_meta_are_ignored_and_counted(tmp_path, real):
    """A corpus in the ESC-50 layout may hold a subset of the clips (ESC-10, a user's own recordings): the
    annotation rows of the other clips are ignored, and how many clips that was is recorded."""
    meta = read_esc50(_esc50_root(tmp_path))
    header, rows = _real_lines(THREE_RATERS_FILE, 9)
    stray = [[("1-999999-A-0.wav" if c == "filename" else v) for c, v in zip(header, row)] for row in rows[:3]]
    ratings = read_three_raters(_write_csv(tmp_path / "three.csv", header, rows + stray), meta)
    assert ratings.attrs[OUTSIDE_META] == 1 and "1-999999-A-0.wav" not in set(ratings["filename"])
    assert len(ratings) == 9
    header, rows = _real_lines(SUM_FILE, 3)
    rows[1][header.index("filename")] = "5-9-A-1.wav"
    summed = read_sum(_write_csv(tmp_path / "sum.csv", header, rows), meta)
    assert summed.attrs[OUTSIDE_META] == 1 and len(summed) == 2
    crowd = _crowd_rows(real.iloc[:3]) + [["1-999-A-1.wav", "w1", a, "0"] for a in ACTIONS]
    ratings = read_crowd(_write_csv(tmp_path / "crowd.csv", ["task", "worker", "action", "label"], crowd), meta)
    assert ratings.attrs[OUTSIDE_META] == 1 and set(ratings["filename"]) == {"1-100032-A-0.wav"}


def test_bad_crowd_missing_column(tmp_path):
    with pytest.raises(LayoutError, match=r"crowd.csv line 1: missing column\(s\) worker"):
        read_crowd(_write_csv(tmp_path / "crowd.csv", ["task", "action", "label"],
                              [["1-100032-A-0.wav", "blowing", "0"]]))


BAD_ESC50 = {
    "fold 6": (1, "6", r"esc50.csv line 2: fold = '6' is not one of ESC-50's official folds \(1-5\)"),
    "fold 0": (1, "0", r"esc50.csv line 2: fold = '0' is not one of ESC-50's official folds"),
    "fold x": (1, "x", r"esc50.csv line 2: fold = 'x' is not one of"),
    "target 50": (2, "50", r"esc50.csv line 2: target = '50' is not an ESC-50 class index \(0-49\)"),
    "esc10": (4, "yes", r"esc50.csv line 2: esc10 = 'yes', expected True or False"),
}


@pytest.mark.parametrize("case", sorted(BAD_ESC50))
def test_bad_esc50_meta(tmp_path, case):
    column, value, message = BAD_ESC50[case]
    root = _esc50_root(tmp_path)
    rows = [list(r) for r in ESC50_ROWS]
    rows[0][column] = value
    _write_csv(root / "meta" / "esc50.csv", ESC50_HEADER, rows)
    with pytest.raises(LayoutError, match=message):
        read_esc50(root)


def test_bad_esc50_layout(tmp_path):
    with pytest.raises(LayoutError, match=r"esc50.csv not found: pass the ESC-50 root"):
        read_esc50(tmp_path)
    root = _esc50_root(tmp_path)
    (root / "audio" / ESC50_ROWS[1][0]).unlink()
    with pytest.raises(LayoutError, match=r"esc50.csv line 3: .*1-100038-A-14.wav does not exist"):
        read_esc50(root)
    _write_csv(root / "meta" / "esc50.csv", ESC50_HEADER[:-1], [r[:-1] for r in ESC50_ROWS])
    with pytest.raises(LayoutError, match=r"esc50.csv line 1: missing column\(s\) take"):
        read_esc50(root)
