"""doveadm lmdb verify -r: a wrong reference count is reported, repaired,
and a second verify is clean (lmdb only: it checks LMDB's own records)."""

import os
import subprocess

import harness

USER = 'testuser'


def set_refcount(env_dir: str, refcount: int) -> None:
    """Rewrite every body record's reference count with the LMDB tools
    (the server must be stopped). A body record value starts with
    version (1 byte), state (1), reserved (2), refcount (4, big-endian):
    docs/schema.md."""
    dump = subprocess.run(['mdb_dump', '-s', 'bodies', env_dir],
                          capture_output=True, text=True, check=True).stdout
    lines = dump.splitlines()
    start = lines.index('HEADER=END') + 1
    out = lines[:start]
    body = lines[start:]
    for i, line in enumerate(body):
        # key and value lines alternate until DATA=END
        if line == 'DATA=END' or i % 2 == 0:
            out.append(line)
            continue
        value = line.strip()
        out.append(' ' + value[:8] + '%08x' % refcount + value[16:])
    subprocess.run(['mdb_load', '-s', 'bodies', env_dir], input='\n'.join(out) + '\n',
                   text=True, check=True, capture_output=True)


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
        assert 'fixed 1 reference counts' in v.stderr, (v.stdout, v.stderr)

        v = dc.doveadm('lmdb', 'verify', user=USER, check=False)
        assert v.returncode == 0 and v.stdout.splitlines()[1:] == [], v
        # the message still reads back after the repair
        imap = dc.imap(USER)
        imap.select('INBOX')
        typ, data = imap.fetch('1', '(BODY.PEEK[TEXT])')
        assert typ == 'OK' and b'body one' in data[0][1], data
        imap.logout()
