"""Scoring throughput on a Dask LocalCluster with 1 and 2 worker processes (BENCH.md section 8).

    python3 benches/dask_throughput.py [--repeat 2] [--rayon-threads N]

Fits a bank on MIMII fan id_00 normal 0-9 (../shared/data), then scores normal 10-19 and the 20 abnormal clips
(`--repeat` times over, as one list) with `sonomaly.dask.score_files` on a LocalCluster(n_workers=W,
threads_per_worker=1, processes=True) for W = 1 and 2. "cold" includes each worker loading the bank and the
backbone; "warm" is a second pass on the same cluster. Prints a Markdown table.

Each worker process scores with the core's own thread pool (rayon, all cores unless --rayon-threads is given), so
on a 2-core machine one worker already uses both cores.
"""

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FAN = ROOT.parent / "shared" / "data" / "industrial" / "mimii_fan_id00"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--rayon-threads", type=int, default=None)
    a = ap.parse_args()
    if a.rayon_threads:
        os.environ["RAYON_NUM_THREADS"] = str(a.rayon_threads)
    import distributed

    import sonomaly
    import sonomaly.dask

    normal = sorted((FAN / "normal").glob("*.wav"))
    abnormal = sorted((FAN / "abnormal").glob("*.wav"))
    test = [str(p) for p in normal[10:] + abnormal] * a.repeat
    with tempfile.TemporaryDirectory() as d:
        bank = Path(d) / "fan.bank"
        sonomaly.fit([str(p) for p in normal[:10]]).save(bank)
        print(f"cpus: {os.cpu_count()}, clips: {len(test)} x 10 s, rayon threads per worker: "
              f"{os.environ.get('RAYON_NUM_THREADS', 'all cores')}, sonomaly {sonomaly.__version__}")
        print("| workers | cold, clips/s | warm, clips/s | warm, s |")
        print("|---|---|---|---|")
        for workers in (1, 2):
            with distributed.LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                          dashboard_address=None, memory_limit=0) as cluster, \
                    distributed.Client(cluster) as client:
                rates = []
                for _ in range(2):
                    t = time.perf_counter()
                    rows = sonomaly.dask.score_files(bank, test, client=client).compute()
                    dt = time.perf_counter() - t
                    assert len(rows) == len(test) and not [r for r in rows if "error" in r]
                    rates.append((len(test) / dt, dt))
                print(f"| {workers} | {rates[0][0]:.2f} | {rates[1][0]:.2f} | {rates[1][1]:.1f} |")
                sys.stdout.flush()


if __name__ == "__main__":
    main()
