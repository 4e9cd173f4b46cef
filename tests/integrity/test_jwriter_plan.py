"""The journal's write-home plan (jwriter.py ``plan_home``) against a simple model: the
blocks added, in journal order; of a sector added more than once in the planned sections,
only its last entry goes home; runs of consecutive positions and sectors, cut where a
section ends.  Random adds, padded and unpadded commits, plans (also withdrawn and made
again) and finishes, with the journal wrapping many times."""

import random

from hypothesis import given, settings
from hypothesis import strategies as st
from target_util import mapped, memdisk


def _runs_model(entries: list, E: int, spb: int, bs: int, ts: int) -> list:
    """``entries``: (position, sector, data, tag) of the used entries of the planned
    sections, in journal order (positions wrap)."""
    last = {}
    for i, (_, s, _, _) in enumerate(entries):
        last[s] = i
    kept = [e for i, e in enumerate(entries) if last[e[1]] == i]
    runs = []
    for p, s, data, tag in kept:
        if runs:
            rp, rs, pieces, tags, n = runs[-1]
            if p == rp + n and s == rs + n * spb:
                if p % E == 0:
                    pieces.append(b"")
                pieces[-1] += data
                runs[-1] = (rp, rs, pieces, tags + tag, n + 1)
                continue
        runs.append((p, s, [data], tag, 1))
    return [(s, pieces, tags) for _, s, pieces, tags, _ in runs]


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), block_size=st.sampled_from([512, 4096]))
def test_plan_home_matches_the_model(seed, block_size):
    rng = random.Random(seed)
    spb = block_size // 512
    dev = mapped({"disk": memdisk(16384)},
                 f"disk 0 - J 3 internal_hash:crc32c journal_sectors:{300 * spb} "
                 f"block_size:{block_size}")
    t = dev.targets[0]
    jw = t.journal
    E, total, ts = jw.section_entries, jw.total_entries, jw.tag_size
    nblocks = dev.nr_sectors // spb
    # the model: what each journal position holds (sector, data, tag), None when unused
    slots: list = [None] * total
    planned: list = []             # (plan, [(p, s, data, tag)...]) not finished yet
    # a streaming writer: sequential blocks, commits of full sections only (the plans
    # then take the path for every entry used, each sector once, in order)
    streaming = rng.random() < 0.5
    next_block = rng.randrange(nblocks)
    for _ in range(120):
        r = rng.random()
        if r < 0.55 and jw.free_sectors:
            n = rng.randint(1, min(3 * E, jw.free_sectors))
            if streaming:
                if next_block + n > nblocks:
                    next_block = 0
                sectors = [(next_block + k) * spb for k in range(n)]
                next_block += n + (rng.random() < 0.2)
            elif rng.random() < 0.5:     # sequential, as a streaming write
                b0 = rng.randrange(max(1, nblocks - n))
                sectors = [(b0 + k) * spb for k in range(n)]
            else:                        # a few hot blocks: duplicates
                sectors = [rng.randrange(8) * spb * rng.choice([1, 3]) for _ in range(n)]
            p0 = jw.free_section * E + jw.free_section_entry
            for k, s in enumerate(sectors):
                data = rng.randbytes(block_size)
                tag = rng.randbytes(ts)
                assert jw.add(s, data, tag) == 1
                slots[(p0 + k) % total] = (s, data, tag)
        elif r < 0.75:
            jw.commit(pad=rng.random() < (0.05 if streaming else 0.5), durable=False)
        elif r < 0.9:
            start = (jw.committed_section + sum(p.n_sections for p in jw.homing)) \
                % jw.n_sections
            n = jw.unplanned_sections
            plan = jw.plan_home()
            if plan is None:
                assert n == 0
                continue
            assert (plan.start, plan.n_sections) == (start, n)
            entries = []
            for k in range(n * E):
                p = (start * E + k) % total
                if slots[p] is not None:
                    entries.append((p, *slots[p]))
            want = _runs_model(entries, E, jw.spb, jw.block_bytes, ts)
            got = [(s, [bytes(x) for x in parts], bytes(tags)) for s, parts, tags in plan.runs]
            assert got == want
            assert plan.blocks == sum(len(b"".join(p)) for _, p, _ in want) // block_size
            if rng.random() < 0.3:       # withdrawn before it ran, planned again later
                jw.unplan(plan)
            else:
                planned.append((plan, range(start * E, (start + n) * E)))
        elif planned:
            plan, positions = planned.pop(0)
            jw.finish_home(plan)
            for p in positions:
                slots[p % total] = None
        # what a read finds: the newest entry of each sector still in the journal
        for s, p in jw.newest.items():
            assert slots[p] is not None and slots[p][0] == s
    t._failed = RuntimeError("test: the journal was driven by hand")
    dev.close()
