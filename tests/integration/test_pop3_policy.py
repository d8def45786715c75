"""POP3 policy plugin (plugin/, module lib20_pop3_policy_plugin.so,
mail_plugins name `pop3_policy`): UIDL stability, DELE policies,
keep-days retention, quota-triggered purge, login delay, audit lines,
and real leave-on-server clients (fetchmail, getmail6).

Every item runs on lmdb and maildir; the UIDL stability test also runs on
sdbox and mdbox.  The maildir negative controls run without the plugin and
show that the scenario really would change the UIDLs.

Time is simulated with libfaketime, never by sleeping:

* doveadm runs with LD_PRELOAD=libfaketime.so.1 FAKETIME=+8d (inside the
  harness's private mount namespace for the build's doveadm plugins), not
  through the `faketime` command: see reap_faketime_objects();
* POP3 sessions that must happen "later" (or "earlier") run in a pop3
  process started through a small wrapper (`service pop3 { executable =
  <tmp>/pop3-faketime }`).  Dovecot starts one pop3 process per session
  and the wrapper reads the offset from a file at each start, so a test
  changes the time of the next POP3 session by writing that file
  (`set_pop3_time(dc, '+8d')`); an empty file means real time.  Dovecot's
  master only passes import_environment to its children, hence the
  wrapper sets LD_PRELOAD/FAKETIME itself.
* Every Dovecot binary also cleans its own environment at startup (all but
  import_environment) and libfaketime re-reads FAKETIME at the first clock
  call, so without `import_environment = ... FAKETIME LD_PRELOAD ...`
  doveadm silently runs at real time.  make_dc() adds those names.
* NO_FAKE_STAT=1 keeps stat() times real (libfaketime shifts them by the
  offset otherwise, which hides every time difference kept in a file's
  mtime, e.g. the login-delay file).  Consequence: maildir warns "Created
  dotlock file's timestamp is different than current time" under faketime;
  that warning is ignored (HARNESS_NOISE).

* libfaketime keeps a POSIX semaphore and shared memory object per process
  in /dev/shm, named by pid.  A Dovecot process loses them: it cleans its
  environment (FAKETIME_SHARED, the names) or changes its uid before
  libfaketime's destructor unlinks them.  Once pids wrap, the `faketime`
  command meets such a leftover under its own pid and exits with
  "sem_open: File exists" (a CI failure); the preloaded library just runs
  without them.  reap_faketime_objects() removes the leftovers of dead
  processes before each faketime step.

The 10,000-cycle UIDL test runs 2,000 cycles by default; DLMDB_HEAVY=1
runs the full 10,000.

The policy environment (dovecot-pop3-policy.mdb) is read with lmdb-utils'
mdb_stat and mdb_dump (readers beside the running Dovecot) and filled with
mdb_load while Dovecot is stopped.
"""

from __future__ import annotations

import atexit
import glob
import os
import poplib
import re
import socket
import struct
import subprocess
import time

import harness
import pop3clients
import policyrec
from harness import pop3_multiline

USER = 'testuser'
LIBFAKETIME = '/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1'
POP3_BINARY = '/usr/lib/dovecot/pop3'
UIDL_RE = re.compile(r'\A[\x21-\x7e]{1,70}\Z')
AUDIT_RE = re.compile(r'pop3_policy: (?P<action>[a-z][a-z-]*) guid=(?P<guid>\S+) '
                      r'uidl=(?P<uidl>\S+) size=(?P<size>\d+) rule=(?P<rule>\S+)')
HEAVY = os.environ.get('DLMDB_HEAVY') == '1'
DELETED_FLAG = '$POP3Deleted'


# ---------------------------------------------------------------------------
# configuration helpers

def module_built(name: str) -> bool:
    return bool(glob.glob(os.path.join(harness.build_dir(), 'plugin/.libs',
                                       'lib*_%s_plugin.so' % name)))


def quota_plugins() -> tuple:
    """mail_plugins needed for quota purge: quota + pop3_policy, plus
    pop3_policy_quota if the implementation ships it as its own module."""
    out = ('quota', 'pop3_policy')
    if module_built('pop3_policy_quota'):
        out += ('pop3_policy_quota',)
    return out


def plugin_block(settings: dict) -> str:
    if not settings:
        return ''
    return 'plugin {\n' + ''.join('  %s = %s\n' % kv for kv in settings.items()) + '}\n'


def make_dc(driver, settings=None, *, plugins=('pop3_policy',), extra='',
            faketime_pop3=False, name=None, mail_location=None) -> harness.Dovecot:
    """A (not yet started) instance with the plugin and `settings` in
    plugin {}.  faketime_pop3: pop3 processes run through the faketime
    wrapper (see set_pop3_time)."""
    settings = dict(settings or {})
    # Dovecot binaries clean their environment at startup, and
    # libfaketime re-reads FAKETIME on the first clock call: keep it
    # (doveadm is started under faketime, pop3 through the wrapper)
    top = ('import_environment = TZ CORE_OUTOFMEM CORE_ERROR LISTEN_PID LISTEN_FDS '
           'FAKETIME LD_PRELOAD DONT_FAKE_MONOTONIC NO_FAKE_STAT\n')
    if 'pop3_deleted_flag' in settings:
        # a core pop3 setting, not a plugin one; unquoted, Dovecot's
        # master takes $POP3Deleted for a variable and refuses to start
        top += 'pop3_deleted_flag = "%s"\n' % settings.pop('pop3_deleted_flag')
    dc = harness.Dovecot(driver, mail_plugins=plugins, name=name,
                         mail_location=mail_location,
                         extra=top + plugin_block(settings) + extra)
    if faketime_pop3:
        if not os.path.exists(LIBFAKETIME):
            raise harness.HarnessError('libfaketime missing: apt-get install -y faketime')
        off = dc.path('pop3-faketime-offset')
        open(off, 'w').close()
        os.chmod(off, 0o644)
        wrap = dc.path('pop3-faketime')
        with open(wrap, 'w') as f:
            # instrumented, the master passes the ASan runtime on in
            # LD_PRELOAD: libfaketime goes in front of it, and ASan is told
            # not to insist on coming first (harness.preload_env())
            f.write('#!/bin/sh\n'
                    'off=$(cat %s 2>/dev/null)\n'
                    'if [ -n "$off" ]; then\n'
                    '  if [ -n "$LD_PRELOAD" ]; then\n'
                    '    ASAN_OPTIONS="$ASAN_OPTIONS:verify_asan_link_order=0"\n'
                    '    export ASAN_OPTIONS\n'
                    '  fi\n'
                    '  LD_PRELOAD=%s${LD_PRELOAD:+:$LD_PRELOAD}\n'
                    '  FAKETIME="$off" DONT_FAKE_MONOTONIC=1 NO_FAKE_STAT=1\n'
                    '  export LD_PRELOAD FAKETIME DONT_FAKE_MONOTONIC NO_FAKE_STAT\n'
                    'fi\n'
                    'exec %s "$@"\n' % (off, LIBFAKETIME, POP3_BINARY))
        os.chmod(wrap, 0o755)
        dc.extra += 'service pop3 {\n  executable = %s\n}\n' % wrap
    return dc


FAKETIME_OBJ_RE = re.compile(r'\A(?:sem\.faketime_sem|faketime_shm)_(\d+)\Z')


def reap_faketime_objects() -> int:
    """Remove libfaketime's /dev/shm objects whose process is gone (see the
    module docstring); a live process's objects stay.  Returns how many."""
    n = 0
    try:
        names = os.listdir('/dev/shm')
    except OSError:
        return 0
    for name in names:
        m = FAKETIME_OBJ_RE.match(name)
        if m is None or os.path.exists('/proc/' + m.group(1)):
            continue
        try:
            os.unlink(os.path.join('/dev/shm', name))
            n += 1
        except OSError:
            pass
    return n


# the last test's processes leave theirs too
atexit.register(reap_faketime_objects)


def set_pop3_time(dc, offset: str = '') -> None:
    """Offset (libfaketime syntax, e.g. '+8d', '-3d', '+61s') for the pop3
    processes started from now on; '' = real time."""
    reap_faketime_objects()
    with open(dc.path('pop3-faketime-offset'), 'w') as f:
        f.write(offset + '\n' if offset else '')


def doveadm_at(dc, offset: str, *args, user=None, check=True):
    """doveadm with libfaketime preloaded, FAKETIME=OFFSET."""
    args = [str(a) for a in args]
    if user is not None:
        n = harness._doveadm_cmd_words(args)
        args = args[:n] + ['-u', user] + args[n:]
    if not os.path.exists(LIBFAKETIME):
        raise harness.HarnessError('libfaketime missing: apt-get install -y faketime')
    reap_faketime_objects()
    # only doveadm is preloaded, not unshare/sh/mount before it;
    # NO_FAKE_STAT: file times stay real (libfaketime would shift stat()
    # results by the offset too)
    # instrumented: libfaketime before the ASan runtime (harness.preload_env())
    cmd = ['env'] + ['%s=%s' % kv for kv in harness.preload_env(LIBFAKETIME).items()] + \
        ['FAKETIME=' + offset, 'NO_FAKE_STAT=1', harness.DOVEADM, '-c', dc.conf_path] + args
    cmd = dc.wrap(cmd, doveadm=args[0] in harness.DOVEADM_PLUGIN_COMMANDS)
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=dc.dir)
    if check and r.returncode != 0:
        raise harness.HarnessError('%s failed (exit %d):\nstdout: %s\nstderr: %s'
                                   % (' '.join(cmd), r.returncode, r.stdout, r.stderr))
    return r


