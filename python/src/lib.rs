//! `sonomaly._core`: the Python bindings of the sonomaly core (pyo3). The user-facing API, its docstrings and
//! type stubs are in `python/sonomaly/`; this module holds the classes and functions it wraps. Every call that
//! computes (decoding, fitting, scoring, merging, loading a model) releases the GIL.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use numpy::{IntoPyArray, PyArray1, PyArray2, PyArray3, PyArrayMethods, PyReadonlyArray1, PyReadonlyArray3};
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList};
use rayon::prelude::*;

use sonomaly::audio::{decode_file, to_mono, ChannelSelect};
use sonomaly::bank::{looks_like_bank, Bank as CoreBank};
use sonomaly::detector::{DetectorConfig, DetectorOptions};
use sonomaly::embedding::EmbeddingConfig;
use sonomaly::pipeline::{
    score_clip, ClipResult, FitConfig, FitPreset, Fitter, HeldOut, MemberConfig, Model as CoreModel, SPILL_ABOVE_BYTES,
};
use sonomaly::Error as CoreError;

/// The Python exception for a core error: `sonomaly.AudioError`, `BankError`, `ModelError`, `InvalidInputError`
/// (also a `ValueError`) or `Error`, all subclasses of `sonomaly.Error`, carrying the core's message.
fn py_err(e: CoreError) -> PyErr {
    let kind = match &e {
        CoreError::Audio(_) => "AudioError",
        CoreError::InvalidInput(_) => "InvalidInputError",
        CoreError::Model(_) => "ModelError",
        CoreError::Bank(_) => "BankError",
        CoreError::Io { .. } => "IOError",
        _ => "Error",
    };
    let msg = e.to_string();
    Python::attach(|py| {
        match py.import("sonomaly._errors").and_then(|m| m.getattr(kind)).and_then(|c| c.call1((msg.clone(),))) {
            Ok(v) => PyErr::from_value(v),
            Err(_) => PyRuntimeError::new_err(msg),
        }
    })
}

fn invalid(msg: impl Into<String>) -> PyErr {
    py_err(CoreError::InvalidInput(msg.into()))
}

/// A model instance's key in the banks' caches of prepared models (0: the embedded model a bank was fitted with).
static NEXT_MODEL_KEY: AtomicU64 = AtomicU64::new(1);

/// A backbone and its front end.
#[pyclass(module = "sonomaly._core", frozen)]
struct Model {
    inner: CoreModel,
    key: u64,
}

#[pymethods]
impl Model {
    #[new]
    #[pyo3(signature = (folder=None))]
    fn new(py: Python<'_>, folder: Option<PathBuf>) -> PyResult<Self> {
        let inner = py
            .detach(|| match &folder {
                Some(d) => CoreModel::from_dir(d),
                None => CoreModel::embedded_default(),
            })
            .map_err(py_err)?;
        Ok(Model { inner, key: NEXT_MODEL_KEY.fetch_add(1, Ordering::Relaxed) })
    }

    #[getter]
    fn name(&self) -> String {
        self.inner.spec().name.clone()
    }

    #[getter]
    fn sample_rate(&self) -> u32 {
        self.inner.sample_rate()
    }

    #[getter]
    fn hop_s(&self) -> f64 {
        self.inner.hop_s()
    }

    #[getter]
    fn sha256(&self) -> String {
        self.inner.identity().sha256.clone()
    }

    fn __repr__(&self) -> String {
        format!("Model('{}', {} Hz, hop {:.4} s)", self.inner.spec().name, self.inner.sample_rate(), self.inner.hop_s())
    }
}

/// A fitted bank, with a cache of the model prepared to score with it.
#[pyclass(module = "sonomaly._core", frozen)]
struct Bank {
    inner: CoreBank,
    prepared: Mutex<Option<(u64, Arc<CoreModel>)>>,
}

impl Bank {
    fn wrap(inner: CoreBank) -> Self {
        Bank { inner, prepared: Mutex::new(None) }
    }

