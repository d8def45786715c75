"""Damage stays with the damaged message (issue "Trust", items 1c, 1f, 1g,
1h, 1m, and the checksums of item 3).

Each test damages one record of a real user's environment with the test's
own reading of docs/schema.md (lmdbrec.py: a flipped bit, so its checksum
fails; or a crafted record with a valid checksum and a hostile field), and
then checks that the other messages, new deliveries, SELECT and sync go on
working, that the damage is logged and reported by `doveadm lmdb verify`,
and that `verify -r` repairs or quarantines it.
"""

import hashlib
import os
import re
import shutil
import time

import harness
import lmdbpages
import lmdbrec
from harness import pop3_multiline

NO_RECEIVED = 'lmtp_add_received_header = no\n'
CFG = NO_RECEIVED + 'plugin {\n  lmdb_autopurge_interval = 0\n}\n'
PREFIX = b'Return-Path: <sender@example.com>\r\nDelivered-To: testuser\r\n'


def msg(i, lines=3):
    return ('From: a@example.com\r\nTo: testuser@example.com\r\n'
            'Subject: damage %d\r\nMessage-ID: <damage-%d@dlmdb.test>\r\n\r\n' % (i, i) +
            ''.join('line %d of %d\r\n' % (n, i) for n in range(lines))).encode()


def deliver(dc, msgs):
    for m in msgs:
        r = dc.lmtp_deliver('testuser', m)
        assert r.all_ok(), r


def ok(res):
    typ, data = res
    assert typ == 'OK', data
    return data


def fetch_bodies(imap):
    typ, data = imap.uid('FETCH', '1:*', '(BODY.PEEK[])')
    assert typ == 'OK', data
    return harness.imap_fetch(imap, '1:*', '(BODY.PEEK[])')


def verify(dc, repair=False):
    args = ['lmdb', 'verify'] + (['-r'] if repair else [])
    return dc.doveadm(*args, user='testuser', check=False)


def with_env(dc, func):
    """Run func(env) on the user's environment, Dovecot's processes idle:
    LMDB's lock keeps writers apart."""
    env = lmdbrec.open_env(dc.mail_dir())
    try:
        return func(env)
    finally:
        env.close()


def test_damaged_body_record_is_contained():
    """Expunging a message whose body record is damaged, and changing its
    flags, used to fail the sync for good: every SELECT and delivery of
    the user failed after."""
    with harness.Dovecot('lmdb', extra=CFG) as dc:
        deliver(dc, [msg(i) for i in range(3)])
        inbox = lambda env: lmdbrec.mailbox_guid(env, 'INBOX')  # noqa: E731

        def damage(env):
            guid = inbox(env)
            body_id = lmdbrec.link_body_id(env, guid, 2)
            lmdbrec.flip(env, b'bodies', lmdbrec.body_key(body_id), offset=-3)
            return body_id
        body_id = with_env(dc, damage)
        imap = dc.imap()
        imap.select('INBOX')
        # reading it fails cleanly, the others read
        typ, data = imap.uid('FETCH', '2', '(BODY.PEEK[])')
        assert typ == 'NO', (typ, data)
        got = harness.imap_fetch(imap, '1,3', '(BODY.PEEK[])')
        assert got[1]['BODY[]'] == PREFIX + msg(0) and got[3]['BODY[]'] == PREFIX + msg(2)
        ok(imap.uid('STORE', '2', '+FLAGS', '(\\Flagged)'))
        ok(imap.uid('STORE', '2', '+FLAGS', '(\\Deleted)'))
        ok(imap.expunge())
        imap.logout()
        # the mailbox and the user go on working
        deliver(dc, [msg(10)])
        imap = dc.imap()
        assert int(ok(imap.select('INBOX'))[0]) == 3
        ok(imap.noop())
        imap.logout()
        log = dc.wait_log('is damaged', 'verify -r frees the body')
        assert re.search(r'Error: .*lmdb: .*uid=2: body %d record is damaged' % body_id,
                         log), log[-3000:]
        v = verify(dc)
        assert v.returncode != 0 and 'body %d record is damaged' % body_id in v.stdout, v.stdout
        r = verify(dc, repair=True)
        assert 'rebuilt from its chunks' in r.stdout, r.stdout
        v = verify(dc)
        assert v.returncode == 0, (v.stdout, v.stderr)
        # rebuilt without links: freed by purge like any dead body
        dc.doveadm('purge', user='testuser')
        stats = dict(kv.split('=') for kv in
                     dc.doveadm('lmdb', 'stats', user='testuser').stdout.split())
        assert stats['bodies'] == '3' and stats['messages'] == '3', stats


