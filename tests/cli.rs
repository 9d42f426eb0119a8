//! The `sonomaly` command line: fit, score, info, and how it treats bad files, bad banks and existing outputs.
//! Uses the demo clips in www/demo (shipped with the page).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use sonomaly::audio::{ChannelSelect, MonoStream, TargetRate};
use sonomaly::bank::Bank;
use sonomaly::pipeline::{score_clip, segments_for, Model, Segment};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_sonomaly"))
}

fn demo(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("www/demo").join(name)
}

/// A second normal clip for fits (a fit needs two analysis windows, 15 s with the default model): the demo normal
/// clip turned round by half its length.
fn rotated_normal(dir: &Path) -> PathBuf {
    rotated_by(dir, 2)
}

/// The demo normal clip rotated in time by `1 / k` of its length (another normal clip of the same fan).
fn rotated_by(dir: &Path, k: usize) -> PathBuf {
    let mut r = hound::WavReader::open(demo("fan-normal.wav")).unwrap();
    let spec = r.spec();
    let x: Vec<i16> = r.samples::<i16>().map(|s| s.unwrap()).collect();
    let out = if k == 2 { dir.join("normal-rotated.wav") } else { dir.join(format!("normal-rotated-{k}.wav")) };
    let mut w = hound::WavWriter::create(&out, spec).unwrap();
    for s in x[x.len() / k..].iter().chain(&x[..x.len() / k]) {
        w.write_sample(*s).unwrap();
    }
    w.finalize().unwrap();
    out
}

fn text(o: &Output) -> (String, String) {
    (String::from_utf8_lossy(&o.stdout).into_owned(), String::from_utf8_lossy(&o.stderr).into_owned())
}

#[test]
fn fit_score_info_and_bad_files_in_a_batch() {
    let dir = tempfile::tempdir().unwrap();
    let bank = dir.path().join("fan.bank");
    let junk = dir.path().join("junk.wav");
    std::fs::write(&junk, b"RIFF this is not audio at all").unwrap();
    let empty = dir.path().join("empty.wav");
    std::fs::write(&empty, b"").unwrap();

    // A bad file among good ones: reported, the rest fitted, exit code 3.
    let second = rotated_normal(dir.path());
    let o =
        bin().args(["fit", "--out"]).arg(&bank).arg(demo("fan-normal.wav")).arg(&second).arg(&junk).output().unwrap();
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(3), "{err}");
    assert!(err.contains("warning: skipped") && err.contains("junk.wav"), "{err}");
    assert!(bank.is_file());
    // Two clips of 10 s: the threshold is rough, which the fit says in the library's words, with what to do.
    let support = sonomaly::threshold::ThresholdSupport::new(2, 20.0);
    let note = support.note.clone().unwrap();
    assert!(err.contains(&format!("warning: {note}")), "{err}");
    assert!(note.contains("from 2 clips (20.0 s)"), "{note}");
    assert!(err.contains("): 2 clips, 20.0 s of audio"), "{err}");

    // An existing bank is never overwritten without --force.
    let before = std::fs::read(&bank).unwrap();
    let o = bin().args(["fit", "--out"]).arg(&bank).arg(demo("fan-normal.wav")).output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).1.contains("--force"));
    assert_eq!(std::fs::read(&bank).unwrap(), before);

    // Scoring: one JSON line per good file, errors on stderr, PNGs written, exit code 3.
    let png_dir = dir.path().join("png");
    let o = bin()
        .args(["score", "--bank"])
        .arg(&bank)
        .arg("--heatmap-dir")
        .arg(&png_dir)
        .arg(demo("fan-abnormal.wav"))
        .arg(&empty)
        .arg(dir.path().join("missing.wav"))
        .output()
        .unwrap();
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(3), "{err}");
    let lines: Vec<serde_json::Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 1);
    for key in ["file", "score", "threshold", "is_anomaly", "segments"] {
        assert!(lines[0].get(key).is_some(), "missing {key}");
    }
    assert!(err.contains("empty.wav") && err.contains("missing.wav"), "{err}");
    let png = PathBuf::from(lines[0]["heatmap"].as_str().unwrap());
    let img = image::open(&png).unwrap();
    assert!(img.width() > 400 && img.height() > 200);

    // info
    let o = bin().arg("info").arg(&bank).arg("--json").output().unwrap();
    let info: serde_json::Value = serde_json::from_str(&text(&o).0).unwrap();
    assert_eq!(info["detector"], "patchcore + patchcore");
    assert_eq!(info["units"], "z");
    assert_eq!(info["clips_fitted"], 2);
    assert_eq!(info["held_out_units"], 2);
    assert_eq!(info["threshold_rough"], true);
    assert_eq!(info["threshold_note"], note.as_str());
    let o = bin().arg("info").arg(&bank).output().unwrap();
    let human = text(&o).0;
    assert!(
        human.contains(&format!("held out      2 normal clips, each scored without what it gave the bank: {note}")),
        "{human}"
    );
    assert!(human.contains("fitted on     2 clips, 20.0 s"), "{human}");
    // The demo bank (19 clips of 10 s) has a steady threshold.
    let o = bin().arg("info").arg(demo("fan-demo.bank")).output().unwrap();
    let human = text(&o).0;
    assert!(human.contains("held out      19 normal clips, each scored without what it gave the bank: enough normal sound for a steady threshold"), "{human}");
    // One 10 s clip is too little to calibrate with 10 s windows: a plain message, and no bank.
    let one = dir.path().join("one.bank");
    let o = bin().args(["fit", "--out"]).arg(&one).arg(demo("fan-normal.wav")).output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).1.contains("at least 15.0 s"), "{}", text(&o).1);
    assert!(!one.exists());
}

