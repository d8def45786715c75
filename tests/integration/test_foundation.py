"""Foundation scenarios: LMTP delivery, IMAP/POP3 read-back, POP3 DELE/RSET,
flag persistence across restart, EXPUNGE, doveadm mailbox status.

Every scenario runs on lmdb and maildir and is checked against values
computed from the generated messages, not only against the other driver.
"""

import glob
import os
import re
import socket

import harness
import mailgen
from harness import crlf, lf, imap_fetch, pop3_multiline

# What Dovecot's LMTP prepends to every delivered message (default config:
# lmtp_add_received_header = yes, lmtp_hdr_delivery_address = final).
PREFIX_RE = re.compile(
    rb'\AReturn-Path: <sender@example\.com>\r\n'
    rb'Delivered-To: testuser\r\n'
    rb'Received: from client\.example\.com \(\[127\.0\.0\.1\]\)\r\n'
    rb'\tby localhost with LMTP\r\n'
    rb'\tid [A-Za-z0-9+/]{22}(?::T\d+)?\r\n'
    rb'\t\(envelope-from <sender@example\.com>\)\r\n'
    rb'\tfor <testuser>; [A-Z][a-z]{2}, [ 0-9]?\d [A-Z][a-z]{2} \d{4} \d\d:\d\d:\d\d [+-]\d{4}\r\n')

# Deterministic prefix when the Received: header is switched off
NO_RECEIVED = 'lmtp_add_received_header = no\n'
FIXED_PREFIX = b'Return-Path: <sender@example.com>\r\nDelivered-To: testuser\r\n'

_MSGS = None


def messages():
    global _MSGS
    if _MSGS is None:
        _MSGS = mailgen.generate(100)
    return _MSGS


# ---------------------------------------------------------------------------
# helpers

def deliver(dc, msgs, rcpt='testuser'):
    results = dc.lmtp_deliver_many([rcpt], [m.raw for m in msgs])
    for m, r in zip(msgs, results):
        assert r.status == {rcpt: 250}, 'message %d: %r' % (m.index, r)
        assert r.data[rcpt][1].startswith('2.0.0 <%s> ' % rcpt), r


def split_prefix(body: bytes, fixed_prefix: bytes | None = None) -> tuple[bytes, bytes]:
    if fixed_prefix is not None:
        assert body.startswith(fixed_prefix), body[:400]
        return fixed_prefix, body[len(fixed_prefix):]
    mo = PREFIX_RE.match(body)
    assert mo, 'unexpected LMTP-added headers: %r' % body[:400]
    return mo.group(0), body[mo.end():]


def header_block(wire: bytes) -> bytes:
    i = wire.find(b'\r\n\r\n')
    assert i >= 0
    return wire[:i + 4]


def text_block(wire: bytes) -> bytes:
    return wire[wire.find(b'\r\n\r\n') + 4:]


def flagset(flags):
    return {f for f in flags if f != '\\Recent'}


def select(imap, mailbox='INBOX', readonly=False):
    typ, data = imap.select(mailbox, readonly)
    assert typ == 'OK', data
    return int(data[0])


def uidvalidity(imap):
    typ, data = imap.response('UIDVALIDITY')
    assert data and data[0], data
    return int(data[0])


def b(s):
    return s if isinstance(s, bytes) or s is None else s.encode()


def expect_addr_list(people):
    if not people:
        return None
    return [[b(name), None, b(mbox), b(host)] for name, mbox, host in people]


def check_envelope(m, env):
    # date subject from sender reply-to to cc bcc in-reply-to message-id
    assert len(env) == 10, env
    assert env[0] == b(m.date), (env[0], m.date)
    assert env[1] == b(m.subject), (m.index, env[1], m.subject)
    assert env[2] == expect_addr_list(m.from_), (env[2], m.from_)
    assert env[3] == env[2] and env[4] == env[2], env  # sender/reply-to default to From
    assert env[5] == expect_addr_list(m.to), (env[5], m.to)
    assert env[6] == expect_addr_list(m.cc), (env[6], m.cc)
    assert env[7] is None
    assert env[8] == b(m.in_reply_to), (env[8], m.in_reply_to)
    assert env[9] == b(m.message_id), (env[9], m.message_id)


