"""Values from outside that the record format can't hold (issue "Trust",
item 1b: nothing that comes from outside may reach an assertion).

A maildir's dovecot-uidlist may carry a message GUID (extension 'G') or a
POP3 UIDL ('P') of any length and almost any bytes: what an older server
or a migration tool left there.  dsync hands them to the lmdb storage as
mailbox_save_set_guid() / mailbox_save_set_pop3_uidl().  The storage used
to hit an i_assert in its record encoder for one over 255 bytes (every
`doveadm backup` aborted); now a GUID that isn't 1..255 bytes without
control characters, or a UIDL that isn't 1..255 characters 0x21..0x7E, is
stored as the 32 hex digits of the last 16 bytes of its SHA-1 (Dovecot's
mail_generate_guid_128_hash() of a non-GUID string), with a warning, and
the storage declares MAIL_STORAGE_CLASS_FLAG_HAVE_MAIL_GUID128 so that
dsync compares GUIDs by that digest and a second run changes nothing.

The uidlist has no way to carry a space (its fields are space-separated):
the hostile UIDLs here are too long, 8-bit, or hold a control character.
"""

import hashlib
import os
import re

import harness
import lmdbrec
import test_migration as mig

N = 10
OPTS = ('-o', 'pop3_uidl_format=%g')


def digest(value: bytes) -> str:
    """What Dovecot's mail_generate_guid_128_hash() makes of a string that
    isn't a 128-bit GUID: the last 16 bytes of its SHA-1, in hex."""
    return hashlib.sha1(value).digest()[-16:].hex()


# uid -> (G value or None, P value); what the lmdb side must store follows
# from the rules in docs/schema.md
HOSTILE = {
    1: (b'g' * 300, b'legacy-1'),                      # GUID too long
    2: (None, b'U' * 300),                              # UIDL too long
    3: (None, 'uidl-\u00e9t\u00e9-3'.encode()),         # 8-bit UIDL
    4: (None, b'4' + b'u' * 254),                       # 255: kept
    5: (None, b'5' + b'u' * 255),                       # 256: digest
    6: (b'guid\twith-a-tab-6', b'legacy-6'),            # control char
    7: (b'7' + b'g' * 254, b'legacy-7'),                # 255: kept
    8: (b'8' + b'g' * 255, b'uidl\x7fdel-8'),           # both digest
    9: (None, b'legacy-9'),
    10: (None, b'legacy-10'),
}


def guid_ok(v: bytes) -> bool:
    return 1 <= len(v) <= 255 and all(c >= 0x20 and c != 0x7f for c in v)


def uidl_ok(v: bytes) -> bool:
    return 1 <= len(v) <= 255 and all(0x21 <= c <= 0x7e for c in v)


def message(i: int) -> bytes:
    return ('From: a@example.com\r\nTo: src@example.com\r\n'
            'Subject: long values %d\r\nMessage-ID: <long-%d@dlmdb.test>\r\n\r\n'
            'body %d\r\n' % (i, i, i)).encode() + b'x' * (i * 311) + b'\r\n'


def inject(path: str) -> None:
    """Give each record of the maildir's dovecot-uidlist its HOSTILE G and
    P extensions (bytes: an 8-bit value is written as it is)."""
    with open(path, 'rb') as f:
        lines = f.read().split(b'\n')
    out = [lines[0]]
    done = 0
    for line in lines[1:]:
        if not line:
            continue
        head, sep, fname = line.partition(b' :')
        assert sep, line
        fields = head.split(b' ')
        uid = int(fields[0])
        guid, uidl = HOSTILE[uid]
        exts = [x for x in fields[1:] if x[:1] not in (b'G', b'P')]
        if guid is not None:
            exts.append(b'G' + guid)
        exts.append(b'P' + uidl)
        out.append(b' '.join([fields[0]] + exts) + b' :' + fname)
        done += 1
    assert done == N, (done, lines)
    st = os.stat(path)
    tmp = path + '.test-tmp'
    with open(tmp, 'wb') as f:
        f.write(b'\n'.join(out) + b'\n')
    os.chown(tmp, st.st_uid, st.st_gid)
    os.chmod(tmp, st.st_mode & 0o7777)
    os.replace(tmp, path)


