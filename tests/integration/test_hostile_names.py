"""Hostile input over the protocols (issue 11, item 3), part 3: mailbox
names at every limit Dovecot allows, through CREATE, APPEND, RENAME,
DELETE and the loss of every index file (force-resync and `doveadm lmdb
recover`). The checks every case makes are in test_hostile.py.
"""

import base64
import re
import subprocess
import sys

import harness
from test_hostile import (LONG, USER, Baseline, RawImap, assert_log_sane, message,
                          verify_clean)
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
    limit = sys.getrecursionlimit()
    if LONG:
        # os.walk (delete_index_files) recurses once per level of the
        # 1,000-level hierarchy
        sys.setrecursionlimit(max(limit, 20000))
    try:
        with harness.Dovecot(driver, mail_location=location, extra=SLASH) as dc:
            try:
                return _names_cases_run(dc, driver, layout)
            finally:
                if layout == 'fs' and LONG:
                    # (the harness's clean-up with Python's rmtree too)
                    dc.stop()
                    subprocess.run(['rm', '-rf', dc.mail_dir()], timeout=300)
    finally:
        sys.setrecursionlimit(limit)


def _names_cases_run(dc, driver: str, layout: str) -> tuple:
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
