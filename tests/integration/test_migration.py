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
import re
import shutil
import subprocess
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
    cmd = dc.doveadm_cmd(*(args[:n] + ['-u', user] + args[n:]), opts=opts)
    r = dc.run_wrapped(cmd, text=text, timeout=timeout)
    if check and r.returncode != 0:
        raise AssertionError('%s failed (exit %d):\nstdout: %s\nstderr: %s'
                             % (' '.join(cmd), r.returncode, r.stdout, r.stderr))
    return r


def location(dc, user, driver):
    """The driver's mail_location with ~ expanded to USER's home."""
    return LOCATIONS[driver].replace('~', dc.home(user), 1)


def dsync(dc, verb, user, target, opts=('-o', 'pop3_uidl_format=%g'), via='server',
          check=True):
    """doveadm VERB -u USER with the target given either as a mail
    location (via='local': dsync's in-process pipe) or as a user served by
    `doveadm dsync-server` (via='server': dsync's stream protocol, as with
    a remote server).  Dovecot 2.3.19's in-process pipe does not pass the
    save date on (dsync_ibc_pipe_send_mail() copies no saved_date: a
    target's save dates become the time of the sync, on every format);
    the stream protocol passes it."""
    t0 = time.monotonic()
    if via == 'local':
        args = [location(dc, target[0], target[1])]
    else:
        # run by the doveadm above, in its module namespace
        args = [harness.DOVEADM, '-c', dc.conf_path] + harness.doveadm_opts(opts) + \
            ['dsync-server', '-u', target[0]]
    r = doveadm(dc, verb, *args, user=user, opts=opts, check=check)
    print('doveadm %s -u %s %s: exit %d in %.1fs%s'
          % (verb, user, ' '.join(args), r.returncode, time.monotonic() - t0,
             ('\n' + r.stderr) if r.stderr else ''))
    return r


def fetch_all(dc, user):
    """{(mailbox, uid): {field: value}}; 'text' is the length and SHA-256
    of the stored message (from the pager format: doveadm's JSON output
    mangles some 8-bit bytes, differently from run to run); \\Recent is
    dropped from the flags."""
    fields = FIELDS.replace(' text', '')
    r = doveadm(dc, 'fetch', fields, 'all', user=user, opts=('-f', 'json'))
    out = {}
    for rec in json.loads(r.stdout):
        rec['flags'] = ' '.join(sorted(set(rec['flags'].split()) - {'\\Recent'}))
        out[(rec['mailbox'], int(rec['uid']))] = rec
    r = doveadm(dc, 'fetch', 'mailbox uid text', 'all', user=user, text=False)
    n = 0
    for part in re.split(rb'\x0c\n(?=mailbox: )', r.stdout):
        m = re.match(rb'mailbox: (.*)\nuid: (\d+)\ntext:\n', part)
        assert m, part[:200]
        body = part[m.end():]
        key = (m.group(1).decode(), int(m.group(2)))
        out[key]['text'] = '%d:%s' % (len(body), hashlib.sha256(body).hexdigest())
        n += 1
    assert n == len(out), (n, len(out))
    return out


def state(dc, user):
    boxes = doveadm(dc, 'mailbox', 'list', user=user, opts=('-f', 'json'))
    subs = doveadm(dc, 'mailbox', 'list', '-s', user=user, opts=('-f', 'json'))
    status = doveadm(dc, 'mailbox', 'status',
                     'messages uidvalidity uidnext highestmodseq guid', '*',
                     user=user, opts=('-f', 'json'), check=False)
    # a listed \\NoSelect parent has no status (maildir says so with exit 68)
    errors = [l for l in status.stderr.splitlines()
              if "Failed to lookup mailbox status: Mailbox doesn't exist" not in l]
    assert status.returncode in (0, 68) and not errors, status
    return {
        'boxes': sorted(b['mailbox'] for b in json.loads(boxes.stdout)),
        'subscribed': sorted(b['mailbox'] for b in json.loads(subs.stdout)),
        'status': {s.pop('mailbox'): s for s in json.loads(status.stdout)},
        'mails': fetch_all(dc, user),
    }