    /// Runs `f` with a model prepared for this bank: `model`, or the embedded model the bank was fitted with. The
    /// cache is locked only to look the model up (and prepare it the first time), so threads score in parallel.
    fn with_model<T>(
        &self,
        model: Option<&Model>,
        f: impl FnOnce(&CoreModel) -> sonomaly::Result<T>,
    ) -> sonomaly::Result<T> {
        let key = model.map_or(0, |m| m.key);
        let prepared = {
            let mut cache = self.prepared.lock().unwrap_or_else(|p| p.into_inner());
            match cache.as_ref() {
                Some((k, m)) if *k == key => Arc::clone(m),
                _ => {
                    let mut m = match model {
                        Some(m) => m.inner.try_clone()?,
                        None => match CoreModel::embedded_for(&self.inner.meta.backbone) {
                            Some(m) => m?,
                            None => CoreModel::embedded_default()?,
                        },
                    };
                    m.prepare_for(&self.inner)?;
                    let m = Arc::new(m);
                    *cache = Some((key, Arc::clone(&m)));
                    m
                }
            }
        };
        f(&prepared)
    }
}

#[pymethods]
impl Bank {
    #[staticmethod]
    fn load(py: Python<'_>, path: PathBuf) -> PyResult<Self> {
        let bank = py
            .detach(|| {
                let bytes = std::fs::read(&path)
                    .map_err(|e| CoreError::Io { context: format!("reading bank {}", path.display()), cause: e })?;
                CoreBank::from_bytes(&bytes)
            })
            .map_err(py_err)?;
        Ok(Bank::wrap(bank))
    }

    #[staticmethod]
    fn from_bytes(py: Python<'_>, data: Vec<u8>) -> PyResult<Self> {
        Ok(Bank::wrap(py.detach(|| CoreBank::from_bytes(&data)).map_err(py_err)?))
    }

    fn to_bytes<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        let bytes = py.detach(|| self.inner.to_bytes()).map_err(py_err)?;
        Ok(PyBytes::new(py, &bytes))
    }

    #[pyo3(signature = (path, overwrite=false))]
    fn save(&self, py: Python<'_>, path: PathBuf, overwrite: bool) -> PyResult<()> {
        py.detach(|| -> sonomaly::Result<()> {
            if let Ok(meta) = std::fs::symlink_metadata(&path) {
                if !meta.is_file() {
                    return Err(CoreError::InvalidInput(format!(
                        "{} exists and is not a regular file; choose another path",
                        path.display()
                    )));
                }
                if !overwrite {
                    return Err(CoreError::InvalidInput(format!(
                        "{} already exists; pass overwrite=True to replace it or choose another path",
                        path.display()
                    )));
                }
                let old = std::fs::read(&path)
                    .map_err(|e| CoreError::Io { context: format!("reading {}", path.display()), cause: e })?;
                if !looks_like_bank(&old) {
                    return Err(CoreError::InvalidInput(format!(
                        "{} exists and is not a sonomaly bank; refusing to overwrite it",
                        path.display()
                    )));
                }
            }
            let bytes = self.inner.to_bytes()?;
            // Written beside the target, then renamed: an interrupted write never leaves half a bank.
            sonomaly::bank::write_file_atomically(&path, &bytes)
        })
        .map_err(py_err)
    }

    /// The bank's summary as a JSON string (the CLI's `info --json`).
    fn info_json(&self) -> String {
        serde_json::to_string(&self.inner.info()).expect("serialisable")
    }

    /// The bank's metadata as a JSON string.
    fn meta_json(&self) -> String {
        serde_json::to_string(&self.inner.meta).expect("serialisable")
    }

    #[getter]
    fn threshold(&self) -> f32 {
        self.inner.meta.threshold
    }

    #[getter]
    fn segment_threshold(&self) -> f32 {
        self.inner.meta.segment_threshold
    }

    #[getter]
    fn units(&self) -> &'static str {
        if self.inner.is_z_scored() {
            "z"
        } else {
            "distance"
        }
    }

    #[getter]
    fn members(&self) -> Vec<String> {
        self.inner.meta.members.iter().map(|m| m.name.clone()).collect()
    }

    fn __reduce__<'py>(slf: &Bound<'py, Self>) -> PyResult<(Bound<'py, PyAny>, (Bound<'py, PyBytes>,))> {
        let py = slf.py();
        let ctor = py.get_type::<Bank>().getattr("from_bytes")?;
        Ok((ctor, (slf.get().to_bytes(py)?,)))
    }

    fn __repr__(&self) -> String {
        let i = self.inner.info();
        format!(
            "Bank({}, {}, {} clips, memory bank {}, threshold {} {})",
            i.detector, i.layers, i.clips_fitted, i.memory_bank, i.threshold, i.units
        )
    }
}

