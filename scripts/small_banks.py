"""Verdicts of banks fitted on little normal audio (RESULTS.md, "Small banks").

For banks fitted with `sonomaly fit` at its defaults on N normal clips (several random draws of the clips per N),
the share of anomalous and of normal test clips flagged at the bank's own threshold, and the sample ROC-AUC, on:

- MIMII fan id_00: N clips drawn from the 20 normal clips; the test set is the 20 - N normal clips not drawn and
  the 20 abnormal clips (so it is always disjoint from the fitted clips);
- EnvMix (`sonomaly mix --seed 0 --fit-clips 40`, otherwise as scripts/results.sh makes it): N clips drawn from the
  40 fit clips; the test set is its 30 normal and 60 anomalous clips (other background recordings).

A second part fits on short clips (the first S seconds of each drawn clip) to see what the seconds fitted do
beside the number of clips.

Every bank's held-out fused z-scores (from its metadata) and every test clip's score are kept in the JSON output, so
other threshold rules can be evaluated on the same fits without refitting (`--rules`).

    python3 scripts/small_banks.py [--draws 20] [--short-draws 10] [--out target/small_banks] [--only fan|envmix]
                                   [--rules]

Environment: DATA (default ../shared/data), BIN (default target/release/sonomaly, built with cargo build --release
when missing). Standard library only. Prints the Markdown tables; the raw results go to OUT/small_banks.json.
"""

import argparse
import json
import os
import random
import statistics
import struct
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.abspath(os.environ.get("DATA", os.path.join(ROOT, "..", "shared", "data")))
BIN = os.environ.get("BIN", os.path.join(ROOT, "target", "release", "sonomaly"))

FAN_NS = [2, 3, 5, 8, 10, 12, 15]
ENV_NS = [2, 3, 5, 8, 10, 12, 20, 30, 40]
# (clips, seconds per clip) for the short-clip part.
SHORT = [(2, 3.0), (3, 3.0), (5, 3.0), (10, 3.0), (2, 5.0), (3, 5.0), (6, 5.0)]


def run(args, **kw):
    return subprocess.run(args, check=True, capture_output=True, text=True, **kw)