def diff_states(a, b, fields=COMPARED, migrated=False, uidl='guid', modseq=True,
                new_parents=False):
    """Human-readable differences between two states (empty if equal).
    migrated: b is a dsync target of a, so HIGHESTMODSEQ may be higher
    (never lower), and a message the source has no stored POP3 UIDL for
    gets the target's own: uidl='guid' (pop3_uidl_format = %g) or 'uv'
    (%08Xu%08Xv).  modseq=False: HIGHESTMODSEQ not compared (two sides of
    a two-way sync count modseqs independently).  new_parents: a \\NoSelect
    parent of the source may be a real, empty mailbox on the target."""
    diffs = []
    for k in ('boxes', 'subscribed'):
        if a[k] != b[k]:
            diffs.append('%s: %r != %r' % (k, a[k], b[k]))
    for box in sorted(set(a['status']) | set(b['status'])):
        sa, sb = a['status'].get(box), b['status'].get(box)
        if new_parents and (sa is None and sb and sb['messages'] == '0' or
                            sb is None and sa and sa['messages'] == '0'):
            continue
        if sa is None or sb is None:
            diffs.append('status of %r: %r != %r' % (box, sa, sb))
            continue
        for k in ('messages', 'uidvalidity', 'uidnext', 'guid', 'highestmodseq'):
            va, vb = sa.get(k), sb.get(k)
            if k == 'highestmodseq' and not modseq:
                continue
            if k == 'highestmodseq' and migrated:
                if int(vb) < int(va):
                    diffs.append('%r highestmodseq went down: %s -> %s' % (box, va, vb))
            elif va != vb:
                diffs.append('%r %s: %s != %s' % (box, k, va, vb))
    ka, kb = set(a['mails']), set(b['mails'])
    for key in sorted(ka - kb)[:10]:
        diffs.append('message %r only on the first side' % (key,))
    for key in sorted(kb - ka)[:10]:
        diffs.append('message %r only on the second side' % (key,))
    if len(ka ^ kb) > 20:
        diffs.append('... %d messages on one side only' % len(ka ^ kb))
    per_field = {}
    for key in sorted(ka & kb):
        ma, mb = a['mails'][key], b['mails'][key]
        for f in fields:
            va, vb = ma.get(f), mb.get(f)
            if f == 'pop3.uidl' and migrated and va == '':
                va = ma['guid'] if uidl == 'guid' else '%08x%08x' % (
                    key[1], int(a['status'][key[0]]['uidvalidity']))
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
    """`doveadm backup -u USER TARGET` makes TARGET identical to USER's own
    mail (and -R the other way round): what every test below relies on."""
    dc = new_instance(src='userdb_mail=maildir:~/Maildir', dst=LMDB_USER_EXTRA)
    with dc:
        assert dc.lmtp_deliver(['src'], b'Subject: a\r\n\r\nsrc mail\r\n').all_ok()
        assert dc.lmtp_deliver(['dst'], b'Subject: b\r\n\r\ndst mail\r\n').all_ok()
        dsync(dc, 'backup', 'src', ('dst', 'lmdb'), via='local')
        s, d = fetch_all(dc, 'src'), fetch_all(dc, 'dst')
        assert [v['text'] for v in s.values()] == [v['text'] for v in d.values()], (s, d)
        assert len(d) == 1
        assert dc.lmtp_deliver(['dst'], b'Subject: c\r\n\r\nnew on dst\r\n').all_ok()
        # -R: the target is the source
        doveadm(dc, 'backup', '-R', location(dc, 'dst', 'lmdb'), user='src',
                opts=('-o', 'pop3_uidl_format=%g'))
        s, d = fetch_all(dc, 'src'), fetch_all(dc, 'dst')
        assert len(s) == 2
        assert [v['text'] for v in s.values()] == [v['text'] for v in d.values()], (s, d)
        assert_no_errors(dc)


