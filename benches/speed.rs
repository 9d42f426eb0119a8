//! Speed of sonomaly's own stages, for the side-by-side table in BENCH.md (`benches/run.sh` runs everything).
//!
//! ```text
//! cargo bench --bench speed -- [--out target/bench] [--reps 10] [--quick] [--only pipeline,backbone,knn,coreset,sgemm]
//! ```
//!
//! Writes `<out>/inputs.safetensors` (the tensors the reference tools get: the 10 s clip resampled for each front
//! end, its log-mels, kNN banks and queries, coreset patches), `<out>/outputs.safetensors` (our results on them,
//! for the sameness checks in `benches/reference.py`) and `<out>/native.json` (timings: median and minimum of
//! `--reps` runs after warm-up runs, milliseconds). With `--only` (the front ends always run) the three files are
//! `inputs-partial.safetensors`, `outputs-partial.safetensors` and `native-partial.json`, for
//! `benches/reference.py --only`. Measured:
//!
//! - `spectrogram.*`: log-mel of the 10 s clip, aisfx (44.1 kHz), PANNs (32 kHz) and EfficientAT (32 kHz) presets.
//! - `backbone.<model>.*`: the network on the clip's log-mel: the whole input in one run on 1 and 2 threads, by
//!   sonomaly's direct CNN14 path and by tract (`multithread-mm` on rayon's pool), and the windows the pipeline
//!   runs (spec window and hop, last window aligned to the end, in batches of 4) on 1 and 2 threads. Models: the
//!   default `models/aisfx-cnn14` and a CNN14 in the PANNs layout at `<out>/cnn14-panns` (random weights;
//!   `benches/run.sh` makes it), all four outputs; EfficientAT `models/efficientat-mn04` (tract only, layout
//!   `ncft`) with all 17 blocks (`mn04`) and with `features.12` + `features.15` (`mn04-f12-15`, the blocks a
//!   PatchCore bank on it uses).
//! - `knn.*`: PatchCore nearest-neighbour search, on 1 and 2 threads: the demo bank with 4800 queries (memory-bank
//!   rows plus noise; about as many as the default embedding gives for a 10 s clip's windows), and a CNN-sized bank
//!   (20,000 x 896, 4096 queries, seeded Gaussian clusters).
//! - `coreset.*`: PatchCore fit (random projection + greedy k-center coreset, ratio 0.1) of seeded clustered
//!   patches of 10 and 896 dimensions (the default embedding's and conv_block2,3,4's), on all threads, one run
//!   each: the exact greedy over all patches (`max_bank_rows: None`) and the default capped selection at 100,000
//!   patches, the capped one at 1,000,000 patches, and the exact one at 1,000,000 x 10.
//! - `sgemm.matrixmultiply`: a 1024^3 single-precision matrix product, 1 thread.
//!
//! - `pipeline.<bank>.score-10s-<n>t`: the whole scoring path ([`score_clip`]: resampling, front end, backbone,
//!   patch embeddings, nearest neighbours, maps, fusion, segments) of the demo's anomalous 10 s clip
//!   (`www/demo/fan-abnormal.wav`, decoded before the clock starts) on a rayon pool of `n` = 1 and 2 threads,
//!   with the real-time factor (clip seconds / median seconds). Banks: `default`, the demo bank
//!   `www/demo/fan-demo.bank` (EfficientAT mn04_as: a log-mel member and a `features.12,features.15` member,
//!   fused), and `v1`, the previous default `tests/fixtures/fan-demo-v1.bank` (log-mel patches on the aisfx
//!   front end; the network does not run).
//!
//! The 10 s clip of the other groups is `www/demo/fan-normal.wav` (MIMII fan id_00, 16 kHz).