def _params(lst):
    if lst is None:
        return {}
    return {lst[i].decode().lower(): lst[i + 1].decode() for i in range(0, len(lst), 2)}


def _text_lines(body: bytes) -> int:
    # Dovecot counts the LFs inside the part body; in a multipart the CRLF
    # before the boundary belongs to the boundary, so the last line of such
    # a part is not counted.
    return body.count(b'\n')


def check_bodystructure(expected, bs, where='top'):
    if expected[0] == 'multipart':
        _, subtype, children = expected
        kids = [x for x in bs if isinstance(x, list)]
        rest = [x for x in bs if not isinstance(x, list)]
        assert len(kids) >= len(children), (where, bs)
        kids = kids[:len(children)]
        assert rest[0].decode().lower() == subtype, (where, rest[0], subtype)
        for k, (ce, cb) in enumerate(zip(children, kids)):
            check_bodystructure(ce, cb, '%s.%d' % (where, k + 1))
        return
    ctype, subtype, params, cte, body = expected
    assert bs[0].decode().lower() == ctype and bs[1].decode().lower() == subtype, (where, bs[:2])
    got = _params(bs[2])
    for k, v in params.items():
        assert got.get(k, '').lower() == v.lower(), (where, k, got, params)
    assert bs[5].decode().lower() == cte, (where, bs[5], cte)
    assert int(bs[6]) == len(body), (where, 'size', bs[6], len(body))
    if ctype == 'text':
        assert int(bs[7]) == _text_lines(body), (where, 'lines', bs[7], _text_lines(body))


def maildir_files(dc, user='testuser'):
    root = dc.mail_dir(user)
    return sorted(glob.glob(os.path.join(root, 'cur', '*')) + glob.glob(os.path.join(root, 'new', '*')))


def message_ids_of(data: dict) -> set:
    """{uid: {'ENVELOPE': ...}} -> set of Message-IDs."""
    return {v['ENVELOPE'][9].decode() for v in data.values()}


# ---------------------------------------------------------------------------
# 1. LMTP delivery + IMAP / POP3 read-back

