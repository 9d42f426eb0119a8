//! The decoding fixtures (`tests/fixtures/decode/`, written by `tests/reference/decode_fixtures.py`): every format
//! and every damaged-file case decodes to the signal the generator wrote, with the warning or the error it must
//! give, through the library and through the command line. `tests/web_decode.rs` holds the wasm build to the
//! same cases; the last test here writes the native side of that comparison (`target/web-test/decode-native.json`).

#[path = "common/decode_cases.rs"]
mod decode_cases;

use decode_cases::*;
use sonomaly::audio::{
    decode, decode_file, is_unsupported_format, resample, to_mono, ChannelSelect, MonoStream, TargetRate,
};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Lowest signal-to-noise ratio accepted for the lossy fixtures, dB (Vorbis gives 32-36, MP3 32).
const LOSSY_SNR_DB: f64 = 25.0;

fn fixture_path(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/decode").join(file)
}

fn decodable() -> Vec<Case> {
    cases().into_iter().filter(|c| c.error.is_none()).collect()
}

#[test]
fn fixtures_are_the_ones_described() {
    for c in cases() {
        let b = fixture(&c.file);
        assert_eq!(b.len(), c.bytes, "{}: cases.json and the file disagree: rerun decode_fixtures.py", c.file);
        assert_eq!(std::fs::read(fixture_path(&c.file)).unwrap(), b, "{}", c.file);
    }
}

#[test]
fn every_format_and_repaired_case_decodes_to_the_signal_written() {
    for c in decodable().into_iter().filter(|c| !c.chained) {
        let a = decode(fixture(&c.file), hint(&c.file)).unwrap_or_else(|e| panic!("{}: {e}", c.file));
        let l = &c.links[0];
        let want = link_signal(l);
        assert_eq!((a.sample_rate, a.channels.len()), (l.rate, l.channels.len()), "{}", c.file);
        let frames = c.present_frames.unwrap_or(l.frames);
        assert_eq!(a.len(), frames, "{}: frames", c.file);
        for (ch, (got, want)) in a.channels.iter().zip(&want).enumerate() {
            if c.lossless {
                let bad = got.iter().zip(want).position(|(g, w)| g != w);
                assert_eq!(bad, None, "{} channel {ch}: first sample that differs from the one written", c.file);
            } else {
                let (snr, lag) = snr_db(got, want, 64);
                println!("{} channel {ch}: SNR {snr:.1} dB", c.file);
                assert!(snr >= LOSSY_SNR_DB && lag == 0, "{} channel {ch}: SNR {snr:.1} dB at lag {lag}", c.file);
            }
        }
        match &c.warning {
            Some(w) => {
                assert_eq!(a.warnings.len(), 1, "{}: {:?}", c.file, a.warnings);
                assert!(a.warnings[0].contains(w.as_str()), "{}: {:?} lacks '{w}'", c.file, a.warnings);
                println!("{}: warning: {}", c.file, a.warnings[0]);
            }
            None => assert!(a.warnings.is_empty(), "{}: unexpected warnings {:?}", c.file, a.warnings),
        }
    }
}

#[test]
fn the_truncated_wav_says_both_durations() {
    let a = decode(fixture("truncated.wav"), Some("wav")).unwrap();
    let w = &a.warnings[0];
    assert!(w.contains("announces 1.000 s") && w.contains("only 0.500 s"), "{w}");
    let mut s = MonoStream::open(&fixture_path("truncated.wav"), ChannelSelect::Mix, TargetRate::FileRate).unwrap();
    // The header says 1 s; the file's bytes hold 0.5 s (and its 44 header bytes): the duration is bounded by them.
    let d = s.duration_s().unwrap();
    assert!((0.5..0.501).contains(&d), "duration {d}");
    assert!(s.warnings().is_empty(), "no warning before the end is reached");
    let x = s.read_to_end().unwrap();
    assert_eq!(x.len(), 11_025);
    let w = s.warnings();
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(w[0].starts_with(&fixture_path("truncated.wav").display().to_string()), "names the file: {w:?}");
}

