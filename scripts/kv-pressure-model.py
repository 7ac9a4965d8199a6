#!/usr/bin/env python3
"""Model of `bench throughput` under KV pressure on the H100 (docs/perf-notes.md).

64 requests of 512 prompt tokens generating 1024, 14B bf16 (192 KiB of KV per token), blocks of
16 tokens, 2047 usable GPU blocks (a third of the final demand), swapping to host memory. The
scheduler is engine_step.c's, step for step (decodes first in queue order, the last unscheduled
one preempted when a block is short, no admission in a step that preempted, swapped sequences
admitted with a 1% watermark and joining once their copy has landed); the policy is fcfs
(arrival order) or fair (least attained service). A step costs w(batch) + 79.6 ns per token of
context (attention at the measured 2.47 TB/s) + 52 us per prefill token (19,111 tok/s), plus
the copy-out of any sequence preempted in it (the forward waits for it). w is interpolated
between points given on the command line (ms at 1, 32 and 64 sequences). The memory bound is
the KV the steps hold over the cache: no schedule takes fewer steps.

usage: scripts/kv-pressure-model.py [W1 W32 W64]   (default 10.9 11.3 14.0)
"""
import math
import sys

BS, KV_TOKEN = 16, 196608
ATTN_MS, PREFILL_MS = 79.6e-6, 1 / 19.111
OUT_BPS, IN_BPS = 0.93 * 54.5e9, 0.92 * 48.5e9  # block copies as measured, CRC on the GPU


def step_ms(w, batch):
    pts = sorted(w.items())
    for (b0, t0), (b1, t1) in zip(pts, pts[1:]):
        if batch <= b1:
            return t0 + (t1 - t0) * (max(batch, b0) - b0) / (b1 - b0)
    return pts[-1][1]


class Seq:
    def __init__(self, i):
        self.id, self.nc, self.nout, self.blocks, self.ready, self.prio = i, 0, 0, 0, 0.0, 0


def run(w, blocks=2047, n=64, prompt=512, out=1024, budget=2048, fair=True):
    seqs = [Seq(i) for i in range(n)]
    key = (lambda s: (s.prio, s.id)) if fair else (lambda s: (0, s.id))
    running, swapped, loading, waiting = [], [], [], list(seqs)
    free, t, steps, held, preempt, done, stall = blocks, 0.0, 0, 0, 0, 0, 0.0

    def need(s, tokens):
        return max(0, math.ceil(tokens / BS) - s.blocks)

    while done < n:
        for s in [s for s in loading if s.ready <= t]:
            loading.remove(s)
            running.append(s)
        for q in (running, swapped, waiting):
            q.sort(key=key)
        batch, left, preempted = {}, budget, False
        for decode in (True, False):
            i = 0
            while i < len(running) and left > 0:
                r = running[i]
                todo = prompt + r.nout - r.nc
                if r.id in batch or decode != (todo == 1):
                    i += 1
                    continue
                take, ok = min(todo, left), True
                while need(r, r.nc + take) > free:
                    v = len(running) - 1
                    while running[v].id in batch:
                        v -= 1
                    vic = running.pop(v)
                    preempted, preempt = True, preempt + 1
                    free += vic.blocks
                    stall += vic.nc * KV_TOKEN / OUT_BPS * 1e3
                    vic.blocks, vic.ready = 0, t
                    swapped.append(vic)
                    if vic is r:
                        ok = False
                        break
                    if v < i:
                        i -= 1
                if not ok:
                    continue
                nb = need(r, r.nc + take)
                free, r.blocks = free - nb, r.blocks + nb
                batch[r.id], left, i = take, left - take, i + 1
        while not preempted and left > 0 and len(running) + len(loading) < n:
            s = swapped[0] if swapped else None
            if s and (not waiting or key(s) < key(waiting[0])):
                watermark = (blocks + 1) // 100 if running or loading else 0
                if math.ceil((prompt + s.nout) / BS) + watermark > free:
                    break
                s.blocks = math.ceil(s.nc / BS)
                free -= s.blocks
                s.ready = t + s.nc * KV_TOKEN / IN_BPS * 1e3
                swapped.remove(s)
                loading.append(s)
                continue
            if not waiting:
                break
            r = waiting[0]
            take = min(prompt + r.nout - r.nc, left)
            if need(r, r.nc + take) > free:
                break
            waiting.pop(0)
            nb = need(r, r.nc + take)
            free, r.blocks = free - nb, r.blocks + nb
            running.append(r)
            batch[r.id], left = take, left - take
        if not batch:
            t = min(s.ready for s in loading)
            continue
        live = [s for s in running if s.id in batch]
        prefill = sum(batch[s.id] for s in live if batch[s.id] > 1)
        ctx = sum(s.nc + batch[s.id] for s in live)
        t += step_ms(w, len(live)) + prefill * PREFILL_MS + ctx * ATTN_MS + stall
        stall, steps, held = 0.0, steps + 1, held + sum(s.blocks for s in live)
        for s in live:
            s.nc += batch[s.id]
            s.prio += 1 if fair else 0
            if s.nc == prompt + s.nout:
                s.nout += 1
                if s.nout == out:
                    running.remove(s)
                    free, s.blocks, done = free + s.blocks, 0, done + 1
    return t / 1e3, steps, held / blocks, preempt


def main():
    v = [float(x) for x in sys.argv[1:4]] if len(sys.argv) >= 4 else [10.9, 11.3, 14.0]
    w = {1: v[0], 32: v[1], 64: v[2]}
    base = run(w, blocks=100000)[0]
    print(f"w(1, 32, 64) = {v[0]}, {v[1]}, {v[2]} ms; unpressured {base:.2f} s")
    for fair in (False, True):
        t, steps, bound, pre = run(w, fair=fair)
        print(f"{'fair' if fair else 'fcfs'}: {t:.2f} s = {base / t:.3f} of unpressured, {steps} "
              f"steps ({steps / bound:.3f} of the memory bound {bound:.0f}), {pre} preemptions")


if __name__ == "__main__":
    main()
