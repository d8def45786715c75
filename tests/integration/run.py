#!/usr/bin/env python3
"""Integration test runner for dovecot-lmdb.

    python3 tests/integration/run.py [-k SUBSTRING] [--only SUBSTRING] [--exclude SUBSTRING]
                                     [-x] [--list] [--timeout S] [-v]

Discovers tests/integration/test_*.py, runs every module-level function
named test_* in file order.  Functions decorated with
@harness.drivers('lmdb', 'maildir') run once per driver, reported as
test_x[lmdb] / test_x[maildir], and get the driver name as argument.
The last line is always 'N passed, N failed[, N skipped]'; the exit status
is 1 if anything failed.
"""

import argparse
import importlib.util
import inspect
import os
import signal
import re
import sys
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import harness  # noqa: E402


class TestTimeout(Exception):
    pass


def _alarm(signum, frame):
    raise TestTimeout('test exceeded its wall-clock limit')


def discover():
    """[(name, module_name, func, args)] in file and definition order."""
    cases = []
    for fn in sorted(os.listdir(HERE)):
        if not (fn.startswith('test_') and fn.endswith('.py')):
            continue
        modname = fn[:-3]
        spec = importlib.util.spec_from_file_location(modname, os.path.join(HERE, fn))
        mod = importlib.util.module_from_spec(spec)
        sys.modules[modname] = mod
        try:
            spec.loader.exec_module(mod)
        except Exception:
            tb = traceback.format_exc()

            def broken(tb=tb):
                raise harness.HarnessError('import failed:\n' + tb)
            cases.append(('%s::<import>' % modname, broken, ()))
            continue
        funcs = [(n, f) for n, f in vars(mod).items()
                 if n.startswith('test_') and inspect.isfunction(f) and f.__module__ == modname]
        funcs.sort(key=lambda nf: nf[1].__code__.co_firstlineno)
        for n, f in funcs:
            drv = getattr(f, 'dlmdb_drivers', None)
            if drv:
                for d in drv:
                    cases.append(('%s::%s[%s]' % (modname, n, d), f, (d,)))
            else:
                cases.append(('%s::%s' % (modname, n), f, ()))
    return cases


def short(name):
    return name.split('::', 1)[1] if '::' in name else name


def run_case(name, func, args, timeout, verbose):
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(timeout)
    t0 = time.monotonic()
    outcome, detail = 'PASS', ''
    try:
        func(*args)
    except harness.Skip as e:
        outcome, detail = 'SKIP', str(e)
    except harness.ModuleMissing as e:
        # scripts/test-leg on a Dovecot the tree has no port to yet
        absent = os.environ.get('DLMDB_MODULES_ABSENT')
        if not absent:
            outcome, detail = 'FAIL', traceback.format_exc()
        else:
            outcome, detail = 'SKIP', '%s (%s)' % (absent, e)
    except BaseException as e:  # noqa: B902 - report everything, incl. timeouts
        if isinstance(e, KeyboardInterrupt):
            signal.alarm(0)
            harness.cleanup_all()
            raise
        outcome, detail = 'FAIL', traceback.format_exc()
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    elapsed = time.monotonic() - t0
    instances = harness.live_instances()
    logs = []
    if outcome == 'FAIL' or verbose:
        for inst in instances:
            try:
                inst.stop()
            except Exception:
                pass
            # a busy test pushes its first error out of the tail
            bad = [l for l in inst.log().splitlines()
                   if re.search(r': (Error|Fatal|Panic|Warning):', l)]
            logs.append('--- Dovecot log (%s, %s): %d Error/Fatal/Panic/Warning '
                        'lines (first 50) ---\n%s'
                        % (inst.name, inst.dir, len(bad), '\n'.join(bad[:50])))
            logs.append('--- Dovecot log (%s, %s), last 200 lines ---\n%s'
                        % (inst.name, inst.dir, inst.log_tail(200)))
    # stop everything the test started, remove temp dirs
    harness.cleanup_all()
    # DLMDB_SANITIZE=1 / DLMDB_VALGRIND=1: what the test's processes
    # reported; a report in project code fails the test
    got = harness.collect_reports(short(name))
    if got and got[1]:
        logs.insert(0, got[1])
        if outcome == 'PASS' and any(r.project for r in got[0]):
            outcome, detail = 'FAIL', 'sanitizer/valgrind reports in project code (REPORTS below)'
    return outcome, detail, elapsed, logs


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('-k', action='append', default=[], metavar='SUBSTRING',
                    help='only tests whose name contains SUBSTRING (repeatable: any)')
    ap.add_argument('--only', action='append', default=[], metavar='SUBSTRING',
                    help='and of those only tests whose name contains SUBSTRING (repeatable: all)')
    ap.add_argument('--exclude', action='append', default=[], metavar='SUBSTRING',
                    help='leave out tests whose name contains SUBSTRING (repeatable)')
    ap.add_argument('-x', action='store_true', help='stop at the first failure')
    ap.add_argument('--list', action='store_true', help='list the test names and exit')
    ap.add_argument('--timeout', type=int, default=int(os.environ.get('DLMDB_TEST_TIMEOUT', 300)),
                    help='per-test wall-clock limit in seconds (default 300)')
    ap.add_argument('-v', action='store_true', help='print the Dovecot log for passing tests too')
    opts = ap.parse_args(argv)

    cases = discover()
    if opts.k:
        cases = [c for c in cases if any(k in c[0] for k in opts.k)]
    cases = [c for c in cases if all(k in c[0] for k in opts.only) and
             not any(k in c[0] for k in opts.exclude)]
    if opts.list:
        for name, _f, _a in cases:
            print(name)
        return 0

    # SIGTERM/SIGHUP: make sure no Dovecot survives us
    def _term(signum, frame):
        harness.cleanup_all()
        sys.exit(128 + signum)
    signal.signal(signal.SIGTERM, _term)
    signal.signal(signal.SIGHUP, _term)

    passed = failed = skipped = 0
    failures = []
    try:
        for name, func, args in cases:
            outcome, detail, elapsed, logs = run_case(name, func, args, opts.timeout, opts.v)
            if outcome == 'PASS':
                passed += 1
                print('PASS %s (%.1fs)' % (short(name), elapsed), flush=True)
                for l in logs:
                    print(l)
            elif outcome == 'SKIP':
                skipped += 1
                print('SKIP %s: %s' % (short(name), detail), flush=True)
            else:
                failed += 1
                failures.append(short(name))
                print('FAIL %s (%.1fs)' % (short(name), elapsed), flush=True)
                print(detail.rstrip())
                for l in logs:
                    print(l)
                sys.stdout.flush()
                if opts.x:
                    break
    except KeyboardInterrupt:
        print('interrupted', flush=True)
        failed += 1
    finally:
        harness.cleanup_all()

    if failures:
        print('failed: ' + ', '.join(failures))
    if skipped:
        print('%d passed, %d failed, %d skipped' % (passed, failed, skipped))
    else:
        print('%d passed, %d failed' % (passed, failed))
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
