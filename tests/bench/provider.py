"""The benchmark's rows for what providers run (see README.md): LMTP to 16
users at once, doveadm backup of a maildir into each format, the growth
curve of one user's mailbox, memory of idle IMAP sessions.

A mixin of bench.Bench: its methods use the Bench's instances, message
generator, phase() bookkeeping and the helpers of bench.py, which bench.py
hands over with init() (bench.py runs as __main__, so it can't be
imported back).  Same rules as bench.py's own workloads: every format gets
the same config and the same work, workloads return {key: value}, errors
are raised to phase(), which records them and goes on.
"""

from __future__ import annotations

import atexit
import os
import shutil
import statistics
import tempfile
import threading
import time

L = None        # the bench module, set by init()

ROWS = ('base', 'lmtp16', 'import', 'growth', 'idle')

# the generator's mean message size (2,048-51,200 bytes of body, uniform,
# plus ~350 bytes of headers): to tell in advance whether a growth step fits
MEAN_MSG = (2048 + 51200) / 2 + 350

# new keys of bench.METRICS and the row that measures them; every other
# key belongs to 'base'
METRIC_ROW = {
    'lmtp_16u': 'lmtp16',
    'import_mbs': 'import',
    'disk_import': 'import',
    'idle_pss_mean': 'idle',
    'idle_pss_max': 'idle',
    'idle_priv_dirty_mean': 'idle',
    'idle_priv_dirty_max': 'idle',
}

LMTP16_USERS = 16
IDLE_MSGS = 10          # messages in each idle session's INBOX
RCPT_BATCH = 50         # recipients per LMTP transaction when seeding


def init(lib):
    global L
    L = lib


def size_bytes(v: str) -> int:
    """'8G' -> bytes (Dovecot's size units, 0 = unlimited)."""
    v = v.strip().upper()
    mult = {'K': 1 << 10, 'M': 1 << 20, 'G': 1 << 30, 'T': 1 << 40}
    if v and v[-1] in mult:
        return int(float(v[:-1]) * mult[v[-1]])
    return int(v)


def deliver_range(dc, user: str, msgs, lo: int, hi: int, clients: int) -> float:
    """Deliver messages lo..hi-1 of msgs (generated as they are sent, not
    kept) to user over `clients` parallel LMTP connections, each one
    session with many transactions; returns the elapsed seconds."""
    errors = []

    def worker(k):
        try:
            c = L.harness.LmtpClient('127.0.0.1', dc.ports['lmtp'], timeout=L.IO_TIMEOUT)
            try:
                for i in range(lo + k, hi, clients):
                    r = c.deliver('sender@example.com', [user], msgs.get(i, cache=False))
                    if not r.all_ok():
                        raise L.PhaseError('LMTP delivery of message %d failed: %r' % (i, r))
            finally:
                c.quit()
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    ths = [threading.Thread(target=worker, args=(k,)) for k in range(clients)]
    t0 = time.perf_counter()
    for t in ths:
        t.start()
    for t in ths:
        t.join()
    dt = time.perf_counter() - t0
    if errors:
        raise errors[0]
    return dt


def session_pids(dc, socks) -> dict:
    """{index in socks: pid of the imap process holding its server side},
    from one pass over /proc/net/tcp and the imap processes' fds
    (harness's server_pid() per socket would scan every process K times)."""
    want = {}
    by_port = {s.getsockname()[1]: k for k, s in enumerate(socks)}
    sport = dc.ports['imap']
    with open('/proc/net/tcp') as f:
        next(f)
        for row in f:
            c = row.split()
            lp = int(c[1].split(':')[1], 16)
            rp = int(c[2].split(':')[1], 16)
            if lp == sport and rp in by_port:
                want['socket:[%s]' % c[9]] = by_port[rp]
    out = {}
    for pid in dc._service_pids('imap'):
        try:
            fds = os.listdir('/proc/%d/fd' % pid)
        except OSError:
            continue
        for fd in fds:
            try:
                k = want.get(os.readlink('/proc/%d/fd/%s' % (pid, fd)))
            except OSError:
                continue
            if k is not None:
                out[k] = pid
    return out


