"""Stress: imaptest-like load (stress.py: 10 clients on one user, a
weighted mix of SELECT/STATUS/APPEND/FETCH/STORE/EXPUNGE/COPY/MOVE/
CREATE/DELETE/RENAME/LIST/IDLE, LMTP deliveries alongside) for
DLMDB_STRESS_SECS seconds (default 25) per variant, with and without
LOGOUT, vsz_limit 4G; sdbox runs as the control. Each asserts: no failed
command, no dropped connection, no Error/Panic/Fatal in the log, and the
exact final state (every acknowledged APPEND, COPY, MOVE and LMTP delivery
not expunged by the run is there, nothing expunged is back, nothing else is
there).

test_open_never_waits_for_list_lock is the deterministic form of the
deadlock imaptest found on lmdb (Dovecot opens mailboxes while holding the
list index lock, mailbox_create() holds the list lock while it waits for the
list index lock, so opening a mailbox must never wait for the list lock).

test_stress_default_vsz runs lmdb under Dovecot's default vsz_limit (256M)
with large messages: the address space then bounds data.mdb. Expunged
bodies are freed with their last link (a stream keeps its own snapshot),
so data.mdb holds the live mail, not everything that went through.
"""

import fcntl
import os
import socket
import threading
import time

import harness
import stress

SECS = float(os.environ.get('DLMDB_STRESS_SECS', 25))
USER = 'testuser'

# Dovecot log lines above Info that a stress run accepts, per driver. Keep
# this explicit: everything else is a finding.
ALLOWED_LOG = {'lmdb': [], 'sdbox': []}


def _stress(driver, logout, vsz='4G', **kw):
    """One stress run; returns (result, problems, log errors, instance)."""
    with harness.Dovecot(driver, extra=stress.dovecot_config(vsz)) as dc:
        cfg = stress.Config(dc.ports['imap'], dc.ports['lmtp'], clients=10,
                            duration=SECS, seed=kw.pop('seed', 1), logout=logout,
                            lmtp_rate=kw.pop('lmtp_rate', 2), **kw)
        res = stress.Run(cfg).run()
        # a failed run's bookkeeping has holes (a dropped EXPUNGE's VANISHED)
        problems = res.verify() if not res.failures else []
        dc.stop()
        errs = [l for l in dc.log_errors(include_warnings=False)
                if not any(a in l for a in ALLOWED_LOG[driver])]
        print('  %s: %s' % (driver, res.summary().splitlines()[0]))
        return res, problems, errs, dc


def _assert_clean(res, problems, errs):
    assert not errs, 'Dovecot log has errors:\n' + '\n'.join(errs[:20])
    assert not res.failures, '%d failed commands, first:\n%s' % (
        len(res.failures), '\n'.join('t=%.1fs client %s %s: %s\n    %s' % (
            f['t'], f['client'], f['cmd'], f['reply'],
            '\n    '.join(x.decode('utf-8', 'replace') for x in f['trace'][-6:]))
            for f in res.failures[:5]))
    assert not problems, 'final state differs:\n' + '\n'.join(problems[:30])
    assert res.ops > 500 * SECS / 25, 'only %d commands: the run hardly ran' % res.ops
    assert res.counts.get('APPEND', {}).get('ok', 0) > 0, res.summary()


@harness.drivers('lmdb', 'sdbox')
def test_stress_keep_sessions(driver):
    """logout=0: ten sessions for the whole run."""
    _assert_clean(*_stress(driver, logout=0)[:3])


@harness.drivers('lmdb', 'sdbox')
def test_stress_logout(driver):
    """Every session ends with LOGOUT after about 10 commands and the
    client logs in again (imaptest's default)."""
    _assert_clean(*_stress(driver, logout=10, seed=2)[:3])