@harness.drivers('lmdb', 'maildir')
def test_deliver_and_read_back(driver):
    msgs = messages()
    with harness.Dovecot(driver) as dc:
        deliver(dc, msgs)
        imap = dc.imap()
        assert select(imap) == len(msgs)
        uidv = uidvalidity(imap)

        full = imap_fetch(imap, '1:*', '(BODY.PEEK[] RFC822.SIZE FLAGS)')
        assert sorted(full) == list(range(1, len(msgs) + 1)), sorted(full)[:10]
        prefixes = {}
        for m in msgs:
            uid = m.index + 1
            d = full[uid]
            prefix, rest = split_prefix(d['BODY[]'])
            prefixes[uid] = prefix
            assert rest == crlf(m.raw), 'message %d (%s, %s) differs' % (
                m.index, m.kind, 'LF' if m.eol == b'\n' else 'CRLF')
            assert d['RFC822.SIZE'] == len(d['BODY[]']), (uid, d['RFC822.SIZE'])
            assert flagset(d['FLAGS']) == set(), d['FLAGS']
        del full

        parts = imap_fetch(imap, '1:*', '(BODY.PEEK[HEADER] BODY.PEEK[TEXT])')
        for m in msgs:
            uid = m.index + 1
            wire = prefixes[uid] + crlf(m.raw)
            assert parts[uid]['BODY[HEADER]'] == header_block(wire), m.index
            assert parts[uid]['BODY[TEXT]'] == text_block(wire), m.index
        del parts

        meta = imap_fetch(imap, '1:*', '(ENVELOPE BODYSTRUCTURE)')
        for m in msgs:
            d = meta[m.index + 1]
            check_envelope(m, d['ENVELOPE'])
            check_bodystructure(m.parts, d['BODYSTRUCTURE'], 'msg%d' % m.index)
        imap.logout()

        if driver == 'maildir':
            # what is on disk: LF line endings, S= is the file size, W= the
            # CRLF ("virtual") size that IMAP reports as RFC822.SIZE
            files = maildir_files(dc)
            assert len(files) == len(msgs)
            by_index = {}
            for f in files:
                with open(f, 'rb') as fh:
                    data = fh.read()
                idx = int(re.search(rb'\nX-Mailgen-Index: (\d+)\n', data).group(1))
                by_index[idx] = (f, data)
            for m in msgs:
                f, data = by_index[m.index]
                assert b'\r' not in data, 'maildir file has CR: %s' % f
                assert data == lf(prefixes[m.index + 1]) + lf(m.raw), f
                mo = re.search(r',S=(\d+),W=(\d+)', os.path.basename(f))
                assert int(mo.group(1)) == len(data)
                assert int(mo.group(2)) == len(prefixes[m.index + 1] + crlf(m.raw))

        # POP3
        pop = dc.pop3()
        sizes = [len(prefixes[m.index + 1]) + len(crlf(m.raw)) for m in msgs]
        assert pop.stat() == (len(msgs), sum(sizes)), (pop.stat(), sum(sizes))
        resp, lines, _ = pop.list()
        assert [tuple(map(int, l.split())) for l in lines] == \
            [(n + 1, s) for n, s in enumerate(sizes)]
        resp, lines, _ = pop.uidl()
        uidls = [l.decode().split() for l in lines]
        assert uidls == [[str(n + 1), '%08x%08x' % (n + 1, uidv)] for n in range(len(msgs))], \
            uidls[:3]
        for m in msgs:
            n = m.index + 1
            wire = prefixes[n] + crlf(m.raw)
            status, body = pop3_multiline(pop, 'RETR %d' % n)
            assert body == wire, 'POP3 RETR %d differs' % n
            assert status == b'+OK %d octets' % len(wire), status
            status, top = pop3_multiline(pop, 'TOP %d 0' % n)
            assert top == header_block(wire), 'POP3 TOP %d 0 differs' % n
        # single-message forms
        assert pop.list(7).split()[2] == str(sizes[6]).encode()
        assert pop.uidl(7).split()[2] == ('%08x%08x' % (7, uidv)).encode()
        pop.quit()
        # POP3 RETR must not have changed anything but \Seen
        imap = dc.imap()
        assert select(imap) == len(msgs)
        fl = imap_fetch(imap, '1:*', '(FLAGS)')
        assert all(flagset(v['FLAGS']) <= {'\\Seen'} for v in fl.values())
        imap.logout()
        dc.assert_no_log_errors()


def _fetch_compare_set(dc, fixed_prefix):
    imap = dc.imap()
    select(imap)
    data = imap_fetch(imap, '1:*', '(BODY.PEEK[] RFC822.SIZE ENVELOPE BODYSTRUCTURE)')
    imap.logout()
    pop = dc.pop3()
    retr = {}
    for n in range(1, len(data) + 1):
        retr[n] = pop3_multiline(pop, 'RETR %d' % n)[1]
    pop.quit()
    return data, retr


def test_cross_driver_lmdb_vs_maildir():
    msgs = messages()
    with harness.Dovecot('lmdb', extra=NO_RECEIVED) as a, \
            harness.Dovecot('maildir', extra=NO_RECEIVED) as b_:
        deliver(a, msgs)
        deliver(b_, msgs)
        da, ra = _fetch_compare_set(a, FIXED_PREFIX)
        db, rb = _fetch_compare_set(b_, FIXED_PREFIX)
        assert sorted(da) == sorted(db) == list(range(1, len(msgs) + 1))
        for m in msgs:
            uid = m.index + 1
            x, y = da[uid], db[uid]
            expected = FIXED_PREFIX + crlf(m.raw)
            assert x['BODY[]'] == y['BODY[]'] == expected, 'BODY[] uid %d' % uid
            assert ra[uid] == rb[uid] == expected, 'RETR %d' % uid
            assert x['RFC822.SIZE'] == y['RFC822.SIZE'] == len(expected), uid
            assert x['BODYSTRUCTURE'] == y['BODYSTRUCTURE'], (uid, x['BODYSTRUCTURE'],
                                                              y['BODYSTRUCTURE'])
            assert x['ENVELOPE'] == y['ENVELOPE'], (uid, x['ENVELOPE'], y['ENVELOPE'])
            check_envelope(m, x['ENVELOPE'])
        a.assert_no_log_errors()
        b_.assert_no_log_errors()