/// One clip's result.
#[pyclass(module = "sonomaly._core", frozen, get_all)]
struct Result {
    file: Option<String>,
    score: f32,
    threshold: f32,
    is_anomaly: bool,
    units: &'static str,
    members: Py<PyList>,
    segments: Vec<(f64, f64, f32)>,
    segment_threshold: f32,
    duration_s: f64,
    level_distance: Option<f32>,
    out_of_distribution: Option<String>,
    frames: usize,
    mel_bins: usize,
    hop_s: f64,
    map: Py<PyArray2<f32>>,
    curve: Py<PyArray1<f32>>,
}

#[pymethods]
impl Result {
    /// The CLI's JSON line for this clip (without the map), as a JSON string.
    fn to_json(&self, py: Python<'_>) -> PyResult<String> {
        let members: Vec<serde_json::Value> = self
            .members
            .bind(py)
            .iter()
            .map(|d| {
                let d = d.cast_into::<PyDict>()?;
                let get = |k: &str| -> PyResult<Bound<'_, PyAny>> {
                    d.get_item(k)?.ok_or_else(|| PyRuntimeError::new_err(format!("member without {k}")))
                };
                Ok(serde_json::json!({
                    "name": get("name")?.extract::<String>()?,
                    "score": get("score")?.extract::<f32>()?,
                    "raw": get("raw")?.extract::<f32>()?,
                }))
            })
            .collect::<PyResult<_>>()?;
        let mut v = serde_json::json!({
            "file": self.file,
            "score": self.score,
            "threshold": self.threshold,
            "is_anomaly": self.is_anomaly,
            "segments": self.segments.iter().map(|s| serde_json::json!({"start_s": s.0, "end_s": s.1, "peak": s.2})).collect::<Vec<_>>(),
            "segment_threshold": self.segment_threshold,
            "duration_s": self.duration_s,
            "units": self.units,
            "members": members,
        });
        if let Some(d) = self.level_distance {
            v["level_distance"] = serde_json::json!(d);
        }
        if let Some(o) = &self.out_of_distribution {
            v["out_of_distribution"] = serde_json::json!(o);
        }
        Ok(v.to_string())
    }

    fn __repr__(&self) -> String {
        format!(
            "Result(score={:.4} {}, threshold={:.4}, is_anomaly={}, segments={}, map=[{}, {}])",
            self.score,
            self.units,
            self.threshold,
            self.is_anomaly,
            self.segments.len(),
            self.frames,
            self.mel_bins
        )
    }
}

