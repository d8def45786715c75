"""Hostile input over the protocols (issue 11, item 3), part 1: content,
and messages larger than the map or the quota.

Every case runs against a real Dovecot with lmdb and checks four things:
the protocol reply is clean and in Dovecot's own format (OK/NO/BAD with a
reason, LMTP 4xx/5xx for a refused delivery, a BYE where Dovecot itself
answers a failure that way; never a hang, never a connection closed
without a word unless the client closed it); the log says what was
refused and has no Panic, Fatal or assertion; every message acknowledged
before the case is still there, byte for byte, with its flags and POP3
UIDL (`Baseline`), and `doveadm lmdb verify` is clean; and for content
(NUL bytes, bare CR, 1 MB header lines, 10,000 MIME parts, deep nesting)
IMAP FETCH and POP3 give exactly what maildir gives for the same input.

The other parts: test_hostile_clients.py (input that stops half way,
clients that disconnect mid-message, a full reader table),
test_hostile_names.py (mailbox names at every limit) and
test_hostile_fs.py (a filesystem that turns full or read-only at each
step of a save, and one that really fills up).

DLMDB_HOSTILE_LONG=1 makes the slow variants bigger (see the README).
"""

import os
import re
import time

import harness
from test_mailboxes import RawImap

USER = 'testuser'
LONG = os.environ.get('DLMDB_HOSTILE_LONG') == '1'
NO_RECEIVED = 'lmtp_add_received_header = no\n'
# Dovecot's parser limits (lib-mail/message-parser.h): parts beyond them
# are kept as body text of the part that holds them
MAX_NESTED_PARTS = 100
MAX_TOTAL_PARTS = 10000


# ---------------------------------------------------------------------------
# checks shared by every case

BAD_LOG = re.compile(r'Panic:|Fatal:|assertion failed|Raw backtrace|'
                     r'killed with signal|core dumped')


def assert_log_sane(dc, allowed=()):
    """No Panic, Fatal or assertion in the log, and every Error line is
    one the case expects (regexes in allowed)."""
    bad = [l for l in dc.log().splitlines()
           if BAD_LOG.search(l) and not dc.is_benign(l)]
    assert not bad, 'crash in the log:\n' + '\n'.join(bad[:20])
    errors = [l for l in dc.log_errors(include_warnings=False)
              if not any(re.search(a, l) for a in allowed)]
    assert not errors, 'unexpected errors in the log:\n' + '\n'.join(errors[:20])


def wait_log_count(dc, pattern: str, count: int, timeout: float = 15) -> list:
    """The matches of pattern in the log once there are count of them
    (the log process writes a moment after the event), or as many as
    there are when the timeout passes."""
    deadline = time.monotonic() + timeout
    while True:
        found = re.findall(pattern, dc.log())
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


def verify_clean(dc, user=USER):
    if dc.driver != 'lmdb':
        return
    r = dc.doveadm('lmdb', 'verify', user=user, check=False)
    assert r.returncode == 0, ('doveadm lmdb verify: exit %d\n%s\n%s'
                               % (r.returncode, r.stdout, r.stderr))


def lmdb_stats(dc, user=USER) -> dict:
    out = dc.doveadm('lmdb', 'stats', user=user).stdout
    return {k: int(v) for k, v in (kv.split('=', 1) for kv in out.split())}


def message(tag: str, body_lines: int = 3) -> bytes:
    body = b''.join(b'%s line %d\r\n' % (tag.encode(), i) for i in range(body_lines))
    return (b'From: sender@example.com\r\nTo: testuser@example.com\r\n'
            b'Subject: %s\r\nMessage-ID: <%s@hostile.test>\r\n\r\n'
            % (tag.encode(), tag.encode())) + body


