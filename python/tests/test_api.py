"""The Python API against the CLI: same banks, same scores; arrays, errors, saving, pickling, the GIL."""

import pickle
import threading
import time

import numpy as np
import pytest

import sonomaly
from conftest import DEMO, cli_scores, rel

NORMAL = DEMO / "fan-normal.wav"
ABNORMAL = DEMO / "fan-abnormal.wav"


def read_wav(path):
    """16-bit PCM WAV as float32 in [-1, 1] (the standard library's reader, independent of the core's decoder)."""
    import wave

    with wave.open(str(path)) as w:
        assert w.getsampwidth() == 2
        x = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.float32) / 32768.0
        ch = w.getnchannels()
        return x.reshape(-1, ch).mean(axis=1), w.getframerate()


@pytest.fixture(scope="module")
def bank(tmp_path_factory):
    x, sr = read_wav(NORMAL)
    rotated = np.roll(x, len(x) // 2)  # a second normal clip: a fit needs two analysis windows (15 s)
    b = sonomaly.fit([str(NORMAL), rotated], sample_rate=sr)
    path = tmp_path_factory.mktemp("bank") / "fan.bank"
    b.save(path)
    return b, path


def test_model_and_bank_info(bank):
    b, path = bank
    m = sonomaly.Model()
    assert m.sample_rate == 32000 and m.hop_s > 0
    info = b.info
    assert info["clips_fitted"] == 2 and info["units"] == "z"
    assert info["detector"] == "patchcore + patchcore"
    assert b.members == ["logmel", info["layers"].split(" + ")[1].replace(",", "+")]
    assert sonomaly.Bank.load(path).to_bytes() == b.to_bytes()


def test_scores_equal_the_cli(bank):
    b, path = bank
    loaded = sonomaly.Bank.load(path)
    want = cli_scores(path, [ABNORMAL, NORMAL])
    for f in (ABNORMAL, NORMAL):
        r = sonomaly.score(loaded, str(f))
        w = want[str(f)]
        assert rel(r.score, w["score"]) <= 1e-6
        assert r.threshold == pytest.approx(w["threshold"], rel=1e-6)
        assert r.is_anomaly == w["is_anomaly"]
        assert r.units == w["units"] == "z"
        assert [m["name"] for m in r.members] == [m["name"] for m in w["members"]]
        for m, wm in zip(r.members, w["members"]):
            assert rel(m["raw"], wm["raw"]) <= 1e-6
        assert len(r.segments) == len(w["segments"])
        for s, ws in zip(r.segments, w["segments"]):
            assert s == pytest.approx((ws["start_s"], ws["end_s"], ws["peak"]), rel=1e-6)


def test_map_curve_and_arrays(bank):
    b, _ = bank
    r = sonomaly.score(b, str(ABNORMAL))
    assert r.map.dtype == np.float32 and r.map.shape == (r.frames, r.mel_bins)
    assert r.curve.dtype == np.float32 and r.curve.shape == (r.frames,)
    np.testing.assert_allclose(r.curve, r.map.max(axis=1), rtol=1e-6)
    assert r.frames * r.hop_s == pytest.approx(r.duration_s, abs=2 * r.hop_s)
    assert all(0 <= on < off <= r.duration_s + 1e-3 and peak > r.segment_threshold for on, off, peak in r.segments)
    # Samples score as the file they came from (same decoder-independent PCM, same sample rate).
    x, sr = read_wav(ABNORMAL)
    ra = sonomaly.score(b, x, sample_rate=sr)
    assert rel(ra.score, r.score) <= 1e-5
    assert sonomaly.score(b, x.astype(np.float64), sample_rate=sr).score == ra.score


def test_errors_carry_the_cores_message(bank, tmp_path):
    b, path = bank
    with pytest.raises(sonomaly.Error) as e:
        sonomaly.score(b, str(tmp_path / "missing.wav"))
    assert "missing.wav" in str(e.value)
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"RIFF this is not audio at all")
    with pytest.raises(sonomaly.AudioError, match="junk.wav"):
        sonomaly.score(b, str(junk))
    with pytest.raises(ValueError, match="unknown preset 'loud'"):
        sonomaly.fit([str(NORMAL)], preset="loud")
    with pytest.raises(sonomaly.InvalidInputError, match="sample_rate"):
        sonomaly.score(b, np.zeros(32000, dtype=np.float32))
    with pytest.raises(sonomaly.InvalidInputError, match="1-D"):
        sonomaly.score(b, np.zeros((32000, 2), dtype=np.float32), sample_rate=32000)
    with pytest.raises(sonomaly.AudioError, match="silence"):
        sonomaly.fit([np.zeros(32000 * 20, dtype=np.float32)], sample_rate=32000)
    bad = tmp_path / "bad.bank"
    bad.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(sonomaly.BankError):
        sonomaly.Bank.load(bad)


