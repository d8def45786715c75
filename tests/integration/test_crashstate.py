"""Power loss, not only kill -9 (lmdb only): the CI sample of the
crash-state tester in tests/crashstate (see its README.md; the long run
is tests/crashstate/run --states 1000).

test_crashstate_sample records a workload on a real Dovecot (LMTP
deliveries from three clients at once, IMAP APPEND, STORE, COPY, MOVE,
EXPUNGE, POP3, doveadm purge, doveadm lmdb compact) with every write,
sync and name operation of the mail processes recorded in one global
order together with the acknowledgements the clients got, checks that
replaying the record gives exactly the files the run left, then builds
DLMDB_CRASHSTATE_STATES (default 18: 2 per operation kind) distinct
states a power cut could leave (only what was synced is sure to be on
disk; the rest in part, in any order, torn at sector boundaries; names
durable only after a directory fsync), and checks each in a
fresh user's mail root: every acknowledged message there once, byte for
byte, with its UID and POP3 UIDL, nothing acknowledged as expunged back,
flags as acknowledged (or, where the change was never synced, an older
acknowledged state: reported, not failed), no crash in the log,
`doveadm lmdb verify` clean, and a delivery afterwards gets a new UID.

test_crashstate_expunge_window checks every moment a synced LMDB commit
becomes durable inside every MOVE and the first two EXPUNGEs of the
same recording, with nothing unsynced on disk (bounded, no sampling).

test_crashstate_unsaved_index_records builds one state by hand: the
index of a delivery whose LMDB commit a power cut lost (the long run
found it); the record must go at the first sync.

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

STATES = int(os.environ.get('DLMDB_CRASHSTATE_STATES', 18))
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
        assert not rec.meta['errors'], 'the workload went wrong: %r' % rec.meta['errors']
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
    """Every moment a synced LMDB commit becomes durable (its meta-page
    write) inside every MOVE and the first two EXPUNGEs, with nothing
    unsynced on disk: among them the moment LMDB has dropped the link
    durably and Dovecot's index has not yet recorded the expunge
    (Dovecot syncs neither the client's request nor the sync's own
    record; lmdb_sync_log_fsync makes the request durable before LMDB's
    commit). The message may be there or not, but whole: not as an
    index record without a link. Without that fsync, states at the
    meta-page write of the expunge commit fail ('no body', POP3 can't
    start, verify fails: 4 of 9 states in one run, 3 of 6 in another)."""
    rec = _recording()
    cands = tester.sample.barrier_candidates(rec.model, rec.ledger, ('move',),
                                             ('synced',), 99, only_lmdb=True)
    cands += tester.sample.barrier_candidates(rec.model, rec.ledger, ('expunge',),
                                              ('synced',), 2, only_lmdb=True)
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


def _msg(n):
    return ('From: a@example.com\r\nTo: testuser@example.com\r\nSubject: unsaved %d\r\n'
            'Message-ID: <unsaved-%d@crashstate.test>\r\n\r\nbody %d\r\n' % (n, n, n)).encode()


def test_crashstate_unsaved_index_records():
    """The state a power cut leaves when a save's LMDB commit was not yet
    flushed but the index records it wrote after it were (the flush comes
    after the index commit, outside the index lock, before the reply):
    data.mdb from before the delivery, the index from after it. The
    delivery was never acknowledged; its index record has no link and
    must go at the first sync: SELECT shows the three acknowledged
    messages, POP3 starts, verify is clean, and the next delivery gets a
    UID above the lost one. (Without the fix: a fourth message whose
    FETCH gives no body, POP3 '-ERR [SYS/TEMP]', verify exit 65.) Found
    by the long run (tests/crashstate/run, an LMTP delivery in flight
    under the 'lmdb-behind' policy)."""
    with harness.Dovecot('lmdb') as dc:
        root = dc.mail_dir('testuser')
        for n in (1, 2, 3):
            assert dc.lmtp_deliver(['testuser'], _msg(n)).all_ok()
        dc.stop()
        saved = os.path.join(os.path.dirname(root), 'data.mdb.before')
        shutil.copy2(os.path.join(root, 'data.mdb'), saved)
        dc.start()
        assert dc.lmtp_deliver(['testuser'], _msg(4)).all_ok()
        dc.stop()
        shutil.copy2(saved, os.path.join(root, 'data.mdb'))
        dc.start()

        imap = dc.imap()
        typ, data = imap.select('INBOX')
        assert typ == 'OK' and int(data[0]) == 3, (typ, data)
        got = harness.imap_fetch(imap, '1:*', '(BODY.PEEK[])')
        assert sorted(got) == [1, 2, 3], got
        for uid, d in got.items():
            assert d['BODY[]'].endswith(_msg(uid)), (uid, d)
        imap.logout()
        pop = dc.pop3()
        assert pop.stat()[0] == 3
        assert len(pop.uidl()[1]) == 3
        pop.quit()
        r = dc.doveadm('lmdb', 'verify', user='testuser', check=False)
        assert r.returncode == 0, r.stdout + r.stderr
        assert dc.lmtp_deliver(['testuser'], _msg(5)).all_ok()
        imap = dc.imap()
        imap.select('INBOX')
        got = harness.imap_fetch(imap, '1:*', '(BODY.PEEK[])')
        assert sorted(got) == [1, 2, 3, 5], got
        assert got[5]['BODY[]'].endswith(_msg(5))
        imap.logout()
        dc.wait_log('never committed to LMDB (UIDs 4..4')


def test_crashstate_index_lost_expunge():
    """The state a torn index log leaves: Dovecot drops the log file and
    falls back to dovecot.index, from before an acknowledged EXPUNGE
    whose link LMDB dropped for good (and before a delivery, whose link
    the sync adopts). The expunged message must not come back as a
    record without a link. (Without the check: SELECT shows it, FETCH
    gives no body, POP3 fails, verify exit 65.) Found by the long run
    ('torn' and 'subset' states of the index log, two MOVEs back)."""
    with harness.Dovecot('lmdb') as dc:
        for n in (1, 2, 3):
            assert dc.lmtp_deliver(['testuser'], _msg(n)).all_ok()
        imap = dc.imap()
        imap.select('INBOX')
        imap.logout()
        dc.stop()
        idx = os.path.join(dc.mail_dir('testuser'), 'mailboxes', 'INBOX', 'lmdb-Mails')
        saved = os.path.join(dc.mail_dir('testuser'), '..', 'index.before')
        shutil.copytree(idx, saved)
        dc.start()
        imap = dc.imap()
        imap.select('INBOX')
        typ, data = imap.uid('STORE', '2', '+FLAGS.SILENT', '(\\Deleted)')
        assert typ == 'OK', data
        typ, data = imap.uid('EXPUNGE', '2')
        assert typ == 'OK', data
        imap.logout()
        assert dc.lmtp_deliver(['testuser'], _msg(4)).all_ok()
        dc.stop()
        shutil.rmtree(idx)
        shutil.copytree(saved, idx)
        os.system('chown -R %d:%d %s' % (dc.uid, dc.gid, idx))
        dc.start()

        imap = dc.imap()
        typ, data = imap.select('INBOX')
        assert typ == 'OK', data
        got = harness.imap_fetch(imap, '1:*', '(BODY.PEEK[])')
        assert sorted(got) == [1, 3, 4], got
        for uid, d in got.items():
            assert d['BODY[]'].endswith(_msg(uid)), (uid, d)
        imap.logout()
        pop = dc.pop3()
        assert pop.stat()[0] == 3
        pop.quit()
        r = dc.doveadm('lmdb', 'verify', user='testuser', check=False)
        assert r.returncode == 0, r.stdout + r.stderr
        dc.wait_log('whose links are gone (UIDs 2..2')