impl Result {
    fn new(py: Python<'_>, file: Option<String>, r: ClipResult) -> PyResult<Self> {
        let members = PyList::empty(py);
        for m in &r.members {
            let d = PyDict::new(py);
            d.set_item("name", &m.name)?;
            d.set_item("score", m.score)?;
            d.set_item("raw", m.raw)?;
            members.append(d)?;
        }
        // The core's buffers become the arrays' storage: no copy.
        let map = r.map.into_pyarray(py).reshape([r.frames, r.mel_bins])?.unbind();
        let curve = r.curve.into_pyarray(py).unbind();
        Ok(Result {
            file,
            score: r.score,
            threshold: r.threshold,
            is_anomaly: r.is_anomaly,
            units: r.units,
            members: members.unbind(),
            segments: r.segments.iter().map(|s| (s.start_s, s.end_s, s.peak)).collect(),
            segment_threshold: r.segment_threshold,
            duration_s: r.duration_s,
            level_distance: r.level_distance,
            out_of_distribution: r.out_of_distribution,
            frames: r.frames,
            mel_bins: r.mel_bins,
            hop_s: r.hop_s,
            map,
            curve,
        })
    }
}

/// A clip: a path, or mono samples (float32) with their sample rate.
#[derive(FromPyObject)]
enum Clip<'py> {
    Samples(PyReadonlyArray1<'py, f32>),
    Path(PathBuf),
}

/// What a clip is once the GIL is released: a path to decode, or the samples copied out of the array.
enum OwnedClip {
    Path(PathBuf),
    Samples(Vec<f32>, u32),
}

impl OwnedClip {
    fn from(clip: Clip<'_>, sample_rate: Option<u32>) -> PyResult<Self> {
        Ok(match clip {
            Clip::Path(p) => OwnedClip::Path(p),
            Clip::Samples(a) => {
                let sr = sample_rate.ok_or_else(|| invalid("samples need their sample_rate (Hz)"))?;
                OwnedClip::Samples(a.as_array().iter().copied().collect(), sr)
            }
        })
    }

    fn name(&self) -> Option<String> {
        match self {
            OwnedClip::Path(p) => Some(p.display().to_string()),
            OwnedClip::Samples(..) => None,
        }
    }

    fn mono(&self, select: ChannelSelect) -> sonomaly::Result<(std::borrow::Cow<'_, [f32]>, u32)> {
        match self {
            OwnedClip::Path(p) => {
                let a = decode_file(p).map_err(|e| with_file(e, p))?;
                Ok((to_mono(&a, select).map_err(|e| with_file(e, p))?.into(), a.sample_rate))
            }
            OwnedClip::Samples(x, sr) => Ok((x.as_slice().into(), *sr)),
        }
    }
}

/// `e` with the file's name in front of its message.
fn with_file(e: CoreError, p: &std::path::Path) -> CoreError {
    let name = p.display().to_string();
    let named = |m: String| if m.contains(&name) { m } else { format!("{name}: {m}") };
    match e {
        CoreError::Audio(m) => CoreError::Audio(named(m)),
        CoreError::InvalidInput(m) => CoreError::InvalidInput(named(m)),
        other => other,
    }
}

/// Decodes and analyses `clips` in parallel for `model`'s members. A clip that cannot be read or used is an error
/// (naming the file), or with `skip_errors` its message in the second list, the others going on; array clips are
/// named by their position (`array 2`).
fn analyse_all(
    clips: &[OwnedClip],
    select: ChannelSelect,
    model: &CoreModel,
    skip_errors: bool,
) -> sonomaly::Result<(Vec<sonomaly::pipeline::AnalysedClip>, Vec<String>)> {
    let analysed: Vec<sonomaly::Result<_>> = clips
        .par_iter()
        .map(|c| {
            let (x, sr) = c.mono(select)?;
            Fitter::analyse_clip(model, &x, sr).map_err(|e| match c {
                OwnedClip::Path(p) => with_file(e, p),
                _ => e,
            })
        })
        .collect();
    let (mut ok, mut skipped) = (Vec::with_capacity(analysed.len()), Vec::new());
    for (k, a) in analysed.into_iter().enumerate() {
        match a {
            Ok(c) => ok.push(c),
            Err(e @ (CoreError::Audio(_) | CoreError::Io { .. })) if skip_errors => skipped.push(match &clips[k] {
                OwnedClip::Path(_) => e.to_string(),
                OwnedClip::Samples(..) => format!("array {k}: {e}"),
            }),
            Err(e) => return Err(e),
        }
    }
    Ok((ok, skipped))
}

