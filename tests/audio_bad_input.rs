//! Audio input under bad and real conditions: every bad input gives a clear error and no panic; real files
//! decode with the right rate, channel count and duration; long files stream with bounded memory.
//!
//! Real recordings are read from `../shared/data` (beside the crate); those tests are marked ignored and run with
//! `cargo test -- --include-ignored`.

#[path = "common/shared.rs"]
mod shared;

use sonomaly::audio::{
    decode, decode_file, resample, to_mono, ChannelSelect, DecodedAudio, MonoStream, StreamResampler,
};
use sonomaly::Error;
use std::io::Cursor;
use std::path::{Path, PathBuf};

/// A real data directory under `../shared/data`.
fn data_dir(sub: &str) -> PathBuf {
    shared::shared(&format!("data/{sub}"))
}

fn spec(channels: u16, sample_rate: u32, float: bool) -> hound::WavSpec {
    hound::WavSpec {
        channels,
        sample_rate,
        bits_per_sample: if float { 32 } else { 16 },
        sample_format: if float { hound::SampleFormat::Float } else { hound::SampleFormat::Int },
    }
}

/// A PCM16 WAV in memory; `f(frame, channel)` gives each sample.
fn wav_i16(channels: u16, rate: u32, frames: usize, f: impl Fn(usize, usize) -> i16) -> Vec<u8> {
    let mut bytes = Vec::new();
    {
        let mut w = hound::WavWriter::new(Cursor::new(&mut bytes), spec(channels, rate, false)).unwrap();
        for i in 0..frames {
            for c in 0..channels as usize {
                w.write_sample(f(i, c)).unwrap();
            }
        }
        w.finalize().unwrap();
    }
    bytes
}

/// A 32-bit float WAV in memory.
fn wav_f32(channels: u16, rate: u32, frames: usize, f: impl Fn(usize, usize) -> f32) -> Vec<u8> {
    let mut bytes = Vec::new();
    {
        let mut w = hound::WavWriter::new(Cursor::new(&mut bytes), spec(channels, rate, true)).unwrap();
        for i in 0..frames {
            for c in 0..channels as usize {
                w.write_sample(f(i, c)).unwrap();
            }
        }
        w.finalize().unwrap();
    }
    bytes
}

fn audio_msg(r: Result<impl std::fmt::Debug, Error>) -> String {
    match r {
        Err(Error::Audio(m)) => {
            println!("error (as expected): {m}");
            m
        }
        other => panic!("expected Error::Audio, got {other:?}"),
    }
}

fn invalid_msg(r: Result<impl std::fmt::Debug, Error>) -> String {
    match r {
        Err(Error::InvalidInput(m)) => {
            println!("error (as expected): {m}");
            m
        }
        other => panic!("expected Error::InvalidInput, got {other:?}"),
    }
}

fn write_tmp(dir: &tempfile::TempDir, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.path().join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

fn open_err(path: &Path) -> Result<(), Error> {
    MonoStream::open(path, ChannelSelect::Mix, 16_000).map(|_| ())
}

/// Deterministic pseudo-random bytes (xorshift).
fn noise_bytes(n: usize, mut s: u64) -> Vec<u8> {
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 32) as u8
        })
        .collect()
}

#[test]
fn empty_input() {
    let m = audio_msg(decode(&[], Some("wav")));
    assert!(m.contains("empty"), "{m}");
    let dir = tempfile::tempdir().unwrap();
    let p = write_tmp(&dir, "empty.wav", &[]);
    let m = audio_msg(decode_file(&p));
    assert!(m.contains("empty") && m.contains("empty.wav"), "{m}");
    let m = audio_msg(open_err(&p));
    assert!(m.contains("empty"), "{m}");
}

#[test]
fn missing_file_is_io_error_with_path() {
    let p = Path::new("/nonexistent/dir/clip.wav");
    match decode_file(p) {
        Err(e @ Error::Io { .. }) => {
            println!("error (as expected): {e}");
            assert!(e.to_string().contains("/nonexistent/dir/clip.wav"), "{e}");
        }
        other => panic!("expected Error::Io, got {other:?}"),
    }
    assert!(matches!(MonoStream::open(p, ChannelSelect::Mix, 16_000), Err(Error::Io { .. })));
}

