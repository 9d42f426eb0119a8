//! `sonomaly fit`: a bank from recordings of normal sound.

use super::*;

/// The arguments of `sonomaly fit`.
#[derive(clap::Args)]
pub(super) struct FitArgs {
    /// Where to write the bank file (refuses to overwrite unless --force).
    #[arg(long)]
    pub(super) out: PathBuf,
    #[command(flatten)]
    pub(super) patch: FitOptions,
    /// Overwrite --out if it exists.
    #[arg(long)]
    pub(super) force: bool,
    /// Normal recordings (WAV, FLAC, OGG, MP3) or folders of them.
    #[arg(required = true)]
    pub(super) files: Vec<PathBuf>,
}

pub(super) fn fit(a: FitArgs) -> Result<i32> {
    let select = channel(&a.patch.channel)?;
    let files = expand(&a.files)?;
    check_out(&a.out, a.force, &files)?;
    let (model, config) = a.patch.model_and_config()?;
    let start = Instant::now();
    let (clips, mut failed) = analyse_files(&files, select, &model);
    // Diagnostics for benches/fit_scaling.sh, beside the fitting stages' lines.
    if std::env::var_os("SONOMALY_CORESET_LOG").is_some() {
        eprintln!("stage: decoding and analysis in {:.3} s", start.elapsed().as_secs_f64());
    }
    let mut fitter = Fitter::new(&model, config)?;
    for (f, c) in clips {
        if let Err(e) = fitter.add_analysed(c) {
            failed += 1;
            eprintln!("skipped {}: {}", f.display(), about_file(&f, &e));
        }
    }
    if fitter.clips() == 0 {
        bail!("no file could be used: nothing to fit");
    }
    let pb = bar(1, "fitting");
    let (fitter_clips, seconds) = (fitter.clips(), fitter.seconds());
    let bank = fitter.finish(&model, &mut |p: Progress| {
        pb.set_length(p.total as u64);
        pb.set_position(p.done as u64);
        pb.set_message(p.stage);
        true
    })?;
    pb.finish_and_clear();
    let bytes = bank.to_bytes()?;
    // Written beside the target, then renamed: an interrupted write never leaves half a bank.
    sonomaly::bank::write_file_atomically(&a.out, &bytes)?;
    if fitter_clips < 3 || seconds < 30.0 {
        eprintln!(
            "warning: fitted on {fitter_clips} clip(s), {seconds:.1} s of normal audio; the threshold is rough \
             with so little. 30 s or more in several clips is better"
        );
    }
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