fn channel(ch: Option<usize>) -> ChannelSelect {
    ch.map_or(ChannelSelect::Mix, ChannelSelect::Channel)
}

/// Scores one clip with `bank` (see `sonomaly.score`).
#[pyfunction]
#[pyo3(signature = (bank, clip, sample_rate=None, model=None, channel=None))]
fn score(
    py: Python<'_>,
    bank: &Bank,
    clip: Clip<'_>,
    sample_rate: Option<u32>,
    model: Option<&Model>,
    channel: Option<usize>,
) -> PyResult<Result> {
    let clip = OwnedClip::from(clip, sample_rate)?;
    let select = self::channel(channel);
    let r = py
        .detach(|| {
            let (x, sr) = clip.mono(select)?;
            bank.with_model(model, |m| score_clip(m, &bank.inner, &x, sr)).map_err(|e| match &clip {
                OwnedClip::Path(p) => with_file(e, p),
                _ => e,
            })
        })
        .map_err(py_err)?;
    Result::new(py, clip.name(), r)
}

/// Fits a bank on normal clips (see `sonomaly.fit`).
#[pyfunction]
#[pyo3(signature = (clips, sample_rate=None, model=None, preset=None, layers=None, detector="patchcore",
    coreset_ratio=0.1, max_bank_rows=Some(sonomaly::detector::patchcore::DEFAULT_MAX_BANK_ROWS), seed=0, padim_d=100,
    balance_layers=false, frequency_position=true, grid_stride=None, clip_z=None, segment_z=None,
    peak_normalize=false, channel=None, skip_errors=false))]
