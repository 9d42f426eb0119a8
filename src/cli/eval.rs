//! `sonomaly eval`: fit (or load a bank), score a labelled test list, report the metrics.

use super::*;

/// The arguments of `sonomaly eval`.
#[derive(clap::Args)]
pub(super) struct EvalArgs {
    /// Normal recordings for fitting: files, folders, or a CSV with a `path` column (relative to it).
    #[arg(long, num_args = 1.., required_unless_present = "bank")]
    pub(super) fit: Vec<PathBuf>,
    /// Test list: CSV with `path,label` and optionally `onset_s,offset_s,snr_db,mask`.
    #[arg(long)]
    pub(super) test: PathBuf,
    /// Use this bank instead of fitting one.
    #[arg(long, conflicts_with = "fit")]
    pub(super) bank: Option<PathBuf>,
    #[command(flatten)]
    pub(super) patch: FitOptions,
    /// Bootstrap resamples for the 95 % intervals (0: no intervals).
    #[arg(long, default_value_t = 1000)]
    pub(super) bootstrap: usize,
    /// Anomalous clips used for faithfulness (0 = skip it).
    #[arg(long, default_value_t = 30)]
    pub(super) faithfulness_clips: usize,
    /// Name of the set in the report.
    #[arg(long, default_value = "test")]
    pub(super) name: String,
    /// Print the report as JSON on stdout (instead of the Markdown table).
    #[arg(long)]
    pub(super) json: bool,
    /// Also write the Markdown report here.
    #[arg(long)]
    pub(super) markdown: Option<PathBuf>,
    /// Also write a self-contained HTML report here.
    #[arg(long)]
    pub(super) html: Option<PathBuf>,
}

/// Files from paths: a `.csv` contributes its `path` column (relative to the CSV), folders their audio files.
fn expand_lists(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in paths {
        if p.extension().and_then(|e| e.to_str()).is_some_and(|e| e.eq_ignore_ascii_case("csv")) {
            let items = sonomaly::eval::read_test_csv(p)?;
            if items.iter().any(|i| i.anomaly) {
                bail!("{} lists anomalous clips; fitting takes normal clips only", p.display());
            }
            out.extend(items.into_iter().map(|i| i.path));
        } else {
            out.extend(expand(std::slice::from_ref(p))?);
        }
    }
    Ok(out)
}

pub(super) fn eval(a: EvalArgs) -> Result<i32> {
    let select = channel(&a.patch.channel)?;
    let items = sonomaly::eval::read_test_csv(&a.test)?;
    let start = Instant::now();
    let (mut model, bank) = match &a.bank {
        // The bank brings its own embeddings and front end; only the backbone comes from the options.
        Some(b) => {
            let bank = load_bank(b)?;
            (model_for_bank(a.patch.model.as_deref(), &bank)?, bank)
        }
        None => {
            let (model, config) = a.patch.model_and_config()?;
            let files = expand_lists(&a.fit)?;
            let pb = ProgressBar::hidden();
            let analysed: Vec<_> = files
                .par_iter()
                .map(|f| (f, read_mono(f, select, &pb).and_then(|(x, sr)| Fitter::analyse_clip(&model, &x, sr))))
                .collect();
            let mut fitter = Fitter::new(&model, config)?;
            for (f, r) in analysed {
                fitter
                    .add_analysed(r.with_context(|| format!("fitting on {}", f.display()))?)
                    .with_context(|| format!("fitting on {}", f.display()))?;
            }
            let bank = fitter.finish(&model, &mut |_| true)?;
            (model, bank)
        }
    };
    let fit_s = start.elapsed().as_secs_f64();
    model.prepare_for(&bank)?;
    let cfg = sonomaly::eval::EvalConfig {
        bootstrap_rounds: a.bootstrap,
        seed: a.patch.seed,
        faithfulness_clips: a.faithfulness_clips,
        channel: select,
    };
    let report = sonomaly::eval::evaluate(&model, &bank, &items, &cfg, &a.name)?;
    let md = sonomaly::eval::markdown(&report);
    if let Some(p) = &a.markdown {
        std::fs::write(p, &md).with_context(|| format!("writing {}", p.display()))?;
    }
    if let Some(p) = &a.html {
        std::fs::write(p, sonomaly::eval::html(std::slice::from_ref(&report)))
            .with_context(|| format!("writing {}", p.display()))?;
    }
    if a.json {
        let mut v = serde_json::to_value(&report)?;
        v["fit_seconds"] = serde_json::json!(fit_s);
        println!("{}", serde_json::to_string(&v)?);
    } else {
        print!("{md}");
    }
    eprintln!(
        "eval: fit {:.1} s, scoring {:.1} s, faithfulness {:.1} s",
        fit_s, report.score_seconds, report.faithfulness_seconds
    );
    Ok(0)
}
