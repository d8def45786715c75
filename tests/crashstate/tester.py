"""The crash-state tester: record, build states, check them, report.

    rec = tester.Recording.make(workdir, seed, scale, skip_sync)   # or .load(workdir)
    problems = rec.self_check()        # the recorder against the final files
    report = tester.check_states(rec, states=100, seed=1)
    print(report.text())
"""

import json
import os
import shutil
import time

import check
import fsmodel
import record
import sample
import workload
from ledger import Ledger


class Recording:
    def __init__(self, workdir):
        self.workdir = workdir
        with open(os.path.join(workdir, 'meta.json')) as f:
            self.meta = json.load(f)
        with open(os.path.join(workdir, 'snap-inodes.json')) as f:
            snap_inodes = json.load(f)
        self.events = record.read_record(os.path.join(workdir, 'rec'))
        self.model = fsmodel.Model(self.meta['root'], os.path.join(workdir, 'snapshot'),
                                   snap_inodes, self.events)
        self.ledger = Ledger.load(os.path.join(workdir, 'ledger.json'))

    @classmethod
    def make(cls, workdir, seed=1, scale=1, skip_sync=False, log=print):
        if os.path.exists(workdir):
            shutil.rmtree(workdir)
        workload.record(workdir, seed=seed, scale=scale, skip_sync=skip_sync, log=log)
        return cls(workdir)

    def self_check(self):
        """Replaying every recorded call (nothing lost) must give the files
        the workload left: otherwise the recorder missed something and no
        state built from it means anything."""
        problems = ['event on a file the model cannot place: %r' % e
                    for e in self.model.unknown]
        files, _d = self.model.build(self.model.max_seq, fsmodel.Choice('all', None))
        final = fsmodel.read_tree(os.path.join(self.workdir, 'final'),
                                  ignore=self.model.ignore)
        for rel in sorted(set(files) | set(final)):
            a, b = files.get(rel, 'missing'), final.get(rel, 'missing')
            if os.path.basename(rel) in self.model.ignore:
                if (a == 'missing') != (b == 'missing'):
                    problems.append('%s: replay %s, final %s' % (rel, a == 'missing',
                                                                 b == 'missing'))
            elif (a is fsmodel.DIR) != (b is fsmodel.DIR) or a != b:
                problems.append('%s: the replay (%s) differs from the final file (%s)' % (
                    rel, _size(a), _size(b)))
        return problems

    def describe(self):
        s = record.summary(self.events)
        syncs = sum(v for k, v in s.items() if k.startswith(('fsync', 'fdatasync')))
        writes = sum(v for k, v in s.items() if k.startswith(('write', 'commit')))
        return ('%d operations, %d recorded calls (%d writes, %d syncs, %d name operations)'
                % (len(self.ledger.ops), len(self.events) - len(self.model.marks), writes,
                   syncs, len(self.model.meta)))


def _size(x):
    if x is fsmodel.DIR:
        return 'directory'
    if isinstance(x, (bytes, bytearray)):
        return '%d bytes' % len(x)
    return str(x)


class Report:
    def __init__(self):
        self.kinds = {}           # kind -> {'states', 'failed', 'cats': {cat: n}}
        self.failures = []        # (candidate description, [finding], user)
        self.notes = {}           # non-failing finding category -> count
        self.log_errors = {}      # normalised log error -> count
        self.duplicates = 0
        self.lost = 0             # states that lost acknowledged mail
        self.states = 0
        self.seconds = 0.0

    def add(self, cand, res):
        k = self.kinds.setdefault(cand.op.kind, {'states': 0, 'failed': 0, 'cats': {}})
        k['states'] += 1
        self.states += 1
        fails = [f for f in res.findings if f.cat in check.FAIL]
        if any(f.cat == 'lost' for f in fails):
            self.lost += 1
        if fails:
            k['failed'] += 1
            for f in fails:
                k['cats'][f.cat] = k['cats'].get(f.cat, 0) + 1
            self.failures.append((cand.describe(), fails, res.user))
        for f in res.findings:
            if f.cat not in check.FAIL:
                self.notes[f.cat] = self.notes.get(f.cat, 0) + 1
        for line in res.log_errors:
            key = _normalise(line)
            self.log_errors[key] = self.log_errors.get(key, 0) + 1

    @property
    def failed(self):
        return sum(k['failed'] for k in self.kinds.values())

    def lost_states(self):
        return self.lost

    def text(self, max_failures=20):
        out = ['%-10s %7s %7s  %s' % ('operation', 'states', 'failed', 'failure categories')]
        for kind in sorted(self.kinds):
            k = self.kinds[kind]
            out.append('%-10s %7d %7d  %s' % (kind, k['states'], k['failed'], ', '.join(
                '%s %d' % kv for kv in sorted(k['cats'].items())) or '-'))
        out.append('%-10s %7d %7d  (%d duplicate states skipped, %.0fs)'
                   % ('total', self.states, self.failed, self.duplicates, self.seconds))
        if self.notes:
            out.append('reported, not failed: %s' % ', '.join(
                '%s %d' % kv for kv in sorted(self.notes.items())))
        if self.log_errors:
            out.append('log errors/warnings in checked states (normalised, count):')
            for line, n in sorted(self.log_errors.items(), key=lambda kv: -kv[1])[:15]:
                out.append('  %4d  %s' % (n, line[:200]))
        for desc, fails, user in self.failures[:max_failures]:
            out.append('FAILED %s (%s):' % (desc, user))
            for f in fails[:6]:
                out.append('    %s' % _one_line(repr(f)))
        return '\n'.join(out)

    def to_json(self):
        return dict(states=self.states, failed=self.failed, duplicates=self.duplicates,
                    seconds=round(self.seconds, 1), kinds=self.kinds, notes=self.notes,
                    log_errors=self.log_errors,
                    failures=[(d, [repr(f) for f in fs], u) for d, fs, u in self.failures])