// The Python function's keyword arguments, one Rust parameter each (pyo3 maps them by name).
#[allow(clippy::too_many_arguments)]
fn fit(
    py: Python<'_>,
    clips: Vec<Clip<'_>>,
    sample_rate: Option<u32>,
    model: Option<&Model>,
    preset: Option<&str>,
    layers: Option<Vec<String>>,
    detector: &str,
    coreset_ratio: f32,
    max_bank_rows: Option<usize>,
    seed: u64,
    padim_d: usize,
    balance_layers: bool,
    frequency_position: bool,
    grid_stride: Option<Vec<usize>>,
    clip_z: Option<f32>,
    segment_z: Option<f32>,
    peak_normalize: bool,
    channel: Option<usize>,
    skip_errors: bool,
) -> PyResult<(Bank, Vec<String>)> {
    if clips.is_empty() {
        return Err(invalid("fitting needs at least one normal clip"));
    }
    let clips = clips.into_iter().map(|c| OwnedClip::from(c, sample_rate)).collect::<PyResult<Vec<_>>>()?;
    let detector =
        DetectorConfig::from_name(detector, &DetectorOptions { coreset_ratio, max_bank_rows, seed, padim_d })
            .map_err(py_err)?;
    if preset.is_some() && layers.is_some() {
        return Err(invalid("give a preset or layers, not both"));
    }
    let select = self::channel(channel);
    let (bank, skipped) = py
        .detach(|| -> sonomaly::Result<(CoreBank, Vec<String>)> {
            let mut model = match model {
                Some(m) => m.inner.try_clone()?,
                None => CoreModel::embedded_default()?,
            };
            let mut members = match &layers {
                Some(list) => list
                    .iter()
                    .map(|l| Ok(MemberConfig::patchcore(EmbeddingConfig::default().with_layers(l)?)))
                    .collect::<sonomaly::Result<Vec<_>>>()?,
                None => {
                    FitPreset::parse(preset.unwrap_or(sonomaly::pipeline::DEFAULT_PRESET))?.members(model.spec())?
                }
            };
            if let Some(strides) = &grid_stride {
                if strides.len() != 1 && strides.len() != members.len() {
                    return Err(CoreError::InvalidInput(format!(
                        "grid_stride gives {} values for {} members: give one, or one per member",
                        strides.len(),
                        members.len()
                    )));
                }
                for (k, m) in members.iter_mut().enumerate() {
                    m.embedding.grid_stride = strides[k.min(strides.len() - 1)];
                }
            }
            for m in &mut members {
                m.embedding.balance_layers = balance_layers;
                m.embedding.frequency_position = frequency_position;
                m.detector = detector.clone();
            }
            let mut config = FitConfig::with_members(members);
            if let Some(z) = clip_z {
                config.clip_z = z;
            }
            if let Some(z) = segment_z {
                config.segment_z = z;
            }
            model.set_embeddings(config.embeddings())?;
            model.set_peak_normalize(peak_normalize)?;
            let mut fitter = Fitter::new(&model, config)?;
            // Clips are analysed a few per thread at a time and added in order, their patches spilled to a
            // temporary file past the budget, so that a fit on thousands of clips holds one batch of them.
            fitter.spill_above(Some(SPILL_ABOVE_BYTES))?;
            // A clip that cannot be used: an error, or with `skip_errors` its message, and the others go on.
            let mut skipped = Vec::new();
            let batch = 4 * rayon::current_num_threads();
            for (b, part) in clips.chunks(batch).enumerate() {
                let analysed: Vec<sonomaly::Result<_>> = part
                    .par_iter()
                    .map(|c| {
                        let (x, sr) = c.mono(select)?;
                        Fitter::analyse_clip(&model, &x, sr).map_err(|e| match c {
                            OwnedClip::Path(p) => with_file(e, p),
                            _ => e,
                        })
                    })
                    .collect();
                for (j, a) in analysed.into_iter().enumerate() {
                    let k = b * batch + j;
                    match a {
                        Ok(c) => fitter.add_analysed(c)?,
                        Err(e @ (CoreError::Audio(_) | CoreError::Io { .. })) if skip_errors => {
                            skipped.push(match &clips[k] {
                                OwnedClip::Path(_) => e.to_string(),
                                OwnedClip::Samples(..) => format!("array {k}: {e}"),
                            })
                        }
                        Err(e) => return Err(e),
                    }
                }
                sonomaly::pipeline::release_freed_memory();
            }
            if fitter.clips() == 0 {
                return Err(CoreError::InvalidInput(format!(
                    "no clip could be used ({} skipped): nothing to fit",
                    skipped.len()
                )));
            }
            Ok((fitter.finish(&model, &mut |_| true)?, skipped))
        })
        .map_err(py_err)?;
    Ok((Bank::wrap(bank), skipped))
}

/// Merges banks fitted on shards (see `sonomaly.merge`), calibrated on `calibrate_on` when given; with the messages
/// of the calibration clips skipped (`skip_errors`).
#[pyfunction]
#[pyo3(signature = (banks, model=None, calibrate_on=None, sample_rate=None, channel=None, skip_errors=false))]
fn merge(
    py: Python<'_>,
    banks: Vec<PyRef<'_, Bank>>,
    model: Option<&Model>,
    calibrate_on: Option<Vec<Clip<'_>>>,
    sample_rate: Option<u32>,
    channel: Option<usize>,
    skip_errors: bool,
) -> PyResult<(Bank, Vec<String>)> {
    let inner: Vec<CoreBank> = banks.iter().map(|b| b.inner.clone()).collect();
    let clips = calibrate_on
        .map(|cs| cs.into_iter().map(|c| OwnedClip::from(c, sample_rate)).collect::<PyResult<Vec<_>>>())
        .transpose()?;
    let select = self::channel(channel);
    let (merged, skipped) = py
        .detach(|| -> sonomaly::Result<(CoreBank, Vec<String>)> {
            let Some(first) = inner.first() else {
                return Err(CoreError::InvalidInput("merging needs at least two banks, got 0".into()));
            };
            let mut m = match model {
                Some(m) => m.inner.try_clone()?,
                None => match CoreModel::embedded_for(&first.meta.backbone) {
                    Some(m) => m?,
                    None => CoreModel::embedded_default()?,
                },
            };
            let merged = sonomaly::merge::merge_banks(&inner, m.spec())?;
            let Some(clips) = clips else { return Ok((merged, Vec::new())) };
            m.prepare_for(&merged)?;
            let (analysed, skipped) = analyse_all(&clips, select, &m, skip_errors)?;
            let bank = sonomaly::merge::calibrate_merged(&merged, &inner, &m, analysed, &mut |_| true)?;
            Ok((bank, skipped))
        })
        .map_err(py_err)?;
    Ok((Bank::wrap(merged), skipped))
}

