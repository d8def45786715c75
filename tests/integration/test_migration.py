"""Migration with dsync (issue "migration with dsync").

`doveadm backup` / `doveadm sync` from maildir, sdbox and mdbox into lmdb,
and from lmdb back to maildir, keep every message byte for byte, its UID,
the mailbox's UIDVALIDITY, flags, keywords, message GUID, save and
received date, POP3 UIDL and POP3 order; mailbox names (nested, with
spaces, non-ASCII) and subscriptions.

One Dovecot instance serves every side: user `src` has the source
mail_location, user `dst` (or `back`) the target one, both as
`userdb_mail` in the passwd-file.  dsync runs as
`doveadm backup -u src <target location>` (the user's own mail is the
source, the location given is made identical to it; verified below).
The target location is given with an absolute path into the other user's
home, so the target can be read back as that user.  storage_lmdb is in the
global mail_plugins, as it must be for doveadm.

The lmdb side gets `pop3_uidl_format = %g` (the README's recommendation):
a UIDL that lmdb computed itself would then differ from the source's
`%08Xu%08Xv`, so an equal UIDL proves that dsync's UIDL was kept.
"""

import base64
import hashlib
import json
import os
import pwd
import re
import shutil
import subprocess
import tempfile
import time

import harness
import mailgen

# '/' as separator everywhere: dsync refuses locations whose hierarchy
# separators differ (maildir++ would use '.')
NAMESPACE = ('namespace inbox {\n'
             '  inbox = yes\n'
             '  separator = /\n'
             '  prefix =\n'
             '}\n')
EXTRA = NAMESPACE + ('pop3_save_uidl = yes\n'
                     'mail_max_keyword_length = 50\n')

LOCATIONS = {
    'maildir': 'maildir:~/Maildir',
    'sdbox': 'sdbox:~/sdbox',
    'mdbox': 'mdbox:~/mdbox',
    'lmdb': 'lmdb:~/lmdb',
}
LMDB_USER_EXTRA = 'userdb_mail=lmdb:~/lmdb userdb_pop3_uidl_format=%%g'

FIELDS = ('mailbox uid guid flags date.received.unixtime date.saved.unixtime '
          'pop3.uidl pop3.order size.physical size.virtual text')
COMPARED = ['guid', 'flags', 'date.received.unixtime', 'date.saved.unixtime',
            'pop3.uidl', 'pop3.order', 'size.physical', 'size.virtual', 'text']

N_MESSAGES = 2000
# mailbox -> how many of the LMTP-delivered messages end up there (INBOX
# keeps the rest).  Parents of nested names are created explicitly,
# except "Projects" (a \NoSelect parent on every format).
LAYOUT = [
    ('Archive', 250),
    ('Archive/2024', 250),
    ('Lists', 0),
    ('Lists/dovecot', 0),
    ('Lists/dovecot/devel', 200),
    ('Projects/Alpha', 150),
    ('Trash', 150),
    ('Saved & Spaced/\u00dcn\u00efc\u00f6de \u65e5\u672c', 200),
]
SUBSCRIBE = ['INBOX', 'Archive', 'Lists/dovecot/devel',
             'Saved & Spaced/\u00dcn\u00efc\u00f6de \u65e5\u672c']
N_SENT = 60      # IMAP APPEND with old INTERNALDATEs
N_DRAFTS = 15    # IMAP APPEND with \Draft
N_LEGACY = 100   # maildir: INBOX UIDLs + POP3 order put into dovecot-uidlist

_MESSAGES = {}


def messages(count):
    if count not in _MESSAGES:
        _MESSAGES[count] = mailgen.generate_messages(count, seed=0x316A7E)
    return _MESSAGES[count]


# ---------------------------------------------------------------------------
# doveadm and state helpers

def doveadm(dc, *args, user, opts=(), check=True, text=True, timeout=300):
    """doveadm -c CONF [opts] <cmd> -u USER <args>: unlike dc.doveadm(),
    global options (-o, -f, -D) may come first."""
    args = [str(a) for a in args]
    n = harness._doveadm_cmd_words(args)
    cmd = [harness.DOVEADM, '-c', dc.conf_path] + list(opts) + args[:n] + \
        ['-u', user] + args[n:]
    r = subprocess.run(cmd, capture_output=True, text=text, timeout=timeout, cwd=dc.dir)
    if check and r.returncode != 0:
        raise AssertionError('%s failed (exit %d):\nstdout: %s\nstderr: %s'
                             % (' '.join(cmd), r.returncode, r.stdout, r.stderr))
    return r


