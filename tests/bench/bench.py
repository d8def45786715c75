#!/usr/bin/env python3
"""Benchmark of the lmdb mail storage against Dovecot's stock formats.

    python3 tests/bench/bench.py --quick                # a minute or two
    python3 tests/bench/bench.py --full --json out.json # opt-in, long
    python3 tests/bench/bench.py --formats lmdb,maildir --runs 5 --fsync never
    python3 tests/bench/bench.py --full --rows growth --runs 1 --charts DIR

Starts one private Dovecot per format (tests/integration/harness.py, same
settings everywhere, only mail_location differs; storage_lmdb is loaded in
every instance so the configs are identical otherwise), runs every
workload on every format interleaved (the format order is rotated per
run), repeats it --runs times and prints the median.  Not a test: never
run by CI.  Python 3.11 standard library only; run as root.

See tests/bench/README.md for what each row measures.
"""

from __future__ import annotations

import argparse
import atexit
import datetime
import glob
import importlib.util
import json
import os
import platform
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
# harness.py imports its sibling dovecot_conf.py
sys.path.insert(0, os.path.join(REPO, 'tests', 'integration'))
_spec = importlib.util.spec_from_file_location(
    'harness', os.path.join(REPO, 'tests', 'integration', 'harness.py'))
harness = importlib.util.module_from_spec(_spec)
sys.modules['harness'] = harness
_spec.loader.exec_module(harness)
_spec = importlib.util.spec_from_file_location('provider', os.path.join(HERE, 'provider.py'))
provider = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(provider)

FORMATS = ('lmdb', 'maildir', 'sdbox', 'mdbox')
PASSWORD = 'testpass'
SEED = 20240611
IO_TIMEOUT = 1800

SIZES = {
    # messages per mailbox, big mailbox (0 = none), stress clients, stress
    # seconds, messages delivered under strace; provider rows: size of the
    # maildir to import (MB), idle IMAP sessions, growth checkpoints for
    # every format and beyond them for lmdb only, LMTP connections of the
    # growth deliveries; default_vsz_limit
    'quick': dict(n=500, big=0, stress_clients=8, stress_seconds=3, fsync_msgs=100,
                  import_mb=20, idle_sessions=20, growth_all=[300, 1000, 3000],
                  growth_lmdb=[], growth_clients=4, vsz_limit='8G'),
    'full': dict(n=10000, big=100000, stress_clients=32, stress_seconds=30, fsync_msgs=1000,
                 import_mb=1000, idle_sessions=500,
                 growth_all=[1000, 10000, 50000, 100000, 250000],
                 growth_lmdb=[500000, 1000000], growth_clients=4, vsz_limit='40G'),
}

# (key, label, unit, better, only_with_big)
METRICS = [
    ('deliver_1c', 'LMTP delivery, 1 client', 'msg/s', 'higher', False),
    ('deliver_4c', 'LMTP delivery, 4 clients', 'msg/s', 'higher', False),
    ('fsync_per_msg', 'fsync+fdatasync+msync+sfr per delivered msg', 'calls', 'lower', False),
    ('disk_deliver', 'disk after delivery (N msgs)', 'B/msg', 'lower', False),
    ('pop3_warm', 'POP3 login+STAT+UIDL+LIST, warm', 'ms', 'lower', False),
    ('pop3_cold', 'POP3 login+STAT+UIDL+LIST, cold', 'ms', 'lower', False),
    ('pop3_retr', 'POP3 RETR every message', 'MB/s', 'higher', False),
    ('pop3_big_warm', 'POP3 login+STAT+UIDL+LIST, 10N mbox, warm', 'ms', 'lower', True),
    ('pop3_big_cold', 'POP3 login+STAT+UIDL+LIST, 10N mbox, cold', 'ms', 'lower', True),
    ('imap_select', 'IMAP SELECT (N msgs)', 'ms', 'lower', False),
    ('imap_select_big', 'IMAP SELECT (10N msgs)', 'ms', 'lower', True),
    ('imap_fetch_env1', 'IMAP FETCH 1:* (FLAGS RFC822.SIZE ENVELOPE), 1st', 's', 'lower', False),
    ('imap_fetch_env2', 'IMAP FETCH 1:* (FLAGS RFC822.SIZE ENVELOPE), 2nd', 's', 'lower', False),
    ('imap_fetch_body', 'IMAP FETCH 1:* BODY.PEEK[]', 'MB/s', 'higher', False),
    ('imap_pss', 'imap process PSS after FETCH', 'KiB', 'lower', False),
    ('imap_priv_dirty', 'imap process Private_Dirty after FETCH', 'KiB', 'lower', False),
    ('imap_copy', 'IMAP UID COPY N msgs', 's', 'lower', False),
    ('disk_copy', 'disk after COPY (2N msgs)', 'B/msg', 'lower', False),
    ('imap_move', 'IMAP UID MOVE N msgs', 's', 'lower', False),
    ('disk_move', 'disk after MOVE (2N msgs)', 'B/msg', 'lower', False),
    ('imap_expunge', 'IMAP STORE \\Deleted + EXPUNGE N msgs', 's', 'lower', False),
    ('disk_expunge', 'disk after EXPUNGE (N msgs)', 'B/msg', 'lower', False),
    ('stress', 'stress mix, K IMAP clients', 'ops/s', 'higher', False),
    ('lmtp_16u', 'LMTP delivery, 16 clients to 16 users', 'msg/s', 'higher', False),
    ('import_mbs', 'doveadm backup -R of a maildir', 'MB/s', 'higher', False),
    ('disk_import', 'disk after backup of the maildir', 'B/msg', 'lower', False),
    ('idle_pss_mean', 'idle IMAP session PSS, mean', 'KiB', 'lower', False),
    ('idle_pss_max', 'idle IMAP session PSS, max', 'KiB', 'lower', False),
    ('idle_priv_dirty_mean', 'idle IMAP session Private_Dirty, mean', 'KiB', 'lower', False),
    ('idle_priv_dirty_max', 'idle IMAP session Private_Dirty, max', 'KiB', 'lower', False),
]
METRIC = {m[0]: m for m in METRICS}

provider.init(sys.modules[__name__])


class PhaseError(Exception):
    pass


# ---------------------------------------------------------------------------
# deterministic messages

WORDS = ('lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod '
         'tempor incididunt ut labore et dolore magna aliqua enim ad minim veniam '
         'quis nostrud exercitation ullamco laboris nisi aliquip ex ea commodo '
         'consequat duis aute irure in reprehenderit voluptate velit esse cillum '
         'fugiat nulla pariatur excepteur sint occaecat cupidatat non proident '
         'sunt culpa qui officia deserunt mollit anim id est laborum').split()