#[test]
fn damaged_banks_and_bad_arguments_are_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let bank = dir.path().join("bad.bank");
    let good = std::fs::read(demo("fan-demo.bank")).unwrap();
    for (name, bytes) in
        [("truncated", good[..good.len() / 3].to_vec()), ("random", vec![7u8; 1000]), ("empty", Vec::new())]
    {
        std::fs::write(&bank, &bytes).unwrap();
        let o = bin().args(["score", "--bank"]).arg(&bank).arg(demo("fan-normal.wav")).output().unwrap();
        let (out, err) = text(&o);
        assert_eq!(o.status.code(), Some(1), "{name}: {err}");
        assert!(out.is_empty());
        assert!(err.starts_with("error: loading bank") && err.contains("bank:"), "{name}: {err}");
    }
    let o = bin()
        .args(["fit", "--out"])
        .arg(dir.path().join("x.bank"))
        .args(["--channel", "left"])
        .arg(demo("fan-normal.wav"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).1.contains("--channel"));
    let o = bin()
        .args(["fit", "--out"])
        .arg(dir.path().join("x.bank"))
        .args(["--layers", "conv_block9"])
        .arg(demo("fan-normal.wav"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).1.contains("conv_block9"));
    let o = bin().args(["score"]).output().unwrap();
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn outputs_that_would_destroy_something_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    // An audio file (here: also an input) is never overwritten by a bank, even with --force.
    let wav = dir.path().join("victim.wav");
    std::fs::copy(demo("fan-normal.wav"), &wav).unwrap();
    let before = std::fs::read(&wav).unwrap();
    let o = bin().args(["fit", "--force", "--out"]).arg(&wav).arg(&wav).output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).1.contains("not a sonomaly bank"), "{}", text(&o).1);
    assert_eq!(std::fs::read(&wav).unwrap(), before);
    // A folder as --out, and a folder that does not exist, are refused before any work.
    let o = bin().args(["fit", "--force", "--out"]).arg(dir.path()).arg(demo("fan-normal.wav")).output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).1.contains("not a regular file"), "{}", text(&o).1);
    let o = bin()
        .args(["fit", "--out"])
        .arg(dir.path().join("no/such/a.bank"))
        .arg(demo("fan-normal.wav"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).1.contains("does not exist"), "{}", text(&o).1);
    // A threshold that is not a finite number.
    let o = bin()
        .args(["score", "--threshold=inf", "--bank"])
        .arg(demo("fan-demo.bank"))
        .arg(demo("fan-normal.wav"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).1.contains("--threshold"));
}