def expected(src_guids: dict) -> dict:
    """uid -> (guid, uidl) the lmdb side must hold; src_guids: the
    source's default GUIDs (maildir: the file name) for uids without G."""
    out = {}
    for uid, (guid, uidl) in HOSTILE.items():
        g = guid if guid is not None else src_guids[uid].encode()
        out[uid] = (g.decode() if guid_ok(g) else digest(g),
                    uidl.decode() if uidl_ok(uidl) else digest(uidl))
    return out


def lmdb_values(dc, user: str) -> dict:
    """uid -> (guid, uidl) of INBOX as the records in LMDB have them (the
    test's own decoding of docs/schema.md), besides doveadm's view."""
    env = lmdbrec.open_env(dc.home(user) + '/lmdb', readonly=True)
    try:
        mbox = lmdbrec.mailbox_guid(env, 'INBOX')
        out = {}
        links = env.open_db(b'links', create=False)
        with env.begin(db=links) as txn:
            for key, val in txn.cursor():
                if bytes(key[:16]) != mbox:
                    continue
                uid = int.from_bytes(key[16:20], 'big')
                link = lmdbrec.decode_link(bytes(val))
                body = lmdbrec.decode_body(lmdbrec.get(env, b'bodies',
                                                       lmdbrec.body_key(link['body_id'])))
                out[uid] = (body['guid'].decode(), link['pop3_uidl'].decode())
        return out
    finally:
        env.close()


def doveadm_values(dc, user: str) -> dict:
    r = mig.doveadm(dc, 'fetch', 'uid guid pop3.uidl', 'mailbox', 'INBOX', 'all',
                    user=user)
    out = {}
    for block in r.stdout.split('\x0c'):
        rec = dict(line.split(': ', 1) for line in block.strip('\n').split('\n') if line)
        if rec:
            out[int(rec['uid'])] = (rec['guid'], rec['pop3.uidl'])
    return out


def bad_log_lines(dc, stderr: str = '') -> list:
    """Errors, Panics, Fatals and every warning but the expected ones
    (a GUID or UIDL stored as its digest) in the log and in a doveadm
    command's stderr."""
    text = dc.log() + '\n' + stderr
    out = []
    for line in text.splitlines():
        if not re.search(r'(Error|Panic|Fatal|Warning):', line):
            continue
        if 'Warning:' in line and re.search(r"lmdb: (Message GUID|POP3 UIDL) of \d+ bytes "
                                            r"can't be stored as given", line):
            continue
        if dc.is_benign(line):
            continue
        out.append(line)
    return out


def digest_warnings(dc, stderr: str = '') -> list:
    return re.findall(r"lmdb: (Message GUID|POP3 UIDL) of (\d+) bytes can't be stored "
                      r"as given \(too long, or characters it may not hold\): stored as "
                      r"its digest ([0-9a-f]{32})", dc.log() + '\n' + stderr)