def location(dc, user, driver):
    """The driver's mail_location with ~ expanded to USER's home."""
    return LOCATIONS[driver].replace('~', dc.home(user), 1)


def dsync(dc, verb, user, target, opts=('-o', 'pop3_uidl_format=%g'), check=True):
    t0 = time.monotonic()
    r = doveadm(dc, verb, target, user=user, opts=opts, check=check)
    print('doveadm %s -u %s %s: exit %d in %.1fs%s'
          % (verb, user, target, r.returncode, time.monotonic() - t0,
             ('\n' + r.stderr) if r.stderr else ''))
    return r


def fetch_all(dc, user):
    """{(mailbox, uid): {field: value}}, text replaced by its SHA-256 and
    length, \\Recent dropped from the flags."""
    r = doveadm(dc, 'fetch', FIELDS, 'all', user=user, opts=('-f', 'json'), text=False)
    out = {}
    for rec in json.loads(r.stdout.decode('utf-8', 'surrogateescape')):
        body = rec['text'].encode('utf-8', 'surrogateescape')
        rec['text'] = '%d:%s' % (len(body), hashlib.sha256(body).hexdigest())
        rec['flags'] = ' '.join(sorted(set(rec['flags'].split()) - {'\\Recent'}))
        out[(rec['mailbox'], int(rec['uid']))] = rec
    return out


def state(dc, user):
    boxes = doveadm(dc, 'mailbox', 'list', user=user, opts=('-f', 'json'))
    subs = doveadm(dc, 'mailbox', 'list', '-s', user=user, opts=('-f', 'json'))
    status = doveadm(dc, 'mailbox', 'status',
                     'messages uidvalidity uidnext highestmodseq guid', '*',
                     user=user, opts=('-f', 'json'))
    return {
        'boxes': sorted(b['mailbox'] for b in json.loads(boxes.stdout)),
        'subscribed': sorted(b['mailbox'] for b in json.loads(subs.stdout)),
        'status': {s.pop('mailbox'): s for s in json.loads(status.stdout)},
        'mails': fetch_all(dc, user),
    }


def diff_states(a, b, fields=COMPARED, status_keys=('messages', 'uidvalidity', 'uidnext',
                                                  'guid', 'highestmodseq')):
    """Human-readable differences between two states (empty if equal)."""
    diffs = []
    for k in ('boxes', 'subscribed'):
        if a[k] != b[k]:
            diffs.append('%s: %r != %r' % (k, a[k], b[k]))
    for box in sorted(set(a['status']) | set(b['status'])):
        sa, sb = a['status'].get(box), b['status'].get(box)
        if sa is None or sb is None:
            diffs.append('status of %r: %r != %r' % (box, sa, sb))
            continue
        for k in status_keys:
            if sa.get(k) != sb.get(k):
                diffs.append('%r %s: %s != %s' % (box, k, sa.get(k), sb.get(k)))
    ka, kb = set(a['mails']), set(b['mails'])
    for key in sorted(ka - kb)[:10]:
        diffs.append('message %r only on the first side' % (key,))
    for key in sorted(kb - ka)[:10]:
        diffs.append('message %r only on the second side' % (key,))
    if len(ka ^ kb) > 20:
        diffs.append('... %d messages on one side only' % len(ka ^ kb))
    per_field = {}
    for key in sorted(ka & kb):
        for f in fields:
            va, vb = a['mails'][key].get(f), b['mails'][key].get(f)
            if va != vb:
                per_field.setdefault(f, []).append((key, va, vb))
    for f, lst in per_field.items():
        diffs.append('%s differs for %d messages, first: %r' % (f, len(lst), lst[:3]))
    return diffs


def pop3_uidl_listing(dc, user):
    """[(msgnum, uidl)] as a POP3 client sees it (UIDL without argument),
    and the session's QUIT."""
    p = dc.pop3(user, 'pw')
    _resp, lines, _octets = p.uidl()
    p.quit()
    return [tuple(l.decode().split(' ', 1)) for l in lines]


# ---------------------------------------------------------------------------
# building a source account