#[test]
fn folders_are_searched_recursively_and_repeats_used_once() {
    let dir = tempfile::tempdir().unwrap();
    let sub = dir.path().join("sub dir");
    std::fs::create_dir(&sub).unwrap();
    std::fs::copy(demo("fan-normal.wav"), sub.join("a.wav")).unwrap();
    std::fs::copy(demo("fan-abnormal.wav"), dir.path().join("b.wav")).unwrap();
    let o = bin()
        .args(["score", "--bank"])
        .arg(demo("fan-demo.bank"))
        .arg(dir.path())
        .arg(dir.path().join("b.wav"))
        .output()
        .unwrap();
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert_eq!(out.lines().count(), 2, "{out}");
    assert!(err.contains("more than once"), "{err}");
}

#[cfg(target_os = "linux")]
/// A folder with symbolic links back to itself and to its parent is searched once (a loop was followed without end),
/// a pipe named like audio is skipped (it would block the run), a bank path that is not a regular file is refused
/// (a device was read without end), a temporary folder that cannot be written is said before the fit's work, and a
/// heatmap that cannot be written is a warning with exit status 3 (it was a note with status 0, and the line named
/// the missing PNG).
#[cfg(unix)]
#[test]
fn link_loops_pipes_devices_and_unwritable_outputs_are_handled() {
    let dir = tempfile::tempdir().unwrap();
    let l = dir.path().join("l");
    std::fs::create_dir(&l).unwrap();
    std::fs::copy(demo("fan-normal.wav"), l.join("a.wav")).unwrap();
    for (link, to) in [("s1", "."), ("s2", "."), ("up", "..")] {
        std::os::unix::fs::symlink(to, l.join(link)).unwrap();
    }
    let fifo = l.join("pipe.wav");
    assert!(Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    let o = bin().args(["score", "--bank"]).arg(demo("fan-demo.bank")).arg(&l).output().unwrap();
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(!err.contains("more than once"), "{err}");

    let o = bin().args(["info", "/dev/zero"]).output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).1.contains("/dev/zero is not a regular file"), "{}", text(&o).1);
    let o = bin().args(["score", "--bank", "/dev/zero"]).arg(demo("fan-normal.wav")).output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).1.contains("not a regular file"), "{}", text(&o).1);

    let out = dir.path().join("x.bank");
    let o = bin()
        .env("TMPDIR", dir.path().join("no such folder"))
        .args(["fit", "--out"])
        .arg(&out)
        .arg(demo("fan-normal.wav"))
        .arg(rotated_normal(dir.path()))
        .output()
        .unwrap();
    let err = text(&o).1;
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("no such folder") && err.contains("set TMPDIR"), "{err}");
    assert!(!out.exists());

    // Copies of one recording under other names: refused, saying so.
    let copies = dir.path().join("copies");
    std::fs::create_dir(&copies).unwrap();
    for k in 0..3 {
        std::fs::copy(demo("fan-normal.wav"), copies.join(format!("c{k}.wav"))).unwrap();
    }
    let o = bin().args(["fit", "--out"]).arg(&out).arg(&copies).output().unwrap();
    let err = text(&o).1;
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("the 3 clips are copies of one recording"), "{err}");

    // A heatmap that cannot be written (a folder in the PNG's place): a warning, no heatmap named, exit status 3.
    let hm = dir.path().join("heatmaps");
    std::fs::create_dir_all(hm.join("0000_fan-normal.png")).unwrap();
    let o = bin()
        .args(["score", "--bank"])
        .arg(demo("fan-demo.bank"))
        .arg("--heatmap-dir")
        .arg(&hm)
        .arg(demo("fan-normal.wav"))
        .output()
        .unwrap();
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(3), "{err}");
    assert!(err.contains("warning:") && err.contains("heatmap not written"), "{err}");
    let line: serde_json::Value = serde_json::from_str(out.lines().next().expect("a line")).unwrap();
    assert!(line.get("heatmap").is_none_or(|h| h.is_null()), "{out}");
}