class MessageSet:
    """Message i of a set depends only on (seed, i): sizes 2,048-51,200
    bytes (uniform), CRLF line endings, plain text with the usual headers."""

    def __init__(self, seed: int = SEED):
        self.seed = seed
        rng = random.Random(seed)
        lines = []
        for _ in range(24000):
            lines.append(' '.join(rng.choice(WORDS) for _ in range(rng.randint(4, 14))))
        self.pool = ('\r\n'.join(lines) + '\r\n').encode()
        self.starts = [0]
        pos = 0
        for l in lines:
            pos += len(l) + 2
            self.starts.append(pos)
        self.max_start = len(self.pool) - 60000
        self.starts = [s for s in self.starts if s < self.max_start]
        self.base = datetime.datetime(2024, 1, 1, 8, 0, 0, tzinfo=datetime.timezone.utc)
        self._cache: dict[int, bytes] = {}

    def get(self, i: int, cache: bool = True) -> bytes:
        m = self._cache.get(i)
        if m is not None:
            return m
        rng = random.Random('%d/%d' % (self.seed, i))
        size = rng.randint(2048, 51200)
        date = (self.base + datetime.timedelta(minutes=i)).strftime('%a, %d %b %Y %H:%M:%S +0000')
        hdr = ('From: Sender %d <sender%d@example.com>\r\n'
               'To: Test User <testuser@example.com>\r\n'
               'Subject: bench message %d %s %s\r\n'
               'Date: %s\r\n'
               'Message-ID: <bench.%d.%d@example.com>\r\n'
               'MIME-Version: 1.0\r\n'
               'Content-Type: text/plain; charset=us-ascii\r\n'
               '\r\n' % (i % 50, i % 50, i, rng.choice(WORDS), rng.choice(WORDS), date,
                         self.seed, i)).encode()
        start = rng.choice(self.starts)
        end = self.pool.index(b'\r\n', start + max(0, size - len(hdr))) + 2
        m = hdr + b'message %d\r\n' % i + self.pool[start:end]
        if cache:
            self._cache[i] = m
        return m

    def messages(self, lo: int, hi: int) -> list[bytes]:
        return [self.get(i) for i in range(lo, hi)]


# ---------------------------------------------------------------------------
# lean clients (imaplib/poplib parse too much in Python to measure MB/s)

class Imap:
    def __init__(self, port: int, user: str, password: str = PASSWORD):
        self.sock = socket.create_connection(('127.0.0.1', port), timeout=IO_TIMEOUT)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.f = self.sock.makefile('rb', buffering=1 << 20)
        self.n = 0
        g = self.f.readline()
        if not g.startswith(b'* OK'):
            raise PhaseError('IMAP greeting: %r' % g)
        self.ok('LOGIN %s %s' % (user, password))

    def cmd(self, line: str | bytes, literal: bytes | None = None, keep: bool = True):
        """Send one command (with an optional LITERAL+ literal); return
        (status, text of tagged line, untagged lines, literal bytes read)."""
        self.n += 1
        tag = b'b%d' % self.n
        if isinstance(line, str):
            line = line.encode()
        if literal is not None:
            self.sock.sendall(tag + b' ' + line + b' {%d+}\r\n' % len(literal) + literal + b'\r\n')
        else:
            self.sock.sendall(tag + b' ' + line + b'\r\n')
        untagged = []
        litbytes = 0
        tagsp = tag + b' '
        f = self.f
        while True:
            l = f.readline()
            if not l:
                raise PhaseError('IMAP connection closed during %r' % line[:60])
            if l.startswith(tagsp):
                st = l[len(tagsp):].split(b' ', 1)
                return st[0].decode(), l.decode('utf-8', 'replace').rstrip(), untagged, litbytes
            while l.endswith(b'}\r\n'):
                m = re.search(rb'\{(\d+)\}\r\n$', l)
                if not m:
                    break
                k = int(m.group(1))
                data = f.read(k)
                if len(data) != k:
                    raise PhaseError('IMAP short literal')
                litbytes += k
                if keep:
                    l = l + data
                nxt = f.readline()
                l = l + nxt
            if keep:
                untagged.append(l)

    def ok(self, line, literal=None, keep=True):
        st, text, untagged, lb = self.cmd(line, literal, keep)
        if st != 'OK':
            raise PhaseError('IMAP %r: %s' % (line if isinstance(line, str) else line[:60], text))
        return text, untagged, lb

    def close(self):
        try:
            self.sock.sendall(b'z LOGOUT\r\n')
            self.sock.settimeout(5)
            while self.f.readline():
                pass
        except Exception:
            pass
        try:
            self.f.close()
        finally:
            self.sock.close()


class Pop3:
    def __init__(self, port: int, user: str, password: str = PASSWORD):
        self.sock = socket.create_connection(('127.0.0.1', port), timeout=IO_TIMEOUT)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.f = self.sock.makefile('rb', buffering=1 << 20)
        g = self.f.readline()
        if not g.startswith(b'+OK'):
            raise PhaseError('POP3 greeting: %r' % g)
        self.cmd('USER ' + user)
        self.cmd('PASS ' + password)

    def cmd(self, line: str) -> bytes:
        self.sock.sendall(line.encode() + b'\r\n')
        st = self.f.readline()
        if not st.startswith(b'+OK'):
            raise PhaseError('POP3 %r: %r' % (line.split()[0], st))
        return st

    def multi(self, line: str) -> bytes:
        """Multi-line command; returns the body as sent (still dot-stuffed)."""
        self.cmd(line)
        buf = bytearray()
        f = self.f
        while True:
            chunk = f.read1(1 << 18)
            if not chunk:
                raise PhaseError('POP3 connection closed during %s' % line)
            buf += chunk
            if buf.endswith(b'\r\n.\r\n') or buf == b'.\r\n':
                return bytes(buf[:-3])

    def quit(self):
        try:
            self.cmd('QUIT')
        finally:
            self.f.close()
            self.sock.close()


# ---------------------------------------------------------------------------
# helpers

def du_bytes(path: str) -> int:
    """Allocated bytes under path as du counts them (hard links once)."""
    seen = set()
    total = 0
    for root, dirs, files in os.walk(path):
        for p in [root] + [os.path.join(root, f) for f in files]:
            try:
                st = os.lstat(p)
            except FileNotFoundError:
                continue
            key = (st.st_dev, st.st_ino)
            if key in seen:
                continue
            seen.add(key)
            total += st.st_blocks * 512
    return total