/// Held-out normal results of clips against a bank (see `sonomaly.held_out`): float32 `[clips, members, 2]`,
/// (raw clip score, raw temporal-curve peak) per clip and member.
#[pyfunction]
#[pyo3(signature = (bank, clips, sample_rate=None, model=None, channel=None, skip_errors=false))]
fn held_out<'py>(
    py: Python<'py>,
    bank: &Bank,
    clips: Vec<Clip<'_>>,
    sample_rate: Option<u32>,
    model: Option<&Model>,
    channel: Option<usize>,
    skip_errors: bool,
) -> PyResult<(Bound<'py, PyArray3<f32>>, Vec<String>)> {
    let clips = clips.into_iter().map(|c| OwnedClip::from(c, sample_rate)).collect::<PyResult<Vec<_>>>()?;
    let select = self::channel(channel);
    let members = bank.inner.meta.members.len();
    let (held, skipped) = py
        .detach(|| {
            bank.with_model(model, |m| {
                let (analysed, skipped) = analyse_all(&clips, select, m, skip_errors)?;
                if analysed.is_empty() {
                    return Err(CoreError::InvalidInput(format!(
                        "no clip could be used ({} skipped): nothing to score",
                        skipped.len()
                    )));
                }
                let mut fitter = Fitter::new(m, FitConfig::for_bank(&bank.inner))?;
                for a in analysed {
                    fitter.add_analysed(a)?;
                }
                Ok((fitter.held_out_against(m, &bank.inner, &mut |_| true)?, skipped))
            })
        })
        .map_err(py_err)?;
    let n = held.len();
    let flat: Vec<f32> = held.iter().flat_map(|h| h.iter().flat_map(|x| [x.score, x.peak])).collect();
    Ok((flat.into_pyarray(py).reshape([n, members, 2])?, skipped))
}

/// `bank` recalibrated from held-out results `[clips, members, 2]` (see `sonomaly.calibrate`).
#[pyfunction]
fn calibrate(py: Python<'_>, bank: &Bank, held: PyReadonlyArray3<'_, f32>) -> PyResult<Bank> {
    let a = held.as_array();
    let (n, m, two) = a.dim();
    if two != 2 || m != bank.inner.meta.members.len() {
        return Err(invalid(format!(
            "held-out results must have shape [clips, {}, 2] for this bank, got [{n}, {m}, {two}]",
            bank.inner.meta.members.len()
        )));
    }
    let rows: Vec<Vec<HeldOut>> =
        (0..n).map(|k| (0..m).map(|i| HeldOut { score: a[[k, i, 0]], peak: a[[k, i, 1]] }).collect()).collect();
    let out = py.detach(|| sonomaly::pipeline::calibrate(&bank.inner, &rows)).map_err(py_err)?;
    Ok(Bank::wrap(out))
}

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Model>()?;
    m.add_class::<Bank>()?;
    m.add_class::<Result>()?;
    m.add_function(wrap_pyfunction!(score, m)?)?;
    m.add_function(wrap_pyfunction!(fit, m)?)?;
    m.add_function(wrap_pyfunction!(merge, m)?)?;
    m.add_function(wrap_pyfunction!(held_out, m)?)?;
    m.add_function(wrap_pyfunction!(calibrate, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