#[test]
fn swapped_arguments_negative_thresholds_and_unwritable_folders_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let fit = |out: &Path, extra: &[&str]| {
        bin()
            .args(["fit", "--out"])
            .arg(out)
            .args(extra)
            .arg(demo("fan-normal.wav"))
            .arg(rotated_normal(dir.path()))
            .output()
            .unwrap()
    };
    // A folder no one can write to (even root): found before the fit, not after it.
    let o = fit(Path::new("/proc/sonomaly-test.bank"), &[]);
    let err = text(&o).1;
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("cannot be written to") && !err.contains("fitting"), "{err}");

    let out = dir.path().join("x.bank");
    for (flag, v) in [("--clip-z", "-1"), ("--segment-z", "-0.5")] {
        let o = fit(&out, &[flag, v]);
        let err = text(&o).1;
        assert_eq!(o.status.code(), Some(1), "{err}");
        assert!(err.contains(&format!("{flag} must be 0 or more z units, got {v}")), "{err}");
        assert!(!out.exists());
    }

    // The bank and a recording swapped: each named for what it is.
    let o = bin().args(["score", "--bank"]).arg(demo("fan-normal.wav")).arg(demo("fan-demo.bank")).output().unwrap();
    let err = text(&o).1;
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("is a recording (WAV), not a bank"), "{err}");
    let o = bin().args(["score", "--bank"]).arg(demo("fan-demo.bank")).arg(demo("fan-demo.bank")).output().unwrap();
    let (out, err) = text(&o);
    assert_ne!(o.status.code(), Some(0), "{err}");
    assert!(err.contains("this is a bank file, not a recording"), "{err}");
    assert!(out.is_empty(), "{out}");

    // --heatmap-dir naming a file.
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"x").unwrap();
    let o = bin()
        .args(["score", "--bank"])
        .arg(demo("fan-demo.bank"))
        .arg("--heatmap-dir")
        .arg(&file)
        .arg(demo("fan-normal.wav"))
        .output()
        .unwrap();
    let err = text(&o).1;
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("is a file, not a folder"), "{err}");
}

#[test]
fn a_full_disk_on_stdout_is_an_error() {
    let full = std::fs::OpenOptions::new().write(true).open("/dev/full");
    let Ok(full) = full else {
        eprintln!("skipped: /dev/full is not available");
        return;
    };
    let o = bin()
        .args(["score", "--bank"])
        .arg(demo("fan-demo.bank"))
        .arg(demo("fan-normal.wav"))
        .stdout(full)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o).1);
    assert!(text(&o).1.contains("standard output"));
}