# ---------------------------------------------------------------------------
# 2. POP3 DELE / RSET / QUIT

@harness.drivers('lmdb', 'maildir')
def test_pop3_dele_rset_quit(driver):
    msgs = [m for m in messages() if m.kind != 'big'][:20]
    ids = [m.message_id for m in msgs]
    with harness.Dovecot(driver) as dc:
        deliver(dc, msgs)

        def pop_ids(pop):
            count, _ = pop.stat()
            out = []
            for n in range(1, count + 1):
                hdr = pop3_multiline(pop, 'TOP %d 0' % n)[1]
                out.append(re.search(rb'\r\nMessage-ID: (\S+)\r\n', hdr).group(1).decode())
            return out

        # RSET undoes DELE
        pop = dc.pop3()
        assert pop.stat()[0] == 20
        uidl_before = pop.uidl()[1]
        for n in (1, 2, 3):
            assert pop.dele(n).startswith(b'+OK')
        assert pop.stat()[0] == 17
        try:
            pop.retr(2)
            raise AssertionError('RETR of a deleted message succeeded')
        except harness.poplib.error_proto:
            pass
        try:
            pop.dele(2)
            raise AssertionError('DELE twice succeeded')
        except harness.poplib.error_proto:
            pass
        assert pop.rset().startswith(b'+OK')
        assert pop.stat()[0] == 20
        assert pop_ids(pop) == ids
        pop.quit()

        # DELE without QUIT (connection dropped): nothing is deleted
        pop = dc.pop3()
        pop.dele(4)
        pop.sock.shutdown(socket.SHUT_RDWR)
        pop.close()
        pop = dc.pop3()
        assert pop_ids(pop) == ids
        assert pop.uidl()[1] == uidl_before
        pop.quit()

        # DELE a subset, QUIT: exactly those are gone
        dele = [2, 5, 7, 11, 19, 20]
        pop = dc.pop3()
        for n in dele:
            pop.dele(n)
        assert pop.quit().startswith(b'+OK')
        remaining = [mid for n, mid in enumerate(ids, 1) if n not in dele]
        pop = dc.pop3()
        assert pop.stat()[0] == len(remaining)
        assert pop_ids(pop) == remaining
        # UIDLs of the survivors are unchanged
        before = [l.split()[1] for l in uidl_before]
        assert [l.split()[1] for l in pop.uidl()[1]] == \
            [u for n, u in enumerate(before, 1) if n not in dele]
        pop.quit()

        imap = dc.imap()
        assert select(imap) == len(remaining)
        data = imap_fetch(imap, '1:*', '(ENVELOPE)')
        assert sorted(data) == [n for n in range(1, 21) if n not in dele]
        assert [data[u]['ENVELOPE'][9].decode() for u in sorted(data)] == remaining
        imap.logout()
        st = dc.doveadm('mailbox', 'status', 'messages', 'INBOX', user='testuser').stdout
        assert st.strip() == 'INBOX messages=%d' % len(remaining), st
        dc.assert_no_log_errors()


# ---------------------------------------------------------------------------
# 3. IMAP flags persist across restart; EXPUNGE removes exactly \Deleted

