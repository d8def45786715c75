"""Mailbox-level scenarios: CREATE/LIST/LSUB/SUBSCRIBE/RENAME/DELETE/STATUS
(LAYOUT=fs and LAYOUT=index), the LMDB `mailboxes` records, IMAP features
that ride on the index (IDLE, CONDSTORE, QRESYNC, SEARCH, SORT, THREAD,
UID EXPUNGE, UIDPLUS), quota (count backend), and lmdb's refusals of
unsupported or invalid settings.

Every scenario that is not lmdb-specific runs on lmdb and on maildir (the
control) and is checked against values computed from the messages the test
stored, not only against the other driver.
"""

import os
import re
import select as _select
import socket
import subprocess
import time

import harness
from harness import imap_parse

# maildir's default layout is Maildir++ (separator '.'): the control uses
# LAYOUT=fs so that both drivers have the same hierarchy separator '/'.
LOCATIONS = {
    ('lmdb', 'fs'): 'lmdb:~/lmdb',
    ('lmdb', 'index'): 'lmdb:~/lmdb:LAYOUT=index',
    ('maildir', 'fs'): 'maildir:~/Maildir:LAYOUT=fs',
    ('maildir', 'index'): 'maildir:~/Maildir:LAYOUT=index',
}

NO_RECEIVED = 'lmtp_add_received_header = no\n'
# the tagged NO for a mailbox that doesn't exist (2.4 adds the response code)
NO_MAILBOX_RE = re.compile(r"NO (\[NONEXISTENT\] )?Mailbox doesn't exist")
SLASH_NAMESPACE = '''
namespace inbox {
  inbox = yes
  separator = /
}
'''


# ---------------------------------------------------------------------------
# message helpers

def mkmsg(subject, frm='Alice <alice@example.com>', date='Wed, 01 Jan 2020 10:00:00 +0000',
          body='hello\r\n', msgid=None, refs=None, to='testuser@example.com'):
    hdr = ['From: %s' % frm, 'To: %s' % to, 'Subject: %s' % subject, 'Date: %s' % date]
    if msgid:
        hdr.append('Message-ID: %s' % msgid)
    if refs:
        hdr.append('In-Reply-To: %s' % refs[-1])
        hdr.append('References: %s' % ' '.join(refs))
    hdr.append('MIME-Version: 1.0')
    hdr.append('Content-Type: text/plain; charset=us-ascii')
    return ('\r\n'.join(hdr) + '\r\n\r\n' + body).encode()


