"""Integration-test harness for dovecot-lmdb.

Starts private Dovecot 2.3 or 2.4 instances (own base_dir, own ports, own log
files, everything under a temp dir in /tmp) and offers client helpers for
IMAP, POP3, LMTP and doveadm.  Standard library only.

Typical use::

    import harness

    @harness.drivers('lmdb', 'maildir')
    def test_something(driver):
        with harness.Dovecot(driver) as dc:
            res = dc.lmtp_deliver(['testuser'], b'Subject: x\\r\\n\\r\\nhi\\r\\n')
            assert res.all_ok(), res
            imap = dc.imap()
            ...

Environment variables:
    DLMDB_BUILD_DIR   build tree holding storage-lmdb/.libs and plugin/.libs
                      (default: the repository root)
    DLMDB_TEST_UID    uid mail processes run as (default: nobody)
    DLMDB_TEST_GID    gid mail processes run as (default: nogroup)
    DLMDB_KEEP_TMP    if set to 1, temp dirs are not removed
    DLMDB_MAIL_DEBUG  if set to 1, every instance gets mail_debug = yes
    DOVECOT_BINARY    default /usr/sbin/dovecot
    DOVEADM_BINARY    default /usr/bin/doveadm
    DOVECONF_BINARY   default /usr/bin/doveconf
    DLMDB_PORT_RANGE  LOW-HIGH: TCP ports the instances use (default 20000-32000;
                      two runs at once on one host need disjoint ranges)

Dovecot version: `dovecot --version` of DOVECOT_BINARY decides (DOVECOT_VERSION,
DOVECOT_24).  Tests write their configuration in 2.3 syntax (extra=, passwd-file
extra fields, doveadm -o); on 2.4 dovecot_conf.py translates it, and a setting
that 2.4 can't express makes the test skip with the reason.
"""

from __future__ import annotations

import atexit
import glob
import imaplib
import os
import poplib
import pwd
import grp
import re
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time

import dovecot_conf
from dovecot_conf import Unsupported

__all__ = [
    'Skip', 'HarnessError', 'ModuleMissing', 'StartError', 'drivers',
    'Dovecot', 'LmtpResult', 'DRIVERS', 'live_instances', 'stop_all',
    'cleanup_all', 'imap_fetch', 'imap_parse', 'pop3_multiline',
    'crlf', 'lf', 'free_port', 'STOCK_MODULE_DIR', 'build_dir',
    'DOVECOT_VERSION', 'DOVECOT_24', 'doveadm_opts', 'Unsupported', 'only_23',
]

HERE = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(os.path.dirname(HERE))

DOVECOT = os.environ.get('DOVECOT_BINARY', '/usr/sbin/dovecot')
DOVEADM = os.environ.get('DOVEADM_BINARY', '/usr/bin/doveadm')
DOVECONF = os.environ.get('DOVECONF_BINARY', '/usr/bin/doveconf')
STOCK_MODULE_DIR = '/usr/lib/dovecot/modules'
STOCK_DOVEADM_MODULE_DIR = '/usr/lib/dovecot/modules/doveadm'
# 2.4: the config process (and doveconf) loads settings modules only from here
STOCK_SETTINGS_MODULE_DIR = '/usr/lib/dovecot/modules/settings'

# the Dovecot under test: (2, 3, 19), (2, 4, 1), or None if it can't be run
DOVECOT_VERSION = dovecot_conf.binary_version(DOVECOT)
DOVECOT_24 = bool(DOVECOT_VERSION and DOVECOT_VERSION >= (2, 4))
# doveadm commands provided by this project's doveadm plugins
DOVEADM_PLUGIN_COMMANDS = {'lmdb', 'pop3-policy'}

CLIENT_TIMEOUT = 120  # seconds for client sockets; the runner also has a per-test alarm

# driver name -> (mail_location, mail plugins the driver needs)
DRIVERS = {
    'lmdb': ('lmdb:~/lmdb', ['storage_lmdb']),
    'maildir': ('maildir:~/Maildir', []),
    'sdbox': ('sdbox:~/sdbox', []),
    'mdbox': ('mdbox:~/mdbox', []),
}

# Modules from the build tree, relative to the build dir.  The first one is
# mandatory for driver 'lmdb'.
LMDB_MODULE = 'storage-lmdb/.libs/lib10_storage_lmdb_plugin.so'
BUILD_MODULE_GLOBS = [
    'storage-lmdb/.libs/lib*_plugin.so',
    'plugin/.libs/lib*_plugin.so',
]
# 2.4 only: the settings modules declaring lmdb_* and pop3_policy_* to the
# config process
BUILD_SETTINGS_MODULE_GLOBS = [
    'storage-lmdb/.libs/lib*_settings.so',
    'plugin/.libs/lib*_settings.so',
]
BUILD_DOVEADM_MODULE_GLOBS = [
    'storage-lmdb/.libs/lib*_doveadm_*_plugin.so',
    'plugin/.libs/lib*_doveadm_*_plugin.so',
]


def doveadm_opts(opts) -> list:
    """doveadm global options as a test writes them (2.3 settings, e.g.
    ('-o', 'pop3_uidl_format=%g')) for the Dovecot under test."""
    if not DOVECOT_24:
        return list(opts)
    try:
        return dovecot_conf.doveadm_opts(opts)
    except Unsupported as e:
        raise Skip('Dovecot %s: %s' % (_version_str(), e))


def only_23(reason: str) -> None:
    """Skip the calling test on Dovecot 2.4 with the reason (a test of
    something 2.4 does not have)."""
    if DOVECOT_24:
        raise Skip('Dovecot %s: %s' % (_version_str(), reason))


def _version_str(version=None) -> str:
    version = version or DOVECOT_VERSION
    return '.'.join(map(str, version)) if version else '?'


_PROPAGATION: list[str] = []


def _propagation() -> str:
    """unshare's --propagation for the module namespaces: 'private', so no
    bind mount reaches the host; inside a chroot, where / is no mount
    point and that fails, 'unchanged' (scripts/chroot's own namespace is
    private already)."""
    if not _PROPAGATION:
        r = subprocess.run(['unshare', '-m', '--propagation', 'private', 'true'],
                           capture_output=True)
        _PROPAGATION.append('private' if r.returncode == 0 else 'unchanged')
    return _PROPAGATION[0]


def chroot_dir(suite: str) -> str:
    """Where scripts/chroot keeps the chroot of a Debian suite (it may not
    exist)."""
    base = os.environ.get('DLMDB_CHROOT_DIR') or '/var/cache/dovecot-lmdb/chroot'
    return os.path.join(base, suite)


class Skip(Exception):
    """Raise to skip a test (the runner reports SKIP with the message)."""


class HarnessError(Exception):
    """Something about the test environment is wrong."""


class ModuleMissing(HarnessError):
    """A plugin module needed by the requested configuration is not built."""


class StartError(HarnessError):
    """Dovecot did not come up."""


def build_dir() -> str:
    return os.path.abspath(os.environ.get('DLMDB_BUILD_DIR') or REPO_ROOT)


def drivers(*names):
    """Decorator: run the test once per driver; the test gets the name as
    its only argument and is reported as ``test_x[driver]``."""
    for n in names:
        if n not in DRIVERS:
            raise ValueError('unknown driver %r (known: %s)' % (n, ', '.join(DRIVERS)))

    def deco(func):
        func.dlmdb_drivers = tuple(names)
        return func
    return deco


_PORTS_GIVEN: set[int] = set()


def _port_range() -> tuple[int, int]:
    v = os.environ.get('DLMDB_PORT_RANGE', '')
    mo = re.fullmatch(r'(\d+)-(\d+)', v.strip())
    if not mo:
        return 20000, 32000
    low, high = int(mo.group(1)), int(mo.group(2))
    if not 1024 <= low < high <= 65535:
        raise ValueError('DLMDB_PORT_RANGE %r: want LOW-HIGH within 1024-65535' % v)
    return low, high


_PORT_LOW, _PORT_HIGH = _port_range()


def free_port() -> int:
    """A free TCP port on 127.0.0.1, never the same one twice in this run.

    Ports come from below the kernel's ephemeral range (32768 and up; the
    range is DLMDB_PORT_RANGE when set), so a
    client connection cannot take one between this check and Dovecot's bind,
    and the set of ports already handed out keeps two listeners of one config
    (or two instances of one test) from getting the same port.
    """
    start = _PORT_LOW + (os.getpid() * 97) % (_PORT_HIGH - _PORT_LOW)
    for i in range(_PORT_HIGH - _PORT_LOW):
        port = _PORT_LOW + (start - _PORT_LOW + i * 7) % (_PORT_HIGH - _PORT_LOW)
        if port in _PORTS_GIVEN:
            continue
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.bind(('127.0.0.1', port))
        except OSError:
            continue
        finally:
            s.close()
        _PORTS_GIVEN.add(port)
        return port
    raise RuntimeError('no free TCP port on 127.0.0.1 in %d-%d'
                       % (_PORT_LOW, _PORT_HIGH))


def crlf(data: bytes) -> bytes:
    """Normalise every line ending (CRLF or bare LF) to CRLF."""
    return data.replace(b'\r\n', b'\n').replace(b'\n', b'\r\n')


def lf(data: bytes) -> bytes:
    """Normalise CRLF line endings to LF."""
    return data.replace(b'\r\n', b'\n')


# ---------------------------------------------------------------------------
# registry of live instances

_INSTANCES: list['Dovecot'] = []


def live_instances() -> list['Dovecot']:
    """All instances created and not yet cleaned up (started or not)."""
    return list(_INSTANCES)


def stop_all() -> None:
    for inst in list(_INSTANCES):
        try:
            inst.stop()
        except Exception:  # pragma: no cover - best effort
            pass


def cleanup_all(keep: bool | None = None) -> None:
    """Stop every instance and remove its temp dir (unless keep, or
    DLMDB_KEEP_TMP=1)."""
    for inst in list(_INSTANCES):
        inst.cleanup(keep=keep)


atexit.register(cleanup_all)


# ---------------------------------------------------------------------------
# LMTP


class LmtpResult:
    """Result of one LMTP transaction.

    ``rcpt``: dict recipient -> (code, text) of the RCPT TO reply.
    ``data``: dict recipient -> (code, text) of the per-recipient reply after
    DATA (only for recipients accepted at RCPT time).
    ``status``: dict recipient -> final code (DATA reply if the RCPT was
    accepted, else the RCPT reply)."""

    def __init__(self):
        self.mail_from: tuple[int, str] | None = None
        self.rcpt: dict[str, tuple[int, str]] = {}
        self.data: dict[str, tuple[int, str]] = {}
        self.data_cmd: tuple[int, str] | None = None

    @property
    def status(self) -> dict[str, int]:
        out = {}
        for r, (code, _t) in self.rcpt.items():
            out[r] = self.data[r][0] if r in self.data else code
        return out

    def all_ok(self) -> bool:
        return bool(self.rcpt) and all(c == 250 for c in self.status.values())

    def __repr__(self):
        return 'LmtpResult(mail_from=%r, rcpt=%r, data_cmd=%r, data=%r)' % (
            self.mail_from, self.rcpt, self.data_cmd, self.data)