@harness.drivers('lmdb', 'maildir')
def test_flags_persist_and_expunge(driver):
    msgs = [m for m in messages() if m.kind != 'big'][:20]
    with harness.Dovecot(driver) as dc:
        deliver(dc, msgs)
        imap = dc.imap()
        select(imap)
        expected = {uid: set() for uid in range(1, 21)}

        def store(uids, op, flags):
            typ, data = imap.uid('STORE', ','.join(map(str, uids)), op, '(%s)' % ' '.join(flags))
            assert typ == 'OK', data
            for u in uids:
                if op == '+FLAGS':
                    expected[u] |= set(flags)
                elif op == '-FLAGS':
                    expected[u] -= set(flags)
                else:
                    expected[u] = set(flags)

        store([1, 3, 5, 8], '+FLAGS', ['\\Seen', '\\Flagged', '$Label1'])
        store([2, 4], '+FLAGS', ['\\Seen'])
        store([6], '+FLAGS', ['\\Answered', '\\Draft'])
        store([7, 8], '+FLAGS', ['$Label1', '$Junk'])
        store([3], '-FLAGS', ['\\Seen'])
        store([12], 'FLAGS', ['\\Flagged', 'Custom_kw'])

        def check(conn, exp):
            data = imap_fetch(conn, '1:*', '(FLAGS)')
            got = {u: flagset(v['FLAGS']) for u, v in data.items()}
            assert got == exp, '\n'.join('%d: got %s expected %s' % (u, got.get(u), exp.get(u))
                                        for u in sorted(set(got) | set(exp))
                                        if got.get(u) != exp.get(u))

        check(imap, expected)
        imap.logout()

        dc.restart()
        imap = dc.imap()
        select(imap)
        check(imap, expected)
        typ, data = imap.response('PERMANENTFLAGS')
        perm = data[0].decode()
        for kw in ('$Label1', '$Junk', 'Custom_kw', '\\*'):
            assert kw in perm, perm

        # SEARCH agrees with the flags
        typ, data = imap.uid('SEARCH', 'KEYWORD', '$Label1')
        assert sorted(map(int, data[0].split())) == [1, 3, 5, 7, 8]
        typ, data = imap.uid('SEARCH', 'UNSEEN')
        assert sorted(map(int, data[0].split())) == \
            [u for u in range(1, 21) if '\\Seen' not in expected[u]]

        deleted = [2, 6, 9, 10, 20]
        store(deleted, '+FLAGS', ['\\Deleted'])
        check(imap, expected)
        typ, data = imap.expunge()
        assert typ == 'OK'
        expunged_seqs = [int(x) for x in data if x]
        # EXPUNGE responses: sequence numbers, each relative to the state
        # after the previous one
        assert len(expunged_seqs) == len(deleted), data
        for u in deleted:
            del expected[u]
        check(imap, expected)
        env = imap_fetch(imap, '1:*', '(ENVELOPE)')
        assert [env[u]['ENVELOPE'][9].decode() for u in sorted(env)] == \
            [msgs[u - 1].message_id for u in sorted(expected)]
        imap.logout()

        dc.restart()
        imap = dc.imap()
        assert select(imap) == 15
        check(imap, expected)
        typ, data = imap.status('INBOX', '(MESSAGES UNSEEN UIDNEXT)')
        assert typ == 'OK'
        st = data[0].decode()
        assert 'MESSAGES 15' in st and 'UIDNEXT 21' in st, st
        unseen = sum(1 for f in expected.values() if '\\Seen' not in f)
        assert 'UNSEEN %d' % unseen in st, st
        imap.logout()
        pop = dc.pop3()
        assert pop.stat()[0] == 15
        pop.quit()
        dc.assert_no_log_errors()


# ---------------------------------------------------------------------------
# 4. doveadm mailbox status

@harness.drivers('lmdb', 'maildir')
def test_doveadm_mailbox_status(driver):
    msgs = [m for m in messages() if m.kind != 'big'][:12]
    with harness.Dovecot(driver) as dc:
        r = dc.doveadm('mailbox', 'status', 'messages', 'INBOX', user='testuser')
        assert r.stdout.strip() == 'INBOX messages=0', r.stdout
        deliver(dc, msgs)
        r = dc.doveadm('mailbox', 'status', 'messages', 'INBOX', user='testuser')
        assert r.stdout.strip() == 'INBOX messages=12', r.stdout
        imap = dc.imap()
        select(imap)
        sizes = imap_fetch(imap, '1:*', '(RFC822.SIZE)')
        imap.uid('STORE', '1:4', '+FLAGS', '(\\Seen)')
        imap.logout()
        vsize = sum(v['RFC822.SIZE'] for v in sizes.values())
        r = dc.doveadm('mailbox', 'status', 'messages unseen uidnext vsize', 'INBOX',
                       user='testuser')
        got = dict(kv.split('=', 1) for kv in r.stdout.split()[1:])
        assert got == {'messages': '12', 'unseen': '8', 'uidnext': '13', 'vsize': str(vsize)}, \
            (r.stdout, vsize)
        # also from the other side: doveadm's own listing
        r = dc.doveadm('mailbox', 'list', user='testuser')
        assert r.stdout.split() == ['INBOX'], r.stdout
        dc.assert_no_log_errors()
