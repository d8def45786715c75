"""Hostile input over the protocols (issue 11, item 3), part 2: mailbox
names at every limit Dovecot allows, and a filesystem that turns full or
read-only at each step of a save. Part 1 and the checks every case makes
are in test_hostile.py.
"""

import base64
import os
import re
import shutil
import subprocess
import tempfile
import time

import harness
import test_compact
from test_hostile import (USER, LONG, Baseline, RawImap, assert_log_sane, big_message,
                          lmdb_stats, message, raw_append, verify_clean, wait_log_count)
from test_index_loss import delete_index_files

SLASH = 'namespace inbox {\n  inbox = yes\n  separator = /\n}\n'
# Dovecot's limits (lib-storage/mail-storage.c, mailbox-list.h): a name
# of at most 4096 bytes, each hierarchy level of at most 255 bytes of its
# storage name (modified UTF-7)
NAME_MAX = 4096
LEVEL_MAX = 255


# ---------------------------------------------------------------------------
# mailbox names at every limit

def mutf7(name: str) -> bytes:
    """RFC 3501 modified UTF-7, as a client sends a name without UTF8."""
    out, run = [], []

    def flush():
        if run:
            b = base64.b64encode(''.join(run).encode('utf-16-be')).rstrip(b'=')
            out.append(b'&' + b.replace(b'/', b',') + b'-')
            run.clear()
    for ch in name:
        if 0x20 <= ord(ch) <= 0x7e:
            flush()
            out.append(b'&-' if ch == '&' else ch.encode())
        else:
            run.append(ch)
    flush()
    return b''.join(out)


