"""doveadm lmdb verify -r: a wrong reference count is reported, repaired,
and a second verify is clean (lmdb only: it checks LMDB's own records)."""

import os
import struct
import subprocess
import time

import harness
import lmdbrec

USER = 'testuser'


def set_refcount(env_dir: str, refcount: int) -> None:
    """Rewrite every body record's reference count, with a valid checksum
    (the server must be stopped). A body record's fields start with state
    (1 byte), reserved (2), refcount (4, big-endian): docs/schema.md."""
    env = lmdbrec.open_env(env_dir)
    try:
        db = env.open_db(b'bodies', create=False)
        with env.begin(db=db, write=True) as txn:
            for key, val in list(txn.cursor()):
                f = lmdbrec.unseal(bytes(val))
                f = f[:3] + struct.pack('>I', refcount) + f[7:]
                txn.put(bytes(key), lmdbrec.seal(lmdbrec.TYPE_BODY, bytes(key), f))
    finally:
        env.close()


def test_lmdb_verify_repairs_refcounts():
    with harness.Dovecot('lmdb') as dc:
        dc.start()
        r = dc.lmtp_deliver([USER], b'From: a@example.com\nSubject: one\n\nbody one\n')
        assert r.status == {USER: 250}
        dc.stop()
        env_dir = os.path.join(dc.home(USER), 'lmdb')
        set_refcount(env_dir, 3)
        dc.start()

        v = dc.doveadm('lmdb', 'verify', user=USER, check=False)
        assert v.returncode != 0, v
        assert 'refcount 3 but 1 links' in v.stdout, v.stdout

        v = dc.doveadm('lmdb', 'verify', '-r', user=USER, check=False)
        assert 'refcount 3 but 1 links (fixed)' in v.stdout, (v.stdout, v.stderr)
        assert 'lmdb verify: 1 repaired, 0 quarantined' in v.stderr, (v.stdout, v.stderr)

        v = dc.doveadm('lmdb', 'verify', user=USER, check=False)
        assert v.returncode == 0 and v.stdout.splitlines()[1:] == [], v
        # the message still reads back after the repair
        imap = dc.imap(USER)
        imap.select('INBOX')
        typ, data = imap.fetch('1', '(BODY.PEEK[TEXT])')
        assert typ == 'OK' and b'body one' in data[0][1], data
        imap.logout()


def verify_r_paused(dc, break_at: str, during) -> tuple[str, str]:
    """`doveadm lmdb verify -r` stopped by gdb at break_at (a function of
    the doveadm plugin) while during() runs: what a delivery or a COPY
    does while verify -r works on a live user, at one chosen moment."""
    paused = os.path.join(dc.dir, 'verify-paused')
    resume = os.path.join(dc.dir, 'verify-resume')
    for f in (paused, resume):
        if os.path.exists(f):
            os.unlink(f)
    wait = 'shell touch %s; while [ ! -e %s ]; do sleep 0.1; done' % (paused, resume)
    # the binary itself (gdb runs no wrapper script), instrumented with
    # the wrapper's environment: set in gdb, not for gdb
    env = harness.direct_env(leaks=False)
    cmd = [os.environ.get('DOVEADM_BINARY', '/usr/bin/doveadm'), '-c', dc.conf_path, 'lmdb', 'verify', '-u', USER, '-r']
    gdb = ['gdb', '-q', '-batch', '-ex', 'set breakpoint pending on']
    for k, v in env.items():
        gdb += ['-ex', 'set environment %s=%s' % (k, v)]
    gdb += ['-ex', 'break ' + break_at, '-ex', 'run', '-ex', wait,
            '-ex', 'continue', '--args'] + cmd
    p = subprocess.Popen(dc._doveadm_with_build_plugins(gdb), cwd=dc.dir,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not os.path.exists(paused):
            if p.poll() is not None or time.monotonic() > deadline:
                out, err = p.communicate(timeout=10)
                raise AssertionError('doveadm never reached %s:\n%s\n%s'
                                     % (break_at, out, err))
            time.sleep(0.1)
        during()
        open(resume, 'w').close()
        out, err = p.communicate(timeout=120)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert 'Breakpoint 1,' in out + err, 'gdb never stopped at %s:\n%s\n%s' % (break_at, out, err)
    return out, err


def check_all_readable(dc, want: list[tuple[int, str]]):
    """After a purge, every message is there and its body reads back,
    and a second verify finds nothing."""
    assert dc.message_ids(USER) == want, (dc.message_ids(USER), want)
    p = dc.doveadm('purge', user=USER, check=False)
    assert p.returncode == 0, p
    f = dc.doveadm('fetch', 'uid body', 'mailbox', 'INBOX', 'all', user=USER, check=False)
    assert f.returncode == 0, f
    for uid, mid in want:
        assert 'body of %s' % mid in f.stdout, (uid, mid, f.stdout, f.stderr)
    v = dc.doveadm('lmdb', 'verify', user=USER, check=False)
    assert v.returncode == 0, 'second verify: %s %s' % (v.stdout, v.stderr)


def mail(mid: str) -> bytes:
    return ('From: a@example.com\nSubject: %s\nMessage-ID: %s\n\nbody of %s\n'
            % (mid, mid, mid)).encode()


def test_verify_repair_while_delivering():
    """verify -r on a live user: a message delivered after verify listed
    the links (at its body pass, and before it compares the indexes) is
    neither counted out ('refcount 1 but 0 links', its body freed by the
    next purge) nor expunged as an 'index record without a link'."""
    for break_at in ('lmdb_verify_bodies', 'lmdb_verify_mailboxes'):
        with harness.Dovecot('lmdb') as dc:
            dc.start()
            assert dc.lmtp_deliver([USER], mail('<one@x>')).status == {USER: 250}

            def deliver():
                r = dc.lmtp_deliver([USER], mail('<two@x>'))
                assert r.status == {USER: 250}, r
            out, err = verify_r_paused(dc, break_at, deliver)
            print('%s: verify -r said:\n%s' % (break_at, out))
            assert 'refcount' not in out and 'without' not in out, (break_at, out)
            check_all_readable(dc, [(1, '<one@x>'), (2, '<two@x>')])


def test_verify_repair_while_copying():
    """A COPY while verify -r runs: the body then has two links, and -r
    must not set its reference count back to one (expunging one copy
    would free the other's body)."""
    with harness.Dovecot('lmdb') as dc:
        dc.start()
        assert dc.lmtp_deliver([USER], mail('<one@x>')).status == {USER: 250}

        def copy():
            c = dc.imap(USER)
            c.select('INBOX')
            typ, data = c.uid('COPY', '1', 'INBOX')
            assert typ == 'OK', data
            c.logout()
        out, err = verify_r_paused(dc, 'lmdb_verify_bodies', copy)
        print('verify -r said:\n' + out)
        assert 'refcount' not in out, out
        # expunge the original: the copy's body must stay
        c = dc.imap(USER)
        c.select('INBOX')
        c.uid('STORE', '1', '+FLAGS.SILENT', r'(\Deleted)')
        typ, data = c.uid('EXPUNGE', '1')
        assert typ == 'OK', data
        c.logout()
        check_all_readable(dc, [(2, '<one@x>')])