class ProviderRows:
    """Workloads of the rows lmtp16, import, growth and idle."""

    # -- config and users -------------------------------------------------
    def provider_config(self) -> list[str]:
        """Settings the idle row needs, written for every format (only
        limits: they change nothing for the other rows).  imap runs one
        process per session (client_limit 1): process_limit must cover K
        sessions besides the other rows' leftovers; every imap process
        keeps a stats-writer connection, so the stats service's
        client_limit (default_client_limit) must too."""
        k = self.size['idle_sessions'] if 'idle' in self.rows else 0
        return [
            'default_client_limit = %d' % max(1000, 2 * k + 200),
            'service imap {',
            '  process_limit = %d' % max(1024, k + 200),
            '}',
        ]

    def provider_users(self) -> list[str]:
        us = []
        for r in range(self.runs):
            if 'lmtp16' in self.rows:
                us += self.lmtp16_users(r)
            if 'import' in self.rows:
                us.append('i%d' % r)
        if 'idle' in self.rows:
            us += self.idle_users()
        if 'growth' in self.rows:
            us.append('g')
        return us

    def lmtp16_users(self, run: int) -> list[str]:
        return ['l%du%d' % (run, k) for k in range(LMTP16_USERS)]

    def idle_users(self) -> list[str]:
        return ['s%d' % k for k in range(self.size['idle_sessions'])]

    # -- lmtp16 -----------------------------------------------------------
    def ph_lmtp16(self, fmt, run):
        """16 LMTP connections in parallel, connection k delivering its
        share of 2N messages to its own user l<run>u<k>: msg/s over all."""
        dc = self.dcs[fmt]
        users = self.lmtp16_users(run)
        per = max(1, 2 * self.size['n'] // LMTP16_USERS)
        errors = []

        def worker(k):
            try:
                c = L.harness.LmtpClient('127.0.0.1', dc.ports['lmtp'], timeout=L.IO_TIMEOUT)
                try:
                    for i in range(k * per, (k + 1) * per):
                        r = c.deliver('sender@example.com', [users[k]], self.msgs.get(i))
                        if not r.all_ok():
                            raise L.PhaseError('LMTP delivery to %s failed: %r' % (users[k], r))
                finally:
                    c.quit()
            except Exception as e:  # noqa: BLE001
                errors.append(e)

        ths = [threading.Thread(target=worker, args=(k,)) for k in range(LMTP16_USERS)]
        t0 = time.perf_counter()
        for t in ths:
            t.start()
        for t in ths:
            t.join()
        dt = time.perf_counter() - t0
        if errors:
            raise errors[0]
        return {'lmtp_16u': LMTP16_USERS * per / dt}

    # -- import -----------------------------------------------------------
    def import_source(self):
        """Write the source maildir once: messages 0, 1, ... of the
        generator (LF line ends, as Dovecot stores mail in maildir; every
        third one unseen) until import_mb MB; owned by the mail uid, 0700.
        Then one unmeasured doveadm run writes its dovecot-uidlist, so that
        no measured run changes the source."""
        dc = self.dcs[self.formats[0]]
        target = self.size['import_mb'] * 1e6
        top = tempfile.mkdtemp(prefix='dlmdb-bench-import-', dir='/tmp')
        if os.environ.get('DLMDB_KEEP_TMP') != '1':
            atexit.register(shutil.rmtree, top, True)
        md = os.path.join(top, 'Maildir')
        for sub in ('cur', 'new', 'tmp'):
            os.makedirs(os.path.join(md, sub))
        total = i = 0
        while total < target:
            crlf = self.msgs.get(i, cache=False)
            m = crlf.replace(b'\r\n', b'\n')
            name = '%d.M%dP1.bench,S=%d,W=%d:2,%s' % (1700000000 + i, i, len(m), len(crlf),
                                                      '' if i % 3 == 0 else 'S')
            with open(os.path.join(md, 'cur', name), 'wb') as f:
                f.write(m)
            total += len(m)
            i += 1
        for d, dirs, files in os.walk(top):
            os.chown(d, dc.uid, dc.gid)
            os.chmod(d, 0o700)
            for fn in files:
                p = os.path.join(d, fn)
                os.chown(p, dc.uid, dc.gid)
                os.chmod(p, 0o600)
        # the index in memory: every run reads the source the same way
        # and none writes index files into it
        self.import_loc = 'maildir:%s:INDEX=MEMORY' % md
        self.import_info = dict(path=md, messages=i, bytes=total, location=self.import_loc)
        r = dc.run_wrapped(dc.doveadm_cmd('mailbox', 'status', '-u', 'warm', 'messages',
                                          'INBOX', opts=('-o', 'mail_location=' +
                                                         self.import_loc)),
                           timeout=L.IO_TIMEOUT)
        if r.returncode != 0 or 'messages=%d' % i not in r.stdout:
            raise L.PhaseError('source maildir: doveadm mailbox status: exit %d, %s %s'
                               % (r.returncode, r.stdout.strip()[:200], r.stderr.strip()[:300]))
        return {'messages': i, 'MB': total / 1e6}

    def ph_import(self, fmt, run):
        """doveadm -o maildir_copy_with_hardlinks=no backup -R -u i<run>
        <source>: the user's (empty) mail becomes a copy of the source
        maildir (UIDs, flags, GUIDs kept).
        MB/s = the source's file bytes / wall time of the doveadm process.
        The user's mail is removed afterwards (a 1 GB copy per format and
        run would add up)."""
        dc = self.dcs[fmt]
        user = 'i%d' % run
        info = self.import_info
        # in-process dsync copies each mail with mailbox_copy(): maildir
        # into maildir on one filesystem would hard-link the source files
        # (no data written); a migration reads the mail from elsewhere
        cmd = dc.doveadm_cmd('backup', '-R', '-u', user, self.import_loc,
                             opts=('-o', 'maildir_copy_with_hardlinks=no'))
        t0 = time.perf_counter()
        r = dc.run_wrapped(cmd, timeout=L.IO_TIMEOUT)
        dt = time.perf_counter() - t0
        if r.returncode != 0:
            raise L.PhaseError('doveadm backup: exit %d: %s' % (r.returncode,
                                                                r.stderr.strip()[-500:]))
        st = dc.doveadm('mailbox', 'status', 'messages', 'INBOX', user=user, check=False)
        if 'messages=%d' % info['messages'] not in st.stdout:
            raise L.PhaseError('after backup: %s %s (expected messages=%d)'
                               % (st.stdout.strip(), st.stderr.strip()[:300], info['messages']))
        disk = L.du_bytes(dc.mail_dir(user)) / info['messages']
        shutil.rmtree(dc.mail_dir(user), ignore_errors=True)
        return {'import_mbs': info['bytes'] / dt / 1e6, 'disk_import': disk}

    # -- idle -------------------------------------------------------------
    def inotify_room(self) -> str:
        """Every mail process runs as the one test uid, and each IDLE
        session takes an inotify instance: with the kernel's default
        max_user_instances (128) the sessions past it log a warning and
        poll instead, which is not what is measured.  Raised for the run
        (restored at exit), as a server with one mail uid must do."""
        path = '/proc/sys/fs/inotify/max_user_instances'
        need = self.size['idle_sessions'] + 128
        try:
            with open(path) as f:
                cur = int(f.read())
            if cur >= need:
                return 'fs.inotify.max_user_instances = %d (enough)' % cur
            with open(path, 'w') as f:
                f.write('%d\n' % need)
        except (OSError, ValueError) as e:
            return 'fs.inotify.max_user_instances not raised (%s)' % e

        def restore():
            with open(path, 'w') as f:
                f.write('%d\n' % cur)
        atexit.register(restore)
        return 'fs.inotify.max_user_instances raised from %d to %d for the run' % (cur, need)

    def ph_idle_setup(self, fmt):
        """IDLE_MSGS messages in every idle user's INBOX (one LMTP
        transaction to up to RCPT_BATCH users at once)."""
        dc = self.dcs[fmt]
        users = self.idle_users()
        c = L.harness.LmtpClient('127.0.0.1', dc.ports['lmtp'], timeout=L.IO_TIMEOUT)
        try:
            for i in range(IDLE_MSGS):
                for b in range(0, len(users), RCPT_BATCH):
                    r = c.deliver('sender@example.com', users[b:b + RCPT_BATCH],
                                  self.msgs.get(i))
                    if not r.all_ok():
                        raise L.PhaseError('LMTP delivery failed: %r' % r)
        finally:
            c.quit()
        return {}

    def ph_idle(self, fmt, run):
        """K sessions, one per user s<k>: LOGIN, SELECT INBOX, IDLE; when
        all are idling (and 1 s more), /proc/<pid>/smaps_rollup of each
        session's imap process: Private_Dirty and Pss, mean and max."""
        dc = self.dcs[fmt]
        users = self.idle_users()
        conns = []
        try:
            for u in users:
                c = L.Imap(dc.ports['imap'], u)
                conns.append(c)
                c.ok('SELECT INBOX', keep=False)
                c.sock.sendall(b'i IDLE\r\n')
                line = c.f.readline()
                if not line.startswith(b'+'):
                    raise L.PhaseError('IDLE of %s: %r' % (u, line))
            time.sleep(1)
            pids = session_pids(dc, [c.sock for c in conns])
            if len(pids) != len(conns) or len(set(pids.values())) != len(conns):
                raise L.PhaseError('found %d imap processes (%d distinct) for %d sessions'
                                   % (len(pids), len(set(pids.values())), len(conns)))
            pss, dirty = [], []
            for pid in pids.values():
                sm = L.smaps_rollup(pid)
                pss.append(sm.get('Pss', 0))
                dirty.append(sm.get('Private_Dirty', 0))
        finally:
            for c in conns:
                try:
                    c.sock.sendall(b'DONE\r\n')
                except OSError:
                    pass
                c.close()
        return {'idle_pss_mean': statistics.mean(pss), 'idle_pss_max': max(pss),
                'idle_priv_dirty_mean': statistics.mean(dirty),
                'idle_priv_dirty_max': max(dirty)}

    # -- growth -----------------------------------------------------------
    def growth_room(self, fmt: str, have: int, target: int) -> str | None:
        """Why the step have -> target does not fit (disk, or for lmdb the
        map: vsz_limit and lmdb_map_size_max), or None."""
        need = (target - have) * MEAN_MSG * 1.15
        st = os.statvfs(self.dcs[fmt].dir)
        free = st.f_bavail * st.f_frsize
        if need > free - 2e9:
            return ('stopped before %d messages: needs ~%.1f GB more disk, %.1f GB free'
                    % (target, need / 1e9, free / 1e9))
        if fmt == 'lmdb':
            vsz = size_bytes(self.vsz_limit)
            room = min(vsz - (256 << 20) if vsz else 1 << 62, 32 << 30)
            if target * MEAN_MSG * 1.1 > room:
                return ('stopped before %d messages: the map (~%.1f GB) would not fit '
                        'default_vsz_limit %s minus 256M / lmdb_map_size_max 32G'
                        % (target, target * MEAN_MSG * 1.1 / 1e9, self.vsz_limit))
        return None

    def ph_growth_step(self, fmt: str, have: int, target: int):
        """Deliver messages have..target-1 to user g (growth_clients LMTP
        connections, each one session of many transactions), then measure
        at target messages: SELECT INBOX (median of 3 after a warm-up),
        POP3 listing (warm: median of 3 after one unmeasured session), disk
        per message."""
        dc = self.dcs[fmt]
        dt = deliver_range(dc, 'g', self.msgs, have, target, self.size['growth_clients'])
        sel = self.select_latency(fmt, 'g')
        L.pop3_listing(dc, 'g', target)
        pop = statistics.median(L.pop3_listing(dc, 'g', target) for _ in range(3)) * 1000
        disk = L.du_bytes(dc.mail_dir('g')) / target
        point = dict(messages=target, step=target - have, step_s=dt,
                     deliver_rate=(target - have) / dt, select_ms=sel, pop3_ms=pop,
                     disk_per_msg=disk)
        self.growth[fmt].append(point)
        return {'msgs': target, 'deliver': point['deliver_rate'], 'select_ms': sel,
                'pop3_ms': pop, 'B/msg': disk}

    def run_growth(self):
        """Checkpoints in increasing order; at each one every format that
        goes that far (growth_lmdb: lmdb only) takes its step, formats
        interleaved and the order rotated per checkpoint.  A format whose
        step failed or would not fit stops there (noted)."""
        self.growth = {f: [] for f in self.formats}
        common = list(self.size['growth_all'])
        extra = [c for c in self.size['growth_lmdb'] if c not in common]
        have = {f: 0 for f in self.formats}
        stopped = {}
        for ci, cp in enumerate(sorted(set(common + extra))):
            for fmt in self.order(ci):
                if fmt in stopped or (cp not in common and fmt != 'lmdb') or cp <= have[fmt]:
                    continue
                why = self.growth_room(fmt, have[fmt], cp)
                if why:
                    stopped[fmt] = why
                    self.growth_notes.append('%s: %s' % (fmt, why))
                    self.progress('growth %s %s' % (fmt, why))
                    continue
                nerr = len(self.errors)
                lo = have[fmt]
                self.phase('growth', [], fmt, 0,
                           'LMTP, %d connections: messages %d..%d to user g; SELECT INBOX '
                           'x4; POP3 USER/PASS STAT UIDL LIST QUIT x4; du of the mail root'
                           % (self.size['growth_clients'], lo, cp - 1),
                           lambda: self.ph_growth_step(fmt, lo, cp))
                if len(self.errors) > nerr:
                    if self.growth[fmt] and self.growth[fmt][-1]['messages'] == cp:
                        self.growth[fmt][-1]['error'] = True
                    stopped[fmt] = 'stopped at %d messages: error' % cp
                    self.growth_notes.append('%s: %s' % (fmt, stopped[fmt]))
                else:
                    have[fmt] = cp

    def growth_report(self) -> list[str]:
        out = ['', 'growth curve, user g (deliver = msg/s of the step that ended at that '
               'count, %d LMTP connections; SELECT and POP3 listing warm, ms; disk B/msg)'
               % self.size['growth_clients']]
        out.append('%-8s %10s %10s %10s %10s %10s' % ('format', 'messages', 'deliver',
                                                     'SELECT', 'POP3', 'disk'))
        for fmt in self.formats:
            for p in self.growth.get(fmt, []):
                out.append('%-8s %10d %10s %10s %10s %10s%s' % (
                    fmt, p['messages'], L.fmtnum(p['deliver_rate']), L.fmtnum(p['select_ms']),
                    L.fmtnum(p['pop3_ms']), L.fmtnum(p['disk_per_msg']),
                    '  (error)' if p.get('error') else ''))
        for n in self.growth_notes:
            out.append('note: ' + n)
        return out
