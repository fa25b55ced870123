"""Turn-taking roles (datasets/avspeaker/roles.py) on hand-made timelines, each expected result worked out by
hand from the definition (the holder keeps the turn through interruptions; the role passes when another
speaker keeps talking after the holder stops)."""
import numpy as np
import pytest

from datasets.avspeaker.roles import (
    INTERRUPTER,
    MAIN,
    SILENT,
    RoleRules,
    frame_roles,
    runs,
    segment_roles,
    switch_frames,
    turn_holder,
)

DT = 0.1
RULES = RoleRules(pause_s=0.3, take_s=1.0)


def timeline(*tracks: str) -> np.ndarray:
    """'#' = speaking frame, '.' = silent; one string per track, one character per 0.1 s."""
    return np.array([[c == "#" for c in t] for t in tracks])


def test_runs_bridge_short_pauses_only():
    x = np.array([1, 1, 0, 0, 1, 0, 0, 0, 1], bool)
    assert runs(x, bridge=3) == [(0, 5), (8, 9)]     # the 2-frame pause is bridged, the 3-frame one is not
    assert runs(x, bridge=0) == [(0, 2), (4, 5), (8, 9)]
    assert runs(np.zeros(4, bool), 2) == []


def test_main_speaker_keeps_turn_through_interruption():
    s = timeline("####################",     # A talks 2 s
                 "......###...........")     # B: a 0.3 s burst in the middle
    h = turn_holder(s, DT, RULES)
    assert (h == 0).all()                    # A held the turn all along: B's burst did not take it
    roles = frame_roles(s, h)
    assert (roles[0] == MAIN).all()
    assert (roles[1, 6:9] == INTERRUPTER).all() and (roles[1, :6] == SILENT).all() and (roles[1, 9:] == SILENT).all()
    assert switch_frames(h).size == 0


def test_interrupter_who_keeps_talking_takes_the_turn():
    s = timeline("##########..........",     # A talks 0-1.0 s
                 "........############")     # B starts at 0.8 s (overlap) and goes on to 2.0 s
    h = turn_holder(s, DT, RULES)
    # A holds while speaking (frames 0-9); at frame 10 A is silent and B's run goes on 1.0 s after A's end -> B
    assert h.tolist() == [0] * 10 + [1] * 10
    assert switch_frames(h).tolist() == [10]
    roles = frame_roles(s, h)
    assert roles[1, 8:10].tolist() == [INTERRUPTER, INTERRUPTER]   # while A still held the turn


def test_short_reaction_after_holder_stops_does_not_take_turn():
    s = timeline("############.......#####",        # A: 0-1.2 s, silence, A again at 1.9 s
                 ".............###........")        # B: 0.3 s reaction in A's silence (< take_s)
    h = turn_holder(s, DT, RULES)
    assert (h == 0).all()                    # A keeps the turn through the silence and the reaction
    assert (frame_roles(s, h)[1, 13:16] == INTERRUPTER).all()


def test_pause_within_turn_is_bridged_and_nobody_holds_before_first_turn():
    s = timeline("..##.##########",          # A: a 0.1 s pause at frame 4 (< pause_s) inside one run
                 "......#........")
    h = turn_holder(s, DT, RULES)
    assert h[:2].tolist() == [-1, -1]        # before anyone talks, nobody holds the turn
    assert (h[2:] == 0).all()                # A's run 0.2-1.5 s (1.3 s >= take_s) takes the turn at its start


def test_two_candidates_the_longer_run_takes_it():
    s = timeline("############.............",
                 "............###########..",   # B: 1.1 s after A stops
                 "............#############")   # C: 1.3 s after A stops -> C
    h = turn_holder(s, DT, RULES)
    assert h[:12].tolist() == [0] * 12 and (h[12:] == 2).all()


def test_first_turn_needs_take_s():
    s = timeline("#####....", "......###")   # two runs shorter than take_s: nobody ever holds the turn
    assert (turn_holder(s, DT, RULES) == -1).all()


def test_segment_roles_majority_and_switches():
    # 4 segments of 5 frames; A holds frames 0-9, B from 10 on (as in the interruption test above, 2 s long)
    s = timeline("##########..........",
                 "........############")
    seg, main_id, switch = segment_roles(s, DT, 5, RULES)
    assert main_id.tolist() == [0, 0, 1, 1]
    assert seg[:, 1].tolist() == [MAIN, INTERRUPTER]       # B interrupts in segment 1 (frames 8-9)
    assert seg[:, 2].tolist() == [SILENT, MAIN]
    assert switch.tolist() == [False, False, True, False]


def test_segment_without_majority_holder_has_no_main():
    s = timeline("...##########")            # A takes the turn at frame 3: holds 2 of segment 0's 5 frames
    _, main_id, switch = segment_roles(s, DT, 5, RULES)
    assert main_id.tolist() == [-1, 0]
    assert not switch.any()


def test_min_interrupt_time():
    s = timeline("##########", "....#.....")
    seg, _, _ = segment_roles(s, DT, 10, RoleRules(pause_s=0.3, take_s=1.0, min_interrupt_s=0.2))
    assert seg[1, 0] == SILENT               # 0.1 s of overlap < 0.2 s
    seg, _, _ = segment_roles(s, DT, 10, RULES)
    assert seg[1, 0] == INTERRUPTER


def test_bad_rules():
    with pytest.raises(ValueError, match="take_s"):
        RoleRules(take_s=0).check()