class LmtpClient:
    """Minimal LMTP client over a plain socket.  The message bytes are sent
    as given (only dot-stuffed), so bare LF stays bare LF on the wire.

    strict_eot (default: the Dovecot under test is 2.4): the server ends
    the data only at CRLF.CRLF and unstuffs dots only after CRLF (2.4's
    SMTP server reads DATA with ISTREAM_DOT_STRICT_EOT; 2.3 treats a bare
    LF as a line end there too): see dot_stuff()."""

    def __init__(self, host: str, port: int, timeout: float = CLIENT_TIMEOUT,
                 strict_eot: bool | None = None):
        self.strict_eot = DOVECOT_24 if strict_eot is None else strict_eot
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.file = self.sock.makefile('rb')
        self.transcript: list[bytes] = []
        code, text = self.reply()
        if code != 220:
            raise HarnessError('LMTP greeting: %d %s' % (code, text))

    def close(self):
        try:
            self.file.close()
        finally:
            self.sock.close()

    def send(self, data: bytes):
        self.sock.sendall(data)

    def cmd(self, line: str) -> tuple[int, str]:
        self.transcript.append(b'C: ' + line.encode())
        self.send(line.encode() + b'\r\n')
        return self.reply()

    def reply(self) -> tuple[int, str]:
        """Read one (possibly multi-line) reply."""
        lines = []
        while True:
            line = self.file.readline(65536)
            if not line:
                raise HarnessError('LMTP: connection closed by server; transcript: %r'
                                   % self.transcript)
            self.transcript.append(b'S: ' + line.rstrip(b'\r\n'))
            if len(line) < 4 or not line[:3].isdigit():
                raise HarnessError('LMTP: bad reply line %r' % line)
            lines.append(line[4:].rstrip(b'\r\n').decode('utf-8', 'replace'))
            if line[3:4] != b'-':
                return int(line[:3]), '\n'.join(lines)

    @staticmethod
    def dot_stuff(data: bytes, strict_eot: bool = False) -> bytes:
        """Dot-stuff a message and append the terminator.  A line is
        anything after LF (bare or CRLF), so lines starting with '.' after
        bare LF are stuffed too.  If the message does not end with a line
        ending, CRLF is added before the final '.'.
        strict_eot (2.4): a line is what ends in CRLF; only those are
        stuffed, and a final bare LF is sent as CRLF (the server keeps
        the last line ending of the data either way, and stores LF)."""
        if data.startswith(b'.'):
            data = b'.' + data
        if strict_eot:
            data = data.replace(b'\r\n.', b'\r\n..')
            if data.endswith(b'\n') and not data.endswith(b'\r\n'):
                data = data[:-1] + b'\r\n'
        else:
            data = data.replace(b'\n.', b'\n..')
        if not data.endswith(b'\n'):
            data += b'\r\n'
        return data + b'.\r\n'

    def deliver(self, mail_from: str, rcpts: list[str], data: bytes,
                lhlo: str = 'client.example.com') -> LmtpResult:
        res = LmtpResult()
        code, text = self.cmd('LHLO ' + lhlo)
        if code != 250:
            raise HarnessError('LHLO failed: %d %s' % (code, text))
        res.mail_from = self.cmd('MAIL FROM:<%s>' % mail_from)
        if res.mail_from[0] != 250:
            return res
        accepted = []
        for r in rcpts:
            res.rcpt[r] = self.cmd('RCPT TO:<%s>' % r)
            if res.rcpt[r][0] == 250:
                accepted.append(r)
        if not accepted:
            self.cmd('RSET')
            return res
        res.data_cmd = self.cmd('DATA')
        if res.data_cmd[0] != 354:
            return res
        self.transcript.append(b'C: <%d bytes of message data>' % len(data))
        self.send(self.dot_stuff(data, self.strict_eot))
        # LMTP: one reply per accepted recipient, in RCPT order.
        for r in accepted:
            res.data[r] = self.reply()
        return res

    def quit(self):
        try:
            self.cmd('QUIT')
        except Exception:
            pass
        self.close()


# ---------------------------------------------------------------------------
# IMAP response parsing

_ATOM_RE = re.compile(rb'[^\s()\[\]{}"]+')


def _tokenise_chunks(chunks):
    """Yield tokens from a sequence of (text, literal|None) chunks."""
    for text, literal in chunks:
        i = 0
        n = len(text)
        while i < n:
            c = text[i:i + 1]
            if c in (b' ', b'\t', b'\r', b'\n'):
                i += 1
            elif c in (b'(', b')'):
                yield c.decode()
                i += 1
            elif c == b'"':
                j = i + 1
                buf = bytearray()
                while j < n and text[j:j + 1] != b'"':
                    if text[j:j + 1] == b'\\':
                        j += 1
                    buf += text[j:j + 1]
                    j += 1
                yield bytes(buf)
                i = j + 1
            elif c == b'{':
                j = text.index(b'}', i)
                if literal is None or j != len(text.rstrip()) - 1:
                    raise ValueError('literal marker without literal in %r' % text)
                yield literal
                i = n
            else:
                # atom, possibly with [section]<partial> e.g. BODY[HEADER.FIELDS (A B)]
                j = i
                depth = 0
                while j < n:
                    ch = text[j:j + 1]
                    if ch == b'[':
                        depth += 1
                    elif ch == b']':
                        depth -= 1
                    elif depth == 0 and ch in (b' ', b'(', b')', b'"', b'{', b'\r', b'\n'):
                        break
                    j += 1
                atom = text[i:j].decode('utf-8', 'replace')
                yield _Atom(atom)
                i = j


class _Atom(str):
    """An IMAP atom (as opposed to a quoted string / literal, which are bytes)."""


def _parse_tokens(tokens):
    stack = [[]]
    for t in tokens:
        if t == '(' and not isinstance(t, _Atom):
            stack.append([])
        elif t == ')' and not isinstance(t, _Atom):
            lst = stack.pop()
            stack[-1].append(lst)
        elif isinstance(t, _Atom) and t.upper() == 'NIL':
            stack[-1].append(None)
        elif isinstance(t, _Atom):
            stack[-1].append(str(t))
        else:
            stack[-1].append(t)
    if len(stack) != 1:
        raise ValueError('unbalanced parentheses')
    return stack[0]


def imap_parse(text: bytes, literals=()) -> list:
    """Parse IMAP data into nested lists.  Quoted strings and literals are
    bytes, atoms are str, NIL is None.  ``literals`` are used in order for
    ``{n}`` markers, which must end a text chunk."""
    chunks = []
    parts = re.split(rb'(\{\d+\}\r?\n?)', text)
    lits = list(literals)
    for k in range(0, len(parts), 2):
        seg = parts[k] + (parts[k + 1].rstrip(b'\r\n') if k + 1 < len(parts) else b'')
        chunks.append((seg, lits.pop(0) if k + 1 < len(parts) else None))
    return _parse_tokens(_tokenise_chunks(chunks))


def _fetch_responses(data):
    """Group imaplib's FETCH data list into per-response chunk lists."""
    resp = []
    for item in data:
        if isinstance(item, tuple):
            resp.append((item[0], item[1]))
        elif item is None:
            continue
        else:
            resp.append((item, None))
            yield resp
            resp = []
    if resp:
        yield resp


def imap_fetch(conn: imaplib.IMAP4, msgset: str, items: str, uid: bool = True) -> dict:
    """Run (UID) FETCH and return {uid (or seq): {ITEM: value}}.

    Item names are upper-cased as the server returns them (e.g. 'BODY[]',
    'BODY[HEADER]', 'RFC822.SIZE', 'FLAGS', 'ENVELOPE', 'BODYSTRUCTURE').
    Literals / quoted strings are bytes; numbers stay str (convert
    yourself) except RFC822.SIZE and UID which become int."""
    if uid:
        typ, data = conn.uid('FETCH', msgset, items)
    else:
        typ, data = conn.fetch(msgset, items)
    if typ != 'OK':
        raise HarnessError('FETCH %s %s failed: %r' % (msgset, items, data))
    out = {}
    for chunks in _fetch_responses(data):
        toks = list(_tokenise_chunks(chunks))
        parsed = _parse_tokens(toks)
        # imaplib strips '* ' and 'FETCH': parsed is ['<seq>', [k, v, k, v...]]
        if len(parsed) < 2 or not str(parsed[0]).isdigit() or not isinstance(parsed[1], list):
            continue
        seq = int(parsed[0])
        kv = parsed[1]
        d = {}
        for i in range(0, len(kv) - 1, 2):
            k = str(kv[i]).upper()
            v = kv[i + 1]
            if k in ('RFC822.SIZE', 'UID'):
                v = int(v)
            d[k] = v
        key = d.get('UID', seq) if uid else seq
        if uid and 'UID' not in d:
            continue  # unsolicited FETCH (e.g. flag update) without UID
        d.setdefault('SEQ', seq)
        if key in out:
            out[key].update(d)
        else:
            out[key] = d
    return out


# ---------------------------------------------------------------------------
# POP3 raw multi-line responses

def pop3_multiline(conn: poplib.POP3, command: str) -> tuple[bytes, bytes]:
    """Send a POP3 command with a multi-line answer and return
    (status_line, body) where body is exactly what the server sent, with
    CRLFs kept and dot-stuffing removed.  poplib's own retr() drops line
    endings and refuses lines longer than 2048 bytes, hence this."""
    conn._putcmd(command)
    status = conn.file.readline(65536)
    if not status.startswith(b'+OK'):
        raise poplib.error_proto(status.rstrip(b'\r\n'))
    out = bytearray()
    while True:
        line = conn.file.readline()
        if not line:
            raise HarnessError('POP3: connection closed in multi-line response')
        if line == b'.\r\n':
            break
        if line.startswith(b'.'):
            line = line[1:]
        out += line
    return status.rstrip(b'\r\n'), bytes(out)


# ---------------------------------------------------------------------------
# the instance

class User:
    def __init__(self, name, password, uid, gid, home, extra=''):
        self.name = name
        self.password = password
        self.uid = uid
        self.gid = gid
        self.home = home
        self.extra = extra  # passwd-file extra fields, e.g. 'userdb_quota_rule=*:storage=1M'

    def passwd_line(self, version=None) -> str:
        """The passwd-file line; extra fields (2.3 syntax) translated for
        Dovecot version (default: the one under test)."""
        # user:password:uid:gid:gecos:home:shell:extra_fields
        version = version or DOVECOT_VERSION
        extra = self.extra
        if version and version >= (2, 4) and extra:
            try:
                extra = dovecot_conf.userdb_fields(extra)
            except Unsupported as e:
                raise Skip('Dovecot %s: user %s: %s' % (_version_str(version), self.name, e))
        return '%s:{PLAIN}%s:%d:%d::%s::%s' % (self.name, self.password, self.uid,
                                                self.gid, self.home, extra)