#[test]
fn chained_ogg_every_link_from_its_own_rate() {
    let c = case("chained.ogg");
    let (l1, l2) = (&c.links[0], &c.links[1]);
    // The mono stream the CLI and the page score: each link resampled from its own rate to 44.1 kHz.
    let mut s =
        MonoStream::from_bytes(fixture("chained.ogg").to_vec(), "chained.ogg", None, ChannelSelect::Mix, 44_100)
            .unwrap();
    let x = s.read_to_end().unwrap();
    let links: Vec<_> = s.links().iter().map(|l| (l.sample_rate, l.channels, l.frames as usize)).collect();
    assert_eq!(links, vec![(l1.rate, 2, l1.frames), (l2.rate, 1, l2.frames)]);
    assert_eq!(x.len(), l1.frames + 2 * l2.frames, "1.5 s + 1.5 s at 44.1 kHz");
    assert!(s.warnings().is_empty(), "{:?}", s.warnings());
    let want1 = mix(&link_signal(l1));
    let want2 = resample(&link_signal(l2)[0], l2.rate, 44_100).unwrap();
    let (snr1, lag1) = snr_db(&x[..l1.frames], &want1, 8);
    let (snr2, lag2) = snr_db(&x[l1.frames..], &want2, 8);
    println!("chained.ogg: link 1 SNR {snr1:.1} dB, link 2 (from 22.05 kHz) SNR {snr2:.1} dB");
    assert!(snr1 >= LOSSY_SNR_DB && lag1 == 0, "link 1: {snr1} dB at lag {lag1}");
    assert!(snr2 >= LOSSY_SNR_DB && lag2 == 0, "link 2: {snr2} dB at lag {lag2}");
    // Link 2 read at link 1's rate would be twice as fast: its 880 Hz tone would sit at 1760 Hz.
    let wrong = resample(&link_signal(l2)[0], 44_100, 44_100).unwrap();
    assert!(snr_db(&x[l1.frames..], &wrong, 8).0 < 3.0);
    // At the file's rate (what the CLI hands the pipeline for a short file): link 2 is resampled to 44.1 kHz.
    let mut s =
        MonoStream::from_bytes(fixture("chained.ogg").to_vec(), "c", None, ChannelSelect::Mix, TargetRate::FileRate)
            .unwrap();
    assert_eq!(s.read_to_end().unwrap(), x);
    assert_eq!(s.target_sample_rate(), 44_100);
    // Planar: link 2 follows link 1's format, with a warning that says how.
    let a = decode(fixture("chained.ogg"), Some("ogg")).unwrap();
    assert_eq!((a.sample_rate, a.channels.len(), a.len()), (44_100, 2, l1.frames + 2 * l2.frames));
    assert!(a.warnings.len() == 1 && a.warnings[0].contains("link 2 of 2") && a.warnings[0].contains("22050 Hz mono"));
    let m = to_mono(&a, ChannelSelect::Mix).unwrap();
    let worst = m.iter().zip(&x).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    assert!(worst < 1e-5, "planar then mono vs mono stream: {worst}");
    // Channel 1 exists in link 1 only: the error says where.
    let mut s =
        MonoStream::from_bytes(fixture("chained.ogg").to_vec(), "chained.ogg", None, ChannelSelect::Channel(1), 44_100)
            .unwrap();
    let e = s.read_to_end().unwrap_err().to_string();
    assert!(e.contains("link 2 of 2") && e.contains("1 channel"), "{e}");
}

#[test]
fn the_mono_stream_equals_decode_then_resample() {
    for c in decodable().into_iter().filter(|c| !c.chained) {
        let a = decode(fixture(&c.file), hint(&c.file)).unwrap();
        let want = resample(&to_mono(&a, ChannelSelect::Mix).unwrap(), a.sample_rate, 44_100).unwrap();
        let mut s =
            MonoStream::from_bytes(fixture(&c.file).to_vec(), &c.file, hint(&c.file), ChannelSelect::Mix, 44_100)
                .unwrap();
        assert_eq!(s.read_to_end().unwrap(), want, "{}", c.file);
        assert_eq!(s.warnings().len(), a.warnings.len(), "{}", c.file);
    }
}