def _migrate_into_lmdb(driver):
    # maildir stores the UIDLs POP3 showed (pop3_save_uidl) in
    # dovecot-uidlist and dsync carries them: lmdb may use %g.  sdbox and
    # mdbox in 2.3 store no UIDL (pop3_save_uidl is maildir-only): their
    # UIDLs come from pop3_uidl_format, so lmdb must use the same format
    # (the default %08Xu%08Xv) to compute the same values at save, from the
    # UIDs and UIDVALIDITY dsync keeps.
    if driver == 'maildir':
        dst_extra, opts, uidl = LMDB_USER_EXTRA, ('-o', 'pop3_uidl_format=%g'), 'guid'
    else:
        dst_extra, opts, uidl = 'userdb_mail=lmdb:~/lmdb', (), 'uv'
    dc = new_instance(src='userdb_mail=' + LOCATIONS[driver], dst=dst_extra)
    with dc:
        legacy = os.path.join(dc.home('src'), 'Maildir', 'dovecot-uidlist') \
            if driver == 'maildir' else None
        build_source(dc, 'src', legacy_uidlist=legacy)
        before = state(dc, 'src')
        uidls_before = pop3_uidl_listing(dc, 'src')
        mails = before['mails']
        assert len(mails) == N_MESSAGES + N_SENT + N_DRAFTS, len(mails)
        # the source really has what must be preserved
        flags = [m['flags'].split() for m in mails.values()]
        for f in ('\\Seen', '\\Deleted', '\\Draft', '\\Flagged', '\\Answered',
                  '$Label1', 'Work', 'NonJunk', '$Important', '$Forwarded', 'Project-X_1'):
            assert sum(f in fl for fl in flags) >= 15, (f, sum(f in fl for fl in flags))
        inbox = [m for (b, _u), m in mails.items() if b == 'INBOX']
        if driver == 'maildir':
            assert all(m['pop3.uidl'] for m in inbox), 'POP3 UIDLs were not saved on the source'
            assert sum(m['pop3.uidl'].startswith('legacy-') for m in inbox) == N_LEGACY
            assert sum(m['pop3.order'] != '' for m in inbox) == N_LEGACY
        assert len({m['date.received.unixtime'] for m in mails.values()}) > N_SENT
        assert 'Projects' in before['boxes'] and len(before['status']) >= 10, before['status']

        # the stream protocol (dsync-server), which carries the save date
        dsync(dc, 'backup', 'src', ('dst', 'lmdb'), opts=opts)
        # a maildir's save date is its file's ctime: dsync's own maildir
        # sync (new/ -> cur/) changes it on the source; nothing else may
        # change there
        src_after = state(dc, 'src')
        fields = [f for f in COMPARED if not (driver == 'maildir' and f == 'date.saved.unixtime')]
        diffs = diff_states(before, src_after, fields=fields)
        assert not diffs, 'backup changed the source:\n  ' + '\n  '.join(diffs)
        after = state(dc, 'dst')
        # 2.4's sdbox/mdbox answer STATUS for a parent that was never
        # created ('Projects') as for an empty mailbox; lmdb, as every
        # format on 2.3, says it doesn't exist
        diffs = diff_states(src_after, after, migrated=True, uidl=uidl,
                            new_parents=dc.is_24 and driver in ('sdbox', 'mdbox'))
        # save dates last (a known bug), so that everything else is checked
        save_date_diffs = [d for d in diffs if d.startswith('date.saved')]
        diffs = [d for d in diffs if not d.startswith('date.saved')]
        assert not diffs, '%s -> lmdb:\n  ' % driver + '\n  '.join(diffs)
        assert pop3_uidl_listing(dc, 'dst') == uidls_before
        # every UIDL is stored in lmdb now (fixed, whatever the format later)
        assert all(m['pop3.uidl'] for m in after['mails'].values())

        # a second run right after is a no-op: nothing changes on the lmdb
        # side, HIGHESTMODSEQ included, nor on the source but for its
        # HIGHESTMODSEQs, which a two-way sync raises to the target's
        # (dsync, whatever the formats); with the in-process pipe as well
        src1, dst1 = state(dc, 'src'), state(dc, 'dst')
        dsync(dc, 'sync', 'src', ('dst', 'lmdb'), opts=opts, via='local')
        dsync(dc, 'backup', 'src', ('dst', 'lmdb'), opts=opts)
        # (a two-way sync also makes a maildir++ source's \\NoSelect
        # parents real, empty mailboxes -- stock maildir, with any target --
        # and the backup then copies them: new_parents)
        d1 = diff_states(src1, state(dc, 'src'), modseq=False, new_parents=True)
        d2 = diff_states(dst1, state(dc, 'dst'), new_parents=True)
        assert not d1 and not d2, 'second sync changed something:\n src: %s\n dst: %s' % (d1, d2)

        r = dc.doveadm('lmdb', 'verify', user='dst', check=False)
        assert r.returncode == 0, r.stdout + r.stderr
        assert_no_errors(dc)
        assert not save_date_diffs, \
            'save dates not kept (the LMDB link has the right one, the index ' \
            'cache the time of the sync):\n  ' + '\n  '.join(save_date_diffs)