def big_body(nbytes, word='filler'):
    line = (word + ' ') * 10 + '\r\n'
    return line * (nbytes // len(line) + 1)


# ---------------------------------------------------------------------------
# a raw IMAP client (imaplib in 3.11 has no IDLE and hides response codes)

class RawImap:
    """Line-oriented IMAP client on a plain socket.  Responses are kept as
    (text, literals) where text still contains the {n} markers, so
    harness.imap_parse(text, literals) parses them."""

    def __init__(self, dc, user='testuser', password='testpass', login=True, timeout=15):
        self.sock = socket.create_connection(('127.0.0.1', dc.ports['imap']), timeout=timeout)
        dc.clients.append(self)  # closed by Dovecot.stop()
        self.buf = b''
        self.tagno = 0
        self.timeout = timeout
        self.greeting = self.read_response()[0]
        if login:
            self.ok('LOGIN %s %s' % (user, password))

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def send(self, data: bytes):
        self.sock.sendall(data)

    def _fill(self, deadline):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError('IMAP: no data from server in time (buffer %r)' % self.buf[-200:])
        r, _, _ = _select.select([self.sock], [], [], remaining)
        if not r:
            raise TimeoutError('IMAP: no data from server in time (buffer %r)' % self.buf[-200:])
        d = self.sock.recv(65536)
        if not d:
            raise EOFError('IMAP: connection closed by server (buffer %r)' % self.buf[-200:])
        self.buf += d

    def _line(self, deadline):
        while b'\r\n' not in self.buf:
            self._fill(deadline)
        i = self.buf.index(b'\r\n') + 2
        line, self.buf = self.buf[:i], self.buf[i:]
        return line

    def read_response(self, timeout=None):
        """One complete response: (text without final CRLF, [literals])."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        text = b''
        lits = []
        while True:
            line = self._line(deadline)
            mo = re.search(rb'\{(\d+)\+?\}\r\n\Z', line)
            if not mo:
                return text + line[:-2], lits
            n = int(mo.group(1))
            while len(self.buf) < n:
                self._fill(deadline)
            lits.append(self.buf[:n])
            self.buf = self.buf[n:]
            text += line[:mo.start()] + b'{%d}\r\n' % n

    def command(self, cmd, timeout=None):
        """Send a command; return (untagged [(text, lits)], tagged_line str)."""
        self.tagno += 1
        tag = 'T%03d' % self.tagno
        if isinstance(cmd, str):
            cmd = cmd.encode()
        self.send(tag.encode() + b' ' + cmd + b'\r\n')
        untagged = []
        while True:
            text, lits = self.read_response(timeout)
            if text.startswith(tag.encode() + b' '):
                return untagged, text[len(tag) + 1:].decode('utf-8', 'replace')
            untagged.append((text, lits))

    def ok(self, cmd, timeout=None):
        untagged, tagged = self.command(cmd, timeout)
        assert tagged.startswith('OK'), '%r -> %s (untagged %r)' % (cmd, tagged, untagged)
        return untagged, tagged

    def append(self, mailbox, data: bytes, flags='', date=None):
        """APPEND with a LITERAL+ literal; returns the tagged line."""
        args = [quote(mailbox)]
        if flags:
            args.append('(%s)' % flags)
        if date:
            args.append('"%s"' % date)
        cmd = ('APPEND %s {%d+}\r\n' % (' '.join(args), len(data))).encode() + data
        return self.ok(cmd)[1]


def quote(s):
    return '"%s"' % s.replace('\\', '\\\\').replace('"', '\\"')


def untagged_texts(untagged):
    return [t.decode('utf-8', 'replace') for t, _ in untagged]


def parse_fetches(untagged):
    """{uid: {ITEM: value}} from untagged FETCH responses (that carry a UID)."""
    out = {}
    for text, lits in untagged:
        if not re.match(rb'\* \d+ FETCH ', text):
            continue
        p = imap_parse(text, lits)
        kv = p[3]
        d = {'SEQ': int(p[1])}
        for i in range(0, len(kv) - 1, 2):
            d[str(kv[i]).upper()] = kv[i + 1]
        if 'UID' in d:
            out[int(d['UID'])] = d
    return out


def response_code(tagged_or_text, name):
    """Arguments of response code [NAME ...] in a response line, or None."""
    if isinstance(tagged_or_text, bytes):
        tagged_or_text = tagged_or_text.decode()
    mo = re.search(r'\[%s ?([^\]]*)\]' % re.escape(name), tagged_or_text)
    return mo.group(1) if mo else None


def expand_set(s):
    out = []
    for part in s.split(','):
        if ':' in part:
            a, b_ = part.split(':')
            a, b_ = int(a), int(b_)
            out.extend(range(min(a, b_), max(a, b_) + 1))
        else:
            out.append(int(part))
    return out


def flagset(flags):
    return {f for f in (flags or []) if f != '\\Recent'}


# ---------------------------------------------------------------------------
# LIST / STATUS helpers

def list_mailboxes(conn, cmd='LIST "" "*"'):
    """{name: set(flags)} from LIST/LSUB."""
    untagged, _ = conn.ok(cmd)
    out = {}
    verb = cmd.split()[0].upper()
    for text, lits in untagged:
        if not text.startswith(b'* %s ' % verb.encode()):
            continue
        p = imap_parse(text, lits)
        flags, sep, name = p[2], p[3], p[4]
        assert sep == b'/', p
        name = name.decode() if isinstance(name, bytes) else name
        out[name] = {f.lower() for f in flags}
    return out


def status(conn, mailbox, items='MESSAGES UIDNEXT UIDVALIDITY UNSEEN HIGHESTMODSEQ SIZE'):
    untagged, _ = conn.ok('STATUS %s (%s)' % (quote(mailbox), items))
    for text, lits in untagged:
        if text.startswith(b'* STATUS '):
            p = imap_parse(text, lits)
            kv = p[3]
            return {str(kv[i]).upper(): int(kv[i + 1]) for i in range(0, len(kv), 2)}
    raise AssertionError('no STATUS response for %s: %r' % (mailbox, untagged))


def select_box(conn, mailbox, params=''):
    untagged, tagged = conn.ok('SELECT %s%s' % (quote(mailbox), (' ' + params) if params else ''))
    info = {'untagged': untagged, 'tagged': tagged}
    for text, _ in untagged:
        t = text.decode('utf-8', 'replace')
        mo = re.match(r'\* (\d+) EXISTS', t)
        if mo:
            info['EXISTS'] = int(mo.group(1))
        for code in ('UIDVALIDITY', 'UIDNEXT', 'HIGHESTMODSEQ'):
            v = response_code(t, code)
            if v is not None:
                info[code] = int(v)
    return info


def fetch(conn, uidset, items):
    untagged, _ = conn.ok('UID FETCH %s %s' % (uidset, items))
    return parse_fetches(untagged)


def sizes_of(conn, mailbox):
    select_box(conn, mailbox)
    data = fetch(conn, '1:*', '(RFC822.SIZE)')
    conn.ok('UNSELECT')
    return {u: int(v['RFC822.SIZE']) for u, v in data.items()}


# ---------------------------------------------------------------------------
# LMDB inspection

def mdb_dump_records(env_dir, dbi):
    """[(key bytes, value bytes)] of one DBI, via `mdb_dump -s` in its
    default hex format (the -p format is ambiguous: mdb_dump prints a
    backslash byte as a bare backslash, so 0x5c followed by printable hex
    digits can't be told from an escape)."""
    r = subprocess.run(['mdb_dump', '-s', dbi, env_dir], capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.split(b'\n')
    i = lines.index(b'HEADER=END') + 1
    items = []
    while lines[i] != b'DATA=END':
        items.append(bytes.fromhex(lines[i].strip().decode()))
        i += 1
    return list(zip(items[0::2], items[1::2]))


def lmdb_mailbox_records(dc):
    """{name: state} from the `mailboxes` DBI (state 0 active, 1 deleted).
    A name can appear more than once (a deleted and a new mailbox): then
    the state set is returned."""
    out = {}
    for key, val in mdb_dump_records(dc.mail_dir(), 'mailboxes'):
        assert len(key) == 16, key
        assert val[0] == 2, val  # record version (schema 2: a CRC follows)
        val = val[5:]
        state = val[0]
        n = int.from_bytes(val[27:29], 'big')
        name = val[29:29 + n].decode()
        out.setdefault(name, set()).add(state)
    return out


def lmdb_stats(dc):
    r = dc.doveadm('lmdb', 'stats', user='testuser')
    return {k: int(v) for k, v in (kv.split('=', 1) for kv in r.stdout.split())}


def lmdb_verify_clean(dc):
    r = dc.doveadm('lmdb', 'verify', user='testuser', check=False)
    assert r.returncode == 0 and 'Panic' not in r.stderr, \
        'doveadm lmdb verify exit %d\nstdout: %s\nstderr: %s' % (r.returncode, r.stdout, r.stderr)
    assert r.stdout.split() in ([], ['mailbox', 'uid', 'body', 'problem']), r.stdout


def assert_no_crash(dc):
    log = dc.log()
    for bad in ('Panic:', 'Fatal: master:', 'killed with signal', 'core dumped',
                'Raw backtrace'):
        assert bad not in log, 'log has %r:\n%s' % (bad, dc.log_tail(60))


# ---------------------------------------------------------------------------
# 1. mailboxes: CREATE / LIST / LSUB / SUBSCRIBE / RENAME / DELETE / STATUS

def _mailbox_ops(driver, layout):
    loc = LOCATIONS[(driver, layout)]
    extra = NO_RECEIVED
    if layout == 'index':
        # LAYOUT=index has no hierarchy separator of its own ('~' flat names)
        extra += SLASH_NAMESPACE
    with harness.Dovecot(driver, mail_location=loc, extra=extra) as dc:
        inbox_msgs = [mkmsg('inbox %d' % i, body='inbox message %d\r\n' % i) for i in range(3)]
        for m in inbox_msgs:
            r = dc.lmtp_deliver(['testuser'], m)
            assert r.all_ok(), r
        c = RawImap(dc)

        # -- CREATE, nested; intermediate levels exist only implicitly
        c.ok('CREATE a/b/c')
        boxes = list_mailboxes(c)
        assert set(boxes) == {'INBOX', 'a', 'a/b', 'a/b/c'}, boxes
        assert '\\haschildren' in boxes['a'] and '\\haschildren' in boxes['a/b'], boxes
        assert '\\hasnochildren' in boxes['a/b/c'], boxes
        # CREATE of the implicit parents makes them real (selectable) mailboxes
        c.ok('CREATE a')
        c.ok('CREATE a/b')
        boxes = list_mailboxes(c)
        for n in ('a', 'a/b', 'a/b/c', 'INBOX'):
            assert '\\noselect' not in boxes[n] and '\\nonexistent' not in boxes[n], boxes
        _, tagged = c.command('CREATE a/b')
        assert tagged.startswith('NO') and '[ALREADYEXISTS]' in tagged, tagged
        _, tagged = c.command('DELETE INBOX')
        assert tagged.startswith('NO'), tagged
        c.ok('CREATE other')

        # -- contents: a: 1 message, a/b: 2 (one \Seen), a/b/c: 1
        contents = {
            'a': [(mkmsg('in a', body='aaa\r\n'), '')],
            'a/b': [(mkmsg('in a/b #1', body='bbb one\r\n'), '\\Seen'),
                    (mkmsg('in a/b #2', body=big_body(3000, 'bee')), '')],
            'a/b/c': [(mkmsg('in a/b/c', body='ccc\r\n' * 7), '\\Flagged')],
        }
        for box, msgs in contents.items():
            for data, flags in msgs:
                tagged = c.append(box, data, flags)
                assert response_code(tagged, 'APPENDUID') is not None, tagged

        def check_status(name, msgs, uidvalidity=None):
            st = status(c, name)
            assert st['MESSAGES'] == len(msgs), (name, st)
            assert st['UIDNEXT'] == len(msgs) + 1, (name, st)
            assert st['UNSEEN'] == sum(1 for _, f in msgs if '\\Seen' not in f), (name, st)
            assert st['SIZE'] == sum(len(d) for d, _ in msgs), (name, st)
            assert st['HIGHESTMODSEQ'] >= 1, (name, st)
            if uidvalidity is not None:
                assert st['UIDVALIDITY'] == uidvalidity, (name, st, uidvalidity)
            # SIZE is the sum of RFC822.SIZE
            assert st['SIZE'] == sum(sizes_of(c, name).values()), (name, st)
            return st

        before = {n: check_status(n, m) for n, m in contents.items()}
        st_inbox = status(c, 'INBOX')
        assert st_inbox['MESSAGES'] == 3 and st_inbox['UNSEEN'] == 3, st_inbox
        assert st_inbox['SIZE'] == sum(sizes_of(c, 'INBOX').values()), st_inbox
        # LMTP adds Return-Path and Delivered-To (Received is off)
        prefix = len(b'Return-Path: <sender@example.com>\r\nDelivered-To: testuser\r\n')
        assert st_inbox['SIZE'] == sum(len(m) + prefix for m in inbox_msgs), st_inbox
        uidvs = {n: s['UIDVALIDITY'] for n, s in before.items()}
        assert len(set(uidvs.values()) | {st_inbox['UIDVALIDITY']}) == 4, (uidvs, st_inbox)

        if driver == 'lmdb':
            recs = lmdb_mailbox_records(dc)
            for n in ('INBOX', 'a', 'a/b', 'a/b/c', 'other'):
                assert recs.get(n) == {0}, (n, recs)

        # -- SUBSCRIBE / UNSUBSCRIBE / LSUB
        for n in ('a', 'a/b/c', 'other', 'INBOX'):
            c.ok('SUBSCRIBE %s' % n)
        c.ok('UNSUBSCRIBE other')
        lsub = list_mailboxes(c, 'LSUB "" "*"')
        assert set(lsub) == {'INBOX', 'a', 'a/b/c'}, lsub
        # the implied-but-unsubscribed parent a/b shows up as \Noselect in LSUB "*"?
        # (RFC 3501: only with "%"); LIST (SUBSCRIBED) lists exactly the subscriptions
        sub = list_mailboxes(c, 'LIST (SUBSCRIBED) "" "*"')
        assert set(sub) == {'INBOX', 'a', 'a/b/c'}, sub
        lsub_pct = list_mailboxes(c, 'LSUB "" "a/%"')
        assert set(lsub_pct) == {'a/b'} and '\\noselect' in lsub_pct['a/b'], lsub_pct

        # -- RENAME with children: a -> x moves a/b and a/b/c too
        c.ok('RENAME a x')
        boxes = list_mailboxes(c)
        assert set(boxes) == {'INBOX', 'x', 'x/b', 'x/b/c', 'other'}, boxes
        for old, new in (('a', 'x'), ('a/b', 'x/b'), ('a/b/c', 'x/b/c')):
            st = check_status(new, contents[old], uidvs[old])
            assert st['HIGHESTMODSEQ'] == before[old]['HIGHESTMODSEQ'], (new, st, before[old])
            _, tagged = c.command('STATUS %s (MESSAGES)' % old)
            assert NO_MAILBOX_RE.match(tagged), (old, tagged)
        # contents and flags moved along
        select_box(c, 'x/b')
        data = fetch(c, '1:*', '(FLAGS BODY.PEEK[])')
        assert sorted(data) == [1, 2], data
        assert data[1]['BODY[]'] == contents['a/b'][0][0]
        assert data[2]['BODY[]'] == contents['a/b'][1][0]
        assert flagset(data[1]['FLAGS']) == {'\\Seen'} and flagset(data[2]['FLAGS']) == set()
        c.ok('UNSELECT')
        # Dovecot's IMAP RENAME leaves the subscriptions on the old names
        sub = list_mailboxes(c, 'LIST (SUBSCRIBED) "" "*"')
        assert set(sub) == {'INBOX', 'a', 'a/b/c'}, sub
        assert '\\nonexistent' in sub['a'] and '\\nonexistent' in sub['a/b/c'], sub
        c.ok('UNSUBSCRIBE a')
        c.ok('UNSUBSCRIBE a/b/c')
        c.ok('SUBSCRIBE x')
        c.ok('SUBSCRIBE x/b/c')
        sub = list_mailboxes(c, 'LIST (SUBSCRIBED) "" "*"')
        assert set(sub) == {'INBOX', 'x', 'x/b/c'}, sub
        # RENAME onto an existing name fails, renaming a missing one fails
        _, tagged = c.command('RENAME x other')
        assert tagged.startswith('NO') and '[ALREADYEXISTS]' in tagged, tagged
        _, tagged = c.command('RENAME nosuch y')
        assert tagged.startswith('NO') and '[NONEXISTENT]' in tagged, tagged

        if driver == 'lmdb':
            recs = lmdb_mailbox_records(dc)
            for n in ('INBOX', 'x', 'x/b', 'x/b/c', 'other'):
                assert recs.get(n) == {0}, (n, recs)
            for n in ('a', 'a/b', 'a/b/c'):
                assert n not in recs, (n, recs)

        # -- RENAME INBOX: messages move to the new mailbox, INBOX stays, empty
        select_box(c, 'INBOX')
        inbox_bodies = {u: v['BODY[]'] for u, v in fetch(c, '1:*', '(BODY.PEEK[])').items()}
        c.ok('UNSELECT')
        _, tagged = c.command('RENAME INBOX oldinbox')
        if (driver, layout) == ('maildir', 'fs'):
            # the control can't: with LAYOUT=fs, maildir's INBOX is the root
            # directory itself.  Do by hand what Dovecot does elsewhere.
            assert tagged.startswith("NO [CANNOT] Renaming INBOX isn't supported"), tagged
            c.ok('CREATE oldinbox')
            select_box(c, 'INBOX')
            c.ok('MOVE 1:* oldinbox')
            c.ok('UNSELECT')
        else:
            assert tagged.startswith('OK'), tagged
        boxes = list_mailboxes(c)
        assert set(boxes) == {'INBOX', 'oldinbox', 'x', 'x/b', 'x/b/c', 'other'}, boxes
        st = status(c, 'INBOX')
        assert st['MESSAGES'] == 0 and st['UNSEEN'] == 0 and st['SIZE'] == 0, st
        st = status(c, 'oldinbox')
        assert st['MESSAGES'] == 3 and st['UNSEEN'] == 3, st
        assert st['SIZE'] == st_inbox['SIZE'], (st, st_inbox)
        select_box(c, 'oldinbox')
        moved = fetch(c, '1:*', '(BODY.PEEK[])')
        assert sorted(v['BODY[]'] for v in moved.values()) == sorted(inbox_bodies.values())
        c.ok('UNSELECT')
        # INBOX still receives mail
        r = dc.lmtp_deliver(['testuser'], mkmsg('after rename'))
        assert r.all_ok(), r
        st = status(c, 'INBOX')
        assert st['MESSAGES'] == 1, st
        if driver == 'lmdb':
            recs = lmdb_mailbox_records(dc)
            assert recs.get('oldinbox') == {0} and 0 in recs.get('INBOX', set()), recs

        # -- DELETE
        c.ok('DELETE x/b/c')
        boxes = list_mailboxes(c)
        assert 'x/b/c' not in boxes and '\\hasnochildren' in boxes['x/b'], boxes
        _, tagged = c.command('STATUS x/b/c (MESSAGES)')
        assert NO_MAILBOX_RE.match(tagged), tagged
        c.ok('DELETE other')
        # a mailbox with children: its messages go, the name stays as a
        # \Noselect parent of x/b
        c.ok('DELETE x')
        boxes = list_mailboxes(c)
        assert boxes['x'] == {'\\noselect', '\\haschildren'}, boxes
        _, tagged = c.command('SELECT x')
        assert NO_MAILBOX_RE.match(tagged), tagged
        check_status('x/b', contents['a/b'], uidvs['a/b'])
        # a deleted name can be created again: new, empty, new UIDVALIDITY
        c.ok('CREATE x/b/c')
        st = status(c, 'x/b/c')
        assert st['MESSAGES'] == 0 and st['UIDNEXT'] == 1, st
        boxes = list_mailboxes(c)
        assert set(boxes) == {'INBOX', 'oldinbox', 'x', 'x/b', 'x/b/c'}, boxes

        if driver == 'lmdb':
            recs = lmdb_mailbox_records(dc)
            # a deleted mailbox keeps its record with state 1
            assert recs.get('other') == {1} and recs.get('x') == {1}, recs
            assert recs.get('x/b/c') == {0, 1}, recs

        c.ok('LOGOUT')
        # everything survives a restart (index files are only a cache)
        dc.restart()
        c = RawImap(dc)
        boxes = list_mailboxes(c)
        assert set(boxes) == {'INBOX', 'oldinbox', 'x', 'x/b', 'x/b/c'}, boxes
        check_status('x/b', contents['a/b'], uidvs['a/b'])
        lsub = list_mailboxes(c, 'LSUB "" "*"')
        assert set(lsub) == {'INBOX', 'x', 'x/b/c'}, lsub
        c.ok('LOGOUT')
        dc.assert_no_log_errors()
        if driver == 'lmdb':
            # the deleted mailboxes left dead bodies (no links) behind
            assert lmdb_stats(dc)['references'] == 3 + 1 + 2, lmdb_stats(dc)
            lmdb_verify_clean(dc)


@harness.drivers('lmdb', 'maildir')
def test_mailbox_ops_layout_fs(driver):
    _mailbox_ops(driver, 'fs')


@harness.drivers('lmdb', 'maildir')
def test_mailbox_ops_layout_index(driver):
    _mailbox_ops(driver, 'index')


def test_lmdb_rename_copies_no_data():
    """Renaming a mailbox (with children) holding a 1 MB message changes only
    the mailbox records: no body is copied."""
    with harness.Dovecot('lmdb') as dc:
        c = RawImap(dc)
        c.ok('CREATE big/child')
        c.ok('CREATE big')
        data = mkmsg('one megabyte', body=big_body(1024 * 1024, 'megabyte'))
        assert len(data) > 1024 * 1024
        c.append('big', data)
        c.append('big/child', mkmsg('small'))
        before = lmdb_stats(dc)
        assert before['messages'] == 2 and before['bodies'] == 2, before
        assert before['body_bytes'] >= 1000 * 1000, before  # LF size
        c.ok('RENAME big huge')
        after = lmdb_stats(dc)
        for k in ('messages', 'bodies', 'references', 'message_bytes', 'body_bytes'):
            assert after[k] == before[k], (k, before, after)
        recs = lmdb_mailbox_records(dc)
        assert recs.get('huge') == {0} and recs.get('huge/child') == {0}, recs
        assert 'big' not in recs and 'big/child' not in recs, recs
        select_box(c, 'huge')
        got = fetch(c, '1', '(BODY.PEEK[] RFC822.SIZE)')
        assert got[1]['BODY[]'] == data and int(got[1]['RFC822.SIZE']) == len(data)
        c.ok('LOGOUT')
        assert dc.doveadm('lmdb', 'stats', user='testuser')
        dc.assert_no_log_errors()


def test_lmdb_verify_after_mailbox_delete():
    """DELETE frees the mailbox's bodies with their links (only the
    survivor's stays); the environment is consistent and `doveadm lmdb
    verify` says so."""
    with harness.Dovecot('lmdb') as dc:
        c = RawImap(dc)
        c.ok('CREATE doomed')
        c.append('doomed', mkmsg('doomed 1'))
        c.append('doomed', mkmsg('doomed 2'))
        c.append('INBOX', mkmsg('survivor'))
        lmdb_verify_clean(dc)
        c.ok('DELETE doomed')
        st = lmdb_stats(dc)
        assert st['messages'] == 1 and st['references'] == 1 and st['bodies'] == 1, st
        assert lmdb_mailbox_records(dc) == {'INBOX': {0}, 'doomed': {1}}
        c.ok('LOGOUT')
        lmdb_verify_clean(dc)
        dc.assert_no_log_errors()


# ---------------------------------------------------------------------------
# 2. IMAP features riding on the index

@harness.drivers('lmdb', 'maildir')
def test_idle_sees_delivery_and_expunge(driver):
    with harness.Dovecot(driver) as dc:
        for i in range(2):
            assert dc.lmtp_deliver(['testuser'], mkmsg('pre %d' % i)).all_ok()
        idler = RawImap(dc)
        info = select_box(idler, 'INBOX')
        assert info['EXISTS'] == 2, info
        idler.tagno += 1
        tag = b'T%03d' % idler.tagno
        idler.send(tag + b' IDLE\r\n')
        text, _ = idler.read_response()
        assert text.startswith(b'+'), text

        def wait_for(pattern, timeout=8):
            seen = []
            deadline = time.monotonic() + timeout
            while True:
                try:
                    text, _ = idler.read_response(timeout=max(0.01, deadline - time.monotonic()))
                except TimeoutError:
                    raise AssertionError('IDLE: %r not seen within %ss; got %r'
                                         % (pattern, timeout, seen))
                seen.append(text)
                if re.match(pattern, text):
                    return seen

        # a delivery from LMTP shows up as EXISTS
        t0 = time.monotonic()
        assert dc.lmtp_deliver(['testuser'], mkmsg('during idle')).all_ok()
        wait_for(rb'\* 3 EXISTS')
        t_exists = time.monotonic() - t0

        # a flag change and an expunge from another connection
        other = RawImap(dc)
        select_box(other, 'INBOX')
        other.ok('UID STORE 2 +FLAGS.SILENT (\\Seen)')
        seen = wait_for(rb'\* 2 FETCH ')
        assert b'\\Seen' in seen[-1], seen
        other.ok('UID STORE 1 +FLAGS.SILENT (\\Deleted)')
        other.ok('EXPUNGE')
        wait_for(rb'\* 1 EXPUNGE')
        other.ok('LOGOUT')

        idler.send(b'DONE\r\n')
        while True:
            text, _ = idler.read_response()
            if text.startswith(tag + b' '):
                assert text.startswith(tag + b' OK'), text
                break
        data = fetch(idler, '1:*', '(FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])')
        assert sorted(data) == [2, 3], data
        assert data[3]['BODY[HEADER.FIELDS (SUBJECT)]'] == b'Subject: during idle\r\n\r\n'
        idler.ok('LOGOUT')
        # inotify, not the 30 s mailbox_idle_check_interval fallback
        assert t_exists < 5, t_exists
        dc.assert_no_log_errors()


@harness.drivers('lmdb', 'maildir')
def test_condstore(driver):
    with harness.Dovecot(driver) as dc:
        for i in range(4):
            assert dc.lmtp_deliver(['testuser'], mkmsg('cs %d' % i)).all_ok()
        c = RawImap(dc)
        info = select_box(c, 'INBOX', '(CONDSTORE)')
        hms = info['HIGHESTMODSEQ']
        assert info['EXISTS'] == 4 and hms >= 1, info
        data = fetch(c, '1:*', '(MODSEQ)')
        assert sorted(data) == [1, 2, 3, 4], data
        modseqs = {u: int(v['MODSEQ'][0]) for u, v in data.items()}
        assert all(1 <= m <= hms for m in modseqs.values()), (modseqs, hms)

        # a STORE raises the modseq of the changed message above HIGHESTMODSEQ
        untagged, _ = c.ok('UID STORE 2 +FLAGS (\\Seen)')
        upd = parse_fetches(untagged)
        m2 = int(upd[2]['MODSEQ'][0])
        assert m2 > hms, (m2, hms)
        data = fetch(c, '1:*', '(MODSEQ)')
        assert int(data[2]['MODSEQ'][0]) == m2
        for u in (1, 3, 4):
            assert int(data[u]['MODSEQ'][0]) == modseqs[u], (u, data[u], modseqs)
        # FETCH CHANGEDSINCE returns only what changed
        data = fetch(c, '1:*', '(FLAGS) (CHANGEDSINCE %d)' % hms)
        assert sorted(data) == [2], data
        # SEARCH MODSEQ
        untagged, _ = c.ok('UID SEARCH MODSEQ %d' % (hms + 1))
        assert untagged_texts(untagged)[0].startswith('* SEARCH 2 (MODSEQ %d)' % m2), untagged

        # UNCHANGEDSINCE: 2 changed since hms -> refused with [MODIFIED 2]
        untagged, tagged = c.ok('UID STORE 1,2 (UNCHANGEDSINCE %d) +FLAGS (\\Flagged)' % hms)
        assert response_code(tagged, 'MODIFIED') == '2', tagged
        data = fetch(c, '1:*', '(FLAGS MODSEQ)')
        assert flagset(data[1]['FLAGS']) == {'\\Flagged'}, data[1]
        assert flagset(data[2]['FLAGS']) == {'\\Seen'}, data[2]
        m1 = int(data[1]['MODSEQ'][0])
        assert m1 > m2, (m1, m2)
        # with a current modseq it succeeds
        c.ok('UID STORE 2 (UNCHANGEDSINCE %d) +FLAGS (\\Answered)' % m2)
        data = fetch(c, '2', '(FLAGS MODSEQ)')
        assert flagset(data[2]['FLAGS']) == {'\\Seen', '\\Answered'}, data
        assert int(data[2]['MODSEQ'][0]) > m1
        st = status(c, 'INBOX', 'HIGHESTMODSEQ')
        assert st['HIGHESTMODSEQ'] == int(data[2]['MODSEQ'][0]), (st, data)
        c.ok('LOGOUT')
        # modseqs persist across a restart
        dc.restart()
        c = RawImap(dc)
        info = select_box(c, 'INBOX', '(CONDSTORE)')
        assert info['HIGHESTMODSEQ'] == st['HIGHESTMODSEQ'], (info, st)
        data2 = fetch(c, '2', '(MODSEQ)')
        assert data2[2]['MODSEQ'] == data[2]['MODSEQ'], (data2, data)
        c.ok('LOGOUT')
        dc.assert_no_log_errors()


@harness.drivers('lmdb', 'maildir')
def test_qresync(driver):
    with harness.Dovecot(driver) as dc:
        for i in range(6):
            assert dc.lmtp_deliver(['testuser'], mkmsg('qr %d' % i)).all_ok()
        c = RawImap(dc)
        c.ok('ENABLE QRESYNC')
        info = select_box(c, 'INBOX', '(CONDSTORE)')
        uidv, hms = info['UIDVALIDITY'], info['HIGHESTMODSEQ']
        c.ok('LOGOUT')

        # changes by another client while this one is away
        o = RawImap(dc)
        select_box(o, 'INBOX')
        o.ok('UID STORE 3 +FLAGS (\\Flagged)')
        o.ok('UID STORE 2,5 +FLAGS (\\Deleted)')
        o.ok('EXPUNGE')
        o.ok('LOGOUT')

        c = RawImap(dc)
        untagged, _ = c.ok('ENABLE QRESYNC')
        assert any(t.startswith('* ENABLED') and 'QRESYNC' in t
                   for t in untagged_texts(untagged)), untagged
        info = select_box(c, 'INBOX', '(QRESYNC (%d %d))' % (uidv, hms))
        texts = untagged_texts(info['untagged'])
        vanished = [t for t in texts if t.startswith('* VANISHED')]
        assert len(vanished) == 1, texts
        mo = re.match(r'\* VANISHED \(EARLIER\) (\S+)$', vanished[0])
        assert mo and expand_set(mo.group(1)) == [2, 5], vanished
        changed = parse_fetches(info['untagged'])
        assert sorted(changed) == [3], changed
        assert flagset(changed[3]['FLAGS']) == {'\\Flagged'}, changed
        assert int(changed[3]['MODSEQ'][0]) > hms
        assert info['EXISTS'] == 4, info
        # with a wrong UIDVALIDITY the server does a full (non-QRESYNC) select
        c.ok('UNSELECT')
        info = select_box(c, 'INBOX', '(QRESYNC (%d %d))' % (uidv + 1, hms))
        assert not any(t.startswith('* VANISHED') for t in untagged_texts(info['untagged']))
        # UID FETCH ... (CHANGEDSINCE m VANISHED)
        untagged, _ = c.ok('UID FETCH 1:* (FLAGS) (CHANGEDSINCE %d VANISHED)' % hms)
        texts = untagged_texts(untagged)
        van = [t for t in texts if t.startswith('* VANISHED')]
        assert van and expand_set(van[0].split()[-1]) == [2, 5], texts
        assert sorted(parse_fetches(untagged)) == [3], texts
        # EXPUNGE with QRESYNC enabled answers with VANISHED, not EXPUNGE
        c.ok('UID STORE 6 +FLAGS.SILENT (\\Deleted)')
        untagged, _ = c.ok('EXPUNGE')
        texts = untagged_texts(untagged)
        assert texts == ['* VANISHED 6'], texts
        c.ok('LOGOUT')
        dc.assert_no_log_errors()


# messages for SEARCH / SORT: (subject, from, Date header, INTERNALDATE, body)
SEARCH_SET = [
    ('Quarterly report', 'Alice <alice@example.com>', 'Wed, 01 Jan 2020 10:00:00 +0000',
     '01-Jan-2020 10:00:00 +0000', 'The budget is attached.\r\n'),
    ('Lunch plans', 'Bob <bob@example.org>', 'Mon, 15 Mar 2021 12:00:00 +0000',
     '15-Mar-2019 12:00:00 +0000', 'Pizza or sushi?\r\nAnswer soon.\r\n'),
    ('Re: Quarterly report', 'Carol <carol@example.net>', 'Fri, 10 Jun 2022 09:30:00 +0000',
     '10-Jun-2022 09:30:00 +0000', big_body(20000, 'zebra')),
    ('Zebra crossing', 'Alice <alice@example.com>', 'Fri, 01 Dec 2023 08:00:00 +0000',
     '01-Dec-2021 08:00:00 +0000', 'Nothing special here, really nothing at all.\r\n'),
]
# the fifth arrives over LMTP (INTERNALDATE = now)
SEARCH_LMTP = ('Budget', 'Dave <dave@example.com>', 'Fri, 02 Feb 2024 02:02:02 +0000',
               None, 'the numbers\r\n')


@harness.drivers('lmdb', 'maildir')
def test_search_sort(driver):
    with harness.Dovecot(driver) as dc:
        c = RawImap(dc)
        raws = []
        for subj, frm, date, idate, body in SEARCH_SET:
            raw = mkmsg(subj, frm=frm, date=date, body=body)
            raws.append(raw)
            c.append('INBOX', raw, date=idate)
        subj, frm, date, _, body = SEARCH_LMTP
        assert dc.lmtp_deliver(['testuser'], mkmsg(subj, frm=frm, date=date, body=body)).all_ok()
        select_box(c, 'INBOX')
        sizes = {u: int(v['RFC822.SIZE']) for u, v in fetch(c, '1:*', '(RFC822.SIZE)').items()}
        for i, raw in enumerate(raws, 1):
            assert sizes[i] == len(raw), (i, sizes[i], len(raw))
        assert len(set(sizes.values())) == 5, sizes

        def search(crit, cmd='UID SEARCH'):
            untagged, _ = c.ok('%s %s' % (cmd, crit))
            nums = []
            for t in untagged_texts(untagged):
                if t.startswith('* SEARCH') or t.startswith('* SORT'):
                    nums += [int(x) for x in t.split()[2:]]
            return nums

        cases = [
            ('HEADER Subject report', [1, 3]),
            ('SUBJECT quarterly', [1, 3]),
            ('FROM alice', [1, 4]),
            ('FROM example.org', [2]),
            ('BODY budget', [1]),          # message 5 has "Budget" only in Subject
            ('BODY sushi', [2]),
            ('TEXT budget', [1, 5]),
            ('TEXT zebra', [3, 4]),
            ('BODY zebra', [3]),
            ('SINCE 1-Jan-2022', [3, 5]),
            ('BEFORE 1-Jan-2021', [1, 2]),
            ('ON 1-Dec-2021', [4]),
            ('SENTSINCE 1-Jan-2023', [4, 5]),
            ('SENTBEFORE 1-Jun-2021', [1, 2]),
            ('LARGER 10000', [3]),
            ('SMALLER 10000', [1, 2, 4, 5]),
            ('OR FROM bob SUBJECT zebra', [2, 4]),
            ('NOT FROM alice SMALLER 10000', [2, 5]),
            ('HEADER Subject nosuchword', []),
        ]
        for crit, expected in cases:
            got = search(crit)
            assert got == expected, (crit, got, expected)
        # sequence-number SEARCH agrees while nothing is expunged
        assert search('FROM alice', 'SEARCH') == [1, 4]

        assert search('(SUBJECT) UTF-8 ALL', 'SORT') == [5, 2, 1, 3, 4]
        assert search('(ARRIVAL) UTF-8 ALL', 'SORT') == [2, 1, 4, 3, 5]
        assert search('(DATE) UTF-8 ALL', 'SORT') == [1, 2, 3, 4, 5]
        by_size = sorted(sizes, key=lambda u: sizes[u])
        assert search('(SIZE) UTF-8 ALL', 'SORT') == by_size, sizes
        assert search('(REVERSE SIZE) UTF-8 ALL', 'SORT') == by_size[::-1], sizes
        assert search('(FROM) UTF-8 ALL', 'SORT') == [1, 4, 2, 3, 5]
        assert search('(SUBJECT) UTF-8 FROM alice', 'UID SORT') == [1, 4]
        c.ok('LOGOUT')
        dc.assert_no_log_errors()


@harness.drivers('lmdb', 'maildir')
def test_thread(driver):
    with harness.Dovecot(driver) as dc:
        c = RawImap(dc)
        c.ok('CREATE threads')
        ids = ['<t%d@example.com>' % i for i in range(1, 7)]
        spec = [  # subject, references (oldest first)
            ('Plan', []),
            ('Re: Plan', [ids[0]]),
            ('Re: Plan', [ids[0]]),
            ('Re: Re: Plan', [ids[0], ids[2]]),
            ('Other topic', []),
            ('Re: Other topic', [ids[4]]),
        ]
        for i, (subj, refs) in enumerate(spec):
            date = 'Mon, %02d Jan 2024 10:00:00 +0000' % (i + 1)
            c.append('threads', mkmsg(subj, date=date, msgid=ids[i], refs=refs))
        select_box(c, 'threads')
        untagged, _ = c.ok('THREAD REFERENCES UTF-8 ALL')
        assert untagged_texts(untagged) == ['* THREAD (1 (2)(3 4))(5 6)'], untagged
        untagged, _ = c.ok('UID THREAD REFERENCES UTF-8 NOT SUBJECT other')
        assert untagged_texts(untagged) == ['* THREAD (1 (2)(3 4))'], untagged
        untagged, _ = c.ok('THREAD ORDEREDSUBJECT UTF-8 ALL')
        # ORDEREDSUBJECT: the first message is the parent of all the others
        assert untagged_texts(untagged) == ['* THREAD (1 (2)(3)(4))(5 6)'], untagged
        c.ok('LOGOUT')
        dc.assert_no_log_errors()


@harness.drivers('lmdb', 'maildir')
def test_uid_expunge_uidplus(driver):
    with harness.Dovecot(driver) as dc:
        c = RawImap(dc)
        c.ok('CREATE src')
        c.ok('CREATE dst')
        uidv_src = status(c, 'src')['UIDVALIDITY']
        uidv_dst = status(c, 'dst')['UIDVALIDITY']
        msgs = [mkmsg('uidplus %d' % i, body='body %d\r\n' % i) for i in range(1, 6)]
        for i, m in enumerate(msgs, 1):
            tagged = c.append('src', m)
            assert response_code(tagged, 'APPENDUID') == '%d %d' % (uidv_src, i), tagged
        select_box(c, 'src')
        c.ok('UID STORE 2:4 +FLAGS.SILENT (\\Deleted)')
        untagged, _ = c.ok('UID EXPUNGE 3')
        texts = untagged_texts(untagged)
        assert [t for t in texts if t.endswith('EXPUNGE')] == ['* 3 EXPUNGE'], texts
        data = fetch(c, '1:*', '(FLAGS)')
        assert sorted(data) == [1, 2, 4, 5], data
        assert {u for u, v in data.items() if '\\Deleted' in v['FLAGS']} == {2, 4}, data
        # COPY: [COPYUID dst-uidvalidity src-uids dst-uids]
        _, tagged = c.ok('UID COPY 2,4,5 dst')
        code = response_code(tagged, 'COPYUID')
        assert code, tagged
        v, srcs, dsts = code.split()
        assert int(v) == uidv_dst, (code, uidv_dst)
        assert expand_set(srcs) == [2, 4, 5] and expand_set(dsts) == [1, 2, 3], code
        # MOVE: untagged OK [COPYUID ...], then the source message vanishes
        untagged, _ = c.ok('UID MOVE 1 dst')
        texts = untagged_texts(untagged)
        codes = [response_code(t, 'COPYUID') for t in texts if response_code(t, 'COPYUID')]
        assert codes == ['%d 1 4' % uidv_dst], texts
        assert '* 1 EXPUNGE' in texts, texts
        # an APPEND to a non-selected mailbox continues the UID sequence
        tagged = c.append('dst', mkmsg('appended to dst'))
        assert response_code(tagged, 'APPENDUID') == '%d 5' % uidv_dst, tagged
        c.ok('CLOSE')  # expunges \Deleted 2 and 4 in src
        st = status(c, 'src', 'MESSAGES UIDNEXT')
        assert st == {'MESSAGES': 1, 'UIDNEXT': 6}, st
        select_box(c, 'dst')
        data = fetch(c, '1:*', '(FLAGS BODY.PEEK[])')
        assert sorted(data) == [1, 2, 3, 4, 5], data
        assert [data[u]['BODY[]'] for u in (1, 2, 3, 4)] == [msgs[1], msgs[3], msgs[4], msgs[0]]
        # COPY keeps the flags
        assert {u for u, v in data.items() if '\\Deleted' in v['FLAGS']} == {1, 2}, data
        c.ok('LOGOUT')
        dc.assert_no_log_errors()


# ---------------------------------------------------------------------------
# 3. quota (count backend)

QUOTA_EXTRA = '''
plugin {
  quota = count:User quota
  quota_rule = *:storage=100k
  quota_vsizes = yes
}
protocol imap {
  mail_plugins = $mail_plugins imap_quota
}
'''


def quota_get(dc):
    r = dc.doveadm('quota', 'get', user='testuser')
    out = {}
    for line in r.stdout.splitlines():
        mo = re.match(r'User quota\s+(STORAGE|MESSAGE)\s+(\d+)\s+(\S+)\s+(\d+)', line)
        if mo:
            out[mo.group(1)] = (int(mo.group(2)), mo.group(3))
    assert set(out) == {'STORAGE', 'MESSAGE'}, r.stdout
    return out


@harness.drivers('lmdb', 'maildir')
def test_quota_count(driver):
    with harness.Dovecot(driver, mail_plugins=('quota',), extra=QUOTA_EXTRA) as dc:
        for i in range(5):
            r = dc.lmtp_deliver(['testuser'], mkmsg('quota %d' % i, body=big_body(4000 + 1000 * i)))
            assert r.all_ok(), r
        c = RawImap(dc)

        def totals():
            total = 0
            count = 0
            for box in ('INBOX', 'Archive'):
                s = sizes_of(c, box)
                total += sum(s.values())
                count += len(s)
            return total, count

        def check(where):
            total, count = totals()
            q = quota_get(dc)
            # Dovecot rounds the kilobytes up
            assert q['STORAGE'] == ((total + 1023) // 1024, '100'), (where, q, total)
            assert q['MESSAGE'] == (count, '-'), (where, q, count)
            return total, count

        c.ok('CREATE Archive')
        total, count = check('after delivery')
        assert count == 5 and total > 20000, (total, count)
        # IMAP GETQUOTAROOT agrees
        untagged, _ = c.ok('GETQUOTAROOT INBOX')
        texts = untagged_texts(untagged)
        assert '* QUOTAROOT INBOX "User quota"' in texts, texts
        assert '* QUOTA "User quota" (STORAGE %d 100)' % ((total + 1023) // 1024) in texts, texts

        select_box(c, 'INBOX')
        c.ok('UID COPY 1,3 Archive')
        total2, count2 = check('after copy')
        assert count2 == 7 and total2 > total, (total2, count2)
        select_box(c, 'INBOX')
        c.ok('UID STORE 2 +FLAGS.SILENT (\\Deleted)')
        c.ok('EXPUNGE')
        c.ok('UNSELECT')
        total3, count3 = check('after expunge')
        assert count3 == 6 and total3 < total2, (total3, count3)
        dc.doveadm('quota', 'recalc', user='testuser')
        assert check('after recalc') == (total3, count3)

        # over the limit: refused with the normal 5xx, nothing stored
        # (quota_grace defaults to 10%: go 20k over the limit)
        big = mkmsg('too big', body=big_body(100 * 1024 - total3 + 20 * 1024))
        r = dc.lmtp_deliver(['testuser'], big)
        code, text = r.data.get('testuser', r.rcpt.get('testuser'))
        assert code == 552 and 'Quota exceeded' in text, r
        assert check('after refused delivery') == (total3, count3)
        st = status(c, 'INBOX', 'MESSAGES')
        assert st['MESSAGES'] == 4, st
        c.ok('LOGOUT')
        if driver == 'lmdb':
            stats = lmdb_stats(dc)
            assert stats['messages'] == count3 and stats['message_bytes'] == total3, stats
        dc.assert_no_log_errors(ignore=[r'Quota exceeded'])


# ---------------------------------------------------------------------------
# 4. refusals (lmdb only)

def _refused_session(dc, needles):
    """LMTP delivery and IMAP login both fail; the log names the cause."""
    r = dc.lmtp_deliver(['testuser'], mkmsg('refused'))
    assert not r.all_ok(), r
    code = r.status.get('testuser')
    assert code is not None and code >= 400, r
    imap_failed = False
    try:
        c = RawImap(dc, login=False)
        _, tagged = c.command('LOGIN testuser testpass')
        if tagged.startswith('OK'):
            # logged in, but the mail session must not be usable
            _, tagged = c.command('SELECT INBOX')
            imap_failed = not tagged.startswith('OK')
        else:
            imap_failed = True
    except (EOFError, ConnectionError):
        imap_failed = True   # BYE + disconnect
    assert imap_failed, 'IMAP session worked despite the refused setting'
    # the cause is logged by both the lmtp and the imap process, and the
    # imap process disconnects the client (Dovecot's normal path for a
    # failed mail storage initialisation, not a crash)
    deadline = time.monotonic() + 5
    while True:
        lines = dc.log().splitlines()
        lmtp = [l for l in lines if l.split(' ', 2)[-1].startswith('lmtp(') and 'Error:' in l
                and all(n in l for n in needles)]
        imap = [l for l in lines if l.split(' ', 2)[-1].startswith('imap(testuser)')
                and 'Disconnected:' in l and all(n in l for n in needles)]
        if (lmtp and imap) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert lmtp, 'no lmtp error naming %r:\n%s' % (needles, dc.log_tail(40))
    assert imap, 'no imap disconnect naming %r:\n%s' % (needles, dc.log_tail(40))
    assert code == 451, r   # 4.3.0 Temporary internal error
    assert_no_crash(dc)
    # nothing was created where mail would have gone
    assert not os.path.exists(os.path.join(dc.mail_dir(), 'data.mdb')), \
        os.listdir(dc.mail_dir())


def test_lmdb_refuses_index_memory():
    with harness.Dovecot('lmdb', mail_location='lmdb:~/lmdb:INDEX=MEMORY') as dc:
        _refused_session(dc, ['INDEX=MEMORY'])


def test_lmdb_refuses_alt():
    with harness.Dovecot('lmdb', mail_location='lmdb:~/lmdb:ALT=~/alt') as dc:
        _refused_session(dc, ['ALT='])


def test_lmdb_refuses_attachment_dir():
    with harness.Dovecot('lmdb', extra='mail_attachment_dir = ~/att\n') as dc:
        _refused_session(dc, ['mail_attachment_dir'])


def test_lmdb_refuses_nfs():
    raise harness.Skip('needs an NFS mount for the environment; none available here '
                       '(lmdb-env.c refuses NFS_SUPER_MAGIC via statfs)')


# ---------------------------------------------------------------------------
# 5. bad settings (lmdb only)

def test_lmdb_bad_map_size_max():
    with harness.Dovecot('lmdb', extra='plugin {\n  lmdb_map_size_max = banana\n}\n') as dc:
        _refused_session(dc, ['lmdb_map_size_max', 'banana'])