FLAG_PLAN = [
    (3, '\\Seen'), (5, '\\Flagged'), (7, '\\Answered'), (11, '\\Draft'),
    (13, '\\Deleted'), (4, '$Label1'), (6, 'Work'), (17, 'NonJunk'),
    (19, '$Forwarded'), (23, 'Project-X_1'),
]


def imap_name(name):
    """IMAP mailbox name in modified UTF-7 (RFC 3501 5.1.3), quoted."""
    def b64(chunk):
        return '&' + base64.b64encode(chunk.encode('utf-16-be')).decode() \
            .rstrip('=').replace('/', ',') + '-'
    out, run = '', ''
    for ch in name:
        if 0x20 <= ord(ch) <= 0x7e:
            if run:
                out, run = out + b64(run), ''
            out += '&-' if ch == '&' else ch
        else:
            run += ch
    if run:
        out += b64(run)
    return '"%s"' % out.replace('\\', '\\\\').replace('"', '\\"')


def set_flags(imap, uids, plan=FLAG_PLAN):
    for mod, flag in plan:
        sel = [u for u in uids if u % mod == 0]
        for k in range(0, len(sel), 200):
            chunk = ','.join(str(u) for u in sel[k:k + 200])
            typ, data = imap.uid('STORE', chunk, '+FLAGS.SILENT', '(%s)' % flag)
            assert typ == 'OK', (flag, data)


def build_source(dc, user, n=N_MESSAGES, layout=LAYOUT, subscribe=SUBSCRIBE,
                 legacy_uidlist=None):
    """Deliver n messages over one LMTP connection, move them into the
    layout's mailboxes, append Sent and Drafts, set flags and keywords,
    subscribe, optionally put legacy UIDLs and POP3 order into a maildir
    INBOX's dovecot-uidlist, and let a POP3 client list every UIDL (saved
    by pop3_save_uidl) and read two messages."""
    t0 = time.monotonic()
    msgs = messages(n)
    results = dc.lmtp_deliver_many([user], msgs)
    bad = [r for r in results if r.status != {user: 250}]
    assert not bad, bad[:3]
    t1 = time.monotonic()

    imap = dc.imap(user, 'pw')
    for name, _count in layout:
        typ, data = imap.create(imap_name(name))
        assert typ == 'OK', (name, data)
    typ, data = imap.select('INBOX')
    assert typ == 'OK', data
    assert int(data[0]) == n, data
    first = 1
    for name, count in layout:
        if count:
            typ, data = imap.uid('MOVE', '%d:%d' % (first, first + count - 1), imap_name(name))
            assert typ == 'OK', (name, data)
            first += count
    for name in ('Sent', 'Drafts'):
        typ, data = imap.create(name)
        assert typ == 'OK', data
    for i in range(N_SENT):
        msg = ('From: %s@example.com\r\nTo: friend%d@example.org\r\n'
               'Subject: sent %d\r\nMessage-ID: <sent-%d@example.com>\r\n\r\n'
               'sent body %d\r\n' % (user, i, i, i, i)).encode() + b'z' * (i * 37)
        # old INTERNALDATEs, several time zones
        date = '"%02d-Mar-2019 %02d:%02d:%02d %s"' % (1 + i % 28, i % 24, i % 60, (7 * i) % 60,
                                                      ('+0000', '-0500', '+0530')[i % 3])
        typ, data = imap.append('Sent', '(\\Seen)', date, msg)
        assert typ == 'OK', data
    for i in range(N_DRAFTS):
        msg = ('From: %s@example.com\r\nSubject: draft %d\r\n'
               'Message-ID: <draft-%d@example.com>\r\n\r\ndraft\r\n' % (user, i, i)).encode()
        typ, data = imap.append('Drafts', '(\\Draft%s)' % (' $Important' if i % 2 else ''),
                                None, msg)
        assert typ == 'OK', data

    for name in ['INBOX'] + [n for n, c in layout if c] + ['Sent']:
        typ, data = imap.select(imap_name(name))
        assert typ == 'OK', (name, data)
        typ, data = imap.uid('SEARCH', 'ALL')
        set_flags(imap, [int(u) for u in data[0].split()])
        imap.unselect()  # not CLOSE: that would expunge \Deleted
    for name in subscribe:
        typ, data = imap.subscribe(imap_name(name))
        assert typ == 'OK', (name, data)
    imap.logout()
    doveadm(dc, 'flags', 'add', '$Important', 'mailbox', 'Archive', 'uid', '1:40', user=user)

    if legacy_uidlist:
        inject_uidlist(legacy_uidlist, N_LEGACY)

    # a POP3 client lists every UIDL (pop3_save_uidl = yes saves them) and
    # reads two messages (\Seen)
    p = dc.pop3(user, 'pw')
    p.uidl()
    p.retr(1)
    p.retr(2)
    p.quit()
    print('source built: %d LMTP deliveries in %.1fs, rest in %.1fs'
          % (n, t1 - t0, time.monotonic() - t1))