@harness.drivers('maildir', 'sdbox', 'mdbox')
def test_backup_into_lmdb(driver):
    """2,000+ messages in nested mailboxes with flags, keywords, POP3 UIDLs
    (maildir: also legacy UIDLs and POP3 order in dovecot-uidlist):
    doveadm backup into lmdb keeps every field; a second sync and backup
    change nothing."""
    _migrate_into_lmdb(driver)


def test_two_way_sync_conflicting_uids():
    """After an initial sync, both sides get different new mail (so both
    assign the same next UIDs), flag changes and expunges; doveadm sync
    leaves both sides equal, and no message's UIDL changes."""
    dc = new_instance(src='userdb_mail=maildir:~/Maildir', dst=LMDB_USER_EXTRA)
    with dc:
        build_source(dc, 'src', n=300, layout=[('Archive', 100)], subscribe=['Archive'])
        dsync(dc, 'sync', 'src', ('dst', 'lmdb'))
        base = state(dc, 'src')
        diffs = diff_states(base, state(dc, 'dst'), migrated=True)
        assert not diffs, diffs

        def by_msgid(user):
            out = {}
            r = doveadm(dc, 'fetch', 'mailbox uid pop3.uidl hdr.message-id', 'all',
                        user=user, opts=('-f', 'json'))
            for rec in json.loads(r.stdout):
                mid = rec['hdr.message-id'].strip()
                assert mid and mid not in out, rec
                out[mid] = rec
            return out

        new_mail_from = time.time()
        new_src = [('Subject: only on src %d\r\nMessage-ID: <src-new-%d@example.com>\r\n\r\n'
                    'src side %d\r\n' % (i, i, i)).encode() for i in range(3)]
        new_dst = [('Subject: only on dst %d\r\nMessage-ID: <dst-new-%d@example.com>\r\n\r\n'
                    'dst side %d\r\n' % (i, i, i)).encode() for i in range(2)]
        assert all(r.all_ok() for r in dc.lmtp_deliver_many(['src'], new_src))
        assert all(r.all_ok() for r in dc.lmtp_deliver_many(['dst'], new_dst))
        # a POP3 client on each side lists UIDLs (maildir saves them)
        pop3_uidl_listing(dc, 'src')
        pop3_uidl_listing(dc, 'dst')
        s_inbox = state(dc, 'src')['status']['INBOX']
        d_inbox = state(dc, 'dst')['status']['INBOX']
        first_new = int(base['status']['INBOX']['uidnext'])
        assert int(s_inbox['uidnext']) == first_new + 3 and int(d_inbox['uidnext']) == first_new + 2
        doveadm(dc, 'flags', 'add', 'FromSrc', 'mailbox', 'INBOX', 'uid', '105:109', user='src')
        doveadm(dc, 'flags', 'add', 'FromDst', 'mailbox', 'INBOX', 'uid', '107:112', user='dst')
        doveadm(dc, 'flags', 'remove', '\\Seen', 'mailbox', 'Archive', 'uid', '1:30', user='dst')
        doveadm(dc, 'expunge', 'mailbox', 'Archive', 'uid', '50', user='src')
        doveadm(dc, 'expunge', 'mailbox', 'Archive', 'uid', '51', user='dst')
        ids_src, ids_dst = by_msgid('src'), by_msgid('dst')

        dsync(dc, 'sync', 'src', ('dst', 'lmdb'))
        sync_ended = time.time()
        s, d = state(dc, 'src'), state(dc, 'dst')
        fields = [f for f in COMPARED if f != 'pop3.uidl']
        diffs = diff_states(s, d, fields=fields, modseq=False)
        save_date_diffs = [x for x in diffs if x.startswith('date.saved')]
        diffs = [x for x in diffs if not x.startswith('date.saved')]
        assert not diffs, 'sides differ after two-way sync:\n  ' + '\n  '.join(diffs)
        mails = s['mails']
        assert len(mails) == len(base['mails']) + 5 - 2, (len(mails), len(base['mails']))
        fl = {k: v['flags'].split() for k, v in mails.items()}
        assert all('FromSrc' in fl[('INBOX', u)] for u in range(105, 110))
        assert all('FromDst' in fl[('INBOX', u)] for u in range(107, 113))
        assert not any('\\Seen' in fl[('Archive', u)] for u in range(1, 31))
        # the same message keeps the UIDL it had, on the lmdb side.  (The
        # maildir side is only reported: stock maildir drops the UIDLs of
        # the messages dsync renumbered there, and its UIDL_BACKEND of
        # messages outside INBOX changes between "" and the file name.)
        for user in ('src', 'dst'):
            after = by_msgid(user)
            # each side's own messages, plus the other side's new ones
            own, other = (ids_src, ids_dst) if user == 'src' else (ids_dst, ids_src)
            expect = dict(own)
            expect.update({k: v for k, v in other.items() if k not in own})
            changed = [(mid, rec['pop3.uidl'], after[mid]['pop3.uidl'])
                       for mid, rec in expect.items()
                       if mid in after and rec['pop3.uidl'] != after[mid]['pop3.uidl']]
            if user == 'src':
                print('maildir side: %d stored UIDLs changed, first: %r'
                      % (len(changed), changed[:5]))
                inbox_changed = [c for c in changed if c[0] in ids_src and
                                 ids_src[c[0]]['mailbox'] == 'INBOX' and
                                 not c[0].startswith('<src-new-')]
                assert not inbox_changed, inbox_changed
                continue
            assert not changed, '%s: UIDLs changed: %r' % (user, changed[:10])
            missing = ['<src-new-%d@example.com>' % i for i in range(3)
                       if '<src-new-%d@example.com>' % i not in after] + \
                      ['<dst-new-%d@example.com>' % i for i in range(2)
                       if '<dst-new-%d@example.com>' % i not in after]
            assert not missing, (user, missing)
        # and again: a no-op (the maildir side's INBOX HIGHESTMODSEQ may
        # still move by one after a UID conflict: stock maildir, not compared)
        dsync(dc, 'sync', 'src', ('dst', 'lmdb'))
        d1 = diff_states(s, state(dc, 'src'), modseq=False)
        d2 = diff_states(d, state(dc, 'dst'))
        assert not d1 and not d2, 'second sync changed something:\n src: %s\n dst: %s' % (d1, d2)
        r = dc.doveadm('lmdb', 'verify', user='dst', check=False)
        assert r.returncode == 0, r.stdout + r.stderr
        assert_no_errors(dc)
        # Messages delivered on one side and renumbered by the conflict are
        # saved anew during the sync; a side may keep the save date dsync
        # gives (lmdb) or use the time it saved (maildir). Either lies
        # between the new deliveries and the end of the sync: a save date
        # outside that window, or any difference for older mail, is real.
        far = []
        for key, sm in s['mails'].items():
            dm = d['mails'].get(key)
            if dm is None:
                continue
            a_t, b_t = sm.get('date.saved.unixtime'), dm.get('date.saved.unixtime')
            if a_t != b_t and (a_t is None or b_t is None or not all(
                    int(new_mail_from) - 1 <= int(t) <= int(sync_ended) + 1
                    for t in (a_t, b_t))):
                far.append((key, a_t, b_t))
        assert not far, (far[:10], save_date_diffs, new_mail_from, sync_ended)


