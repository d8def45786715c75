"""doveadm lmdb verify -r: a wrong reference count is reported, repaired,
and a second verify is clean (lmdb only: it checks LMDB's own records)."""

import os
import struct

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