def test_stress_verify_catches():
    """The final-state check is exact: a lost message, an expunged one back,
    a duplicated delivery, an unknown one, a wrong Message-ID, a lost LMTP
    delivery and a mailbox gone without a DELETE are each reported, and the
    expected state passes (no Dovecot needed)."""
    cfg = stress.Config(imap_port=0)
    led = stress.Ledger()
    res = stress.Result(cfg, led)
    led.instances = {(10, 1): '<a>', (10, 2): '<b>', (10, 3): '<c>', (20, 1): '<a>',
                     (30, 1): '<d>', (40, 1): '<e>'}
    led.vanished = {(10, 3)}
    led.vname = {10: 'INBOX', 20: 'Folder1', 30: 'Scratch0a', 40: 'Scratch1b'}
    led.deleted_v = {30}
    led.appended = {'<a>', '<b>', '<c>', '<d>', '<e>'}
    led.lmtp_acked = {'<l1>', '<l2>'}
    good = {'INBOX': (10, {1: '<a>', 2: '<b>', 7: '<l1>', 8: '<l2>'}),
            'Folder1': (20, {1: '<a>'}), 'Folder2': (50, {}),
            'Scratch1a': (40, {1: '<e>'})}       # renamed from Scratch1b: kept
    assert res.verify(good) == []

    def bad(change, what):
        state = {k: (v, dict(m)) for k, (v, m) in good.items()}
        change(state)
        problems = res.verify(state)
        assert len(problems) == 1 and what in problems[0], (what, problems)
    bad(lambda s: s['INBOX'][1].pop(2), 'missing')
    bad(lambda s: s['INBOX'][1].update({3: '<c>'}), 'expunged but is back')
    bad(lambda s: s['INBOX'][1].update({2: '<x>'}), 'expected <b>')
    bad(lambda s: s['Folder2'][1].update({1: '<zz>'}), 'never created')
    bad(lambda s: s['Folder2'][1].update({1: '<l1>'}), 'is there 2 times')
    bad(lambda s: s['INBOX'][1].pop(8), 'LMTP delivery <l2>')
    bad(lambda s: s.pop('Scratch1a'), 'nobody deleted')