def smaps_rollup(pid: int) -> dict:
    out = {}
    with open('/proc/%d/smaps_rollup' % pid) as f:
        for l in f:
            m = re.match(r'(\w+):\s+(\d+) kB', l)
            if m:
                out[m.group(1)] = int(m.group(2))
    return out


def drop_caches() -> str | None:
    """sync + drop the page cache; None if done, else why not."""
    try:
        os.sync()
        with open('/proc/sys/vm/drop_caches', 'w') as f:
            f.write('3\n')
        return None
    except OSError as e:
        return str(e)


def deliver(dc, user: str, msgs: list[bytes], clients: int = 1) -> float:
    """Deliver msgs to user over LMTP with `clients` connections in
    parallel (round-robin split); returns the elapsed seconds."""
    parts = [msgs[k::clients] for k in range(clients)]
    errors = []

    def worker(part):
        try:
            c = harness.LmtpClient('127.0.0.1', dc.ports['lmtp'], timeout=IO_TIMEOUT)
            try:
                for m in part:
                    r = c.deliver('sender@example.com', [user], m)
                    if not r.all_ok():
                        raise PhaseError('LMTP delivery failed: %r' % r)
            finally:
                c.quit()
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    t0 = time.perf_counter()
    if clients == 1:
        worker(parts[0])
    else:
        ths = [threading.Thread(target=worker, args=(p,)) for p in parts]
        for t in ths:
            t.start()
        for t in ths:
            t.join()
    dt = time.perf_counter() - t0
    if errors:
        raise errors[0]
    return dt


def pop3_listing(dc, user: str, expect: int) -> float:
    """Seconds for connect + login + STAT + UIDL + LIST + QUIT."""
    t0 = time.perf_counter()
    p = Pop3(dc.ports['pop3'], user)
    st = p.cmd('STAT')
    p.multi('UIDL')
    p.multi('LIST')
    p.quit()
    dt = time.perf_counter() - t0
    n = int(st.split()[1])
    if n != expect:
        raise PhaseError('POP3 STAT says %d messages, expected %d' % (n, expect))
    return dt


# ---------------------------------------------------------------------------
# the benchmark