class Baseline:
    """Messages acknowledged before a hostile case, with flags set on
    some: check() reads every one back over IMAP (byte-exact BODY[],
    FLAGS, UID) and POP3 (UIDL, LIST) and compares with what was read
    right after they were stored."""

    def __init__(self, dc, count: int = 4, user: str = USER):
        self.dc, self.user = dc, user
        for i in range(count):
            r = dc.lmtp_deliver(user, message('baseline-%d' % i))
            assert r.all_ok(), r
        imap = dc.imap(user)
        imap.select('INBOX')
        typ, data = imap.uid('STORE', '1', '+FLAGS', '(\\Seen \\Flagged $Base)')
        assert typ == 'OK', data
        imap.logout()
        self.state = self.read()

    def read(self) -> dict:
        imap = self.dc.imap(self.user)
        typ, _ = imap.select('INBOX', readonly=True)
        assert typ == 'OK'
        got = harness.imap_fetch(imap, '1:*', '(UID FLAGS RFC822.SIZE BODY.PEEK[])')
        imap.logout()
        pop = self.dc.pop3(self.user)
        uidls = dict(l.split() for l in (x.decode() for x in pop.uidl()[1]))
        sizes = dict(l.split() for l in (x.decode() for x in pop.list()[1]))
        pop.quit()
        out = {}
        for seq, (uid, item) in enumerate(sorted(got.items()), 1):
            # (\\Recent belongs to whichever session saw the message first)
            flags = sorted(f for f in item['FLAGS'] if f != '\\Recent')
            out[uid] = (item['BODY[]'], flags, item['RFC822.SIZE'],
                        uidls[str(seq)], int(sizes[str(seq)]))
        return out

    def check(self, extra_ok: bool = True):
        """Every baseline message unchanged; messages after them are the
        case's own (allowed unless extra_ok is False)."""
        now = self.read()
        for uid, want in self.state.items():
            assert uid in now, 'baseline UID %d lost (have %s)' % (uid, sorted(now))
            assert now[uid] == want, 'baseline UID %d changed: %r -> %r' % (
                uid, want[1:], now[uid][1:]) if now[uid][0] == want[0] else \
                'baseline UID %d: body changed' % uid
        if not extra_ok:
            assert sorted(now) == sorted(self.state), sorted(now)
        verify_clean(self.dc, self.user)
        return now


def raw_append(c: RawImap, data: bytes, mailbox: str = 'INBOX'):
    """APPEND with a LITERAL+ literal; (untagged, tagged) as Dovecot
    answered."""
    return c.command(b'APPEND %s {%d+}\r\n' % (mailbox.encode(), len(data)) + data,
                     timeout=120)


FETCH_ITEMS = ('UID RFC822.SIZE BODYSTRUCTURE BODY ENVELOPE BODY.PEEK[] '
               'BODY.PEEK[HEADER] BODY.PEEK[TEXT] BODY.PEEK[1] '
               'BODY.PEEK[HEADER.FIELDS (SUBJECT X-LONG)] BODY.PEEK[]<100.200>')
BINARY_ITEMS = ' BINARY.PEEK[] BINARY.SIZE[]'


def imap_view(dc, binary=lambda uid: True) -> dict:
    """What IMAP answers for each message of INBOX, by UID: one FETCH of
    sizes, structure, envelope, the whole message, its parts, a partial
    range and (where binary(uid)) BINARY; the responses and the tagged
    reply as sent, less the timing."""
    c = RawImap(dc, timeout=120)
    _untagged, tagged = c.ok('EXAMINE INBOX')
    untagged, _ = c.ok('UID SEARCH ALL')
    uids = [int(u) for u in untagged[0][0].split()[2:]]
    out = {}
    for uid in uids:
        items = FETCH_ITEMS + (BINARY_ITEMS if binary(uid) else '')
        untagged, tagged = c.command('UID FETCH %d (%s)' % (uid, items), timeout=120)
        out[uid] = (untagged, re.sub(r' \([0-9.+ ]+ secs\)', '', tagged))
    c.close()
    return out


