"""Hostile input over the protocols (issue 11, item 3), part 2: APPEND
literals and LMTP DATA that stop half way, clients that disconnect in the
middle of a message, and every LMDB reader slot in use. The checks every
case makes are in test_hostile.py.
"""

import collections
import os
import re
import socket
import subprocess
import time

import harness
from test_hostile import (USER, Baseline, RawImap, assert_log_sane, big_message,
                          lmdb_stats, message, raw_append, wait_log_count)

# ---------------------------------------------------------------------------
# APPEND literals and LMTP DATA that stop half way

def _half_append(dc, data: bytes, literal_plus: bool):
    s = socket.create_connection(('127.0.0.1', dc.ports['imap']), timeout=30)
    f = s.makefile('rb')
    assert f.readline().startswith(b'* OK')
    s.sendall(b'a LOGIN %s testpass\r\n' % USER.encode())
    while not f.readline().startswith(b'a OK'):
        pass
    if literal_plus:
        s.sendall(b'b APPEND INBOX {%d+}\r\n' % len(data))
    else:
        s.sendall(b'b APPEND INBOX {%d}\r\n' % len(data))
        assert f.readline().startswith(b'+ '), 'no continuation'
    s.sendall(data[:len(data) // 2])
    time.sleep(0.3)
    s.close()


def _half_lmtp(dc, data: bytes, bdat: bool):
    c = dc.lmtp()
    assert c.cmd('LHLO client.example.com')[0] == 250
    assert c.cmd('MAIL FROM:<sender@example.com>')[0] == 250
    assert c.cmd('RCPT TO:<%s>' % USER)[0] == 250
    if bdat:
        c.send(b'BDAT %d LAST\r\n' % len(data) + data[:len(data) // 2])
    else:
        assert c.cmd('DATA')[0] == 354
        c.send(c.dot_stuff(data)[:len(data) // 2])
    time.sleep(0.3)
    c.close()


@harness.drivers('lmdb', 'maildir')
def test_input_stops_half_way(driver):
    """APPEND literals (synchronising and LITERAL+) and LMTP DATA and
    BDAT that stop half way and disconnect, for a small message and one
    of 3 MB (written in groups on lmdb): nothing is stored, Dovecot logs
    the disconnect in APPEND/DATA/BDAT, lmdb keeps no body of them (the groups
    already written are freed at once), and the next save works."""
    with harness.Dovecot(driver) as dc:
        base = Baseline(dc)
        stats = lmdb_stats(dc) if driver == 'lmdb' else None
        for data in (message('half-small', 20), big_message('half-big', 3_000_000)):
            _half_append(dc, data, literal_plus=False)
            _half_append(dc, data, literal_plus=True)
            _half_lmtp(dc, data, bdat=False)
            _half_lmtp(dc, data, bdat=True)
        # 2.3: 'While APPENDing', 2.4: 'While running APPEND command'
        appends = wait_log_count(dc, r'Connection closed \(While (?:APPENDing|running '
                                 r'APPEND command): 1 msgs, '
                                 r'\d+ secs, (\d+)/(\d+) bytes\)', 4)
        assert len(appends) == 4 and all(int(a) < int(b) for a, b in appends), appends
        for cmd in ('DATA', 'BDAT'):
            found = wait_log_count(dc, r'Connection closed \(unfinished %s command\) '
                                   r'\(state=DATA\)' % cmd, 2)
            assert len(found) == 2, (cmd, dc.log_tail(30))
        base.check(extra_ok=False)
        if driver == 'lmdb':
            after = lmdb_stats(dc)
            assert (after['messages'], after['bodies']) == \
                (stats['messages'], stats['bodies']), (stats, after)
        assert dc.lmtp_deliver(USER, message('after-half')).all_ok()
        c = RawImap(dc)
        _u, tagged = raw_append(c, big_message('after-half-big', 3_000_000))
        assert tagged.startswith('OK'), tagged
        base.check()
        assert_log_sane(dc)


# ---------------------------------------------------------------------------
# clients that disconnect in the middle of a message

def _reader_table(dc) -> list[int]:
    """pids in the LMDB reader table of the user's environment.

    Call it only while a Dovecot process has the environment open:
    mdb_stat opening it alone would size the table for its own 126
    readers (LMDB grows the lock file's table, never shrinks it)."""
    r = subprocess.run(['mdb_stat', '-r', dc.mail_dir()], capture_output=True,
                       text=True, timeout=30)
    # (mdb_stat -r lists the table and exits 1 when it stops there)
    assert r.stdout.startswith('Reader Table Status'), (r.stdout, r.stderr)
    return [int(l.split()[0]) for l in r.stdout.splitlines()[2:] if l.split()]


def _max_readers(dc) -> int:
    r = subprocess.run(['mdb_stat', '-e', dc.mail_dir()], capture_output=True,
                       text=True, timeout=30)
    return int(re.search(r'Max readers: (\d+)', r.stdout).group(1))


def _alive(pid: int) -> bool:
    try:
        with open('/proc/%d/stat' % pid, 'rb') as f:
            st = f.read()
        return st[st.rindex(b')') + 2:].split()[0] != b'Z'
    except OSError:
        return False


@harness.drivers('lmdb', 'maildir')
def test_disconnect_mid_message(driver):
    """POP3 clients that hang up in the middle of RETR and TOP, IMAP
    clients in the middle of a FETCH BODY[] literal, five times each with
    only 8 LMDB reader slots: each session ends at once with Dovecot's
    disconnect line (how far it got), the message is not deleted or
    changed and every byte of it is still served to the next client
    (it is \\Seen before: a RETR cut short sets \\Seen on every format),
    and on lmdb no reader slot stays taken (a slot held by a session that
    doesn't end would run the table full)."""
    extra = 'plugin {\n  lmdb_max_readers = 8\n}\n' if driver == 'lmdb' else ''
    with harness.Dovecot(driver, extra=extra) as dc:
        assert dc.lmtp_deliver(USER, big_message('retr', 4_000_000)).all_ok()
        base = Baseline(dc)
        # keeps the environment open: the reader table is reset when the
        # last process closes it (and mdb_stat must not open it alone)
        keeper = RawImap(dc)
        keeper.ok('SELECT INBOX')
        # "Connection closed", with the reason where the write found it
        pop_re = (r'pop3\(testuser\).*Disconnected: Connection closed.* '
                  r'top=(\d+)/(\d+), retr=(\d+)/(\d+), del=0/')
        imap_re = (r'imap\(testuser\).*Disconnected: Connection closed.* '
                   r'\(UID FETCH running')
        for i in range(5):
            for cmd in ('RETR 1', 'TOP 1 50000'):
                p = dc.pop3()
                p._putcmd(cmd)
                assert p.file.readline().startswith(b'+OK')
                p.file.read(100_000)
                # (the socket stays open while its file object is)
                p.file.close()
                p.sock.close()
                ended = wait_log_count(dc, pop_re, 2 * i + (cmd == 'TOP 1 50000') + 1)
                assert len(ended) == 2 * i + (cmd == 'TOP 1 50000') + 1, \
                    (cmd, dc.log_tail(10))
                # one command, cut short: more sent than read, not all
                # (pop3 adds the bytes to its count when its send loop
                # meets the failed write; when it sees the client's EOF
                # first, it logs 0 bytes: on every format)
                top, top_bytes, retr, retr_bytes = (int(x) for x in ended[-1])
                sent = top_bytes + retr_bytes
                assert (top, retr) == ((1, 0) if cmd.startswith('TOP') else (0, 1)) \
                    and (sent == 0 or 100_000 < sent < 4_000_000), ended[-1]
            c = RawImap(dc)
            c.ok('SELECT INBOX')
            c.send(b'f UID FETCH 1 (BODY[])\r\n')
            c._fill(time.monotonic() + 30)
            c.close()
            assert len(wait_log_count(dc, imap_re, i + 1)) == i + 1, dc.log_tail(10)
        base.check(extra_ok=False)
        if driver == 'lmdb':
            stale = [pid for pid in _reader_table(dc) if not _alive(pid)]
            assert not stale, ('reader slots of processes that are gone', stale)
        assert_log_sane(dc)


# ---------------------------------------------------------------------------
# all reader slots in use

def _pop3_raw(dc, rcvbuf: int = 0):
    """A POP3 connection as a raw socket (greeting read)."""
    s = socket.socket()
    if rcvbuf:
        # a client that reads nothing: the kernel buffers little of it
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.settimeout(30)
    s.connect(('127.0.0.1', dc.ports['pop3']))
    f = s.makefile('rb')
    assert f.readline().startswith(b'+OK')
    return s, f


def _replies_until_close(c: RawImap, cmd: str) -> list:
    """Send cmd and read every response, tagged or not, until the server
    closes the connection (or is silent for 10 s)."""
    c.send(b'z %s\r\n' % cmd.encode())
    out = []
    try:
        while True:
            out.append(c.read_response(timeout=10)[0])
    except (EOFError, OSError):
        pass
    return out


def _readers_full_session(dc):
    """A new IMAP and a new POP3 session while every slot is taken: what
    each client got."""
    c = RawImap(dc, login=False)
    untagged, tagged = c.command('LOGIN %s testpass' % USER)
    rest = []
    try:
        while True:
            rest.append(c.read_response(timeout=10)[0])
    except (EOFError, OSError):
        pass
    c.close()
    s, f = _pop3_raw(dc)
    s.sendall(b'USER %s\r\nPASS testpass\r\nSTAT\r\n' % USER.encode())
    pop = []
    try:
        while True:
            line = f.readline()
            if not line:
                break
            pop.append(line)
    except OSError as e:
        pop.append(repr(e).encode())
    f.close()
    s.close()
    return tagged, rest, pop


def test_reader_slots_full():
    """lmdb only. With lmdb_max_readers = 8, IMAP sessions (one slot each)
    and a POP3 RETR whose client stops reading (a second slot for its
    stream) take every slot. Then: a new IMAP session gets Dovecot's
    "* BYE Internal error" right after its login, a new POP3 session is
    closed after "+OK Logged in" (what Dovecot's pop3 does for any
    storage that fails to open), a new LMTP process answers 451, doveadm
    exits 75 (temporary failure), a session already open that needs one
    more slot gets "* BYE FETCH failed"; nothing hangs, the log names
    MDB_READERS_FULL and lmdb_max_readers, and as soon as slots are free
    again (a session logs out; a holder killed with SIGKILL, whose slot
    the next open reclaims) everything works and nothing was lost."""
    extra = ('plugin {\n  lmdb_max_readers = 8\n}\n'
             'service lmtp {\n  service_count = 1\n}\n')
    with harness.Dovecot('lmdb', extra=extra) as dc:
        base = Baseline(dc)
        assert dc.lmtp_deliver(USER, big_message('stream', 8_000_000)).all_ok()
        # (a RETR marks \\Seen even when it never completes, on every
        # format: set it now so that the comparison below is exact)
        dc.doveadm('flags', 'add', '\\Seen', 'mailbox', 'INBOX', 'all', user=USER)
        base.state = base.read()
        holders = [RawImap(dc)]
        holders[0].ok('SELECT INBOX')
        assert _max_readers(dc) == 8
        # a client that asks for 8 MB and reads none of it: its pop3
        # process stays in the middle of the stream, holding its pin
        pop_s, pop_f = _pop3_raw(dc, rcvbuf=4096)
        pop_s.sendall(b'USER %s\r\nPASS testpass\r\nRETR %d\r\n'
                      % (USER.encode(), len(base.state)))
        deadline = time.monotonic() + 30
        while not any(n == 2 for n in collections.Counter(_reader_table(dc)).values()):
            assert time.monotonic() < deadline, ('no stream holds a slot',
                                                 _reader_table(dc))
            time.sleep(0.1)
        while len(_reader_table(dc)) < 8:
            assert time.monotonic() < deadline, _reader_table(dc)
            c = RawImap(dc)
            c.ok('SELECT INBOX')
            holders.append(c)
        assert len(_reader_table(dc)) == 8 and all(map(_alive, _reader_table(dc)))
        assert len(holders) == 6, len(holders)

        t0 = time.monotonic()
        tagged, rest, pop = _readers_full_session(dc)
        assert tagged.startswith('OK') and rest and \
            rest[0].startswith(b'* BYE Internal error occurred'), (tagged, rest)
        assert pop[:2] == [b'+OK\r\n', b'+OK Logged in.\r\n'] and len(pop) == 2, pop
        r = dc.lmtp_deliver(USER, message('while-full'))
        assert r.status[USER] == 451, r
        d = dc.doveadm('mailbox', 'status', 'messages', 'INBOX', user=USER, check=False)
        assert d.returncode == 75 and 'MDB_READERS_FULL' in d.stderr, (d.returncode, d.stderr)
        # a session that has its slot but needs a second one for a stream
        replies = _replies_until_close(holders[0], 'UID FETCH 1 (BODY[])')
        assert replies and replies[-1].startswith(b'* BYE FETCH failed: Internal error'), \
            replies
        holders.pop(0).close()
        assert time.monotonic() - t0 < 30, 'something waited for a slot'
        log = ''.join(wait_log_count(dc, r'.*MDB_READERS_FULL.*\n', 5))
        assert 'lmdb_max_readers' in log, log

        # slots free again: a holder logs out, one is killed
        holders.pop().ok('LOGOUT')
        victim = holders.pop()
        pid = dc.server_pid(victim.sock, 'imap')
        os.kill(pid, 9)
        dc.killed_pids.add(pid)
        victim.close()
        assert dc.lmtp_deliver(USER, message('after-full')).all_ok()
        c = RawImap(dc)
        c.ok('SELECT INBOX')
        c.ok('UID FETCH 1:* (BODY.PEEK[])')
        c.ok('LOGOUT')
        # the stalled POP3 client goes away; its RETR never completed
        pop_f.close()
        pop_s.close()
        for h in holders:
            h.ok('LOGOUT')
        base.check()
        assert_log_sane(dc, allowed=[r'MDB_READERS_FULL'])