use std::path::{Path, PathBuf};
use std::time::Instant;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use safetensors::tensor::{Dtype, TensorView};
use serde_json::{json, Value};
use sonomaly::audio::{decode_file, resample, to_mono, ChannelSelect};
use sonomaly::backbone::{Backbone, BackboneSpec, Runtime};
use sonomaly::bank::Bank;
use sonomaly::detector::patchcore::{johnson_lindenstrauss_min_dim, random_subset, PatchCore, PatchCoreConfig};
use sonomaly::detector::Detector;
use sonomaly::pipeline::{score_clip, Model};
use sonomaly::spectrogram::{LogMel, LogMelConfig, Preset};

struct Options {
    out: PathBuf,
    reps: usize,
    warmup: usize,
    only: Vec<String>,
}

impl Options {
    fn wants(&self, group: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|g| g == group)
    }
}

fn fail(msg: &str) -> ! {
    eprintln!("speed: {msg}");
    std::process::exit(2);
}

/// The value after option `what`; cargo appends `--bench`, which is never a value.
fn value(args: &mut impl Iterator<Item = String>, what: &str) -> String {
    match args.next() {
        Some(v) if !v.starts_with("--") => v,
        _ => fail(&format!("{what} needs a value")),
    }
}

fn options() -> Options {
    let mut o = Options { out: PathBuf::from("target/bench"), reps: 10, warmup: 2, only: Vec::new() };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--out" => o.out = PathBuf::from(value(&mut args, "--out")),
            "--reps" => {
                o.reps = match value(&mut args, "--reps").parse() {
                    Ok(n) if n >= 1 => n,
                    _ => fail("--reps needs a whole number of at least 1"),
                }
            }
            "--only" => {
                o.only = value(&mut args, "--only").split(',').map(String::from).collect();
                const GROUPS: [&str; 5] = ["pipeline", "backbone", "knn", "coreset", "sgemm"];
                if let Some(g) = o.only.iter().find(|g| !GROUPS.contains(&g.as_str())) {
                    fail(&format!("--only: unknown group '{g}' (known: {})", GROUPS.join(", ")));
                }
            }
            "--quick" => {
                o.reps = 3;
                o.warmup = 1;
            }
            // cargo bench passes --bench to every bench target
            "--bench" => {}
            other => {
                fail(&format!("unknown argument '{other}' (known: --out DIR, --reps N, --quick, --only GROUP,...)"))
            }
        }
    }
    o
}

/// Median, minimum and all times of `reps` runs after `warmup` runs, milliseconds.
fn measure(o: &Options, mut f: impl FnMut()) -> Value {
    for _ in 0..o.warmup {
        f();
    }
    let mut times: Vec<f64> = (0..o.reps)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    let all = times.clone();
    times.sort_by(f64::total_cmp);
    json!({ "median_ms": times[times.len() / 2], "min_ms": times[0], "reps": o.reps, "times_ms": all })
}

fn record(records: &mut Vec<Value>, id: &str, timing: Value, extra: Value) {
    let mut r = json!({ "id": id });
    for v in [timing, extra] {
        if let Value::Object(m) = v {
            r.as_object_mut().unwrap().extend(m);
        }
    }
    println!(
        "{:<48} {:>10.2} ms (min {:.2})",
        id,
        r["median_ms"].as_f64().unwrap_or(f64::NAN),
        r["min_ms"].as_f64().unwrap_or(f64::NAN)
    );
    records.push(r);
}

fn pool(threads: usize) -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new().num_threads(threads).build().expect("a rayon thread pool")
}

/// Tensors to write, as (name, shape, data).
#[derive(Default)]
struct Tensors(Vec<(String, Vec<usize>, Vec<f32>)>);

impl Tensors {
    fn add(&mut self, name: &str, shape: &[usize], data: &[f32]) {
        assert_eq!(shape.iter().product::<usize>(), data.len(), "{name}");
        self.0.push((name.to_string(), shape.to_vec(), data.to_vec()));
    }

    fn write(&self, path: &Path) {
        let bytes: Vec<Vec<u8>> =
            self.0.iter().map(|(_, _, d)| d.iter().flat_map(|v| v.to_le_bytes()).collect()).collect();
        let views: Vec<(String, TensorView)> = self
            .0
            .iter()
            .zip(&bytes)
            .map(|((n, s, _), b)| (n.clone(), TensorView::new(Dtype::F32, s.clone(), b).expect("tensor view")))
            .collect();
        safetensors::serialize_to_file(views, None, path).expect("writing safetensors");
    }
}