def pop3_view(dc) -> dict:
    """LIST, RETR and TOP of every message, as POP3 sends them."""
    pop = dc.pop3()
    out = {'LIST': pop.list()[1]}
    for n in range(1, len(out['LIST']) + 1):
        out['RETR %d' % n] = harness.pop3_multiline(pop, 'RETR %d' % n)
        out['TOP %d 0' % n] = harness.pop3_multiline(pop, 'TOP %d 0' % n)
        out['TOP %d 5' % n] = harness.pop3_multiline(pop, 'TOP %d 5' % n)
    pop.quit()
    return out


# ---------------------------------------------------------------------------
# content: what a client may send, compared with maildir

def _multipart(n_parts: int) -> bytes:
    parts = [b'--b0\r\nContent-Type: text/plain\r\nX-Part: %d\r\n\r\npart %d\r\n'
             % (i, i) for i in range(n_parts)]
    return (b'From: sender@example.com\r\nSubject: %d parts\r\n'
            b'Message-ID: <parts-%d@hostile.test>\r\nMIME-Version: 1.0\r\n'
            b'Content-Type: multipart/mixed; boundary="b0"\r\n\r\npreamble\r\n'
            % (n_parts, n_parts)) + b''.join(parts) + b'--b0--\r\nepilogue\r\n'


def _nested_multipart(depth: int) -> bytes:
    inner = b'Content-Type: text/plain\r\n\r\nthe innermost text\r\n'
    for d in range(depth, 0, -1):
        inner = (b'Content-Type: multipart/mixed; boundary="n%d"\r\n\r\n'
                 b'--n%d\r\n%s\r\n--n%d\r\nContent-Type: text/plain\r\n\r\n'
                 b'sibling %d\r\n--n%d--\r\n' % (d, d, inner, d, d, d))
    return (b'From: sender@example.com\r\nSubject: nested multipart %d\r\n'
            b'Message-ID: <nested-%d@hostile.test>\r\nMIME-Version: 1.0\r\n'
            % (depth, depth)) + inner


def _nested_rfc822(depth: int) -> bytes:
    inner = b'Subject: innermost\r\n\r\nthe innermost message\r\n'
    for d in range(depth, 0, -1):
        inner = (b'Subject: level %d\r\nMIME-Version: 1.0\r\n'
                 b'Content-Type: message/rfc822\r\n\r\n' % d) + inner
    return (b'From: sender@example.com\r\nMessage-ID: <rfc822-%d@hostile.test>\r\n'
            % depth) + inner


def content_cases() -> dict:
    huge = 1 << 20
    return {
        'nul': (b'From: sender@example.com\r\nSubject: nul\x00in header\r\n'
                b'Message-ID: <nul@hostile.test>\r\n\r\n'
                b'before\x00after\r\n\x00\x00\x00\r\nlast \x00'),
        'bare_cr': (b'From: sender@example.com\r\nSubject: bare\rcr\r\n'
                    b'X-Bare: a\rb\r\nMessage-ID: <cr@hostile.test>\r\n\r\n'
                    b'body\rwith bare CR\r\n\r\r\rend\r'),
        'long_header': (b'From: sender@example.com\r\nX-Long: ' + b'h' * huge +
                        b'\r\nSubject: long header\r\nX-Folded: a\r\n\t' +
                        b'f' * huge + b'\r\nMessage-ID: <long@hostile.test>\r\n\r\n'
                        b'body\r\n'),
        'long_body_line': (b'From: sender@example.com\r\nSubject: long line\r\n'
                           b'Message-ID: <longline@hostile.test>\r\n\r\n' +
                           b'x' * huge + b'\r\nend\r\n'),
        'parts_10000': _multipart(MAX_TOTAL_PARTS),
        'nested_multipart': _nested_multipart(MAX_NESTED_PARTS + 20),
        'nested_rfc822': _nested_rfc822(MAX_NESTED_PARTS + 20),
    }