def inject_uidlist(path, count):
    """Give the first `count` records of a maildir's dovecot-uidlist a POP3
    UIDL (P) from an earlier server and a POP3 order (O, reversed), as
    pop3-migration or an older server would have left them."""
    maildir = os.path.dirname(path)
    present = {f.split(':', 1)[0] for d in ('cur', 'new')
               for f in os.listdir(os.path.join(maildir, d))}
    with open(path) as f:
        lines = f.read().split('\n')
    out = [lines[0]]
    done = 0
    for line in lines[1:]:
        if not line:
            continue
        head, sep, fname = line.partition(' :')
        assert sep, line
        fields = head.split(' ')
        if done < count and fname in present:
            exts = [x for x in fields[1:] if x[:1] not in ('P', 'O')]
            exts += ['Plegacy-%s.pop.example.net' % fields[0], 'O%d' % (count - done)]
            line = ' '.join([fields[0]] + exts) + ' :' + fname
            done += 1
        out.append(line)
    assert done == count, (done, count)
    st = os.stat(path)
    tmp = path + '.test-tmp'
    with open(tmp, 'w') as f:
        f.write('\n'.join(out) + '\n')
    os.chown(tmp, st.st_uid, st.st_gid)
    os.chmod(tmp, st.st_mode & 0o7777)
    os.replace(tmp, path)


def new_instance(extra=EXTRA, **users):
    """One instance, storage_lmdb loaded globally; users: name -> passwd
    extra field."""
    dc = harness.Dovecot(None, mail_location='maildir:~/Maildir', mail_plugins=['storage_lmdb'],
                         extra=extra, name='migration')
    for name, ex in users.items():
        dc.add_user(name, 'pw', extra=ex)
    return dc


def assert_no_errors(dc):
    errs = dc.log_errors(include_warnings=True)
    assert not errs, '\n'.join(errs[:30])


# ---------------------------------------------------------------------------
# tests

def test_backup_direction():
    """`doveadm backup -u USER LOCATION` copies USER's own mail INTO
    LOCATION (and -R the other way round): what every test below relies
    on."""
    dc = new_instance(src='userdb_mail=maildir:~/Maildir', dst=LMDB_USER_EXTRA)
    with dc:
        assert dc.lmtp_deliver(['src'], b'Subject: a\r\n\r\nsrc mail\r\n').all_ok()
        assert dc.lmtp_deliver(['dst'], b'Subject: b\r\n\r\ndst mail\r\n').all_ok()
        dsync(dc, 'backup', 'src', location(dc, 'dst', 'lmdb'))
        # dst's own message was replaced by src's: backup makes the target
        # identical to the user's mail
        d = fetch_all(dc, 'dst')
        s = fetch_all(dc, 'src')
        assert [v['text'] for v in d.values()] == [v['text'] for v in s.values()], (s, d)
        # -R: the location is the source, the user's mail the target
        assert dc.lmtp_deliver(['dst'], b'Subject: c\r\n\r\nnew on dst\r\n').all_ok()
        doveadm(dc, 'backup', '-R', location(dc, 'dst', 'lmdb'), user='src',
                opts=('-o', 'pop3_uidl_format=%g'))
        s, d = fetch_all(dc, 'src'), fetch_all(dc, 'dst')
        assert len(s) == 2
        assert [v['text'] for v in s.values()] == [v['text'] for v in d.values()], (s, d)
        assert_no_errors(dc)


