"""Message-level scenarios: APPEND metadata, single-instance COPY/MOVE,
GUIDs, size lookups without opening bodies, large and 8-bit mail, cached
headers, zlib and mail_crypt on top of the storage, lazy_expunge with
reference counts, purge, POP3 UIDLs kept in the storage, body integrity
checks, and the everyday doveadm commands.

Scenarios that are not specific to lmdb also run on maildir as a control;
the expected values are computed from what the test sent, not taken from
the other driver.
"""

import base64
import datetime
import hashlib
import imaplib
import os
import random
import re
import subprocess
import time

import harness
from harness import crlf, lf, imap_fetch, pop3_multiline

# deterministic LMTP prefix (no Received: header with session id and date)
NO_RECEIVED = 'lmtp_add_received_header = no\n'
PREFIX = b'Return-Path: <sender@example.com>\r\nDelivered-To: testuser\r\n'


# ---------------------------------------------------------------------------
# helpers

def make_msg(subject, body_lines, extra_headers=b'', msgid=None):
    """A small RFC 5322 message with CRLF line endings."""
    if isinstance(subject, str):
        subject = subject.encode()
    msgid = msgid or ('<%s@test.example>' % hashlib.sha1(subject).hexdigest()[:16]).encode()
    hdr = (b'From: Alice <alice@example.com>\r\n'
           b'To: Bob <bob@example.com>\r\n'
           b'Subject: ' + subject + b'\r\n'
           b'Date: Tue, 02 Jan 2024 03:04:05 +0000\r\n'
           b'Message-ID: ' + msgid + b'\r\n' + extra_headers)
    body = b''.join(l + b'\r\n' for l in body_lines)
    return hdr + b'\r\n' + body


