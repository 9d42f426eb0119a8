"""Shared fixtures: the repository's paths, the CLI binary, the dev fan clips (../shared/data, see SOURCES.md)."""

import json
import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "www" / "demo"
FAN = ROOT.parent / "shared" / "data" / "industrial" / "mimii_fan_id00"


def cli_bin() -> Path:
    """The release CLI (`cargo build --release`; ./build.sh test builds it first), or $SONOMALY_BIN."""
    p = Path(os.environ.get("SONOMALY_BIN", ROOT / "target" / "release" / "sonomaly"))
    if not p.is_file():
        pytest.fail(f"the sonomaly CLI is not built at {p}: run cargo build --release (or set SONOMALY_BIN)")
    return p


def cli_scores(bank, paths):
    """`sonomaly score --bank BANK PATHS...`: {file: JSON line as dict}."""
    o = subprocess.run([str(cli_bin()), "score", "--bank", str(bank), *map(str, paths)], capture_output=True, text=True)
    assert o.returncode == 0, o.stderr
    return {d["file"]: d for d in map(json.loads, o.stdout.splitlines())}


def fan_split():
    """MIMII fan id_00: normal 0-9 to fit; normal 10-19 and every abnormal clip to score (label 1 = abnormal)."""
    if not FAN.is_dir():
        pytest.fail(f"the dev fan clips are missing at {FAN} (see shared/data/SOURCES.md)")
    normal = sorted((FAN / "normal").glob("*.wav"))
    abnormal = sorted((FAN / "abnormal").glob("*.wav"))
    assert len(normal) == 20 and len(abnormal) == 20
    test = [str(p) for p in normal[10:20] + abnormal]
    labels = [0] * 10 + [1] * len(abnormal)
    return [str(p) for p in normal[:10]], test, labels


def rel(a, b):
    return abs(a - b) / max(abs(b), 1e-12)