def test_backup_lmdb_to_maildir():
    """lmdb (2,000+ messages built natively; UIDLs computed by lmdb with
    %g) backed up into maildir: every field compared, nothing is lost when
    dsync's stream protocol is used."""
    dc = new_instance(src=LMDB_USER_EXTRA, back='userdb_mail=maildir:~/Maildir')
    with dc:
        build_source(dc, 'src')
        before = state(dc, 'src')
        uidls_before = pop3_uidl_listing(dc, 'src')
        assert all(m['pop3.uidl'] for m in before['mails'].values())
        dsync(dc, 'backup', 'src', ('back', 'maildir'), opts=())
        after = state(dc, 'back')
        diffs = diff_states(before, after, migrated=True, new_parents=True)
        assert not diffs, 'lmdb -> maildir:\n  ' + '\n  '.join(diffs)
        assert pop3_uidl_listing(dc, 'back') == uidls_before
        src1, back1 = state(dc, 'src'), state(dc, 'back')
        dsync(dc, 'backup', 'src', ('back', 'maildir'), opts=(), via='local')
        d1 = diff_states(src1, state(dc, 'src'))
        d2 = diff_states(back1, state(dc, 'back'), new_parents=True)
        assert not d1 and not d2, 'second backup changed something:\n src: %s\n back: %s' % (d1, d2)
        # a two-way sync afterwards changes no message on either side; it
        # does raise the source's HIGHESTMODSEQs to the target's and turns
        # the \NoSelect parents the maildir target made real into real
        # (empty) mailboxes on the source too (dsync semantics)
        dsync(dc, 'sync', 'src', ('back', 'maildir'), opts=(), via='local')
        s2, b2 = state(dc, 'src'), state(dc, 'back')
        for x, y in ((src1, s2), (back1, b2), (s2, b2)):
            d = diff_states(x, y, modseq=False, new_parents=True)
            assert not d, 'two-way sync after backup:\n  ' + '\n  '.join(d)
        print('two-way sync after the backup: source statuses %r -> %r'
              % (src1['status'].get('INBOX'), s2['status'].get('INBOX')))
        assert_no_errors(dc)