#[test]
fn header_only_wav() {
    let bytes = wav_i16(1, 16_000, 0, |_, _| 0);
    assert_eq!(bytes.len(), 44, "hound writes a canonical 44-byte header");
    let m = audio_msg(decode(&bytes, Some("wav")));
    assert!(m.contains("no audio samples"), "{m}");
    let dir = tempfile::tempdir().unwrap();
    let p = write_tmp(&dir, "header.wav", &bytes);
    let m = audio_msg(decode_file(&p));
    assert!(m.contains("no audio samples") && m.contains("header.wav"), "{m}");
    let m = audio_msg(open_err(&p));
    assert!(m.contains("no audio samples"), "{m}");
}

#[test]
fn random_bytes() {
    for (seed, n) in [(1u64, 17usize), (2, 4096), (3, 1 << 20)] {
        let bytes = noise_bytes(n, seed);
        for hint in [None, Some("wav"), Some("flac"), Some("mp3"), Some("ogg")] {
            let m = audio_msg(decode(&bytes, hint));
            assert!(m.contains("not a recognised audio file") || m.contains("no audio"), "{m}");
        }
    }
    // Text and a lone RIFF tag are not audio either.
    audio_msg(decode(b"hello, this is not a sound file at all", None));
    audio_msg(decode(b"RIFF\x24\x00\x00\x00WAVE", Some("wav")));
    let dir = tempfile::tempdir().unwrap();
    let p = write_tmp(&dir, "noise.wav", &noise_bytes(10_000, 9));
    let m = audio_msg(decode_file(&p));
    assert!(m.contains("noise.wav"), "{m}");
    audio_msg(open_err(&p));
}

#[test]
fn nan_and_inf_samples() {
    let nan_at = |bad: f32, at: usize, ch: usize| {
        wav_f32(2, 16_000, 5000, move |i, c| if i == at && c == ch { bad } else { 0.1 })
    };
    let m = audio_msg(decode(&nan_at(f32::NAN, 1234, 1), Some("wav")));
    assert!(m.contains("sample 1234 of channel 1") && m.contains("NaN"), "{m}");
    let m = audio_msg(decode(&nan_at(f32::INFINITY, 4321, 0), Some("wav")));
    assert!(m.contains("sample 4321 of channel 0") && m.contains("+infinity"), "{m}");
    let m = audio_msg(decode(&nan_at(f32::NEG_INFINITY, 0, 1), Some("wav")));
    assert!(m.contains("sample 0 of channel 1") && m.contains("-infinity"), "{m}");
    // Finite but absurd (the resampler's FFT would overflow): refused the same way; loud audio is kept.
    let m = audio_msg(decode(&nan_at(3e38, 77, 0), Some("wav")));
    assert!(m.contains("sample 77 of channel 0") && m.contains("3e38") && m.contains("absurdly large"), "{m}");
    assert!(decode(&nan_at(8.0, 77, 0), Some("wav")).is_ok());
    // The first bad sample in time order is named, whatever its channel.
    let two = wav_f32(2, 16_000, 5000, |i, c| match (i, c) {
        (3000, 0) => f32::NAN,
        (2999, 1) => f32::INFINITY,
        _ => 0.0,
    });
    let m = audio_msg(decode(&two, None));
    assert!(m.contains("sample 2999 of channel 1"), "{m}");
    // Streaming names the index in the source too (past the first packet).
    let dir = tempfile::tempdir().unwrap();
    let p = write_tmp(&dir, "nan.wav", &nan_at(f32::NAN, 4500, 0));
    let mut s = MonoStream::open(&p, ChannelSelect::Mix, 44_100).unwrap();
    let m = loop {
        match s.next_chunk() {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("the NaN was not reported"),
            Err(Error::Audio(m)) => break m,
            Err(e) => panic!("unexpected error {e}"),
        }
    };
    println!("error (as expected): {m}");
    assert!(m.contains("sample 4500 of channel 0") && m.contains("NaN"), "{m}");
    assert!(s.next_chunk().unwrap().is_none(), "the stream ends after an error");
}

