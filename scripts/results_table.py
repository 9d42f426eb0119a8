"""Assembles RESULTS.md from the JSON reports of `sonomaly eval --json` (called by scripts/results.sh)."""
import datetime
import glob
import json
import os
import platform
import sys

out, elapsed, cnn = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1"
reports = {}
for p in sorted(glob.glob(os.path.join(out, "*.json"))):
    try:
        r = json.load(open(p))
    except (json.JSONDecodeError, OSError):
        continue
    if "overall" in r and "tag" in r:
        reports[(r["name"], r["tag"])] = r

TAGS = [
    ("default", "**fused (default, preset `both`)**: PatchCore on log-mel patches + PatchCore on EfficientAT "
                "`features.12,features.15`, max of z-scores"),
    ("machine", "member alone: PatchCore on log-mel patches (preset `machine`)"),
    ("environment", "member alone: PatchCore on EfficientAT `features.12,features.15` (preset `environment`)"),
    ("padim-freq", "PaDiM-freq on log-mel patches"),
    ("baseline", "baseline (band means and deviations, no backbone)"),
    ("cfa-machine", "CFA on log-mel patches (preset `machine`, 1024 k-means centroids)"),
    ("cfa-environment", "CFA on EfficientAT `features.12,features.15` (preset `environment`, 1024 k-means centroids)"),
    ("aisfx-logmel", "previous default: PatchCore on aisfx log-mel patches (stride 4)"),
    ("aisfx-cnn", "PatchCore on aisfx CNN14 `conv_block2,3,4` (the paper's layers)"),
]
LABEL = dict(TAGS)
SETS = [("mimii_fan", "MIMII fan id_00"), ("envmix0", "EnvMix, seed 0"), ("envmix1", "EnvMix, seed 1")]


def ci(w, scale=100):
    if not w or w.get("value") is None:
        return "-"
    return f"{w['value'] * scale:.1f} [{w['low'] * scale:.1f}, {w['high'] * scale:.1f}]"


def pct(x):
    return "-" if x is None or x != x else f"{100 * x:.0f} %"


def flags(m):
    return f"{pct(m['flagged_anomalous'])} / {pct(m['flagged_normal'])}"


def faith10(r):
    f = [x for x in r.get("faithfulness", []) if x["q"] == 10]
    return ci(f[0]["difference"], 1) if f else "-"


def snr6(r):
    return next((m for s, m in r["per_snr"] if s == 6.0), None)


def best_at_fpr(r, fpr=0.1, snr=None):
    """The share of anomalous clips (of one SNR if given) above the lowest threshold that flags at most `fpr` of the
    normal clips: what even a threshold chosen with the labels could reach."""
    normal = sorted((c["score"] for c in r["clips"] if not c["anomaly"]), reverse=True)
    anom = [c["score"] for c in r["clips"] if c["anomaly"] and (snr is None or c["snr_db"] == snr)]
    if not normal or not anom:
        return None
    allowed = int(fpr * len(normal))
    t = normal[allowed] if allowed < len(normal) else float("-inf")
    return sum(a > t for a in anom) / len(anom)


cpu = platform.processor() or platform.machine()
any_r = next(iter(reports.values()), None)
print(f"""# sonomaly results on real recordings

Produced by one command from `../shared/data` (see `../shared/data/SOURCES.md`):

```sh
scripts/results.sh          # CNN=1 scripts/results.sh adds rows with the aisfx CNN14 conv_block2,3,4 patches
```

Run time of `{'CNN=1 ' if cnn else ''}scripts/results.sh`: {elapsed} s on {os.cpu_count()} cores ({cpu}), {datetime.date.today().isoformat()}. Everything is seeded (mix
seeds 0 and 1, detector seed 0, bootstrap seed 0); the per-run JSON, Markdown and self-contained HTML reports (ROC
curves, example heatmaps of the best and worst clips) are in `target/results/`.

Figures are percentages with 95 % percentile bootstrap intervals ({any_r['bootstrap_rounds'] if any_r else '-'} resamples for clip-level metrics;
the frame- and pixel-level intervals resample whole clips, stratified by label, 400 and 200 times). pAUC is the DCASE
Task 2 partial AUC at FPR <= 0.1 (McClish-standardised: 50 = chance). **Flagged** is what a user sees: the share of
anomalous clips / of normal clips whose verdict at the bank's own label-free threshold is "anomalous". **Painted**
is the mean share of a clip's judged pixels the page and the PNG colour at their default display (anomalous /
normal clips). **Faithfulness** (q = 10 %): clip-score drop when the heatmap's top 10 % of pixels are replaced by
their band's median level, minus the drop for the same pixels moved to a random place, in percentage points of the
clip's evidence above the lowest score the bank can give.

Banks are calibrated without any anomalous clip: each member's held-out normal clip scores (each clip scored without
the memory-bank rows it gave; see "Calibration") give a robust normalisation (median, 1.4826 x MAD), so every score is a z-score against normal
sound; a fused bank's score, curve and map are the largest member z-score; clip and segment thresholds are 2 z.
""")

