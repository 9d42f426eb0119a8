//! `sonomaly`: fit banks on normal recordings, score recordings, inspect banks.
//!
//! Exit codes: 0 success; 1 nothing could be done (bad bank, model or arguments); 2 usage error;
//! 3 some files of a batch failed (each is reported on stderr, the others were processed).

#[cfg(target_arch = "wasm32")]
fn main() {}

#[cfg(not(target_arch = "wasm32"))]
fn main() {
    std::process::exit(cli::run());
}

#[cfg(not(target_arch = "wasm32"))]
mod cli {
    use std::io::Write;
    use std::path::{Path, PathBuf};
    use std::sync::Mutex;
    use std::time::Instant;

    use anyhow::{bail, Context, Result};
    use clap::{Parser, Subcommand, ValueEnum};
    use indicatif::{ProgressBar, ProgressStyle};
    use rayon::prelude::*;
    use serde::Serialize;

    use sonomaly::anomaly_map::segments;
    use sonomaly::audio::{decode_file, to_mono, ChannelSelect, MonoStream};
    use sonomaly::bank::Bank;
    use sonomaly::detector::{DetectorConfig, PatchCoreConfig};
    use sonomaly::embedding::EmbeddingConfig;
    use sonomaly::pipeline::{score_clip, FitConfig, Fitter, Model, Progress, Segment, StreamScorer};

    /// Audio anomaly detection that shows where and when a sound is abnormal.
    #[derive(Parser)]
    #[command(name = "sonomaly", version, about, long_about = None)]
    struct Cli {
        #[command(subcommand)]
        command: Command,
    }

    #[derive(Clone, Copy, ValueEnum)]
    enum DetectorKind {
        /// PatchCore: greedy coreset memory bank, nearest-neighbour patch distances.
        Patchcore,
    }

    #[derive(Subcommand)]
    enum Command {
        /// Fit a bank on recordings of normal sound.
        Fit {
            /// Where to write the bank file (refuses to overwrite unless --force).
            #[arg(long)]
            out: PathBuf,
            /// Backbone folder with model.onnx and spec.json (default: the embedded aisfx CNN14).
            #[arg(long)]
            model: Option<PathBuf>,
            /// Detector.
            #[arg(long, value_enum, default_value = "patchcore")]
            detector: DetectorKind,
            /// Layers that make a patch, comma-separated (backbone outputs and/or `logmel`).
            #[arg(long)]
            layers: Option<String>,
            /// Spectrogram frames (and mel bins) per patch.
            #[arg(long)]
            grid_stride: Option<usize>,
            /// Fraction of normal patches kept in the memory bank.
            #[arg(long, default_value_t = 0.1)]
            coreset_ratio: f32,
            /// Seed of the random projection and the coreset's first centre.
            #[arg(long, default_value_t = 0)]
            seed: u64,
            /// Divide each clip by its peak before the front end (aisfx's own preprocessing).
            #[arg(long)]
            peak_normalize: bool,
            /// Scale each layer to unit RMS norm on the normal patches (so no layer dominates the distances).
            #[arg(long)]
            balance_layers: bool,
            /// Channel to analyse: `mix` or a 0-based index.
            #[arg(long, default_value = "mix")]
            channel: String,
            /// Overwrite --out if it exists.
            #[arg(long)]
            force: bool,
            /// Normal recordings (WAV, FLAC, OGG, MP3) or folders of them.
            #[arg(required = true)]
            files: Vec<PathBuf>,
        },
        /// Score recordings against a bank: one JSON object per line on stdout.
        Score {
            /// Bank file from `sonomaly fit`.
            #[arg(long)]
            bank: PathBuf,
            /// Backbone folder (default: the embedded aisfx CNN14).
            #[arg(long)]
            model: Option<PathBuf>,
            /// Write a PNG per file: spectrogram with the anomaly map, score curve, segments.
            #[arg(long)]
            heatmap_dir: Option<PathBuf>,
            /// Clip-score threshold instead of the bank's label-free default.
            #[arg(long)]
            threshold: Option<f32>,
            /// Channel to analyse: `mix` or a 0-based index.
            #[arg(long, default_value = "mix")]
            channel: String,
            /// Recordings or folders of them.
            #[arg(required = true)]
            files: Vec<PathBuf>,
        },
        /// Describe a bank file.
        Info {
            /// Bank file.
            bank: PathBuf,
            /// Print JSON instead of text.
            #[arg(long)]
            json: bool,
        },
    }

