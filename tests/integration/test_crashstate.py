"""Power loss, not only kill -9 (lmdb only): the CI sample of the
crash-state tester in tests/crashstate (see its README.md; the long run
is tests/crashstate/run --states 1000).

test_crashstate_sample records a workload on a real Dovecot (LMTP
deliveries from three clients at once, IMAP APPEND, STORE, COPY, MOVE,
EXPUNGE, POP3, doveadm purge, doveadm lmdb compact) with every write,
sync and name operation of the mail processes recorded in one global
order together with the acknowledgements the clients got, checks that
replaying the record gives exactly the files the run left, then builds
DLMDB_CRASHSTATE_STATES (default 30) distinct states a power cut could
leave (only what was synced is sure to be on disk; the rest in part, in
any order, torn at sector boundaries; names durable only after a
directory fsync), spread over the operation kinds, and checks each in a
fresh user's mail root: every acknowledged message there once, byte for
byte, with its UID and POP3 UIDL, nothing acknowledged as expunged back,
flags as acknowledged (or, where the change was never synced, an older
acknowledged state: reported, not failed), no crash in the log,
`doveadm lmdb verify` clean, and a delivery afterwards gets a new UID.

test_crashstate_expunge_window checks every sync barrier inside the
first two EXPUNGEs and MOVEs of the same recording with nothing unsynced
on disk (bounded, no sampling).

test_crashstate_negative_control records the workload again with every
fsync and fdatasync a no-op that reports success (DLMDB_FI_ACTION=skip:
a storage that acknowledges before its data is durable) and requires the
tester to find states that lose acknowledged mail.

DLMDB_CRASHSTATE_SEED=n changes the workload's and the sampler's seed
(the interleaving of the concurrent clients varies from run to run).
"""

import atexit
import os
import shutil
import sys
import tempfile

import harness

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), 'crashstate'))

import tester  # noqa: E402

STATES = int(os.environ.get('DLMDB_CRASHSTATE_STATES', 30))
SEED = int(os.environ.get('DLMDB_CRASHSTATE_SEED', 1))
CONTROL_STATES = 6


def _workdir():
    d = tempfile.mkdtemp(prefix='dlmdb-crashstate-', dir='/tmp')
    os.chmod(d, 0o755)
    return d


def _cleanup(d):
    if os.environ.get('DLMDB_KEEP_TMP') != '1':
        shutil.rmtree(d, ignore_errors=True)


_RECORDING = {}


def _recording():
    """the workload, recorded once for the tests of this module"""
    if 'rec' not in _RECORDING:
        harness.Dovecot('lmdb').cleanup()       # ModuleMissing if not built
        d = _workdir()
        atexit.register(_cleanup, d)
        rec = tester.Recording.make(os.path.join(d, 'workload'), seed=SEED, scale=1,
                                    log=lambda s: print('  ' + s))
        problems = rec.self_check()
        assert not problems, 'the recorder missed calls:\n' + '\n'.join(problems[:20])
        print('  ' + rec.describe())
        _RECORDING['rec'] = rec
    return _RECORDING['rec']


def test_crashstate_sample():
    rec = _recording()
    report = tester.check_states(rec, STATES, seed=SEED, log=lambda s: None)
    print('\n'.join('  ' + line for line in report.text(max_failures=0).splitlines()[:12]))
    kinds = {op.kind for op in rec.ledger.ops if op.ack}
    assert set(report.kinds) == kinds, (sorted(report.kinds), sorted(kinds))
    assert report.states >= STATES * 0.9, report.text()
    assert report.failed == 0, report.text()


def test_crashstate_expunge_window():
    """Every sync barrier inside the first two EXPUNGEs and MOVEs, with
    nothing unsynced on disk: among them the moment LMDB has dropped the
    link durably and Dovecot's index has not yet recorded the expunge
    (Dovecot syncs neither the client's request nor the sync's own
    record; lmdb_sync_log_fsync makes the request durable before LMDB's
    commit). The message may be there or not, but whole: not as an
    index record without a link (without that fsync, the states at
    LMDB's commit fail: 'no body', POP3 can't start, verify fails)."""
    rec = _recording()
    cands = tester.sample.barrier_candidates(rec.model, rec.ledger, ('expunge', 'move'),
                                             ('synced',), 2)
    report = tester.check_states(rec, len(cands), seed=SEED, cands=cands,
                                 log=lambda s: None)
    print('  %d states, %d failed' % (report.states, report.failed))
    assert report.states > 0
    assert report.failed == 0, report.text()


def test_crashstate_negative_control():
    harness.Dovecot('lmdb').cleanup()
    d = _workdir()
    try:
        rec = tester.Recording.make(os.path.join(d, 'control'), seed=SEED, scale=1,
                                    skip_sync=True, log=lambda s: print('  ' + s))
        assert not rec.self_check()
        assert not any(ev.kind in ('fsync', 'fdatasync') and not ev.flags & 0x04
                       for ev in rec.events), 'a sync was made despite DLMDB_FI_ACTION=skip'
        report = tester.check_control(rec, CONTROL_STATES, seed=SEED, log=lambda s: None)
        print('  %d states, %d lost acknowledged mail' % (report.states,
                                                          report.lost_states()))
        assert report.lost_states() >= 1, \
            'the tester found no lost mail without syncs:\n' + report.text()
    finally:
        _cleanup(d)