print("## Verdicts at the default settings\n")
print("| set | sample ROC-AUC | flagged: anomalous / normal | +6 dB events flagged | best possible at <= 10 % normal flagged (all / +6 dB) | painted: anomalous / normal |")
print("|---|---|---|---|---|---|")
for s, title in SETS:
    r = reports.get((s, "default"))
    if not r:
        continue
    o = r["overall"]
    m6 = snr6(r)
    b, b6 = best_at_fpr(r), best_at_fpr(r, snr=6.0)
    print(f"| {title} | {ci(o['sample_auc'])} | {flags(o)} | {pct(m6['flagged_anomalous']) if m6 else '-'} | "
          f"{pct(b)} / {pct(b6) if m6 else '-'} | {100 * o['painted_anomalous']:.1f} % / {100 * o['painted_normal']:.1f} % |")
print("\nTargets: on the fan at least 16 of 20 abnormal and at most 1 of 10 normal clips flagged; on EnvMix at least "
      "80 % of the +6 dB event clips and at most 10 % of the normal clips; abnormal fan clips painting at least "
      "twice as much as normal ones. \"Best possible\" places the threshold with the labels at the lowest value "
      "that flags at most 10 % of the normal clips: no label-free rule can do better than the ranking allows.\n")

for s, title in SETS:
    rs = [(t, reports[(s, t)]) for t, _ in TAGS if (s, t) in reports]
    if not rs:
        continue
    print(f"## {title}\n")
    if s == "mimii_fan":
        print("Fit on normal clips 0-9, test normal 10-19 against abnormal 0-19 (clip labels only).\n")
        print("| bank | members: rows x dims | sample ROC-AUC | pAUC | F1-max | flagged: anomalous / normal | painted |")
        print("|---|---|---|---|---|---|---|")
        for t, r in rs:
            o = r["overall"]
            print(f"| {LABEL[t]} | {r['bank']} | {ci(o['sample_auc'])} | {ci(o['sample_pauc'])} | "
                  f"{ci(o['sample_f1_max'])} | {flags(o)} | {100 * o['painted_anomalous']:.1f} / {100 * o['painted_normal']:.1f} % |")
    else:
        print("`sonomaly mix`: backgrounds UrbanSound8K air_conditioner / engine_idling / street_music / "
              "children_playing, the bird field recording and the lincity ambience loops; events UrbanSound8K "
              "gun_shot / dog_bark / car_horn / siren / drilling / jackhammer and the ten animals. 10 s clips at "
              "16 kHz; 30 normal clips to fit, 30 normal and 60 anomalous clips to test (20 each at -6, 0 and "
              "+6 dB); background recordings split between fit and test by recording, events in test clips only.\n")
        print("| bank | sample ROC-AUC | pAUC | F1-max | temporal ROC-AUC | spectrogram ROC-AUC | flagged: anomalous / normal | +6 dB flagged | painted | faithfulness |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        for t, r in rs:
            o = r["overall"]
            m6 = snr6(r)
            print(f"| {LABEL[t]} | {ci(o['sample_auc'])} | {ci(o['sample_pauc'])} | {ci(o['sample_f1_max'])} | "
                  f"{ci(o['temporal_auc'])} | {ci(o['spectrogram_auc'])} | {flags(o)} | "
                  f"{pct(m6['flagged_anomalous']) if m6 else '-'} | "
                  f"{100 * o['painted_anomalous']:.1f} / {100 * o['painted_normal']:.1f} % | {faith10(r)} |")
        if s == "envmix0":
            print("| *paper: PatchCore, CNN14 (their EnvMix)* | *90.6* | | | *82.9* | *76.4* | | | | |")
        print("\nPer SNR (the 30 normal test clips against the 20 anomalous clips of each SNR):\n")
        print("| bank | SNR | sample ROC-AUC | temporal ROC-AUC | spectrogram ROC-AUC | flagged |")
        print("|---|---|---|---|---|---|")
        for t, r in rs:
            for snr, m in r["per_snr"]:
                print(f"| {LABEL[t]} | {snr:+g} dB | {ci(m['sample_auc'])} | {ci(m['temporal_auc'])} | "
                      f"{ci(m['spectrogram_auc'])} | {pct(m['flagged_anomalous'])} |")
    d = reports.get((s, "default"))
    if d and d["overall"].get("member_sample_auc"):
        print("\nIn the fused bank, each member alone (its own z-score on the same fit): " + ", ".join(
            f"`{n}` {100 * a:.1f}" for n, a in d["overall"]["member_sample_auc"]) + ".")
    print()

def auc(pos, neg):
    """ROC-AUC by the Mann-Whitney count (ties one half)."""
    if not pos or not neg:
        return float("nan")
    return sum((p > n) + 0.5 * (p == n) for p in pos for n in neg) / (len(pos) * len(neg))


import math
RULES = [
    ("max (shipped)", lambda z: max(z)),
    ("mean", lambda z: sum(z) / len(z)),
    ("log-sum-exp", lambda z: math.log(sum(math.exp(v) for v in z))),
    ("sum of positive parts", lambda z: sum(max(v, 0.0) for v in z)),
    ("max(log-mel - 1, network)", lambda z: max(z[0] - 1.0, *z[1:])),
]
print("## Fusion rule\n")
print("Sample ROC-AUC of other ways to combine the default bank's two member z-scores, from the same clips "
      "(the per-clip member z-scores in the JSON reports):\n")
print("| rule | " + " | ".join(t for _, t in SETS) + " |")
print("|---|" + "---|" * len(SETS))
for name, f in RULES:
    cells = []
    for s_, _ in SETS:
        r = reports.get((s_, "default"))
        if not r or not r["clips"] or len(r["clips"][0]["members"]) < 2:
            cells.append("-")
            continue
        pos = [f(c["members"]) for c in r["clips"] if c["anomaly"]]
        neg = [f(c["members"]) for c in r["clips"] if not c["anomaly"]]
        cells.append(f"{100 * auc(pos, neg):.1f}")
    print(f"| {name} | " + " | ".join(cells) + " |")
print()

print("""## How the default was chosen

Exploratory runs, each measured once on this machine with `sonomaly eval --bootstrap 100..200 --faithfulness-clips 0`
on the fan split above and on the EnvMix sets of seeds 0 and 1 (sample ROC-AUC, %; `--model models/efficientat-mn04`
before it became the default). The criterion is the worse of the two domains.

| what was varied | fan | EnvMix seed 0 | EnvMix seed 1 | kept |
|---|---|---|---|---|
| EfficientAT `features.12,features.15`, windows of 256 frames (2.56 s) | 71.0 | 77.3 (temporal 66.9, spectrogram 71.5) | - | |
| the same, windows of 500 frames | - | 82.5 | - | |
| the same, windows of 1000 frames (10 s, the clip length it was trained on) | 70.5 | 88.6 (temporal 78.7, spectrogram 82.3) | 80.6 | yes |
| + `features.6` / + `features.10` / + `features.16` | - | 88.0 / 88.0 / 88.4 | 78.9 / 77.1 / 80.3 | |
| grid stride 8 instead of 16; no frequency position; coreset 25 % | - | 87.6; 87.7; 87.8 | -; -; 80.1 | |
| patch scores relative to their window (median per band subtracted) | 53.0 | 82.7 | 79.2 | |
| log-mel patches on this front end, grid stride 4 / 5 / 6 / 7 / 8 | 70.0 / 87.5 / 97.5 / 100.0 / 95.5 | - / - / 72.5 / - / - | - / - / 69.3 / - / - | stride 6 |
| previous default: aisfx log-mel patches, stride 4 | 97.5 | 70.2 | - | |
| fused log-mel (stride 6) + `features.12,features.15` | 97.5 | 87.0 | 76.4 | yes |
| fused, log-mel at stride 7 | 100.0 | 86.8 | 73.8 | |

The network member needs the whole 10 s as its context: EfficientAT's squeeze-excitation blocks pool over the whole
input, and shorter windows lose most of what it knows about a scene. The log-mel member carries the machine faults,
the network member the environmental events; fused, the bank keeps the log-mel member's fan ranking and loses 1.6
and 4.2 points on EnvMix against the network member alone, so neither member alone serves both domains (the
network alone: fan 70.5; the log-mel alone: EnvMix 72.5 / 69.3). Stride 7 ranks the fan perfectly but costs EnvMix
2 points on seed 1: stride 6 was kept by the worse-domain criterion.

Thresholds (clip z, with the fused bank; flagged anomalous / normal):

| clip threshold | fan | EnvMix seed 0: +6 dB / normal | EnvMix seed 1: +6 dB / normal |
|---|---|---|---|
| 2 z (shipped) | 17/20 / 1/10 | 85 % / 13 % | 60 % / 23 % |
| 2.5 z | 8/20 / 0/10 | 55 % / 7 % | 60 % / 20 % |
| 3 z | 4/20 / 0/10 | 45 % / 7 % | 55 % / 13 % |
| 2, 3, 4 robust deviations of the fused held-out scores instead | 4/20, 0/20, 0/20 | 55 %, 35 %, 20 % | 55 %, 50 %, 35 % |

(Measured under the 10-fold calibration of the time; the present calibration, below, flags 18/20 / 1/10 on the fan
and 70 % / 17 %, 57 % / 27 % on EnvMix at 2 z.)

Only 2 z meets the fan's target (16 of 20 faults, at most 1 of 10 normal clips); no single value meets the EnvMix
target on both seeds, and the "best possible" column of the first table shows why: at 10 % of normal clips flagged,
even a threshold chosen with the labels flags only that share of the +6 dB events, because normal test clips are
recordings the bank never heard and some of them score like events. Segment thresholds of 2 / 2.5 / 3 z paint 3.2 /
1.7 / 0.9 % of an abnormal fan clip's pixels and 0.1 / 0.0 / 0.0 % of a normal one's; 2 z was kept.
""")

print("""## Calibration: one fit, each clip without its own memory-bank rows

Until this version a fit calibrated by refitting each member on up to 10 folds of the normal clips (one coreset
selection per fold, 11 in all). Now a PatchCore member is fitted once; each normal clip is scored against the memory
bank without the rows that came from it, each replaced by the nearest patch of the other clips. Measured with
`sonomaly eval --bootstrap 1 --faithfulness-clips 0` on the sets above (flagged anomalous / normal at the bank's
threshold):

| calibration | fan: ROC-AUC, flagged | EnvMix seed 0 | EnvMix seed 1 |
|---|---|---|---|
| 10 folds, a coreset per fold (earlier versions) | 97.5, 17/20 / 1/10 | 87.0, 70 % / 13 % | 76.4, 52 % / 23 % |
| one fit, own rows left out, no replacement | 97.5, 11/20 / 0/10 | 86.8, 72 % / 20 % | 75.9, 50 % / 23 % |
| one fit, own rows left out and replaced (shipped; the first table) | 97.5, 18/20 / 1/10 | 86.8, 70 % / 17 % | 75.9, 53 % / 27 % |

Without the replacement, the holes the removed rows leave make held-out normal scores high and wide-spread, so
z-scores shrink (the fan's faults: 11 of 20 flagged). With it the rankings stay within 0.5 points of the 10-fold
calibration and the flag rates move by one or two clips either way (EnvMix: one more normal clip of 30 flagged on
each seed).
""")

sharded = os.path.join(out, "sharded.md")
if os.path.exists(sharded):
    print("## Sharded fits: merged banks and their calibration\n")
    print("Two shards fitted apart and merged (`sonomaly merge`, `sonomaly.dask.fit_sharded`), scored at each bank's "
          "own threshold; `scripts/sharded_calibration.py` (see its header for the rows):\n")
    print(open(sharded).read().strip())
    print("""
"calibrated" (the merged bank calibrated on the shards' clips, each without its own rows: what `merge --calibrate`
and `fit_sharded` do) agrees with the slow leave-one-out refit of the shards, so it measures the merged bank as it
is. A merge of small shards is another bank than a single fit on all clips: with the fan's 5-clip interleaved shards
it flags about half the faults the single bank flags, while contiguous shards and EnvMix's 15-clip shards match the
single bank within a clip or two. The pooled calibration (no clips given) flags fewer.
""")

small = os.path.join(out, "small_banks.md")
if os.path.exists(small):
    print(open(small).read().strip())
    print()

PAIRS = [("machine", "cfa-machine", "log-mel patches"), ("environment", "cfa-environment", "EfficientAT `features.12,features.15`")]
if any((s, c) in reports for s, _ in SETS for _, c, _ in PAIRS):
    print("## CFA against PatchCore\n")
    print("The same members, fit and test clips, each detector with its own calibration (same preset; CFA: 1024 k-means "
          "centroids of the untrained descriptor's outputs, 30 epochs of training, batches of 4 windows' patches). "
          "\"higher\" / \"lower\" compare the point values; \"(overlapping)\" when either's value lies inside "
          "the other's 95 % interval.\n")
    print("| set | patches | metric | PatchCore | CFA | CFA is |")
    print("|---|---|---|---|---|---|")
    for s, title in SETS:
        for pc, cf, what in PAIRS:
            a, b = reports.get((s, pc)), reports.get((s, cf))
            if not (a and b):
                continue
            for key, name in (("sample_auc", "sample ROC-AUC"), ("sample_pauc", "pAUC"), ("temporal_auc", "temporal ROC-AUC"),
                              ("spectrogram_auc", "spectrogram ROC-AUC")):
                x, y = a["overall"].get(key), b["overall"].get(key)
                if not x or not y or x.get("value") is None or y.get("value") is None:
                    continue
                verdict = "higher" if y["value"] > x["value"] else "lower" if y["value"] < x["value"] else "equal"
                if x["low"] <= y["value"] <= x["high"] or y["low"] <= x["value"] <= y["high"]:
                    verdict += " (overlapping)"
                print(f"| {title} | {what} | {name} | {ci(x)} | {ci(y)} | {verdict} |")
            print(f"| {title} | {what} | flagged: anomalous / normal | {flags(a['overall'])} | {flags(b['overall'])} | |")
    print()

print("## Faithfulness in detail (EnvMix)\n")
print("| set | bank | q | clips | drop, heatmap region | drop, random region | difference |")
print("|---|---|---|---|---|---|---|")
for s, title in SETS[1:]:
    for t, _ in TAGS:
        r = reports.get((s, t))
        if not r:
            continue
        for f in r["faithfulness"]:
            print(f"| {title} | {t} | {f['q']:g} % | {f['clips']} | {ci(f['drop_top'], 1)} | {ci(f['drop_random'], 1)} | "
                  f"{ci(f['difference'], 1)} |")

print("\n## Other machines (MIMII pump, slider, valve pairs)\n")
print("Against the default fan bank of the first table (what a user sees who scores another machine with it):\n")
print("| clip | score (z) | verdict | other-sound sentence |")
print("|---|---|---|---|")
for r in sorted((json.loads(l) for l in open(os.path.join(out, "pairs_vs_fan.jsonl"))), key=lambda r: r["file"]):
    print(f"| {os.path.basename(r['file'])} | {r['score']:.2f} | {'anomalous' if r['is_anomaly'] else 'normal'} | "
          f"{'yes' if r.get('out_of_distribution') else 'no'} |")
print("\nEach against a bank fitted on the first 5 s of its own normal clip (aisfx log-mel patches: its 2.3 s "
      "windows let 5 s calibrate; the default's 10 s windows need 15 s of normal sound):\n")
print("| machine | normal, last 5 s | abnormal, first 5 s | abnormal, last 5 s |")
print("|---|---|---|---|")
own = [json.loads(l) for l in open(os.path.join(out, "pairs_own.jsonl"))]
for m in ("pump", "slider", "valve"):
    row = {os.path.basename(r["file"])[len(m) + 1:-4]: r for r in own if os.path.basename(r["file"]).startswith(m + "_")}
    cell = lambda k: (f"{row[k]['score']:.2f} ({'anomalous' if row[k]['is_anomaly'] else 'normal'})" if k in row else "-")
    print(f"| {m} | {cell('normal_b')} | {cell('abnormal_a')} | {cell('abnormal_b')} |")

print("\n## Timing\n")
print("| set | bank | fit, s | scoring, s | faithfulness, s |")
print("|---|---|---|---|---|")
for (s, t), r in sorted(reports.items()):
    print(f"| {s} | {t} | {r.get('fit_seconds', 0):.1f} | {r['score_seconds']:.1f} | {r['faithfulness_seconds']:.1f} |")