def _one_line(text, limit=400):
    text = ' | '.join(part.strip() for part in text.splitlines() if part.strip())
    return text if len(text) <= limit else text[:limit] + '...'


# states kept with --keep-failed also when they show these
KEEP_ALSO = ('flag-rollback-synced', 'dovecot-panic', 'lmdb-error')


def _normalise(line):
    import re
    line = re.sub(r'^\S+ \S+ ', '', line)
    line = re.sub(r'cs\d{5}', 'USER', line)
    line = re.sub(r'<[^>]*>', '<>', line)
    line = re.sub(r'/tmp/dlmdb-[^/ ]+', '', line)
    line = re.sub(r'\d+', 'N', line)
    return line


def check_control(rec, states, seed=1, log=print):
    """The negative control's states: at the acknowledgement of a
    delivery or an APPEND, under the policies that keep only part of
    what was not synced (with every sync a no-op, that is everything
    after the snapshot)."""
    import random
    rng = random.Random(seed)
    ops = [op for op in rec.ledger.ops if op.kind in ('lmtp', 'append') and op.ack]
    policies = ('synced', 'prefix', 'subset', 'lmdb-behind', 'drop-one', 'torn')
    cands = [sample.Candidate(op, op.ack, 'ack', policies[i % len(policies)],
                              rng.getrandbits(32))
             for i, op in enumerate(ops * 4)]
    rng.shuffle(cands)
    # first the pessimistic states: nothing unsynced on disk, or data.mdb
    # without anything unsynced and Dovecot's index with all of it
    last = max(ops, key=lambda op: op.ack)
    cands = [sample.Candidate(last, last.ack, 'ack', p, 1)
             for p in ('synced', 'lmdb-behind')] + cands
    return check_states(rec, states, seed=seed, log=log, cands=cands)


def check_states(rec, states, seed=1, batch=25, kinds=None, keep_failed=None, log=print,
                 max_tries=None, cands=None):
    """Build and check up to `states` distinct crash states of rec (from
    sample.candidates(), or the given candidates)."""
    report = Report()
    t0 = time.monotonic()
    server = check.CheckServer(batch=batch)
    digests = set()
    pending = []              # (cand, res) until its batch's log was read
    tries = 0
    max_tries = max_tries or states * 20
    try:
        if cands is None:
            cands = sample.candidates(rec.model, rec.ledger, states, seed, kinds)
        for cand in cands:
            if report.states + len(pending) >= states or tries >= max_tries:
                break
            tries += 1
            choice = cand.choice()
            files, digest = rec.model.build(cand.c, choice)
            cand.note = choice.note
            if digest in digests:
                report.duplicates += 1
                continue
            digests.add(digest)
            keep = None
            if keep_failed:
                keep = os.path.join(keep_failed, 'state-%05d' % (server.n_users + 1))
            res = check.check_state(server, files, rec.ledger, cand.c, keep_dir=keep,
                                    model=rec.model)
            pending.append((cand, res))
            server.finish(res)
            if not server.in_batch:
                _settle(report, pending, keep_failed, log)
                pending = []
        server.close()
        _settle(report, pending, keep_failed, log)
    finally:
        if server.dc is not None:
            server.dc.cleanup()
    report.seconds = time.monotonic() - t0
    return report


def _settle(report, pending, keep_failed, log):
    for cand, res in pending:
        report.add(cand, res)
        keep = res.failed or any(f.cat in KEEP_ALSO for f in res.findings)
        if res.failed:
            log('  FAILED %s (%s): %s' % (cand.describe(), res.user, _one_line(
                '; '.join(repr(f) for f in res.findings if f.cat in check.FAIL))))
        if keep and keep_failed:
            with open(os.path.join(keep_failed, 'state-%s.txt' % res.user[2:]), 'w') as f:
                f.write('%s\n\nfindings:\n%s\n\nlog:\n%s\n' % (
                    cand.describe(), '\n'.join(repr(x) for x in res.findings),
                    '\n'.join(res.log)))
        elif keep_failed:
            shutil.rmtree(os.path.join(keep_failed, 'state-%s' % res.user[2:]),
                          ignore_errors=True)
    if pending:
        log('  %d states checked, %d failed' % (report.states, report.failed))