# ---------------------------------------------------------------------------
# real POP3 clients

N_POP = 25


def _as_nobody(dc, cmd, cwd):
    env = {'HOME': cwd, 'PATH': '/usr/bin:/bin:/usr/sbin:/sbin', 'LANG': 'C.UTF-8'}
    r = subprocess.run(['setpriv', '--reuid', str(dc.uid), '--regid', str(dc.gid),
                        '--clear-groups', '--'] + cmd,
                       capture_output=True, text=True, timeout=120, cwd=cwd, env=env)
    return r


def _client_dir(dc, name):
    d = dc.path('clients', name)
    os.makedirs(d)
    for p in (dc.path('clients'), d):
        os.chown(p, dc.uid, dc.gid)
        os.chmod(p, 0o755)
    return d


def fetchmail_run(dc, user):
    """fetchmail in keep+uidl mode; returns how many messages it delivered
    in this run."""
    d = dc.path('clients', 'fetchmail')
    if not os.path.isdir(d):
        _client_dir(dc, 'fetchmail')
        os.makedirs(os.path.join(d, 'mail'))
        os.chown(os.path.join(d, 'mail'), dc.uid, dc.gid)
        rc = os.path.join(d, 'fetchmailrc')
        with open(rc, 'w') as f:
            f.write('set no bouncemail\n'
                    'poll 127.0.0.1 service %d protocol pop3 auth password uidl\n'
                    '  user "%s" there with password "pw" is "nobody" here\n'
                    '  options keep sslproto ""\n'
                    '  mda "/bin/sh -c \'cat > %s/mail/m.$$\'"\n'
                    % (dc.ports['pop3'], user, d))
        os.chown(rc, dc.uid, dc.gid)
        os.chmod(rc, 0o600)
    before = len(os.listdir(os.path.join(d, 'mail')))
    r = _as_nobody(dc, ['fetchmail', '-f', os.path.join(d, 'fetchmailrc'),
                        '--idfile', os.path.join(d, 'ids'),
                        '--pidfile', os.path.join(d, 'pid'), '--nosyslog'], d)
    # 0: mail delivered, 1: no mail
    assert r.returncode in (0, 1), r
    return len(os.listdir(os.path.join(d, 'mail'))) - before


def getmail_run(dc, user):
    """getmail6 (SimplePOP3Retriever, read_all = false, delete = false);
    returns how many messages it delivered in this run."""
    d = dc.path('clients', 'getmail')
    if not os.path.isdir(d):
        _client_dir(dc, 'getmail')
        for sub in ('', 'cur', 'new', 'tmp'):
            p = os.path.join(d, 'Maildir', sub)
            os.makedirs(p, exist_ok=True)
            os.chown(p, dc.uid, dc.gid)
        rc = os.path.join(d, 'getmailrc')
        with open(rc, 'w') as f:
            f.write('[retriever]\ntype = SimplePOP3Retriever\nserver = 127.0.0.1\n'
                    'port = %d\nusername = %s\npassword = pw\n\n'
                    '[destination]\ntype = Maildir\npath = %s/Maildir/\n\n'
                    '[options]\nread_all = false\ndelete = false\nverbose = 0\n'
                    % (dc.ports['pop3'], user, d))
        os.chown(rc, dc.uid, dc.gid)
    before = len(os.listdir(os.path.join(d, 'Maildir', 'new')))
    r = _as_nobody(dc, ['getmail', '--getmaildir', d, '--rcfile', 'getmailrc'], d)
    assert r.returncode == 0, r
    return len(os.listdir(os.path.join(d, 'Maildir', 'new'))) - before