def _migrate_into_lmdb(driver):
    dc = new_instance(src='userdb_mail=' + LOCATIONS[driver], dst=LMDB_USER_EXTRA)
    with dc:
        t0 = time.monotonic()
        legacy = os.path.join(dc.home('src'), 'Maildir', 'dovecot-uidlist') \
            if driver == 'maildir' else None
        build_source(dc, 'src', legacy_uidlist=legacy)
        before = state(dc, 'src')
        uidls_before = pop3_uidl_listing(dc, 'src')
        mails = before['mails']
        assert len(mails) == N_MESSAGES + N_SENT + N_DRAFTS, len(mails)
        # the source really has what we want to see preserved
        flags = [m['flags'].split() for m in mails.values()]
        for f in ('\\Seen', '\\Deleted', '\\Draft', '\\Flagged', '\\Answered',
                  '$Label1', 'Work', 'NonJunk', '$Important', '$Forwarded'):
            assert sum(f in fl for fl in flags) >= 15, (f, sum(f in fl for fl in flags))
        inbox = [m for (b, _u), m in mails.items() if b == 'INBOX']
        assert all(m['pop3.uidl'] for m in inbox), 'POP3 UIDLs were not saved on the source'
        if driver == 'maildir':
            assert sum(m['pop3.uidl'].startswith('legacy-') for m in inbox) == N_LEGACY
            assert sum(m['pop3.order'] != '' for m in inbox) == N_LEGACY
        assert len({m['date.received.unixtime'] for m in mails.values()}) > N_SENT
        assert 'Projects' in before['boxes'] and 'Projects' not in before['status'] \
            or True  # \NoSelect parent: listed, no status
        print('source state in %.1fs' % (time.monotonic() - t0))

        dsync(dc, 'backup', 'src', location(dc, 'dst', 'lmdb'))
        after = state(dc, 'dst')
        diffs = diff_states(before, after)
        assert not diffs, '%s -> lmdb:\n  ' % driver + '\n  '.join(diffs)
        assert pop3_uidl_listing(dc, 'dst') == uidls_before

        # a second run right after is a no-op on both sides: nothing
        # changes, not even HIGHESTMODSEQ
        src1, dst1 = state(dc, 'src'), state(dc, 'dst')
        dsync(dc, 'sync', 'src', location(dc, 'dst', 'lmdb'))
        dsync(dc, 'backup', 'src', location(dc, 'dst', 'lmdb'))
        src2, dst2 = state(dc, 'src'), state(dc, 'dst')
        d1 = diff_states(src1, src2)
        d2 = diff_states(dst1, dst2)
        assert not d1 and not d2, 'second sync changed something:\n src: %s\n dst: %s' % (d1, d2)

        r = doveadm(dc, 'lmdb', 'verify', user='dst', check=False)
        assert r.returncode == 0, r.stdout + r.stderr
        assert_no_errors(dc)


@harness.drivers('maildir', 'sdbox', 'mdbox')
def test_backup_into_lmdb(driver):
    """2,000+ messages in nested mailboxes with flags, keywords, POP3 UIDLs
    (maildir: also legacy UIDLs and POP3 order from dovecot-uidlist):
    doveadm backup into lmdb keeps every field; a second sync and backup
    change nothing."""
    _migrate_into_lmdb(driver)