def _store_content(driver: str, cases: dict):
    """Deliver every case over LMTP and APPEND it over IMAP; returns the
    replies, IMAP's and POP3's view, and the instance's log."""
    # RETR would set \\Seen at QUIT: the views are read more than once.
    # BINARY of 10,000 parts peaks at ~195 MB resident, and Dovecot 2.4's
    # imap at ~237 MB of address space with maildir; lmdb's map adds its
    # 16 MB (README, "Address space"): past the default vsz_limit of 256M
    # on 2.4. Both drivers get what README tells an admin to give.
    extra = NO_RECEIVED + 'pop3_no_flag_updates = yes\ndefault_vsz_limit = 1G\n'
    with harness.Dovecot(driver, extra=extra) as dc:
        base = Baseline(dc, count=2)
        replies = []
        for name, data in cases.items():
            r = dc.lmtp_deliver(USER, data)
            replies.append((name, 'lmtp', r.status[USER]))
            c = RawImap(dc, timeout=120)
            _untagged, tagged = raw_append(c, data)
            replies.append((name, 'append', tagged.split(' [')[0]))
            c.close()
        # BINARY of 10,000 parts takes Dovecot seconds (and ~190 MB):
        # once per driver, on the APPENDed copy
        slow = 3 + 2 * list(cases).index('parts_10000')
        view = (imap_view(dc, binary=lambda uid: uid != slow), pop3_view(dc))
        base.check()
        assert_log_sane(dc)
        if driver == 'lmdb' and LONG:
            # the index is a cache: rebuilt from LMDB, the same answers
            dc.doveadm('force-resync', 'INBOX', user=USER)
            for f in os.listdir(os.path.join(dc.mail_dir(), 'mailboxes', 'INBOX',
                                             'lmdb-Mails')):
                if f.startswith('dovecot.index.cache'):
                    os.unlink(os.path.join(dc.mail_dir(), 'mailboxes', 'INBOX',
                                           'lmdb-Mails', f))
            again = (imap_view(dc, binary=lambda uid: uid != slow), pop3_view(dc))
            assert again == view, 'lmdb answers differently without its cache'
            assert_log_sane(dc)
        return replies, view


def test_content_like_maildir():
    """NUL bytes, bare CR, 1 MB header lines (one plain, one folded), a
    1 MB body line, 10,000 MIME parts, multipart and message/rfc822
    nesting past Dovecot's 100 levels: each delivered over LMTP and
    APPENDed over IMAP is accepted as maildir accepts it, and every FETCH
    item (RFC822.SIZE, BODYSTRUCTURE, BODY[], BINARY[], parts, partial)
    and POP3 LIST/RETR/TOP gives the bytes maildir gives (with
    DLMDB_HOSTILE_LONG=1 the same again after lmdb's cache file is gone
    and the index was rebuilt from LMDB)."""
    cases = content_cases()
    got = {d: _store_content(d, cases) for d in ('lmdb', 'maildir')}
    (l_replies, (l_imap, l_pop)), (m_replies, (m_imap, m_pop)) = got['lmdb'], got['maildir']
    assert l_replies == m_replies, (l_replies, m_replies)
    # every case was accepted by both (none of them is refused by Dovecot)
    assert all(r[2] in (250, 'OK') for r in l_replies), l_replies
    assert sorted(l_imap) == sorted(m_imap)
    for uid in l_imap:
        assert l_imap[uid] == m_imap[uid], 'UID %d: lmdb %s... maildir %s...' % (
            uid, repr(l_imap[uid])[:400], repr(m_imap[uid])[:400])
    assert sorted(l_pop) == sorted(m_pop)
    for key in l_pop:
        assert l_pop[key] == m_pop[key], 'POP3 %s differs' % key
    # the parser limits were reached: the 10,000th part and the levels
    # past 100 are body text, on both
    # (BODY and BODYSTRUCTURE each list 9,999 parts under the root)
    struct = l_imap[3 + 2 * list(cases).index('parts_10000')][0][0][0]
    assert struct.count(b'"text" "plain"') == 2 * (MAX_TOTAL_PARTS - 1), \
        struct.count(b'"text" "plain"')


# ---------------------------------------------------------------------------
# a message larger than the map reserve, the map, or the quota

