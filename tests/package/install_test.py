#!/usr/bin/python3
"""Install, enable, use, upgrade, remove and purge the dovecot-lmdb package.

    python3 tests/package/install_test.py DEB [SRC]

SRC: the unpacked source package DEB was built from; with it (and
autopkgtest installed) the package's autopkgtest runs through autopkgtest's
null runner right after the install, else debian/tests/smoke is run itself.

Runs as root inside a throwaway chroot (tests/package/run makes one per
suite): it changes the system's package state and /etc/dovecot.  Every
check prints "PASS name" or "FAIL name: why"; the last line is
"N passed, N failed".  The steps:

  1. before: the system's Dovecot config starts (a private instance of it:
     own directories and ports), /etc/dovecot is recorded
  2. install with apt (the dependencies must be met), every file of
     dpkg -L is there, the snippet is a conffile and changes nothing
     (doveconf -n is the same)
     the autopkgtest (debian/tests/control: smoke, self-contained config)
     passes against the installed package
  3. enable the snippet as the README says, doveconf sees lmdb (also in
     protocol lmtp), and debian/tests/smoke --system-config uses it:
     LMTP, IMAP, POP3, doveadm lmdb stats/verify, doveadm pop3-policy
  4. upgrade to a newer version (the same files repacked): dpkg keeps the
     admin's snippet without asking, and it still works
  5. remove: the files are gone, the changed conffile stays
  6. purge: nothing of the package is left, /etc/dovecot is as it was
     before the install, and Dovecot still starts
"""

import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
SMOKE = os.path.join(HERE, '..', '..', 'debian', 'tests', 'smoke')
PKG = 'dovecot-lmdb'
SNIPPET = '/etc/dovecot/conf.d/11-lmdb.conf'
RESULTS = []


def check(name, ok, why=''):
    RESULTS.append(bool(ok))
    print(('PASS %s' % name) if ok else ('FAIL %s: %s' % (name, why)), flush=True)
    return bool(ok)


def run(*cmd, **kw):
    kw.setdefault('stdin', subprocess.DEVNULL)
    return subprocess.run(list(cmd), capture_output=True, text=True, **kw)


def out(r):
    return 'exit %d\n%s%s' % (r.returncode, r.stdout[-3000:], r.stderr[-3000:])


def etc_snapshot():
    """{path: sha256 or 'dir' or 'link:target'} of /etc/dovecot."""
    snap = {}
    for root, dirs, files in os.walk('/etc/dovecot'):
        snap[root] = 'dir'
        for n in files:
            p = os.path.join(root, n)
            if os.path.islink(p):
                snap[p] = 'link:' + os.readlink(p)
            else:
                with open(p, 'rb') as f:
                    snap[p] = hashlib.sha256(f.read()).hexdigest()
    return snap


def doveconf_n(*extra):
    r = run('doveconf', '-n', *extra)
    # the first line names the Dovecot version and the config file: keep it
    return r.returncode, r.stdout


def smoke(label, *args):
    """debian/tests/smoke, its PASS/FAIL lines prefixed with label."""
    r = run(sys.executable, SMOKE, *args)
    ok = r.returncode == 0
    for line in r.stdout.splitlines():
        if line.startswith(('PASS ', 'FAIL ')):
            print('  %s: %s' % (label, line), flush=True)
    return check(label, ok, '' if ok else out(r))


def dovecot_series():
    r = run('dovecot', '--version')
    m = re.match(r'(\d+)\.(\d+)', r.stdout)
    return (int(m.group(1)), int(m.group(2)))


def enable_snippet(text, series):
    """Uncomment what README's "Installing the Debian package" says to
    uncomment: the storage and pop3_policy (not the login delay)."""
    out_lines = []
    in_block = False
    for line in text.splitlines():
        s = line
        if series < (2, 4):
            if line in ('#mail_plugins = $mail_plugins storage_lmdb',
                        '#mail_location = lmdb:~/lmdb',
                        '#mail_plugins = $mail_plugins pop3_policy'):
                s = line[1:]
        else:
            if line == '#mail_plugins {':
                in_block = True
            if in_block or line in ('#mail_driver = lmdb', '#mail_path = ~/lmdb',
                                    '#mail_inbox_path ='):
                s = line[1:]
            if in_block and line == '#}':
                in_block = False
        out_lines.append(s)
    return '\n'.join(out_lines) + '\n'


def owned_by_other_package(path):
    r = run('dpkg-query', '-S', path)
    if r.returncode != 0:
        return False
    owners = set()
    for line in r.stdout.splitlines():
        pkgs, _, p = line.partition(': ')
        if p == path:
            owners.update(x.strip() for x in pkgs.split(','))
    return bool(owners - {PKG})