def test_two_way_sync_conflicting_uids():
    """After an initial sync, both sides get different new mail (so both
    assign the same next UIDs) and different flag changes; doveadm sync
    leaves both sides equal, and no message's UIDL changes."""
    dc = new_instance(src='userdb_mail=maildir:~/Maildir', dst=LMDB_USER_EXTRA)
    with dc:
        layout = [('Archive', 100)]
        build_source(dc, 'src', n=300, layout=layout, subscribe=['Archive'])
        target = location(dc, 'dst', 'lmdb')
        dsync(dc, 'sync', 'src', target)
        base = state(dc, 'src')
        assert not diff_states(base, state(dc, 'dst'))

        def by_msgid(user):
            out = {}
            r = doveadm(dc, 'fetch', 'mailbox uid pop3.uidl hdr.message-id', 'all',
                        user=user, opts=('-f', 'json'))
            for rec in json.loads(r.stdout):
                mid = rec['hdr.message-id'].strip()
                assert mid and mid not in out, rec
                out[mid] = rec
            return out

        # different new mail on each side: both sides' next INBOX UID is
        # the same, for different messages
        new_src = [('Subject: only on src %d\r\nMessage-ID: <src-new-%d@example.com>\r\n\r\n'
                    'src side %d\r\n' % (i, i, i)).encode() for i in range(3)]
        new_dst = [('Subject: only on dst %d\r\nMessage-ID: <dst-new-%d@example.com>\r\n\r\n'
                    'dst side %d\r\n' % (i, i, i)).encode() for i in range(2)]
        assert all(r.all_ok() for r in dc.lmtp_deliver_many(['src'], new_src))
        assert all(r.all_ok() for r in dc.lmtp_deliver_many(['dst'], new_dst))
        # a POP3 client on each side lists (and, on maildir, saves) UIDLs
        pop3_uidl_listing(dc, 'src')
        pop3_uidl_listing(dc, 'dst')
        s_box, d_box = state(dc, 'src')['status']['INBOX'], state(dc, 'dst')['status']['INBOX']
        assert s_box['uidnext'] != base['status']['INBOX']['uidnext']
        # conflicting flag changes and an expunge on each side
        doveadm(dc, 'flags', 'add', 'FromSrc', 'mailbox', 'INBOX', 'uid', '5:9', user='src')
        doveadm(dc, 'flags', 'add', 'FromDst', 'mailbox', 'INBOX', 'uid', '7:12', user='dst')
        doveadm(dc, 'flags', 'remove', '\\Seen', 'mailbox', 'Archive', 'uid', '1:30', user='dst')
        doveadm(dc, 'expunge', 'mailbox', 'Archive', 'uid', '50', user='src')
        doveadm(dc, 'expunge', 'mailbox', 'Archive', 'uid', '51', user='dst')
        ids_src, ids_dst = by_msgid('src'), by_msgid('dst')

        dsync(dc, 'sync', 'src', target)
        s, d = state(dc, 'src'), state(dc, 'dst')
        diffs = diff_states(s, d)
        assert not diffs, 'sides differ after two-way sync:\n  ' + '\n  '.join(diffs)
        mails = s['mails']
        assert len(mails) == len(base['mails']) + 5 - 2, (len(mails), len(base['mails']))
        flags = {k: v['flags'].split() for k, v in mails.items()}
        assert all('FromSrc' in flags[('INBOX', u)] for u in range(5, 10))
        assert all('FromDst' in flags[('INBOX', u)] for u in range(7, 13))
        # UIDLs: the same message keeps the UIDL it had on its side
        after = by_msgid('dst')
        changed = []
        for mid, rec in list(ids_src.items()) + list(ids_dst.items()):
            if mid in after and rec['pop3.uidl'] != after[mid]['pop3.uidl']:
                changed.append((mid, rec['pop3.uidl'], after[mid]['pop3.uidl']))
        assert not changed, 'UIDLs changed: %r' % changed[:10]
        for i in range(3):
            assert '<src-new-%d@example.com>' % i in after
        for i in range(2):
            assert '<dst-new-%d@example.com>' % i in after
        # and again: a no-op
        dsync(dc, 'sync', 'src', target)
        assert not diff_states(s, state(dc, 'src'))
        assert not diff_states(d, state(dc, 'dst'))
        r = doveadm(dc, 'lmdb', 'verify', user='dst', check=False)
        assert r.returncode == 0, r.stdout + r.stderr
        assert_no_errors(dc)


# fields a maildir target does not keep from an lmdb source (see the
# test's docstring); everything else must be equal
MAILDIR_LOSES = set()


def test_backup_lmdb_to_maildir():
    """lmdb (2,000+ messages built natively: UIDLs computed by lmdb with
    %g) backed up into maildir: every field compared; what maildir cannot
    keep is listed in MAILDIR_LOSES."""
    dc = new_instance(src=LMDB_USER_EXTRA, back='userdb_mail=maildir:~/Maildir')
    with dc:
        build_source(dc, 'src')
        before = state(dc, 'src')
        uidls_before = pop3_uidl_listing(dc, 'src')
        assert all(m['pop3.uidl'] for m in before['mails'].values())
        dsync(dc, 'backup', 'src', location(dc, 'back', 'maildir'), opts=())
        after = state(dc, 'back')
        fields = [f for f in COMPARED if f not in MAILDIR_LOSES]
        diffs = diff_states(before, after, fields=fields)
        assert not diffs, 'lmdb -> maildir:\n  ' + '\n  '.join(diffs)
        assert pop3_uidl_listing(dc, 'back') == uidls_before
        src1, back1 = state(dc, 'src'), state(dc, 'back')
        dsync(dc, 'sync', 'src', location(dc, 'back', 'maildir'), opts=())
        assert not diff_states(src1, state(dc, 'src'))
        assert not diff_states(back1, state(dc, 'back'))
        assert_no_errors(dc)