def test_backup_of_long_guids_and_uidls():
    """doveadm backup (stream protocol and in-process) from a maildir whose
    uidlist carries hostile GUIDs and UIDLs: exit 0, the lmdb side stores
    their digests (the others unchanged), every message reads back
    byte-identical, and a second backup and a two-way sync change
    nothing.  doveadm import (a COPY from another storage, which passes
    the GUID) stores the same GUIDs."""
    dc = mig.new_instance(src='userdb_mail=maildir:~/Maildir', dst=mig.LMDB_USER_EXTRA,
                          local=mig.LMDB_USER_EXTRA, imp=mig.LMDB_USER_EXTRA)
    with dc:
        assert all(r.all_ok() for r in dc.lmtp_deliver_many(['src'],
                                                            [message(i) for i in range(N)]))
        src_guids = {u: g for u, (g, _p) in doveadm_values(dc, 'src').items()}
        inject(os.path.join(dc.home('src'), 'Maildir', 'dovecot-uidlist'))
        want = expected(src_guids)
        n_digest = sum(1 for uid, (g, p) in HOSTILE.items()
                       for v, ok in ((g if g is not None else src_guids[uid].encode(), guid_ok),
                                     (p, uidl_ok)) if not ok(v))
        assert n_digest == 7, n_digest
        # the source really serves the hostile values (else nothing is tested)
        src_listing = mig.pop3_uidl_listing(dc, 'src')
        assert len(src_listing) == N and src_listing[1][1] == 'U' * 300, src_listing
        assert doveadm_values(dc, 'src')[1][0] == 'g' * 300
        src0 = mig.state(dc, 'src')

        stderr = []   # doveadm's log lines go to its stderr

        def run(verb, target, via='server'):
            r = mig.dsync(dc, verb, 'src', (target, 'lmdb'), opts=OPTS, via=via)
            stderr.append(r.stderr)
            assert r.returncode == 0
            bad = bad_log_lines(dc, ''.join(stderr))
            assert not bad, '\n'.join(bad)

        run('backup', 'dst')
        warned = digest_warnings(dc, ''.join(stderr))
        assert {w[2] for w in warned} == {v for pair in want.values() for v in pair
                                          if re.fullmatch('[0-9a-f]{32}', v)}, warned

        assert doveadm_values(dc, 'dst') == want, (doveadm_values(dc, 'dst'), want)
        assert lmdb_values(dc, 'dst') == want, (lmdb_values(dc, 'dst'), want)
        listing = mig.pop3_uidl_listing(dc, 'dst')
        assert listing == [(str(u), want[u][1]) for u in range(1, N + 1)], listing
        dst1 = mig.state(dc, 'dst')
        fields = [f for f in mig.COMPARED if f not in ('guid', 'pop3.uidl')]
        diffs = mig.diff_states(src0, dst1, fields=fields, migrated=True)
        assert not diffs, 'maildir -> lmdb:\n  ' + '\n  '.join(diffs)
        assert len(dst1['mails']) == N

        # again: nothing is copied, renumbered or changed; GUIDs compare
        # equal by their digest (HAVE_MAIL_GUID128)
        n_warn = len(warned)
        src1 = mig.state(dc, 'src')
        run('backup', 'dst')
        d = mig.diff_states(dst1, mig.state(dc, 'dst'))
        assert not d, 'second backup changed the lmdb side:\n  ' + '\n  '.join(d)
        run('sync', 'dst')
        d = mig.diff_states(dst1, mig.state(dc, 'dst'))
        assert not d, 'two-way sync changed the lmdb side:\n  ' + '\n  '.join(d)
        d = mig.diff_states(src1, mig.state(dc, 'src'), modseq=False)
        assert not d, 'two-way sync changed the maildir side:\n  ' + '\n  '.join(d)
        assert len(digest_warnings(dc, ''.join(stderr))) == n_warn, \
            'a later run saved messages again'
        assert doveadm_values(dc, 'dst') == want

        # the in-process pipe (doveadm backup -u src lmdb:<path>)
        run('backup', 'local', via='local')
        assert len(digest_warnings(dc, ''.join(stderr))) == 2 * n_warn
        assert doveadm_values(dc, 'local') == want
        assert lmdb_values(dc, 'local') == want
        local1 = mig.state(dc, 'local')
        # (the in-process pipe passes no save date: not compared)
        fields2 = [f for f in fields if f != 'date.saved.unixtime']
        diffs = mig.diff_states(src0, local1, fields=fields2, migrated=True)
        assert not diffs, 'maildir -> lmdb (in-process):\n  ' + '\n  '.join(diffs)
        run('backup', 'local', via='local')
        d = mig.diff_states(local1, mig.state(dc, 'local'))
        assert not d, 'second in-process backup changed something:\n  ' + '\n  '.join(d)

        # a COPY from another storage (doveadm import: mailbox_copy() from
        # the maildir into lmdb, the GUID given by mail_storage_copy())
        source = 'maildir:' + os.path.join(dc.home('src'), 'Maildir')
        r = mig.doveadm(dc, 'import', source, '', 'mailbox', 'INBOX', 'all', user='imp',
                        opts=OPTS)
        stderr.append(r.stderr)
        assert {u: g for u, (g, _p) in doveadm_values(dc, 'imp').items()} == \
            {u: g for u, (g, _p) in want.items()}
        assert {u: g for u, (g, _p) in lmdb_values(dc, 'imp').items()} == \
            {u: g for u, (g, _p) in want.items()}
        # (three GUIDs to digest; no UIDL is given: a copy gets its own)
        assert len(digest_warnings(dc, ''.join(stderr))) == 2 * n_warn + 3
        uv = int(mig.state(dc, 'imp')['status']['INBOX']['uidvalidity'])
        assert [p for _g, p in doveadm_values(dc, 'imp').values()] == \
            ['%08x%08x' % (u, uv) for u in range(1, N + 1)]

        for user in ('dst', 'local', 'imp'):
            r = dc.doveadm('lmdb', 'verify', user=user, check=False)
            assert r.returncode == 0, r.stdout + r.stderr
        # every message reads back byte-identical over IMAP and POP3 too
        bodies = {}
        for user in ('src', 'dst', 'local', 'imp'):
            imap = dc.imap(user, 'pw')
            imap.select('INBOX', readonly=True)
            got = harness.imap_fetch(imap, '1:*', '(BODY.PEEK[])')
            imap.logout()
            bodies[user] = {uid: v['BODY[]'] for uid, v in got.items()}
        assert sorted(bodies['src']) == list(range(1, N + 1))
        for uid, body in bodies['src'].items():
            assert body.endswith(harness.crlf(message(uid - 1))), uid
        for user in ('dst', 'local', 'imp'):
            assert bodies[user] == bodies['src'], user
            pop = dc.pop3(user, 'pw')
            for uid in range(1, N + 1):
                _st, body = harness.pop3_multiline(pop, 'RETR %d' % uid)
                assert body == bodies['src'][uid], (user, uid)
            pop.quit()
        assert len(digest_warnings(dc, ''.join(stderr))) == 2 * n_warn + 3
        bad = bad_log_lines(dc, ''.join(stderr))
        assert not bad, '\n'.join(bad)