/// `[frames, mel]` -> `[mel, frames]` (the input layout of an `ncft` network).
fn transpose(x: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0.0f32; x.len()];
    for r in 0..rows {
        for c in 0..cols {
            out[c * rows + r] = x[r * cols + c];
        }
    }
    out
}

/// Window starts as the pipeline cuts them: every `hop` frames, the last window aligned to the end.
fn window_starts(t: usize, w: usize, hop: usize) -> Vec<usize> {
    if t <= w {
        return vec![0];
    }
    let mut s: Vec<usize> = (0..).map(|i| i * hop).take_while(|&s| s + w < t).collect();
    s.push(t - w);
    s
}

/// One backbone, `[frames, mel]` log-mel; `only`: the outputs to keep (`None`: all the spec lists).
// The bench's two record sinks beside one case's model, log-mel and outputs.
#[allow(clippy::too_many_arguments)]
fn bench_backbone(
    o: &Options,
    records: &mut Vec<Value>,
    outputs: &mut Tensors,
    model: &str,
    dir: &Path,
    logmel: &[f32],
    frames: usize,
    only: Option<&[&str]>,
) {
    let (Ok(onnx), Ok(spec_json)) =
        (std::fs::read(dir.join("model.onnx")), std::fs::read_to_string(dir.join("spec.json")))
    else {
        println!(
            "backbone.{model}: skipped, {} has no model.onnx + spec.json (benches/run.sh makes it)",
            dir.display()
        );
        return;
    };
    let spec = BackboneSpec::from_json(&spec_json).expect("spec");
    let names: Vec<String> = match only {
        Some(list) => list.iter().map(|s| s.to_string()).collect(),
        None => spec.outputs.iter().map(|o| o.name.clone()).collect(),
    };
    let mel = spec.front_end_config().n_mels;
    assert_eq!(logmel.len(), frames * mel);

    let whole =
        Backbone::with_frames(&onnx, spec.clone(), &names, frames, Runtime::Auto).expect("backbone, whole clip");
    // A graph that runs on tract anyway gets no second, identical tract row.
    let tract = (whole.runtime_name() != "tract").then(|| {
        Backbone::with_frames(&onnx, spec.clone(), &names, frames, Runtime::Tract).expect("tract, whole clip")
    });
    let maps = whole.run(logmel).expect("run");
    let max_diff = tract.as_ref().map(|tract| {
        let tract_maps = tract.run(logmel).expect("run");
        maps.iter()
            .zip(&tract_maps)
            .flat_map(|(a, b)| a.data.iter().zip(&b.data).map(|(x, y)| (x - y).abs()))
            .fold(0.0f32, f32::max)
    });
    for m in &maps {
        // In the graph's own layout, as onnxruntime returns it: [1, C, T, F], or [1, C, F, T] for `ncft`.
        if spec.mel_first() {
            let plane = (m.time * m.freq).max(1);
            let data: Vec<f32> = m.data.chunks_exact(plane).flat_map(|c| transpose(c, m.time, m.freq)).collect();
            outputs.add(&format!("{model}.{}", m.name), &[1, m.channels, m.freq, m.time], &data);
        } else {
            outputs.add(&format!("{model}.{}", m.name), &[1, m.channels, m.time, m.freq], &m.data);
        }
    }
    let extra = json!({ "group": "backbone", "model": model, "frames": frames, "mel_bins": mel, "outputs": names,
                        "layout": spec.layout });
    for threads in [1, 2] {
        let p = pool(threads);
        let t = p.install(|| {
            measure(o, || {
                whole.run(logmel).unwrap();
            })
        });
        let info = json!({ "impl": "sonomaly", "runtime": whole.runtime_name(), "threads": threads,
                           "max_abs_diff_vs_tract": max_diff });
        record(records, &format!("backbone.{model}.sonomaly.whole-{threads}t"), t, info.merge(&extra));
        if let Some(tract) = &tract {
            let t = p.install(|| {
                measure(o, || {
                    tract.run(logmel).unwrap();
                })
            });
            let info = json!({ "impl": "tract", "runtime": "tract", "threads": threads });
            record(records, &format!("backbone.{model}.tract.whole-{threads}t"), t, info.merge(&extra));
        }
    }
    drop((whole, tract));

    let windowed = Backbone::from_bytes(&onnx, spec.clone(), &names).expect("backbone, window");
    let (w, hop) = (spec.window_frames, spec.window_hop);
    let starts = window_starts(frames, w, hop);
    let extra = json!({ "group": "backbone", "impl": "sonomaly", "runtime": windowed.runtime_name(), "model": model,
                        "frames": frames, "mel_bins": mel, "window_frames": w, "window_hop": hop,
                        "windows": starts.len(), "outputs": names });
    for threads in [1, 2] {
        let p = pool(threads);
        let t = p.install(|| {
            measure(o, || {
                // As the pipeline runs them: batches of 4 windows, each batch spread over the pool's threads.
                for batch in starts.chunks(4) {
                    let refs: Vec<&[f32]> = batch.iter().map(|&s| &logmel[s * mel..(s + w) * mel]).collect();
                    windowed.run_batch(&refs).unwrap();
                }
            })
        });
        record(
            records,
            &format!("backbone.{model}.sonomaly.windows-{threads}t"),
            t,
            json!({ "threads": threads }).merge(&extra),
        );
    }
}