    const AUDIO_EXTENSIONS: [&str; 6] = ["wav", "flac", "ogg", "mp3", "oga", "wave"];

    fn expand(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
        let mut out = Vec::new();
        for p in paths {
            if p.is_dir() {
                let mut found: Vec<PathBuf> = std::fs::read_dir(p)
                    .with_context(|| format!("reading folder {}", p.display()))?
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|f| {
                        f.extension()
                            .and_then(|e| e.to_str())
                            .is_some_and(|e| AUDIO_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
                    })
                    .collect();
                found.sort();
                if found.is_empty() {
                    bail!("folder {} holds no audio file ({})", p.display(), AUDIO_EXTENSIONS.join(", "));
                }
                out.extend(found);
            } else {
                out.push(p.clone());
            }
        }
        Ok(out)
    }

    fn channel(s: &str) -> Result<ChannelSelect> {
        if s.eq_ignore_ascii_case("mix") {
            return Ok(ChannelSelect::Mix);
        }
        s.parse::<usize>()
            .map(ChannelSelect::Channel)
            .map_err(|_| anyhow::anyhow!("--channel must be 'mix' or a 0-based channel number, got '{s}'"))
    }

    fn load_model(dir: Option<&Path>) -> Result<Model> {
        Ok(match dir {
            Some(d) => Model::from_dir(d)?,
            None => Model::embedded_default()?,
        })
    }

    fn read_mono(path: &Path, select: ChannelSelect) -> sonomaly::Result<(Vec<f32>, u32)> {
        let audio = decode_file(path)?;
        Ok((to_mono(&audio, select)?, audio.sample_rate))
    }

    fn bar(len: u64, what: &str) -> ProgressBar {
        let pb = ProgressBar::new(len);
        pb.set_style(
            ProgressStyle::with_template("{prefix:>10} [{bar:30}] {pos}/{len} {wide_msg} ({elapsed}, eta {eta})")
                .expect("valid template")
                .progress_chars("=> "),
        );
        pb.set_prefix(what.to_string());
        pb
    }

    pub fn run() -> i32 {
        let cli = Cli::parse();
        let result = match cli.command {
            Command::Fit {
                out,
                model,
                detector,
                layers,
                grid_stride,
                coreset_ratio,
                seed,
                peak_normalize,
                balance_layers,
                channel: ch,
                force,
                files,
            } => fit(FitArgs {
                out,
                model,
                detector,
                layers,
                grid_stride,
                coreset_ratio,
                seed,
                peak_normalize,
                balance_layers,
                channel: ch,
                force,
                files,
            }),
            Command::Score { bank, model, heatmap_dir, threshold, channel: ch, files } => {
                score(&bank, model.as_deref(), heatmap_dir.as_deref(), threshold, &ch, &files)
            }
            Command::Info { bank, json } => info(&bank, json),
        };
        match result {
            Ok(code) => code,
            Err(e) => {
                eprintln!("error: {e:#}");
                1
            }
        }
    }

    struct FitArgs {
        out: PathBuf,
        model: Option<PathBuf>,
        detector: DetectorKind,
        layers: Option<String>,
        grid_stride: Option<usize>,
        coreset_ratio: f32,
        seed: u64,
        peak_normalize: bool,
        balance_layers: bool,
        channel: String,
        force: bool,
        files: Vec<PathBuf>,
    }