#[test]
fn eight_channels() {
    let frames = 3000;
    let bytes = wav_i16(8, 16_000, frames, |i, c| ((c as i32 + 1) * 1000 + (i % 100) as i32) as i16);
    let a = decode(&bytes, Some("wav")).unwrap();
    assert_eq!(a.channels.len(), 8);
    assert_eq!(a.len(), frames);
    assert_eq!(a.sample_rate, 16_000);
    for (c, ch) in a.channels.iter().enumerate() {
        for (i, &v) in ch.iter().enumerate() {
            assert_eq!(v, ((c as i32 + 1) * 1000 + (i % 100) as i32) as f32 / 32768.0);
        }
    }
    let ch0 = to_mono(&a, ChannelSelect::Channel(0)).unwrap();
    assert_eq!(ch0, a.channels[0]);
    let mix = to_mono(&a, ChannelSelect::Mix).unwrap();
    for (i, &v) in mix.iter().enumerate() {
        let mean = a.channels.iter().map(|c| c[i] as f64).sum::<f64>() / 8.0;
        assert!((v as f64 - mean).abs() < 1e-6, "frame {i}: {v} vs {mean}");
    }
    let m = invalid_msg(to_mono(&a, ChannelSelect::Channel(8)));
    assert!(m.contains("channel 8") && m.contains("8 channel"), "{m}");

    let dir = tempfile::tempdir().unwrap();
    let p = write_tmp(&dir, "eight.wav", &bytes);
    let s = MonoStream::open(&p, ChannelSelect::Channel(0), 16_000).unwrap();
    assert_eq!(s.source_channels(), 8);
    let m = invalid_msg(MonoStream::open(&p, ChannelSelect::Channel(8), 16_000).map(|_| ()));
    assert!(m.contains("8 channel"), "{m}");
}

#[test]
fn truncated_wav() {
    let frames = 20_000;
    let sample = |i: usize| ((i * 37 % 2000) as i16 - 1000) * 7;
    let bytes = wav_i16(1, 16_000, frames, |i, _| sample(i));
    // Cut in the middle of sample 12345 (one byte of it remains).
    let cut = &bytes[..44 + 2 * 12_345 + 1];
    let a = decode(cut, Some("wav")).expect("a truncated file decodes to its valid prefix");
    assert_eq!(a.len(), 12_345);
    for (i, &v) in a.channels[0].iter().enumerate() {
        assert_eq!(v, sample(i) as f32 / 32768.0);
    }
    // Stereo cut mid-frame: the partial frame is dropped.
    let st = wav_i16(2, 8000, 1000, |i, c| (i * 2 + c) as i16);
    let a = decode(&st[..44 + 4 * 700 + 2], None).unwrap();
    assert_eq!((a.channels.len(), a.len()), (2, 700));
    assert_eq!(a.channels[1][699], (699 * 2 + 1) as f32 / 32768.0);
    // Cut before the first whole sample: nothing to return.
    let m = audio_msg(decode(&bytes[..45], Some("wav")));
    assert!(m.contains("no audio samples"), "{m}");
    // Cut inside the header.
    audio_msg(decode(&bytes[..30], Some("wav")));
    // Streaming a truncated file yields the prefix too.
    let dir = tempfile::tempdir().unwrap();
    let p = write_tmp(&dir, "cut.wav", cut);
    let mut s = MonoStream::open(&p, ChannelSelect::Mix, 16_000).unwrap();
    // The header announces the full length, but a PCM file cannot hold more frames than its bytes: the duration
    // is bounded by the file's size (header bytes included), so a cut file is not taken for a long one.
    let d = s.duration_s().unwrap() * 16_000.0;
    assert!(frames as f64 > d && (12_345.0..=12_345.0 + 23.0).contains(&d), "{d} frames announced");
    let mut n = 0;
    while let Some(c) = s.next_chunk().unwrap() {
        n += c.len();
    }
    assert_eq!(n, 12_345);
}

