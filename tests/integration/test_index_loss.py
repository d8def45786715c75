"""The index is a cache: delete every Dovecot index file of a user (the
list index included), run `doveadm force-resync -u USER '*'` and
`doveadm lmdb recover -u USER`, and every mailbox, message, UID,
UIDVALIDITY, flag, keyword, save/received date and POP3 UIDL is back.

maildir runs as the control: it keeps UIDs in dovecot-uidlist and flags
in file names, so most fields survive there too; the fields it cannot
keep are not compared for it.
"""

import os
import poplib
import re

import harness

USER = 'testuser'
N_MESSAGES = 1000

# mailbox -> how many of the delivered messages end up there
LAYOUT = [
    ('INBOX', 400),
    ('Archive', 150),
    ('Archive/2024', 150),
    ('Projects/Alpha/Notes', 100),
    ('Old', 120),       # renamed to Renamed below, with its child
    ('Old/Sub', 80),
]
RENAMES = [('Old', 'Renamed')]

FETCH_FIELDS = 'mailbox uid flags date.received date.saved guid pop3.uidl pop3.order'


def make_message(i: int) -> bytes:
    return ('From: sender%d@example.com\r\n'
            'To: testuser@example.com\r\n'
            'Subject: index loss %d\r\n'
            'Message-ID: <loss-%d@example.com>\r\n'
            'Date: Mon, 2 Nov 2026 10:%02d:%02d +0000\r\n'
            '\r\n'
            'Body of message %d.\r\n' % (i, i, i, (i // 60) % 60, i % 60, i)
            ).encode() + b'x' * (i % 300) + b'\r\n'


def parse_fetch(text: str) -> dict:
    """doveadm fetch pager output -> {(mailbox, uid): {field: value}}."""
    out = {}
    for block in text.split('\x0c'):
        rec = {}
        for line in block.strip('\n').split('\n'):
            if not line:
                continue
            key, _, value = line.partition(': ')
            rec[key.rstrip(':')] = value
        if rec:
            out[(rec['mailbox'], int(rec['uid']))] = rec
    return out


def normalise_flags(rec: dict) -> None:
    # \Recent is session state, not stored
    flags = set(rec['flags'].split()) - {'\\Recent'}
    rec['flags'] = ' '.join(sorted(flags))


def mailbox_state(dc) -> dict:
    """selectable name -> {uidvalidity, uidnext, messages, highestmodseq};
    \\NoSelect parents (Projects, Projects/Alpha) map to None"""
    out = {}
    r = dc.doveadm('mailbox', 'list', user=USER)
    for name in r.stdout.split():
        s = dc.doveadm('mailbox', 'status',
                       'messages uidvalidity uidnext highestmodseq', name,
                       user=USER, check=False)
        fields = dict(kv.split('=', 1) for kv in s.stdout.split() if '=' in kv)
        out[name] = {k: int(v) for k, v in fields.items()} if fields else None
    return out


def delete_index_files(home: str) -> list[str]:
    """Every file Dovecot's index code writes: dovecot.index*,
    dovecot.list.index*, dovecot.mailbox.log and .backup files. Not
    dovecot-uidlist / dovecot-keywords (maildir's own data) nor LMDB."""
    deleted = []
    for root, _dirs, files in os.walk(home):
        for f in files:
            if f.startswith('dovecot.index') or \
               f.startswith('dovecot.list.index') or \
               f.startswith('dovecot.mailbox.log'):
                path = os.path.join(root, f)
                os.unlink(path)
                deleted.append(os.path.relpath(path, home))
    return sorted(deleted)


def set_flags(imap, mailbox: str, uids: list[int]) -> None:
    typ, _ = imap.select(mailbox)
    assert typ == 'OK'
    plan = [
        (3, '\\Seen'), (5, '\\Flagged'), (7, '\\Answered'), (11, '\\Draft'),
        (4, '$Label1'), (6, 'Work'), (13, '\\Deleted'), (17, 'NonJunk'),
    ]
    for mod, flag in plan:
        sel = [u for u in uids if u % mod == 0]
        for k in range(0, len(sel), 100):
            chunk = ','.join(str(u) for u in sel[k:k + 100])
            typ, data = imap.uid('STORE', chunk, '+FLAGS.SILENT', '(%s)' % flag)
            assert typ == 'OK', (flag, data)


@harness.drivers('lmdb', 'maildir')
def test_index_loss_recovery(driver):
    extra = 'mail_max_keyword_length = 50\n'
    # '/' as the hierarchy separator on both, for the same names
    location = 'maildir:~/Maildir:LAYOUT=fs' if driver == 'maildir' else None
    with harness.Dovecot(driver, extra=extra, mail_location=location) as dc:
        dc.start()
        msgs = [make_message(i) for i in range(N_MESSAGES)]
        results = dc.lmtp_deliver_many([USER], msgs)
        assert all(r.status == {USER: 250} for r in results)

        imap = dc.imap(USER)
        # create the tree and move messages out of INBOX by ranges
        for name, _ in LAYOUT[1:]:
            typ, data = imap.create(name)
            assert typ == 'OK', data
        typ, _ = imap.select('INBOX')
        first = LAYOUT[0][1] + 1
        for name, count in LAYOUT[1:]:
            typ, data = imap.uid('MOVE', '%d:%d' % (first, first + count - 1),
                                 '"%s"' % name)
            assert typ == 'OK', (name, data)
            first += count
        for old, new in RENAMES:
            typ, data = imap.rename(old, new)
            assert typ == 'OK', data
        imap.subscribe('Archive')

        names = [n for n, _ in LAYOUT]
        names = ['Renamed' + n[3:] if n.startswith('Old') else n for n in names]
        for name in names:
            typ, data = imap.select('"%s"' % name)
            assert typ == 'OK', (name, data)
            typ, data = imap.uid('SEARCH', 'ALL')
            uids = [int(u) for u in data[0].split()]
            set_flags(imap, '"%s"' % name, uids)
            imap.unselect()  # CLOSE would expunge \\Deleted
        imap.logout()

        # changes that reach the backend only through later activity:
        # a POP3 session that RETRs and drops without QUIT (\Seen is
        # still written), and doveadm flags
        p = dc.pop3(USER)
        count, _ = p.stat()
        for n in (1, 2, 5, 8):
            p.retr(n)
        p.sock.close()
        dc.doveadm('flags', 'add', '$Important', 'mailbox', 'Archive',
                   'uid', '1:20', user=USER)
        # one more ordinary session syncs everything
        imap = dc.imap(USER)
        for name in names:
            imap.select('"%s"' % name)
            imap.noop()
        imap.logout()

        before_boxes = mailbox_state(dc)
        before = parse_fetch(dc.doveadm('fetch', FETCH_FIELDS, 'all',
                                        user=USER).stdout)
        assert len(before) == N_MESSAGES, len(before)
        selectable = {n for n, v in before_boxes.items() if v is not None}
        assert selectable == set(names), before_boxes
        for rec in before.values():
            normalise_flags(rec)
        # the flags we set really are there (else the test proves nothing)
        assert sum('\\Seen' in r['flags'] for r in before.values()) > 300
        assert sum('$Important' in r['flags'] for r in before.values()) == 20
        assert sum('Work' in r['flags'].split() for r in before.values()) > 100
        if driver == 'lmdb':
            assert all(r['pop3.uidl'] for r in before.values())

        dc.stop()
        deleted = delete_index_files(dc.home(USER))
        print('deleted %d index files:' % len(deleted))
        for f in deleted:
            print('  ' + f)
        # the list index and every mailbox's index must have been there
        assert any('dovecot.list.index' in f for f in deleted), deleted
        assert sum(f.endswith('dovecot.index.log') for f in deleted) >= len(names) - 1

        dc.start()
        r = dc.doveadm('force-resync', '*', user=USER, check=False)
        assert r.returncode == 0, r
        if driver == 'lmdb':
            r = dc.doveadm('lmdb', 'recover', user=USER, check=False)
            assert r.returncode == 0, r

        after_boxes = mailbox_state(dc)
        after = parse_fetch(dc.doveadm('fetch', FETCH_FIELDS, 'all',
                                       user=USER).stdout)
        for rec in after.values():
            normalise_flags(rec)

        assert set(after_boxes) == set(before_boxes), (before_boxes, after_boxes)
        for name in selectable:
            b, a = before_boxes[name], after_boxes[name]
            assert a is not None, name
            assert a['uidvalidity'] == b['uidvalidity'], (name, b, a)
            assert a['messages'] == b['messages'], (name, b, a)
            assert a['uidnext'] >= b['uidnext'], (name, b, a)
            if driver == 'lmdb':
                # modseqs must never go backwards for QRESYNC clients
                assert a['highestmodseq'] >= b['highestmodseq'], (name, b, a)

        assert set(after) == set(before)
        if driver == 'lmdb':
            fields = ['flags', 'date.received', 'date.saved', 'guid',
                      'pop3.uidl', 'pop3.order']
        else:
            # maildir: no save date or modseq without the index
            fields = ['flags', 'date.received', 'guid', 'pop3.uidl']
        diffs = []
        for key, b in before.items():
            a = after[key]
            for f in fields:
                if a[f] != b[f]:
                    diffs.append((key, f, b[f], a[f]))
        assert not diffs, '%d differences, first: %r' % (len(diffs), diffs[:10])

        # the server still works normally afterwards
        r = dc.lmtp_deliver([USER], make_message(99999))
        assert r.status == {USER: 250}
        imap = dc.imap(USER)
        typ, data = imap.select('INBOX')
        assert int(data[0]) == LAYOUT[0][1] + 1
        imap.logout()
        if driver == 'lmdb':
            r = dc.doveadm('lmdb', 'verify', user=USER, check=False)
            assert r.returncode == 0, r.stdout + r.stderr
        errors = [l for l in dc.log_errors(include_warnings=False)]
        assert not errors, errors


def test_index_loss_adopted_in_batches():
    """A lost index of a mailbox larger than one adoption batch (5,000
    links, lmdb-adopt.c) comes back whole over several syncs; adoption
    used to read every link of the mailbox into one pool in one go."""
    n = 5200
    cfg = 'lmtp_add_received_header = no\nplugin {\n  lmdb_autopurge_interval = 0\n}\n'
    with harness.Dovecot('lmdb', extra=cfg) as dc:
        msgs = [('Subject: batch %d\r\nMessage-ID: <batch-%d@dlmdb.test>\r\n\r\n%d\r\n'
                 % (i, i, i)).encode() for i in range(n)]
        # one MULTIAPPEND (LITERAL+): one transaction, seconds instead of
        # thousands of deliveries
        imap = dc.imap()
        cmd = b'M1 APPEND INBOX' + b''.join(b' {%d+}\r\n' % len(m) + m for m in msgs) + b'\r\n'
        imap.send(cmd)
        while True:
            line = imap.readline()
            assert line, 'connection closed'
            if line.startswith(b'M1 '):
                break
        assert line.startswith(b'M1 OK'), line
        imap.logout()
        imap = dc.imap()
        imap.select('INBOX')
        imap.uid('STORE', '5100', '+FLAGS', '(\\Flagged)')
        imap.logout()
        dc.stop()
        inbox = os.path.join(dc.mail_dir(), 'mailboxes', 'INBOX', 'lmdb-Mails')
        for f in os.listdir(inbox):
            if f.startswith('dovecot.index'):
                os.unlink(os.path.join(inbox, f))
        dc.start()
        imap = dc.imap()
        typ, data = imap.select('INBOX')
        assert typ == 'OK' and int(data[0]) == n, (typ, data)
        typ, data = imap.uid('SEARCH', 'ALL')
        assert [int(x) for x in data[0].split()] == list(range(1, n + 1))
        typ, data = imap.uid('FETCH', '5100', '(FLAGS)')
        assert b'\\Flagged' in data[0], data
        imap.logout()
        log = dc.log()
        adopted = [int(x) for x in re.findall(r'lmdb: Added (\d+) messages that were in '
                                             r'LMDB but missing from the index', log)]
        assert sum(adopted) == n and len(adopted) >= 2, adopted
