#!/usr/bin/env python3
"""Charts of a benchmark result (the JSON of bench.py --json).

    python3 tests/bench/charts.py RESULT.json OUTDIR [--label TEXT]

Writes PNGs into OUTDIR:
  ratio.png            lmdb against the best stock format of each row
                       (> 1 = lmdb better), with the 1.0 line and the
                       target of each row marked
  growth-<what>.png    the growth curve, one line per format, messages on
                       a log axis: deliver, select, pop3, disk
Needs python3-matplotlib (Debian; another python3 re-runs this under
/usr/bin/python3); tests/bench/run installs it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

# targets of the issues ("benchmark", "Performance, second round"): at
# least as fast as the fastest stock format everywhere (1.0), 1.5x on
# these; disk per message no worse than mdbox
TARGETS = {
    'pop3_retr': 1.5,
    'imap_fetch_body': 1.5,
    'imap_copy': 1.5,
    'imap_move': 1.5,
    'imap_expunge': 1.5,
}
DEFAULT_TARGET = 1.0
XMIN, XMAX = 0.25, 4.0       # the ratio chart's axis

GROWTH = [
    # (key in a growth point, file, title, y label, log y)
    ('deliver_rate', 'deliver', 'LMTP delivery rate of the step ending there', 'msg/s', False),
    ('select_ms', 'select', 'IMAP SELECT INBOX (warm)', 'ms', True),
    ('pop3_ms', 'pop3', 'POP3 login+STAT+UIDL+LIST (warm)', 'ms', True),
    ('disk_per_msg', 'disk', 'disk per message (mail root, index included)', 'bytes/msg', False),
]

COLORS = {'lmdb': '#d62728', 'maildir': '#1f77b4', 'sdbox': '#2ca02c', 'mdbox': '#9467bd'}


def ratios(res: dict) -> list[tuple]:
    """[(label, ratio, best stock format, target)] in the JSON's row order,
    rows without a number for lmdb or any stock format left out."""
    med = res['median']
    stock = [f for f in res['formats'] if f != 'lmdb']
    out = []
    for key, m in res['metrics'].items():
        a = med.get(key, {}).get('lmdb')
        vals = {f: med.get(key, {}).get(f) for f in stock}
        vals = {f: v for f, v in vals.items() if isinstance(v, (int, float))}
        if not isinstance(a, (int, float)) or not vals:
            continue
        if m['better'] == 'higher':
            best = max(vals, key=vals.get)
            r = a / vals[best] if vals[best] else None
        else:
            best = min(vals, key=vals.get)
            r = vals[best] / a if a else None
        if r is None or r <= 0:
            continue
        out.append(('%s (%s)' % (m['label'], m['unit']), r, best,
                    TARGETS.get(key, DEFAULT_TARGET)))
    return out


def subtitle(res: dict, label: str | None) -> str:
    m = res.get('machine', {})
    s = '%s run, %s, %d run(s), mail_fsync=%s; %s CPUs, loadavg at end %s' % (
        res.get('mode'), ','.join(res.get('rows', [])) or 'base', res.get('runs', 0),
        res.get('mail_fsync'), m.get('nproc'), ' '.join(m.get('loadavg', [])))
    return (label + '\n' + s) if label else s


def chart_ratio(plt, res: dict, path: str, label: str | None) -> bool:
    rows = ratios(res)
    if not rows:
        return False
    h = 0.8 + 0.32 * len(rows)
    fig, ax = plt.subplots(figsize=(10, h + 1.2))
    ys = list(range(len(rows)))[::-1]
    # a fixed log axis; a ratio beyond it is drawn to the edge, its value
    # printed (one outlier, e.g. PSS with lmdb's mapped file, would
    # otherwise squeeze every other bar against the 1.0 line)
    lo, hi = XMIN, XMAX
    for y, (name, r, best, tgt) in zip(ys, rows):
        color = '#2ca02c' if r >= tgt else ('#ff7f0e' if r >= 0.9 * tgt else '#d62728')
        shown = min(max(r, lo * 1.02), hi / 1.02)
        ax.barh(y, shown, color=color, height=0.6, hatch='//' if shown != r else None)
        ax.plot([tgt, tgt], [y - 0.38, y + 0.38], color='black', linewidth=2)
        ax.text(min(max(shown, tgt) * 1.04, hi / 1.5), y,
                '%.2f vs %s%s' % (r, best, ' (off scale)' if shown != r else ''),
                va='center', fontsize=7)
    ax.axvline(1.0, color='gray', linestyle='--', linewidth=1)
    ax.set_yticks(ys)
    ax.set_yticklabels([r[0] for r in rows], fontsize=7)
    ax.set_xscale('log')
    ax.set_xlim(lo, hi)
    ticks = [0.25, 0.5, 0.75, 1, 1.5, 2, 3, 4]
    ax.set_xticks(ticks)
    ax.set_xticklabels(['%g' % t for t in ticks])
    ax.minorticks_off()
    ax.set_xlabel('lmdb vs the best stock format of the row (> 1: lmdb better, log axis)\n'
                  'black tick: target; green: met, orange: within 10 %, red: not met; '
                  'hatched: off scale', fontsize=9)
    ax.set_title(subtitle(res, label), fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def count_label(n: int) -> str:
    for div, suffix in ((1000000, 'M'), (1000, 'k')):
        if n >= div:
            return '%g%s' % (n / div, suffix)
    return str(n)


def chart_growth(plt, res: dict, outdir: str, label: str | None) -> list[str]:
    from matplotlib import ticker
    growth = res.get('growth') or {}
    if not any(growth.values()):
        return []
    paths = []
    for key, name, title, unit, logy in GROWTH:
        fig, ax = plt.subplots(figsize=(8, 4.8))
        for fmt in res['formats']:
            pts = [p for p in growth.get(fmt, []) if not p.get('error')]
            if not pts:
                continue
            ax.plot([p['messages'] for p in pts], [p[key] for p in pts], marker='o',
                    label=fmt, color=COLORS.get(fmt))
        ax.set_xscale('log')
        xs = sorted({p['messages'] for pts in growth.values() for p in pts})
        ax.set_xticks(xs)
        ax.set_xticklabels([count_label(x) for x in xs], fontsize=8)
        ax.minorticks_off()
        if logy:
            ax.set_yscale('log')
            plain = ticker.FuncFormatter(lambda v, _pos: '%g' % v)
            ax.yaxis.set_major_formatter(plain)
            ax.yaxis.set_minor_formatter(plain)
            ax.tick_params(axis='y', which='both', labelsize=8)
        elif key == 'deliver_rate':
            ax.set_ylim(bottom=0)
        ax.set_xlabel('messages in the mailbox')
        ax.set_ylabel(unit)
        ax.grid(True, which='both', alpha=0.3)
        ax.legend(fontsize=8)
        ax.set_title('%s\n%s' % (title, subtitle(res, label)), fontsize=8)
        fig.tight_layout()
        path = os.path.join(outdir, 'growth-%s.png' % name)
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths


def write_charts(json_path: str, outdir: str, label: str | None = None) -> list[str]:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    with open(json_path) as f:
        res = json.load(f)
    os.makedirs(outdir, exist_ok=True)
    out = []
    p = os.path.join(outdir, 'ratio.png')
    if chart_ratio(plt, res, p, label):
        out.append(p)
    out += chart_growth(plt, res, outdir, label)
    return out


DEBIAN_PYTHON = '/usr/bin/python3'


def _reexec_for_matplotlib():
    """Debian's python3-matplotlib is importable by Debian's python3
    only: a python3 from elsewhere (pyenv, a venv) runs this script again
    under /usr/bin/python3."""
    try:
        import matplotlib  # noqa: F401
        return
    except ImportError:
        pass
    if os.path.realpath(sys.executable) != os.path.realpath(DEBIAN_PYTHON) and \
            os.access(DEBIAN_PYTHON, os.X_OK):
        os.execv(DEBIAN_PYTHON, [DEBIAN_PYTHON, os.path.abspath(__file__)] + sys.argv[1:])
    sys.exit('charts.py: matplotlib missing (apt-get install -y python3-matplotlib)')


def main(argv=None):
    _reexec_for_matplotlib()
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('json')
    ap.add_argument('outdir')
    ap.add_argument('--label', help='first title line, e.g. "smoke run, loaded machine"')
    args = ap.parse_args(argv)
    paths = write_charts(args.json, args.outdir, args.label)
    for p in paths:
        print(p)
    if not paths:
        print('nothing to chart (no lmdb and stock medians, no growth points)', file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