/// `score --files-from -`: paths from standard input (blank lines ignored), one JSON line per file, the same lines
/// as `score` with the files listed; an unreadable path is reported on stderr and the others go on (exit code 3).
#[test]
fn score_files_from_standard_input() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let bank = dir.path().join("fan.bank");
    let second = rotated_normal(dir.path());
    let o = bin().args(["fit", "--out"]).arg(&bank).arg(demo("fan-normal.wav")).arg(&second).output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o).1);

    let (abnormal, normal) = (demo("fan-abnormal.wav"), demo("fan-normal.wav"));
    let listed = bin().args(["score", "--bank"]).arg(&bank).arg(&abnormal).arg(&normal).output().unwrap();
    assert_eq!(listed.status.code(), Some(0), "{}", text(&listed).1);
    let by_file = |out: &str| -> std::collections::BTreeMap<String, String> {
        out.lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                (v["file"].as_str().unwrap().to_string(), l.to_string())
            })
            .collect()
    };
    let want = by_file(&text(&listed).0);
    assert_eq!(want.len(), 2);

    let missing = dir.path().join("missing.wav");
    let mut child = bin()
        .args(["score", "--bank"])
        .arg(&bank)
        .args(["--files-from", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        let mut stdin = child.stdin.take().unwrap();
        writeln!(stdin, "{}\n\n{}\n   \n{}", abnormal.display(), missing.display(), normal.display()).unwrap();
    }
    let o = child.wait_with_output().unwrap();
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(3), "{err}");
    assert!(err.contains("missing.wav"), "{err}");
    assert_eq!(by_file(&out), want, "the lines differ from those of `score` with the files listed");

    // Nothing to score is an error, and --files-from excludes listed files.
    let mut child = bin()
        .args(["score", "--bank"])
        .arg(&bank)
        .args(["--files-from", "-"])
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"\n\n").unwrap();
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).1.contains("no path"), "{}", text(&o).1);
    let o = bin().args(["score", "--bank"]).arg(&bank).args(["--files-from", "-"]).arg(&normal).output().unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", text(&o).1);
}

