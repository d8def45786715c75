"""A save is acknowledged only once LMDB has it on disk (issue "Trust",
item 1e).

The link transaction of a save is committed without its meta-page flush
(under the index lock), and commit_post flushes it (mdb_env_sync) before
the caller acknowledges. A failed flush used to be logged while the save
still answered 250. With tests/tools/fault-inject.c preloaded into the
lmtp process, the flush fails: the delivery must answer 451, and the one
before it (the commit's own data flush) as well.
"""

import os
import shutil
import tempfile

import harness
import test_compact

MSG = (b'From: a@example.com\r\nTo: testuser@example.com\r\n'
       b'Subject: sync\r\nMessage-ID: <%s@dlmdb.test>\r\n\r\nbody\r\n')


def instance(so, logdir, **fault):
    """A Dovecot whose lmtp processes (one per delivery) run with the
    injector; fault: kind, nth, action."""
    dc = harness.Dovecot('lmdb', extra='')
    env = {'LD_PRELOAD': so, 'DLMDB_FI_PROG': 'lmtp',
           'DLMDB_FI_PREFIX': dc.mail_dir(),
           'DLMDB_FI_LOG': os.path.join(logdir, 'events.log')}
    for k, v in fault.items():
        env['DLMDB_FI_' + k.upper()] = str(v)
    dc.extra = ('import_environment = TZ CORE_OUTOFMEM CORE_ERROR LISTEN_PID '
                'LISTEN_FDS %s\n' % ' '.join('%s=%s' % kv for kv in env.items()) +
                'service lmtp {\n  service_count = 1\n}\n')
    return dc


def events(logdir):
    path = os.path.join(logdir, 'events.log')
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [l.split() for l in f if l.strip()]


def test_failed_flush_fails_the_save():
    logdir = tempfile.mkdtemp(prefix='dlmdb-fi-', dir='/tmp')
    try:
        os.chmod(logdir, 0o777)
        _failed_flush(logdir)
    finally:
        shutil.rmtree(logdir, ignore_errors=True)


def _failed_flush(logdir):
    so = test_compact.build_injector(logdir)

    def prepare(dc):
        # the environment and INBOX exist before the delivery (doveadm
        # isn't preloaded: DLMDB_FI_PROG=lmtp)
        dc.doveadm('mailbox', 'status', 'messages', 'INBOX', user='testuser')
        if os.path.exists(os.path.join(logdir, 'events.log')):
            os.unlink(os.path.join(logdir, 'events.log'))

    # a dry run: which fdatasync calls does one delivery make?
    with instance(so, logdir) as dc:
        prepare(dc)
        r = dc.lmtp_deliver('testuser', MSG % b'dry')
        assert r.all_ok(), r
    syncs = [e for e in events(logdir) if e[1] == 'fdatasync']
    assert len(syncs) >= 2, events(logdir)

    # the last one is commit_post's flush, the one before it the commit's
    for nth, what in ((len(syncs), 'flush after the commit'),
                      (len(syncs) - 1, 'flush inside the commit')):
        with instance(so, logdir, kind='fdatasync', nth=nth, action='fail',
                      errno='EIO') as dc:
            prepare(dc)
            r = dc.lmtp_deliver('testuser', MSG % b'faulted')
            assert r.status == {'testuser': 451}, (what, r)
            hits = [e for e in events(logdir) if e[3] == 'fail']
            assert hits, (what, events(logdir))
            log = dc.wait_log('Input/output error')
            assert 'mdb_' in log and 'Input/output error' in log, (what, log[-2000:])
            # whatever the refused save left is consistent (a flush that
            # failed after the commit leaves the mail in: it may appear,
            # the sender retries; README "Crashes")
            v = dc.doveadm('lmdb', 'verify', user='testuser', check=False)
            assert v.returncode == 0, (what, v.stdout, v.stderr)


def test_save_outlived_by_pending_grace():
    """A save that takes longer than lmdb_pending_grace (here 0) has its
    body freed by a purge while its APPEND literal is still arriving. The
    save fails (NO), the log says why in words (it used to print an error
    string nobody had set: garbage from the data stack), nothing is left
    behind and the mailbox goes on working."""
    import socket
    import time
    dc = harness.Dovecot('lmdb', extra='plugin {\n  lmdb_pending_grace = 0\n}\n')
    with dc:
        assert dc.lmtp_deliver('testuser', MSG % b'before').all_ok()
        body = (MSG % b'big') + b'x' * (3 * 1024 * 1024) + b'\r\n'
        s = socket.create_connection(('127.0.0.1', dc.ports['imap']), timeout=60)
        f = s.makefile('rb')
        f.readline()
        s.sendall(b'a LOGIN testuser testpass\r\n')
        assert f.readline().startswith(b'a OK')
        s.sendall(b'b APPEND INBOX {%d}\r\n' % len(body))
        assert f.readline().startswith(b'+')
        half = len(body) // 2
        s.sendall(body[:half])
        # the first chunk groups are in LMDB as a PENDING body by now
        time.sleep(2)
        dc.doveadm('purge', user='testuser')
        s.sendall(body[half:] + b'\r\n')
        resp = f.readline()
        s.sendall(b'c LOGOUT\r\n')
        s.close()
        assert resp.startswith(b'b NO'), resp
        log = dc.log()
        assert 'was freed before its save finished' in log, log[-3000:]
        assert dc.lmtp_deliver('testuser', MSG % b'after').all_ok()
        r = dc.doveadm('lmdb', 'verify', user='testuser', check=False)
        assert r.returncode == 0, r.stdout + r.stderr
        c = dc.imap('testuser')
        typ, data = c.select('INBOX')
        assert typ == 'OK' and data[0] == b'2', data
        c.logout()