#[test]
fn refused_files_name_the_problem() {
    for c in cases().into_iter().filter(|c| c.error.is_some()) {
        let want = c.error.as_deref().unwrap();
        let e = decode(fixture(&c.file), hint(&c.file)).unwrap_err();
        println!("{}: {e}", c.file);
        assert!(e.to_string().contains(want), "{}: {e}", c.file);
        assert!(!e.to_string().contains("not a recognised audio file") || c.browser_fallback, "{}: {e}", c.file);
        assert_eq!(is_unsupported_format(&e), c.browser_fallback, "{}: {e}", c.file);
        let e = MonoStream::open(&fixture_path(&c.file), ChannelSelect::Mix, 44_100).err().unwrap();
        assert!(e.to_string().contains(want) && e.to_string().contains(&c.file), "{}: {e}", c.file);
    }
}

#[test]
fn a_file_reads_as_its_bytes() {
    for c in decodable() {
        let from_bytes = decode(fixture(&c.file), hint(&c.file)).unwrap();
        let from_file = decode_file(&fixture_path(&c.file)).unwrap();
        assert_eq!(from_bytes.channels, from_file.channels, "{}", c.file);
        assert_eq!(from_bytes.warnings.len(), from_file.warnings.len(), "{}", c.file);
    }
}

fn sonomaly(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_sonomaly")).args(args).output().expect("the CLI runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_cli_reads_every_case_and_warns_on_stderr() {
    let dir = tempfile::tempdir().unwrap();
    let bank = dir.path().join("tones.bank");
    let p = |f: &str| fixture_path(f).display().to_string();
    // A bank fitted on two intact fixtures: the damaged ones are scored against it.
    let (code, _, err) = sonomaly(&["fit", "--out", bank.to_str().unwrap(), &p("tone.wav"), &p("tone.flac")]);
    assert_eq!(code, 0, "{err}");
    let files = ["truncated.wav", "chained.ogg", "riff-size-short.wav", "odd-chunk-damaged.wav", "opus.ogg"];
    let mut args = vec!["score".to_string(), "--bank".to_string(), bank.display().to_string()];
    args.extend(files.iter().map(|f| p(f)));
    let args: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
    let (code, out, err) = sonomaly(&args);
    println!("{err}");
    assert_eq!(code, 3, "two files cannot be read: {err}");
    let lines: Vec<serde_json::Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let dur = |f: &str| {
        lines.iter().find(|l| l["file"].as_str().unwrap().ends_with(f)).unwrap_or_else(|| panic!("{f} scored"))
            ["duration_s"]
            .as_f64()
            .unwrap()
    };
    assert!((dur("chained.ogg") - 3.0).abs() < 0.01, "both links scored: {}", dur("chained.ogg"));
    assert!((dur("truncated.wav") - 0.5).abs() < 0.01);
    assert!((dur("riff-size-short.wav") - 1.0).abs() < 0.01);
    assert!(err.contains("warning: ") && err.contains("truncated.wav: shorter than its header says"), "{err}");
    assert!(err.contains("riff-size-short.wav: the RIFF header gives a size"), "{err}");
    assert!(err.contains("odd-chunk-damaged.wav: the WAV file is damaged: the 'bext' chunk at byte 36"), "{err}");
    assert!(err.contains("opus.ogg: the audio codec is not supported (Opus"), "{err}");
}

/// The native side of `tests/web_decode.rs`: per fixture, what the native build decodes (mono at 44.1 kHz, as
/// the default model takes it), for the wasm build to match.
#[test]
fn writes_the_native_reference_for_the_wasm_test() {
    let mut out = Vec::new();
    for c in decodable() {
        let mut s =
            MonoStream::from_bytes(fixture(&c.file).to_vec(), &c.file, hint(&c.file), ChannelSelect::Mix, 44_100)
                .unwrap();
        let x = s.read_to_end().unwrap();
        let (len, rms, picks) = fingerprint(&x);
        out.push(serde_json::json!({
            "file": c.file,
            "len": len,
            "rms": rms,
            "picks": picks,
            "links": s.links().iter().map(|l| [l.sample_rate as u64, l.channels as u64, l.frames]).collect::<Vec<_>>(),
            "warnings": s.warnings().len(),
        }));
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/web-test");
    std::fs::create_dir_all(&dir).unwrap();
    let text = serde_json::to_string_pretty(&out).unwrap();
    std::fs::write(dir.join("decode-native.json"), text).unwrap();
}