# ---------------------------------------------------------------------------
# messages

def make_msg(tag: str, i: int, body_size: int = 300, user: str = USER) -> bytes:
    head = ('From: Sender %d <sender%d@example.com>\r\n'
            'To: %s@example.com\r\n'
            'Subject: %s message %d\r\n'
            'Message-ID: <%s-%d@pop3-policy.test>\r\n'
            'Date: Mon, 2 Nov 2026 10:%02d:%02d +0000\r\n'
            '\r\n' % (i, i, user, tag, i, tag, i, (i // 60) % 60, i % 60)).encode()
    line = (b'%s %d ' % (tag.encode(), i) + b'x' * 80)[:76] + b'\r\n'
    body = bytearray()
    while len(body) < body_size:
        body += line
    return head + bytes(body[:body_size]) + b'\r\n'


def mid(tag: str, i: int) -> str:
    return '<%s-%d@pop3-policy.test>' % (tag, i)


def deliver(dc, msgs, rcpt=USER):
    results = dc.lmtp_deliver_many([rcpt], msgs)
    for k, r in enumerate(results):
        assert r.status == {rcpt: 250}, 'delivery %d to %s: %r' % (k, rcpt, r)
    return results


def header_value(block: bytes, name: str) -> str | None:
    m = re.search(rb'(?im)^' + re.escape(name.encode()) + rb':[ \t]*(.*?)\r?$', block)
    return m.group(1).decode() if m else None


# ---------------------------------------------------------------------------
# POP3 helpers

def pop3_uidls(conn) -> dict[int, str]:
    _resp, lines, _ = conn.uidl()
    out = {}
    for line in lines:
        n, u = line.decode().split(' ', 1)
        out[int(n)] = u
    return out


def pop3_msgids(conn) -> dict[int, str]:
    """message number -> Message-ID (with TOP n 0, which is not a download)."""
    out = {}
    count, _ = conn.stat()
    for n in range(1, count + 1):
        _st, hdr = pop3_multiline(conn, 'TOP %d 0' % n)
        out[n] = header_value(hdr, 'Message-ID')
    return out


def pop3_view(dc, user=USER) -> dict[str, str]:
    """What a POP3 client sees: Message-ID -> UIDL (one session, no
    downloads, QUIT)."""
    c = dc.pop3(user)
    try:
        uidls = pop3_uidls(c)
        ids = pop3_msgids(c)
    finally:
        c.quit()
    assert set(uidls) == set(ids), (uidls, ids)
    view = {ids[n]: uidls[n] for n in uidls}
    check_uidls(list(uidls.values()))
    return view


def check_uidls(uidls):
    for u in uidls:
        assert UIDL_RE.match(u), 'UIDL %r violates RFC 1939 (1-70 chars 0x21-0x7E)' % u
    assert len(set(uidls)) == len(uidls), 'duplicate UIDLs in one listing: %r' % uidls


def raw_pop3_login(dc, user=USER, rcvbuf=None):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.settimeout(60)
    s.connect(('127.0.0.1', dc.ports['pop3']))
    f = s.makefile('rb')
    assert f.readline().startswith(b'+OK')
    for cmd in (b'USER %s' % user.encode(), b'PASS %s' % dc._pw(user, None).encode()):
        s.sendall(cmd + b'\r\n')
        line = f.readline()
        assert line.startswith(b'+OK'), (cmd, line)
    return s, f


def aborted_retr(dc, n: int, user=USER) -> None:
    """RETR n, read the status line and a few KB, then reset the
    connection (SO_LINGER 0).  With a small receive buffer and a message
    of several MB the server cannot have written it all."""
    s, f = raw_pop3_login(dc, user, rcvbuf=4096)
    s.sendall(b'RETR %d\r\n' % n)
    line = f.readline()
    assert line.startswith(b'+OK'), line
    f.read(2000)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack('ii', 1, 0))
    f.close()
    s.close()


def pop3_disconnects(dc) -> int:
    return len(re.findall(r'pop3\([^)]*\)<\d+><[^>]*>: Info: Disconnected', dc.log()))


def wait_pop3_disconnects(dc, count: int, timeout: float = 15) -> None:
    """Wait until the log shows `count` finished pop3 sessions (the pop3
    process has done its logout work)."""
    deadline = time.monotonic() + timeout
    while pop3_disconnects(dc) < count:
        if time.monotonic() > deadline:
            raise AssertionError('pop3 session did not end (want %d Disconnected lines):\n%s'
                                 % (count, dc.log_tail(30)))
        time.sleep(0.05)
    time.sleep(0.1)


def pop3_quit_and_wait(dc, conn) -> None:
    n = pop3_disconnects(dc)
    conn.quit()
    wait_pop3_disconnects(dc, n + 1)


# ---------------------------------------------------------------------------
# doveadm helpers

def parse_pager(text: str) -> list[dict]:
    out = []
    for block in text.split('\x0c'):
        rec = {}
        key = None
        for line in block.strip('\n').split('\n'):
            if not line:
                continue
            m = re.match(r'^([a-z0-9.\-]+):(?: (.*))?$', line)
            if m:
                key = m.group(1)
                rec[key] = m.group(2) or ''
            elif key:
                rec[key] += '\n' + line
        if rec:
            out.append(rec)
    return out


def mailbox_msgs(dc, user=USER, mailbox='INBOX') -> dict[str, dict]:
    """Message-ID -> {guid, uid, flags, size.virtual, size.physical}"""
    r = dc.doveadm('fetch', 'uid guid flags size.virtual size.physical hdr.message-id',
                   'mailbox', mailbox, 'all', user=user)
    out = {}
    for rec in parse_pager(r.stdout):
        out[rec['hdr.message-id'].strip()] = rec
    return out


def imap_msgids(dc, user=USER, mailbox='INBOX') -> set[str]:
    return set(mailbox_msgs(dc, user, mailbox))


def parse_table(text: str, header: list[str]) -> list[dict]:
    lines = [l for l in text.split('\n') if l.strip()]
    assert lines, 'empty output, expected header %r' % '\t'.join(header)
    got = lines[0].split('\t')
    assert got == header, 'header %r, expected %r' % (lines[0], '\t'.join(header))
    rows = []
    for l in lines[1:]:
        cols = l.split('\t')
        assert len(cols) == len(header), 'bad row %r' % l
        rows.append(dict(zip(header, cols)))
    return rows


def policy_uidl(dc, user=USER) -> dict[str, str]:
    r = dc.doveadm('pop3-policy', 'uidl', user=user)
    rows = parse_table(r.stdout, ['guid', 'uidl'])
    return {row['guid']: row['uidl'] for row in rows}


def policy_show(dc, user=USER) -> dict[str, dict]:
    r = dc.doveadm('pop3-policy', 'show', user=user)
    rows = parse_table(r.stdout, ['guid', 'uidl', 'downloaded', 'hidden'])
    return {row['guid']: row for row in rows}


def truthy(v: str) -> bool:
    return v.strip().lower() not in ('', '-', '0', 'no', 'n', 'false', 'never', 'none')


def audit_entries(text: str) -> list[dict]:
    out = []
    for line in text.split('\n'):
        m = AUDIT_RE.search(line)
        if not m:
            continue
        d = m.groupdict()
        d['size'] = int(d['size'])
        pm = re.search(r'(?:^|\s)[a-z0-9-]+\(([^)]+)\)', line[:m.start()])
        um = re.search(r'\buser=<?([^\s>,]+)', line)
        d['user'] = pm.group(1) if pm else (um.group(1) if um else None)
        d['line'] = line
        out.append(d)
    return out


def keep_days_entries(text):
    return [e for e in audit_entries(text) if e['rule'] == 'keep-days']


def check_audit(entries, msg: dict, rule=None, user=USER, what=''):
    """Exactly one audit entry for this message (by GUID or UIDL), with
    user, GUID, UIDL, size and rule."""
    mine = [e for e in entries if (e['guid'] == msg['guid'] or e['uidl'] == msg.get('uidl'))
            and (rule is None or e['rule'] == rule) and (user is None or e['user'] == user)]
    assert mine, 'no audit line for %s (guid=%s uidl=%s) in:\n%s' % (
        what, msg['guid'], msg.get('uidl'), '\n'.join(e['line'] for e in entries) or '(none)')
    e = mine[0]
    assert e['guid'] == msg['guid'], ('audit GUID', e['line'], msg['guid'])
    if msg.get('uidl'):
        assert e['uidl'] == msg['uidl'], ('audit UIDL', e['line'], msg['uidl'])
    sizes = {int(msg[k]) for k in ('size.virtual', 'size.physical') if msg.get(k)}
    assert e['size'] in sizes, ('audit size', e['line'], sizes)
    if rule:
        assert e['rule'] == rule, ('audit rule', e['line'], rule)
    if user:
        assert e['user'] == user, ('audit user', e['line'], user)
    return e


def index_loss(dc, user=USER) -> None:
    """Stop, delete the user's dovecot.index* and dovecot.list.index*
    files, start, force-resync."""
    dc.stop()
    deleted = []
    for root, _dirs, files in os.walk(dc.home(user)):
        for f in files:
            if f.startswith('dovecot.index') or f.startswith('dovecot.list.index'):
                os.unlink(os.path.join(root, f))
                deleted.append(f)
    assert any(f.startswith('dovecot.index') for f in deleted), deleted
    dc.start()
    dc.doveadm('force-resync', '*', user=user)


def uidvalidity(dc, user=USER, mailbox='INBOX') -> int:
    r = dc.doveadm('mailbox', 'status', 'uidvalidity', mailbox, user=user)
    return int(r.stdout.split('=', 1)[1])


def change_uidvalidity(dc, user=USER) -> None:
    old = uidvalidity(dc, user)
    new = old + 1000
    dc.doveadm('mailbox', 'update', '--uid-validity', new, 'INBOX', user=user)
    assert uidvalidity(dc, user) == new


# doveadm backup between maildir (default separator '.') and lmdb ('/')
# needs one explicit separator
NS_EXTRA = 'namespace inbox {\n  inbox = yes\n  separator = /\n}\n'
# harness artefact: processes started right before a quick stop()/start()
# (restart, index loss) log this 5 s later; it is not the plugin's doing
HARNESS_NOISE = [# maildir under libfaketime: the dotlock's real mtime vs the
                 # faked clock (a test artefact)
                 r"Created dotlock file's timestamp is different than current time"]

LOCATIONS = {'lmdb': 'lmdb:~/lmdb', 'maildir': 'maildir:~/Maildir',
             'sdbox': 'sdbox:~/sdbox', 'mdbox': 'mdbox:~/mdbox'}


def move_user(dc, user: str, dest_driver: str, password='testpass') -> None:
    """Freeze UIDLs, `doveadm backup` the user into a new location of
    dest_driver, then point the user's userdb `mail` at it."""
    n = int(dc.doveadm('mailbox', 'status', 'messages', 'INBOX', user=user)
            .stdout.split('=', 1)[1])
    r = dc.doveadm('pop3-policy', 'freeze-uidl', user=user)
    assert r.stdout.strip() == 'frozen\t%d' % n, 'freeze-uidl printed %r, expected %r' % (
        r.stdout, 'frozen\t%d' % n)
    loc = LOCATIONS[dest_driver]
    dest = loc.replace('~', dc.home(user), 1)
    dc.doveadm('backup', dest, user=user)
    dc.add_user(user, password, extra='userdb_mail=%s' % loc)
    if dc.is_24:
        # 2.4's userdb fields: mail_driver and mail_path (~ expanded)
        driver, path = dest.split(':', 1)
        got = (dc.doveadm('user', '-f', 'mail_driver', user).stdout.strip(),
               dc.doveadm('user', '-f', 'mail_path', user).stdout.strip())
        assert got == (driver, path), (got, driver, path)
    else:
        assert dc.doveadm('user', '-f', 'mail', user).stdout.strip() == loc


# ---------------------------------------------------------------------------
# 0. settings

BAD_SETTINGS = [
    ('pop3_policy_dele', 'bogus'),
    # the POP3 mailbox itself, as Dovecot resolves INBOX (any case): the
    # message would come back after every DELE
    ('pop3_policy_dele', 'move:INBOX'),
    ('pop3_policy_dele', 'move:inbox'),
    ('pop3_policy_keep_days', 'soon'),
    ('pop3_policy_quota_purge', 'maybe'),
    ('pop3_policy_login_delay', 'later'),
]


@harness.drivers('lmdb', 'maildir')
def test_bad_setting_fails_sessions(driver):
    """A bad value makes every session of that user fail (POP3, IMAP,
    LMTP), the log names setting and value, other users are unaffected."""
    dc = make_dc(driver, {'pop3_policy_dele': 'keep', 'pop3_deleted_flag': DELETED_FLAG})
    for k, (setting, value) in enumerate(BAD_SETTINGS):
        dc.add_user('bad%d' % k, extra='userdb_%s=%s' % (setting, value))
    with dc:
        deliver(dc, [make_msg('good', 1)])
        c = dc.pop3(USER)
        assert c.stat()[0] == 1
        c.quit()
        for k, (setting, value) in enumerate(BAD_SETTINGS):
            user = 'bad%d' % k
            try:
                c = dc.pop3(user)
                c.stat()
            except (poplib.error_proto, OSError, EOFError):
                pass
            else:
                raise AssertionError('POP3 session of %s with %s=%s did not fail'
                                     % (user, setting, value))
            try:
                dc.imap(user).select('INBOX')
            except Exception:
                pass
            else:
                raise AssertionError('IMAP session of %s with %s=%s did not fail'
                                     % (user, setting, value))
            r = dc.lmtp_deliver([user], make_msg('bad', k))
            assert r.status[user] != 250, ('LMTP delivery succeeded for', user, r)
            time.sleep(0.2)
            lines = [l for l in dc.log().split('\n') if setting in l and value in l]
            assert lines, 'log does not name %s=%s:\n%s' % (setting, value, dc.log_tail(20))


# ---------------------------------------------------------------------------
# 1. UIDL stability

@harness.drivers('lmdb', 'maildir', 'sdbox', 'mdbox')
def test_uidl_stability(driver):
    """UIDLs shown once never change (restart, index loss + force-resync,
    UIDVALIDITY change) and are never reused; `doveadm pop3-policy uidl`
    lists them and `freeze-uidl` stores them."""
    with make_dc(driver) as dc:
        deliver(dc, [make_msg('st', i) for i in range(6)])
        shown = pop3_view(dc)
        assert len(shown) == 6
        ever = dict(shown)                      # Message-ID -> UIDL, all ever shown

        def same(step):
            now = pop3_view(dc)
            assert now == {m: ever[m] for m in now}, '%s changed UIDLs: %r -> %r' % (
                step, {m: ever[m] for m in now}, now)
            return now

        dc.restart()
        same('restart')
        index_loss(dc)
        assert len(same('index loss + force-resync')) == 6
        change_uidvalidity(dc)
        assert len(same('UIDVALIDITY change')) == 6

        # DELE (expunge) two, deliver new ones: no UIDL is ever reused
        c = dc.pop3()
        ids = pop3_msgids(c)
        for n, m in ids.items():
            if m in (mid('st', 0), mid('st', 3)):
                c.dele(n)
        pop3_quit_and_wait(dc, c)
        deliver(dc, [make_msg('st2', i) for i in range(4)])
        now = pop3_view(dc)
        assert len(now) == 8
        for m, u in now.items():
            if m in ever:
                assert ever[m] == u, (m, ever[m], u)
            else:
                assert u not in ever.values(), 'UIDL %r reused for %s' % (u, m)
                ever[m] = u

        r = dc.doveadm('pop3-policy', 'freeze-uidl', user=USER)
        assert r.stdout.strip() == 'frozen\t8', r.stdout
        dc.restart()
        index_loss(dc)
        change_uidvalidity(dc)
        assert same('freeze + restart + index loss + UIDVALIDITY change') == now
        listed = policy_uidl(dc)
        guids = {m: r['guid'] for m, r in mailbox_msgs(dc).items()}
        for m, u in now.items():
            assert listed.get(guids[m]) == u, ('doveadm pop3-policy uidl', m, u, listed)
        dc.assert_no_log_errors(ignore=HARNESS_NOISE)


@harness.drivers('maildir')
def test_uidl_not_reused_after_uid_reset(driver):
    """maildir: mail is expunged, then dovecot-uidlist and the indexes are
    lost, so UIDs start at 1 again, and the old UIDVALIDITY is put back:
    pop3_uidl_format would now produce the expunged messages' UIDLs for
    new mail.  The plugin must not reuse them."""
    with make_dc(driver) as dc:
        deliver(dc, [make_msg('ru', i) for i in range(3)])
        old_uv = uidvalidity(dc)
        first = pop3_view(dc)
        c = dc.pop3()
        for n in range(1, 4):
            c.dele(n)
        pop3_quit_and_wait(dc, c)
        dc.stop()
        os.unlink(os.path.join(dc.mail_dir(), 'dovecot-uidlist'))
        for f in os.listdir(dc.mail_dir()):
            if f.startswith('dovecot.index') or f.startswith('dovecot.list.index'):
                os.unlink(os.path.join(dc.mail_dir(), f))
        dc.start()
        deliver(dc, [make_msg('ru2', i) for i in range(3)])
        dc.doveadm('mailbox', 'update', '--uid-validity', old_uv, 'INBOX', user=USER)
        uids = [int(r['uid']) for r in mailbox_msgs(dc).values()]
        assert sorted(uids) == [1, 2, 3], uids     # the scenario really happened
        second = pop3_view(dc)
        reused = set(first.values()) & set(second.values())
        assert not reused, 'UIDLs reused: %r (before %r, now %r)' % (reused, first, second)
        dc.assert_no_log_errors(ignore=HARNESS_NOISE)


@harness.drivers('maildir')
def test_uidl_uidvalidity_change_without_plugin(driver):
    """Negative control: without the plugin, maildir's default
    pop3_uidl_format (%08Xu%08Xv) changes every UIDL with the UIDVALIDITY."""
    with harness.Dovecot(driver) as dc:
        deliver(dc, [make_msg('neg', i) for i in range(3)])
        before = pop3_view(dc)
        change_uidvalidity(dc)
        after = pop3_view(dc)
        assert set(before) == set(after)
        assert all(before[m] != after[m] for m in before), (before, after)


@harness.drivers('lmdb', 'maildir')
def test_uidl_backup_move(driver):
    """freeze-uidl, `doveadm backup` into the other format (maildir -> lmdb
    for [lmdb], lmdb -> maildir for [maildir]), switch the user's mail
    location: the UIDLs the client saw are unchanged, new mail gets new
    ones, the destination's `pop3-policy uidl` lists them."""
    src = 'maildir' if driver == 'lmdb' else 'lmdb'
    with make_dc(src, plugins=('storage_lmdb', 'pop3_policy'), extra=NS_EXTRA) as dc:
        deliver(dc, [make_msg('mv', i) for i in range(5)])
        before = pop3_view(dc)
        move_user(dc, USER, driver)
        after = pop3_view(dc)
        assert after == before, (before, after)
        deliver(dc, [make_msg('mv2', 1)])
        after2 = pop3_view(dc)
        assert {m: after2[m] for m in before} == before
        assert after2[mid('mv2', 1)] not in before.values()
        listed = policy_uidl(dc)
        msgs = mailbox_msgs(dc)
        for m, u in after2.items():
            assert listed.get(msgs[m]['guid']) == u, (m, u, listed)
        dc.assert_no_log_errors(ignore=HARNESS_NOISE)


# ---------------------------------------------------------------------------
# 2. DELE policies

DELE_USERS = {
    'u_expunge': 'expunge',
    'u_keep': 'keep',
    'u_markread': 'mark-read',
    'u_move': 'move:Archive',
}


@harness.drivers('lmdb', 'maildir')
def test_dele_policies(driver):
    # pop3_deleted_flag per user: with it set, Dovecot itself hides
    # instead of expunging, so the expunge user must not have it
    dc = make_dc(driver)
    for u, pol in DELE_USERS.items():
        dc.add_user(u, extra='userdb_pop3_policy_dele=%s' % pol +
                    ('' if pol == 'expunge' else ' userdb_pop3_deleted_flag=' + DELETED_FLAG))
    with dc:
        failures = []
        for u, pol in DELE_USERS.items():
            deliver(dc, [make_msg(u, i, user=u) for i in range(3)], rcpt=u)
            before = mailbox_msgs(dc, u)
            view = pop3_view(dc, u)
            victim = mid(u, 1)
            c = dc.pop3(u)
            ids = pop3_msgids(c)
            n = [k for k, m in ids.items() if m == victim][0]
            c.dele(n)                      # DELE without RETR
            pop3_quit_and_wait(dc, c)

            # later POP3 sessions never see it again, the others keep UIDLs
            later = pop3_view(dc, u)
            expect = {m: view[m] for m in view if m != victim}
            if later != expect:
                failures.append('%s: POP3 after DELE %r, expected %r' % (pol, later, expect))
                continue
            inbox = mailbox_msgs(dc, u)
            vmsg = dict(before[victim], uidl=view[victim])
            entries = audit_entries(dc.log())
            try:
                if pol == 'expunge':
                    assert set(inbox) == set(expect), inbox.keys()
                elif pol in ('keep', 'mark-read'):
                    assert set(inbox) == set(before), 'IMAP lost mail: %r' % inbox.keys()
                    flags = inbox[victim]['flags'].split()
                    assert DELETED_FLAG in flags, flags
                    if pol == 'mark-read':
                        assert '\\Seen' in flags, flags
                    else:
                        assert '\\Seen' not in flags, flags
                    for m in expect:
                        assert DELETED_FLAG not in inbox[m]['flags'], inbox[m]
                    check_audit(entries, vmsg, user=u, what='DELE ' + pol)
                else:
                    assert set(inbox) == set(expect), inbox.keys()
                    boxes = dc.doveadm('mailbox', 'list', user=u).stdout.split()
                    assert 'Archive' in boxes, boxes
                    arch = mailbox_msgs(dc, u, 'Archive')
                    assert set(arch) == {victim}, arch.keys()
                    check_audit(entries, vmsg, user=u, what='DELE ' + pol)
                # still hidden after a restart
                if pol != 'expunge':
                    dc.restart()
                    assert pop3_view(dc, u) == expect, 'after restart'
            except AssertionError as e:
                failures.append('%s: %s' % (pol, e))
        assert not failures, '\n'.join(failures)
        dc.assert_no_log_errors(ignore=HARNESS_NOISE)


# ---------------------------------------------------------------------------
# 3. downloads and keep-days

BIG = 10 * 1024 * 1024


def download_fixture(dc):
    """m0 RETR, m1 TOP n 99999999, m2 TOP n 0, m3 aborted RETR (10 MB),
    m4 LIST/STAT only, m5 RETR + DELE (hidden with keep).
    (10 MB: more than the loopback send buffer can take, 4 MB max.)
    Returns {Message-ID: fetch record + uidl}."""
    msgs = [make_msg('dl', i, BIG if i == 3 else 400) for i in range(6)]
    deliver(dc, msgs)
    view = pop3_view(dc)
    c = dc.pop3()
    ids = {m: n for n, m in pop3_msgids(c).items()}
    c.stat()
    c.list()
    c.list(ids[mid('dl', 4)])
    _st, body = pop3_multiline(c, 'RETR %d' % ids[mid('dl', 0)])
    assert mid('dl', 0).encode() in body
    _st, body = pop3_multiline(c, 'TOP %d 99999999' % ids[mid('dl', 1)])
    assert len(body) > 400 and mid('dl', 1).encode() in body, body[-50:]
    pop3_multiline(c, 'TOP %d 0' % ids[mid('dl', 2)])
    pop3_multiline(c, 'RETR %d' % ids[mid('dl', 5)])
    c.dele(ids[mid('dl', 5)])
    pop3_quit_and_wait(dc, c)
    n = pop3_disconnects(dc)
    aborted_retr(dc, ids[mid('dl', 3)])
    wait_pop3_disconnects(dc, n + 1)
    # the abort was real: Dovecot logs how much of the RETR it sent
    last = re.findall(r'pop3\([^)]*\)<\d+><[^>]*>: Info: Disconnected.*', dc.log())[-1]
    m = re.search(r'retr=(\d+)/(\d+)', last)
    assert m and int(m.group(2)) < BIG, 'RETR not aborted: ' + last
    recs = mailbox_msgs(dc)
    for m, u in view.items():
        recs[m]['uidl'] = u
    return recs


DOWNLOADED = {mid('dl', 0), mid('dl', 1), mid('dl', 5)}


@harness.drivers('lmdb', 'maildir')
def test_download_detection(driver):
    """`doveadm pop3-policy show`: only the full RETR and TOP n 99999999
    count as downloads; TOP n 0, an aborted RETR and LIST/STAT do not.
    The DELE'd message (dele=keep) is hidden."""
    with make_dc(driver, {'pop3_policy_dele': 'keep',
                          'pop3_deleted_flag': DELETED_FLAG}) as dc:
        recs = download_fixture(dc)
        show = policy_show(dc)
        problems = []
        for m, rec in sorted(recs.items()):
            row = show.get(rec['guid'])
            if row is None:
                problems.append('%s (guid %s) missing from show' % (m, rec['guid']))
                continue
            if row['uidl'] != rec['uidl']:
                problems.append('%s: uidl %r, POP3 showed %r' % (m, row['uidl'], rec['uidl']))
            if truthy(row['downloaded']) != (m in DOWNLOADED):
                problems.append('%s: downloaded=%r, expected %s' % (
                    m, row['downloaded'], m in DOWNLOADED))
            if truthy(row['hidden']) != (m == mid('dl', 5)):
                problems.append('%s: hidden=%r' % (m, row['hidden']))
        assert not problems, '\n'.join(problems) + '\n--- show ---\n' + \
            dc.doveadm('pop3-policy', 'show', user=USER).stdout


@harness.drivers('lmdb', 'maildir')
def test_keep_days_doveadm_run(driver):
    """keep_days=7: `doveadm pop3-policy run` at +8d (libfaketime) removes
    exactly the downloaded messages, --dry-run only prints, +6d does
    nothing, never-downloaded mail stays forever; the first download is
    what counts."""
    with make_dc(driver, {'pop3_policy_keep_days': 7, 'pop3_policy_dele': 'keep',
                          'pop3_deleted_flag': DELETED_FLAG}, faketime_pop3=True) as dc:
        recs = download_fixture(dc)
        allids = set(recs)

        r = doveadm_at(dc, '+8d', 'pop3-policy', 'run', '--dry-run', user=USER)
        acts = audit_entries(r.stdout)
        assert len(acts) == 3, 'dry run printed:\n' + r.stdout + r.stderr
        for m in DOWNLOADED:
            e = check_audit(acts, recs[m], rule='keep-days', user=None, what=m)
            assert e['action'] == 'remove', e['line']
        assert imap_msgids(dc) == allids, 'dry run changed the mailbox'
        assert len(pop3_view(dc)) == 5

        r = doveadm_at(dc, '+6d', 'pop3-policy', 'run', user=USER)
        assert not audit_entries(r.stdout), r.stdout
        assert imap_msgids(dc) == allids, '+6d removed mail'

        log_before = len(dc.log())
        run = doveadm_at(dc, '+8d', 'pop3-policy', 'run', user=USER)
        acts = audit_entries(run.stdout)
        assert {e['uidl'] for e in acts} == {recs[m]['uidl'] for m in DOWNLOADED}, run.stdout
        for m in DOWNLOADED:
            check_audit(acts, recs[m], rule='keep-days', user=None, what=m)
        assert imap_msgids(dc) == allids - DOWNLOADED
        assert set(pop3_view(dc)) == allids - DOWNLOADED
        run_log = dc.log()[log_before:] + '\n' + run.stderr

        # never-downloaded mail is never removed
        r = doveadm_at(dc, '+400d', 'pop3-policy', 'run', user=USER)
        assert not audit_entries(r.stdout), r.stdout
        assert imap_msgids(dc) == allids - DOWNLOADED

        # the first download counts: downloaded at -5d and again now, so
        # with keep_days=7 it is due at +2d..+3d, not at +7d
        deliver(dc, [make_msg('again', 1)])
        set_pop3_time(dc, '-5d')
        c = dc.pop3()
        ids = {m: n for n, m in pop3_msgids(c).items()}
        again_uidl = pop3_uidls(c)[ids[mid('again', 1)]]
        pop3_multiline(c, 'RETR %d' % ids[mid('again', 1)])
        pop3_quit_and_wait(dc, c)
        set_pop3_time(dc, '')
        c = dc.pop3()
        pop3_multiline(c, 'RETR %d' % ids[mid('again', 1)])
        pop3_quit_and_wait(dc, c)
        r = doveadm_at(dc, '+1d', 'pop3-policy', 'run', user=USER)
        assert not audit_entries(r.stdout), r.stdout
        r = doveadm_at(dc, '+3d', 'pop3-policy', 'run', user=USER)
        assert [e['uidl'] for e in audit_entries(r.stdout)] == [again_uidl], r.stdout
        assert mid('again', 1) not in imap_msgids(dc)
        assert imap_msgids(dc) == allids - DOWNLOADED

        # audit: the removals of the real run also reach the log (or
        # doveadm's stderr) with the user name, not only doveadm's stdout
        entries = audit_entries(run_log)
        for m in DOWNLOADED:
            check_audit(entries, recs[m], rule='keep-days', user=USER,
                        what='log of doveadm run: ' + m)
        dc.assert_no_log_errors(ignore=HARNESS_NOISE)


@harness.drivers('lmdb', 'maildir')
def test_keep_days_at_logout(driver):
    """keep_days=7: a POP3 session 8 days later (pop3 under libfaketime)
    removes the downloaded messages at logout and logs one audit line per
    removal with user, GUID, UIDL, size, rule=keep-days."""
    with make_dc(driver, {'pop3_policy_keep_days': 7, 'pop3_policy_dele': 'keep',
                          'pop3_deleted_flag': DELETED_FLAG}, faketime_pop3=True) as dc:
        recs = download_fixture(dc)
        allids = set(recs)
        set_pop3_time(dc, '+6d')
        c = dc.pop3()
        c.stat()
        pop3_quit_and_wait(dc, c)
        assert imap_msgids(dc) == allids, 'removed at +6d'
        assert not keep_days_entries(dc.log())

        set_pop3_time(dc, '+8d')
        c = dc.pop3()
        c.stat()
        pop3_quit_and_wait(dc, c)
        set_pop3_time(dc, '')
        assert imap_msgids(dc) == allids - DOWNLOADED
        entries = keep_days_entries(dc.log())
        assert len(entries) == 3, '\n'.join(e['line'] for e in entries)
        for m in DOWNLOADED:
            check_audit(entries, recs[m], rule='keep-days', what=m)
        assert set(pop3_view(dc)) == allids - DOWNLOADED
        dc.assert_no_log_errors(ignore=HARNESS_NOISE)


def imap_move(dc, message_id: str, src: str, dest: str, copy=False, user=USER) -> None:
    """IMAP UID MOVE (or COPY, then STORE \\Deleted + EXPUNGE of the
    original) of the message with this Message-ID from src to dest."""
    imap = dc.imap(user)
    typ, _ = imap.select(src)
    assert typ == 'OK', src
    typ, data = imap.uid('SEARCH', 'HEADER', 'Message-ID', message_id)
    uids = data[0].split()
    assert typ == 'OK' and len(uids) == 1, (src, message_id, data)
    typ, data = imap.uid('COPY' if copy else 'MOVE', uids[0], dest)
    assert typ == 'OK', data
    if copy:
        typ, data = imap.uid('STORE', uids[0], '+FLAGS.SILENT', '(\\Deleted)')
        assert typ == 'OK', data
        typ, data = imap.expunge()
        assert typ == 'OK', data
    imap.logout()


@harness.drivers('lmdb', 'maildir')
def test_keep_days_message_returns(driver):
    """A message that comes back into INBOX starts a new stay: keep_days
    counts only downloads since it came back (docs/pop3-policy.md,
    "Messages that come back").  r0 is downloaded, moved out and back
    (IMAP MOVE); r1 downloaded, copied out, expunged, copied back; r2
    downloaded and left alone.  8 days later only r2 is removed; r0 is
    removed 8 days after its next download, r1 stays.  r0's UIDL doesn't
    change (a move keeps it), so a client that has it doesn't fetch it
    again.  r1 came back as a copy: on lmdb a copy is a new message with a
    UIDL of its own (RFC 1939 uniqueness, docs/design.md "POP3 UIDLs"), on
    maildir the UIDL the plugin froze for its GUID is kept."""
    with make_dc(driver, {'pop3_policy_keep_days': 7}, faketime_pop3=True) as dc:
        deliver(dc, [make_msg('ret', i) for i in range(3)])
        view = pop3_view(dc)
        c = dc.pop3()
        ids = {m: n for n, m in pop3_msgids(c).items()}
        for i in range(3):
            pop3_multiline(c, 'RETR %d' % ids[mid('ret', i)])
        pop3_quit_and_wait(dc, c)
        show = policy_show(dc)
        assert sum(truthy(r['downloaded']) for r in show.values()) == 3, show

        imap = dc.imap()
        typ, data = imap.create('Elsewhere')
        assert typ == 'OK', data
        imap.logout()
        imap_move(dc, mid('ret', 0), 'INBOX', 'Elsewhere')
        imap_move(dc, mid('ret', 0), 'Elsewhere', 'INBOX')
        imap_move(dc, mid('ret', 1), 'INBOX', 'Elsewhere', copy=True)
        imap_move(dc, mid('ret', 1), 'Elsewhere', 'INBOX', copy=True)
        assert imap_msgids(dc) == {mid('ret', i) for i in range(3)}
        # the returned ones count as not downloaded
        show = {r['uidl']: truthy(r['downloaded']) for r in policy_show(dc).values()}
        now = pop3_view(dc)
        if driver == 'lmdb':
            assert now[mid('ret', 1)] not in view.values(), (now, view)
        else:
            assert now[mid('ret', 1)] == view[mid('ret', 1)], (now, view)
        assert {m: now[m] for m in now if m != mid('ret', 1)} == \
            {m: view[m] for m in view if m != mid('ret', 1)}, \
            ('a moved or untouched message got another UIDL', now, view)
        assert show == {now[mid('ret', 0)]: False, now[mid('ret', 1)]: False,
                        now[mid('ret', 2)]: True}, (show, now)

        set_pop3_time(dc, '+8d')
        c = dc.pop3()
        c.stat()
        pop3_quit_and_wait(dc, c)
        entries = keep_days_entries(dc.log())
        assert [e['uidl'] for e in entries] == [view[mid('ret', 2)]], \
            '\n'.join(e['line'] for e in entries)
        assert imap_msgids(dc) == {mid('ret', 0), mid('ret', 1)}

        # downloaded again at +8d: removed 7 days after that
        c = dc.pop3()
        ids = {m: n for n, m in pop3_msgids(c).items()}
        pop3_multiline(c, 'RETR %d' % ids[mid('ret', 0)])
        pop3_quit_and_wait(dc, c)
        set_pop3_time(dc, '+14d')
        c = dc.pop3()
        pop3_quit_and_wait(dc, c)
        assert imap_msgids(dc) == {mid('ret', 0), mid('ret', 1)}, 'removed before +15d'
        set_pop3_time(dc, '+16d')
        c = dc.pop3()
        pop3_quit_and_wait(dc, c)
        set_pop3_time(dc, '')
        assert imap_msgids(dc) == {mid('ret', 1)}
        entries = keep_days_entries(dc.log())
        assert [e['uidl'] for e in entries] == [view[mid('ret', 2)], view[mid('ret', 0)]], \
            '\n'.join(e['line'] for e in entries)
        dc.assert_no_log_errors(ignore=HARNESS_NOISE)


@harness.drivers('lmdb', 'maildir')
def test_keep_days_at_logout_with_quota(driver):
    """keep_days at POP3 logout with the quota plugin loaded (as for
    quota_purge): the removal works and nothing crashes.  It used to run
    in the user's deinit, after quota had freed its part, and a mailbox
    transaction there hit quota's assertion (ctx->quota != NULL)."""
    settings = dict(QUOTA_SETTINGS, pop3_policy_keep_days=7)
    with make_dc(driver, settings, plugins=quota_plugins(), extra=QEXTRA,
                 faketime_pop3=True) as dc:
        deliver(dc, [make_msg('kq', i) for i in range(2)])
        c = dc.pop3()
        ids = {m: n for n, m in pop3_msgids(c).items()}
        pop3_multiline(c, 'RETR %d' % ids[mid('kq', 0)])
        pop3_quit_and_wait(dc, c)
        set_pop3_time(dc, '+8d')
        c = dc.pop3()
        c.stat()
        pop3_quit_and_wait(dc, c)
        set_pop3_time(dc, '')
        assert imap_msgids(dc) == {mid('kq', 1)}
        assert len(keep_days_entries(dc.log())) == 1
        log = dc.log()
        assert 'Panic' not in log and 'killed with signal' not in log, dc.log_tail(30)
        dc.assert_no_log_errors(ignore=HARNESS_NOISE)


# ---------------------------------------------------------------------------
# 4. quota purge

QUOTA_SETTINGS = {
    'quota': 'count:User quota',
    'quota_rule': '*:storage=200k',
    'quota_vsizes': 'yes',
    'quota_grace': '0',       # default 10% would let the first delivery in
    'pop3_policy_quota_purge': 'yes',
}
QUOTA_LIMIT = 200 * 1024
QEXTRA = 'lmtp_add_received_header = no\n'


def quota_used(dc, user=USER) -> int:
    r = dc.doveadm('quota', 'get', user=user)
    for line in r.stdout.split('\n'):
        cols = line.split()
        if 'STORAGE' in cols:
            return int(cols[cols.index('STORAGE') + 1]) * 1024
    raise AssertionError('no STORAGE line in %r' % r.stdout)


def quota_fill(dc, user, tag):
    """6 messages of ~30 KB (about 180 KB of 200 KB); download m4, m2, m0
    at -3d, -2d, -1d (oldest first download: m4).  m1, m3, m5 are never
    downloaded."""
    deliver(dc, [make_msg(tag, i, 30000, user=user) for i in range(6)], rcpt=user)
    for off, i in (('-3d', 4), ('-2d', 2), ('-1d', 0)):
        set_pop3_time(dc, off)
        c = dc.pop3(user)
        ids = {m: n for n, m in pop3_msgids(c).items()}
        pop3_multiline(c, 'RETR %d' % ids[mid(tag, i)])
        pop3_quit_and_wait(dc, c)
    set_pop3_time(dc, '')
    return mailbox_msgs(dc, user)


@harness.drivers('lmdb', 'maildir')
def test_quota_purge(driver):
    with make_dc(driver, QUOTA_SETTINGS, plugins=quota_plugins(), extra=QEXTRA,
                 faketime_pop3=True) as dc:
        tag = 'q'
        recs = quota_fill(dc, USER, tag)
        view = pop3_view(dc)
        for m in recs:
            recs[m]['uidl'] = view[m]
        msgs = set(recs)
        used = quota_used(dc)
        assert 170000 < used < QUOTA_LIMIT - 20000, used

        # n1 needs ~8 KB more than is free: exactly m4 (oldest download) goes
        r = dc.lmtp_deliver([USER], make_msg('n', 1, 30000))
        assert r.status == {USER: 250}, r
        now = imap_msgids(dc)
        assert now == (msgs - {mid(tag, 4)}) | {mid('n', 1)}, sorted(now)
        entries = audit_entries(dc.log())
        assert len(entries) == 1, [e['line'] for e in entries]
        check_audit(entries, recs[mid(tag, 4)], rule='quota', what='purge m4')
        assert entries[0]['action'] == 'purge', entries[0]['line']
        # the purged message is forgotten right away, the others aren't
        kept = policy_keys(dc, 'msgs')
        assert recs[mid(tag, 4)]['guid'] not in kept, 'record of purged m4 kept'
        assert recs[mid(tag, 2)]['guid'] in kept

        # n2 (~50 KB) needs one more: m2 (next oldest download), not m0
        r = dc.lmtp_deliver([USER], make_msg('n', 2, 50000))
        assert r.status == {USER: 250}, r
        now = imap_msgids(dc)
        assert now == (msgs - {mid(tag, 4), mid(tag, 2)}) | {mid('n', 1), mid('n', 2)}, \
            sorted(now)
        entries = audit_entries(dc.log())
        assert len(entries) == 2, [e['line'] for e in entries]
        check_audit(entries, recs[mid(tag, 2)], rule='quota', what='purge m2')

        # n3 (~60 KB) cannot fit even after purging m0: refused as usual
        r = dc.lmtp_deliver([USER], make_msg('n', 3, 60000))
        assert r.status == {USER: 552}, r
        assert '5.2.2' in r.data[USER][1] and 'Quota exceeded' in r.data[USER][1], r
        now = imap_msgids(dc)
        for i in (1, 3, 5):
            assert mid(tag, i) in now, 'never-downloaded %s purged' % mid(tag, i)
        assert mid('n', 3) not in now
        # never more than needed: a delivery that fails anyway frees nothing
        assert mid(tag, 0) in now, 'm0 purged although the delivery was refused'
        dc.assert_no_log_errors(ignore=[r'Quota exceeded'] + HARNESS_NOISE)


# Two quota roots: the user's, counting INBOX's namespace, and one that
# counts only an Archive/ namespace (its own maildir).
TWO_ROOTS_SETTINGS = {
    'quota': 'count:User quota:ns=',
    'quota_rule': '*:storage=10M',
    'quota2': 'count:Archive quota:ns=Archive/',
    'quota2_rule': '*:storage=50k',
    'quota_vsizes': 'yes',
    'quota_grace': '0',
    'pop3_policy_quota_purge': 'yes',
}
TWO_ROOTS_NS = ('namespace inbox {\n  inbox = yes\n  prefix =\n  separator = /\n}\n'
                'namespace archive {\n  prefix = Archive/\n  separator = /\n'
                '  location = maildir:%h/archive\n}\n')
# 2.4: a quota is a filter inside the namespace it counts
TWO_ROOTS_NS_24 = ('namespace inbox {\n  inbox = yes\n  prefix =\n  separator = /\n'
                   '  quota "User quota" {\n    driver = count\n    storage_size = 10M\n'
                   '    storage_grace = 0\n  }\n}\n'
                   'namespace archive {\n  prefix = Archive/\n  separator = /\n'
                   '  location = maildir:%h/archive\n'
                   '  quota "Archive quota" {\n    driver = count\n    storage_size = 50k\n'
                   '    storage_grace = 0\n  }\n}\n')


@harness.drivers('lmdb', 'maildir')
def test_quota_purge_not_for_another_root(driver):
    """A save over a quota root that doesn't count INBOX purges nothing:
    removing downloaded INBOX mail can't make room there. It used to
    purge anyway: on 2.3 the credit raised the transaction's ceilings and
    the save went over the Archive root (118 %) at the cost of an INBOX
    message; on 2.4 every retry purged (all three gone) and the save was
    still refused."""
    if harness.DOVECOT_VERSION >= (2, 4):
        settings, ns = {'pop3_policy_quota_purge': 'yes'}, TWO_ROOTS_NS_24
    else:
        settings, ns = TWO_ROOTS_SETTINGS, TWO_ROOTS_NS
    with make_dc(driver, settings, plugins=quota_plugins(), extra=QEXTRA + ns) as dc:
        deliver(dc, [make_msg('q', i, 20000) for i in range(3)])
        c = dc.pop3(USER)
        for n in pop3_msgids(c):
            pop3_multiline(c, 'RETR %d' % n)
        pop3_quit_and_wait(dc, c)
        before = imap_msgids(dc)
        assert len(before) == 3, before
        im = dc.imap(USER)
        typ, d = im.create('Archive/a')
        assert typ == 'OK', d
        typ, d = im.append('Archive/a', None, None, make_msg('a', 1, 30000))
        assert typ == 'OK', d
        # 60 KB of the Archive root's 50 KB: refused, INBOX untouched
        typ, d = im.append('Archive/a', None, None, make_msg('a', 2, 30000))
        im.logout()
        assert typ == 'NO' and b'OVERQUOTA' in d[0], (typ, d)
        assert imap_msgids(dc) == before, 'INBOX lost %r' % (before - imap_msgids(dc))
        assert not audit_entries(dc.log()), [e['line'] for e in audit_entries(dc.log())]
        # a save into INBOX still purges as before (the user root counts it):
        # nothing needed here, 10M is far away; the delivery just works
        assert dc.lmtp_deliver([USER], make_msg('n', 1, 20000)).status == {USER: 250}
        dc.assert_no_log_errors(ignore=[r'Quota exceeded'] + HARNESS_NOISE)


@harness.drivers('lmdb', 'maildir')
def test_quota_purge_two_recipients(driver):
    """Two users filled to quota by fetchmail in keep mode (downloads
    everything, deletes nothing) plus one never-downloaded message each;
    one LMTP transaction to both: both accept, each purges exactly one
    downloaded message of its own (all were downloaded at the same time,
    so which one is not fixed), never the undownloaded one."""
    need_clients()
    dc = make_dc(driver, QUOTA_SETTINGS, plugins=quota_plugins(), extra=QEXTRA)
    dc.add_user('alice')
    dc.add_user('bob')
    with dc:
        recs = {}
        for u in ('alice', 'bob'):
            tag = 'q' + u
            deliver(dc, [make_msg(tag, i, 30000, user=u) for i in range(5)], rcpt=u)
            fm = pop3clients.Fetchmail(dc, u)
            n = fm.run()
            assert n == 5, fm.last_output()
            deliver(dc, [make_msg(tag, 5, 30000, user=u)], rcpt=u)   # never downloaded
            recs[u] = mailbox_msgs(dc, u)
            view = pop3_view(dc, u)
            for m in recs[u]:
                recs[u][m]['uidl'] = view[m]
        c = dc.lmtp()
        r = c.deliver('sender@example.com', ['alice', 'bob'], make_msg('both', 1, 30000))
        c.quit()
        assert r.status == {'alice': 250, 'bob': 250}, r
        entries = audit_entries(dc.log())
        for u in ('alice', 'bob'):
            tag = 'q' + u
            now = imap_msgids(dc, u)
            gone = set(recs[u]) - now
            assert mid('both', 1) in now, (u, sorted(now))
            assert len(gone) == 1, (u, 'purged', sorted(gone))
            assert mid(tag, 5) not in gone, (u, 'never-downloaded mail purged')
            mine = [e for e in entries if e['user'] == u]
            assert len(mine) == 1, (u, [e['line'] for e in entries])
            check_audit(mine, recs[u][gone.pop()], rule='quota', user=u,
                        what='purge for ' + u)
        dc.assert_no_log_errors(ignore=HARNESS_NOISE)


@harness.drivers('lmdb', 'maildir')
def test_quota_purge_other_backend_refused(driver):
    """quota_purge with a backend other than count is refused with a
    clear error naming the requirement."""
    settings = dict(QUOTA_SETTINGS)
    if driver == 'maildir':
        settings['quota'] = 'maildir:User quota'
    else:
        settings['quota'] = 'dict:User quota::file:%h/quota.dict'
    with make_dc(driver, settings, plugins=quota_plugins(), extra=QEXTRA) as dc:
        try:
            r = dc.lmtp_deliver([USER], make_msg('ob', 1))
            lmtp = r.status
        except harness.HarnessError as e:
            lmtp = 'no LMTP reply at all: %s' % str(e).split(';')[0]
        try:
            c = dc.pop3()
            c.stat()
            c.quit()
            pop3 = 'POP3 session worked'
        except (poplib.error_proto, OSError, EOFError) as e:
            pop3 = 'POP3 refused: %s' % e
        time.sleep(0.3)
        errs = [l for l in dc.log_errors(include_warnings=False)
                if 'pop3_policy' in l and 'count' in l]
        assert errs, ('no error naming pop3_policy and the count backend; LMTP %r, %s\n%s'
                      % (lmtp, pop3, dc.log_tail(20)))
        # the refusal is a proper per-recipient LMTP reply, not a dying
        # lmtp process (which would take every other user's delivery down)
        assert isinstance(lmtp, dict) and 400 <= lmtp[USER] < 600, (
            'LMTP: %s\nlog: %s' % (lmtp, '\n'.join(errs)))


@harness.drivers('lmdb', 'maildir')
def test_quota_purge_other_backend_refused_per_user(driver):
    """The same with quota_purge set for one user only (userdb field):
    that user's deliveries are refused with a clear error, the other
    user's work."""
    settings = dict(QUOTA_SETTINGS)
    settings.pop('pop3_policy_quota_purge')
    if driver == 'maildir':
        settings['quota'] = 'maildir:User quota'
    else:
        settings['quota'] = 'dict:User quota::file:%h/quota.dict'
    dc = make_dc(driver, settings, plugins=quota_plugins(), extra=QEXTRA)
    dc.add_user('qp', extra='userdb_pop3_policy_quota_purge=yes')
    with dc:
        r = dc.lmtp_deliver(['qp'], make_msg('ob', 1, user='qp'))
        assert 400 <= r.status['qp'] < 600, r
        deliver(dc, [make_msg('ob', 2)])
        time.sleep(0.3)
        errs = [l for l in dc.log_errors(include_warnings=False)
                if 'pop3_policy' in l and 'count' in l and 'qp' in l]
        assert errs, dc.log_tail(20)


# ---------------------------------------------------------------------------
# 5. login delay

def login_delay_dc(driver, delay):
    return make_dc(driver, {'pop3_policy_login_delay': delay},
                   extra='protocol pop3 {\n'
                         '  mail_plugins = $mail_plugins pop3_policy_login_delay\n'
                         '}\n', faketime_pop3=True)


def pop3_login_error(dc):
    """None if a POP3 login works, else the -ERR text."""
    try:
        c = dc.pop3()
    except poplib.error_proto as e:
        return str(e.args[0])
    c.stat()
    pop3_quit_and_wait(dc, c)
    return None


@harness.drivers('lmdb', 'maildir')
def test_login_delay(driver):
    if not module_built('pop3_policy_login_delay'):
        raise harness.ModuleMissing('module lib*_pop3_policy_login_delay_plugin.so not built '
                                    'in plugin/.libs')
    with login_delay_dc(driver, '2s') as dc:
        deliver(dc, [make_msg('ld', 1)])
        assert pop3_login_error(dc) is None
        err = pop3_login_error(dc)
        assert err and '[LOGIN-DELAY]' in err, err
        time.sleep(2.5)
        assert pop3_login_error(dc) is None, 'refused after the delay'
        # IMAP is not affected
        dc.imap().select('INBOX')
    with login_delay_dc(driver, '60s') as dc:
        assert pop3_login_error(dc) is None
        set_pop3_time(dc, '+30s')
        err = pop3_login_error(dc)
        assert err and '[LOGIN-DELAY]' in err, err
        set_pop3_time(dc, '+61s')
        assert pop3_login_error(dc) is None, 'refused 61 s later'


# ---------------------------------------------------------------------------
# 7. many deliver/delete cycles

@harness.drivers('lmdb', 'maildir')
def test_uidl_never_reused_cycles(driver):
    """2,000 (DLMDB_HEAVY=1: 10,000) deliver/DELE cycles, in batches over
    one LMTP connection and one POP3 session, with a restart and an index
    loss + force-resync half way: every UIDL ever shown is unique."""
    total = 10000 if HEAVY else 2000
    batch = 250
    seen: dict[str, tuple[int, int]] = {}
    with make_dc(driver) as dc:
        done = 0
        rnd = 0
        while done < total:
            k = min(batch, total - done)
            deliver(dc, [make_msg('cy', done + i, 60) for i in range(k)])
            c = dc.pop3()
            uidls = pop3_uidls(c)
            assert len(uidls) == k, (rnd, len(uidls))
            check_uidls(list(uidls.values()))
            for n, u in uidls.items():
                assert u not in seen, 'UIDL %r reused (first shown in round %d, now %d)' % (
                    u, seen[u][0], rnd)
                seen[u] = (rnd, n)
                c.dele(n)
            pop3_quit_and_wait(dc, c)
            done += k
            rnd += 1
            if rnd == (total // batch) // 2:
                dc.restart()
                index_loss(dc)
        assert len(seen) == total
        dc.assert_no_log_errors(ignore=HARNESS_NOISE)


# ---------------------------------------------------------------------------
# 8. the policy environment (dovecot-pop3-policy.mdb)

def policy_env_path(dc, user=USER) -> str:
    paths = glob.glob(os.path.join(dc.home(user), '**', 'dovecot-pop3-policy.mdb'),
                      recursive=True)
    assert len(paths) == 1, paths
    return paths[0]


def policy_entries(dc, dbi: str, user=USER) -> int:
    """Number of records in a DBI of the user's policy environment
    (mdb_stat, a reader beside the running Dovecot)."""
    r = subprocess.run(['mdb_stat', '-n', '-s', dbi, policy_env_path(dc, user)],
                       capture_output=True, text=True, check=True)
    m = re.search(r'Entries: (\d+)', r.stdout)
    assert m, r.stdout
    return int(m.group(1))


def policy_keys(dc, dbi: str, user=USER) -> set[str]:
    """The keys of a DBI (mdb_dump -p: printable keys as they are)."""
    r = subprocess.run(['mdb_dump', '-n', '-p', '-s', dbi, policy_env_path(dc, user)],
                       capture_output=True, text=True, check=True)
    body = r.stdout.split('HEADER=END\n', 1)[1].split('DATA=END', 1)[0]
    lines = body.split('\n')
    return {lines[i][1:] for i in range(0, len(lines) - 1, 2)}


@harness.drivers('lmdb', 'maildir')
def test_policy_forgets_gone_messages(driver):
    """The environment holds the maildrop's messages and the UIDL
    reservations, not the whole history: a record is dropped when its
    message goes, by a DELE (at that session's logout), by keep_days
    (right away) or, for anything else (an IMAP expunge), by the next
    full sweep (doveadm pop3-policy run, or the first POP3 logout 24 h
    after the last sweep).  UIDL reservations stay.  (maildir: every
    message listed by POP3 has a record, for its frozen UIDL; lmdb
    keeps UIDLs itself, so only downloaded ones have one.)"""
    with make_dc(driver, {'pop3_policy_keep_days': 7}, faketime_pop3=True) as dc:
        deliver(dc, [make_msg('fg', i) for i in range(6)])
        guid = {m: r['guid'] for m, r in mailbox_msgs(dc).items()}
        g = [guid[mid('fg', i)] for i in range(6)]

        def records(expect_maildir, expect_lmdb, step):
            want = {g[i] for i in (expect_lmdb if driver == 'lmdb' else expect_maildir)}
            got = policy_keys(dc, 'msgs')
            assert got == want, '%s: records of %s, expected %s' % (
                step, sorted(g.index(k) if k in g else k for k in got),
                sorted(g.index(k) for k in want))

        view = pop3_view(dc)              # the first logout sweeps: last sweep = now
        c = dc.pop3()
        ids = {m: n for n, m in pop3_msgids(c).items()}
        for i in (0, 1, 2, 4):
            pop3_multiline(c, 'RETR %d' % ids[mid('fg', i)])
        pop3_quit_and_wait(dc, c)
        records(range(6), (0, 1, 2, 4), 'after downloads')

        # DELE of a downloaded and of a never-downloaded message
        c = dc.pop3()
        c.dele(ids[mid('fg', 2)])
        c.dele(ids[mid('fg', 3)])
        pop3_quit_and_wait(dc, c)
        records((0, 1, 4, 5), (0, 1, 4), 'after DELE')
        assert policy_entries(dc, 'downloads') == 3

        # an IMAP expunge waits for a full sweep; doveadm run does one
        imap = dc.imap()
        imap.select('INBOX')
        typ, data = imap.uid('SEARCH', 'HEADER', 'Message-ID', mid('fg', 4))
        imap.uid('STORE', data[0], '+FLAGS.SILENT', '(\\Deleted)')
        imap.expunge()
        imap.logout()
        records((0, 1, 4, 5), (0, 1, 4), 'after an IMAP expunge')
        dc.doveadm('pop3-policy', 'run', user=USER)
        records((0, 1, 5), (0, 1), 'after doveadm pop3-policy run')
        assert policy_entries(dc, 'downloads') == 2

        # +150h: fg5 downloaded; the sweep is due (last one > 24 h ago)
        set_pop3_time(dc, '+150h')
        c = dc.pop3()
        ids = {m: n for n, m in pop3_msgids(c).items()}
        pop3_multiline(c, 'RETR %d' % ids[mid('fg', 5)])
        pop3_quit_and_wait(dc, c)
        records((0, 1, 5), (0, 1, 5), 'at +150h')
        imap = dc.imap()
        imap.select('INBOX')
        typ, data = imap.uid('SEARCH', 'HEADER', 'Message-ID', mid('fg', 5))
        imap.uid('STORE', data[0], '+FLAGS.SILENT', '(\\Deleted)')
        imap.expunge()
        imap.logout()
        # +170h: keep_days removes fg0 and fg1 (downloaded at 0h) and
        # drops their records; the sweep isn't due (20 h), so fg5's stays
        set_pop3_time(dc, '+170h')
        c = dc.pop3()
        c.stat()
        pop3_quit_and_wait(dc, c)
        assert len(keep_days_entries(dc.log())) == 2
        records((5,), (5,), 'after keep_days at +170h')
        assert policy_entries(dc, 'downloads') == 1
        # +175h: 25 h after the last sweep: the next logout sweeps
        set_pop3_time(dc, '+175h')
        c = dc.pop3()
        c.stat()
        pop3_quit_and_wait(dc, c)
        set_pop3_time(dc, '')
        records((), (), 'after the daily sweep at +175h')
        assert policy_entries(dc, 'downloads') == 0

        # every UIDL ever shown stays reserved (lmdb: the storage keeps
        # UIDLs, the plugin reserves none)
        if driver == 'lmdb':
            assert policy_entries(dc, 'uidls') == 0
        else:
            assert policy_keys(dc, 'uidls') == set(view.values())
            assert set(policy_uidl(dc).values()) == set(view.values())
            deliver(dc, [make_msg('fg2', 0)])
            assert pop3_view(dc)[mid('fg2', 0)] not in view.values()
        dc.assert_no_log_errors(ignore=HARNESS_NOISE)


def fill_policy_env(path: str, size: int) -> None:
    """Add UIDL reservations of gone messages to a stopped user's
    environment with mdb_load, about size bytes of them (valid records:
    version 2 and CRC, u16 length, GUID; GUIDs of 4000 bytes, one page
    each, so that few are needed): a long history that fills the file to
    the brim."""
    lines = ['VERSION=3', 'format=bytevalue', 'type=btree', 'mapsize=1073741824',
             'HEADER=END']
    for i in range(size // 4096):
        g = b'%04000d' % i
        key = b'fill-%08d' % i
        lines.append(' ' + key.hex())
        lines.append(' ' + policyrec.seal(policyrec.TYPE_UIDL, key,
                                          struct.pack('>H', len(g)) + g).hex())
    lines.append('DATA=END')
    subprocess.run(['mdb_load', '-n', '-s', 'uidls', path], input='\n'.join(lines) + '\n',
                   text=True, check=True)


@harness.drivers('maildir')
def test_policy_env_vsz_limit(driver):
    """The policy environment's map must fit in the process's address
    space (vsz_limit).  A pop3 process with vsz_limit = 40M (about 10M of
    it Dovecot's own; 85M on 2.4, whose own share is ~52M) and an
    environment of ~20 MB whose map must grow
    to save the UIDLs of 300 new messages: the growth is refused with an
    error naming vsz_limit, the POP3 client gets its replies (UIDL,
    RETR, QUIT +OK) and the process survives its logout work.  Doubling
    the map would not fit, and LMDB unmaps the old map before a failed
    mmap: the next read used to crash the process.  With a larger
    vsz_limit the same session saves its state.  (maildir: lmdb's own
    map needs more than 40M; the plugin's environment is the same on
    every format.)"""
    with make_dc(driver, {'pop3_policy_keep_days': 7},
                 extra='mail_fsync = never\n') as dc:
        deliver(dc, [make_msg('vz', 0)])
        pop3_view(dc)
        path = policy_env_path(dc)
        dc.stop()
        fill_policy_env(path, 20 << 20)
        size = os.path.getsize(path)
        assert 18 << 20 < size < 24 << 20, size
        # Dovecot's own share: ~10M on 2.3; ~52M on 2.4 (trixie's pop3
        # maps ICU's 30 MB data library): the same ~30M left on both
        limit = '85M' if dc.is_24 else '40M'
        dc.extra += 'service pop3 {\n  vsz_limit = %s\n}\n' % limit
        dc.start()
        deliver(dc, [make_msg('vz', i, 60) for i in range(1, 301)])

        c = dc.pop3()
        first = pop3_uidls(c)
        assert len(first) == 301
        check_uidls(list(first.values()))
        status, body = pop3_multiline(c, 'RETR 2')
        assert status.startswith(b'+OK') and mid('vz', 1).encode() in body
        n = pop3_disconnects(dc)
        assert c.quit().startswith(b'+OK')
        wait_pop3_disconnects(dc, n + 1)
        log = dc.wait_log('Failed to save POP3 state')
        assert 'killed with signal' not in log and 'Panic' not in log, dc.log_tail(30)
        errs = [l for l in dc.log_errors(include_warnings=False)
                if 'pop3_policy' in l and 'vsz_limit' in l]
        assert errs, 'no error naming vsz_limit:\n' + dc.log_tail(30)

        # the next session works, and shows the same UIDLs
        c = dc.pop3()
        assert pop3_uidls(c) == first
        pop3_quit_and_wait(dc, c)
        assert 'killed with signal' not in dc.log(), dc.log_tail(30)

        # room enough: the map grows and the state is saved
        dc.stop()
        dc.extra = dc.extra.replace('vsz_limit = %s' % limit, 'vsz_limit = 1G')
        dc.start()
        c = dc.pop3()
        assert pop3_uidls(c) == first
        pop3_multiline(c, 'RETR 2')
        pop3_quit_and_wait(dc, c)
        assert policy_entries(dc, 'msgs') == 301
        assert policy_entries(dc, 'downloads') == 1
        assert 'killed with signal' not in dc.log(), dc.log_tail(30)


# ---------------------------------------------------------------------------
# real clients

def run_clients(clients, expect: int, step: str):
    got = {c.name: c.run() for c in clients}
    bad = {n: v for n, v in got.items() if v != expect}
    assert not bad, '%s: expected %d new messages each, got %r\n%s' % (
        step, expect, got, '\n'.join(c.last_output() for c in clients))


def need_clients():
    for b in ('fetchmail', 'getmail', 'setpriv', 'faketime'):
        if not pop3clients.have(b):
            raise harness.HarnessError('%s not installed (apt-get install -y fetchmail '
                                       'getmail6 faketime)' % b)


@harness.drivers('lmdb', 'maildir')
def test_real_clients(driver):
    """fetchmail (keep) and getmail6 (read_all=false, delete=false) run
    twice: the second run fetches nothing -- also after a restart, index
    loss + force-resync, a UIDVALIDITY change and a `doveadm backup` move
    to the other format.  New mail is still fetched once."""
    need_clients()
    other = 'maildir' if driver == 'lmdb' else 'lmdb'
    with make_dc(driver, plugins=('storage_lmdb', 'pop3_policy'), extra=NS_EXTRA) as dc:
        clients = [pop3clients.Fetchmail(dc), pop3clients.Getmail(dc)]
        deliver(dc, [make_msg('rc', i) for i in range(5)])
        run_clients(clients, 5, 'first run')
        run_clients(clients, 0, 'second run')
        deliver(dc, [make_msg('rc', 5)])
        run_clients(clients, 1, 'new mail')
        dc.restart()
        run_clients(clients, 0, 'after restart')
        index_loss(dc)
        run_clients(clients, 0, 'after index loss + force-resync')
        change_uidvalidity(dc)
        run_clients(clients, 0, 'after UIDVALIDITY change')
        deliver(dc, [make_msg('rc', 6)])
        run_clients(clients, 1, 'new mail after UIDVALIDITY change')
        move_user(dc, USER, other)
        run_clients(clients, 0, 'after doveadm backup move %s -> %s' % (driver, other))
        deliver(dc, [make_msg('rc', 7)])
        run_clients(clients, 1, 'new mail after move')
        for c in clients:
            ids = [header_value(m.split(b'\n\n', 1)[0].replace(b'\n', b'\r\n'), 'Message-ID')
                   for m in c.messages()]
            assert sorted(ids) == sorted(mid('rc', i) for i in range(8)), (c.name, ids)
        dc.assert_no_log_errors(ignore=HARNESS_NOISE)


@harness.drivers('maildir')
def test_real_clients_uidvalidity_without_plugin(driver):
    """Negative control: without the plugin the same UIDVALIDITY change
    makes fetchmail and getmail6 fetch everything again."""
    need_clients()
    with harness.Dovecot(driver) as dc:
        clients = [pop3clients.Fetchmail(dc), pop3clients.Getmail(dc)]
        deliver(dc, [make_msg('nc', i) for i in range(3)])
        run_clients(clients, 3, 'first run')
        run_clients(clients, 0, 'second run')
        change_uidvalidity(dc)
        run_clients(clients, 3, 'after UIDVALIDITY change without plugin')

