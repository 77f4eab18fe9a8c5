"""Step, forward/backward/step-phase and peak-memory errors per split (zsim.validate with the phase
predictor; nothing refitted).  usage: python score_phases.py [--only FOLDER_NAME] RESULTS_DIR..."""
import json, statistics, sys
from zsim.validate import validate
from zsim.calibrate import default_predictor

args = sys.argv[1:]
only = None
if args[0] == "--only":
    only, args = args[1], args[2:]
rep = validate(args, predictor=default_predictor("hgx-h200", phases=True))
comps = [f for f in vars(rep).values() if isinstance(f, list) and f and hasattr(f[0], "split")][0]
e = lambda p, m: 100 * (p / m - 1)
rows = []
for c in comps:
    r, p = c.run, c.predicted
    if p is None or (only and r.path.parent.name != only):
        continue
    x = dict(run=r.run_id, split=c.split, meas=r.step_time_s, pred=p.step_time_s,
             step=e(p.step_time_s, r.step_time_s), mem=e(p.peak_memory_bytes, r.peak_memory_bytes),
             mm=r.peak_memory_bytes / 2**30, pm=p.peak_memory_bytes / 2**30)
    for k, n in (("forward", "fwd"), ("backward", "bwd"), ("step", "stp")):
        if k in p.phase_s and k in r.phase_s:
            x[n] = e(p.phase_s[k], r.phase_s[k])
    rows.append(x)
def mape(rs, k):
    v = [abs(x[k]) for x in rs if k in x]
    return (statistics.mean(v), max(v)) if v else (float("nan"), float("nan"))
def summ(name, rs):
    if not rs: return
    s, f, b, t, m = (mape(rs, k) for k in ("step", "fwd", "bwd", "stp", "mem"))
    print(f"{name:34s} n={len(rs):3d} step MAPE {s[0]:5.1f} % (max {s[1]:5.1f}) | fwd {f[0]:5.1f} bwd {b[0]:5.1f} "
          f"step-phase {t[0]:5.1f} | mem {m[0]:4.1f} % (max {m[1]:4.1f})")
for sp in ("fit", "size", "session", "eval", "seen", "-"):
    summ(sp, [x for x in rows if x["split"] == sp])
summ("all", rows)
if "--table" in sys.argv or only:
    for x in rows:
        g = lambda k: f"{x[k]:+.0f} %" if k in x else "-"
        print(f"| {x['run']} | {x['split']} | {1000*x['meas']:.1f} | {1000*x['pred']:.1f} | {x['step']:+.1f} % | "
              f"{g('fwd')} | {g('bwd')} | {g('stp')} | {x['mm']:.2f} | {x['pm']:.2f} | {x['mem']:+.1f} % |")