def _lock_file(dc, path):
    """Take the fcntl write lock Dovecot's mailbox_list_lock() takes (the
    file exists, belongs to the mail user and is locked: Dovecot waits)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    os.fchown(fd, dc.uid, dc.gid)
    fcntl.lockf(fd, fcntl.LOCK_EX)
    return fd


@harness.drivers('lmdb', 'sdbox')
def test_open_never_waits_for_list_lock(driver):
    """A CREATE holds the mailbox list lock from its mkdir until its index
    exists. Another session opening that half-created mailbox (a STATUS, or
    Dovecot's own list index sync, which opens every new mailbox to read its
    GUID while it holds the list index lock) must not wait for the list
    lock: the creator waits for the list index lock next, and the two
    processes would deadlock (imaptest: 'fcntl(dovecot.list.index.log)
    locking failed: Resource deadlock avoided', or the same for
    mailboxes.lock). It initialises the index itself, as dbox does, and the
    mailbox works."""
    with harness.Dovecot(driver) as dc:
        root = dc.mail_dir(USER)
        imap = dc.imap()        # the mail root and the list index exist
        assert imap.create('Other')[0] == 'OK'
        imap.logout()
        maildir = {'lmdb': 'lmdb-Mails', 'sdbox': 'dbox-Mails'}[driver]
        half = os.path.join(root, 'mailboxes', 'Half')
        for d in (half, os.path.join(half, maildir)):
            os.mkdir(d, 0o700)
            os.chown(d, dc.uid, dc.gid)
        lock_path = os.path.join(root, 'mailboxes.lock')
        list_log = open(os.path.join(root, 'dovecot.list.index.log'), 'rb+')
        fd = _lock_file(dc, lock_path)
        try:
            # Dovecot gives up on the list lock after 60 s; 5 s is plenty
            s = socket.create_connection(('127.0.0.1', dc.ports['imap']), timeout=5)
            f = s.makefile('rb')
            f.readline()
            s.sendall(b'a LOGIN testuser testpass\r\nb STATUS Half (MESSAGES UIDVALIDITY)\r\n')
            time.sleep(1.5)
            # now, as the creator would next (mailbox_create() ->
            # mailbox_list_index_refresh_later()), the list index lock
            got = {}

            def lock_list_index():
                try:
                    fcntl.lockf(list_log, fcntl.LOCK_EX)
                    got['ok'] = True
                except OSError as e:
                    got['error'] = e
            t = threading.Thread(target=lock_list_index, daemon=True)
            t.start()
            t.join(10)
            assert 'error' not in got, (
                'the kernel reports a deadlock (%s): the session holds the list '
                'index lock and waits for the list lock we hold' % got['error'])
            assert got.get('ok'), 'the list index lock was not granted in 10 s'
            fcntl.lockf(list_log, fcntl.LOCK_UN)
            t0 = time.monotonic()
            lines = []
            try:
                while not lines or not lines[-1].startswith(b'b '):
                    lines.append(f.readline())
                    if not lines[-1]:
                        break
            except socket.timeout:
                pass
            waited = time.monotonic() - t0
            s.close()
            assert lines and lines[-1].startswith(b'b OK'), (
                'STATUS of a mailbox being created waited for the list lock '
                '(%.1fs, no reply while the lock was held): %r' % (waited, lines))
        finally:
            fcntl.lockf(fd, fcntl.LOCK_UN)
            os.close(fd)
            os.unlink(lock_path)
            list_log.close()
        assert b'MESSAGES 0' in lines[-2], lines
        imap = dc.imap()
        assert imap.create('Half')[0] == 'NO'          # it exists now
        typ, data = imap.append('Half', None, None, b'Subject: h\r\nMessage-ID: <h@x>\r\n\r\nh\r\n')
        assert typ == 'OK', data
        typ, data = imap.select('Half')
        assert typ == 'OK' and data == [b'1'], (typ, data)
        imap.logout()
        if driver == 'lmdb':
            dc.doveadm('lmdb', 'verify', user=USER)
        dc.assert_no_log_errors()


# APPEND and expunge heavy: far more mail goes through than stays
CHURN = {'append': 30, 'store_deleted': 20, 'expunge': 12, 'fetch': 12, 'status': 5,
         'create': 1, 'delete': 1, 'rename': 1, 'list': 1, 'idle': 1}


def test_stress_default_vsz():
    """Dovecot's default vsz_limit (256M) under a load that expunges nearly
    all it appends (about 220 KB messages, about 10 MB/s through, roughly 10
    kept per mailbox): data.mdb must stay within what a 256M process can
    map. Before bodies went with their last link they waited
    lmdb_dead_grace (24 h): at about 200 MB (some 20 s in) APPEND failed
    with 'needs an LMDB map of more than 214147072 bytes, which this
    process's address space limit of 268435456 bytes doesn't leave room
    for', and SELECT, STATUS and MOVE too (their sync writes to LMDB),
    3,713 failed commands in one run. It prints data.mdb's size over time
    and the first failed command."""
    sizes = []
    holder = {}

    def monitor(t):
        try:
            sizes.append((t, os.path.getsize(os.path.join(holder['dir'], 'data.mdb'))))
        except (KeyError, OSError):
            pass
    with harness.Dovecot('lmdb', extra=stress.dovecot_config('')) as dc:
        holder['dir'] = dc.mail_dir(USER)
        cfg = stress.Config(dc.ports['imap'], dc.ports['lmtp'], clients=10,
                            duration=max(SECS, 40), seed=3, logout=0, lmtp_rate=2,
                            size_profile='large', max_messages=10, weights=CHURN,
                            monitor=monitor)
        res = stress.Run(cfg).run()
        problems = res.verify() if not res.failures else []
        dc.stop()
        errs = dc.log_errors(include_warnings=False)
    print('  ' + res.summary().splitlines()[0])
    print('  data.mdb: ' + ', '.join('%.0fs %.0fM' % (t, b / 2**20) for t, b in sizes[::3]))
    first = res.first_failure
    if first:
        at = [b for t, b in sizes if t <= first['t']]
        print('  first failure at %.1fs (data.mdb %.0fM): %s %s'
              % (first['t'], (at[-1] if at else 0) / 2**20, first['cmd'], first['reply']))
    _assert_clean(res, problems, errs)