def big_message(tag: str, size: int) -> bytes:
    line = b'%s ' % tag.encode() + b'z' * 70 + b'\r\n'
    return message(tag, 1) + line * (size // len(line) + 1)


def _refused_twice(dc, data: bytes):
    """Deliver data over LMTP and APPEND it; returns (LMTP code and text,
    IMAP tagged reply)."""
    r = dc.lmtp_deliver(USER, data)
    c = RawImap(dc, timeout=120)
    _untagged, tagged = raw_append(c, data)
    c.ok('LOGOUT')
    return r.data.get(USER, r.rcpt.get(USER)), tagged


def test_message_over_map_ceiling():
    """lmdb only (maildir has no map): with an 8M map ceiling and a 2M
    reserve, a 10 MB message (larger than the whole map) and a 3 MB one
    that crosses into the reserve while its body is written in groups are
    refused with LMTP 451 and IMAP NO naming the cause, the log names
    lmdb_map_size_max, the bodies written before the refusal are freed at
    once (not left for purge), and the next delivery that fits works."""
    extra = ('plugin {\n  lmdb_map_size_initial = 1M\n  lmdb_map_size_max = 8M\n'
             '  lmdb_map_reserve = 2M\n  lmdb_autopurge_interval = 0\n}\n')
    with harness.Dovecot('lmdb', extra=extra) as dc:
        base = Baseline(dc)
        # fill to about 4 MB of the 6 MB below the reserve
        for i in range(4):
            assert dc.lmtp_deliver(USER, big_message('fill-%d' % i, 900_000)).all_ok()
        base.state = base.read()
        before = lmdb_stats(dc)
        for size in (10_000_000, 3_000_000):
            (code, text), tagged = _refused_twice(dc, big_message('big', size))
            assert code == 451, (size, code, text)
            assert tagged.startswith('NO ') and 'out of space' in tagged, (size, tagged)
            after = lmdb_stats(dc)
            assert (after['messages'], after['bodies']) == \
                (before['messages'], before['bodies']), (size, before, after)
            # the groups written before the refusal were discarded: their
            # pages are free again, the used space is what it was
            assert after['used_bytes'] <= before['used_bytes'] + 64 * 1024, \
                (size, before, after)
        log = dc.wait_log('lmdb_map_size_max')
        assert log.count('would exceed lmdb_map_size_max') >= 4, log[-3000:]
        ok = dc.lmtp_deliver(USER, big_message('fits', 500_000))
        assert ok.all_ok(), ok
        base.check()
        assert_log_sane(dc, allowed=[r'would exceed lmdb_map_size_max'])


QUOTA = ('plugin {\n  quota = count:User quota\n  quota_rule = *:storage=1M\n'
         '  quota_vsizes = yes\n  quota_grace = 0\n}\nquota_full_tempfail = no\n')


@harness.drivers('lmdb', 'maildir')
def test_message_over_quota(driver):
    """A message larger than the whole quota (1 MB quota, 3 MB message)
    and a small one that crosses it: LMTP 552 and IMAP NO [OVERQUOTA]
    as Dovecot words them, nothing stored, lmdb keeps no body of them,
    and a message that fits is delivered afterwards."""
    with harness.Dovecot(driver, mail_plugins=('quota',), extra=QUOTA) as dc:
        base = Baseline(dc)
        assert dc.lmtp_deliver(USER, big_message('near', 900_000)).all_ok()
        base.state = base.read()
        stats = lmdb_stats(dc) if driver == 'lmdb' else None
        for size in (3_000_000, 200_000):
            (code, text), tagged = _refused_twice(dc, big_message('over', size))
            assert code == 552 and 'Quota exceeded' in text, (size, code, text)
            assert tagged.startswith('NO [OVERQUOTA] Quota exceeded'), (size, tagged)
            if driver == 'lmdb':
                after = lmdb_stats(dc)
                assert (after['messages'], after['bodies']) == \
                    (stats['messages'], stats['bodies']), (size, stats, after)
        assert dc.lmtp_deliver(USER, message('small')).all_ok()
        base.check()
        assert_log_sane(dc)
        assert 'Quota exceeded' in dc.log()