def big_body(size, seed):
    """Deterministic base64 lines (76 chars + CRLF) of about size bytes."""
    raw = random.Random(seed).randbytes(size * 57 // 78 + 57)
    return base64.encodebytes(raw).splitlines()


def deliver(dc, msgs, rcpt='testuser'):
    results = dc.lmtp_deliver_many([rcpt], msgs)
    for i, r in enumerate(results):
        assert r.status == {rcpt: 250}, 'message %d: %r' % (i, r)
    return results


def select(imap, mailbox='INBOX', readonly=False):
    typ, data = imap.select(mailbox, readonly)
    assert typ == 'OK', (mailbox, data)
    return int(data[0])


def ok(res):
    typ, data = res
    assert typ == 'OK', data
    return data


def flagset(flags):
    return {f for f in flags if f != '\\Recent'}


def lmdb_stats(dc, user='testuser'):
    out = dc.doveadm('lmdb', 'stats', user=user).stdout
    got = dict(kv.split('=', 1) for kv in out.split())
    return {k: int(v) for k, v in got.items()}


def doveadm_fetch(dc, fields, *query, user='testuser'):
    """doveadm fetch -> list of {field: value} (one per message), in the
    order doveadm prints them."""
    r = dc.doveadm('fetch', fields, *query, user=user)
    names = fields.split()
    out = []
    cur = None
    for line in r.stdout.splitlines():
        m = re.match(r'^([a-z0-9.]+): ?(.*)$', line)
        if m and m.group(1) in names:
            if m.group(1) == names[0]:
                cur = {}
                out.append(cur)
            cur[m.group(1)] = m.group(2)
    return out


def status(dc, mailbox, items='messages', user='testuser'):
    r = dc.doveadm('mailbox', 'status', items, mailbox, user=user)
    return dict(kv.split('=', 1) for kv in r.stdout.split()[1:])


def wait_log(dc, start, pattern, timeout=10.0):
    """Wait until the log after offset start matches pattern; return the
    new log text."""
    deadline = time.monotonic() + timeout
    while True:
        text = dc.log()[start:]
        if re.search(pattern, text):
            return text
        if time.monotonic() > deadline:
            raise AssertionError('log never matched %r; new log:\n%s' % (pattern, text[-4000:]))
        time.sleep(0.05)


def opened_lines(text, service):
    return [l for l in text.splitlines()
            if l.find(' %s(testuser)' % service) >= 0 and 'Opened mail because' in l]


def storage_files(dc):
    """Every regular file under the user's mail root."""
    out = []
    for root, _dirs, files in os.walk(dc.mail_dir()):
        for f in files:
            out.append(os.path.join(root, f))
    return out


def storage_contains(dc, needle):
    hits = []
    for p in storage_files(dc):
        with open(p, 'rb') as f:
            if needle in f.read():
                hits.append(p)
    return hits


def data_mdb(dc):
    return os.path.join(dc.mail_dir(), 'data.mdb')


def marker(tag):
    return ('%s-%s' % (tag, hashlib.sha256(('%s%f' % (tag, time.time())).encode())
                       .hexdigest()[:24])).encode()


# ---------------------------------------------------------------------------
# 1. APPEND with flags, keywords and INTERNALDATE

@harness.drivers('lmdb', 'maildir')
def test_append_flags_keywords_internaldate(driver):
    m1 = make_msg('append one', [b'first appended message'])
    m2 = make_msg('append two', [b'second appended message', b'with two lines'])
    d1 = 1577872800   # 01-Jan-2020 10:00:00 +0000
    d2 = 1623738600   # 15-Jun-2021 08:30:00 +0200 = 06:30 UTC
    with harness.Dovecot(driver) as dc:
        imap = dc.imap()
        t0 = time.time()
        data = ok(imap.append('INBOX', '(\\Seen $Work)', '"01-Jan-2020 10:00:00 +0000"', m1))
        assert b'APPENDUID' in data[0], data
        ok(imap.append('INBOX', '(\\Flagged \\Answered $Home Custom)',
                       '"15-Jun-2021 08:30:00 +0200"', m2))
        t1 = time.time()
        expected_flags = {1: {'\\Seen', '$Work'}, 2: {'\\Flagged', '\\Answered', '$Home', 'Custom'}}
        expected_date = {1: d1, 2: d2}
        expected_body = {1: m1, 2: m2}

        def check_imap():
            assert select(imap) == 2
            got = imap_fetch(imap, '1:*', '(FLAGS INTERNALDATE RFC822.SIZE BODY.PEEK[])')
            assert sorted(got) == [1, 2], got
            for uid in (1, 2):
                d = got[uid]
                assert flagset(d['FLAGS']) == expected_flags[uid], (uid, d['FLAGS'])
                idate = datetime.datetime.strptime(d['INTERNALDATE'].decode(),
                                                   '%d-%b-%Y %H:%M:%S %z')
                assert idate.timestamp() == expected_date[uid], (uid, d['INTERNALDATE'])
                assert d['BODY[]'] == expected_body[uid], uid
                assert d['RFC822.SIZE'] == len(expected_body[uid]), uid

        check_imap()
        typ, data = imap.uid('SEARCH', 'KEYWORD', '$Work')
        assert data[0].split() == [b'1'], data
        typ, data = imap.uid('SEARCH', 'SENTBEFORE', '01-Jan-2025', 'BEFORE', '01-Jan-2021')
        assert data[0].split() == [b'1'], data
        imap.logout()

        def check_doveadm():
            rows = doveadm_fetch(dc, 'uid flags date.received date.saved guid', 'mailbox', 'INBOX', 'all')
            assert [r['uid'] for r in rows] == ['1', '2'], rows
            for r in rows:
                uid = int(r['uid'])
                assert set(r['flags'].split()) == expected_flags[uid], r
                assert r['date.received'] == time.strftime(
                    '%Y-%m-%d %H:%M:%S', time.localtime(expected_date[uid])), r
                saved = time.mktime(time.strptime(r['date.saved'], '%Y-%m-%d %H:%M:%S'))
                assert t0 - 2 <= saved <= t1 + 2, (r, t0, t1)
                assert r['guid'], r
            return rows

        rows = check_doveadm()
        dc.restart()
        imap = dc.imap()
        check_imap()
        imap.logout()
        assert check_doveadm() == rows
        dc.assert_no_log_errors()


# ---------------------------------------------------------------------------
# 2. single-instance COPY and MOVE (lmdb)

@harness.drivers('lmdb')
def test_single_instance_copy_move(driver):
    body = big_body(5 * 1024 * 1024, 'copy')
    msg = make_msg('five megabytes', body)
    wire = PREFIX + msg
    with harness.Dovecot(driver, extra=NO_RECEIVED) as dc:
        deliver(dc, [msg])
        s0 = lmdb_stats(dc)
        assert (s0['messages'], s0['bodies'], s0['references']) == (1, 1, 1), s0
        assert s0['body_bytes'] == len(lf(wire)), (s0, len(lf(wire)))
        assert s0['message_bytes'] == len(wire), s0
        size = s0['body_bytes']

        imap = dc.imap()
        ok(imap.create('Other'))
        ok(imap.create('Third'))
        select(imap)
        ok(imap.uid('COPY', '1', 'Other'))
        s1 = lmdb_stats(dc)
        assert s1['bodies'] == s0['bodies'] and s1['body_bytes'] == s0['body_bytes'], (s0, s1)
        assert s1['messages'] == s0['messages'] + 1, (s0, s1)
        assert s1['references'] == s0['references'] + 1, (s0, s1)
        assert s1['message_bytes'] == 2 * len(wire), s1
        assert s1['used_bytes'] - s0['used_bytes'] < 0.05 * size, (s0, s1)

        g = {r['mailbox']: r['guid'] for r in doveadm_fetch(dc, 'mailbox guid', 'all')}
        assert set(g) == {'INBOX', 'Other'}, g
        assert g['INBOX'] and g['INBOX'] == g['Other'], g

        # MOVE INBOX -> Third: one link replaced by another
        typ, data = imap._simple_command('UID', 'MOVE', '1', 'Third')
        assert typ == 'OK', data
        s2 = lmdb_stats(dc)
        assert s2['bodies'] == s0['bodies'] and s2['body_bytes'] == s0['body_bytes'], (s0, s2)
        assert s2['messages'] == s1['messages'] and s2['references'] == s1['references'], (s1, s2)
        assert s2['used_bytes'] - s0['used_bytes'] < 0.05 * size, (s0, s2)
        assert status(dc, 'INBOX')['messages'] == '0'
        g = {r['mailbox']: r['guid'] for r in doveadm_fetch(dc, 'mailbox guid', 'all')}
        assert set(g) == {'Other', 'Third'} and g['Third'] == g['Other'], g

        # expunge the copy in Other
        select(imap, 'Other')
        ok(imap.uid('STORE', '1', '+FLAGS.SILENT', '(\\Deleted)'))
        ok(imap.expunge())
        s3 = lmdb_stats(dc)
        assert s3['references'] == s2['references'] - 1, (s2, s3)
        assert s3['messages'] == s2['messages'] - 1, (s2, s3)
        assert s3['bodies'] == s0['bodies'] and s3['body_bytes'] == s0['body_bytes'], s3

        # the other instance still reads back whole
        select(imap, 'Third')
        got = imap_fetch(imap, '1:*', '(BODY.PEEK[] RFC822.SIZE)')
        assert list(got) == [1], got
        assert got[1]['BODY[]'] == wire
        assert got[1]['RFC822.SIZE'] == len(wire)
        imap.logout()
        r = dc.doveadm('fetch', 'text', 'mailbox', 'Third', 'all', user='testuser', text=False)
        assert lf(wire) in r.stdout.replace(b'\r\n', b'\n'), 'doveadm fetch text differs'
        v = dc.doveadm('lmdb', 'verify', user='testuser', check=False)
        assert v.returncode == 0, (v.stdout, v.stderr)
        dc.assert_no_log_errors()


# ---------------------------------------------------------------------------
# 3. message GUIDs: unique, stable, kept by COPY and by import

def _write_maildir_source(dc, root, names_bodies):
    for d in ('cur', 'new', 'tmp'):
        os.makedirs(os.path.join(root, d), exist_ok=True)
    for name, data in names_bodies:
        p = os.path.join(root, 'cur', name)
        with open(p, 'wb') as f:
            f.write(data)
    for dirpath, dirs, files in os.walk(root):
        os.chown(dirpath, dc.uid, dc.gid)
        for f in files:
            os.chown(os.path.join(dirpath, f), dc.uid, dc.gid)


@harness.drivers('lmdb', 'maildir')
def test_guids(driver):
    same = make_msg('identical', [b'the same bytes twice'])
    msgs = [make_msg('guid %d' % i, [b'message %d' % i]) for i in range(4)] + [same, same]
    with harness.Dovecot(driver, extra=NO_RECEIVED) as dc:
        deliver(dc, msgs)
        rows = doveadm_fetch(dc, 'uid guid', 'mailbox', 'INBOX', 'all')
        guids = [r['guid'] for r in rows]
        assert [r['uid'] for r in rows] == [str(i) for i in range(1, 7)], rows
        assert all(guids) and len(set(guids)) == 6, guids  # identical bytes, distinct GUIDs

        # search by GUID finds exactly that message
        mbox_guid = status(dc, 'INBOX', 'guid')['guid']
        r = dc.doveadm('search', 'mailbox', 'INBOX', 'guid', guids[2], user='testuser')
        assert r.stdout.split() == [mbox_guid, '3'], r.stdout

        # stable across restart and IMAP activity
        imap = dc.imap()
        select(imap)
        ok(imap.uid('STORE', '1:3', '+FLAGS', '(\\Seen)'))
        ok(imap.create('Other'))
        ok(imap.uid('COPY', '4', 'Other'))
        imap.logout()
        dc.restart()
        rows2 = doveadm_fetch(dc, 'uid guid', 'mailbox', 'INBOX', 'all')
        assert [r['guid'] for r in rows2] == guids
        other = doveadm_fetch(dc, 'uid guid', 'mailbox', 'Other', 'all')
        if driver == 'lmdb':
            assert [r['guid'] for r in other] == [guids[3]], other
        else:
            assert len(other) == 1 and other[0]['guid'], other

        # force-resync does not change them
        dc.doveadm('force-resync', 'INBOX', user='testuser')
        assert [r['guid'] for r in doveadm_fetch(dc, 'uid guid', 'mailbox', 'INBOX', 'all')] == guids

        # doveadm import copies with the source's GUID (maildir: base name)
        src = os.path.join(dc.home(), 'srcmd')
        bases = ['1700000001.M1P1.srchost', '1700000002.M2P1.srchost']
        data = [lf(make_msg('imported %d' % i, [b'imported body %d' % i])) for i in range(2)]
        _write_maildir_source(dc, src, [(b_ + ':2,S', d) for b_, d in zip(bases, data)])
        dc.doveadm('mailbox', 'create', 'Imported', user='testuser')
        r = dc.doveadm('import', 'maildir:%s' % src, 'Imported', 'all', user='testuser')
        imp = doveadm_fetch(dc, 'mailbox guid flags', 'mailbox', 'Imported*', 'all')
        assert sorted(r_['guid'] for r_ in imp) == bases, (imp, r.stdout, r.stderr)
        assert all(flagset(r_['flags'].split()) == {'\\Seen'} for r_ in imp), imp
        # still unique overall
        allg = [r_['guid'] for r_ in doveadm_fetch(dc, 'guid', 'all')]
        assert len(allg) == 6 + 1 + 2, allg
        dc.assert_no_log_errors()


# ---------------------------------------------------------------------------
# 4. POP3 sizes without opening bodies

@harness.drivers('lmdb', 'maildir')
def test_pop3_sizes_without_reading_bodies(driver):
    msgs = [make_msg('size %d' % i, [b'line %d of message %d' % (j, i) for j in range(i * 7 + 1)])
            for i in range(6)]
    # LF-only mail: the stored size differs from the CRLF size
    msgs.append(lf(make_msg('lf only', [b'bare LF line %d' % j for j in range(50)])))
    cfg = NO_RECEIVED + 'pop3_fast_size_lookups = yes\n'
    with harness.Dovecot(driver, extra=cfg, mail_debug=True) as dc:
        deliver(dc, msgs)
        sizes = [len(PREFIX + crlf(m)) for m in msgs]

        start = len(dc.log())
        pop = dc.pop3()
        assert pop.stat() == (len(msgs), sum(sizes)), (pop.stat(), sizes)
        resp, lines, _ = pop.list()
        assert [tuple(map(int, l.split())) for l in lines] == \
            [(n + 1, s) for n, s in enumerate(sizes)], lines
        assert pop.list(3).split()[2] == str(sizes[2]).encode()
        pop.quit()
        text = wait_log(dc, start, r'pop3\(testuser\).*Disconnected')
        assert not opened_lines(text, 'pop3'), opened_lines(text, 'pop3')

        # RETR does open it
        start = len(dc.log())
        pop = dc.pop3()
        st, body = pop3_multiline(pop, 'RETR 7')
        assert body == PREFIX + crlf(msgs[6]) and st == b'+OK %d octets' % sizes[6], st
        pop.quit()
        text = wait_log(dc, start, r'pop3\(testuser\).*Disconnected')
        assert len(opened_lines(text, 'pop3')) >= 1, text[-3000:]

        imap = dc.imap()
        select(imap)
        got = imap_fetch(imap, '1:*', '(RFC822.SIZE)')
        assert [got[u]['RFC822.SIZE'] for u in sorted(got)] == sizes
        imap.logout()
        dc.assert_no_log_errors()


# ---------------------------------------------------------------------------
# 5. large and 8-bit mail

@harness.drivers('lmdb', 'maildir')
def test_large_message_50mb(driver):
    body = big_body(50 * 1024 * 1024, 'fifty')
    tail = marker('END50')
    msg = make_msg('fifty megabytes', body + [tail])
    wire = PREFIX + msg
    assert len(wire) > 50 * 1024 * 1024
    old_max = imaplib._MAXLINE
    imaplib._MAXLINE = 200 * 1024 * 1024
    try:
        with harness.Dovecot(driver, extra=NO_RECEIVED) as dc:
            deliver(dc, [msg])
            del body
            imap = dc.imap()
            select(imap)
            got = imap_fetch(imap, '1', '(RFC822.SIZE BODY.PEEK[])')
            assert got[1]['RFC822.SIZE'] == len(wire), (got[1]['RFC822.SIZE'], len(wire))
            assert hashlib.sha256(got[1]['BODY[]']).hexdigest() == \
                hashlib.sha256(wire).hexdigest(), 'IMAP BODY[] differs'
            del got
            imap.logout()
            pop = dc.pop3()
            st, data = pop3_multiline(pop, 'RETR 1')
            assert st == b'+OK %d octets' % len(wire), st
            assert data == wire, 'POP3 RETR differs'
            del data
            pop.quit()
            if driver == 'lmdb':
                s = lmdb_stats(dc)
                assert s['body_bytes'] == len(lf(wire)), s
                assert s['message_bytes'] == len(wire), s
            dc.assert_no_log_errors()
    finally:
        imaplib._MAXLINE = old_max


@harness.drivers('lmdb', 'maildir')
def test_8bit_message(driver):
    allbytes = bytes(b for b in range(1, 256) if b not in (0x0a, 0x0d))
    assert len(allbytes) == 253
    lines = [allbytes, allbytes[::-1], b'.' + allbytes[100:200], b'.', b'..', b'\xff\xfe\x80',
             allbytes[:60], b'end']
    msg = make_msg('8bit \xe4\xf6\xfc'.encode('latin-1'), lines,
                   extra_headers=b'MIME-Version: 1.0\r\n'
                                 b'Content-Type: text/plain; charset=iso-8859-1\r\n'
                                 b'Content-Transfer-Encoding: 8bit\r\n')
    wire = PREFIX + msg
    with harness.Dovecot(driver, extra=NO_RECEIVED) as dc:
        deliver(dc, [msg, lf(msg)])
        imap = dc.imap()
        select(imap)
        got = imap_fetch(imap, '1:*', '(RFC822.SIZE BODY.PEEK[] BODY.PEEK[TEXT])')
        for uid in (1, 2):
            assert got[uid]['BODY[]'] == wire, uid
            assert got[uid]['RFC822.SIZE'] == len(wire), uid
            assert got[uid]['BODY[TEXT]'] == b''.join(l + b'\r\n' for l in lines), uid
        imap.logout()
        pop = dc.pop3()
        for n in (1, 2):
            st, data = pop3_multiline(pop, 'RETR %d' % n)
            assert data == wire, n
        pop.quit()
        dc.assert_no_log_errors()


# ---------------------------------------------------------------------------
# 6. headers cached at save: ENVELOPE of 300 mails without opening them

@harness.drivers('lmdb', 'maildir')
def test_envelope_from_cache(driver):
    n = 300
    msgs = [make_msg('cached subject %03d' % i, [b'body of %d' % i]) for i in range(n)]
    # ENVELOPE is built from these headers; 2.3 has no single envelope field
    cfg = ('mail_always_cache_fields = date.received flags hdr.date hdr.subject hdr.from '
           'hdr.sender hdr.reply-to hdr.to hdr.cc hdr.bcc hdr.in-reply-to hdr.message-id\n')
    with harness.Dovecot(driver, extra=cfg, mail_debug=True) as dc:
        deliver(dc, msgs)
        imap = dc.imap()
        start = len(dc.log())
        assert select(imap) == n
        got = imap_fetch(imap, '1:*', '(ENVELOPE)')
        imap.logout()
        assert sorted(got) == list(range(1, n + 1))
        for uid in range(1, n + 1):
            env = got[uid]['ENVELOPE']
            assert env[1] == b'cached subject %03d' % (uid - 1), env
            assert env[2] == [[b'Alice', None, b'alice', b'example.com']], env
            assert env[5] == [[b'Bob', None, b'bob', b'example.com']], env
        text = wait_log(dc, start, r'imap\(testuser\).*Disconnected')
        opened = opened_lines(text, 'imap')
        assert not opened, '%d mails opened, e.g. %s' % (len(opened), opened[:3])
        dc.assert_no_log_errors()


# ---------------------------------------------------------------------------
# 7. zlib and mail_crypt on top of the storage

def _transform_check(dc, msgs, mark):
    """Read back over IMAP and POP3, check sizes; return the storage files
    that contain the plaintext marker."""
    wires = [PREFIX + crlf(m) for m in msgs]
    imap = dc.imap()
    assert select(imap) == len(msgs)
    got = imap_fetch(imap, '1:*', '(RFC822.SIZE BODY.PEEK[] BODY.PEEK[HEADER.FIELDS (SUBJECT)])')
    for uid, w in enumerate(wires, 1):
        assert got[uid]['BODY[]'] == w, uid
        assert got[uid]['RFC822.SIZE'] == len(w), (uid, got[uid]['RFC822.SIZE'], len(w))
    # search inside the body works through the transformation
    typ, data = imap.uid('SEARCH', 'BODY', mark.decode())
    assert data[0].split() == [str(i).encode() for i in range(1, len(msgs) + 1)], data
    imap.logout()
    pop = dc.pop3()
    assert pop.stat() == (len(msgs), sum(map(len, wires)))
    for n, w in enumerate(wires, 1):
        st, data = pop3_multiline(pop, 'RETR %d' % n)
        assert data == w and st == b'+OK %d octets' % len(w), n
    pop.quit()
    if dc.driver == 'lmdb':
        v = dc.doveadm('lmdb', 'verify', user='testuser', check=False)
        assert v.returncode == 0, (v.stdout, v.stderr)
        s = lmdb_stats(dc)
        assert s['message_bytes'] == sum(map(len, wires)), s
        assert s['messages'] == len(msgs), s
    return storage_contains(dc, mark)


def _transform_msgs(mark):
    text = [b'This line repeats to make the message compress well, %d.' % (i % 10)
            for i in range(400)]
    return [make_msg('transform %d' % i, text[:100 * (i + 1)] + [b'marker ' + mark]
                     + [b'tail %d' % i])
            for i in range(3)] + \
        [lf(make_msg('transform lf', [b'marker ' + mark, b'lf only']))]


@harness.drivers('lmdb', 'maildir')
def test_zlib(driver):
    mark = marker('ZLIBMARK')
    msgs = _transform_msgs(mark)
    cfg = NO_RECEIVED + 'plugin {\n  zlib_save = gz\n  zlib_save_level = 6\n}\n'
    with harness.Dovecot(driver, extra=cfg, mail_plugins=('zlib',)) as dc:
        deliver(dc, msgs)
        hits = _transform_check(dc, msgs, mark)
        assert hits == [], 'plaintext marker found in %s' % hits
        if driver == 'lmdb':
            s = lmdb_stats(dc)
            assert s['body_bytes'] < s['message_bytes'] // 3, s
        dc.restart()
        assert _transform_check(dc, msgs, mark) == []
        dc.assert_no_log_errors()
    # control: the same mail without zlib is stored in plain text
    with harness.Dovecot(driver, extra=NO_RECEIVED) as plain:
        deliver(plain, msgs)
        hits = _transform_check(plain, msgs, mark)
        if driver == 'lmdb':
            assert data_mdb(plain) in hits, hits
        else:
            assert len([h for h in hits if '/cur/' in h or '/new/' in h]) == len(msgs), hits
        plain.assert_no_log_errors()


@harness.drivers('lmdb', 'maildir')
def test_mail_crypt(driver):
    mark = marker('CRYPTMARK')
    msgs = _transform_msgs(mark)
    dc = harness.Dovecot(driver, mail_plugins=('mail_crypt',))
    key, pub = dc.path('k.pem'), dc.path('p.pem')
    # dcrypt wants PKCS#8 (BEGIN PRIVATE KEY), not the SEC1 form ecparam writes
    for cmd in ('openssl ecparam -name prime256v1 -genkey -noout | openssl pkey -out %s' % key,
                'openssl pkey -in %s -pubout -out %s' % (key, pub)):
        r = subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
    dc.extra = NO_RECEIVED + ('plugin {\n'
                              '  mail_crypt_global_private_key = <%s\n'
                              '  mail_crypt_global_public_key = <%s\n'
                              '  mail_crypt_save_version = 2\n'
                              '}\n' % (key, pub))
    with dc:
        deliver(dc, msgs)
        hits = _transform_check(dc, msgs, mark)
        assert hits == [], 'plaintext marker found in %s' % hits
        if driver == 'lmdb':
            with open(data_mdb(dc), 'rb') as f:
                assert f.read().count(b'CRYPTED\x03\x07') >= len(msgs), 'no mail_crypt headers'
        dc.restart()
        assert _transform_check(dc, msgs, mark) == []
        dc.assert_no_log_errors()


# ---------------------------------------------------------------------------
# 8. lazy_expunge with lazy_expunge_only_last_instance

@harness.drivers('lmdb', 'maildir')
def test_lazy_expunge_last_instance(driver):
    msg = make_msg('lazy', [b'keep me until the last copy is gone'])
    other = make_msg('lazy other', [b'a message with one instance'])
    cfg = NO_RECEIVED + ('plugin {\n  lazy_expunge = EXPUNGED\n'
                         '  lazy_expunge_only_last_instance = yes\n}\n')
    with harness.Dovecot(driver, extra=cfg, mail_plugins=('lazy_expunge',)) as dc:
        deliver(dc, [msg, other])
        imap = dc.imap()
        ok(imap.create('EXPUNGED'))
        ok(imap.create('Other'))
        select(imap)
        ok(imap.uid('COPY', '1', 'Other'))

        def expunged_ids():
            sel = select(imap, 'EXPUNGED', readonly=True)
            if sel == 0:
                return []
            got = imap_fetch(imap, '1:*', '(ENVELOPE)')
            return sorted(v['ENVELOPE'][1] for v in got.values())

        # one instance of two: nothing kept
        select(imap)
        ok(imap.uid('STORE', '1', '+FLAGS.SILENT', '(\\Deleted)'))
        ok(imap.expunge())
        assert expunged_ids() == []
        if driver == 'lmdb':
            s = lmdb_stats(dc)
            assert (s['messages'], s['bodies']) == (2, 2), s
        # the last instance: kept in EXPUNGED
        select(imap, 'Other')
        ok(imap.uid('STORE', '1', '+FLAGS.SILENT', '(\\Deleted)'))
        ok(imap.expunge())
        assert expunged_ids() == [b'lazy']
        # a single-instance message goes there directly
        select(imap)
        ok(imap.uid('STORE', '2', '+FLAGS.SILENT', '(\\Deleted)'))
        ok(imap.expunge())
        assert expunged_ids() == [b'lazy', b'lazy other']
        select(imap, 'EXPUNGED')
        got = imap_fetch(imap, '1:*', '(BODY.PEEK[])')
        assert sorted(v['BODY[]'] for v in got.values()) == sorted([PREFIX + msg, PREFIX + other])
        imap.logout()
        assert status(dc, 'INBOX')['messages'] == '0'
        assert status(dc, 'Other')['messages'] == '0'
        if driver == 'lmdb':
            s = lmdb_stats(dc)
            assert (s['messages'], s['references']) == (2, 2), s
            v = dc.doveadm('lmdb', 'verify', user='testuser', check=False)
            assert v.returncode == 0, (v.stdout, v.stderr)
        dc.assert_no_log_errors()


# ---------------------------------------------------------------------------
# 9. purge (lmdb)

@harness.drivers('lmdb')
def test_expunge_frees_bodies(driver):
    """A body goes with its last link, in the expunge itself: expunged
    mail never takes space (a stream still reading it keeps its own
    snapshot: test_slow_retr_of_expunged_message); a body another link
    still uses stays; purge has nothing left to free."""
    small = make_msg('small', [b'stays'])
    big = make_msg('one megabyte', big_body(1024 * 1024, 'purge'))
    cfg = NO_RECEIVED + 'plugin {\n  lmdb_autopurge_interval = 0\n}\n'
    with harness.Dovecot(driver, extra=cfg) as dc:
        deliver(dc, [small])
        s0 = lmdb_stats(dc)
        deliver(dc, [big])
        s1 = lmdb_stats(dc)
        big_size = s1['body_bytes'] - s0['body_bytes']
        assert big_size == len(lf(PREFIX + big)), (s0, s1)
        assert s1['bodies'] == 2

        imap = dc.imap()
        ok(imap.create('Other'))
        select(imap)
        # the copy shares the body: expunging the original keeps it
        ok(imap.uid('COPY', '2', 'Other'))
        ok(imap.uid('STORE', '2', '+FLAGS.SILENT', '(\\Deleted)'))
        ok(imap.expunge())
        s2 = lmdb_stats(dc)
        assert (s2['messages'], s2['bodies']) == (2, 2), s2
        assert s2['body_bytes'] == s1['body_bytes'], s2
        # the last link: freed at once, no purge needed
        select(imap, 'Other')
        ok(imap.uid('STORE', '1', '+FLAGS.SILENT', '(\\Deleted)'))
        ok(imap.expunge())
        imap.logout()
        s3 = lmdb_stats(dc)
        assert (s3['messages'], s3['references'], s3['bodies']) == (1, 1, 1), s3
        assert s3['body_bytes'] == s1['body_bytes'] - big_size == s0['body_bytes'], (s1, s3)
        dc.doveadm('purge', user='testuser')
        s4 = lmdb_stats(dc)
        assert [s4[k] for k in ('messages', 'bodies', 'body_bytes')] == \
            [s3[k] for k in ('messages', 'bodies', 'body_bytes')], (s3, s4)
        # the survivor is fine
        pop = dc.pop3()
        assert pop3_multiline(pop, 'RETR 1')[1] == PREFIX + small
        pop.quit()
        v = dc.doveadm('lmdb', 'verify', user='testuser', check=False)
        assert v.returncode == 0, (v.stdout, v.stderr)
        dc.assert_no_log_errors()


# ---------------------------------------------------------------------------
# 10. POP3 UIDLs kept in the storage (lmdb)

@harness.drivers('lmdb')
def test_pop3_uidl_in_storage(driver):
    msgs = [make_msg('uidl %d' % i, [b'uidl body %d' % i]) for i in range(3)]
    with harness.Dovecot(driver, extra=NO_RECEIVED + 'pop3_uidl_format = %g\n') as dc:
        deliver(dc, msgs)
        rows = doveadm_fetch(dc, 'uid pop3.uidl guid', 'mailbox', 'INBOX', 'all')
        assert len(rows) == 3
        for r in rows:
            assert r['guid'] and r['pop3.uidl'] == r['guid'], r
        pop = dc.pop3()
        resp, lines, _ = pop.uidl()
        assert [l.decode().split() for l in lines] == \
            [[str(n), r['guid']] for n, r in enumerate(rows, 1)], (lines, rows)
        pop.quit()
        # COPY keeps it
        imap = dc.imap()
        ok(imap.create('Other'))
        select(imap)
        # MOVE keeps it; COPY gives the copy a UIDL of its own (with %g it
        # would repeat its original's: both have one GUID)
        ok(imap.uid('MOVE', '2', 'Other'))
        select(imap, 'Other')
        typ, data = imap.response('UIDVALIDITY')
        other_uidv = int(data[0])
        ok(imap.uid('COPY', '1', 'Other'))
        imap.logout()
        cp = doveadm_fetch(dc, 'uid pop3.uidl guid', 'mailbox', 'Other', 'all')
        assert cp == [{'uid': '1', 'pop3.uidl': rows[1]['guid'], 'guid': rows[1]['guid']},
                      {'uid': '2', 'pop3.uidl': '%08x%08x' % (2, other_uidv),
                       'guid': rows[1]['guid']}], cp
        dc.assert_no_log_errors()

    # with %08Xu%08Xv the UIDL is fixed at save: a moved message keeps the
    # original's value (not its new UID/UIDVALIDITY), a copy gets its own
    with harness.Dovecot(driver, extra=NO_RECEIVED + 'pop3_uidl_format = %08Xu%08Xv\n') as dc:
        deliver(dc, msgs)
        pop = dc.pop3()
        resp, lines, _ = pop.uidl()
        uidls = [l.decode().split()[1] for l in lines]
        pop.quit()
        imap = dc.imap()
        select(imap)
        typ, data = imap.response('UIDVALIDITY')
        uidv = int(data[0])
        assert uidls == ['%08x%08x' % (n, uidv) for n in (1, 2, 3)], (uidls, uidv)
        rows = doveadm_fetch(dc, 'uid pop3.uidl', 'mailbox', 'INBOX', 'all')
        assert [r['pop3.uidl'] for r in rows] == uidls, rows
        ok(imap.create('Other'))
        ok(imap.uid('MOVE', '3', 'Other'))
        select(imap, 'Other')
        typ, data = imap.response('UIDVALIDITY')
        other_uidv = int(data[0])
        ok(imap.uid('COPY', '1', 'Other'))
        imap.logout()
        cp = doveadm_fetch(dc, 'uid pop3.uidl', 'mailbox', 'Other', 'all')
        assert [r['pop3.uidl'] for r in cp] == [uidls[2], '%08x%08x' % (2, other_uidv)], cp
        dc.assert_no_log_errors()

    # formats the storage can't provide (%f: file name, %m: header MD5) are
    # refused with an error naming the setting, not silently replaced
    for fmt in ('%f', '%m', '%08Xu%m'):
        with harness.Dovecot(driver, extra=NO_RECEIVED + 'pop3_uidl_format = %s\n' % fmt) as dc:
            start = len(dc.log())
            failed = False
            try:
                pop = dc.pop3()
                try:
                    pop.uidl()
                except harness.poplib.error_proto:
                    failed = True
                try:
                    pop.quit()
                except Exception:
                    pass
            except (harness.poplib.error_proto, OSError, EOFError):
                failed = True
            assert failed, 'POP3 with pop3_uidl_format=%s worked on lmdb' % fmt
            text = wait_log(dc, start, r'pop3_uidl_format')
            err = [l for l in text.splitlines() if 'pop3_uidl_format' in l]
            # the format as the config has it (2.4: %{filename}, %{md5})
            shown = harness.dovecot_conf.uidl_format_24(fmt) if dc.is_24 else fmt
            assert any(re.search(r'(Error|Fatal):', l) and shown in l for l in err), err


def _uidl_list(dc):
    pop = dc.pop3()
    resp, lines, _ = pop.uidl()
    pop.quit()
    return [l.decode().split()[1] for l in lines]


@harness.drivers('lmdb')
def test_pop3_uidl_from_cache(driver):
    """A listing is answered from dovecot.index.cache once the UIDLs are
    there (no LMDB page read per message); neither the cache nor its loss
    ever changes a UIDL, even when pop3_uidl_format changes."""
    msgs = [make_msg('cached uidl %d' % i, [b'body %d' % i]) for i in range(4)]
    with harness.Dovecot(driver, extra=NO_RECEIVED + 'pop3_uidl_format = %08Xu%08Xv\n') as dc:
        deliver(dc, msgs)
        first = _uidl_list(dc)
        assert len(first) == 4 and len(set(first)) == 4, first
        assert _uidl_list(dc) == first
        caches = [os.path.join(d, f) for d, _, fs in os.walk(dc.mail_dir())
                  for f in fs if f == 'dovecot.index.cache']
        assert caches, 'no dovecot.index.cache under %s' % dc.mail_dir()
        cached = b''.join(open(c, 'rb').read() for c in caches)
        assert all(u.encode() in cached for u in first), 'UIDLs not in the cache'

        # a new format does not change stored UIDLs: from the cache ...
        dc.stop()
        dc.extra = NO_RECEIVED + 'pop3_uidl_format = %g\n'
        dc.start()
        assert _uidl_list(dc) == first
        # ... nor from the storage when the cache is gone
        dc.stop()
        for c in caches:
            os.unlink(c)
        dc.start()
        assert _uidl_list(dc) == first
        rows = doveadm_fetch(dc, 'uid pop3.uidl', 'mailbox', 'INBOX', 'all')
        assert [r['pop3.uidl'] for r in rows] == first, rows
        dc.assert_no_log_errors()


# ---------------------------------------------------------------------------
# 11. damaged chunk (lmdb)

@harness.drivers('lmdb')
def test_damaged_body_detected(driver):
    mark = marker('DAMAGEMARK')
    good1 = make_msg('good one', [b'fine'])
    bad = make_msg('to be damaged', big_body(300 * 1024, 'damage') + [mark])
    good2 = make_msg('good two', [b'also fine'])
    with harness.Dovecot(driver, extra=NO_RECEIVED) as dc:
        deliver(dc, [good1, bad, good2])
        guid = doveadm_fetch(dc, 'uid guid', 'mailbox', 'INBOX', 'uid', '2')[0]['guid']
        dc.stop()
        with open(data_mdb(dc), 'r+b') as f:
            data = f.read()
            # LMDB reuses page buffers without clearing them, so the
            # unused middle of a later B-tree page may hold a stale copy
            # of the chunk: flip the byte in every copy (only the chunk's
            # is ever read)
            assert data.count(mark) >= 1, 'marker not in data.mdb'
            for m in re.finditer(re.escape(mark), data):
                pos = m.start() + len(mark) // 2
                f.seek(pos)
                f.write(bytes([data[pos] ^ 0x20]))
        del data
        dc.start()

        # POP3: never +OK with the body
        start = len(dc.log())
        pop = dc.pop3()
        try:
            pop._putcmd('RETR 2')
            line = pop.file.readline(65536)
            assert not line.startswith(b'+OK'), 'RETR of a damaged body: %r' % line
            assert line == b'' or line.startswith(b'-ERR'), line
        except (OSError, EOFError):
            pass
        try:
            pop.close()
        except Exception:
            pass
        # IMAP: NO or BYE, never the body
        imap = dc.imap()
        select(imap)
        try:
            typ, data = imap.uid('FETCH', '2', '(BODY.PEEK[])')
            assert typ == 'NO', (typ, str(data)[:300])
            assert mark not in b''.join(x if isinstance(x, bytes) else b''.join(x)
                                        for x in data if x is not None)
        except imaplib.IMAP4.abort:
            pass
        try:
            imap.logout()
        except Exception:
            pass
        text = wait_log(dc, start, r'uid=2 .*damaged')
        lines = [l for l in text.splitlines() if 'damaged' in l]
        assert any(guid in l and 'INBOX' in l for l in lines), lines

        v = dc.doveadm('lmdb', 'verify', user='testuser', check=False)
        assert v.returncode != 0, (v.stdout, v.stderr)
        probs = [l for l in v.stdout.splitlines()[1:] if l.strip()]
        assert len(probs) == 1, v.stdout
        assert 'damaged' in probs[0] and 'INBOX uid 2' in probs[0] and guid in probs[0], probs

        # the others are fine
        pop = dc.pop3()
        assert pop.stat()[0] == 3
        assert pop3_multiline(pop, 'RETR 1')[1] == PREFIX + good1
        assert pop3_multiline(pop, 'RETR 3')[1] == PREFIX + good2
        pop.quit()
        imap = dc.imap()
        select(imap)
        got = imap_fetch(imap, '1,3', '(BODY.PEEK[])')
        assert got[1]['BODY[]'] == PREFIX + good1 and got[3]['BODY[]'] == PREFIX + good2
        # metadata of the damaged one is still there
        got = imap_fetch(imap, '2', '(RFC822.SIZE)')
        assert got[2]['RFC822.SIZE'] == len(PREFIX + bad), got
        imap.logout()


# ---------------------------------------------------------------------------
# 12. everyday doveadm commands

@harness.drivers('lmdb', 'maildir')
def test_doveadm_commands(driver):
    msgs = [make_msg('doveadm %d' % i, [b'doveadm body %d' % i] * (i + 1)) for i in range(5)]
    sizes = [len(PREFIX + m) for m in msgs]
    cfg = NO_RECEIVED + ('plugin {\n  quota = count:User quota\n  quota_vsizes = yes\n'
                         '  quota_rule = *:storage=100M:messages=1000\n}\n')
    with harness.Dovecot(driver, extra=cfg, mail_plugins=('quota',)) as dc:
        deliver(dc, msgs)

        def da(*args, **kw):
            r = dc.doveadm(*args, user='testuser', **kw)
            assert r.returncode == 0
            return r

        # fetch
        rows = doveadm_fetch(dc, 'uid hdr.subject size.virtual', 'mailbox', 'INBOX', 'all')
        assert [(r['uid'], r['hdr.subject'], int(r['size.virtual'])) for r in rows] == \
            [(str(i + 1), 'doveadm %d' % i, sizes[i]) for i in range(5)], rows
        r = da('fetch', 'body', 'mailbox', 'INBOX', 'uid', '3')
        assert r.stdout.replace('\r\n', '\n') == 'body:\n' + 'doveadm body 2\n' * 3, r.stdout
        # search
        mguid = status(dc, 'INBOX', 'guid')['guid']
        r = da('search', 'mailbox', 'INBOX', 'subject', 'doveadm 3')
        assert r.stdout.split() == [mguid, '4'], r.stdout
        r = da('search', 'mailbox', 'INBOX', 'larger', str(sizes[2]))
        assert r.stdout.split()[1::2] == ['4', '5'], r.stdout
        # mailbox create / status / rename / delete
        da('mailbox', 'create', 'Foo', 'Bar')
        r = da('mailbox', 'list')
        assert sorted(r.stdout.split()) == ['Bar', 'Foo', 'INBOX'], r.stdout
        da('copy', 'Foo', 'mailbox', 'INBOX', 'uid', '1:2')
        da('move', 'Bar', 'mailbox', 'INBOX', 'uid', '5')
        assert status(dc, 'Foo', 'messages vsize') == \
            {'messages': '2', 'vsize': str(sizes[0] + sizes[1])}
        assert status(dc, 'INBOX', 'messages uidnext') == {'messages': '4', 'uidnext': '6'}
        da('mailbox', 'rename', 'Foo', 'Baz')
        r = da('mailbox', 'list')
        assert sorted(r.stdout.split()) == ['Bar', 'Baz', 'INBOX'], r.stdout
        assert status(dc, 'Baz', 'messages') == {'messages': '2'}
        rows = doveadm_fetch(dc, 'uid hdr.subject', 'mailbox', 'Baz', 'all')
        assert [r['hdr.subject'] for r in rows] == ['doveadm 0', 'doveadm 1'], rows
        # expunge
        da('expunge', 'mailbox', 'INBOX', 'uid', '1')
        assert status(dc, 'INBOX', 'messages') == {'messages': '3'}
        da('expunge', 'mailbox', 'Bar', 'all')
        da('mailbox', 'delete', 'Bar')
        r = da('mailbox', 'list')
        assert sorted(r.stdout.split()) == ['Baz', 'INBOX'], r.stdout
        # quota: INBOX 2,3,4 + Baz 1,2
        exp_bytes = sizes[1] + sizes[2] + sizes[3] + sizes[0] + sizes[1]

        def quota():
            r = da('quota', 'get')
            vals = {}
            for line in r.stdout.splitlines()[1:]:
                m = re.match(r'^User quota\s+(STORAGE|MESSAGE)\s+(\d+)\s+(\S+)\s+(\d+)', line)
                if m:
                    vals[m.group(1)] = (int(m.group(2)), m.group(3))
            return vals, r.stdout

        vals, out = quota()
        # quota_get_resource() rounds bytes up to kilobytes
        assert vals == {'STORAGE': ((exp_bytes + 1023) // 1024, str(100 * 1024)),
                        'MESSAGE': (5, '1000')}, out
        da('quota', 'recalc')
        assert quota()[0] == vals
        # force-resync and index keep everything
        da('force-resync', '*')
        da('index', 'INBOX')
        da('index', 'Baz')
        assert status(dc, 'INBOX', 'messages uidnext') == {'messages': '3', 'uidnext': '6'}
        rows = doveadm_fetch(dc, 'uid hdr.subject', 'mailbox', 'INBOX', 'all')
        assert [(r['uid'], r['hdr.subject']) for r in rows] == \
            [('2', 'doveadm 1'), ('3', 'doveadm 2'), ('4', 'doveadm 3')], rows
        imap = dc.imap()
        select(imap)
        got = imap_fetch(imap, '1:*', '(BODY.PEEK[])')
        assert [got[u]['BODY[]'] for u in sorted(got)] == [PREFIX + msgs[i] for i in (1, 2, 3)]
        imap.logout()
        if driver == 'lmdb':
            s = lmdb_stats(dc)
            assert s['messages'] == 5 and s['message_bytes'] == exp_bytes, s
            v = dc.doveadm('lmdb', 'verify', user='testuser', check=False)
            assert v.returncode == 0, (v.stdout, v.stderr)
        dc.assert_no_log_errors()
