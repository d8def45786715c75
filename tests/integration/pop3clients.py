"""Real POP3 clients (Debian's fetchmail and getmail6) for the integration
tests, run in leave-on-server mode against a harness.Dovecot instance.

Both refuse to deliver as root, so they run as nobody:nogroup (through
setpriv) with all their files in a private temp dir owned by that user.
Each delivered message becomes one file, so a run's result is simply the
number of new files.

    fm = Fetchmail(dc, 'testuser')
    n = fm.run()          # number of messages fetched by this run
    gm = Getmail(dc, 'testuser')
    n = gm.run()

The client state (fetchmail's .fetchids, getmail's oldmail file) is what
makes the second run fetch nothing: both remember the UIDLs they saw.
"""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import subprocess
import tempfile

RUN_AS_USER = 'nobody'
RUN_AS_GROUP = 'nogroup'


def have(binary: str) -> bool:
    return shutil.which(binary) is not None


def _ids():
    uid = pwd.getpwnam(RUN_AS_USER).pw_uid
    try:
        gid = grp.getgrnam(RUN_AS_GROUP).gr_gid
    except KeyError:
        gid = pwd.getpwnam(RUN_AS_USER).pw_gid
    return uid, gid


class _Client:
    name = 'client'

    def __init__(self, dc, user: str = 'testuser', password: str | None = None,
                 port: int | None = None):
        self.dc = dc
        self.user = user
        self.password = password if password is not None else dc._pw(user, None)
        self.port = port or dc.ports['pop3']
        self.uid, self.gid = _ids()
        # inside the instance's temp dir so it is removed with it
        self.dir = tempfile.mkdtemp(prefix='%s-%s-' % (self.name, user), dir=dc.dir)
        os.chmod(self.dir, 0o700)
        self.maildir = os.path.join(self.dir, 'Maildir')
        for sub in ('', 'cur', 'new', 'tmp'):
            os.makedirs(os.path.join(self.maildir, sub), exist_ok=True)
        self.runs: list[subprocess.CompletedProcess] = []
        self._setup()
        self._chown_all()

    def _chown_all(self):
        for root, dirs, files in os.walk(self.dir):
            os.chown(root, self.uid, self.gid)
            for f in files:
                os.chown(os.path.join(root, f), self.uid, self.gid)

    def _write(self, name: str, text: str, mode: int = 0o600) -> str:
        path = os.path.join(self.dir, name)
        with open(path, 'w') as f:
            f.write(text)
        os.chmod(path, mode)
        os.chown(path, self.uid, self.gid)
        return path

    def delivered(self) -> list[str]:
        """Files delivered so far (one per message)."""
        out = []
        for sub in ('new', 'cur'):
            d = os.path.join(self.maildir, sub)
            out += [os.path.join(d, f) for f in os.listdir(d)]
        return sorted(out)

    def messages(self) -> list[bytes]:
        out = []
        for p in self.delivered():
            with open(p, 'rb') as f:
                out.append(f.read())
        return out

    def _cmd(self) -> list[str]:
        raise NotImplementedError

    def _ok(self, r) -> bool:
        return r.returncode == 0

    def run(self, timeout: float = 120) -> int:
        """Run the client once; return how many messages it delivered."""
        before = len(self.delivered())
        env = {'PATH': '/usr/sbin:/usr/bin:/sbin:/bin', 'HOME': self.dir,
               'LANG': 'C.UTF-8', 'LC_ALL': 'C.UTF-8', 'USER': RUN_AS_USER,
               'LOGNAME': RUN_AS_USER, 'FETCHMAILHOME': self.dir, 'TZ': 'UTC'}
        cmd = ['setpriv', '--reuid=%d' % self.uid, '--regid=%d' % self.gid,
               '--clear-groups', '--'] + self._cmd()
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                           env=env, cwd=self.dir)
        self.runs.append(r)
        if not self._ok(r):
            raise AssertionError('%s failed (exit %d):\n%s\n--- stdout ---\n%s\n--- stderr ---\n%s'
                                 % (self.name, r.returncode, ' '.join(cmd), r.stdout, r.stderr))
        return len(self.delivered()) - before

    def last_output(self) -> str:
        if not self.runs:
            return ''
        r = self.runs[-1]
        return 'exit %d\n--- stdout ---\n%s\n--- stderr ---\n%s' % (r.returncode, r.stdout,
                                                                      r.stderr)


class Fetchmail(_Client):
    """fetchmail in keep mode (downloads with TOP n 99999999, never DELE),
    tracking seen messages by UIDL in its idfile."""
    name = 'fetchmail'

    def _setup(self):
        deliver = self._write('deliver.sh',
                              '#!/bin/sh\n'
                              'set -e\n'
                              'f=$(mktemp %s/tmp/m.XXXXXXXX)\n'
                              'cat > "$f"\n'
                              'mv "$f" %s/new/\n' % (self.maildir, self.maildir), 0o700)
        self.rc = self._write('fetchmailrc',
                              'set no syslog\n'
                              'set postmaster "%s"\n'
                              'poll 127.0.0.1 service %d proto pop3 uidl\n'
                              '    auth password timeout 60\n'
                              '    user "%s" there with password "%s" is "%s" here\n'
                              '    keep no fetchall no rewrite\n'
                              '    sslproto \'\'\n'
                              '    mda "%s"\n'
                              % (RUN_AS_USER, self.port, self.user, self.password,
                                 RUN_AS_USER, deliver))
        self.idfile = os.path.join(self.dir, 'fetchids')
        self.pidfile = os.path.join(self.dir, 'fetchmail.pid')

    def _cmd(self):
        return ['fetchmail', '-f', self.rc, '--idfile', self.idfile, '--pidfile', self.pidfile,
                '--nodetach', '-d0', '--nosslcertck', '-v']

    def _ok(self, r):
        # 0: mail retrieved, 1: no new mail
        return r.returncode in (0, 1)


class Getmail(_Client):
    """getmail6 with read_all = false, delete = false (UIDLs kept in its
    oldmail file)."""
    name = 'getmail'

    def _setup(self):
        self.getmaildir = os.path.join(self.dir, 'getmail')
        os.makedirs(self.getmaildir, exist_ok=True)
        self.rc = self._write('getmailrc',
                              '[retriever]\n'
                              'type = SimplePOP3Retriever\n'
                              'server = 127.0.0.1\n'
                              'port = %d\n'
                              'username = %s\n'
                              'password = %s\n'
                              'timeout = 60\n'
                              '\n'
                              '[destination]\n'
                              'type = Maildir\n'
                              'path = %s/\n'
                              '\n'
                              '[options]\n'
                              'verbose = 2\n'
                              'read_all = false\n'
                              'delete = false\n'
                              'delivered_to = false\n'
                              'received = false\n'
                              % (self.port, self.user, self.password, self.maildir))

    def _cmd(self):
        return ['getmail', '--rcfile', self.rc, '--getmaildir', self.getmaildir]