def main():
    if len(sys.argv) not in (2, 3) or os.geteuid() != 0:
        print(__doc__, file=sys.stderr)
        return 2
    deb = os.path.abspath(sys.argv[1])
    src = os.path.abspath(sys.argv[2]) if len(sys.argv) == 3 else None
    series = dovecot_series()
    tmp = tempfile.mkdtemp(prefix='dlmdb-install-test-')
    try:
        steps(deb, src, series, tmp)
    except Exception as e:  # a crash of the test itself is a failure, not a silent stop
        import traceback
        check('install test ran to the end', False, '%s\n%s' % (e, traceback.format_exc()))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    passed = sum(RESULTS)
    print('%d passed, %d failed' % (passed, len(RESULTS) - passed), flush=True)
    return 0 if all(RESULTS) else 1


def autopkgtest(src, tmp):
    """The package's autopkgtest as a distribution runs it: autopkgtest's
    null runner on this system, the installed package (no rebuild)."""
    if src is None or shutil.which('autopkgtest') is None:
        return smoke('autopkgtest smoke (run directly: no autopkgtest or no source)')
    outdir = os.path.join(tmp, 'autopkgtest')
    r = run('autopkgtest', '--no-built-binaries', '--output-dir', outdir, src + '/',
            '--', 'null')
    summary = ''
    try:
        with open(os.path.join(outdir, 'summary')) as f:
            summary = f.read()
    except OSError:
        pass
    # "smoke PASS"; exit 0 = all passed (2 = some skipped, 4 = failed)
    ok = r.returncode == 0 and re.search(r'(?m)^smoke\s+PASS\b', summary)
    return check('autopkgtest --no-built-binaries SRC -- null: smoke PASS', ok,
                 summary + out(r))