def bank_meta(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
    return json.loads(header["__metadata__"]["sonomaly"])


def auc(labels, scores):
    """Mann-Whitney ROC-AUC (ties count a half)."""
    pos = [s for s, l in zip(scores, labels) if l]
    neg = [s for s, l in zip(scores, labels) if not l]
    wins = sum((p > q) + 0.5 * (p == q) for p in pos for q in neg)
    return wins / (len(pos) * len(neg))


def cut(src, dst, seconds):
    """The first `seconds` of WAV `src` (any sample format: the chunks are copied, the data chunk cut) to `dst`."""
    with open(src, "rb") as f:
        b = f.read()
    assert b[:4] == b"RIFF" and b[8:12] == b"WAVE", src
    chunks, at, fmt = [], 12, None
    while at + 8 <= len(b):
        cid, size = b[at:at + 4], struct.unpack("<I", b[at + 4:at + 8])[0]
        body = b[at + 8:at + 8 + size]
        if cid == b"fmt ":
            fmt = body
        chunks.append((cid, body))
        at += 8 + size + (size & 1)
    rate, block = struct.unpack("<I", fmt[4:8])[0], struct.unpack("<H", fmt[12:14])[0]
    keep = int(round(seconds * rate)) * block
    out = b"".join(cid + struct.pack("<I", len(x)) + x + (b"\0" if len(x) & 1 else b"")
                   for cid, x in ((c, body[:keep] if c == b"data" else body) for c, body in chunks
                                  if c in (b"fmt ", b"data")))
    with open(dst, "wb") as f:
        f.write(b"RIFF" + struct.pack("<I", 4 + len(out)) + b"WAVE" + out)


def fit_and_score(fit_files, test, tmp):
    """Fits a default bank on `fit_files`, scores `test` [(path, is_anomaly)]; returns the run's record."""
    bank = os.path.join(tmp, "bank.bank")
    r = subprocess.run([BIN, "fit", "--force", "--out", bank, *fit_files], capture_output=True, text=True)
    if r.returncode != 0:
        return {"error": r.stderr.strip().splitlines()[-1] if r.stderr.strip() else f"exit {r.returncode}"}
    meta = bank_meta(bank)
    out = run([BIN, "score", "--bank", bank, *[p for p, _ in test]]).stdout
    lines = [json.loads(x) for x in out.splitlines() if x.strip()]
    by_file = {x["file"]: x for x in lines}
    scores, flags, members = [], [], []
    for p, _ in test:
        x = by_file[p]
        scores.append(x["score"])
        flags.append(bool(x["is_anomaly"]))
        members.append([m["raw"] for m in x["members"]])
    labels = [a for _, a in test]
    return {
        "warned": "rough" in r.stderr,
        "threshold": meta["threshold"],
        "held_out_z": meta["fused_scores"],
        "held_out_raw": [m["normal_scores"]["scores"] for m in meta["members"]],
        "labels": labels,
        "scores": scores,
        "flags": flags,
        "raw": members,
        "auc": auc(labels, scores),
    }


def summarise(rows):
    """Per configuration: faults and normal clips flagged (pooled over draws, and min-max of the draws), AUC."""
    ok = [r for r in rows if "error" not in r]
    def share(r, anomalous):
        f = [fl for fl, l in zip(r["flags"], r["labels"]) if l == anomalous]
        return sum(f), len(f)
    fa = [share(r, True) for r in ok]
    fn = [share(r, False) for r in ok]
    aucs = [r["auc"] for r in ok]
    pct = lambda xs: 100.0 * sum(a for a, _ in xs) / max(1, sum(b for _, b in xs))
    sd = lambda xs: statistics.stdev([100.0 * a / b for a, b in xs]) if len(xs) > 1 else 0.0
    rng = lambda xs: (min(100.0 * a / b for a, b in xs), max(100.0 * a / b for a, b in xs))
    return {
        "draws": len(ok),
        "failed": len(rows) - len(ok),
        "faults": pct(fa) if ok else float("nan"),
        "faults_range": rng(fa) if ok else (float("nan"),) * 2,
        "faults_sd": sd(fa) if ok else float("nan"),
        "normal_sd": sd(fn) if ok else float("nan"),
        "normal": pct(fn) if ok else float("nan"),
        "normal_range": rng(fn) if ok else (float("nan"),) * 2,
        "normal_count": f"{sum(a for a, _ in fn)}/{sum(b for _, b in fn)}",
        "auc": statistics.mean(aucs) if ok else float("nan"),
        "auc_sd": statistics.stdev(aucs) if len(aucs) > 1 else 0.0,
    }


def table(title, results, label):
    print(f"\n**{title}**\n")
    print(f"| {label} | draws | faults flagged: pooled, sd over draws [range] | normal flagged: pooled, sd "
          "[range] (count) | sample ROC-AUC: mean ± sd |")
    print("|---|---|---|---|---|")
    for key, rows in results:
        s = summarise(rows)
        if s["draws"] == 0:
            print(f"| {key} | 0 | fit refused: {rows[0]['error']} | | |")
            continue
        print(f"| {key} | {s['draws']} | {s['faults']:.0f} %, {s['faults_sd']:.0f} "
              f"[{s['faults_range'][0]:.0f}, {s['faults_range'][1]:.0f}] "
              f"| {s['normal']:.0f} %, {s['normal_sd']:.0f} [{s['normal_range'][0]:.0f}, {s['normal_range'][1]:.0f}] "
              f"({s['normal_count']}) "
              f"| {100 * s['auc']:.1f} ± {100 * s['auc_sd']:.1f} |")


def fan_sets():
    fan = os.path.join(DATA, "industrial", "mimii_fan_id00")
    normal = [os.path.join(fan, "normal", f"{i:08d}.wav") for i in range(20)]
    abnormal = [os.path.join(fan, "abnormal", f"{i:08d}.wav") for i in range(20)]
    return normal, abnormal


def envmix(out):
    d = os.path.join(out, "envmix_fit40")
    if not os.path.exists(os.path.join(d, "test.csv")):
        e = os.path.join(DATA, "env")
        u = os.path.join(e, "urbansound8k_subset")
        run([BIN, "mix", "--out", d, "--seed", "0", "--fit-clips", "40",
             "--backgrounds", *[os.path.join(u, c) for c in
                                ("air_conditioner", "engine_idling", "street_music", "children_playing")],
             os.path.join(e, "opensoundscape"), os.path.join(e, "lincity_ng"),
             "--events", *[os.path.join(u, c) for c in
                           ("gun_shot", "dog_bark", "car_horn", "siren", "drilling", "jackhammer")],
             os.path.join(e, "ovos_animals_cc0")])
    def read(name):
        with open(os.path.join(d, name)) as f:
            rows = [l.strip().split(",") for l in f][1:]
        return [(os.path.join(d, r[0]) if not os.path.isabs(r[0]) else r[0], r[1] == "anomaly") for r in rows if r]
    fit = [p for p, _ in read("fit.csv")]
    test = read("test.csv")
    return fit, test


def draws(pool, n, k, tag):
    """`k` distinct random draws of `n` of `pool` (fewer when there are not that many)."""
    out, seen = [], set()
    for s in range(50 * k):
        pick = tuple(sorted(random.Random(f"{tag}-{n}-{s}").sample(range(len(pool)), n)))
        if pick not in seen:
            seen.add(pick)
            out.append(pick)
        if len(out) == k:
            break
    return out


def measure(args):
    os.makedirs(args.out, exist_ok=True)
    tmp = os.path.join(args.out, "tmp")
    os.makedirs(tmp, exist_ok=True)
    results = {}
    path = os.path.join(args.out, "small_banks.json")
    if os.path.exists(path):
        results = json.load(open(path))
    def save():
        json.dump(results, open(path, "w"))
    def once(key, fit_files, test):
        if key not in results:
            print(f"[small_banks] {key}", file=sys.stderr, flush=True)
            results[key] = fit_and_score(fit_files, test, tmp)
            save()
        return results[key]
    if args.only in (None, "fan"):
        normal, abnormal = fan_sets()
        for n in FAN_NS:
            for d, pick in enumerate(draws(normal, n, args.draws, "fan")):
                test = [(p, False) for i, p in enumerate(normal) if i not in pick] + [(p, True) for p in abnormal]
                once(f"fan/N={n}/d{d}", [normal[i] for i in pick], test)
        for n, secs in SHORT:
            for d, pick in enumerate(draws(normal, n, args.short_draws, "fan")):
                files = []
                for i in pick:
                    dst = os.path.join(tmp, f"fan_{i:02d}_{secs:g}s.wav")
                    cut(normal[i], dst, secs)
                    files.append(dst)
                test = [(p, False) for i, p in enumerate(normal) if i not in pick] + [(p, True) for p in abnormal]
                once(f"fan/short/N={n}/S={secs:g}/d{d}", files, test)
    if args.only in (None, "envmix"):
        fit, test = envmix(args.out)
        for n in ENV_NS:
            for d, pick in enumerate(draws(fit, n, args.draws, "envmix")):
                once(f"envmix/N={n}/d{d}", [fit[i] for i in pick], test)
        for n, secs in SHORT:
            for d, pick in enumerate(draws(fit, n, args.short_draws, "envmix")):
                files = []
                for i in pick:
                    dst = os.path.join(tmp, f"env_{i:02d}_{secs:g}s.wav")
                    cut(fit[i], dst, secs)
                    files.append(dst)
                once(f"envmix/short/N={n}/S={secs:g}/d{d}", files, test)
    return results


def grouped(results, prefix, short):
    groups = {}
    for key, r in results.items():
        parts = key.split("/")
        if parts[0] != prefix or (parts[1] == "short") != short:
            continue
        groups.setdefault("/".join(parts[1:-1]), []).append(r)
    def order(k):
        vals = dict(p.split("=") for p in k.replace("short/", "").split("/"))
        return (float(vals.get("S", 10)), int(vals["N"]))
    out = []
    for k in sorted(groups, key=order):
        vals = dict(p.split("=") for p in k.replace("short/", "").split("/"))
        n, s = int(vals["N"]), float(vals.get("S", 10))
        out.append((f"{n} x {s:g} s = {n * s:g} s", groups[k]))
    return out


# Small-sample correction factors of the MAD for normal data (Croux & Rousseeuw, "Time-efficient algorithms for two
# highly robust estimators of scale", 1992, Table: b_n for n <= 9; n / (n - 0.8) above).
MAD_SMALL = {2: 1.196, 3: 1.495, 4: 1.363, 5: 1.206, 6: 1.200, 7: 1.140, 8: 1.129, 9: 1.107}


def robust(xs, small=False):
    """The core's Norm::robust (median, 1.4826 x MAD, at least 5 % of the median), optionally bias-corrected."""
    med = statistics.median(xs)
    mad = statistics.median([abs(x - med) for x in xs])
    n = len(xs)
    c = (MAD_SMALL.get(n, n / (n - 0.8)) if small else 1.0)
    return med, max(1.482602218505602 * mad * c, 0.05 * abs(med), 1e-30)


def rule_flags(r, rule, z=2.0):
    """Test flags of run `r` under another threshold rule, from its held-out and test raw member scores."""
    norms = [robust(h, small=(rule == "mad_small")) for h in r["held_out_raw"]]
    fused = [max((x - m) / s for x, (m, s) in zip(raw, norms)) for raw in r["raw"]]
    if rule in ("current", "mad_small"):
        t = z
    elif rule == "max_held_out":
        held = [max((h[k] - m) / s for h, (m, s) in zip(r["held_out_raw"], norms))
                for k in range(len(r["held_out_raw"][0]))]
        t = max(z, max(held))
    else:
        raise ValueError(rule)
    return [f > t for f in fused]


def rules_table(results, prefix):
    print(f"\n**Other threshold rules on the same fits, {prefix}** (faults / normal clips flagged, pooled over draws; "
          "`mad_small`: the MAD times the small-sample factor of Croux & Rousseeuw 1992; `max_held_out`: the "
          "threshold at least the largest held-out normal z-score)\n")
    rules = ["current", "mad_small", "max_held_out"]
    print("| fitted on | " + " | ".join(rules) + " |")
    print("|---|" + "---|" * len(rules))
    for key, rows in grouped(results, prefix, False) + grouped(results, prefix, True):
        ok = [r for r in rows if "error" not in r]
        if not ok:
            continue
        cells = []
        for rule in rules:
            fa = fn = na = nn = 0
            for r in ok:
                for f, l in zip(rule_flags(r, rule), r["labels"]):
                    if l:
                        fa, na = fa + f, na + 1
                    else:
                        fn, nn = fn + f, nn + 1
            cells.append(f"{100 * fa / na:.0f} % / {100 * fn / nn:.0f} %")
        print(f"| {key} | " + " | ".join(cells) + " |")


INTRO = """
Banks fitted with `sonomaly fit` at its defaults (preset `both`, 2 z) on N normal clips, several random draws of the
clips per N (seeded), each scored with `sonomaly score` at its own threshold; `python3 scripts/small_banks.py
--rules` (standard library only; `SMALL=1 scripts/results.sh` runs it too; about 40 minutes on 2
busy cores). **MIMII fan id_00**: N of its 20 normal
clips; the test set is the 20 - N normal clips not drawn and the 20 abnormal ones. **EnvMix**: `sonomaly mix --seed 0
--fit-clips 40` (otherwise as the sets above); N of its 40 fit clips; the test set is its 30 normal and 60 anomalous
clips (other background recordings). Short clips: the first 3 or 5 s of each drawn clip (tests are whole clips).
"Pooled" counts every test clip of every draw; "sd" and the range are those of the per-draw shares (the binomial
noise alone gives an sd of about 7 points on EnvMix's 30 normal test clips at 19 %, and 15-20 on the fan's 5-12).
"""

FINDINGS = """
What this shows, on both domains:

- **With 5 clips or fewer the verdicts depend on the draw more than on the sound.** The share of normal clips
  flagged goes from none to nearly all between draws (sd 23-37 points) and is higher on average than with more clips
  (fan 25-40 % against 14-27 % from 8 clips; EnvMix 26-31 % at 3-5 clips against 16-20 % from 8); the share of faults
  flagged swings as widely. With 2 clips a robust z-score is meaningless (each held-out clip is at -0.67 or +0.67 z
  whatever the sound; with 3 one is at 0 and the spread is the smaller of two gaps), and the fan's ranking is near
  chance (ROC-AUC 54). Two clips of 3 s flag 58 % of the fan's normal clips.
- **From 8-10 clips of 10 s the normal share settles** near what large banks give (EnvMix: 16-20 % pooled, sd 9-11
  at 8-12 clips, 5 at 20-30, the binomial noise of 30 test clips being about 7; fan: 14-27 %, sd 20-27, its binomial
  noise with 5-12 test clips being 15-20). **Seconds count too**: 10 clips of 3 s (30 s) flag 29-32 % of normal
  clips (sd 15-23) where 10 clips of 10 s flag 14-16 % (sd 10-20). Hence the bound of the warning
  (`threshold::ThresholdSupport`): fewer than 10 clips or 100 s.
- **The fan's verdicts stay uneven above the bound**: at 10-15 clips the share of faults flagged still ranges over
  0-100 % between draws (sd 30-38), because some of its normal clips sound unlike the others (drawn for the fit they
  widen the normal spread and hide faults; left for the test they are flagged). The fixed split of the tables above
  (fit on normal 0-9) is one such draw. More normal clips, covering what the machine normally does, is the remedy;
  no threshold rule is.
- **No small-sample rule fixes the threshold on both domains**: a bias-corrected MAD (`mad_small`) lowers both
  shares by 1-9 points, the faults' as much as the normal clips', and leaves the fan's 2-3 clip banks flagging
  36-38 % of normal clips; a floor at the largest held-out z-score (`max_held_out`, an
  order statistic) gives up most faults at every N (fan 8-24 %, EnvMix 20-40 % from 10 clips). The threshold rule
  is therefore unchanged; a bank fitted on less than the bound says that its threshold is rough, in every face.
"""


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--draws", type=int, default=20, help="random draws of the clips per N")
    ap.add_argument("--short-draws", type=int, default=10, help="draws per configuration of short clips")
    ap.add_argument("--out", default=os.path.join(ROOT, "target", "small_banks"))
    ap.add_argument("--only", choices=["fan", "envmix"])
    ap.add_argument("--rules", action="store_true", help="also other threshold rules on the same fits")
    args = ap.parse_args()
    if not os.path.isdir(os.path.join(DATA, "industrial", "mimii_fan_id00")):
        sys.exit(f"small_banks.py: {DATA} does not hold industrial/mimii_fan_id00 (see ../shared/data/SOURCES.md)")
    if "BIN" not in os.environ:
        subprocess.run(["cargo", "build", "--release", "--quiet"], check=True, cwd=ROOT)
    start = time.time()
    results = measure(args)
    print("## Small banks: verdicts of banks fitted on little normal audio\n")
    print(INTRO.strip())
    for prefix, name in (("fan", "MIMII fan id_00"), ("envmix", "EnvMix (seed 0, 40 fit clips)")):
        for short in (False, True):
            rows = grouped(results, prefix, short)
            if rows:
                table(f"{name}{', short clips' if short else ''}", rows, "fitted on")
        if args.rules and grouped(results, prefix, False):
            rules_table(results, prefix)
    print()
    print(FINDINGS.strip())
    print(f"\n(This run: {time.time() - start:.0f} s; runs already in {args.out}/small_banks.json are not repeated.)",
          file=sys.stderr)


if __name__ == "__main__":
    main()