trait Merge {
    fn merge(self, other: &Value) -> Value;
}

impl Merge for Value {
    fn merge(mut self, other: &Value) -> Value {
        if let (Some(a), Some(b)) = (self.as_object_mut(), other.as_object()) {
            for (k, v) in b {
                a.entry(k.clone()).or_insert_with(|| v.clone());
            }
        }
        self
    }
}

/// Seeded Gaussian clusters: `n` rows of `d` values around `centres` random centres.
fn clusters(n: usize, d: usize, centres: usize, seed: u64) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut gauss = move || -> f32 {
        // Box-Muller
        let (u, v): (f32, f32) = (rng.random_range(1e-7..1.0), rng.random());
        (-2.0 * u.ln()).sqrt() * (std::f32::consts::TAU * v).cos()
    };
    let c: Vec<f32> = (0..centres * d).map(|_| gauss() * 2.0).collect();
    let mut pick = ChaCha8Rng::seed_from_u64(seed ^ 0x9e37);
    let mut out = Vec::with_capacity(n * d);
    for _ in 0..n {
        let k = pick.random_range(0..centres);
        out.extend(c[k * d..(k + 1) * d].iter().map(|&x| x + gauss() * 0.5));
    }
    out
}

// The bench's three record sinks beside one case's name, bank, queries and dimension.
#[allow(clippy::too_many_arguments)]
fn bench_knn(
    o: &Options,
    records: &mut Vec<Value>,
    inputs: &mut Tensors,
    outputs: &mut Tensors,
    name: &str,
    bank: Vec<f32>,
    queries: Vec<f32>,
    d: usize,
) {
    let (n, q) = (bank.len() / d, queries.len() / d);
    inputs.add(&format!("knn.{name}.bank"), &[n, d], &bank);
    inputs.add(&format!("knn.{name}.queries"), &[q, d], &queries);
    let pc = PatchCore::from_memory_bank(bank, d, PatchCoreConfig::default());
    let nearest = pc.nearest(&queries).unwrap();
    outputs.add(&format!("knn.{name}.distance"), &[q], &nearest.distance);
    let extra = json!({ "group": "knn", "impl": "sonomaly", "bank_rows": n, "dims": d, "queries": q });
    for threads in [1, 2] {
        let p = pool(threads);
        let t = p.install(|| {
            measure(o, || {
                pc.nearest(&queries).unwrap();
            })
        });
        record(records, &format!("knn.{name}.sonomaly.{threads}t"), t, json!({ "threads": threads }).merge(&extra));
    }
}