def test_damaged_link_is_contained_and_quarantined():
    with harness.Dovecot('lmdb', extra=CFG) as dc:
        deliver(dc, [msg(i) for i in range(3)])

        def damage(env):
            guid = lmdbrec.mailbox_guid(env, 'INBOX')
            lmdbrec.flip(env, b'links', lmdbrec.link_key(guid, 2), offset=10)
        with_env(dc, damage)
        imap = dc.imap()
        imap.select('INBOX')
        typ, data = imap.uid('FETCH', '2', '(BODY.PEEK[])')
        assert typ == 'NO', (typ, data)
        # a flag change of the damaged message: the index keeps it, the
        # mirror skips it, nothing else fails
        ok(imap.uid('STORE', '2', '+FLAGS', '(\\Seen)'))
        ok(imap.uid('STORE', '1', '+FLAGS', '(\\Seen)'))
        ok(imap.noop())
        imap.logout()
        deliver(dc, [msg(10)])
        # POP3 lists the maildrop although one message can't be read
        pop = dc.pop3()
        count, _size = pop.stat()
        assert count == 4, count
        assert pop3_multiline(pop, 'RETR 1')[1] == PREFIX + msg(0)
        pop.quit()
        assert 'link uid=2 is damaged' in dc.wait_log('its flags were not mirrored')
        v = verify(dc)
        assert v.returncode != 0 and 'damaged link' in v.stdout, v.stdout
        r = verify(dc, repair=True)
        assert 'quarantined' in r.stdout, r.stdout
        v = verify(dc)
        assert v.returncode == 0, (v.stdout, v.stderr)
        imap = dc.imap()
        imap.select('INBOX')
        data = harness.imap_fetch(imap, '1:*', '(BODY.PEEK[])')
        assert sorted(data) == [1, 3, 4], sorted(data)
        imap.logout()

        def quarantined(env):
            db = env.open_db(b'quarantine', create=False)
            with env.begin(db=db) as txn:
                return [bytes(k) for k, _v in txn.cursor()]
        keys = with_env(dc, quarantined)
        assert len(keys) == 1 and keys[0].startswith(b'links\0'), keys


def test_damaged_mailbox_record_is_rewritten():
    with harness.Dovecot('lmdb', extra=CFG) as dc:
        deliver(dc, [msg(i) for i in range(2)])

        def damage(env):
            guid = lmdbrec.mailbox_guid(env, 'INBOX')
            lmdbrec.flip(env, b'mailboxes', guid, offset=-1)
            return guid
        guid = with_env(dc, damage)
        deliver(dc, [msg(5)])
        imap = dc.imap()
        assert int(ok(imap.select('INBOX'))[0]) == 3
        imap.logout()
        assert 'rewritten from the index' in dc.wait_log('rewritten from the index')
        # readable again, with the mailbox's name
        assert with_env(dc, lambda env: lmdbrec.mailbox_guid(env, 'INBOX')) == guid
        v = verify(dc)
        assert v.returncode == 0, (v.stdout, v.stderr)


def test_hostile_values_read_back():
    """A record with a valid checksum can still hold what Dovecot's own
    code asserts on or what would inject protocol lines: a UIDL or keyword
    with a line break. Read back as damage, never served."""
    with harness.Dovecot('lmdb', extra=CFG) as dc:
        deliver(dc, [msg(i) for i in range(3)])

        def craft(env):
            guid = lmdbrec.mailbox_guid(env, 'INBOX')
            lmdbrec.craft_link(env, guid, 2, pop3_uidl=b'x\r\n+OK injected')
            lmdbrec.craft_link(env, guid, 3, keywords=[b'a\r\n* 9 EXISTS'])
        with_env(dc, craft)
        # POP3: the listing works, the hostile UIDL isn't sent
        pop = dc.pop3()
        _resp, lines, _ = pop.uidl()
        assert len(lines) == 3 and not any(b'injected' in l for l in lines), lines
        pop.quit()
        # COPY of the hostile one: a clean NO, no assertion
        imap = dc.imap()
        ok(imap.create('Other'))
        imap.select('INBOX')
        typ, data = imap.uid('COPY', '2', 'Other')
        assert typ == 'NO', (typ, data)
        ok(imap.uid('COPY', '1', 'Other'))
        imap.logout()
        # index loss: adoption and rebuild skip them instead of feeding the
        # keyword into IMAP replies
        dc.stop()
        for root, _dirs, files in os.walk(os.path.join(dc.mail_dir(), 'mailboxes', 'INBOX')):
            for f in files:
                if f.startswith('dovecot.index'):
                    os.unlink(os.path.join(root, f))
        dc.start()
        imap = dc.imap()
        imap.select('INBOX')
        typ, data = imap.uid('FETCH', '1:*', '(FLAGS)')
        raw = b''.join(x if isinstance(x, bytes) else b''.join(x) for x in data)
        assert b'EXISTS' not in raw and b'injected' not in raw, raw
        imap.logout()
        log = dc.log()
        assert 'Panic' not in log, log[-3000:]
        assert 'invalid POP3 UIDL' in log and 'invalid keyword' in log, log[-3000:]


