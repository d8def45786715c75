#!/usr/bin/env python3
"""Instruction counts of one IMAP command mix per format, under callgrind.

    python3 tests/bench/callgrind.py [--formats lmdb,mdbox] [--messages N]

Wall-clock figures on a small shared machine move by 10-30 % between runs;
callgrind's instruction counts do not. For each format this delivers N
messages (the benchmark's generator) over LMTP, then runs three sessions of
Dovecot's imap binary in PREAUTH mode (`imap -u testuser`, commands on
stdin) under valgrind: UID COPY of every message, UID MOVE of the copies,
STORE \\Deleted + EXPUNGE of the moved ones. It prints the total
instructions of each session (including process start-up, which is the
same for every format) and leaves the callgrind files in --out for
callgrind_annotate. Run as root; needs valgrind.
"""

import argparse
import glob
import importlib.util
import os
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
_spec = importlib.util.spec_from_file_location('bench', os.path.join(HERE, 'bench.py'))
bench = importlib.util.module_from_spec(_spec)
sys.modules['bench'] = bench
_spec.loader.exec_module(bench)
harness = bench.harness

SESSIONS = [
    ('copy', 'a SELECT INBOX\nb UID COPY 1:* Copy\nz LOGOUT\n'),
    ('move', 'a SELECT Copy\nb UID MOVE 1:* Move\nz LOGOUT\n'),
    ('expunge', 'a SELECT Move\nb STORE 1:* +FLAGS.SILENT (\\Deleted)\nc EXPUNGE\nz LOGOUT\n'),
]


def total_instructions(path: str) -> int:
    with open(path) as f:
        for line in f:
            if line.startswith('summary:'):
                return int(line.split()[1])
    raise RuntimeError('no summary line in %s' % path)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--formats', default='lmdb,mdbox')
    ap.add_argument('--messages', type=int, default=2000)
    ap.add_argument('--out', default='/tmp/dlmdb-callgrind')
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        ap.error('run as root (Dovecot master must start as root)')
    if not shutil.which('valgrind'):
        ap.error('valgrind not found (apt-get install -y valgrind)')
    os.makedirs(args.out, exist_ok=True)
    # the imap process drops to the mail uid before callgrind writes
    os.chmod(args.out, 0o777)
    ms = bench.MessageSet()
    msgs = [ms.get(i) for i in range(args.messages)]
    results = {}
    for fmt in args.formats.split(','):
        dc = harness.Dovecot(fmt)
        try:
            dc.start()
            bench.deliver(dc, 'testuser', msgs, clients=2)
            c = dc.imap()
            c.create('Copy')
            c.create('Move')
            c.logout()
            for name, cmds in SESSIONS:
                prefix = os.path.join(args.out, 'callgrind.%s.%s' % (fmt, name))
                for old in glob.glob(prefix + '.*'):
                    os.unlink(old)
                # Dovecot binaries re-exec themselves after reading the
                # config: follow the child, whose pid names the file
                cmd = ['setpriv', '--reuid=nobody', '--regid=nogroup', '--clear-groups',
                       'valgrind', '--tool=callgrind', '--trace-children=yes',
                       '--callgrind-out-file=%s.%%p' % prefix,
                       '/usr/lib/dovecot/imap', '-c', dc.conf_path, '-u', 'testuser']
                r = subprocess.run(cmd, input=cmds.encode(), capture_output=True, timeout=900)
                out = r.stdout.decode(errors='replace')
                if '\nb OK' not in out or '\nz OK' not in out:
                    raise RuntimeError('%s %s failed:\n%s\n%s' % (fmt, name, out, r.stderr.decode()))
                files = [p for p in glob.glob(prefix + '.*') if os.path.getsize(p) > 0]
                results[(fmt, name)] = max(total_instructions(p) for p in files)
        finally:
            dc.cleanup()
    fmts = args.formats.split(',')
    print('instructions per session (%d messages), callgrind' % args.messages)
    print('%-10s' % 'session' + ''.join('%16s' % f for f in fmts))
    for name, _cmds in SESSIONS:
        print('%-10s' % name + ''.join('%16s' % format(results[(f, name)], ',') for f in fmts))
    return 0


if __name__ == '__main__':
    sys.exit(main())
