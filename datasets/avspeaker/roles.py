"""Conversation roles from speaking timelines: who holds the turn (the main speaker), who interrupts, and
where the turn passes (role switches), by the turn-taking definition of arXiv 2108.03256: the main speaker
holds the turn and keeps talking through interruptions; an interrupter's speech is a short, overlapping
reaction; the role passes when an interrupter keeps talking after the main speaker stops.

The paper gives the definition in words only; this rule set making it computable is this project's design
(docs/faithfulness.md). On a grid of frames (step dt) with `speaking[k, t]` per track k:

  1. runs      each track's speaking frames, with pauses shorter than `pause_s` bridged (a speaker who
               breathes between sentences keeps talking);
  2. holder    h(t), the track holding the turn, scanned forward in time. While h speaks (inside one of
               its runs) it keeps the turn, whoever else talks. When h is silent, a speaking track c takes
               the turn if its current run goes on for at least `take_s` after h's last speech ended
               (or after c's own start, if later): `end(c) - max(start(c), last_end(h)) >= take_s`. Of
               several such tracks the one whose run ends last takes it (then the lowest index). With no
               such track, h keeps the turn through the silence (a listener's brief reaction does not
               take it). Before anyone qualifies, h(t) = -1 (nobody holds the turn).
  3. roles     main[k, t] = (h(t) == k); interrupter[k, t] = speaking[k, t] and h(t) != k (the raw label,
               not the bridged run: a pause is not an interruption).
  4. switches  frames t where h(t-1) >= 0, h(t) >= 0 and h(t) != h(t-1).

Per segment (what the model predicts): track k is the segment's main speaker where it holds the turn for
more than half the segment's frames; the segment's main speaker is that track or -1. A track interrupts in
a segment where it interrupts for at least `min_interrupt_s` of it (default: one frame). A segment holds
a role switch where its main speaker differs from the previous segment's and both are >= 0.
"""
from __future__ import annotations

import dataclasses

import numpy as np

SILENT, MAIN, INTERRUPTER = 0, 1, 2
ROLE_NAMES = ("silent", "main", "interrupter")


@dataclasses.dataclass(frozen=True)
class RoleRules:
    pause_s: float = 0.5          # pauses shorter than this stay inside one run of speech
    take_s: float = 1.0           # how long a speaker must keep talking after the holder stopped to take the turn
    min_interrupt_s: float = 0.0  # interruption time a segment needs to count it (0: any frame)

    def check(self) -> None:
        if self.pause_s < 0 or self.take_s <= 0 or self.min_interrupt_s < 0:
            raise ValueError(f"roles: pause_s >= 0, take_s > 0 and min_interrupt_s >= 0 are required, got {self}")


def runs(speaking: np.ndarray, bridge: int) -> list[tuple[int, int]]:
    """[(start, end)) frame runs of a boolean vector, gaps of fewer than `bridge` frames bridged."""
    idx = np.flatnonzero(speaking)
    if idx.size == 0:
        return []
    out, start, prev = [], int(idx[0]), int(idx[0])
    for i in idx[1:]:
        gap = i - prev - 1
        if gap > 0 and gap >= bridge:
            out.append((start, prev + 1))
            start = int(i)
        prev = int(i)
    out.append((start, prev + 1))
    return out


def turn_holder(speaking: np.ndarray, dt: float, rules: RoleRules = RoleRules()) -> np.ndarray:
    """h(t) of a (tracks, frames) boolean array; -1 where nobody holds the turn."""
    speaking = np.asarray(speaking, dtype=bool)
    k_n, t_n = speaking.shape
    bridge = int(round(rules.pause_s / dt))
    take = rules.take_s / dt - 1e-9
    # run_of[k, t] = (start, end) of the bridged run covering t, or (-1, -1)
    start = np.full((k_n, t_n), -1)
    end = np.full((k_n, t_n), -1)
    for k in range(k_n):
        for s, e in runs(speaking[k], bridge):
            start[k, s:e], end[k, s:e] = s, e
    holder = np.full(t_n, -1)
    h, last_end = -1, -np.inf
    for t in range(t_n):
        if h >= 0 and end[h, t] >= 0:        # the holder speaks (inside a run): keeps the turn
            last_end = end[h, t]
        else:
            best = None
            for c in range(k_n):
                if c == h or end[c, t] < 0:
                    continue
                if end[c, t] - max(start[c, t], last_end) >= take and (best is None or end[c, t] > end[best, t]):
                    best = c
            if best is not None:
                h, last_end = best, end[best, t]
        holder[t] = h
    return holder


def frame_roles(speaking: np.ndarray, holder: np.ndarray) -> np.ndarray:
    """(tracks, frames) role codes SILENT / MAIN / INTERRUPTER."""
    speaking = np.asarray(speaking, dtype=bool)
    main = holder[None, :] == np.arange(speaking.shape[0])[:, None]
    return np.where(main, MAIN, np.where(speaking, INTERRUPTER, SILENT))


def switch_frames(holder: np.ndarray) -> np.ndarray:
    """Frames where the turn passes from one track to another."""
    h = np.asarray(holder)
    return np.flatnonzero((h[1:] >= 0) & (h[:-1] >= 0) & (h[1:] != h[:-1])) + 1


def segment_roles(speaking: np.ndarray, dt: float, frames_per_segment: int, rules: RoleRules = RoleRules()
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(roles (tracks, segments) codes, main speaker per segment (-1: nobody), switch per segment (bool)) of a
    (tracks, frames) timeline cut into whole segments of `frames_per_segment` (a trailing part is dropped)."""
    speaking = np.asarray(speaking, dtype=bool)
    roles = frame_roles(speaking, turn_holder(speaking, dt, rules))
    return segments_of(roles, frames_per_segment, max(1, int(round(rules.min_interrupt_s / dt))))


def segments_of(roles: np.ndarray, frames_per_segment: int, min_interrupt_frames: int = 1
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Segment-level (roles, main speaker, switch) of frame-level role codes (tracks, frames), e.g. a window's
    slice of a whole video's roles (the turn is derived over the whole video, then cut)."""
    k_n = roles.shape[0]
    s_n = roles.shape[1] // frames_per_segment
    cut = roles[:, :s_n * frames_per_segment].reshape(k_n, s_n, frames_per_segment)
    is_main = (cut == MAIN).mean(axis=2) > 0.5
    main_id = np.where(is_main.any(axis=0), is_main.argmax(axis=0), -1)
    seg = np.where(is_main, MAIN, np.where((cut == INTERRUPTER).sum(axis=2) >= min_interrupt_frames, INTERRUPTER,
                                           SILENT))
    return seg, main_id, segment_switches(main_id)


def segment_switches(main_id: np.ndarray) -> np.ndarray:
    """Per segment: its main speaker differs from the previous segment's, both >= 0."""
    m = np.asarray(main_id)
    out = np.zeros(len(m), dtype=bool)
    out[1:] = (m[1:] >= 0) & (m[:-1] >= 0) & (m[1:] != m[:-1])
    return out
