"""scripts/demo, run as a new user would run it: start it, read the demo
mail over POP3 (plain + STLS, implicit TLS) and IMAP (implicit TLS), check
status / a second start, stop it.

The demo gets a fresh DLMDB_DEMO_DIR and free ports, so it never collides
with a demo somebody is running on the default ports.  The build is done
before the tests run (scripts/run-tests builds first), so the demo is told
not to build (DLMDB_DEMO_NO_BUILD=1).
"""

import imaplib
import os
import poplib
import shutil
import signal
import subprocess
import tempfile
import time

import harness

DEMO = os.path.join(harness.REPO_ROOT, 'scripts', 'demo')

# what scripts/demo delivers (keep in sync with deliver_demo_mail there)
DEMO_COUNT = 5
FIRST_SUBJECT = b'Subject: Welcome to the dovecot-lmdb demo'


def _ports():
    ports = {}
    while len(ports) < 5:
        p = harness.free_port()
        if p not in ports.values():
            ports['IMAP IMAPS POP3 POP3S LMTP'.split()[len(ports)]] = p
    return ports


TRANSCRIPT = []  # printed only if the test fails


def _run(args, env, timeout=300):
    r = subprocess.run([DEMO] + args, env=env, stdin=subprocess.DEVNULL,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       timeout=timeout, cwd=harness.REPO_ROOT)
    out = r.stdout.decode('utf-8', 'replace')
    TRANSCRIPT.append('$ scripts/demo %s  (exit %d)\n%s' % (' '.join(args), r.returncode,
                                                            out.rstrip()))
    return r.returncode, out


def _alive(pid):
    try:
        with open('/proc/%d/stat' % pid) as f:
            return f.read().rsplit(')', 1)[1].split()[0] != 'Z'
    except OSError:
        return False


def _session_members(sid):
    out = []
    for d in os.listdir('/proc'):
        if not d.isdigit():
            continue
        try:
            with open('/proc/%s/stat' % d) as f:
                fields = f.read().rsplit(')', 1)[1].split()
        except OSError:
            continue
        if fields[0] != 'Z' and int(fields[3]) == sid:
            out.append(int(d))
    return out


def _log_tail(path, n=60):
    try:
        with open(path, 'rb') as f:
            return b'\n'.join(f.read().splitlines()[-n:]).decode('utf-8', 'replace')
    except OSError as e:
        return str(e)