/// `merge`: two banks of the same members become one whose clip count adds up and whose memory banks are the union
/// (under the cap) or a capped coreset of it; banks that differ, PaDiM banks and existing outputs are refused.
#[test]
fn merge_banks_of_shards() {
    let dir = tempfile::tempdir().unwrap();
    let second = rotated_normal(dir.path());
    let (third, fourth) = (rotated_by(dir.path(), 3), rotated_by(dir.path(), 4));
    let fit_on = |name: &str, extra: &[&str], clips: [&Path; 2]| {
        let out = dir.path().join(name);
        let o = bin().args(["fit", "--out"]).arg(&out).args(extra).args(clips).output().unwrap();
        assert_eq!(o.status.code(), Some(0), "{}", text(&o).1);
        out
    };
    let normal = demo("fan-normal.wav");
    let fit = |name: &str, extra: &[&str]| fit_on(name, extra, [&normal, &second]);
    let info = |p: &Path| -> serde_json::Value {
        serde_json::from_str(&text(&bin().arg("info").arg(p).arg("--json").output().unwrap()).0).unwrap()
    };
    let (a, b) = (fit("a.bank", &[]), fit_on("b.bank", &[], [&third, &fourth]));
    // A bank merged with itself (or with a shard of the same clips) would count its clips twice: refused.
    let same = dir.path().join("same.bank");
    let o = bin().args(["merge", "--out"]).arg(&same).arg(&a).arg(&a).output().unwrap();
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("fitted on 2 of the same clips") && !same.exists(), "{err}");
    let merged = dir.path().join("merged.bank");
    let o = bin().args(["merge", "--out"]).arg(&merged).arg(&a).arg(&b).output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o).1);
    let (ia, ib, im) = (info(&a), info(&b), info(&merged));
    assert_eq!(im["clips_fitted"], 4);
    assert_eq!(im["units"], "z");
    let rows = |v: &serde_json::Value| -> Vec<usize> {
        v["memory_bank"]
            .as_str()
            .unwrap()
            .split(" + ")
            .map(|m| m.split(" x ").next().unwrap().parse().unwrap())
            .collect()
    };
    assert_eq!(rows(&im), rows(&ia).iter().zip(rows(&ib)).map(|(x, y)| x + y).collect::<Vec<_>>(), "{im}");
    // The merged bank scores like its shards (same clips in both): the anomalous clip above the normal one.
    let o = bin()
        .args(["score", "--bank"])
        .arg(&merged)
        .arg(demo("fan-abnormal.wav"))
        .arg(demo("fan-normal.wav"))
        .output()
        .unwrap();
    let s: Vec<serde_json::Value> = text(&o).0.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let score =
        |f: &str| s.iter().find(|v| v["file"].as_str().unwrap().ends_with(f)).unwrap()["score"].as_f64().unwrap();
    assert!(score("fan-abnormal.wav") > score("fan-normal.wav"));

    // Calibrated on the shards' clips (each scored without its own rows): the stderr line says so, the bank's
    // normalisation is measured on the merged bank (it differs from the pooled one), and one clip is refused.
    let calibrated = dir.path().join("calibrated.bank");
    let o = bin()
        .args(["merge", "--out"])
        .arg(&calibrated)
        .arg("--calibrate")
        .arg(demo("fan-normal.wav"))
        .arg(&second)
        .arg(&third)
        .arg(&fourth)
        .arg("--")
        .arg(&a)
        .arg(&b)
        .output()
        .unwrap();
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert!(err.contains("calibrated on 4 normal recordings"), "{err}");
    let meta = |p: &Path| Bank::from_bytes(&std::fs::read(p).unwrap()).unwrap().meta;
    let (pooled, measured) = (meta(&merged), meta(&calibrated));
    assert_eq!(measured.clips_fitted, 4);
    assert_ne!(pooled.members[0].score_norm, measured.members[0].score_norm);
    let one = dir.path().join("one.bank");
    let o = bin()
        .args(["merge", "--out"])
        .arg(&one)
        .arg("--calibrate")
        .arg(demo("fan-normal.wav"))
        .arg("--")
        .arg(&a)
        .arg(&b)
        .output()
        .unwrap();
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("at least two normal recordings") && !one.exists(), "{err}");

    // Empty, corrupt and hostile banks among the inputs: refused in plain words, nothing written.
    let (empty, junk, cut) = (dir.path().join("empty.bank"), dir.path().join("junk.bank"), dir.path().join("cut.bank"));
    std::fs::write(&empty, b"").unwrap();
    std::fs::write(&junk, b"\xff\xff\xff\xff\xff\xff\xff\x7fnot a bank at all").unwrap();
    std::fs::write(&cut, &std::fs::read(&a).unwrap()[..200]).unwrap();
    let refused = dir.path().join("refused.bank");
    for bad in [&empty, &junk, &cut] {
        let o = bin().args(["merge", "--out"]).arg(&refused).arg(&a).arg(bad).output().unwrap();
        let err = text(&o).1;
        assert_eq!(o.status.code(), Some(1), "{}: {err}", bad.display());
        assert!(err.contains(&*bad.file_name().unwrap().to_string_lossy()) && !err.contains("panicked"), "{err}");
        assert!(!refused.exists(), "a refused merge wrote {}", refused.display());
    }
    let o = bin().args(["merge", "--out"]).arg(&refused).arg(&a).output().unwrap();
    assert_ne!(o.status.code(), Some(0), "one bank is not a merge");
    assert!(!refused.exists());

    // An existing output is kept without --force, replaced with it.
    let before = std::fs::read(&merged).unwrap();
    let o = bin().args(["merge", "--out"]).arg(&merged).arg(&a).arg(&b).output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).1.contains("--force"));
    assert_eq!(std::fs::read(&merged).unwrap(), before);
    let o = bin().args(["merge", "--force", "--out"]).arg(&merged).arg(&a).arg(&b).output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o).1);

    // Capped: the union of two 60-row memory banks keeps 60 rows (the greedy coreset).
    let (c1, c2) =
        (fit("c1.bank", &["--max-bank-rows", "60"]), fit_on("c2.bank", &["--max-bank-rows", "60"], [&third, &fourth]));
    let capped = dir.path().join("capped.bank");
    let o = bin().args(["merge", "--out"]).arg(&capped).arg(&c1).arg(&c2).output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o).1);
    assert_eq!(rows(&info(&capped)), vec![60, 60]);

    // Refusals in plain words.
    let refused = |x: &Path, y: &Path| {
        let o = bin().args(["merge", "--out"]).arg(dir.path().join("no.bank")).arg(x).arg(y).output().unwrap();
        assert_eq!(o.status.code(), Some(1));
        assert!(!dir.path().join("no.bank").exists());
        text(&o).1
    };
    let machine = fit("machine.bank", &["--preset", "machine"]);
    let e = refused(&a, &machine);
    assert!(e.contains("member layout"), "{e}");
    let e = refused(&a, &c1);
    assert!(e.contains("detector"), "{e}");
    let (p1, p2) = (fit("p1.bank", &["--detector", "padim"]), fit("p2.bank", &["--detector", "padim"]));
    let e = refused(&p1, &p2);
    assert!(e.contains("only PatchCore banks can be merged") && e.contains("PaDiM"), "{e}");
    let o = bin().args(["merge", "--out"]).arg(dir.path().join("one.bank")).arg(&a).output().unwrap();
    assert_eq!(o.status.code(), Some(2));
}