def test_short_chunk_in_a_header_read():
    """A header-only read doesn't verify the whole body first; it checked
    each chunk's checksum but not its length, so a chunk cut short (with a
    valid checksum) shifted every later byte unnoticed."""
    lines = 300
    with harness.Dovecot('lmdb', extra=CFG) as dc:
        deliver(dc, [msg(1, lines=lines), msg(2)])

        def cut(env):
            guid = lmdbrec.mailbox_guid(env, 'INBOX')
            body_id = lmdbrec.link_body_id(env, guid, 1)
            key = lmdbrec.chunk_key(body_id, 0)
            data = lmdbrec.get(env, b'chunks', key)[8:]
            short = data[:len(data) - 100]
            crc = lmdbrec.zlib.crc32(bytes([lmdbrec.TYPE_CHUNK]) + key + short)
            lmdbrec.put(env, b'chunks', key,
                        bytes([2, 0, 0, 0]) + crc.to_bytes(4, 'big') + short)
        with_env(dc, cut)
        imap = dc.imap()
        imap.select('INBOX')
        typ, data = imap.uid('FETCH', '1', '(BODY.PEEK[HEADER])')
        assert typ == 'NO' and b'PARSE' in data[-1], (typ, data)
        got = harness.imap_fetch(imap, '2', '(BODY.PEEK[])')
        assert got[2]['BODY[]'] == PREFIX + msg(2)
        imap.logout()
        # found when the stream opens (every chunk's size is checked
        # then, cheaply), so the message fails alone with NO [PARSE]
        assert re.search(r'Error: .*lmdb: uid=1: body \d+: chunk 0 of \d+ has \d+ '
                         r'bytes, expected \d+', dc.wait_log('expected')), \
            dc.log()[-2000:]


def test_slow_retr_of_expunged_message():
    """A body goes when its last link goes (no grace period), yet a POP3
    client still reading it gets every byte: the stream has its own LMDB
    snapshot. Dovecot 2.3's POP3 ends a RETR with "." even after a stream
    error, so a vanishing body would have been stored truncated."""
    # far bigger than what the kernel buffers between the two ends (a
    # smaller receive buffer than the loopback MSS stalls TCP instead)
    body = b''.join(b'%07d ' % i + b'x' * 70 + b'\r\n' for i in range(260000))
    big = ('From: a@example.com\r\nSubject: big\r\nMessage-ID: <big@dlmdb.test>\r\n\r\n'
           ).encode() + body
    # (the code before this had lmdb_dead_grace: with 0, purge freed the
    # body under the stream and the client got 3.9 of 12.8 MB, then ".")
    with harness.Dovecot('lmdb', extra=CFG) as dc:
        deliver(dc, [big, msg(1)])
        pop = dc.pop3()
        sock = pop.sock
        sock.sendall(b'RETR 1\r\n')
        first = sock.recv(65536)
        assert first.startswith(b'+OK'), first[:100]
        # the client stops reading; another session expunges and purges
        imap = dc.imap()
        imap.select('INBOX')
        ok(imap.uid('STORE', '1', '+FLAGS', '(\\Deleted)'))
        ok(imap.expunge())
        imap.logout()
        dc.doveadm('purge', user='testuser')
        stats = dict(kv.split('=') for kv in
                     dc.doveadm('lmdb', 'stats', user='testuser').stdout.split())
        assert stats['bodies'] == '1', stats   # freed at once
        data = first
        sock.settimeout(30)
        while not data.endswith(b'\r\n.\r\n'):
            chunk = sock.recv(65536)
            assert chunk, 'connection closed after %d bytes' % len(data)
            data += chunk
        got = data.split(b'\r\n', 1)[1][:-len(b'.\r\n')]
        want = harness.crlf(PREFIX + big).replace(b'\r\n.', b'\r\n..')
        assert hashlib.sha256(got).hexdigest() == hashlib.sha256(want).hexdigest(), \
            (len(got), len(want))
        sock.sendall(b'QUIT\r\n')
        dc.assert_no_log_errors()