#[test]
fn pcm16_round_trip_is_exact() {
    let frames = 50_000;
    let val = |i: usize, c: usize| -> i16 {
        match i {
            0 => i16::MIN,
            1 => i16::MAX,
            2 => 0,
            _ => ((i * 7919 + c * 104_729) % 65_536) as u16 as i16,
        }
    };
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("rt.wav");
    let mut w = hound::WavWriter::create(&p, spec(2, 22_050, false)).unwrap();
    for i in 0..frames {
        for c in 0..2 {
            w.write_sample(val(i, c)).unwrap();
        }
    }
    w.finalize().unwrap();
    let a = decode_file(&p).unwrap();
    assert_eq!(a.sample_rate, 22_050);
    assert_eq!(a.channels.len(), 2);
    assert_eq!(a.len(), frames);
    assert!((a.duration_s() - frames as f64 / 22_050.0).abs() < 1e-12);
    for c in 0..2 {
        for i in 0..frames {
            assert_eq!(a.channels[c][i], val(i, c) as f32 / 32768.0, "frame {i} channel {c}");
        }
    }
    assert_eq!(a.channels[0][0], -1.0);
    // In memory, same result.
    assert_eq!(decode(&std::fs::read(&p).unwrap(), Some("wav")).unwrap(), a);
    // Float WAV round trip too.
    let f = wav_f32(1, 16_000, 1000, |i, _| (i as f32 / 1000.0) - 0.5);
    let b = decode(&f, Some("wav")).unwrap();
    assert!(b.channels[0].iter().enumerate().all(|(i, &v)| v == (i as f32 / 1000.0) - 0.5));
}

#[test]
fn stream_equals_whole_file_path() {
    let rate = 22_050;
    let frames = 7 * rate as usize + 123;
    let bytes = wav_i16(2, rate, frames, |i, c| {
        let t = i as f64 / rate as f64;
        let f = if c == 0 { 440.0 } else { 1750.0 };
        ((2.0 * std::f64::consts::PI * f * t).sin() * 12_000.0) as i16
    });
    let dir = tempfile::tempdir().unwrap();
    let p = write_tmp(&dir, "st.wav", &bytes);
    for (select, target) in
        [(ChannelSelect::Mix, 16_000u32), (ChannelSelect::Channel(1), 44_100), (ChannelSelect::Mix, rate)]
    {
        let whole = decode_file(&p).unwrap();
        let expected = resample(&to_mono(&whole, select).unwrap(), rate, target).unwrap();
        let mut s = MonoStream::open(&p, select, target).unwrap();
        assert_eq!((s.source_sample_rate(), s.source_channels()), (rate, 2));
        assert_eq!(s.target_sample_rate(), target);
        let mut got = Vec::new();
        let mut chunks = 0;
        while let Some(c) = s.next_chunk().unwrap() {
            assert!(!c.is_empty());
            got.extend_from_slice(&c);
            chunks += 1;
        }
        assert!(s.next_chunk().unwrap().is_none());
        assert_eq!(got.len(), expected.len());
        assert_eq!(got.len() as u64, (frames as u64 * target as u64 + rate as u64 / 2) / rate as u64);
        let max_diff = got.iter().zip(&expected).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        println!("{select:?} -> {target} Hz: {chunks} chunks, max |stream - whole| = {max_diff:e}");
        assert!(max_diff < 1e-4, "{max_diff}");
    }
}

#[test]
fn stream_resampler_pieces() {
    let x: Vec<f32> = (0..30_000).map(|i| ((i as f32) * 0.05).sin() * 0.3).collect();
    let whole = resample(&x, 16_000, 44_100).unwrap();
    let mut r = StreamResampler::new(16_000, 44_100).unwrap();
    let mut got = Vec::new();
    for piece in x.chunks(333) {
        r.push(piece, &mut got).unwrap();
    }
    r.finish(&mut got).unwrap();
    assert_eq!(got, whole);
    assert!(r.push(&[0.0], &mut got).is_err(), "push after finish is refused");
}

