"""Choosing crash states: bounded, ALICE/CrashMonkey style, plus random
ones from a fixed seed.

A crash point is a value c of the global counter inside the window of
one operation (from its begin marker to its ack marker): the ack itself
(the server has just acknowledged: everything it acknowledged must
survive), the end of every sync barrier in the window (what the barrier
made durable must survive), and the begin and end of every other call in
the window (chosen at random). Each state pairs a crash point with a
persistence policy (fsmodel.Choice): the policies are taken in turn, so
that every operation kind sees each of them, and random ones draw their
choices from the seeded generator. States that build to files identical
to one already checked are skipped (and counted as duplicates).
"""

import random

import fsmodel

BOUNDED = ('synced', 'all', 'lmdb-behind', 'index-behind')
RANDOM = ('prefix', 'subset', 'torn', 'drop-one')


class Candidate:
    def __init__(self, op, c, where, policy, seed):
        self.op = op
        self.c = c
        self.where = where        # ack | barrier | call
        self.policy = policy
        self.seed = seed
        self.note = ''

    def choice(self):
        return fsmodel.Choice(self.policy, random.Random(self.seed))

    def describe(self):
        return 'op %s, c=%d (%s), policy %s%s' % (self.op, self.c, self.where, self.policy,
                                                  ' [%s]' % self.note if self.note else '')


def op_points(model, op):
    """{'ack': [...], 'barrier': [...], 'call': [...]} crash points in op's window"""
    lo = op.begin
    hi = op.ack if op.ack is not None else model.max_seq
    out = {'ack': [op.ack] if op.ack is not None else [], 'barrier': [], 'call': []}
    for sb, se in _barriers(model):
        if lo < se <= hi:
            out['barrier'].append(se)
    for ev_b, ev_e in _calls(model):
        for s in (ev_b, ev_e):
            if lo < s < hi:
                out['call'].append(s)
    return out


def _barriers(model):
    if not hasattr(model, '_barrier_cache'):
        lst = [b for syncs in model.syncs.values() for b in syncs]
        lst += [b for syncs in model.dir_syncs.values() for b in syncs]
        lst += [(op.seq_begin, op.seq_end) for ops in model.data.values() for op in ops
                if op.dsync]
        model._barrier_cache = sorted(lst)
    return model._barrier_cache


def _calls(model):
    if not hasattr(model, '_call_cache'):
        lst = [(op.seq_begin, op.seq_end) for ops in model.data.values() for op in ops]
        lst += [(op.seq_begin, op.seq_end) for op in model.meta]
        model._call_cache = sorted(lst)
    return model._call_cache


def candidates(model, ledger, n, seed, kinds=None):
    """An endless-ish stream of Candidate, operation kinds in turn (so
    that any prefix of n is spread evenly), bounded policies first at
    the ack and barrier points, random ones after."""
    rng = random.Random(seed)
    ops_by_kind = {}
    for op in ledger.ops:
        if op.begin is None or (kinds and op.kind not in kinds):
            continue
        ops_by_kind.setdefault(op.kind, []).append(op)
    points = {op.id: op_points(model, op) for ops in ops_by_kind.values() for op in ops}
    order = sorted(ops_by_kind)
    plans = {k: _kind_plan(ops_by_kind[k], points, rng) for k in order}
    while plans:
        for k in list(order):
            try:
                yield next(plans[k])
            except StopIteration:
                order.remove(k)
                del plans[k]


def _kind_plan(ops, points, rng):
    # bounded: every op's ack and a barrier of its window under every
    # policy, in random order; then random points of the window
    combos = [(op, where, policy) for op in ops for where in ('ack', 'barrier')
              for policy in BOUNDED + RANDOM if points[op.id][where]]
    rng.shuffle(combos)
    for op, where, policy in combos:
        yield Candidate(op, rng.choice(points[op.id][where]), where, policy,
                        rng.getrandbits(32))
    for _round in range(200):
        for op in ops:
            for policy in BOUNDED + RANDOM:
                where = rng.choice(('call', 'call', 'barrier', 'ack'))
                pts = points[op.id][where] or points[op.id]['call'] or points[op.id]['ack']
                if pts:
                    yield Candidate(op, rng.choice(pts), where, policy, rng.getrandbits(32))


def lmdb_barriers(model):
    """the moments a synced LMDB commit becomes durable: the ends of its
    meta-page writes, the only writes made through O_DSYNC (a commit
    without a sync of its own becomes durable at a later fdatasync)"""
    return {op.seq_end for ops in model.data.values() for op in ops if op.dsync}


def barrier_candidates(model, ledger, kinds, policies, max_ops, only_lmdb=False):
    """Exhaustive over a few operations: every sync barrier inside the
    window of the first max_ops operations of each kind (only_lmdb: only
    those that make a synced LMDB commit durable), under each policy (the
    windows where a commit is durable and what follows it is not
    yet)."""
    out = []
    keep = lmdb_barriers(model) if only_lmdb else None
    for kind in kinds:
        ops = [op for op in ledger.ops if op.kind == kind and op.begin is not None]
        for op in ops[:max_ops]:
            for c in sorted(set(op_points(model, op)['barrier'])):
                if keep is not None and c not in keep:
                    continue
                for policy in policies:
                    out.append(Candidate(op, c, 'barrier', policy, c))
    return out