/// PatchCore fit of `n` seeded clustered patches of `d` dimensions, one run: `cap` `None` is the exact greedy over
/// all patches (`coreset.d{d}.sonomaly`, the rows the numpy reference of anomalib's algorithm is compared with),
/// `Some` the capped selection (`coreset.capped.n{n}.d{d}.sonomaly`; its candidates go to the inputs for the
/// reference, which times anomalib's greedy on them). Returns the memory bank.
fn bench_coreset(
    o: &Options,
    records: &mut Vec<Value>,
    inputs: &mut Tensors,
    patches: &[f32],
    d: usize,
    cap: Option<usize>,
    export: bool,
) -> Vec<f32> {
    let n = patches.len() / d;
    let config = PatchCoreConfig { max_bank_rows: cap, ..Default::default() };
    let plan = config.plan(n);
    let label = if cap.is_some() { "capped" } else { "exact" };
    println!("coreset ({label}) of {n} x {d} patches (one run; up to a few minutes) ...");
    let id = match cap {
        None if n == 100_000 => format!("coreset.d{d}.sonomaly"),
        None => format!("coreset.exact.n{n}.d{d}.sonomaly"),
        Some(_) => format!("coreset.capped.n{n}.d{d}.sonomaly"),
    };
    if export {
        if plan.candidates == n {
            inputs.add(&format!("coreset.d{d}.patches"), &[n, d], patches);
        } else {
            let subset = random_subset(n, plan.candidates, config.seed);
            let rows: Vec<f32> = subset.iter().flat_map(|&i| patches[i * d..(i + 1) * d].iter().copied()).collect();
            inputs.add(&format!("coreset_capped.n{n}.d{d}.candidates"), &[subset.len(), d], &rows);
        }
    }
    let once = Options { out: o.out.clone(), reps: 1, warmup: 0, only: Vec::new() };
    let mut bank = Vec::new();
    let t = measure(&once, || bank = PatchCore::fit(patches, d, config.clone()).unwrap().memory_bank);
    let k = johnson_lindenstrauss_min_dim(plan.candidates, config.projection_eps);
    let threads = rayon::current_num_threads();
    record(
        records,
        &id,
        t,
        json!({ "group": "coreset", "impl": "sonomaly", "selection": label, "threads": threads, "patches": n,
                "dims": d, "coreset": bank.len() / d, "candidates": plan.candidates, "max_bank_rows": cap,
                "projected_dims": if k < d { k } else { d } }),
    );
    bank
}

/// The coreset rows: exact and capped (default cap) at 100,000 patches, capped at 1,000,000, and the exact at
/// 1,000,000 for the 10-dimensional patches only (the 896-dimensional one would take hours).
fn bench_coresets(o: &Options, records: &mut Vec<Value>, inputs: &mut Tensors) {
    let cap = PatchCoreConfig::default().max_bank_rows;
    for (d, seed) in [(10usize, 21u64), (896, 22)] {
        let patches = clusters(100_000, d, 64, seed);
        let exact = bench_coreset(o, records, inputs, &patches, d, None, true);
        let capped = bench_coreset(o, records, inputs, &patches, d, cap, false);
        if let Some(r) = records.last_mut() {
            r["same_bank_as_exact"] = json!(capped == exact);
        }
    }
    for (d, seed) in [(10usize, 23u64), (896, 24)] {
        let patches = clusters(1_000_000, d, 64, seed);
        bench_coreset(o, records, inputs, &patches, d, cap, true);
        if d == 10 {
            bench_coreset(o, records, inputs, &patches, d, None, false);
        }
    }
}