def test_save_never_overwrites_what_the_user_made(bank, tmp_path):
    b, path = bank
    before = path.read_bytes()
    with pytest.raises(sonomaly.InvalidInputError, match="overwrite=True"):
        b.save(path)
    assert path.read_bytes() == before
    notes = tmp_path / "notes.txt"
    notes.write_text("mine")
    with pytest.raises(sonomaly.InvalidInputError, match="not a sonomaly bank"):
        b.save(notes, overwrite=True)
    assert notes.read_text() == "mine"
    b.save(path, overwrite=True)


def test_pickle_and_merge(bank):
    b, _ = bank
    c = pickle.loads(pickle.dumps(b))
    assert c.to_bytes() == b.to_bytes()
    with pytest.raises(sonomaly.InvalidInputError, match="same clips"):
        sonomaly.merge([b, c])  # the same clips twice
    with pytest.raises(ValueError, match="at least two banks"):
        sonomaly.merge([b])


def test_a_fit_skips_files_it_cannot_use_when_asked(tmp_path):
    x, sr = read_wav(NORMAL)
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"RIFF this is not audio at all")
    clips = [str(NORMAL), str(junk), str(tmp_path / "missing.wav"), np.roll(x, len(x) // 2)]
    with pytest.raises(sonomaly.AudioError, match="junk.wav"):
        sonomaly.fit(clips, sample_rate=sr)
    with pytest.warns(sonomaly.SkippedFileWarning) as caught:
        b = sonomaly.fit(clips, sample_rate=sr, on_error="skip")
    messages = [str(w.message) for w in caught]
    assert any("junk.wav" in m for m in messages) and any("missing.wav" in m for m in messages), messages
    assert b.info["clips_fitted"] == 2
    with pytest.raises(sonomaly.InvalidInputError, match="no clip could be used"):
        sonomaly.fit([str(junk)], on_error="skip")
    with pytest.raises(sonomaly.InvalidInputError, match="on_error"):
        sonomaly.fit([str(NORMAL)], on_error="ignore")


def test_a_small_fit_and_merge_warn_that_the_threshold_is_rough():
    x, sr = read_wav(NORMAL)
    clips = [np.roll(x, len(x) // k) for k in (2, 3, 4, 5)]
    with pytest.warns(sonomaly.RoughThresholdWarning) as caught:
        a = sonomaly.fit(clips[:2], sample_rate=sr)
    rough = [str(w.message) for w in caught if issubclass(w.category, sonomaly.RoughThresholdWarning)]
    assert len(rough) == 1 and rough[0].startswith("the threshold is rough: it was set from 2 clips (20.0 s)"), rough
    assert "fit on 10 or more clips" in rough[0] and "8 more clips and 80 s more" in rough[0], rough
    steady = sonomaly.Bank.load(DEMO / "fan-demo.bank").info  # 19 clips, 190 s
    assert steady["threshold_rough"] is False and steady["threshold_note"] is None, steady
    info = a.info
    assert info["held_out_units"] == 2 and info["threshold_rough"] is True and info["threshold_note"] == rough[0]
    b = sonomaly.fit(clips[2:], sample_rate=sr)
    with pytest.warns(sonomaly.RoughThresholdWarning, match=r"set from 4 clips \(40\.0 s\)"):
        sonomaly.merge([a, b])
    with pytest.warns(sonomaly.RoughThresholdWarning, match=r"set from 4 clips"):
        sonomaly.merge([a, b], calibrate_on=clips, sample_rate=sr)


def test_held_out_scores_reproduce_the_fits_calibration(bank):
    b, _ = bank
    x, sr = read_wav(NORMAL)
    h = sonomaly.held_out(b, [str(NORMAL), np.roll(x, len(x) // 2)], sample_rate=sr)
    assert h.shape == (2, len(b.members), 2) and h.dtype == np.float32
    for i, m in enumerate(b.meta["members"]):
        np.testing.assert_allclose(h[:, i, 0], m["normal_scores"]["scores"], rtol=1e-4)
        np.testing.assert_allclose(h[:, i, 1], m["normal_curve_peaks"]["scores"], rtol=1e-4)
    c = sonomaly.calibrate(b, h)
    assert c.info["clips_fitted"] == b.info["clips_fitted"]
    assert rel(sonomaly.score(c, str(ABNORMAL)).score, sonomaly.score(b, str(ABNORMAL)).score) <= 1e-4
    with pytest.raises(sonomaly.InvalidInputError, match="shape"):
        sonomaly.calibrate(b, h[:, :1, :])
    with pytest.raises(sonomaly.InvalidInputError, match="at least two"):
        sonomaly.calibrate(b, h[:1])
    with pytest.raises(sonomaly.InvalidInputError, match="dimensions"):
        sonomaly.calibrate(b, h[0])


def test_merge_calibrated_on_clips_equals_held_out_per_shard(bank):
    x, sr = read_wav(NORMAL)
    clips = [np.roll(x, len(x) // k) for k in (2, 3, 4, 5)]
    a = sonomaly.fit(clips[:2], sample_rate=sr)
    b = sonomaly.fit(clips[2:], sample_rate=sr)
    merged = sonomaly.merge([a, b])
    whole = sonomaly.merge([a, b], calibrate_on=clips, sample_rate=sr)
    h = np.concatenate([sonomaly.held_out(merged, clips[:2], sr), sonomaly.held_out(merged, clips[2:], sr)])
    parts = sonomaly.calibrate(merged, h)
    assert merged.info["clips_fitted"] == 4
    assert sonomaly.score(whole, str(ABNORMAL)).score > sonomaly.score(whole, str(NORMAL)).score
    for m1, m2 in zip(whole.meta["members"], parts.meta["members"]):
        assert m1["score_norm"] == m2["score_norm"] and m1["map_norm"] == m2["map_norm"]
    with pytest.warns(sonomaly.SkippedFileWarning, match="missing.wav"):
        sonomaly.merge([a, b], calibrate_on=clips + ["missing.wav"], sample_rate=sr, on_error="skip")
    with pytest.raises(sonomaly.Error, match="missing.wav"):
        sonomaly.merge([a, b], calibrate_on=clips + ["missing.wav"], sample_rate=sr)


def test_the_gil_is_released_while_scoring(bank):
    b, _ = bank
    sonomaly.score(b, str(ABNORMAL))  # warm: the model is prepared once per bank
    ticks = []
    stop = threading.Event()

    def tick():
        while not stop.is_set():
            ticks.append(time.perf_counter())
            time.sleep(0.001)

    t = threading.Thread(target=tick)
    t.start()
    time.sleep(0.01)
    start = time.perf_counter()
    sonomaly.score(b, str(ABNORMAL))
    end = time.perf_counter()
    stop.set()
    t.join()
    during = [x for x in ticks if start < x < end]
    # Scoring a 10 s clip takes a good fraction of a second; with the GIL held the other thread would not tick.
    assert len(during) >= 5, f"{len(during)} ticks in {end - start:.3f} s of scoring"