class Bench(provider.ProviderRows):
    def __init__(self, args):
        self.args = args
        self.mode = 'full' if args.full else 'quick'
        self.size = dict(SIZES[self.mode])
        if args.messages:
            self.size['n'] = args.messages
        if args.stress_seconds:
            self.size['stress_seconds'] = args.stress_seconds
        if args.stress_clients:
            self.size['stress_clients'] = args.stress_clients
        for opt, key in (('import_mb', 'import_mb'), ('idle_sessions', 'idle_sessions'),
                         ('growth_clients', 'growth_clients'), ('vsz_limit', 'vsz_limit')):
            if getattr(args, opt):
                self.size[key] = getattr(args, opt)
        if args.growth_steps:
            self.size['growth_all'] = args.growth_steps
        if args.growth_lmdb_steps is not None:
            self.size['growth_lmdb'] = args.growth_lmdb_steps
        self.vsz_limit = self.size['vsz_limit']
        self.rows = args.rows
        self.growth: dict[str, list] = {}
        self.growth_notes: list[str] = []
        self.import_info: dict = {}
        self.formats = args.formats
        self.runs = args.runs
        self.msgs = MessageSet(SEED)
        self.dcs: dict = {}
        # results[key][fmt] = list of values (or 'error' strings)
        self.results: dict[str, dict[str, list]] = {k: {f: [] for f in self.formats}
                                                    for k, *_ in METRICS}
        self.errors: list[dict] = []
        self.warnings: dict[str, list[str]] = {}
        self.notes: list[str] = []
        self.log_pos: dict[str, int] = {}
        self.drop_caches_status = 'not tried'
        self.t_start = time.monotonic()

    # -- instances -------------------------------------------------------
    def extra_config(self) -> str:
        return '\n'.join([
            'mail_fsync = %s' % self.args.fsync,
            # an lmdb map must fit in the address space (256M by
            # default): the full run's 100,000-message user has ~2.6 GB,
            # the growth curve's 1,000,000-message one ~29 GB
            'default_vsz_limit = %s' % self.vsz_limit,
            'protocol imap {',
            '  mail_max_userip_connections = 1000',
            '}',
            'protocol pop3 {',
            '  mail_max_userip_connections = 1000',
            '}',
            # dsync (the import row) wants the same hierarchy separator on
            # both sides; without a namespace each format has its own
            'namespace inbox {',
            '  inbox = yes',
            '  separator = /',
            '}',
        ] + self.provider_config() + [''])

    def users(self) -> list[str]:
        us = ['warm', 'fsync']
        if 'base' in self.rows:
            for r in range(self.runs):
                us += ['m%d' % r, 'p%d' % r]
            if self.size['big']:
                us.append('big')
        return us + self.provider_users()

    def snapshot_modules(self) -> str:
        """Copy the built plugin modules into a private dir: every instance
        loads the same bytes even if someone rebuilds the tree meanwhile
        (libtool removes and relinks the .so files during make)."""
        src = harness.build_dir()
        snap = tempfile.mkdtemp(prefix='dlmdb-bench-build-', dir='/tmp')
        atexit.register(shutil.rmtree, snap, True)
        os.chmod(snap, 0o755)
        for attempt in range(20):
            files = []
            for pattern in harness.BUILD_MODULE_GLOBS:
                files += glob.glob(os.path.join(src, pattern))
            try:
                for f in files:
                    rel = os.path.relpath(f, src)
                    dst = os.path.join(snap, rel)
                    os.makedirs(os.path.dirname(dst), mode=0o755, exist_ok=True)
                    shutil.copyfile(f, dst)
                    os.chmod(dst, 0o755)
                if os.path.getsize(os.path.join(snap, harness.LMDB_MODULE)) > 0:
                    break
            except OSError:
                pass
            time.sleep(0.5)
        for d, _dirs, _f in os.walk(snap):
            os.chmod(d, 0o755)
        try:
            self.build_rev = subprocess.run(
                ['git', '-C', REPO, 'describe', '--always', '--dirty'],
                capture_output=True, text=True).stdout.strip()
        except OSError:
            self.build_rev = '?'
        return snap

    def start(self):
        snap = self.snapshot_modules()
        for fmt in self.formats:
            dc = harness.Dovecot(fmt, name='bench-' + fmt, mail_plugins=['storage_lmdb'],
                                 build=snap,
                                 extra=self.extra_config(),
                                 users=[(u, PASSWORD) for u in self.users()])
            dc.start()
            self.dcs[fmt] = dc
            self.log_pos[fmt] = len(dc.log())

    def stop(self):
        for dc in self.dcs.values():
            try:
                dc.stop()
            except Exception:
                pass

    def new_log_errors(self, fmt: str) -> list[str]:
        dc = self.dcs[fmt]
        text = dc.log()
        new = text[self.log_pos[fmt]:]
        self.log_pos[fmt] = len(text)
        pat = re.compile(r'(?:^|\s|\))(?:Error|Panic|Fatal):')
        wpat = re.compile(r'(?:^|\s|\))Warning:')
        benign = [re.compile(b) for b in dc.BENIGN_LOG_RE]
        lines = [l for l in new.splitlines() if not any(b.search(l) for b in benign)]
        for l in lines:
            if wpat.search(l):
                self.warnings.setdefault(fmt, []).append(l)
        return [l for l in lines if pat.search(l)]

    # -- bookkeeping -----------------------------------------------------
    def record(self, key, fmt, value):
        self.results[key][fmt].append(value)

    def phase(self, name: str, keys: list[str], fmt: str, run: int, steps: str, func):
        """Run func() -> {key: value}; on an exception or new Error lines in
        the log, record 'error' for keys and keep the details."""
        t0 = time.monotonic()
        exc = None
        vals = {}
        try:
            vals = func() or {}
        except Exception as e:  # noqa: BLE001
            exc = ''.join(traceback.format_exception_only(type(e), e)).strip()
            if self.args.verbose:
                traceback.print_exc()
        logerr = self.new_log_errors(fmt)
        if exc or logerr:
            self.errors.append(dict(phase=name, format=fmt, run=run, steps=steps,
                                    exception=exc, log=logerr[:40],
                                    config_dir=self.dcs[fmt].dir))
            for k in keys:
                self.record(k, fmt, 'error')
        else:
            for k in keys:
                if k in vals:
                    self.record(k, fmt, vals[k])
        self.progress('%-14s %-8s run %d  %5.1fs  %s' % (
            name, fmt, run + 1, time.monotonic() - t0,
            'ERROR' if (exc or logerr) else
            ' '.join('%s=%s' % (k, fmtnum(v)) for k, v in vals.items())))

    def progress(self, msg):
        if not self.args.silent:
            print('[%6.1fs] %s' % (time.monotonic() - self.t_start, msg), file=sys.stderr,
                  flush=True)

    # -- workloads ---------------------------------------------------------
    def order(self, run: int) -> list[str]:
        k = run % len(self.formats)
        return list(self.formats[k:]) + list(self.formats[:k])

    def disk_per_msg(self, fmt, user, nmsgs):
        return du_bytes(self.dcs[fmt].mail_dir(user)) / nmsgs

    def ph_deliver1(self, fmt, run):
        n = self.size['n']
        dt = deliver(self.dcs[fmt], 'm%d' % run, self.msgs.messages(0, n), 1)
        return {'deliver_1c': n / dt, 'disk_deliver': self.disk_per_msg(fmt, 'm%d' % run, n)}

    def ph_deliver4(self, fmt, run):
        n = self.size['n']
        dt = deliver(self.dcs[fmt], 'p%d' % run, self.msgs.messages(0, n), 4)
        return {'deliver_4c': n / dt}

    def ph_pop3_warm(self, fmt, run, user, expect, key, retr=True):
        dc = self.dcs[fmt]
        pop3_listing(dc, user, expect)          # warm-up, not measured
        lat = statistics.median(pop3_listing(dc, user, expect) for _ in range(3))
        out = {key: lat * 1000}
        if retr:
            p = Pop3(dc.ports['pop3'], user)
            total = 0
            t0 = time.perf_counter()
            for i in range(1, expect + 1):
                total += len(p.multi('RETR %d' % i))
            dt = time.perf_counter() - t0
            p.quit()
            out['pop3_retr'] = total / dt / 1e6
        return out

    def ph_pop3_cold(self, fmt, run, user, expect, key):
        dc = self.dcs[fmt]
        dc.restart()
        # spawn auth/login/pop3 once with another user, so that "cold" is
        # about the mailbox and the page cache, not about process start
        p = Pop3(dc.ports['pop3'], 'warm')
        p.quit()
        time.sleep(0.2)
        why = drop_caches()
        self.drop_caches_status = 'yes (sync; echo 3 > /proc/sys/vm/drop_caches)' \
            if why is None else 'NOT PERMITTED (%s): cold = after restart only' % why
        return {key: pop3_listing(dc, user, expect) * 1000}

    def select_latency(self, fmt, user):
        dc = self.dcs[fmt]
        lat = []
        for _ in range(4):
            c = Imap(dc.ports['imap'], user)
            t0 = time.perf_counter()
            c.ok('SELECT INBOX')
            lat.append(time.perf_counter() - t0)
            c.close()
        return statistics.median(lat[1:]) * 1000   # the first one is a warm-up

    def ph_imap_read(self, fmt, run):
        dc = self.dcs[fmt]
        user = 'm%d' % run
        n = self.size['n']
        out = {'imap_select': self.select_latency(fmt, user)}
        c = Imap(dc.ports['imap'], user)
        self._imap = c
        _t, unt, _ = c.ok('SELECT INBOX')
        exists = [int(l.split()[1]) for l in unt if l.endswith(b' EXISTS\r\n')]
        if exists != [n]:
            raise PhaseError('SELECT INBOX: EXISTS %r, expected %d' % (exists, n))
        for k in ('imap_fetch_env1', 'imap_fetch_env2'):
            t0 = time.perf_counter()
            _t, unt, _ = c.ok('FETCH 1:* (FLAGS RFC822.SIZE ENVELOPE)')
            out[k] = time.perf_counter() - t0
            if len(unt) != n:
                raise PhaseError('FETCH ENVELOPE returned %d responses, expected %d'
                                 % (len(unt), n))
        t0 = time.perf_counter()
        _t, _unt, lb = c.ok('FETCH 1:* (BODY.PEEK[])', keep=False)
        dt = time.perf_counter() - t0
        out['imap_fetch_body'] = lb / dt / 1e6
        pid = dc.server_pid(c.sock, 'imap')
        sm = smaps_rollup(pid)
        out['imap_pss'] = sm.get('Pss', 0)
        out['imap_priv_dirty'] = sm.get('Private_Dirty', 0)
        return out

    def ph_imap_write(self, fmt, run):
        c = self._imap
        self._imap = None
        user = 'm%d' % run
        n = self.size['n']
        out = {}
        try:
            c.ok('CREATE Copy')
            c.ok('CREATE Moved')
            t0 = time.perf_counter()
            c.ok('UID COPY 1:* Copy')
            out['imap_copy'] = time.perf_counter() - t0
            out['disk_copy'] = self.disk_per_msg(fmt, user, 2 * n)
            c.ok('SELECT Copy')
            t0 = time.perf_counter()
            c.ok('UID MOVE 1:* Moved')
            out['imap_move'] = time.perf_counter() - t0
            out['disk_move'] = self.disk_per_msg(fmt, user, 2 * n)
            _t, unt, _ = c.ok('SELECT Moved')
            exists = [int(l.split()[1]) for l in unt if l.endswith(b' EXISTS\r\n')]
            if exists != [n]:
                raise PhaseError('SELECT Moved: EXISTS %r, expected %d' % (exists, n))
            t0 = time.perf_counter()
            c.ok('UID STORE 1:* +FLAGS.SILENT (\\Deleted)')
            _t, unt, _ = c.ok('EXPUNGE')
            out['imap_expunge'] = time.perf_counter() - t0
            nexp = sum(1 for l in unt if l.endswith(b' EXPUNGE\r\n'))
            if nexp != n:
                raise PhaseError('EXPUNGE reported %d expunges, expected %d' % (nexp, n))
            c.close()
        except Exception:
            c.close()
            raise
        out['disk_expunge'] = self.disk_per_msg(fmt, user, n)
        return out

    def ph_stress(self, fmt, run):
        """K clients on user m<run>'s INBOX, each with its own seeded
        random stream: SELECT 10%, UID FETCH of 10 (FLAGS ENVELOPE) 35%,
        UID STORE flags 25%, APPEND 20%, UID STORE \\Deleted + UID EXPUNGE
        10%, until T seconds are over."""
        dc = self.dcs[fmt]
        user = 'm%d' % run
        k = self.size['stress_clients']
        secs = self.size['stress_seconds']
        n = self.size['n']
        state = {'maxuid': n}     # UIDs in INBOX were 1..N; APPENDUID raises it
        counts = [0] * k
        fails = []
        conns = [Imap(dc.ports['imap'], user) for _ in range(k)]
        for c in conns:
            c.ok('SELECT INBOX')
        barrier = threading.Barrier(k + 1)
        deadline = [0.0]
        ops = [('select', 10), ('fetch', 35), ('store', 25), ('append', 20), ('expunge', 10)]
        names = [o for o, _ in ops]
        weights = [w for _, w in ops]

        def worker(idx):
            rng = random.Random('%d/stress/%d' % (SEED, idx))
            c = conns[idx]
            barrier.wait()
            try:
                while time.perf_counter() < deadline[0]:
                    op = rng.choices(names, weights)[0]
                    mu = max(1, state['maxuid'])
                    if op == 'select':
                        c.ok('SELECT INBOX', keep=False)
                    elif op == 'fetch':
                        lo = rng.randint(1, mu)
                        c.ok('UID FETCH %d:%d (FLAGS ENVELOPE)' % (lo, lo + 9), keep=False)
                    elif op == 'store':
                        c.ok('UID STORE %d %sFLAGS.SILENT (%s)' % (
                            rng.randint(1, mu), rng.choice('+-'),
                            rng.choice(['\\Seen', '\\Flagged', '\\Answered', '$Bench'])),
                            keep=False)
                    elif op == 'append':
                        msg = self.msgs.get(rng.randrange(n))
                        text, _u, _ = c.ok('APPEND INBOX (\\Seen)', literal=msg, keep=False)
                        m = re.search(r'APPENDUID \d+ (\d+)', text)
                        if m:
                            state['maxuid'] = max(state['maxuid'], int(m.group(1)))
                    else:
                        u = rng.randint(1, mu)
                        c.ok('UID STORE %d +FLAGS.SILENT (\\Deleted)' % u, keep=False)
                        c.ok('UID EXPUNGE %d' % u, keep=False)
                    counts[idx] += 1
            except Exception as e:  # noqa: BLE001
                fails.append('client %d: %s' % (idx, e))

        ths = [threading.Thread(target=worker, args=(i,)) for i in range(k)]
        for t in ths:
            t.start()
        deadline[0] = time.perf_counter() + secs
        t0 = time.perf_counter()
        barrier.wait()
        for t in ths:
            t.join()
        dt = time.perf_counter() - t0
        for c in conns:
            c.close()
        if fails:
            raise PhaseError('stress: %d client(s) failed: %s' % (len(fails), fails[0]))
        return {'stress': sum(counts) / dt}

    def ph_fsync(self, fmt):
        """Deliver fsync_msgs messages over one LMTP connection with
        strace attached to the lmtp process serving it."""
        dc = self.dcs[fmt]
        m = self.size['fsync_msgs']
        msgs = self.msgs.messages(0, m)
        c = harness.LmtpClient('127.0.0.1', dc.ports['lmtp'], timeout=IO_TIMEOUT)
        try:
            pid = dc.server_pid(c.sock, 'lmtp')
            with harness.SyncTrace(pid, os.path.join(dc.dir, 'strace-lmtp.txt')) as trace:
                for msg in msgs:
                    r = c.deliver('sender@example.com', ['fsync'], msg)
                    if not r.all_ok():
                        raise PhaseError('LMTP delivery failed: %r' % r)
        finally:
            c.quit()
        calls = {}
        for (syscall, _name), n in trace.calls.items():
            calls[syscall] = calls.get(syscall, 0) + n
        self.fsync_detail[fmt] = calls
        return {'fsync_per_msg': sum(calls.values()) / m}

    # -- driver --------------------------------------------------------------
    def run(self):
        n = self.size['n']
        self.fsync_detail = {}
        self.progress('mode %s: rows %s, N=%d, big=%d, stress %d clients x %ds, formats %s, '
                      'runs %d, mail_fsync=%s' % (self.mode, ','.join(self.rows), n,
                                                  self.size['big'],
                                                  self.size['stress_clients'],
                                                  self.size['stress_seconds'],
                                                  ','.join(self.formats), self.runs,
                                                  self.args.fsync))
        self.start()
        base = 'base' in self.rows
        if base and self.size['big']:
            nb = self.size['big']
            for fmt in self.formats:
                self.phase('setup-big', [], fmt, -1,
                           'LMTP delivery of %d messages (4 clients) to user big' % nb,
                           lambda: (deliver(self.dcs[fmt], 'big',
                                            [self.msgs.get(i % (2 * n)) for i in range(nb)], 4),
                                    {})[1])
        if 'import' in self.rows:
            self.phase('import-source', [], self.formats[0], -1,
                       'write a %d MB maildir (generator messages 0, 1, ...), doveadm mailbox '
                       'status of it' % self.size['import_mb'], self.import_source)
        if 'idle' in self.rows:
            self.inotify_note = self.inotify_room()
            for fmt in self.formats:
                self.phase('idle-setup', [], fmt, -1,
                           'LMTP: %d messages to each of users s0..s%d'
                           % (provider.IDLE_MSGS, self.size['idle_sessions'] - 1),
                           lambda: self.ph_idle_setup(fmt))
        for run in range(self.runs):
            order = self.order(run)
            self.progress('run %d/%d, format order %s' % (run + 1, self.runs, ','.join(order)))
            if base:
                self.run_base(run, order)
            if 'lmtp16' in self.rows:
                for fmt in order:
                    self.phase('lmtp16', ['lmtp_16u'], fmt, run,
                               'LMTP: 16 parallel connections, connection k delivers 2N/16 '
                               'messages to user l<run>u<k>',
                               lambda: self.ph_lmtp16(fmt, run))
            if 'import' in self.rows and self.import_info:
                for fmt in order:
                    self.phase('import', ['import_mbs', 'disk_import'], fmt, run,
                               'doveadm -o maildir_copy_with_hardlinks=no backup -R -u i<run> %s; '
                               'doveadm mailbox status; du; '
                               'rm -r the mail root' % self.import_loc,
                               lambda: self.ph_import(fmt, run))
            if 'idle' in self.rows:
                for fmt in order:
                    self.phase('idle', ['idle_pss_mean', 'idle_pss_max', 'idle_priv_dirty_mean',
                                        'idle_priv_dirty_max'], fmt, run,
                               'IMAP users s0..s<K-1>: LOGIN, SELECT INBOX, IDLE (K sessions '
                               'open at once); smaps_rollup of each imap process',
                               lambda: self.ph_idle(fmt, run))
        if base:
            for fmt in self.order(0):
                self.phase('fsync', ['fsync_per_msg'], fmt, 0, self.STEPS['fsync'],
                           lambda: self.ph_fsync(fmt))
        if 'growth' in self.rows:
            self.run_growth()
        self.elapsed = time.monotonic() - self.t_start
        self.stop()

    STEPS = {
        'deliver1': 'LMTP: one connection, LHLO/MAIL/RCPT/DATA x N messages to user m<run>',
        'deliver4': 'LMTP: 4 parallel connections, N messages in all to user p<run>',
        'pop3-warm': 'POP3 user m<run>: USER/PASS, STAT, UIDL, LIST, QUIT (x4), then RETR 1..N',
        'pop3-cold': 'restart Dovecot, POP3 login as "warm", drop caches, then POP3 user '
                     'm<run>: USER/PASS, STAT, UIDL, LIST, QUIT',
        'imap-read': 'IMAP user m<run>: SELECT INBOX; FETCH 1:* (FLAGS RFC822.SIZE ENVELOPE) '
                     'x2; FETCH 1:* (BODY.PEEK[]); read /proc/<imap pid>/smaps_rollup',
        'imap-write': 'same session: CREATE Copy, CREATE Moved; UID COPY 1:* Copy; SELECT '
                      'Copy; UID MOVE 1:* Moved; SELECT Moved; UID STORE 1:* +FLAGS.SILENT '
                      '(\\Deleted); EXPUNGE',
        'stress': 'K IMAP clients on user m<run> INBOX: random SELECT/UID FETCH/UID STORE/'
                  'APPEND/UID EXPUNGE for T seconds',
        'fsync': 'one LMTP connection, strace -f -y -p <lmtp pid>, M deliveries to user fsync',
    }

    def run_base(self, run, order):
        """One run of the original rows (row "base"), formats interleaved."""
        n = self.size['n']
        S = self.STEPS
        for fmt in order:
            self.phase('deliver1', ['deliver_1c', 'disk_deliver'], fmt, run, S['deliver1'],
                       lambda: self.ph_deliver1(fmt, run))
        for fmt in order:
            self.phase('deliver4', ['deliver_4c'], fmt, run, S['deliver4'],
                       lambda: self.ph_deliver4(fmt, run))
        for fmt in order:
            self.phase('pop3-warm', ['pop3_warm', 'pop3_retr'], fmt, run, S['pop3-warm'],
                       lambda: self.ph_pop3_warm(fmt, run, 'm%d' % run, n, 'pop3_warm'))
        for fmt in order:
            self.phase('pop3-cold', ['pop3_cold'], fmt, run, S['pop3-cold'],
                       lambda: self.ph_pop3_cold(fmt, run, 'm%d' % run, n, 'pop3_cold'))
        if self.size['big']:
            nb = self.size['big']
            for fmt in order:
                self.phase('pop3-big-warm', ['pop3_big_warm'], fmt, run,
                           S['pop3-warm'].replace('m<run>', 'big'),
                           lambda: self.ph_pop3_warm(fmt, run, 'big', nb, 'pop3_big_warm',
                                                     retr=False))
            for fmt in order:
                self.phase('pop3-big-cold', ['pop3_big_cold'], fmt, run,
                           S['pop3-cold'].replace('m<run>', 'big'),
                           lambda: self.ph_pop3_cold(fmt, run, 'big', nb, 'pop3_big_cold'))
            for fmt in order:
                self.phase('imap-select-big', ['imap_select_big'], fmt, run,
                           'IMAP user big: login, SELECT INBOX (x4, first not counted)',
                           lambda: {'imap_select_big': self.select_latency(fmt, 'big')})
        for fmt in order:
            self.phase('imap-read', ['imap_select', 'imap_fetch_env1', 'imap_fetch_env2',
                                     'imap_fetch_body', 'imap_pss', 'imap_priv_dirty'],
                       fmt, run, S['imap-read'], lambda: self.ph_imap_read(fmt, run))
            self.phase('imap-write', ['imap_copy', 'disk_copy', 'imap_move', 'disk_move',
                                      'imap_expunge', 'disk_expunge'],
                       fmt, run, S['imap-write'],
                       lambda: self.ph_imap_write(fmt, run) if getattr(self, '_imap', None)
                       else _raise(PhaseError('skipped: imap-read failed')))
        for fmt in order:
            self.phase('stress', ['stress'], fmt, run, S['stress'],
                       lambda: self.ph_stress(fmt, run))

    # -- output --------------------------------------------------------------
    def median(self, key, fmt):
        vals = self.results[key][fmt]
        if not vals:
            return None
        if any(v == 'error' for v in vals):
            return 'error'
        return statistics.median(vals)

    def machine(self) -> dict:
        mem = ''
        with open('/proc/meminfo') as f:
            for l in f:
                if l.startswith('MemTotal:'):
                    mem = '%.1f GiB' % (int(l.split()[1]) / 1024 / 1024)
        cpu = ''
        try:
            with open('/proc/cpuinfo') as f:
                for l in f:
                    if l.startswith('model name'):
                        cpu = l.split(':', 1)[1].strip()
                        break
        except OSError:
            pass
        fs = subprocess.run(['findmnt', '-n', '-o', 'FSTYPE,SOURCE', '-T', '/tmp'],
                            capture_output=True, text=True).stdout.strip()
        ver = subprocess.run([harness.DOVECOT, '--version'], capture_output=True,
                             text=True).stdout.strip()
        lmdbver = ''
        try:
            out = subprocess.run(['dpkg-query', '-W', '-f', '${Version}', 'liblmdb0'],
                                 capture_output=True, text=True).stdout.strip()
            lmdbver = out
        except OSError:
            pass
        return dict(nproc=os.cpu_count(), cpu=cpu, ram=mem, kernel=platform.release(),
                    tmp_fs=fs, dovecot=ver, liblmdb=lmdbver,
                    loadavg=open('/proc/loadavg').read().split()[:3])

    def lmdb_flags(self) -> str:
        if self.args.fsync == 'never':
            return ('MDB_NOTLS|MDB_NOSYNC (mail_fsync=never: no commit is '
                    'synced)')
        return ('MDB_NOTLS, without MDB_NOSYNC (mail_fsync=%s: a small mail\'s '
                'body is written with its link in one commit, larger bodies in '
                '1 MiB commits before it; commits flush their pages with '
                'MDB_NOMETASYNC, the meta page is synced before a save or copy '
                'is acknowledged; Dovecot\'s index is not fsynced for new mail; '
                'MDB_NOSYNC only with mail_fsync=never)' % self.args.fsync)

    def report(self) -> str:
        m = self.machine()
        n = self.size['n']
        out = []
        w = out.append
        w('dovecot-lmdb benchmark (%s): %s' % (self.mode, ' '.join(sys.argv[1:]) or '(defaults)'))
        w('machine: %d CPUs (%s), RAM %s, kernel %s, /tmp on %s, loadavg at end %s' % (
            m['nproc'], m['cpu'], m['ram'], m['kernel'], m['tmp_fs'], ' '.join(m['loadavg'])))
        w('Dovecot %s, liblmdb %s, dovecot-lmdb %s' % (m['dovecot'], m['liblmdb'],
                                                     getattr(self, 'build_rev', '?')))
        w('mail_fsync = %s, default_vsz_limit = %s (same for every format)'
          % (self.args.fsync, self.vsz_limit))
        w('LMDB flags: %s' % self.lmdb_flags())
        w('N = %d messages (2-50 KB, seed %d)%s; stress: %d clients x %d s; fsync count '
          'over %d deliveries; %d run(s), median shown, format order rotated per run' % (
              n, SEED, ', big mailbox %d' % self.size['big'] if self.size['big'] else '',
              self.size['stress_clients'], self.size['stress_seconds'],
              self.size['fsync_msgs'], self.runs))
        w('rows: %s' % ','.join(self.rows))
        if 'lmtp16' in self.rows:
            w('lmtp16: %d messages to each of 16 users over 16 connections'
              % max(1, 2 * n // provider.LMTP16_USERS))
        if self.import_info:
            w('import: doveadm backup -R from %s: %d messages, %.1f MB' % (
                self.import_info['location'], self.import_info['messages'],
                self.import_info['bytes'] / 1e6))
        if 'idle' in self.rows:
            w('idle: %d IMAP sessions (one per user, %d messages each) in IDLE at once; %s'
              % (self.size['idle_sessions'], provider.IDLE_MSGS,
                 getattr(self, 'inotify_note', '')))
        w('page cache dropped for cold runs: %s' % self.drop_caches_status)
        w('MB = 10^6 bytes; total time %.0f s' % getattr(self, 'elapsed', 0))
        w('')
        keys = [k for k, *_r, big in METRICS
                if provider.METRIC_ROW.get(k, 'base') in self.rows
                and (not big or self.size['big'])]
        lw = max(len(METRIC[k][1]) + len(METRIC[k][2]) + 3 for k in keys)
        cw = 12
        w('%-*s %s' % (lw, 'workload (unit)', ''.join('%*s' % (cw, f) for f in self.formats)))
        w('-' * (lw + cw * len(self.formats) + 1))
        for k in keys:
            _k, label, unit, better, _b = METRIC[k]
            w('%-*s %s' % (lw, '%s (%s)' % (label, unit),
                           ''.join('%*s' % (cw, fmtnum(self.median(k, f))) for f in self.formats)))
        stock = [f for f in self.formats if f != 'lmdb']
        if 'lmdb' in self.formats and stock:
            w('')
            w('ratio lmdb vs format, >1 means lmdb is better (higher-is-better: lmdb/format; '
              'lower-is-better: format/lmdb)')
            w('%-*s %-8s%s' % (lw, 'workload (unit)', 'better',
                               ''.join('%*s' % (cw, 'vs ' + f) for f in stock)))
            w('-' * (lw + 9 + cw * len(stock) + 1))
            for k in keys:
                _k, label, unit, better, _b = METRIC[k]
                cells = []
                a = self.median(k, 'lmdb')
                for f in stock:
                    b = self.median(k, f)
                    if a == 'error' or b == 'error':
                        cells.append('error')
                    elif a is None or b is None:
                        cells.append('-')
                    elif better == 'higher':
                        cells.append('%.2f' % (a / b) if b else '-')
                    else:
                        cells.append('%.2f' % (b / a) if a else ('inf' if b else '='))
                w('%-*s %-8s%s' % (lw, '%s (%s)' % (label, unit), better,
                                   ''.join('%*s' % (cw, c) for c in cells)))
        if 'growth' in self.rows:
            out.extend(self.growth_report())
        if self.fsync_detail:
            w('')
            w('sync calls during %d LMTP deliveries (strace -f on the lmtp process): %s' % (
                self.size['fsync_msgs'],
                '; '.join('%s %s' % (f, ', '.join('%s=%d' % kv for kv in sorted(d.items()))
                                     or 'none') for f, d in self.fsync_detail.items())))
            w('(LMDB also writes its meta page through an O_DSYNC descriptor when it syncs; '
              'strace does not count that as a sync call)')
        if self.warnings:
            w('')
            w('log warnings (not counted as errors):')
            for f, ls in self.warnings.items():
                w('- %s: %d warning(s), e.g. %s' % (f, len(ls), ls[0][:300]))
        if self.errors:
            w('')
            w('ERRORS (%d): cells marked "error"' % len(self.errors))
            for e in self.errors:
                w('- phase %s, format %s, run %d' % (e['phase'], e['format'], e['run'] + 1))
                w('  steps: %s' % e['steps'])
                if e['exception']:
                    w('  exception: %s' % e['exception'])
                for l in e['log']:
                    w('  log: %s' % l)
        return '\n'.join(out)

    def json(self) -> dict:
        return dict(mode=self.mode, argv=sys.argv[1:], size=self.size, runs=self.runs,
                    formats=self.formats, mail_fsync=self.args.fsync,
                    lmdb_flags=self.lmdb_flags(), machine=self.machine(),
                    drop_caches=self.drop_caches_status,
                    metrics={k: dict(label=l, unit=u, better=b) for k, l, u, b, _ in METRICS},
                    raw=self.results,
                    median={k: {f: self.median(k, f) for f in self.formats} for k in self.results},
                    fsync_detail=self.fsync_detail, errors=self.errors,
                    rows=self.rows, vsz_limit=self.vsz_limit,
                    inotify=getattr(self, 'inotify_note', None), import_source=self.import_info,
                    growth=self.growth, growth_notes=self.growth_notes,
                    warnings=self.warnings,
                    elapsed=getattr(self, 'elapsed', None))


def _raise(e):
    raise e


def fmtnum(v) -> str:
    if v is None:
        return '-'
    if isinstance(v, str):
        return v
    a = abs(v)
    if a >= 1000:
        return '%.0f' % v
    if a >= 100:
        return '%.1f' % v
    if a >= 10:
        return '%.2f' % v
    return '%.3f' % v


def _counts(v: str) -> list[int]:
    return sorted({int(x) for x in v.split(',') if x.strip()})


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    g = ap.add_mutually_exclusive_group()
    g.add_argument('--quick', action='store_true', help='developer run (default)')
    g.add_argument('--full', action='store_true', help='full sizes (long)')
    ap.add_argument('--formats', default=','.join(FORMATS),
                    help='comma-separated subset of %s' % ','.join(FORMATS))
    ap.add_argument('--runs', type=int, default=3, help='repetitions; median reported')
    ap.add_argument('--fsync', choices=('optimized', 'never'), default='optimized',
                    help="Dovecot's mail_fsync for every format")
    ap.add_argument('--json', metavar='FILE', help='also write all results as JSON')
    ap.add_argument('--charts', metavar='DIR', help='write PNG charts of the results (charts.py)')
    ap.add_argument('--chart-label', help='first title line of the charts')
    ap.add_argument('--messages', type=int, help='override N')
    ap.add_argument('--stress-seconds', type=int, help='override T')
    ap.add_argument('--stress-clients', type=int, help='override K')
    ap.add_argument('--rows', default=','.join(provider.ROWS),
                    help='comma-separated subset of %s (default all)' % ','.join(provider.ROWS))
    ap.add_argument('--import-mb', type=int, help='size of the maildir to import (MB)')
    ap.add_argument('--idle-sessions', type=int, help='idle IMAP sessions K')
    ap.add_argument('--growth-steps', type=_counts,
                    help='growth checkpoints for every format, e.g. 1000,10000,50000')
    ap.add_argument('--growth-lmdb-steps', type=_counts,
                    help='further checkpoints for lmdb only ("" for none)')
    ap.add_argument('--growth-clients', type=int, help='LMTP connections of growth deliveries')
    ap.add_argument('--vsz-limit', help='default_vsz_limit for every format (quick 8G, full 40G)')
    ap.add_argument('--silent', action='store_true', help='no progress lines on stderr')
    ap.add_argument('-v', '--verbose', action='store_true', help='tracebacks of failures')
    args = ap.parse_args(argv)
    args.formats = [f.strip() for f in args.formats.split(',') if f.strip()]
    for f in args.formats:
        if f not in FORMATS:
            ap.error('unknown format %r' % f)
    if args.vsz_limit:
        try:
            provider.size_bytes(args.vsz_limit)
        except ValueError:
            ap.error('--vsz-limit: a size like 8G, 512M or 0')
    args.rows = [r.strip() for r in args.rows.split(',') if r.strip()]
    for r in args.rows:
        if r not in provider.ROWS:
            ap.error('unknown row %r' % r)
    if args.runs < 1:
        ap.error('--runs must be >= 1')
    if os.geteuid() != 0:
        ap.error('run as root (Dovecot master must start as root)')
    if not shutil.which('strace'):
        ap.error('strace not found (apt-get install -y strace)')
    b = Bench(args)
    try:
        b.run()
    except KeyboardInterrupt:
        b.stop()
        print('interrupted; partial results:', file=sys.stderr)
    finally:
        b.stop()
    text = b.report()
    if b.errors:
        # keep config, logs and mail of the instances for the bug report
        harness.cleanup_all(keep=True)
        text += '\n(instance dirs kept for inspection: %s)' % ' '.join(
            sorted({e['config_dir'] for e in b.errors}))
    print(text)
    if args.json or args.charts:
        path = args.json or os.path.join(args.charts, 'result.json')
        if args.charts:
            os.makedirs(args.charts, exist_ok=True)
        with open(path, 'w') as f:
            json.dump(b.json(), f, indent=1)
        if args.charts:
            # a process of its own: it may need another python3 (charts.py)
            cmd = [sys.executable, os.path.join(HERE, 'charts.py'), path, args.charts]
            if args.chart_label:
                cmd += ['--label', args.chart_label]
            r = subprocess.run(cmd, capture_output=True, text=True)
            for p in r.stdout.split():
                print('chart: %s' % p)
            if r.returncode != 0:
                print('charts failed: %s' % r.stderr.strip()[-500:])
    return 1 if b.errors else 0


if __name__ == '__main__':
    sys.exit(main())