fn main() {
    let o = options();
    std::fs::create_dir_all(&o.out).expect("creating the output directory");
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut records = Vec::new();
    let mut inputs = Tensors::default();
    let mut outputs = Tensors::default();

    // The clip at each front end's rate.
    let clip = root.join("www/demo/fan-normal.wav");
    let audio = decode_file(&clip).expect("decoding the demo clip");
    let mono = to_mono(&audio, ChannelSelect::Mix).expect("mono");
    let mut logmels = Vec::new();
    for (preset, key) in [(Preset::Aisfx, "aisfx"), (Preset::PannsCnn14, "panns"), (Preset::Efficientat, "efficientat")]
    {
        let config = LogMelConfig::preset(preset);
        let samples = resample(&mono, audio.sample_rate, config.sample_rate).expect("resampling");
        inputs.add(&format!("audio_{key}"), &[samples.len()], &samples);
        let lm = LogMel::new(config.clone()).expect("front end");
        let spec = lm.compute(&samples).expect("log-mel");
        let (t, m) = (spec.frames, spec.mel_bins);
        if preset == Preset::Efficientat {
            // The network's layout, [1, 1, mel, frames], as onnxruntime takes it.
            inputs.add(&format!("logmel_{key}"), &[1, 1, m, t], &transpose(&spec.data, t, m));
        } else {
            inputs.add(&format!("logmel_{key}"), &[1, 1, t, m], &spec.data);
        }
        let timing = measure(&o, || {
            lm.compute(&samples).unwrap();
        });
        record(
            &mut records,
            &format!("spectrogram.{key}.sonomaly"),
            timing,
            json!({ "group": "spectrogram", "impl": "sonomaly", "threads": 1, "samples": samples.len(),
                    "sample_rate": config.sample_rate, "frames": t, "mel_bins": m }),
        );
        logmels.push((key, spec.data, t));
    }

    if o.wants("pipeline") {
        bench_pipeline(&o, &mut records, &root);
    }
    let (_, lm_aisfx, t_aisfx) = &logmels[0];
    let (_, lm_panns, t_panns) = &logmels[1];
    let (_, lm_eat, t_eat) = &logmels[2];
    if o.wants("backbone") {
        let (out, aisfx, mn04) = (&mut outputs, root.join("models/aisfx-cnn14"), root.join("models/efficientat-mn04"));
        bench_backbone(&o, &mut records, out, "aisfx", &aisfx, lm_aisfx, *t_aisfx, None);
        bench_backbone(&o, &mut records, out, "cnn14-panns", &o.out.join("cnn14-panns"), lm_panns, *t_panns, None);
        bench_backbone(&o, &mut records, out, "mn04", &mn04, lm_eat, *t_eat, None);
        let f12_15 = ["features.12", "features.15"];
        bench_backbone(&o, &mut records, out, "mn04-f12-15", &mn04, lm_eat, *t_eat, Some(&f12_15));
    }

    if o.wants("knn") {
        bench_demo_knn(&o, &mut records, &mut inputs, &mut outputs, &root);
        let big = clusters(24_096, 896, 256, 3);
        let (bank_rows, query_rows) = big.split_at(20_000 * 896);
        bench_knn(&o, &mut records, &mut inputs, &mut outputs, "cnn", bank_rows.to_vec(), query_rows.to_vec(), 896);
    }
    if o.wants("coreset") {
        bench_coresets(&o, &mut records, &mut inputs);
    }
    if o.wants("sgemm") {
        bench_sgemm(&o, &mut records);
    }

    // A partial run (--only) keeps its files apart, so the full run's files (what BENCH.md is made of) stay whole.
    let suffix = if o.only.is_empty() { "" } else { "-partial" };
    inputs.write(&o.out.join(format!("inputs{suffix}.safetensors")));
    outputs.write(&o.out.join(format!("outputs{suffix}.safetensors")));
    let name = format!("native{suffix}.json");
    let report = json!({ "records": records, "reps": o.reps, "cpu": cpu_name(),
                         "threads_available": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1) });
    std::fs::write(o.out.join(&name), serde_json::to_string_pretty(&report).unwrap()).expect("writing the results");
    println!("wrote {}", o.out.join(&name).display());
}