fn vm_hwm_kib() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[test]
fn one_hour_stream_bounded_memory() {
    let rate = 16_000u32;
    let frames = 3600 * rate as usize;
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("hour.wav");
    {
        let mut w = hound::WavWriter::create(&p, spec(1, rate, false)).unwrap();
        let mut s = 0x2545_f491_4f6c_dd1du64;
        for i in 0..frames {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            // Noise plus a slow ramp: not silence, so the resampler does real work.
            let v = ((s >> 52) as i32 - 2048) + ((i / 1000) % 2000) as i32;
            w.write_sample(v as i16).unwrap();
        }
        w.finalize().unwrap();
    }
    println!("wrote {} ({} MB)", p.display(), std::fs::metadata(&p).unwrap().len() / 1_000_000);
    let before = vm_hwm_kib();
    let target = 44_100u32;
    let mut s = MonoStream::open(&p, ChannelSelect::Mix, target).unwrap();
    assert_eq!(s.source_sample_rate(), rate);
    assert_eq!(s.source_channels(), 1);
    assert_eq!(s.duration_s(), Some(3600.0));
    let mut total = 0u64;
    let mut peak = 0.0f32;
    let mut largest = 0usize;
    while let Some(c) = s.next_chunk().unwrap() {
        total += c.len() as u64;
        largest = largest.max(c.len());
        peak = c.iter().fold(peak, |m, v| m.max(v.abs()));
    }
    assert_eq!(total, frames as u64 * target as u64 / rate as u64);
    assert!(peak > 0.01 && peak < 1.0, "peak {peak}");
    match (before, vm_hwm_kib()) {
        (Some(b), Some(a)) => {
            let growth_mb = (a.saturating_sub(b)) as f64 / 1024.0;
            println!(
                "1 h at {rate} Hz -> {total} samples at {target} Hz; largest chunk {largest}; VmHWM {} MB -> {} \
                 MB, growth {growth_mb:.1} MB (the whole signal would be {} MB)",
                b / 1024,
                a / 1024,
                total * 4 / 1_000_000
            );
            assert!(growth_mb < 200.0, "peak RSS grew by {growth_mb} MB");
        }
        _ => println!("VmHWM not available on this system: memory not checked"),
    }
}

#[test]
#[ignore = "needs ../shared/data (real recordings beside the repository): cargo test -- --include-ignored"]
fn real_mimii_fan_clips() {
    let dir = data_dir("industrial/mimii_fan_id00/normal");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "wav"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no WAV in {}", dir.display());
    for p in &files {
        let a = decode_file(p).unwrap();
        assert_eq!(a.sample_rate, 16_000, "{}", p.display());
        assert_eq!(a.channels.len(), 1, "{}", p.display());
        assert_eq!(a.len(), 160_000, "{}", p.display());
        assert!((a.duration_s() - 10.0).abs() < 1e-9);
        let peak = a.channels[0].iter().fold(0.0f32, |m, v| m.max(v.abs()));
        assert!(peak > 0.0 && peak <= 1.0, "{}: peak {peak}", p.display());
    }
    // One clip to the default backbone rate: 10 s at 44.1 kHz.
    let a = decode_file(&files[0]).unwrap();
    let y = resample(&to_mono(&a, ChannelSelect::Channel(0)).unwrap(), 16_000, 44_100).unwrap();
    assert_eq!(y.len(), 441_000);
    println!("decoded {} MIMII fan clips (16 kHz mono, 10 s)", files.len());
}

#[test]
#[ignore = "needs ../shared/data (real recordings beside the repository): cargo test -- --include-ignored"]
fn real_lincity_stereo() {
    let dir = data_dir("env/lincity_ng");
    // Stereo files in the set (checked with a WAV reader): 11.025 kHz and 44.1 kHz.
    for (name, rate, frames) in [("SportsCroud1.wav", 11_025u32, 44_145usize), ("MarketFull1.wav", 44_100, 176_640)] {
        let p = dir.join(name);
        let a: DecodedAudio = decode_file(&p).unwrap();
        assert_eq!(a.sample_rate, rate, "{name}");
        assert_eq!(a.channels.len(), 2, "{name}");
        assert_eq!(a.len(), frames, "{name}");
        assert!((a.duration_s() - frames as f64 / rate as f64).abs() < 1e-9);
        assert_ne!(a.channels[0], a.channels[1], "{name}: the channels differ");
        let mix = to_mono(&a, ChannelSelect::Mix).unwrap();
        let mut s = MonoStream::open(&p, ChannelSelect::Mix, 44_100).unwrap();
        assert_eq!((s.source_sample_rate(), s.source_channels()), (rate, 2));
        assert!((s.duration_s().unwrap() - a.duration_s()).abs() < 1e-9);
        let mut got = Vec::new();
        while let Some(c) = s.next_chunk().unwrap() {
            got.extend(c);
        }
        let expected = resample(&mix, rate, 44_100).unwrap();
        assert_eq!(got.len(), expected.len());
        assert_eq!(got.len(), (frames as u64 * 44_100 / rate as u64) as usize);
        let max_diff = got.iter().zip(&expected).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        assert!(max_diff < 1e-4, "{name}: {max_diff}");
        println!("{name}: {rate} Hz, 2 channels, {:.3} s; streamed to 44.1 kHz, max diff {max_diff:e}", a.duration_s());
    }
}