def test_pop3_clients_after_migration():
    """maildir with pop3_uidl_format = %f (UIDL = file name) and
    pop3_save_uidl: fetchmail and getmail6 (keep mode) fetch everything
    once; the user is moved to lmdb with dsync and the POP3 UIDL listing
    is identical, and both clients fetch nothing.  Negative control: the
    same mail copied with IMAP APPEND into a fresh lmdb location (new
    UIDLs) makes both fetch everything again."""
    for tool in ('fetchmail', 'getmail'):
        if shutil.which(tool) is None:
            raise harness.Skip('%s not installed (apt-get install fetchmail getmail6)' % tool)
    dc = new_instance(extra=EXTRA + 'pop3_uidl_format = %f\n',
                      pop='userdb_mail=maildir:~/Maildir')
    with dc:
        msgs = [('From: a@example.com\r\nSubject: pop %d\r\nMessage-ID: <pop-%d@example.com>'
                 '\r\n\r\nbody %d\r\n' % (i, i, i)).encode() for i in range(N_POP)]
        assert all(r.all_ok() for r in dc.lmtp_deliver_many(['pop'], msgs))
        listing0 = pop3_uidl_listing(dc, 'pop')
        assert len(listing0) == N_POP and all('.' in u for _n, u in listing0), listing0
        assert fetchmail_run(dc, 'pop') == N_POP
        assert getmail_run(dc, 'pop') == N_POP
        assert fetchmail_run(dc, 'pop') == 0
        assert getmail_run(dc, 'pop') == 0
        # UIDLs were saved on the source (P in dovecot-uidlist)
        saved = fetch_all(dc, 'pop')
        assert [m['pop3.uidl'] for m in saved.values()] == [u for _n, u in listing0]

        # lmdb can't compute %f: the migration must say what lmdb uses for
        # mail without a stored UIDL (none here)
        r = dsync(dc, 'backup', 'pop', ('pop', 'lmdb'), opts=(), via='local', check=False)
        # (named in this version's syntax: 2.3 %f, 2.4 %{filename})
        assert r.returncode != 0 and re.search(r'pop3_uidl_format=(%f|%\{filename\})',
                                               r.stderr), r
        dsync(dc, 'backup', 'pop', ('pop', 'lmdb'), via='local')
        dc.add_user('pop', 'pw', extra=LMDB_USER_EXTRA)   # the switch
        assert pop3_uidl_listing(dc, 'pop') == listing0
        assert fetchmail_run(dc, 'pop') == 0
        assert getmail_run(dc, 'pop') == 0

        # negative control: same mail, APPENDed into a fresh lmdb location
        bodies = []
        r = doveadm(dc, 'fetch', 'mailbox uid text', 'all', user='pop', text=False)
        for part in re.split(rb'\x0c\n(?=mailbox: )', r.stdout):
            m = re.match(rb'mailbox: (.*)\nuid: (\d+)\ntext:\n', part)
            bodies.append(part[m.end():])
        assert len(bodies) == N_POP
        dc.add_user('pop', 'pw', extra=LMDB_USER_EXTRA.replace('~/lmdb', '~/lmdb-append'))
        imap = dc.imap('pop', 'pw')
        for b in bodies:
            typ, data = imap.append('INBOX', None, None, b)
            assert typ == 'OK', data
        imap.logout()
        listing2 = pop3_uidl_listing(dc, 'pop')
        assert len(listing2) == N_POP
        assert not set(u for _n, u in listing2) & set(u for _n, u in listing0)
        assert fetchmail_run(dc, 'pop') == N_POP
        assert getmail_run(dc, 'pop') == N_POP
        assert_no_errors(dc)