/// The demo bank with 4800 queries: its rows plus a little noise (about the default embedding's patch count for the
/// windows of a 10 s clip).
fn bench_demo_knn(o: &Options, records: &mut Vec<Value>, inputs: &mut Tensors, outputs: &mut Tensors, root: &Path) {
    // kNN: the demo bank with queries near its rows, and a CNN-sized bank.
    let bank = Bank::from_bytes(&std::fs::read(root.join("tests/fixtures/fan-demo-v1.bank")).expect("demo bank"))
        .expect("bank");
    let Some(Detector::Patchcore(demo)) = bank.detectors.into_iter().next() else {
        panic!("the demo bank is not a PatchCore bank")
    };
    let d = demo.dims;
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let noise = clusters(4800, d, 1, 11);
    let queries: Vec<f32> = (0..4800)
        .flat_map(|i| {
            let r = rng.random_range(0..demo.len());
            let row = demo.memory_bank[r * d..(r + 1) * d].to_vec();
            row.into_iter().zip(&noise[i * d..(i + 1) * d]).map(|(v, e)| v + 0.05 * e).collect::<Vec<_>>()
        })
        .collect();
    bench_knn(o, records, inputs, outputs, "demo", demo.memory_bank.clone(), queries, d);
}

/// A 1024^3 single-precision matrix product with matrixmultiply (the crate's GEMM), 1 thread.
/// The `pipeline` group (see the module documentation).
fn bench_pipeline(o: &Options, records: &mut Vec<Value>, root: &Path) {
    let clip = "www/demo/fan-abnormal.wav";
    let audio = decode_file(&root.join(clip)).expect("decoding the demo anomalous clip");
    let mono = to_mono(&audio, ChannelSelect::Mix).expect("mono");
    let seconds = mono.len() as f64 / audio.sample_rate as f64;
    let banks = [
        ("default", "www/demo/fan-demo.bank", "mn04_as: logmel + features.12,features.15, fused (the default)"),
        ("v1", "tests/fixtures/fan-demo-v1.bank", "aisfx front end: logmel patches (the previous default)"),
    ];
    for (name, path, what) in banks {
        let bank = Bank::from_bytes(&std::fs::read(root.join(path)).expect("reading the bank")).expect("the bank");
        let mut model = Model::embedded_for(&bank.meta.backbone).expect("a shipped model").expect("the model");
        model.prepare_for(&bank).expect("the model fits the bank");
        for threads in [1, 2] {
            let p = pool(threads);
            let mut last = None;
            let timing = p.install(|| {
                measure(o, || {
                    last = Some(score_clip(&model, &bank, &mono, audio.sample_rate).expect("scoring"));
                })
            });
            let r = last.expect("at least one run");
            let rtf = seconds / (timing["median_ms"].as_f64().unwrap() / 1e3);
            record(
                records,
                &format!("pipeline.{name}.score-10s-{threads}t"),
                timing,
                json!({ "group": "pipeline", "impl": "sonomaly", "threads": threads, "bank": path, "what": what,
                        "backbone": bank.meta.backbone.name, "members": bank.meta.members.len().max(1),
                        "clip": clip, "clip_seconds": seconds, "rtf": rtf, "score": r.score,
                        "is_anomaly": r.is_anomaly }),
            );
        }
    }
}

fn bench_sgemm(o: &Options, records: &mut Vec<Value>) {
    let nn = 1024;
    let a = clusters(nn * nn / 64, 64, 4, 5);
    let mut c = vec![0.0f32; nn * nn];
    let t = measure(o, || unsafe {
        matrixmultiply::sgemm(
            nn,
            nn,
            nn,
            1.0,
            a.as_ptr(),
            nn as isize,
            1,
            a.as_ptr(),
            1,
            nn as isize,
            0.0,
            c.as_mut_ptr(),
            nn as isize,
            1,
        );
    });
    let gflops = 2.0 * (nn as f64).powi(3) / (t["median_ms"].as_f64().unwrap() * 1e6);
    record(
        records,
        "sgemm.matrixmultiply.1t",
        t,
        json!({ "group": "sgemm", "impl": "matrixmultiply", "threads": 1, "n": nn, "gflops": gflops }),
    );
}

fn cpu_name() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_default()
}