#[test]
fn a_sample_rate_below_any_audio_is_refused() {
    // Found by fuzzing: a WAV at 4 Hz was resampled up to the model's rate, slowly, for nothing.
    let m = audio_msg(decode(&wav_i16(1, 4, 300, |i, _| i as i16), Some("wav")));
    assert!(m.contains("sample rate of 4 Hz") && m.contains("1000 Hz"), "{m}");
    assert!(decode(&wav_i16(1, 8000, 300, |i, _| i as i16), Some("wav")).is_ok(), "telephone audio is read");
}

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/decode").join(name)).unwrap()
}

/// An ID3v2.3 tag of one text frame whose length field says `frame_len` (the tag itself holds 11 bytes of it).
fn id3_tag(frame_len: u32) -> Vec<u8> {
    let mut frame = b"TIT2".to_vec();
    frame.extend_from_slice(&frame_len.to_be_bytes());
    frame.extend_from_slice(&[0, 0, 0]);
    frame.extend_from_slice(b"sonomaly\0\0");
    let n = frame.len() as u32;
    let mut t = b"ID3\x03\x00\x00".to_vec();
    t.extend((0..4).map(|i| ((n >> (21 - 7 * i)) & 0x7f) as u8));
    t.extend_from_slice(&frame);
    t
}

#[test]
fn a_format_marker_past_the_start_is_not_searched_for() {
    // Found by fuzzing: symphonia's probe scanned past the start for format markers and parsed the ID3v2 tags and
    // FLAC headers it met there, with the allocations their damaged lengths asked for (2.6-3.5 GB). The format is
    // now told from the first bytes only.
    let flac = fixture("tone.flac");
    let good = decode(&flac, None).unwrap();
    for junk in [&b"x"[..], b"BIFF", &noise_bytes(300, 5)] {
        let mut bytes = junk.to_vec();
        bytes.extend_from_slice(&flac);
        let m = audio_msg(decode(&bytes, Some("flac")));
        assert!(m.contains("not a recognised audio file") && m.contains("at its start"), "{m}");
    }
    // The same file behind an ID3v2 tag is read as it is (the tag is skipped, never parsed, even if damaged).
    for len in [11, 0x7fff_ffff] {
        let mut bytes = id3_tag(len);
        bytes.extend_from_slice(&flac);
        assert_eq!(decode(&bytes, None).unwrap().channels, good.channels, "frame length {len}");
    }
    // An MP3 behind two ID3v2 tags, the second one damaged: the MP3 reader syncs to the first frame after the
    // first tag and does not parse the second.
    let mp3 = fixture("tone.mp3");
    let good = decode(&mp3, None).unwrap();
    let mut bytes = id3_tag(11);
    bytes.extend_from_slice(&id3_tag(0x7fff_ffff));
    bytes.extend_from_slice(&mp3);
    let got = decode(&bytes, Some("mp3")).unwrap();
    assert_eq!((got.sample_rate, got.channels.len()), (good.sample_rate, good.channels.len()));
    assert!(got.len().abs_diff(good.len()) <= 1152, "{} vs {} samples", got.len(), good.len());
    // An AAC ADTS stream (sync 0xFFF, layer 0) is not taken for MP3: the page lets the browser decode it.
    let m = audio_msg(decode(&[0xff, 0xf1, 0x50, 0x80, 0x02, 0x1f, 0xfc, 0, 0, 0, 0, 0], None));
    assert!(sonomaly::audio::is_unsupported_format(&Error::Audio(m.clone())), "{m}");
}