def _name_cases(layout: str) -> list:
    """(tag, name) in the order they are created: every limit Dovecot
    puts on a name, its UTF-8 forms, and the names of our own files and
    separators."""
    level = 'L' * LEVEL_MAX
    # a level whose modified UTF-7 form is exactly 255 bytes, and 256
    umlauts = 'ä' * 94 + 'ab'
    assert len(mutf7(umlauts)) == LEVEL_MAX
    cases = [
        ('level-255', level),
        ('level-256', 'L' * (LEVEL_MAX + 1)),
        ('utf7-level-255', umlauts),
        ('utf7-level-256', umlauts + 'c'),
        ('utf8', 'Ünïcødé/日本語/emoji😀 and &amp'),
        ('ampersand', 'a&b&-c'),
        ('dots', 'x.y/z.'),
        ('dotdot', 'x/../y'),
        ('dot', 'x/./y'),
        ('tilde', '~home'),
        ('wildcards', 'st*r%'),
        ('quotes', 'q"uo\\te'),
        ('spaces', ' lead/trail '),
        ('our-index-dir', 'f/lmdb-Mails'),
        ('our-mailbox-root', 'mailboxes'),
        ('our-index-files', 'dovecot.index/dovecot.list.index.log'),
        ('our-env-files', 'data.mdb/lock.mdb'),
    ]
    if layout == 'index':
        # no directory per name: the whole 4096 bytes Dovecot allows,
        # and the deepest hierarchy that fits in them
        full = '/'.join([level] * 16)
        cases += [
            ('name-4096', full + '/' + 'n' * (NAME_MAX - len(full) - 1)),
            ('name-4097', full + '/' + 'n' * (NAME_MAX - len(full))),
            ('deepest', '/'.join(['d'] * (NAME_MAX // 2))),
        ]
    else:
        # a directory per level: the filesystem's PATH_MAX comes first
        # (Dovecot answers "Not found" for ENAMETOOLONG, on maildir too)
        cases += [
            ('name-15-levels', '/'.join([level] * 15)),
            ('name-16-levels', '/'.join([level] * 16)),
            ('deep', '/'.join(['d'] * (1000 if LONG else 100))),
        ]
    return cases


def _quote_name(name: str) -> bytes:
    data = mutf7(name)
    return b'{%d+}\r\n%s' % (len(data), data)


def _reply(tagged: str) -> str:
    """A tagged reply without its timing."""
    return re.sub(r' \([0-9.+ ]+ secs\)\.$', '', tagged)


def _mailbox_state(c: RawImap) -> dict:
    """name (as LIST gives it, modified UTF-7) -> (UIDVALIDITY, UIDNEXT,
    [(UID, FLAGS, Message-ID header)]) for every selectable mailbox."""
    untagged, _ = c.ok('LIST "" "*"', timeout=120)
    out = {}
    for text, lits in untagged:
        # (harness.imap_parse takes seconds on thousands of long names)
        mo = re.match(rb'\* LIST \(([^)]*)\) (?:"[^"]*"|NIL) (.*)$', text, re.S)
        flags, name = mo.group(1).split(), mo.group(2)
        if lits:
            name = lits[0]
        elif name.startswith(b'"'):
            name = re.sub(rb'\\(.)', rb'\1', name[1:-1])
        if b'\\Noselect' in flags or b'\\NonExistent' in flags:
            continue
        untagged, tagged = c.command(b'EXAMINE {%d+}\r\n%s' % (len(name), name))
        assert tagged.startswith('OK'), (name, tagged)
        codes = b' '.join(t for t, _ in untagged)
        uidvalidity = int(re.search(rb'UIDVALIDITY (\d+)', codes).group(1))
        uidnext = int(re.search(rb'UIDNEXT (\d+)', codes).group(1))
        untagged, _ = c.ok('UID FETCH 1:* (FLAGS BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])')
        msgs = []
        for text, lits in untagged:
            if b' FETCH ' not in text:
                continue
            kv = harness.imap_parse(text, lits)[3]
            d = dict(zip(kv[::2], kv[1::2]))
            header = next(v for k, v in d.items() if k.startswith('BODY['))
            msgs.append((int(d['UID']),
                         sorted(f for f in d['FLAGS'] if f != '\\Recent'),
                         header.strip()))
        out[name] = (uidvalidity, uidnext, sorted(msgs))
    return out


def _names_run(location: str) -> tuple:
    """Create, fill, rename and delete mailboxes with every name case;
    returns the replies, the state before and (lmdb) after the index is
    lost, recovered."""
    driver = location.split(':')[0]
    layout = 'index' if 'LAYOUT=index' in location else 'fs'
    with harness.Dovecot(driver, mail_location=location, extra=SLASH) as dc:
        base = Baseline(dc, count=2)
        c = RawImap(dc, timeout=120)
        replies = []
        created = []
        for tag, name in _name_cases(layout):
            _u, tagged = c.command(b'CREATE ' + _quote_name(name), timeout=120)
            replies.append((tag, 'create', _reply(tagged)))
            if not tagged.startswith('OK'):
                continue
            created.append((tag, name))
            data = message('names-%s' % tag)
            _u, tagged = c.command(b'APPEND ' + _quote_name(name) +
                                   b' (\\Flagged $Name) {%d+}\r\n' % len(data) + data)
            replies.append((tag, 'append', _reply(tagged).split(' [')[0]))
        # renames: onto the level limit, past it, and back; a parent whose
        # child would grow past 4096 bytes
        level = 'R' * LEVEL_MAX
        for tag, old, new in (('to-limit', 'ampersand', level),
                              ('past-limit', level, level + 'R'),
                              ('limit-to-limit', level, level[:-1] + 'S'),
                              ('utf8-subtree', 'Ünïcødé', 'Ü2/ñ')):
            old = dict(created).get(old, old)
            _u, tagged = c.command(b'RENAME ' + _quote_name(old) + b' ' + _quote_name(new))
            replies.append((tag, 'rename', _reply(tagged)))
        if layout == 'index':
            _u, tagged = c.command(b'RENAME ' + _quote_name('L' * LEVEL_MAX) + b' ' +
                                   _quote_name('L' * LEVEL_MAX + 'x'))
            replies.append(('parent-of-4096', 'rename', _reply(tagged)))
        for tag in ('dots', 'our-mailbox-root'):
            name = dict(created).get(tag)
            if name:
                _u, tagged = c.command(b'DELETE ' + _quote_name(name))
                replies.append((tag, 'delete', _reply(tagged)))
        before = _mailbox_state(c)
        c.ok('LOGOUT')
        after = None
        if driver == 'lmdb':
            # the index is a cache: every mailbox and message comes back
            # from LMDB, with its name
            deleted = delete_index_files(dc.home(USER))
            assert any('dovecot.list.index' in d for d in deleted), deleted
            dc.doveadm('force-resync', '*', user=USER)
            dc.doveadm('lmdb', 'recover', user=USER)
            c = RawImap(dc, timeout=120)
            after = _mailbox_state(c)
            c.ok('LOGOUT')
        base.check()
        verify_clean(dc)
        # maildir keeps INBOX's index at the root, where LAYOUT=fs also
        # makes the directory of a mailbox named dovecot.index (lmdb
        # keeps mailboxes apart, under mailboxes/)
        assert_log_sane(dc, allowed=[r'Maildir/dovecot\.index: Is a directory']
                        if driver == 'maildir' else [])
        if layout == 'fs' and LONG:
            # Python's rmtree recurses once per level
            subprocess.run(['rm', '-rf', dc.mail_dir()], check=True)
        return replies, before, after


def test_mailbox_names_at_limits():
    """Every limit Dovecot puts on a mailbox name (255 bytes per level of
    its modified UTF-7 form, 4096 bytes in all, the deepest hierarchy in
    those, PATH_MAX where a level is a directory), UTF-8 names, and names
    that are our own files and separators: lmdb accepts and refuses
    CREATE, APPEND, RENAME (onto the limit, past it, a parent whose child
    would pass 4096) and DELETE exactly as maildir does (same replies;
    LAYOUT=fs refuses our index directory name lmdb-Mails as a level,
    as dbox refuses its own), and after every index file is deleted,
    force-resync and `doveadm lmdb recover` bring back every mailbox by
    its name with its UIDVALIDITY, UIDNEXT, messages and flags."""
    for layout in ('fs', 'index'):
        lmdb = _names_run('lmdb:~/lmdb' + (':LAYOUT=index' if layout == 'index' else ''))
        maildir = _names_run('maildir:~/Maildir:LAYOUT=%s' % layout)
        l_replies, l_before, l_after = lmdb
        m_replies, m_before, _ = maildir
        ours = {'our-index-dir'} if layout == 'fs' else set()
        assert [r for r in l_replies if r[0] not in ours] == \
            [r for r in m_replies if r[0] not in ours], (layout, l_replies, m_replies)
        for r in l_replies:
            if r[0] in ours:
                assert r[2] == 'NO [CANNOT] Invalid mailbox name: Contains reserved name', r
        # every name case that Dovecot accepts was accepted
        accepted = {r[0] for r in l_replies if r[1] == 'create' and r[2].startswith('OK')}
        assert {'level-255', 'utf7-level-255', 'utf8', 'ampersand'} <= accepted, accepted
        assert ('name-4096' in accepted) == (layout == 'index'), accepted
        refused = {r[0]: r[2] for r in l_replies if r[1] == 'create' and
                   not r[2].startswith('OK')}
        assert refused.get('level-256') == 'NO [CANNOT] Mailbox name too long', refused
        assert refused.get('utf7-level-256') == 'NO [CANNOT] Mailbox name too long', refused
        same = {k: v for k, v in l_before.items() if k not in m_before}
        assert not same or layout == 'fs', (layout, sorted(same))
        # the mailboxes lmdb has are maildir's (the messages' UIDs and
        # flags too; UIDVALIDITY differs by format)
        strip = lambda st: {k: (v[1], v[2]) for k, v in st.items()}
        assert strip(l_before).keys() - {b'f/lmdb-Mails', b'f'} == \
            strip(m_before).keys() - {b'f/lmdb-Mails', b'f'}, layout
        assert l_after == l_before, (layout, set(l_before) ^ set(l_after),
                                     [k for k in l_before if l_before[k] != l_after.get(k)])


# ---------------------------------------------------------------------------
# a filesystem that turns full or read-only at each step of a save

LIBEXEC = '/usr/lib/dovecot'
# what the log says for each errno; Dovecot's own mkdir and open code
# reports EROFS as a permission problem (lib-storage's ENOACCESS())
ERRNO_TEXT = {'ENOSPC': ('No space left on device',),
              'EROFS': ('Read-only file system', 'Permission denied')}


class Faulty:
    """Saves made by a mail process of its own, with the fault injector
    (tests/tools/fault-inject.c) preloaded: `lmtp` and `imap -u USER`
    started on a pipe against the running instance's config (its auth,
    its mail; -k keeps the DLMDB_FI_* environment through the re-exec
    that reads the config). Each save is one process, so each can fail a
    different step without restarting Dovecot; its log is its stderr."""

    def __init__(self, dc, workdir: str):
        self.dc = dc
        self.so = test_compact.build_injector(workdir)
        self.events_path = os.path.join(workdir, 'events.log')

    def _run(self, prog: str, user: str, args: list, data: bytes, fault: dict):
        with open(self.events_path, 'w'):
            pass
        os.chmod(self.events_path, 0o666)
        env = {'PATH': os.environ.get('PATH', '/usr/bin:/bin'), 'TZ': 'UTC',
               'LD_PRELOAD': self.so, 'DLMDB_FI_PROG': prog,
               'DLMDB_FI_PREFIX': self.dc.mail_dir(user), 'DLMDB_FI_LOG': self.events_path}
        for k, v in fault.items():
            env['DLMDB_FI_' + k.upper()] = str(v)
        r = subprocess.run([os.path.join(LIBEXEC, prog), '-k', '-c', self.dc.conf_path] + args,
                           input=data, capture_output=True, env=env, cwd=self.dc.dir,
                           timeout=120)
        with open(self.events_path) as f:
            events = [l.split() for l in f if l.strip()]
        return r, events

    def lmtp(self, user: str, data: bytes, **fault):
        """(the delivery's reply line, the process's log, events)"""
        stuffed = harness.LmtpClient.dot_stuff(data)
        r, events = self._run('lmtp', user, [], b'LHLO faulty\r\nMAIL FROM:<sender@example.com>\r\n'
                              b'RCPT TO:<%s>\r\nDATA\r\n' % user.encode() + stuffed +
                              b'QUIT\r\n', fault)
        out = r.stdout.decode('utf-8', 'replace').splitlines()
        # greeting, LHLO, MAIL, RCPT, DATA's 354, the delivery's reply
        replies = [l for l in out if l[:3].isdigit() and l[3:4] == ' ']
        assert len(replies) >= 6 and replies[4].startswith('354'), (out, r.stderr)
        return replies[5], r.stderr.decode('utf-8', 'replace'), events

    def append(self, user: str, data: bytes, **fault):
        """(the tagged APPEND reply, the process's log, events)"""
        r, events = self._run('imap', user, ['-u', user],
                              b'a APPEND INBOX {%d+}\r\n' % len(data) + data +
                              b'\r\nb LOGOUT\r\n', fault)
        out = r.stdout.decode('utf-8', 'replace')
        tagged = re.search(r'^a (.*)$', out, re.M)
        assert tagged and re.search(r'^b OK', out, re.M), (out[-500:], r.stderr)
        return tagged.group(1), r.stderr.decode('utf-8', 'replace'), events


class Ledger:
    """What was acknowledged to one user: Message-ID -> bytes as sent.
    check() reads INBOX over a session that stays open: every
    acknowledged message is there once (byte for byte: each is read
    whole once, and all again by check(whole=True)); a refused one at
    most once."""

    def __init__(self, dc, user: str = USER):
        self.dc = dc
        self.acked, self.refused, self.read = {}, set(), set()
        self.c = RawImap(dc, user=user, timeout=120)
        self.c.ok('SELECT INBOX')
        self.n = 0

    def make(self, tag: str, size: int = 0) -> tuple:
        self.n += 1
        mid = '%s-%d' % (tag, self.n)
        data = big_message(mid, size) if size else message(mid)
        return '<%s@hostile.test>' % mid, data

    def check(self, where, whole: bool = False):
        self.c.ok('NOOP')
        untagged, _ = self.c.ok('UID FETCH 1:* (BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])')
        uids = {}
        for text, lits in untagged:
            mo = re.search(rb'UID (\d+)', text)
            mid = re.search(rb'(<[^>]*>)', lits[0]) if lits and mo else None
            if mid:
                uids.setdefault(mid.group(1).decode(), []).append(int(mo.group(1)))
        for mid, data in self.acked.items():
            got = uids.get(mid, [])
            assert len(got) == 1, (where, mid, 'acknowledged, there %d times' % len(got))
            if whole or mid not in self.read:
                untagged, _ = self.c.ok('UID FETCH %d (BODY.PEEK[])' % got[0])
                body = next(l[0] for t, l in untagged if b' FETCH ' in t and l)
                # LMTP puts Return-Path and Delivered-To first
                assert harness.lf(body).endswith(harness.lf(data)), (where, mid)
                self.read.add(mid)
        for mid in self.refused:
            assert len(uids.get(mid, [])) <= 1, (where, mid, 'refused, there twice')


def _fault_steps(events, every_write: bool) -> list:
    """(kind, n) of every step a dry run made, in the order of kinds
    below; only every third write unless every_write (the writes of one
    body are alike)."""
    count = {}
    for ev in events:
        count[ev[1]] = max(count.get(ev[1], 0), int(ev[2]))
    out = []
    for kind in ('mkdir', 'ftruncate', 'write', 'commit', 'fdatasync', 'fsync', 'rename',
                 'unlink'):
        for n in range(1, count.get(kind, 0) + 1):
            if every_write or kind != 'write' or n % 3 == 1 or n == count[kind]:
                out.append((kind, n))
    return out


def _judge(where, reply: str, log: str, events, err: str) -> bool:
    """Whether the save was acknowledged; asserts what a refusal must be."""
    assert [e for e in events if e[3] == 'fail'], (where, 'the step never came', events)
    assert not re.search(r'Panic:|Fatal:|assertion failed', log), (where, log)
    if reply.startswith('250 ') or reply.startswith('OK '):
        return True
    if reply[:3].isdigit():
        # temporary: the sender retries, nothing bounces
        assert reply[:3] in ('451', '452'), (where, reply)
    else:
        assert re.match(r'NO \S', reply), (where, reply)
    assert any(t in log for t in ERRNO_TEXT[err]), (where, reply, log)
    return False


def test_filesystem_fails_at_each_step():
    """lmdb: a filesystem that turns full (ENOSPC) or read-only (EROFS) at
    one step of a save. The saves: an LMTP delivery and an IMAP APPEND
    into a mailbox in use, an APPEND of 2 MB (its body written in groups
    before the commit), and a new user's first delivery (which creates
    the environment, the directories and the index files: mkdir, rename,
    unlink, ftruncate). A dry run of each lists its steps; then each step
    fails in turn. Every save is either acknowledged and then there, byte
    for byte, or refused with a temporary failure (LMTP 451/452, IMAP NO;
    never 5xx, BAD, a crash or a dropped connection) whose log says why
    (the errno's text); nothing acknowledged is lost or doubled, the next
    delivery works (for the new user too: nothing half-made stays in the
    way), and `doveadm lmdb verify` is clean. By default ENOSPC and EROFS
    alternate by step and only every third write of a kind is failed;
    DLMDB_HOSTILE_LONG=1 fails every step with both, verifying after
    each."""
    workdir = tempfile.mkdtemp(prefix='dlmdb-hostile-', dir='/tmp')
    try:
        os.chmod(workdir, 0o777)
        _filesystem_fails(workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _filesystem_fails(workdir):
    extra = 'lmtp_add_received_header = no\nplugin {\n  lmdb_autopurge_interval = 0\n}\n'
    fresh = ['new%d' % i for i in range(120 if LONG else 40)]
    with harness.Dovecot('lmdb', extra=extra, users=fresh) as dc:
        base = Baseline(dc)
        fi = Faulty(dc, workdir)
        ledger = Ledger(dc)
        outcomes = {}
        trial = 0

        def record(where, acked, reply):
            key = 'acknowledged' if acked else reply.split(' <')[0][:34]
            outcomes.setdefault(key, []).append(where)

        for what, size in (('lmtp', 0), ('append', 0), ('append', 2_000_000)):
            save = fi.lmtp if what == 'lmtp' else fi.append
            mid, data = ledger.make('dry-%s' % what, size)
            reply, _log, events = save(USER, data)
            assert reply.startswith('250 ') or reply.startswith('OK '), reply
            ledger.acked[mid] = data
            steps = _fault_steps(events, LONG or size == 0)
            assert {'write', 'fdatasync', 'commit'} <= {k for k, _n in steps}, (what, events)
            for kind, n in steps:
                for err in ('ENOSPC', 'EROFS') if LONG else (('ENOSPC', 'EROFS')[trial % 2],):
                    trial += 1
                    where = (what, size, kind, n, err)
                    mid, data = ledger.make('%s-%s%d-%s' % (what, kind, n, err), size)
                    reply, log, events = save(USER, data, kind=kind, nth=n, action='fail',
                                              errno=err)
                    acked = _judge(where, reply, log, events, err)
                    record(where, acked, reply)
                    (ledger.acked.__setitem__(mid, data) if acked else ledger.refused.add(mid))
                    ledger.check(where)
                    mid, data = ledger.make('after', 0)
                    r = dc.lmtp_deliver(USER, data)
                    assert r.status == {USER: 250}, (where, r)
                    ledger.acked[mid] = data
                    if LONG:
                        verify_clean(dc)

        # a new user's first delivery, failing at each step
        dry = fresh.pop(0)
        reply, _log, events = fi.lmtp(dry, message('first'))
        assert reply.startswith('250 '), reply
        steps = _fault_steps(events, LONG)
        assert {'mkdir', 'rename', 'write', 'commit'} <= {k for k, _n in steps}, events
        for kind, n in steps:
            for err in ('ENOSPC', 'EROFS') if LONG else (('ENOSPC', 'EROFS')[trial % 2],):
                trial += 1
                user = fresh.pop(0)
                where = ('first', user, kind, n, err)
                reply, log, events = fi.lmtp(user, message('first-%s' % user), kind=kind,
                                             nth=n, action='fail', errno=err)
                acked = _judge(where, reply, log, events, err)
                record(where, acked, reply)
                r = dc.lmtp_deliver(user, message('next-%s' % user))
                assert r.status == {user: 250}, (where, r)
                c = RawImap(dc, user=user)
                untagged, _ = c.ok('EXAMINE INBOX')
                count = int(next(re.match(rb'\* (\d+) EXISTS', t).group(1)
                                 for t, _ in untagged if t.endswith(b' EXISTS')))
                assert count == (2 if acked else 1) or (not acked and count == 2), \
                    (where, count)
                c.ok('LOGOUT')
                verify_clean(dc, user)

        ledger.check('end', whole=True)
        ledger.c.ok('LOGOUT')
        base.check()
        assert_log_sane(dc)
        # both kinds of outcome happened: refusals, and steps Dovecot
        # tolerates (a cache file it can't write)
        assert 'acknowledged' in outcomes and len(outcomes) > 1, sorted(outcomes)
        for k, v in sorted(outcomes.items()):
            print('  %-36s %s' % (k, ' '.join('%s/%s%d/%s' % (w[0], w[2], w[3], w[4][1:3])
                                             for w in v)))