def test_recover_stops_at_a_damaged_page():
    """A damaged B-tree page makes LMDB's cursor fail: force-resync and
    lmdb recover used to loop for ever (and read an uninitialised UID).
    They must end with an error naming salvage."""
    cfg = CFG + 'lmtp_save_to_detail_mailbox = yes\n'
    with harness.Dovecot('lmdb', extra=cfg) as dc:
        imap = dc.imap()
        ok(imap.create('Other'))
        imap.logout()
        # enough links for a branch page above several leaves
        for i in range(400):
            r = dc.lmtp_deliver('testuser+Other', msg(i, lines=1))
            assert r.all_ok(), r
        dc.stop()
        path = os.path.join(dc.mail_dir(), 'data.mdb')
        pages = lmdbpages.Pages(path)
        tree = pages.dbi_pages('links')
        branches = [p for p, kind, _d in tree if kind == 'branch']
        assert branches and len(tree) >= 4, tree
        # the branch's last child pointer names a page beyond the file:
        # stepping to it fails with MDB_PAGE_NOTFOUND
        page = pages.page(branches[0])
        lower = int.from_bytes(page[12:14], 'little')
        last = int.from_bytes(page[lower - 2:lower], 'little')
        with open(path, 'r+b') as f:
            f.seek(branches[0] * pages.psize + last)
            f.write(b'\xff\xff\xff\x00\x00\x00')
        # recover recreates a mailbox whose directory is gone, and
        # force-resyncs it from its links
        shutil.rmtree(os.path.join(dc.mail_dir(), 'mailboxes', 'Other'))
        dc.start()
        for args in (('lmdb', 'recover'), ('force-resync', 'INBOX')):
            t0 = time.monotonic()
            r = dc.doveadm(*args, user='testuser', check=False, timeout=60)
            assert time.monotonic() - t0 < 60
            # a failure is an exit status and an error, never a panic (a
            # command's run() that fails must set doveadm's exit code)
            assert 'Panic' not in r.stderr and r.returncode >= 0, \
                (args, r.returncode, r.stderr)
            if args[0] == 'lmdb':
                assert r.returncode != 0, (args, r.stdout, r.stderr)
                assert 'run doveadm lmdb salvage' in r.stderr, r.stderr
        log = dc.log()
        assert 'Panic' not in log and 'Fatal' not in log, log[-3000:]


def test_purge_goes_on_past_a_damaged_dead_body():
    """One dead body whose record fails its checksum must not stop purge:
    the others are freed, the damaged one stays (with its gc entry) for
    verify -r, and the log says so."""
    import struct
    with harness.Dovecot('lmdb', extra=CFG) as dc:
        deliver(dc, [msg(i) for i in range(3)])

        def make_dead(env):
            guid = lmdbrec.mailbox_guid(env, 'INBOX')
            ids = [lmdbrec.link_body_id(env, guid, u) for u in (2, 3)]
            # UIDs 2 and 3 lose their links and their bodies become DEAD
            # with a gc entry, as an expunge under schema 1 or verify -r
            # leaves them (docs/schema.md: bodies, gc)
            links = env.open_db(b'links', create=False)
            bodies = env.open_db(b'bodies', create=False)
            gc = env.open_db(b'gc', create=False)
            with env.begin(write=True) as txn:
                for n, (uid, bid) in enumerate(zip((2, 3), ids)):
                    txn.delete(lmdbrec.link_key(guid, uid), db=links)
                    k = lmdbrec.body_key(bid)
                    f = bytearray(lmdbrec.unseal(bytes(txn.get(k, db=bodies))))
                    f[0] = 3                                   # state DEAD
                    f[3:7] = struct.pack('>I', 0)              # refcount
                    f[47:55] = struct.pack('>Q', n)            # state_since
                    txn.put(k, lmdbrec.seal(lmdbrec.TYPE_BODY, k, bytes(f)), db=bodies)
                    gk = struct.pack('>BQQ', 2, n, bid)
                    txn.put(gk, lmdbrec.seal(lmdbrec.TYPE_GC, gk, b''), db=gc)
            # the first dead body in gc order gets a flipped bit
            lmdbrec.flip(env, b'bodies', lmdbrec.body_key(ids[0]), offset=-3)
            return ids
        ids = with_env(dc, make_dead)
        r = dc.doveadm('purge', user='testuser', check=False)
        assert r.returncode == 0, r

        def left(env):
            db = env.open_db(b'bodies', create=False)
            with env.begin(db=db) as txn:
                return [txn.get(lmdbrec.body_key(i)) is not None for i in ids]
        assert with_env(dc, left) == [True, False], 'damaged kept, undamaged freed'
        # doveadm logs to its stderr
        assert re.search(r'Error: .*purge left 1 damaged body records.*verify -r',
                         r.stderr), r.stderr
        # the message that is left reads back (the index records of UIDs
        # 2 and 3 lost their links with the test's raw delete)
        imap = dc.imap('testuser')
        ok(imap.select('INBOX'))
        got = harness.imap_fetch(imap, '1', '(BODY.PEEK[])')
        assert got[1]['BODY[]'].endswith(msg(0)), got
        imap.logout()
