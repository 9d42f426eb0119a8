"""Verdicts of banks fitted in shards and merged, by calibration, against a single bank (RESULTS.md, "Sharded fits").

For MIMII fan id_00 (fit normal 0-9, test normal 10-19 against abnormal 0-19) and the two EnvMix sets of
scripts/results.sh (run it first: they are read from target/results), two shards, interleaved (file i in shard
i % 2, as sonomaly.dask.fit_sharded splits) and, for the fan, contiguous (0-4, 5-9). Rows:

- single: one bank fitted on all the fit clips;
- pooled: the merge calibrated from the shards' pooled held-out scores (sonomaly.merge without clips);
- calibrated: the merge calibrated on itself, sonomaly.held_out per shard (each clip without its own memory-bank
  rows) concatenated, then sonomaly.calibrate (what fit_sharded does);
- leave-one-out (fan only; 10 refits): the merge calibrated on held-out scores measured the slow, exact way: each
  clip scored against the merge of its shard refitted without it and the other shard.

Prints a Markdown table of faults flagged and normal clips flagged at each bank's own threshold, and the sample
ROC-AUC. Needs the Python package (pip install ./python) and scikit-learn.

    python3 scripts/sharded_calibration.py [--no-envmix]
"""

import csv
import os
import sys

import numpy as np
from sklearn.metrics import roc_auc_score

import sonomaly

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FAN = os.path.join(ROOT, "..", "shared", "data", "industrial", "mimii_fan_id00")
RESULTS = os.path.join(ROOT, "target", "results")


def verdicts(bank, test, labels):
    r = [sonomaly.score(bank, f) for f in test]
    faults = sum(x.is_anomaly for x, l in zip(r, labels) if l)
    normal = sum(x.is_anomaly for x, l in zip(r, labels) if not l)
    auc = roc_auc_score(labels, [x.score for x in r])
    return f"{faults}/{sum(labels)}", f"{normal}/{len(labels) - sum(labels)}", f"{auc:.3f}"


def loo_held_out(parts, banks):
    rows = []
    for s, p in enumerate(parts):
        others = [banks[t] for t in range(len(parts)) if t != s]
        for k in range(len(p)):
            mk = sonomaly.merge([sonomaly.fit(p[:k] + p[k + 1 :])] + others)
            # p[k] is not in mk, so it is scored as it is; the second clip is there only because calibration
            # takes two.
            rows.append(sonomaly.held_out(mk, [p[k], p[(k + 1) % len(p)]])[0])
    return np.array(rows)


def study(name, fit, test, labels, splits, loo):
    out = [(name, "single", "", *verdicts(sonomaly.fit(fit), test, labels))]
    for split, parts in splits:
        banks = [sonomaly.fit(p) for p in parts]
        merged = sonomaly.merge(banks)
        out.append((name, "pooled", split, *verdicts(merged, test, labels)))
        held = np.concatenate([sonomaly.held_out(merged, p) for p in parts])
        out.append((name, "calibrated", split, *verdicts(sonomaly.calibrate(merged, held), test, labels)))
        if loo:
            cal = sonomaly.calibrate(merged, loo_held_out(parts, banks))
            out.append((name, "leave-one-out", split, *verdicts(cal, test, labels)))
        for row in out[-(3 if loo else 2):]:
            print(" | ".join(row), file=sys.stderr, flush=True)
    return out


def main():
    rows = []
    fit = [os.path.join(FAN, "normal", f"{i:08d}.wav") for i in range(10)]
    test = [os.path.join(FAN, "normal", f"{i:08d}.wav") for i in range(10, 20)]
    test += [os.path.join(FAN, "abnormal", f"{i:08d}.wav") for i in range(20)]
    labels = [False] * 10 + [True] * 20
    rows += study("MIMII fan", fit, test, labels,
                  [("interleaved", [fit[0::2], fit[1::2]]), ("contiguous", [fit[:5], fit[5:]])], loo=True)
    if "--no-envmix" not in sys.argv:
        for seed in (0, 1):
            d = os.path.join(RESULTS, f"envmix{seed}")
            if not os.path.isdir(d):
                sys.exit(f"{d} is missing: run scripts/results.sh first")
            fit = [os.path.join(d, r["path"]) for r in csv.DictReader(open(os.path.join(d, "fit.csv")))]
            t = list(csv.DictReader(open(os.path.join(d, "test.csv"))))
            rows += study(f"EnvMix seed {seed}", fit, [os.path.join(d, r["path"]) for r in t],
                          [r["label"] != "normal" for r in t], [("interleaved", [fit[0::2], fit[1::2]])], loo=False)
    print("| set | bank | shards | faults flagged | normal clips flagged | sample ROC-AUC |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print("| " + " | ".join(r) + " |")


if __name__ == "__main__":
    main()