    fn fit(a: FitArgs) -> Result<i32> {
        if a.out.exists() && !a.force {
            bail!("{} already exists; pass --force to overwrite it or choose another --out", a.out.display());
        }
        let select = channel(&a.channel)?;
        let files = expand(&a.files)?;
        let mut model = load_model(a.model.as_deref())?;
        let mut emb = EmbeddingConfig::default();
        if let Some(l) = &a.layers {
            emb = emb.with_layers(l)?;
        }
        if let Some(s) = a.grid_stride {
            emb.grid_stride = s;
        }
        emb.balance_layers = a.balance_layers;
        model.set_embedding(emb)?;
        model.set_peak_normalize(a.peak_normalize)?;
        let detector = match a.detector {
            DetectorKind::Patchcore => DetectorConfig::Patchcore(PatchCoreConfig {
                coreset_ratio: a.coreset_ratio,
                seed: a.seed,
                ..Default::default()
            }),
        };
        let config = FitConfig { detector, ..Default::default() };
        let start = Instant::now();
        let pb = bar(files.len() as u64, "analysing");
        let analysed: Vec<_> = files
            .par_iter()
            .map(|f| {
                pb.set_message(f.display().to_string());
                let r = read_mono(f, select).and_then(|(x, sr)| Fitter::analyse_clip(&model, &x, sr));
                pb.inc(1);
                (f, r)
            })
            .collect();
        pb.finish_and_clear();
        let mut fitter = Fitter::new(&model, config);
        let mut failed = 0;
        for (f, r) in analysed {
            match r {
                Ok(c) => fitter.add_analysed(c),
                Err(e) => {
                    failed += 1;
                    eprintln!("skipped {}: {e}", f.display());
                }
            }
        }
        if fitter.clips() == 0 {
            bail!("no file could be used: nothing to fit");
        }
        let pb = bar(1, "fitting");
        let bank = fitter.finish(&model, &mut |p: Progress| {
            pb.set_length(p.total as u64);
            pb.set_position(p.done as u64);
            pb.set_message(p.stage);
            true
        })?;
        pb.finish_and_clear();
        let bytes = bank.to_bytes()?;
        // Write beside the target, then rename: an interrupted write never leaves half a bank.
        let tmp = a.out.with_extension("partial");
        std::fs::write(&tmp, &bytes).with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, &a.out).with_context(|| format!("moving {} to {}", tmp.display(), a.out.display()))?;
        let i = bank.info();
        eprintln!(
            "wrote {} ({:.1} MB): {} clips, {:.1} s of audio, memory bank {}, threshold {:.4}, in {:.1} s",
            a.out.display(),
            bytes.len() as f64 / 1e6,
            i.clips_fitted,
            i.seconds_fitted,
            i.memory_bank,
            i.threshold,
            start.elapsed().as_secs_f64()
        );
        Ok(if failed > 0 { 3 } else { 0 })
    }

    #[derive(Serialize)]
    struct ScoreLine<'a> {
        file: String,
        score: f32,
        threshold: f32,
        is_anomaly: bool,
        segments: &'a [Segment],
        segment_threshold: f32,
        duration_s: f64,
        #[serde(skip_serializing_if = "Option::is_none")]
        heatmap: Option<String>,
    }

    /// Files longer than this are scored as a stream with bounded memory (no heatmap PNG).
    const LONG_FILE_S: f64 = 600.0;

    /// Score, segments and duration of a long file, read and scored window by window.
    fn score_long(
        path: &Path,
        select: ChannelSelect,
        model: &Model,
        bank: &Bank,
    ) -> sonomaly::Result<(f32, Vec<Segment>, f64)> {
        let mut stream = MonoStream::open(path, select, model.sample_rate())?;
        let mut scorer = StreamScorer::new(model, bank, model.sample_rate())?;
        let mut curve = Vec::new();
        let mut samples = 0usize;
        while let Some(chunk) = stream.next_chunk()? {
            samples += chunk.len();
            for u in scorer.push(model, bank, &chunk)? {
                curve.extend(u.curve);
            }
        }
        for u in scorer.finish(model, bank)? {
            curve.extend(u.curve);
        }
        let segs = segments(&curve, model.hop_s(), bank.meta.segment_threshold, 2);
        Ok((scorer.score(), segs, samples as f64 / model.sample_rate() as f64))
    }

    fn load_bank(path: &Path) -> Result<Bank> {
        let bytes = std::fs::read(path).with_context(|| format!("reading bank {}", path.display()))?;
        Bank::from_bytes(&bytes).with_context(|| format!("loading bank {}", path.display()))
    }

    fn score(
        bank_path: &Path,
        model_dir: Option<&Path>,
        heatmap_dir: Option<&Path>,
        threshold: Option<f32>,
        ch: &str,
        files: &[PathBuf],
    ) -> Result<i32> {
        let select = channel(ch)?;
        let files = expand(files)?;
        let mut bank = load_bank(bank_path)?;
        if let Some(t) = threshold {
            if !t.is_finite() {
                bail!("--threshold must be a finite number");
            }
            bank.meta.threshold = t;
        }
        let mut model = load_model(model_dir)?;
        model.prepare_for(&bank)?;
        if let Some(d) = heatmap_dir {
            std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
        }
        let pb = bar(files.len() as u64, "scoring");
        let stdout = Mutex::new(std::io::stdout());
        let failed = std::sync::atomic::AtomicUsize::new(0);
        files.par_iter().enumerate().for_each(|(i, f)| {
            let long = MonoStream::open(f, select, model.sample_rate())
                .ok()
                .and_then(|s| s.duration_s())
                .is_some_and(|d| d > LONG_FILE_S);
            if long {
                match score_long(f, select, &model, &bank) {
                    Ok((score, segs, duration_s)) => {
                        if heatmap_dir.is_some() {
                            pb.suspend(|| {
                                eprintln!(
                                    "{}: longer than {LONG_FILE_S} s, scored as a stream, no heatmap",
                                    f.display()
                                )
                            });
                        }
                        let line = ScoreLine {
                            file: f.display().to_string(),
                            score,
                            threshold: bank.meta.threshold,
                            is_anomaly: score > bank.meta.threshold,
                            segments: &segs,
                            segment_threshold: bank.meta.segment_threshold,
                            duration_s,
                            heatmap: None,
                        };
                        let json = serde_json::to_string(&line).expect("serialisable");
                        pb.suspend(|| {
                            let _ = writeln!(stdout.lock().expect("stdout lock"), "{json}");
                        });
                    }
                    Err(e) => {
                        failed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        pb.suspend(|| eprintln!("error: {}: {e}", f.display()));
                    }
                }
                pb.inc(1);
                return;
            }
            let r = read_mono(f, select).and_then(|(x, sr)| score_clip(&model, &bank, &x, sr));
            match r {
                Ok(r) => {
                    let heatmap = heatmap_dir.map(|d| {
                        let stem = f.file_stem().and_then(|s| s.to_str()).unwrap_or("clip");
                        d.join(format!("{i:04}_{stem}.png"))
                    });
                    if let Some(p) = &heatmap {
                        if let Err(e) = sonomaly::render::save_png(&r, p) {
                            pb.suspend(|| eprintln!("{}: heatmap not written: {e}", f.display()));
                        }
                    }
                    let line = ScoreLine {
                        file: f.display().to_string(),
                        score: r.score,
                        threshold: r.threshold,
                        is_anomaly: r.is_anomaly,
                        segments: &r.segments,
                        segment_threshold: r.segment_threshold,
                        duration_s: r.duration_s,
                        heatmap: heatmap.map(|p| p.display().to_string()),
                    };
                    let json = serde_json::to_string(&line).expect("serialisable");
                    pb.suspend(|| {
                        let mut out = stdout.lock().expect("stdout lock");
                        let _ = writeln!(out, "{json}");
                    });
                }
                Err(e) => {
                    failed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    pb.suspend(|| eprintln!("error: {}: {e}", f.display()));
                }
            }
            pb.inc(1);
        });
        pb.finish_and_clear();
        let failed = failed.into_inner();
        if failed > 0 {
            eprintln!("{failed} of {} files could not be scored", files.len());
            return Ok(3);
        }
        Ok(0)
    }

    fn info(path: &Path, json: bool) -> Result<i32> {
        let bytes = std::fs::read(path).with_context(|| format!("reading bank {}", path.display()))?;
        let bank = Bank::from_bytes(&bytes).with_context(|| format!("loading bank {}", path.display()))?;
        let mut i = bank.info();
        i.size_bytes = bytes.len();
        if json {
            println!("{}", serde_json::to_string_pretty(&i)?);
        } else {
            println!("bank          {}", path.display());
            println!("detector      {}", i.detector);
            println!("backbone      {} (sha256 {}...)", i.backbone, i.backbone_sha256);
            println!("front end     {}", i.front_end);
            println!("layers        {}", i.layers);
            println!("memory bank   {}", i.memory_bank);
            println!("fitted on     {} clips, {:.1} s", i.clips_fitted, i.seconds_fitted);
            println!("threshold     {:.4} (clip), {:.4} (segments)", i.threshold, i.segment_threshold);
            println!("created       {}", i.created);
            println!("size          {:.2} MB", i.size_bytes as f64 / 1e6);
        }
        Ok(0)
    }
}