/// The segments of a `sonomaly score` JSON line.
fn line_segments(line: &serde_json::Value) -> Vec<Segment> {
    let seg = |s: &serde_json::Value, k: &str| s[k].as_f64().unwrap_or_else(|| panic!("segment without {k}: {s}"));
    line["segments"]
        .as_array()
        .expect("segments")
        .iter()
        .map(|s| Segment { start_s: seg(s, "start_s"), end_s: seg(s, "end_s"), peak: seg(s, "peak") as f32 })
        .collect()
}

/// `--threshold` gives the segments the page's slider gives for the same threshold. The page keeps the curve of
/// the clip scored at the bank's threshold and cuts it again at the segment threshold that `Engine.thresholdsFor`
/// gives (`Bank::override_threshold`), with `Engine.segments` (`pipeline::segments_for`); the command line scores
/// the file again with the bank's threshold overridden. Both kinds of bank: z-scores (the segment threshold moves
/// by the same difference) and version 1 raw distances (in proportion).
#[test]
fn score_threshold_gives_the_segments_of_the_pages_slider() {
    let clip = demo("fan-abnormal.wav");
    let v1 = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fan-demo-v1.bank");
    for bank_path in [demo("fan-demo.bank"), v1] {
        let bank = Bank::from_bytes(&std::fs::read(&bank_path).unwrap()).unwrap();
        let mut model = Model::embedded_for(&bank.meta.backbone).expect("an embedded model").unwrap();
        model.prepare_for(&bank).unwrap();
        let mut stream = MonoStream::open(&clip, ChannelSelect::Mix, TargetRate::FileRate).unwrap();
        let x = stream.read_to_end().unwrap();
        let r = score_clip(&model, &bank, &x, stream.target_sample_rate()).unwrap();
        let t0 = bank.meta.threshold;
        let thresholds =
            if bank.is_z_scored() { [t0 - 1.0, t0 + 0.5, t0 + 1.5] } else { [0.8 * t0, 1.1 * t0, 1.3 * t0] };
        let mut seen = Vec::new();
        for t in thresholds {
            let mut moved = bank.clone();
            moved.override_threshold(t).unwrap();
            let page = segments_for(&r.curve, r.hop_s, moved.meta.segment_threshold, r.duration_s);
            let o = bin()
                .args(["score", "--threshold", &t.to_string(), "--bank"])
                .arg(&bank_path)
                .arg(&clip)
                .output()
                .unwrap();
            let (out, err) = text(&o);
            assert_eq!(o.status.code(), Some(0), "{err}");
            let line: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
            let what = format!("{} at threshold {t}", bank_path.display());
            assert_eq!(line["threshold"].as_f64().unwrap() as f32, t, "{what}");
            assert_eq!(line["segment_threshold"].as_f64().unwrap() as f32, moved.meta.segment_threshold, "{what}");
            assert_eq!(line_segments(&line), page, "{what}");
            seen.push(page);
        }
        // The thresholds cut the curve differently, so the comparison is not between empty lists.
        assert!(seen.iter().any(|s| !s.is_empty()), "{}: no segments at any threshold", bank_path.display());
        assert!(seen.windows(2).any(|w| w[0] != w[1]), "{}: the same segments at every threshold", bank_path.display());
    }
}