def steps(deb, src, series, tmp):
    # 1. before
    if not check('package not installed before the test',
                 run('dpkg-query', '-W', '-f=${Status}', PKG).stdout.find('installed') < 0,
                 'dovecot-lmdb is already installed in this chroot'):
        return
    etc_before = etc_snapshot()
    rc, conf_before = doveconf_n()
    check('system config parses before the install', rc == 0, conf_before)
    smoke('system Dovecot starts before the install', '--system-config', '--start-only')

    # 2. install
    r = run('apt-get', 'install', '-y', '--no-install-recommends', deb,
            env=dict(os.environ, DEBIAN_FRONTEND='noninteractive'))
    if not check('apt-get install ./%s' % os.path.basename(deb), r.returncode == 0, out(r)):
        return
    files = run('dpkg-query', '-L', PKG).stdout.split('\n')
    # dpkg -L starts with "/." (the root, every package's): not ours to remove
    files = [f for f in files if f.startswith('/') and f != '/.']
    missing = [f for f in files if not os.path.lexists(f)]
    check('every file of dpkg -L is installed (%d paths)' % len(files), not missing, missing)
    expect = ['/usr/lib/dovecot/modules/lib10_storage_lmdb_plugin.so',
              '/usr/lib/dovecot/modules/lib20_pop3_policy_plugin.so',
              '/usr/lib/dovecot/modules/lib20_pop3_policy_login_delay_plugin.so',
              '/usr/lib/dovecot/modules/doveadm/lib10_doveadm_storage_lmdb_plugin.so',
              '/usr/lib/dovecot/modules/doveadm/lib20_doveadm_pop3_policy_plugin.so',
              '/usr/share/man/man1/doveadm-lmdb.1.gz',
              '/usr/share/man/man1/doveadm-pop3-policy.1.gz', SNIPPET]
    if series >= (2, 4):
        # 2.4's config process loads settings modules only from here
        settings = [f for f in files if f.startswith('/usr/lib/dovecot/modules/settings/')
                    and f.endswith('_settings.so')]
        check('2.4: settings modules of the storage and the policy plugin',
              any('lmdb' in f for f in settings) and any('pop3_policy' in f for f in settings),
              settings)
    check('the modules, doveadm plugins, man pages and snippet are in the package',
          all(e in files for e in expect), [e for e in expect if e not in files])
    conffiles = run('dpkg-query', '-W', '-f=${Conffiles}', PKG).stdout
    check('%s is a conffile' % SNIPPET, SNIPPET in conffiles, conffiles)
    with open(SNIPPET) as f:
        pristine = f.read()
    active = [l for l in pristine.splitlines() if l.strip() and not l.lstrip().startswith('#')]
    check('the snippet is all comments', not active, active)
    rc, conf_installed = doveconf_n()
    check('installing changes nothing (doveconf -n is the same)',
          rc == 0 and conf_installed == conf_before, conf_installed)
    autopkgtest(src, tmp)

    # 3. enable and use
    enabled = enable_snippet(pristine, series)
    with open(SNIPPET, 'w') as f:
        f.write(enabled)
    rc, conf_enabled = doveconf_n()
    if series < (2, 4):
        want = ['mail_location = lmdb:~/lmdb']
        plugins = run('doveconf', '-h', 'mail_plugins').stdout.split()
        lmtp_plugins = run('doveconf', '-f', 'protocol=lmtp', '-h', 'mail_plugins').stdout.split()
    else:
        want = ['mail_driver = lmdb']
        plugins = lmtp_plugins = conf_enabled
    check('enabled snippet: doveconf sees lmdb', rc == 0 and all(w in conf_enabled for w in want),
          conf_enabled)
    check('enabled snippet: storage_lmdb and pop3_policy in mail_plugins (also for lmtp)',
          all(p in plugins and p in lmtp_plugins for p in ('storage_lmdb', 'pop3_policy')),
          (plugins, lmtp_plugins))
    smoke('system config with the snippet: LMTP, IMAP, POP3, doveadm', '--system-config')

    # 4. upgrade: the same files under a higher version
    up = os.path.join(tmp, 'up')
    r = run('dpkg-deb', '-R', deb, up)
    version = run('dpkg-query', '-W', '-f=${Version}', PKG).stdout
    new_version = version + '+upgradetest1'
    with open(os.path.join(up, 'DEBIAN', 'control')) as f:
        control = f.read()
    with open(os.path.join(up, 'DEBIAN', 'control'), 'w') as f:
        f.write(re.sub(r'(?m)^Version: .*$', 'Version: ' + new_version, control))
    up_deb = os.path.join(tmp, 'dovecot-lmdb_upgrade.deb')
    r2 = run('dpkg-deb', '--root-owner-group', '-b', up, up_deb)
    check('a newer version of the package (repacked)', r.returncode == 0 and r2.returncode == 0,
          out(r) + out(r2))
    # plain dpkg, no --force-conf*, stdin /dev/null: a question would fail it
    r = run('dpkg', '-i', up_deb)
    check('upgrade with dpkg -i: no conffile question',
          r.returncode == 0 and 'Configuration file' not in r.stdout + r.stderr, out(r))
    check('upgraded to %s' % new_version,
          run('dpkg-query', '-W', '-f=${Version}', PKG).stdout == new_version)
    with open(SNIPPET) as f:
        check('upgrade keeps the admin\'s enabled snippet', f.read() == enabled)
    leftovers = [n for n in os.listdir('/etc/dovecot/conf.d') if n.startswith('11-lmdb.conf.')]
    check('no .dpkg-new/.dpkg-old/.dpkg-dist beside the snippet', not leftovers, leftovers)
    smoke('after the upgrade: LMTP, IMAP, POP3, doveadm', '--system-config')

    # 5. remove: the changed conffile stays (dpkg's rule), everything else goes
    r = run('apt-get', 'remove', '-y', PKG,
            env=dict(os.environ, DEBIAN_FRONTEND='noninteractive'))
    check('apt-get remove', r.returncode == 0, out(r))
    status = run('dpkg-query', '-W', '-f=${Status}', PKG).stdout
    check('status after remove: config-files', status == 'deinstall ok config-files', status)
    left = [f for f in files if f != SNIPPET and os.path.lexists(f)
            and not (os.path.isdir(f) and not os.path.islink(f) and owned_by_other_package(f))]
    check('remove: every file but the conffile is gone', not left, left)
    check('remove: the changed conffile stays', os.path.exists(SNIPPET))

    # 6. purge
    r = run('dpkg', '--purge', PKG)
    check('dpkg --purge', r.returncode == 0, out(r))
    status = run('dpkg-query', '-W', '-f=${Status}', PKG)
    check('status after purge: unknown to dpkg',
          status.returncode != 0 or 'not-installed' in status.stdout, status.stdout)
    left = [f for f in files if os.path.lexists(f)
            and not (os.path.isdir(f) and not os.path.islink(f) and owned_by_other_package(f))]
    check('purge: nothing of the package is left', not left, left)
    info = [n for n in os.listdir('/var/lib/dpkg/info') if n.startswith(PKG + '.')]
    check('purge: no dpkg metadata left', not info, info)
    etc_after = etc_snapshot()
    diff = sorted(set(etc_before.items()) ^ set(etc_after.items()))
    check('purge: /etc/dovecot is as before the install', not diff, diff)
    rc, conf_after = doveconf_n()
    check('purge: doveconf -n is as before the install', rc == 0 and conf_after == conf_before,
          conf_after)
    smoke('Dovecot still starts after the purge', '--system-config', '--start-only')


if __name__ == '__main__':
    sys.exit(main())
