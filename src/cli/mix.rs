//! `sonomaly mix`: an EnvMix-style set from background and event recordings.

use super::*;

/// The arguments of `sonomaly mix`.
#[derive(clap::Args)]
pub(super) struct MixArgs {
    /// Background recordings or folders of them.
    #[arg(long, required = true, num_args = 1..)]
    pub(super) backgrounds: Vec<PathBuf>,
    /// Event recordings or folders of them.
    #[arg(long, required = true, num_args = 1..)]
    pub(super) events: Vec<PathBuf>,
    /// Output folder (fit/, test/, test/masks/, fit.csv, test.csv, split.json).
    #[arg(long)]
    pub(super) out: PathBuf,
    /// Clip length, seconds.
    #[arg(long, default_value_t = 10.0)]
    pub(super) length: f64,
    /// Sample rate of the written clips, Hz.
    #[arg(long, default_value_t = 16000)]
    pub(super) sample_rate: u32,
    /// Normal clips for fitting.
    #[arg(long, default_value_t = 30)]
    pub(super) fit_clips: usize,
    /// Normal test clips.
    #[arg(long, default_value_t = 30)]
    pub(super) test_normal: usize,
    /// Anomalous test clips (spread evenly over the SNRs).
    #[arg(long, default_value_t = 60)]
    pub(super) test_anomalous: usize,
    /// Event-to-background SNRs in dB, comma-separated.
    #[arg(long, default_value = "-6,0,6", allow_hyphen_values = true)]
    pub(super) snr: String,
    /// Seed of every random choice.
    #[arg(long, default_value_t = 0)]
    pub(super) seed: u64,
    /// Backbone folder whose front end the masks use (default: the embedded EfficientAT mn04_as).
    #[arg(long)]
    pub(super) model: Option<PathBuf>,
}

pub(super) fn mix(a: MixArgs) -> Result<i32> {
    let snrs_db = a
        .snr
        .split(',')
        .map(|s| s.trim().parse::<f64>().map_err(|_| anyhow::anyhow!("--snr: '{s}' is not a number")))
        .collect::<Result<Vec<f64>>>()?;
    let cfg = sonomaly::mix::MixConfig {
        length_s: a.length,
        sample_rate: a.sample_rate,
        fit_clips: a.fit_clips,
        test_normal: a.test_normal,
        test_anomalous: a.test_anomalous,
        snrs_db,
        seed: a.seed,
        ..Default::default()
    };
    let model = load_model(a.model.as_deref())?;
    let backgrounds = expand(&a.backgrounds)?;
    let events = expand(&a.events)?;
    let start = Instant::now();
    let s = sonomaly::mix::make_set(&backgrounds, &events, &a.out, &cfg, model.logmel())?;
    eprintln!(
        "wrote {} fit and {} test clips to {} ({} fit / {} test backgrounds, {} events, {} too short) in {:.1} s",
        s.fit.len(),
        s.test.len(),
        a.out.display(),
        s.fit_backgrounds.len(),
        s.test_backgrounds.len(),
        s.events.len(),
        s.skipped_short.len(),
        start.elapsed().as_secs_f64()
    );
    Ok(0)
}