def test_demo_start_read_stop():
    if os.geteuid() != 0:
        raise harness.Skip('scripts/demo must run as root')
    if harness.SANITIZE:
        # the demo writes its own config, without the ASan runtime that
        # an instrumented module needs in every process
        raise harness.Skip('DLMDB_SANITIZE=1: scripts/demo runs Dovecot uninstrumented')
    for m in (harness.LMDB_MODULE, 'plugin/.libs/lib20_pop3_policy_plugin.so'):
        if not os.path.exists(os.path.join(harness.build_dir(), m)):
            raise harness.ModuleMissing('%s not built (run scripts/run-tests or make first)' % m)

    tmp = tempfile.mkdtemp(prefix='dlmdb-demo-test-', dir='/tmp')
    os.chmod(tmp, 0o755)  # the mail user (nobody) must reach the homes below it
    demo_dir = os.path.join(tmp, 'demo')
    ports = _ports()
    env = dict(os.environ)
    env.update({
        'DLMDB_DEMO_DIR': demo_dir,
        'DLMDB_DEMO_NO_BUILD': '1',
        'DLMDB_BUILD_DIR': harness.build_dir(),
    })
    for k, p in ports.items():
        env['DLMDB_DEMO_%s_PORT' % k] = str(p)
    pidfile = os.path.join(demo_dir, 'run', 'master.pid')
    ctx = harness.client_ssl_context()
    pid = None
    ok = False
    del TRANSCRIPT[:]
    try:
        rc, out = _run([], env)
        assert rc == 0, 'scripts/demo failed (exit %d)' % rc
        with open(pidfile) as f:
            pid = int(f.read().strip())
        assert _alive(pid), 'master %d from %s is not running' % (pid, pidfile)
        # what a new user is told
        for k, p in ports.items():
            assert '127.0.0.1:%d' % p in out, (k, p)
        assert 'password: demo' in out
        assert 'scripts/demo stop' in out
        assert out.count(' -> 250 ') == DEMO_COUNT, 'expected %d LMTP 250 replies' % DEMO_COUNT

        # POP3, plain port + STLS
        p = poplib.POP3('127.0.0.1', ports['POP3'], timeout=60)
        try:
            assert 'STLS' in p.capa()
            p.stls(context=ctx)
            p.user('demo')
            p.pass_('demo')
            count, _size = p.stat()
            assert count == DEMO_COUNT, (count, DEMO_COUNT)
            status, body = harness.pop3_multiline(p, 'RETR 1')
            assert status.startswith(b'+OK'), status
            hdr = body.split(b'\r\n\r\n', 1)[0].split(b'\r\n')
            assert FIRST_SUBJECT in hdr, body[:800]
        finally:
            p.quit()

        # POP3 over implicit TLS
        p = poplib.POP3_SSL('127.0.0.1', ports['POP3S'], context=ctx, timeout=60)
        try:
            p.user('demo')
            p.pass_('demo')
            assert p.stat()[0] == DEMO_COUNT
            _resp, lines, _octets = p.retr(1)
            assert FIRST_SUBJECT in lines, lines[:20]
            resp, uidls, _ = p.uidl()
            assert len(uidls) == DEMO_COUNT, uidls
        finally:
            p.quit()

        # IMAP over implicit TLS
        imap = imaplib.IMAP4_SSL('127.0.0.1', ports['IMAPS'], ssl_context=ctx, timeout=60)
        try:
            imap.login('demo', 'demo')
            typ, data = imap.select('INBOX', readonly=True)
            assert typ == 'OK' and int(data[0]) == DEMO_COUNT, (typ, data)
            typ, data = imap.fetch('1', '(BODY.PEEK[HEADER.FIELDS (SUBJECT)])')
            assert typ == 'OK' and FIRST_SUBJECT in data[0][1], data
            imap.close()
        finally:
            imap.logout()

        # status, and a second start: says so, same master, no new mail
        rc, out = _run(['status'], env)
        assert rc == 0 and 'is running (master pid %d' % pid in out, (rc, out)
        rc, out = _run([], env)
        assert rc == 0 and 'already running' in out, (rc, out)
        with open(pidfile) as f:
            assert int(f.read().strip()) == pid
        p = poplib.POP3_SSL('127.0.0.1', ports['POP3S'], context=ctx, timeout=60)
        try:
            p.user('demo')
            p.pass_('demo')
            assert p.stat()[0] == DEMO_COUNT
        finally:
            p.quit()

        # stop
        rc, out = _run(['stop'], env)
        assert rc == 0, (rc, out)
        assert not _alive(pid), 'master %d still alive after scripts/demo stop' % pid
        left = _session_members(pid)
        assert not left, 'processes of the demo left after stop: %r' % left
        rc, out = _run(['status'], env)
        assert rc == 3 and 'not running' in out, (rc, out)

        # the log has no errors (the master's own SIGTERM warning is expected)
        errs = [l for l in _log_tail(os.path.join(demo_dir, 'dovecot.log'), 100000).splitlines()
                if any(' %s: ' % lvl in l for lvl in ('Error', 'Panic', 'Fatal', 'Warning'))
                and 'Killed with signal 15' not in l]
        assert not errs, 'demo log has errors:\n' + '\n'.join(errs[:30])
        ok = True
    finally:
        if not ok:
            print('\n'.join(TRANSCRIPT))
            print('--- demo log (%s), last 60 lines ---\n%s'
                  % (demo_dir, _log_tail(os.path.join(demo_dir, 'dovecot.log'))))
        try:
            if pid is not None and _alive(pid):
                _run(['stop'], env, timeout=60)
        finally:
            if pid is not None:
                # belt and braces: nothing of this demo may survive the test
                for _ in range(40):
                    if not _alive(pid) and not _session_members(pid):
                        break
                    time.sleep(0.05)
                victims = _session_members(pid)  # includes the master if alive
                for victim in victims:
                    try:
                        os.kill(victim, signal.SIGKILL)
                    except (ProcessLookupError, PermissionError):
                        pass
            if os.environ.get('DLMDB_KEEP_TMP') != '1':
                shutil.rmtree(tmp, ignore_errors=True)