def test_keyword_longer_than_lmdb_keeps():
    """A keyword Dovecot accepts but a link record can't hold (an admin
    raised mail_max_keyword_length above the 255 bytes of docs/schema.md):
    the flag change is answered OK and stays in Dovecot's index, the
    other flags of that message reach LMDB, and the mailbox goes on
    working (SELECT, STORE, COPY, LMTP, verify). The sync used to fail on the
    whole mailbox for it. After an index loss the long keyword is gone
    (LMDB never had it), the rest is there."""
    long_kw = 'K' + 'k' * 299
    with harness.Dovecot('lmdb', extra='mail_max_keyword_length = 400\n') as dc:
        for i in range(2):
            assert dc.lmtp_deliver('testuser', message(i)).all_ok()
        c = dc.imap('testuser')
        assert c.select('INBOX')[0] == 'OK'
        typ, data = c.uid('STORE', '1', '+FLAGS', '(%s $Kept \\Seen)' % long_kw)
        assert typ == 'OK', data
        c.logout()

        c = dc.imap('testuser')
        typ, data = c.select('INBOX')
        assert typ == 'OK', data
        typ, data = c.uid('FETCH', '1', '(FLAGS)')
        assert typ == 'OK' and long_kw.encode() in data[0] and b'$Kept' in data[0], data
        typ, data = c.uid('STORE', '2', '+FLAGS', '(\\Flagged)')
        assert typ == 'OK', data
        # a copy saves the source's keywords as a new message's
        assert c.create('Other')[0] == 'OK'
        typ, data = c.uid('COPY', '1', 'Other')
        assert typ == 'OK', data
        c.logout()
        assert dc.lmtp_deliver('testuser', message(2)).all_ok()
        r = dc.doveadm('lmdb', 'verify', user='testuser', check=False)
        assert r.returncode == 0, r.stdout + r.stderr
        errors = dc.log_errors()
        assert not errors, '\n'.join(errors)

        # what LMDB kept: the index rebuilt from it alone
        dc.stop()
        for root, _dirs, files in os.walk(dc.home('testuser')):
            for f in files:
                if f.startswith(('dovecot.index', 'dovecot.list.index',
                                 'dovecot.mailbox.log')):
                    os.unlink(os.path.join(root, f))
        dc.start()
        c = dc.imap('testuser')
        typ, data = c.select('INBOX')
        assert typ == 'OK' and data[0] == b'3', data
        typ, data = c.uid('FETCH', '1:*', '(FLAGS)')
        assert typ == 'OK', data
        flags = {int(re.search(rb'UID (\d+)', d).group(1)): d for d in data}
        assert b'$Kept' in flags[1] and b'\\Seen' in flags[1], flags
        assert long_kw.encode() not in flags[1], flags
        assert b'\\Flagged' in flags[2], flags
        c.logout()
        # (the index loss itself is worth a warning: "Added 3 messages")
        errors = dc.log_errors(include_warnings=False)
        assert not errors, '\n'.join(errors)