def _default_ids():
    uid = os.environ.get('DLMDB_TEST_UID')
    gid = os.environ.get('DLMDB_TEST_GID')
    if uid is None:
        uid = pwd.getpwnam('nobody').pw_uid if os.geteuid() == 0 else os.geteuid()
    if gid is None:
        if os.geteuid() == 0:
            try:
                gid = grp.getgrnam('nogroup').gr_gid
            except KeyError:
                gid = pwd.getpwnam('nobody').pw_gid
        else:
            gid = os.getegid()
    return int(uid), int(gid)


class SyncTrace:
    """`strace -f -y` attached to process pid while the with-block runs;
    afterwards .calls holds the successful sync calls (fsync, fdatasync,
    msync, sync_file_range) as {(syscall, file name): count} (msync has no
    file: '')."""

    SYSCALLS = ('fsync', 'fdatasync', 'msync', 'sync_file_range')
    LINE_RE = re.compile(r'\b(%s)\((?:\d+<([^>]*)>)?.*\)\s*=\s*0\s*$' % '|'.join(SYSCALLS))

    def __init__(self, pid: int, out_path: str):
        self.pid = pid
        self.out_path = out_path
        self.proc = None
        self.calls: dict[tuple[str, str], int] = {}

    def __enter__(self) -> 'SyncTrace':
        if shutil.which('strace') is None:
            raise HarnessError('strace not installed (apt-get install -y strace)')
        self.proc = subprocess.Popen(['strace', '-f', '-y', '-o', self.out_path, '-e',
                                      'trace=' + ','.join(self.SYSCALLS), '-p', str(self.pid)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        # "Process N attached" once it traces
        line = self.proc.stderr.readline().decode('utf-8', 'replace')
        if 'attached' not in line:
            self.proc.kill()
            self.proc.wait(30)
            raise HarnessError('strace did not attach to %d: %s' % (self.pid, line.strip()))
        return self

    def __exit__(self, exc_type, exc, tb):
        self.proc.send_signal(signal.SIGINT)
        self.proc.wait(30)
        with open(self.out_path) as f:
            for line in f:
                m = self.LINE_RE.search(line)
                if m:
                    key = (m.group(1), os.path.basename(m.group(2) or ''))
                    self.calls[key] = self.calls.get(key, 0) + 1
        return False


class Dovecot:
    """A private Dovecot instance.

    Dovecot(driver='maildir', *, mail_plugins=(), extra='', tls=False,
            mail_debug=None, users=None, name=None, mail_location=None,
            build=None, storage_version=None, chroot=None)

    driver: 'lmdb' | 'maildir' | 'sdbox' | 'mdbox' (or None with an explicit
    mail_location).  mail_plugins: extra global mail plugins.  extra:
    config text appended, in 2.3 syntax (translated on 2.4; see
    dovecot_conf.py).  tls: enable ssl with a self-signed cert and
    imaps/pop3s listeners.  users: iterable of names or (name, password)
    added besides 'testuser'/'testpass'.  storage_version: 2.4's
    dovecot_storage_version (default: the version under test).
    chroot: a Debian suite ('trixie'): the instance runs the Dovecot of
    that chroot of scripts/chroot (see wrap()), whatever the host has;
    build must then be a tree built in that chroot.  self.version and
    self.is_24 say which Dovecot an instance runs.
    """

    def __init__(self, driver: str | None = 'maildir', *, mail_plugins=(), extra: str = '',
                 tls: bool = False, mail_debug: bool | None = None, users=(),
                 name: str | None = None, mail_location: str | None = None,
                 build: str | None = None, auth_debug: bool = False,
                 storage_version: str | None = None, chroot: str | None = None):
        if driver is not None and driver not in DRIVERS:
            raise ValueError('unknown driver %r' % driver)
        self.driver = driver
        self.name = name or (driver or 'custom')
        if mail_location is None:
            if driver is None:
                raise ValueError('need driver or mail_location')
            mail_location = DRIVERS[driver][0]
        self.mail_location = mail_location
        plugins = list(DRIVERS[driver][1]) if driver else []
        for p in mail_plugins:
            if p not in plugins:
                plugins.append(p)
        self.mail_plugins = plugins
        self.extra = extra
        self.tls = tls
        if mail_debug is None:
            mail_debug = os.environ.get('DLMDB_MAIL_DEBUG') == '1'
        self.mail_debug = mail_debug
        self.auth_debug = auth_debug
        self.storage_version = storage_version
        self.chroot = chroot
        self.root = chroot_dir(chroot) if chroot else ''
        if chroot:
            if not os.path.isfile(os.path.join(self.root, 'usr/sbin/dovecot')):
                raise Skip('no %s chroot with Dovecot at %s (scripts/chroot ensure %s)'
                           % (chroot, self.root, chroot))
            self.version = dovecot_conf.binary_version(DOVECOT, root=self.root)
        else:
            self.version = DOVECOT_VERSION
        self.is_24 = bool(self.version and self.version >= (2, 4))
        self.build = os.path.abspath(build) if build else build_dir()
        self.uid, self.gid = _default_ids()
        self.proc: subprocess.Popen | None = None
        self.pid: int | None = None
        self.pgid: int | None = None
        self._log_fh = None
        self.users: dict[str, User] = {}
        self.ports: dict[str, int] = {}
        self.clients = []  # open client connections, closed on stop()
        self.starts = 0
        self.killed_pids: set[int] = set()  # children stop() had to SIGKILL

        self.dir = tempfile.mkdtemp(prefix='dlmdb-%s-' % self.name, dir='/tmp')
        _INSTANCES.append(self)
        try:
            self._setup()
        except BaseException:
            self.cleanup()
            raise
        for u in users:
            if isinstance(u, (tuple, list)):
                self.add_user(*u)
            else:
                self.add_user(u)

    # -- paths -------------------------------------------------------------
    def path(self, *p) -> str:
        return os.path.join(self.dir, *p)

    @property
    def conf_path(self) -> str:
        return self.path('dovecot.conf')

    @property
    def log_path(self) -> str:
        return self.path('dovecot.log')

    def home(self, user: str = 'testuser') -> str:
        return self.users[user].home

    def mail_dir(self, user: str = 'testuser') -> str:
        """Mail root of a user (the path part of mail_location with ~
        expanded; only meaningful for the presets)."""
        loc = self.mail_location.split(':', 1)[1].split(':', 1)[0]
        return loc.replace('~', self.home(user), 1)

    # -- setup -------------------------------------------------------------
    def _setup(self):
        os.chmod(self.dir, 0o755)
        for d in ('run', 'state', 'home', 'modules'):
            os.mkdir(self.path(d))
            os.chmod(self.path(d), 0o755)
        self._setup_modules()
        for k in ('imap', 'pop3', 'lmtp') + (('imaps', 'pop3s') if self.tls else ()):
            self.ports[k] = free_port()
        if self.tls:
            self._make_cert()
        for f in ('dovecot.log', 'dovecot-info.log', 'dovecot-debug.log'):
            open(self.path(f), 'a').close()
        self.add_user('testuser', 'testpass')  # writes passwd + conf

    def _setup_modules(self):
        mdir = self.path('modules')
        # (links to the path the Dovecot processes see: in a chroot, its own)
        for entry in sorted(os.listdir(self.root + STOCK_MODULE_DIR)):
            src = os.path.join(STOCK_MODULE_DIR, entry)
            if entry.endswith('.so') or os.path.isdir(self.root + src):
                os.symlink(src, os.path.join(mdir, entry))
        self.build_modules = []
        for pattern in BUILD_MODULE_GLOBS:
            for src in sorted(glob.glob(os.path.join(self.build, pattern))):
                dst = os.path.join(mdir, os.path.basename(src))
                if os.path.lexists(dst):
                    os.unlink(dst)
                os.symlink(src, dst)
                self.build_modules.append(src)
        # every requested mail plugin must be loadable
        if 'storage_lmdb' in self.mail_plugins:
            want = os.path.join(self.build, LMDB_MODULE)
            if not os.path.exists(want):
                raise ModuleMissing(
                    'lmdb storage module not built: %s does not exist '
                    '(build the project, or set DLMDB_BUILD_DIR to the build tree)' % want)
        for p in self.mail_plugins:
            if self.is_24:
                try:
                    p = dovecot_conf.plugin_name_24(p)
                except Unsupported as e:
                    raise Skip('Dovecot %s: %s' % (_version_str(self.version), e))
                if p is None:
                    continue
            if not glob.glob(os.path.join(mdir, 'lib*_%s_plugin.so' % p)) and \
               not os.path.exists(os.path.join(mdir, '%s.so' % p)):
                raise ModuleMissing('mail plugin %r: no lib*_%s_plugin.so in %s or %s '
                                    '(DLMDB_BUILD_DIR=%s)' % (p, p, STOCK_MODULE_DIR,
                                                              self.build, self.build))
        if self.is_24:
            self._setup_settings_modules()
        # mail processes run unprivileged: the modules must be readable by them
        for src in self.build_modules:
            try:
                st = os.stat(src)
            except OSError:
                continue
            if not st.st_mode & 0o004 and st.st_uid != self.uid:
                raise HarnessError('%s is not world-readable; the mail user (uid %d) '
                                   'cannot load it' % (src, self.uid))

    def _setup_settings_modules(self):
        """2.4: Dovecot's config process (and doveconf) knows a plugin's
        settings only from a settings module in its compiled-in
        STOCK_SETTINGS_MODULE_DIR.  This dir (stock modules copied, the
        build's linked) is bind-mounted over it in a private mount
        namespace for every Dovecot process the instance runs (wrap())."""
        sdir = self.path('settings-modules')
        os.mkdir(sdir)
        os.chmod(sdir, 0o755)
        stock = self.root + STOCK_SETTINGS_MODULE_DIR
        if os.path.isdir(stock):
            for entry in os.listdir(stock):
                if entry.endswith('.so'):
                    # copies: symlinks would point into the covered dir
                    shutil.copy2(os.path.join(stock, entry), sdir)
        for pattern in BUILD_SETTINGS_MODULE_GLOBS:
            for src in sorted(glob.glob(os.path.join(self.build, pattern))):
                os.symlink(src, os.path.join(sdir, os.path.basename(src)))
                self.build_modules.append(src)

    def _setup_doveadm_modules(self) -> str:
        """doveadm loads its own plugins only from the compiled-in
        STOCK_DOVEADM_MODULE_DIR: this dir (stock plugins copied, the
        build's linked) is bind-mounted over it (wrap(doveadm=True))."""
        ddir = self.path('doveadm-modules')
        if not os.path.isdir(ddir):
            os.mkdir(ddir)
            os.chmod(ddir, 0o755)
            stock = self.root + STOCK_DOVEADM_MODULE_DIR
            for entry in os.listdir(stock):
                if entry.endswith('.so'):
                    shutil.copy2(os.path.join(stock, entry), ddir)
            for pattern in BUILD_DOVEADM_MODULE_GLOBS:
                for src in glob.glob(os.path.join(self.build, pattern)):
                    os.symlink(src, os.path.join(ddir, os.path.basename(src)))
        return ddir

    def wrap(self, cmd: list, doveadm: bool = False) -> list:
        """cmd run in a private mount namespace where the build's modules
        cover Dovecot's compiled-in module dirs: on 2.4 the settings
        modules (every Dovecot process needs them: the config is checked
        against them), with doveadm=True the doveadm plugins.  Nothing is
        installed system-wide; the pid of the result is cmd's own (exec)."""
        binds = []
        if self.is_24:
            binds.append((self.path('settings-modules'), STOCK_SETTINGS_MODULE_DIR))
        if doveadm:
            binds.append((self._setup_doveadm_modules(), STOCK_DOVEADM_MODULE_DIR))
        if binds:
            script = ' && '.join('mount --bind "$%d" %s' % (i + 1, dst)
                                 for i, (_src, dst) in enumerate(binds))
            script += ' && shift %d && exec "$@"' % len(binds)
            # run by scripts/chroot (self.chroot), cmd is inside a chroot
            # whatever this process is in: 'unchanged' there
            prop = 'unchanged' if self.chroot else _propagation()
            cmd = (['unshare', '-m', '--propagation', prop, 'sh', '-c', script, 'sh'] +
                   [src for src, _dst in binds] + list(cmd))
        if self.chroot:
            # scripts/chroot execs all the way down: the pid stays cmd's.
            # The repo (and so a build tree in it) is there at its own path;
            # the instance dir and a build elsewhere are bound in.
            outer = [os.path.join(REPO_ROOT, 'scripts', 'chroot'), 'run', self.chroot,
                     '--bind', '%s:%s' % (self.dir, self.dir)]
            if not (self.build + '/').startswith(REPO_ROOT + '/'):
                outer += ['--bind', '%s:%s' % (self.build, self.build)]
            cmd = outer + ['--'] + list(cmd)
        return list(cmd)

    def doveadm_cmd(self, *args, opts=()) -> list:
        """The argv of ``doveadm [opts] -c CONF args...``, ready to run:
        opts (2.3 syntax, e.g. ('-o', 'k=v')) translated, in the module
        namespace that doveadm needs (see wrap())."""
        args = [str(a) for a in args]
        cmd = [DOVEADM] + self.doveadm_opts(opts) + ['-c', self.conf_path] + args
        return self.wrap(cmd, doveadm=bool(args) and args[0] in DOVEADM_PLUGIN_COMMANDS)

    def doveadm_opts(self, opts) -> list:
        """doveadm_opts() for this instance's Dovecot version."""
        if not self.is_24:
            return list(opts)
        try:
            return dovecot_conf.doveadm_opts(opts)
        except Unsupported as e:
            raise Skip('Dovecot %s: %s' % (_version_str(self.version), e))

    def _make_cert(self):
        cmd = ['openssl', 'req', '-x509', '-newkey', 'rsa:2048', '-nodes',
               '-keyout', self.path('key.pem'), '-out', self.path('cert.pem'),
               '-days', '2', '-subj', '/CN=localhost']
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        if r.returncode != 0:
            raise HarnessError('openssl failed: %s' % r.stderr)
        os.chmod(self.path('key.pem'), 0o600)

    def add_user(self, name: str, password: str = 'testpass', extra: str = '') -> User:
        """Add a passwd-file user (home under the temp dir, owned by the
        mail uid/gid).  Works before or after start(): passwd-file is
        re-read by Dovecot when it changes."""
        home = self.path('home', name)
        os.makedirs(home, exist_ok=True)
        os.chmod(home, 0o700)
        os.chown(home, self.uid, self.gid) if os.geteuid() == 0 else None
        u = User(name, password, self.uid, self.gid, home, extra)
        self.users[name] = u
        self._write_passwd()
        self.write_config()
        return u

    def _write_passwd(self):
        path = self.path('passwd')
        try:
            old_mtime = int(os.stat(path).st_mtime)
        except FileNotFoundError:
            old_mtime = 0
        tmp = path + '.tmp'
        with open(tmp, 'w') as f:
            for u in self.users.values():
                f.write(u.passwd_line(self.version) + '\n')
        os.chmod(tmp, 0o644)
        # Dovecot's passwd-file notices changes by (mtime seconds, size):
        # make sure the mtime differs.
        t = max(int(time.time()), old_mtime + 1)
        os.utime(tmp, (t, t))
        os.replace(tmp, path)
        if self.running:
            # ...and it stat()s the file at most once per second (per
            # ioloop second), so let the next lookup happen in a new second.
            time.sleep(1.05)

    def config_text(self) -> str:
        """The config for the Dovecot under test: config_text_23(), on 2.4
        translated (dovecot_conf.translate()); a setting 2.4 can't express
        makes the test skip."""
        text = self.config_text_23()
        if not self.is_24:
            return text
        try:
            return (dovecot_conf.header_24(self.version, self.storage_version) +
                    dovecot_conf.translate(text))
        except Unsupported as e:
            raise Skip('Dovecot %s: %s' % (_version_str(self.version), e))

    def config_text_23(self) -> str:
        """The config in 2.3 syntax (with extra appended)."""
        p = self.path
        tls = self.tls
        lines = [
            '# generated by tests/integration/harness.py',
            'base_dir = %s' % p('run'),
            'state_dir = %s' % p('state'),
            'instance_name = %s' % os.path.basename(self.dir),
            'log_path = %s' % p('dovecot.log'),
            'info_log_path = %s' % p('dovecot.log'),
            'debug_log_path = %s' % p('dovecot.log'),
            'log_timestamp = "%Y-%m-%d %H:%M:%S "',
            'listen = 127.0.0.1',
            'protocols = imap pop3 lmtp',
            'import_environment = TZ CORE_OUTOFMEM CORE_ERROR LISTEN_PID LISTEN_FDS',
            'hostname = localhost',
            'postmaster_address = postmaster@example.com',
            'disable_plaintext_auth = no',
            'auth_mechanisms = plain login',
            'auth_verbose = yes',
            'auth_debug = %s' % ('yes' if self.auth_debug else 'no'),
            'mail_debug = %s' % ('yes' if self.mail_debug else 'no'),
            'first_valid_uid = 1',
            'first_valid_gid = 1',
            'mail_location = %s' % self.mail_location,
            'mail_plugin_dir = %s' % p('modules'),
            'mail_plugins = $mail_plugins %s' % ' '.join(self.mail_plugins),
            'lmtp_save_to_detail_mailbox = no',
            'recipient_delimiter = +',
            'ssl_client_ca_dir =',
            'ssl_client_ca_file =',
            'shutdown_clients = yes',
            'version_ignore = no',
        ]
        if tls:
            lines += [
                'ssl = yes',
                'ssl_cert = <%s' % p('cert.pem'),
                'ssl_key = <%s' % p('key.pem'),
            ]
        else:
            lines.append('ssl = no')
        lines += [
            'passdb {',
            '  driver = passwd-file',
            '  args = scheme=PLAIN username_format=%%u %s' % p('passwd'),
            '}',
            'userdb {',
            '  driver = passwd-file',
            '  args = username_format=%%u %s' % p('passwd'),
            '}',
            'service imap-login {',
            '  inet_listener imap {',
            '    address = 127.0.0.1',
            '    port = %d' % self.ports['imap'],
            '  }',
            '  inet_listener imaps {',
            '    address = 127.0.0.1',
            '    port = %d' % (self.ports['imaps'] if tls else 0),
            '    ssl = yes',
            '  }',
            '}',
            'service pop3-login {',
            '  inet_listener pop3 {',
            '    address = 127.0.0.1',
            '    port = %d' % self.ports['pop3'],
            '  }',
            '  inet_listener pop3s {',
            '    address = 127.0.0.1',
            '    port = %d' % (self.ports['pop3s'] if tls else 0),
            '    ssl = yes',
            '  }',
            '}',
            'service lmtp {',
            '  inet_listener lmtp {',
            '    address = 127.0.0.1',
            '    port = %d' % self.ports['lmtp'],
            '  }',
            '}',
            # mail processes run as the unprivileged test uid: let them
            # reach the stats writer without group membership.
            'service stats {',
            '  unix_listener stats-writer {',
            '    mode = 0666',
            '  }',
            '}',
        ]
        text = '\n'.join(lines) + '\n'
        if self.extra:
            text += '\n# --- extra ---\n' + self.extra.rstrip('\n') + '\n'
        text += instrumented_config(text)   # DLMDB_SANITIZE / DLMDB_VALGRIND
        return text

    def write_config(self):
        with open(self.conf_path, 'w') as f:
            f.write(self.config_text())
        os.chmod(self.conf_path, 0o644)

    def _check_settings_module(self, doveconf_stderr: str):
        """2.4: a setting of ours that doveconf does not know means the
        plugin's settings module is not built: ModuleMissing (as for a
        missing plugin), not a config error."""
        mo = re.search(r'Unknown setting: ((lmdb|pop3_policy)_\w+)', doveconf_stderr)
        if not (self.is_24 and mo):
            return
        pattern = BUILD_SETTINGS_MODULE_GLOBS[0 if mo.group(2) == 'lmdb' else 1]
        if not glob.glob(os.path.join(self.build, pattern)):
            raise ModuleMissing('setting %s: no settings module %s in the build %s'
                                % (mo.group(1), pattern, self.build))

    def check_config(self) -> str:
        """Run doveconf -n on the config; raise HarnessError on errors."""
        r = subprocess.run(self.wrap([DOVECONF, '-c', self.conf_path, '-n']),
                           capture_output=True, text=True, timeout=60)
        if r.returncode != 0 or 'Error' in r.stderr or 'Fatal' in r.stderr:
            self._check_settings_module(r.stderr)
            raise HarnessError('doveconf -n rejected %s (exit %d):\n%s\n--- config ---\n%s'
                               % (self.conf_path, r.returncode, r.stderr.strip(),
                                  self.config_text()))
        return r.stdout

    # -- lifecycle -----------------------------------------------------------
    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout: float = 20.0) -> 'Dovecot':
        if self.running:
            return self
        self.write_config()
        self.check_config()
        self._log_fh = open(self.path('master.stderr'), 'ab')
        env = dict(os.environ)
        env.setdefault('TZ', 'UTC')
        env.update(instrumented_env())   # DLMDB_SANITIZE
        self.proc = subprocess.Popen(self.wrap([DOVECOT, '-F', '-c', self.conf_path]),
                                     stdin=subprocess.DEVNULL, stdout=self._log_fh,
                                     stderr=subprocess.STDOUT, start_new_session=True,
                                     env=env, cwd=self.dir)
        self.pid = self.proc.pid
        self.pgid = self.proc.pid
        self.starts += 1
        try:
            self._wait_listening(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_listening(self, timeout):
        deadline = time.monotonic() + timeout
        pending = dict(self.ports)
        while pending:
            if self.proc.poll() is not None:
                raise StartError('dovecot exited with status %s during startup\n'
                                 '--- master stderr ---\n%s\n--- log ---\n%s'
                                 % (self.proc.returncode, self._read(self.path('master.stderr')),
                                    self.log_tail(50)))
            for k, port in list(pending.items()):
                try:
                    s = socket.create_connection(('127.0.0.1', port), timeout=1)
                except OSError:
                    continue
                s.close()
                del pending[k]
            if not pending:
                break
            if time.monotonic() > deadline:
                raise StartError('dovecot listeners %s not up after %.0fs\n--- log ---\n%s'
                                 % (sorted(pending), timeout, self.log_tail(50)))
            time.sleep(0.05)
        # The probes above made the master spawn login, lmtp, auth and
        # stats processes: let them finish starting up, so the test (and a
        # stop() right away) meets an instance that is not spawning.
        if not self.settle():
            raise StartError('processes still starting up %.0fs after the listeners '
                             'were up: %s\n--- log ---\n%s'
                             % (self.SETTLE_TIMEOUT, self._describe(self._children()),
                                self.log_tail(50)))
        pidfile = self.path('run', 'master.pid')
        for _ in range(100):
            if os.path.exists(pidfile):
                break
            time.sleep(0.02)
        try:
            mpid = int(self._read(pidfile).strip())
            if mpid != self.pid:
                raise StartError('master.pid %d != child pid %d' % (mpid, self.pid))
        except (OSError, ValueError):
            pass

    def _close_clients(self):
        for c in self.clients:
            try:
                if isinstance(c, imaplib.IMAP4):
                    c.shutdown()
                elif isinstance(c, poplib.POP3):
                    c.close()
                else:
                    c.close()
            except Exception:
                pass
        self.clients = []

    # How Dovecot 2.3's master stops (src/master/main.c, service-monitor.c):
    # on SIGTERM it stops spawning, closes the "master dead" pipes, waits up
    # to 5 s for its children to exit, SIGQUITs the rest, sleeps 1 s and
    # exits.  It never kills a child.  A child notices the closed pipe only
    # once its start-up is over (master_service_init_finish() adds the pipe,
    # fd 6, to its ioloop).  Before that it blocks on the stats-writer
    # handshake (5 s) and reads its settings from the config socket, both
    # unix listeners the master holds and serves by spawning 'stats' and
    # 'config' on demand.  A child still starting up at SIGTERM therefore
    # waits on sockets nobody will serve any more: "stats-writer ...
    # Timeout waiting for handshake response" 5 s later, or, when the
    # master exits and its listeners close, "Fatal: Error reading
    # configuration: ... Connection reset by peer".  So stop() sends
    # SIGTERM only once every child has finished starting up (settle()),
    # and kills by pid any child the master forks in the instant before it
    # handles the SIGTERM, before that child can log anything.
    MASTER_DEAD_FD = 6        # lib-master/master-interface.h
    SETTLE_QUIET = 0.1        # s without a new child before the instance counts as settled
    SETTLE_TIMEOUT = 10.0     # s settle() waits at most
    STOP_GRACE = 1.0          # s leftover children get after the master exited
    # the master's line for a child the harness killed (pid in killed_pids)
    # (the log process relays it as the child's Fatal, with the client's
    # address if it knows one; for a log process the master logs it itself)
    KILLED_CHILD_RE = re.compile(r'(?:: Fatal: master:|master: Error:) service\([^)]+\): '
                                 r'child (\d+) killed with signal 9(?: \(core dumps disabled\))?'
                                 r'(?: \[last ip=[^\]]*\])?$')

    def _child_pids(self) -> list[int]:
        """The master's live (non-zombie) children."""
        out = []
        if not self.running:
            return out
        for d in os.listdir('/proc'):
            if not d.isdigit():
                continue
            try:
                with open('/proc/%s/stat' % d, 'rb') as f:
                    st = f.read()
            except OSError:
                continue
            fields = st[st.rindex(b')') + 2:].split()
            if fields[0] != b'Z' and int(fields[1]) == self.pid:
                out.append(int(d))
        return out

    def _children(self) -> dict[int, bool]:
        """{pid: started up} for the master's live children."""
        try:
            master_exe = os.readlink('/proc/%d/exe' % self.pid)
        except (OSError, TypeError):
            return {}
        return {pid: self._started_up(pid, master_exe) for pid in self._child_pids()}

    @classmethod
    def _started_up(cls, pid: int, master_exe: str) -> bool:
        """Whether child pid has finished lib-master's start-up: one of
        its epoll sets watches MASTER_DEAD_FD.  A child forked but not yet
        exec'd shares the master's epoll set, hence the exe check."""
        try:
            if os.readlink('/proc/%d/exe' % pid) == master_exe:
                return False
            fds = os.listdir('/proc/%d/fd' % pid)
        except OSError:
            return False
        want = ['tfd:', str(cls.MASTER_DEAD_FD)]
        for fd in fds:
            try:
                if os.readlink('/proc/%d/fd/%s' % (pid, fd)) != 'anon_inode:[eventpoll]':
                    continue
                with open('/proc/%d/fdinfo/%s' % (pid, fd)) as f:
                    if any(line.split()[:2] == want for line in f):
                        return True
            except OSError:
                continue
        return False

    @staticmethod
    def _idle(pid: int) -> bool:
        """Whether process pid sleeps in epoll_wait(), i.e. (for the
        master) is past its start-up and between two ioloop rounds.  Where
        the kernel hides wait channels ('0' for a sleeping process), any
        sleeping state counts."""
        try:
            with open('/proc/%d/wchan' % pid) as f:
                wchan = f.read().strip()
            with open('/proc/%d/stat' % pid, 'rb') as f:
                st = f.read()
        except OSError:
            return False
        if st[st.rindex(b')') + 2:].split()[0] != b'S':
            return False
        return 'ep_poll' in wchan or 'epoll' in wchan or wchan in ('', '0')

    @staticmethod
    def _describe(children: dict[int, bool]) -> str:
        out = []
        for pid, up in sorted(children.items()):
            try:
                with open('/proc/%d/cmdline' % pid, 'rb') as f:
                    title = f.read().split(b'\0')[0].decode('utf-8', 'replace')
            except OSError:
                title = '?'
            out.append('%d %s%s' % (pid, title, '' if up else ' (starting up)'))
        return ', '.join(out) or 'none'

    def settle(self, timeout: float | None = None) -> set[int]:
        """Wait until the master waits in its ioloop, every child of it has
        finished starting up and no new child appeared for SETTLE_QUIET
        seconds.  (The listeners answer before the master has forked a
        single child: it binds them first.)  Returns the children then, or
        an empty set if that did not happen within timeout (default
        SETTLE_TIMEOUT)."""
        deadline = time.monotonic() + (self.SETTLE_TIMEOUT if timeout is None else timeout)
        seen: set[int] = set()
        quiet_since = time.monotonic()
        while self.running:
            now = time.monotonic()
            kids = self._children()
            if not set(kids) <= seen:
                seen |= set(kids)
                quiet_since = now
            if kids and all(kids.values()) and now - quiet_since >= self.SETTLE_QUIET \
                    and self._idle(self.pid):
                return set(kids)
            if now > deadline:
                break
            time.sleep(0.02)
        return set()

    def stop(self, timeout: float = 15.0) -> None:
        """Let the instance settle (settle()), SIGTERM the master, kill
        children it forked after that by pid, wait for it to exit; then
        give what is left of its process group STOP_GRACE seconds, SIGKILL
        the group and wait until it is empty.  Idempotent."""
        self._close_clients()
        if self.proc is None:
            return
        proc, pgid = self.proc, self.pgid
        try:
            if proc.poll() is None:
                # on a settle() timeout stop anyway: the log shows why
                known = self.settle() or set(self._child_pids())
                try:
                    os.kill(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
                deadline = time.monotonic() + timeout
                while proc.poll() is None and time.monotonic() < deadline:
                    for pid in set(self._child_pids()) - known:
                        # forked for a connection queued just before the
                        # SIGTERM: it would block in its start-up on sockets
                        # nobody serves any more
                        try:
                            os.kill(pid, signal.SIGKILL)
                            self.killed_pids.add(pid)
                        except ProcessLookupError:
                            pass
                        known.add(pid)
                    time.sleep(0.02)
                if proc.poll() is None:
                    self._killpg(pgid)
                    proc.wait(10)
            # Children left in the process group after the master is gone
            # (busy with a client when it exited): a moment, then SIGKILL.
            deadline = time.monotonic() + self.STOP_GRACE
            while self._pg_alive(pgid) and time.monotonic() < deadline:
                time.sleep(0.05)
            if self._pg_alive(pgid):
                self._killpg(pgid)
                deadline = time.monotonic() + 10
                while self._pg_alive(pgid):
                    if time.monotonic() > deadline:
                        raise HarnessError('processes of the stopped instance survive '
                                           'SIGKILL: %s' % self._pg_members(pgid))
                    time.sleep(0.02)
        finally:
            self.proc = None
            if self._log_fh:
                self._log_fh.close()
                self._log_fh = None

    @staticmethod
    def _pg_members(pgid) -> list[int]:
        """Live (non-zombie) pids in process group pgid, from /proc."""
        out = []
        for d in os.listdir('/proc'):
            if not d.isdigit():
                continue
            try:
                with open('/proc/%s/stat' % d, 'rb') as f:
                    st = f.read()
            except OSError:
                continue
            # pid (comm) state ppid pgrp ...; comm may contain spaces/parens
            fields = st[st.rindex(b')') + 2:].split()
            if fields[0] != b'Z' and int(fields[2]) == pgid:
                out.append(int(d))
        return out

    def server_pid(self, sock: socket.socket, service: str, timeout: float = 5.0) -> int:
        """pid of this instance's process (title ending in /service) that
        holds the server side of the TCP connection sock."""
        lport = sock.getsockname()[1]
        sport = sock.getpeername()[1]
        deadline = time.monotonic() + timeout
        while True:
            inode = None
            with open('/proc/net/tcp') as f:
                next(f)
                for row in f:
                    c = row.split()
                    if int(c[1].split(':')[1], 16) == sport and \
                            int(c[2].split(':')[1], 16) == lport:
                        inode = c[9]
                        break
            if inode:
                want = 'socket:[%s]' % inode
                for pid in self._service_pids(service):
                    try:
                        for fd in os.listdir('/proc/%d/fd' % pid):
                            try:
                                if os.readlink('/proc/%d/fd/%s' % (pid, fd)) == want:
                                    return pid
                            except OSError:
                                pass
                    except OSError:
                        pass
            if time.monotonic() > deadline:
                raise HarnessError('no %s process holds the connection (port %d)'
                                   % (service, lport))
            time.sleep(0.05)

    def _service_pids(self, service: str) -> list[int]:
        """pids of this instance's processes whose title ends in /service."""
        out = []
        if self.pgid is None or not os.path.isdir('/proc/self'):
            return out
        for pid in self._pg_members(self.pgid):
            try:
                with open('/proc/%d/cmdline' % pid, 'rb') as f:
                    argv0 = f.read().split(b'\0')[0]
            except OSError:
                continue
            if argv0.split()[0].endswith(b'/' + service.encode()) if argv0 else False:
                out.append(pid)
        return out

    @classmethod
    def _pg_alive(cls, pgid) -> bool:
        if os.path.isdir('/proc/self'):
            return bool(cls._pg_members(pgid))
        try:
            os.killpg(pgid, 0)
            return True
        except ProcessLookupError:
            return False
        except PermissionError:
            return True

    @staticmethod
    def _killpg(pgid):
        try:
            os.killpg(pgid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    def restart(self, timeout: float = 20.0) -> 'Dovecot':
        self.stop()
        # ports stay the same; wait until they are really free again
        deadline = time.monotonic() + 10
        for port in self.ports.values():
            while True:
                s = socket.socket()
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    s.bind(('127.0.0.1', port))
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise StartError('port %d still busy after stop' % port)
                    time.sleep(0.1)
                finally:
                    s.close()
        return self.start(timeout)

    def cleanup(self, keep: bool | None = None) -> None:
        """Stop and remove the temp dir (kept if keep or DLMDB_KEEP_TMP=1)."""
        self.stop()
        if keep is None:
            keep = os.environ.get('DLMDB_KEEP_TMP') == '1'
        if not keep:
            shutil.rmtree(self.dir, ignore_errors=True)
        if self in _INSTANCES:
            _INSTANCES.remove(self)

    def __enter__(self) -> 'Dovecot':
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, exc_type, exc, tb):
        # Only stop: the temp dir (and log) stays until the runner has had a
        # chance to print the log; cleanup_all()/atexit removes it.
        self.stop()
        return False

    # -- logs ----------------------------------------------------------------
    @staticmethod
    def _read(path) -> str:
        try:
            with open(path, 'rb') as f:
                return f.read().decode('utf-8', 'replace')
        except FileNotFoundError:
            return ''

    def log(self) -> str:
        return self._read(self.log_path)

    def wait_log(self, *needles: str, timeout: float = 10.0) -> str:
        """The log once it holds every needle (Dovecot's log process
        writes a moment after the client got its reply), or as it is
        when the timeout passes: the caller's assertion says what's
        missing."""
        deadline = time.monotonic() + timeout
        while True:
            text = self.log()
            if all(n in text for n in needles) or time.monotonic() > deadline:
                return text
            time.sleep(0.1)

    def log_tail(self, n: int = 200) -> str:
        lines = self.log().splitlines()
        return '\n'.join(lines[-n:])

    # log lines that are expected consequences of what the harness does
    BENIGN_LOG_RE = [
        # our own SIGTERM on stop()/restart()
        r'master: Warning: Killed with signal 15 \(by pid=%d ' % os.getpid(),
        # start()'s connect-and-close probe of a doveadm inet_listener
        # (a port a test added to self.ports)
        # (2.4 prefixes the listener's name, "tcp: ")
        r'doveadm\(127\.0\.0\.1\): Error: (?:\S+: )?doveadm client disconnected before '
        r'handshake: EOF',
        # a process not scheduled until 0.1 s after its ioloop's timeout
        # (lib/ioloop.c: epoll_wait() returned that late): the machine's
        # load (an instrumented master under load 15+), not the code under
        # test.  Seconds, not more: a real clock jump would be bigger, and
        # backwards is never benign.
        r': Warning: Time moved forwards by \d\.\d+ seconds - adjusting timeouts\.$',
    ]

    def log_errors(self, include_warnings: bool = True, include_benign: bool = False
                   ) -> list[str]:
        """Log lines at level Error/Panic/Fatal (and Warning).  Lines
        caused by the harness itself (is_benign()) are left out unless
        include_benign."""
        levels = ('Error', 'Panic', 'Fatal') + (('Warning',) if include_warnings else ())
        pat = re.compile(r'(?:^|\s|\))(?:%s):' % '|'.join(levels))
        out = [l for l in self.log().splitlines() if pat.search(l)]
        if not include_benign:
            out = [l for l in out if not self.is_benign(l)]
        return out

    def is_benign(self, line: str) -> bool:
        """Whether a log line is the harness's own doing: its SIGTERM to
        the master, or the master reporting a child that stop() killed
        (by pid, see killed_pids)."""
        if any(re.search(b, line) for b in self.BENIGN_LOG_RE):
            return True
        mo = self.KILLED_CHILD_RE.search(line)
        return bool(mo) and int(mo.group(1)) in self.killed_pids

    def assert_no_log_errors(self, include_warnings: bool = True, ignore=()):
        errs = [l for l in self.log_errors(include_warnings)
                if not any(re.search(i, l) for i in ignore)]
        if errs:
            raise AssertionError('Dovecot log has errors:\n' + '\n'.join(errs[:50]))

    # -- clients -------------------------------------------------------------
    def _pw(self, user, password):
        if password is not None:
            return password
        if user in self.users:
            return self.users[user].password
        return 'testpass'

    def _login_user(self, user):
        return user

    def imap(self, user: str = 'testuser', password: str | None = None,
             login: bool = True) -> imaplib.IMAP4:
        c = imaplib.IMAP4('127.0.0.1', self.ports['imap'], timeout=CLIENT_TIMEOUT)
        self.clients.append(c)
        if login:
            c.login(user, self._pw(user, password))
        return c

    def imap_starttls(self, user: str = 'testuser', password: str | None = None) -> imaplib.IMAP4:
        self._need_tls()
        c = imaplib.IMAP4('127.0.0.1', self.ports['imap'], timeout=CLIENT_TIMEOUT)
        self.clients.append(c)
        c.starttls(ssl_context=client_ssl_context())
        c.login(user, self._pw(user, password))
        return c

    def imap_ssl(self, user: str = 'testuser', password: str | None = None) -> imaplib.IMAP4_SSL:
        self._need_tls()
        c = imaplib.IMAP4_SSL('127.0.0.1', self.ports['imaps'],
                              ssl_context=client_ssl_context(), timeout=CLIENT_TIMEOUT)
        self.clients.append(c)
        c.login(user, self._pw(user, password))
        return c

    def pop3(self, user: str = 'testuser', password: str | None = None,
             login: bool = True) -> poplib.POP3:
        c = poplib.POP3('127.0.0.1', self.ports['pop3'], timeout=CLIENT_TIMEOUT)
        self.clients.append(c)
        if login:
            c.user(user)
            c.pass_(self._pw(user, password))
        return c

    def pop3_stls(self, user: str = 'testuser', password: str | None = None) -> poplib.POP3:
        self._need_tls()
        c = poplib.POP3('127.0.0.1', self.ports['pop3'], timeout=CLIENT_TIMEOUT)
        self.clients.append(c)
        c.stls(context=client_ssl_context())
        c.user(user)
        c.pass_(self._pw(user, password))
        return c

    def pop3_ssl(self, user: str = 'testuser', password: str | None = None) -> poplib.POP3_SSL:
        self._need_tls()
        c = poplib.POP3_SSL('127.0.0.1', self.ports['pop3s'], context=client_ssl_context(),
                            timeout=CLIENT_TIMEOUT)
        self.clients.append(c)
        c.user(user)
        c.pass_(self._pw(user, password))
        return c

    def _need_tls(self):
        if not self.tls:
            raise HarnessError('instance was created without tls=True')

    def lmtp(self) -> LmtpClient:
        """An LMTP connection (greeting read); caller drives it."""
        c = LmtpClient('127.0.0.1', self.ports['lmtp'], strict_eot=self.is_24)
        self.clients.append(c)
        return c

    def lmtp_deliver(self, rcpts, data: bytes, mail_from: str = 'sender@example.com') -> LmtpResult:
        """Deliver raw bytes to recipients (str or list) over LMTP, one
        transaction.  Returns an LmtpResult; check .all_ok() / .status."""
        if isinstance(rcpts, str):
            rcpts = [rcpts]
        c = LmtpClient('127.0.0.1', self.ports['lmtp'], strict_eot=self.is_24)
        try:
            return c.deliver(mail_from, list(rcpts), data)
        finally:
            c.quit()

    def lmtp_deliver_many(self, rcpts, messages, mail_from: str = 'sender@example.com'
                          ) -> list[LmtpResult]:
        """Deliver several messages over one LMTP connection (RSET-free:
        each transaction starts with LHLO, which resets the state)."""
        if isinstance(rcpts, str):
            rcpts = [rcpts]
        c = LmtpClient('127.0.0.1', self.ports['lmtp'], strict_eot=self.is_24)
        try:
            return [c.deliver(mail_from, list(rcpts), m) for m in messages]
        finally:
            c.quit()

    def run_wrapped(self, cmd: list, text: bool = True, **kw) -> subprocess.CompletedProcess:
        """subprocess.run of a command from wrap()/doveadm_cmd() in the
        instance dir, output captured; without scripts/chroot's own notes
        on stderr (e.g. that the chroot's packages are older than
        scripts/packages): they are not the command's."""
        r = subprocess.run(cmd, capture_output=True, text=text, cwd=self.dir, **kw)
        if self.chroot and r.stderr:
            nl, note = ('\n', 'scripts/chroot: ') if text else (b'\n', b'scripts/chroot: ')
            r.stderr = nl.join(l for l in r.stderr.split(nl) if not l.startswith(note))
        return r

    def doveadm(self, *args, user: str | None = None, check: bool = True,
                input: str | bytes | None = None, timeout: float = 120,
                text: bool = True) -> subprocess.CompletedProcess:
        """Run ``doveadm -c CONF <args[0]> [-u user] <args[1:]>``.

        If user is given, ``-u user`` is inserted after the (possibly
        multi-word) command name: everything in args up to the first
        argument starting with '-' or after the known command words."""
        args = [str(a) for a in args]
        if user is not None:
            n = _doveadm_cmd_words(args)
            args = args[:n] + ['-u', user] + args[n:]
        cmd = self.doveadm_cmd(*args)
        if isinstance(input, str) and not text:
            input = input.encode()
        r = self.run_wrapped(cmd, text=text, input=input, timeout=timeout)
        if check and r.returncode != 0:
            raise HarnessError('%s failed (exit %d):\nstdout: %s\nstderr: %s'
                               % (' '.join(cmd), r.returncode, r.stdout, r.stderr))
        return r

    def message_ids(self, user: str = 'testuser', mailbox: str = 'INBOX') -> list:
        """[(uid, Message-ID)] of a mailbox, read by doveadm fetch (a new
        process, so it sees what was committed, not a session's view)."""
        r = self.doveadm('fetch', 'uid hdr.message-id', 'mailbox', mailbox, 'all',
                         user=user)
        out = []
        uid = None
        for line in r.stdout.splitlines():
            if line.startswith('uid: '):
                uid = int(line[5:])
            elif line.startswith('hdr.message-id: '):
                out.append((uid, line[len('hdr.message-id: '):].strip()))
        return out

    def _doveadm_with_build_plugins(self, cmd):
        """cmd (a doveadm command line) in the module namespace doveadm
        needs (wrap(doveadm=True))."""
        return self.wrap(cmd, doveadm=True)

    def __repr__(self):
        return '<Dovecot %s dir=%s pid=%s ports=%s>' % (self.name, self.dir, self.pid, self.ports)


# doveadm commands whose second word is part of the command name
_DOVEADM_SUBCMD = {
    'mailbox': {'list', 'create', 'delete', 'rename', 'subscribe', 'unsubscribe',
                'status', 'metadata', 'mutf7', 'cache', 'update', 'path'},
    'acl': {'get', 'rights', 'set', 'add', 'remove', 'delete', 'recalc', 'debug'},
    'quota': {'get', 'recalc'},
    'fts': {'lookup', 'expand', 'tokenize', 'optimize', 'rescan'},
    'flags': {'add', 'remove', 'replace'},
    'lmdb': {'stats', 'verify', 'recover', 'compact', 'salvage'},
    'pop3-policy': {'show', 'run', 'uidl', 'freeze-uidl'},
    'metadata': {'set', 'unset', 'get', 'list'},
}


def _doveadm_cmd_words(args) -> int:
    if not args:
        return 0
    first = args[0]
    sub = _DOVEADM_SUBCMD.get(first)
    if sub and len(args) > 1 and args[1] in sub:
        if first == 'mailbox' and args[1] in ('cache', 'metadata') and len(args) > 2 \
                and not args[2].startswith('-'):
            return 3
        return 2
    return 1


def client_ssl_context() -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


# ---------------------------------------------------------------------------
# instrumented runs: AddressSanitizer/UBSan (DLMDB_SANITIZE=1) and valgrind
# memcheck (DLMDB_VALGRIND=1); tests/sanitizers/run sets them.
#
# DLMDB_SANITIZE=1 needs a build made with ./configure --enable-sanitizers
# (DLMDB_BUILD_DIR).  Dovecot's binaries are not instrumented, so every
# process of every instance gets the ASan runtime preloaded: the master's
# environment has LD_PRELOAD, ASAN_OPTIONS and UBSAN_OPTIONS, and the
# config's import_environment passes them on to the children (Dovecot
# cleans its children's environment); doveadm runs through a wrapper that
# sets them.  A test's own LD_PRELOAD=lib (import_environment or
# environment) is kept behind the runtime.  DLMDB_VALGRIND=1 runs the imap,
# pop3 and lmtp services and doveadm under valgrind memcheck with
# tests/integration/valgrind.supp.
#
# Both need an unlimited address space (ASan's shadow memory, valgrind's
# own), so the instance gets default_vsz_limit = 0; a test that sets a
# vsz_limit below 1G, which is what it tests, is skipped.  The login
# processes are not chrooted (they could not reach the report directory).
# Every process writes its reports into one directory (DLMDB_REPORT_DIR,
# default a temp dir) as asan.PID, ubsan.PID (clang's runtime writes all
# three kinds there) or valgrind.SERVICE.PID; run.py calls
# collect_reports() after each test: a report with a frame in project code
# (storage-lmdb/, plugin/, or one of the build's modules) fails the test,
# the others are printed and counted.

SANITIZE = os.environ.get('DLMDB_SANITIZE') == '1'
VALGRIND = os.environ.get('DLMDB_VALGRIND') == '1'
if SANITIZE and VALGRIND:
    raise HarnessError('DLMDB_SANITIZE=1 and DLMDB_VALGRIND=1 exclude each other')
INSTRUMENTED = SANITIZE or VALGRIND
# DLMDB_SANITIZE_STACKS=full: allocation stacks by the slow unwinder
SANITIZE_FULL_STACKS = os.environ.get('DLMDB_SANITIZE_STACKS') == 'full'
VALGRIND_BINARY = os.environ.get('VALGRIND_BINARY', '/usr/bin/valgrind')
DOVECOT_LIBEXEC = os.environ.get('DOVECOT_LIBEXEC_DIR', '/usr/lib/dovecot')
VALGRIND_SERVICES = ('imap', 'pop3', 'lmtp')
SANITIZER_LEAK_SERVICES = ('imap', 'pop3', 'lmtp')
VALGRIND_SUPP = os.path.join(HERE, 'valgrind.supp')
# a vsz_limit below this is what the test is about: skipped when instrumented
INSTRUMENTED_MIN_VSZ = 1 << 30
# how much longer a test's own time limits are when instrumented: ASan makes
# a mail process 3-5x slower (docs/reliability.md), valgrind 20-50x.  For
# limits that only tell a hang from slowness, not for what a test measures.
TIME_FACTOR = 5 if SANITIZE else 40 if VALGRIND else 1

_report_state = {'dir': None, 'tmp': False, 'runtime': None}


def report_dir() -> str:
    """Where instrumented processes write their reports (created once)."""
    st = _report_state
    if st['dir'] is None:
        d = os.environ.get('DLMDB_REPORT_DIR')
        if d:
            os.makedirs(d, exist_ok=True)
        else:
            d = tempfile.mkdtemp(prefix='dlmdb-reports-', dir='/tmp')
            st['tmp'] = True
        # processes write as root, the mail uid, dovenull, dovecot
        os.chmod(d, 0o1777)
        st['dir'] = os.path.abspath(d)
    return st['dir']


def sanitizer_runtime() -> str:
    """Path of the ASan runtime the build's lmdb module links (from ldd)."""
    st = _report_state
    if st['runtime'] is None:
        mod = os.path.join(build_dir(), LMDB_MODULE)
        r = subprocess.run(['ldd', mod], capture_output=True, text=True, timeout=60)
        m = re.search(r'\s(?:libasan\.so[.\d]*|libclang_rt\.asan[-\w.]*\.so)\s+=>\s+(\S+)',
                      r.stdout)
        if not m:
            raise HarnessError('DLMDB_SANITIZE=1, but %s does not link an ASan runtime: '
                               'build with ./configure --enable-sanitizers and point '
                               'DLMDB_BUILD_DIR at it' % mod)
        st['runtime'] = m.group(1)
    return st['runtime']


def _sanitizer_options(leaks: bool = False) -> dict[str, str]:
    """halt_on_error=0: a process goes on after a report (the module is
    built with -fsanitize-recover), so one test shows every error.  Leaks
    are checked only in the processes that load project code (the mail
    services and doveadm, see SANITIZER_LEAK_SERVICES): LeakSanitizer
    ptraces its own process at exit, which fails in Dovecot's processes
    that are not dumpable after their setuid (the login processes: 'fatal
    error', exit status 1)."""
    d = report_dir()
    asan = 'halt_on_error=0:abort_on_error=0:log_path=%s/asan:allow_user_segv_handler=1' % d
    if leaks:
        asan += ':detect_leaks=1'
        if SANITIZE_FULL_STACKS:
            # Dovecot's libraries have no frame pointers: the fast
            # unwinder stops in its pool code, before the frame that
            # allocated, so a leak's stack names project code only with
            # the slow one.  It unwinds at every malloc: an LMTP delivery
            # takes ~10x as long (1 s instead of 0.1 s), too slow for the
            # whole suite, hence opt-in.
            asan += ':fast_unwind_on_malloc=0:malloc_context_size=20'
    else:
        asan += ':detect_leaks=0'
    ubsan = 'halt_on_error=0:print_stacktrace=1:log_path=%s/ubsan' % d
    # Dovecot's children have no PATH: name the symbolizer (file:line frames)
    sym = shutil.which('llvm-symbolizer')
    if sym:
        asan += ':external_symbolizer_path=' + sym
        ubsan += ':external_symbolizer_path=' + sym
    return {'ASAN_OPTIONS': asan, 'UBSAN_OPTIONS': ubsan}


def instrumented_env() -> dict[str, str]:
    """Environment for the master of an instrumented instance."""
    if not INSTRUMENTED:
        return {}
    if not SANITIZE:
        return {'GDB': '1'}
    env = _sanitizer_options()
    env['GDB'] = '1'
    pre = os.environ.get('LD_PRELOAD', '')
    env['LD_PRELOAD'] = sanitizer_runtime() + (':' + pre if pre else '')
    return env


def preload_env(lib: str) -> dict[str, str]:
    """The environment for a process that preloads lib (libfaketime):
    LD_PRELOAD=lib, or when instrumented lib followed by the ASan runtime
    and ASan told not to insist on coming first.

    Not the runtime first, as everywhere else: libfaketime initialises
    lazily and its initialisation calls dlsym(), whose failure for a
    symbol glibc no longer has (__ftime) allocates; with the runtime
    first, a constructor's __cxa_atexit() starts ASan's own
    initialisation, whose allocator asks clock_gettime() -- libfaketime's,
    not yet initialised -- which allocates inside ASan's initialisation:
    the process hangs on ASan's lock before main() (any program, `date`
    too).  With libfaketime first both initialise (seen with date and
    doveadm; ASan then initialises from its own constructor, not from an
    interceptor in the middle of another library's).  ASan checks that it
    comes first (verify_asan_link_order=0 turns that off): in the process
    given this environment (the doveadm wrapper's shell too), and the
    doveadm wrapper turns it off itself when it finds the runtime behind
    another library; a service's own wrapper must do the same."""
    if not SANITIZE:
        return {'LD_PRELOAD': lib}
    return {'LD_PRELOAD': '%s:%s' % (lib, sanitizer_runtime()),
            'ASAN_OPTIONS': 'verify_asan_link_order=0'}


def _valgrind_argv(tag: str, trace_children: bool) -> list[str]:
    argv = [VALGRIND_BINARY, '--tool=memcheck', '-q', '--error-limit=no',
            '--num-callers=40', '--fullpath-after=', '--vgdb=no',
            '--leak-check=no', '--trace-children=%s' % ('yes' if trace_children else 'no'),
            '--log-file=%s/valgrind.%s.%%p' % (report_dir(), tag)]
    if os.path.exists(VALGRIND_SUPP):
        argv.append('--suppressions=%s' % VALGRIND_SUPP)
    argv += os.environ.get('DLMDB_VALGRIND_OPTS', '').split()
    return argv


def _instrumented_doveadm(real: str) -> str:
    """A wrapper script for doveadm that sets up the instrumentation (and
    keeps a caller's LD_PRELOAD behind the ASan runtime).

    bash, not sh: doveadm hands its settings to the processes it starts
    (DOVECONF_ENV=1) as environment variables, a namespace's named like
    NAMESPACE/inbox/INBOX.  dash drops every variable whose name is no
    shell identifier when it execs, so the `doveadm dsync-server` that
    dsync starts through this wrapper got no namespace settings ("inbox=yes
    namespace missing"); bash passes them on."""
    path = os.path.join(report_dir(), '.doveadm')
    lines = ['#!/bin/bash', '# written by tests/integration/harness.py',
             'GDB=1; export GDB']
    if SANITIZE:
        for k, v in _sanitizer_options(leaks=True).items():
            lines.append("%s='%s'; export %s" % (k, v, k))
        rt = sanitizer_runtime()
        # the runtime first, unless the caller put it behind a library on
        # purpose (preload_env()): then ASan must not insist
        lines.append('case ":$LD_PRELOAD:" in ":%s:"*) ;; '
                     '*":%s:"*) ASAN_OPTIONS="$ASAN_OPTIONS:verify_asan_link_order=0" ;; '
                     '*) LD_PRELOAD="%s${LD_PRELOAD:+:$LD_PRELOAD}" ;; esac' % (rt, rt, rt))
        lines.append('export LD_PRELOAD')
    prefix = ''
    if VALGRIND:
        # doveadm re-executes itself through doveconf: follow it
        prefix = ' '.join(_valgrind_argv('doveadm', True)) + ' '
    lines.append('exec %s%s "$@"' % (prefix, real))
    with open(path + '.tmp', 'w') as f:
        f.write('\n'.join(lines) + '\n')
    os.chmod(path + '.tmp', 0o755)
    os.replace(path + '.tmp', path)
    return path


def direct_env(preload: str = '', leaks: bool = True) -> dict[str, str]:
    """The environment to add for a Dovecot binary that a test starts
    itself, not through the master or DOVEADM (gdb --args wants an
    executable, not the wrapper script; the fault injector's lmtp and imap
    run on a pipe): LD_PRELOAD=preload, and when instrumented what the
    wrapper sets (the ASan runtime first in LD_PRELOAD, preload behind
    it).  leaks=False for a process run under gdb: LeakSanitizer cannot
    ptrace a traced process at exit.  Under valgrind the binary runs
    without it."""
    env = {'LD_PRELOAD': preload} if preload else {}
    if not INSTRUMENTED:
        return env
    env['GDB'] = '1'
    if SANITIZE:
        env.update(_sanitizer_options(leaks=leaks))
        env['LD_PRELOAD'] = sanitizer_runtime() + (':' + preload if preload else '')
    return env


_SERVICE_RE = re.compile(r'^\s*service\s+([\w-]+)\s*\{')


def _service_settings(text: str) -> dict[str, dict[str, str]]:
    """{service name: {setting: value}} of the top-level service blocks
    in a config text (later blocks override earlier ones, as in Dovecot)."""
    out: dict[str, dict[str, str]] = {}
    depth, cur = 0, None
    for line in text.splitlines():
        s = line.split('#', 1)[0].strip()
        m = _SERVICE_RE.match(s)
        if depth == 0 and m:
            cur = out.setdefault(m.group(1), {})
        elif depth == 1 and cur is not None and '=' in s and not s.endswith('{'):
            k, v = s.split('=', 1)
            cur[k.strip()] = v.strip()
        depth += s.count('{') - s.count('}')
        if depth == 0:
            cur = None
    return out


def _size(value: str) -> int:
    m = re.match(r'^(\d+)\s*([kKmMgGtT]?)', value)
    if not m:
        return 0
    return int(m.group(1)) << {'': 0, 'k': 10, 'm': 20, 'g': 30, 't': 40}[m.group(2).lower()]


def instrumented_config(text: str) -> str:
    """Settings appended to an instance's config when instrumented."""
    if not INSTRUMENTED:
        return ''
    services = _service_settings(text)
    vsz = [('default', v) for v in re.findall(r'(?m)^\s*default_vsz_limit\s*=\s*(\S+)', text)]
    vsz += [(n, s['vsz_limit']) for n, s in services.items() if 'vsz_limit' in s]
    for who, v in vsz:
        if 0 < _size(v) < INSTRUMENTED_MIN_VSZ:
            raise Skip('vsz_limit %s (%s) is what this test is about; %s needs an '
                       'unlimited address space' % (v, who, 'ASan' if SANITIZE else 'valgrind'))
    out = ['', '# --- instrumented run (harness.instrumented_config) ---',
           'default_vsz_limit = 0']
    for name in ('imap-login', 'pop3-login'):
        # a chrooted login process could not open the report directory
        # (ASan exits with status 1 when it cannot write a report)
        out.append('service %s {\n  chroot =\n}' % name)
    for name, s in services.items():
        if 'vsz_limit' in s:
            out.append('service %s {\n  vsz_limit = 0\n}' % name)
    # the test's import_environment (the last one) and ours: GDB=1 keeps
    # Dovecot from dlclose()ing the modules at exit (lib/module-dir.c), so
    # that the stacks of leaks and valgrind's frames still name them
    found = re.findall(r'(?m)^\s*import_environment\s*=(.*)$', text)
    words = (found[-1] if found else
             'TZ CORE_OUTOFMEM CORE_ERROR LISTEN_PID LISTEN_FDS').split()
    merged = []
    for w in words:
        if SANITIZE and w.startswith('LD_PRELOAD='):
            w = 'LD_PRELOAD=%s:%s' % (sanitizer_runtime(), w[len('LD_PRELOAD='):])
        merged.append(w)
    names = {w.split('=', 1)[0] for w in merged}
    ours = ['GDB'] + (['LD_PRELOAD', 'ASAN_OPTIONS', 'UBSAN_OPTIONS'] if SANITIZE else [])
    merged += [n for n in ours if n not in names]
    out.append('import_environment = ' + ' '.join(merged))
    if SANITIZE:
        leak_opts = _sanitizer_options(leaks=True)['ASAN_OPTIONS']
        for name in SANITIZER_LEAK_SERVICES:
            if 'executable' in services.get(name, {}):
                continue    # the test's own wrapper
            out.append('service %s {\n  executable = /usr/bin/env ASAN_OPTIONS=%s %s/%s\n}'
                       % (name, leak_opts, DOVECOT_LIBEXEC, name))
    if VALGRIND:
        for name in VALGRIND_SERVICES:
            if 'executable' in services.get(name, {}):
                continue    # the test's own wrapper
            out.append('service %s {\n  executable = %s %s/%s\n}'
                       % (name, ' '.join(_valgrind_argv(name, False)), DOVECOT_LIBEXEC, name))
    return '\n'.join(out) + '\n'


# a report: kind ('asan', 'lsan', 'ubsan', 'valgrind'), pid, headline, text
class Report:
    def __init__(self, kind, pid, text):
        self.kind, self.pid, self.text = kind, pid, text
        self.headline = next((l.strip() for l in text.splitlines() if l.strip()), '')
        self.project = _touches_project(text)

    def __repr__(self):
        return '%s pid %s%s: %s' % (self.kind, self.pid, ' [project]' if self.project else '',
                                    self.headline[:200])


_PROJECT_SO = re.compile(r'lib\d+_(?:doveadm_)?(?:storage_lmdb|pop3_policy[\w]*)_plugin\.so')
_PROJECT_SRC = re.compile(r'(?:^|[\s/(])(?:storage-lmdb|plugin)/[\w.-]+\.[ch]:\d+')


def _touches_project(text: str) -> bool:
    return bool(_PROJECT_SO.search(text) or _PROJECT_SRC.search(text))


_SAN_SPLIT = re.compile(r'(?m)^=+\n|^(?=\S.*: runtime error: )')


def _split_reports(kind: str, pid: str, text: str) -> list[Report]:
    out = []
    if kind in ('asan', 'ubsan'):
        # one runtime (clang's) writes ASan, LSan and UBSan reports into
        # the same file: ASan's start after a line of '=', UBSan's with
        # 'FILE:LINE:COL: runtime error: '; a leak report holds one entry
        # per leaked allocation stack, each a report of its own
        for seg in _SAN_SPLIT.split(text):
            if not seg or not seg.strip():
                continue
            if 'ERROR: LeakSanitizer: detected memory leaks' in seg:
                for leak in re.findall(r'(?ms)^((?:Direct|Indirect) leak of .*?)(?:\n\s*\n|\Z)',
                                       seg):
                    out.append(Report('lsan', pid, leak))
            elif 'ERROR: AddressSanitizer' in seg:
                out.append(Report('asan', pid, seg.strip()))
            elif ': runtime error: ' in seg:
                out.append(Report('ubsan', pid, seg.strip()))
            else:
                out.append(Report(kind, pid, seg.strip()))
    else:
        # valgrind: blocks of '==PID== ' lines separated by an empty one
        lines = [re.sub(r'^==\d+== ?', '', l) for l in text.splitlines()]
        for block in '\n'.join(lines).split('\n\n'):
            if block.strip():
                out.append(Report('valgrind', pid, block.strip()))
    return out


def collect_reports(test: str) -> tuple[list[Report], str] | None:
    """Reports written since the last call (run.py calls it after each
    test, once every process is stopped), moved into a subdirectory named
    after the test.  Returns (reports, text to print), or None when the
    run is not instrumented."""
    if not INSTRUMENTED:
        return None
    d = report_dir()
    reports = []
    files = sorted(f for f in os.listdir(d) if re.match(r'(asan|ubsan|valgrind)\.', f))
    if files:
        sub = os.path.join(d, re.sub(r'[^\w.\[\]-]+', '_', test))
        os.makedirs(sub, exist_ok=True)
    for f in files:
        kind = f.split('.', 1)[0]
        pid = f.rsplit('.', 1)[-1]
        with open(os.path.join(d, f), 'rb') as fh:
            text = fh.read().decode('utf-8', 'replace')
        os.replace(os.path.join(d, f), os.path.join(sub, f))
        reports.extend(_split_reports(kind, pid, text))
    proj = [r for r in reports if r.project]
    if not reports:
        return reports, ''
    lines = ['REPORTS %s: %d in project code, %d elsewhere (%s)'
             % (test, len(proj), len(reports) - len(proj), sub)]
    lines += ['  %r' % r for r in reports]
    for r in proj:
        text = r.text.split('\nShadow bytes around the buggy address', 1)[0]
        lines.append('--- %s report in project code (pid %s) ---\n%s' % (r.kind, r.pid, text))
    return reports, '\n'.join(lines)


def _remove_report_dir():
    st = _report_state
    if st['tmp'] and st['dir'] and os.environ.get('DLMDB_KEEP_TMP') != '1':
        shutil.rmtree(st['dir'], ignore_errors=True)


if INSTRUMENTED:
    atexit.register(_remove_report_dir)
    DOVEADM = _instrumented_doveadm(DOVEADM)
    # instrumented processes take longer to exit (leak check, valgrind)
    Dovecot.STOP_GRACE = 10.0
    Dovecot.SETTLE_TIMEOUT = 60.0
