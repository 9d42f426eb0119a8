//! Speed of sonomaly's own stages, for the side-by-side table in BENCH.md (`benches/run.sh` runs everything).
//!
//! ```text
//! cargo bench --bench speed -- [--out target/bench] [--reps 10] [--quick]
//! ```
//!
//! Writes `<out>/inputs.safetensors` (the tensors the reference tools get: the 10 s clip resampled for each front
//! end, its log-mels, kNN banks and queries, coreset patches), `<out>/outputs.safetensors` (our results on them,
//! for the sameness checks in `benches/reference.py`) and `<out>/native.json` (timings: median and minimum of
//! `--reps` runs after warm-up runs, milliseconds). Measured:
//!
//! - `spectrogram.*`: log-mel of the 10 s clip, aisfx (44.1 kHz) and PANNs (32 kHz) presets.
//! - `backbone.<model>.*`: the network on the clip's log-mel: the whole input in one run on 1 and 2 threads, by
//!   sonomaly's direct CNN14 path and by tract (`multithread-mm` on rayon's pool), and the windows the pipeline runs (spec window and hop, last window aligned to the
//!   end, in batches of 4) on 1 and 2 threads. Models: the default `models/aisfx-cnn14` and a CNN14 in the PANNs
//!   layout at `<out>/cnn14-panns` (random weights; `benches/run.sh` makes it), all four outputs.
//! - `knn.*`: PatchCore nearest-neighbour search, on 1 and 2 threads: the demo bank with 4800 queries (memory-bank
//!   rows plus noise; about as many as the default embedding gives for a 10 s clip's windows), and a CNN-sized bank
//!   (20,000 x 896, 4096 queries, seeded Gaussian clusters).
//! - `coreset.*`: PatchCore fit (random projection + greedy k-center coreset, ratio 0.1) of 100,000 patches of 10
//!   and 896 dimensions (the default embedding's and conv_block2,3,4's), on all threads, one run each.
//! - `sgemm.matrixmultiply`: a 1024^3 single-precision matrix product, 1 thread.
//!
//! The 10 s clip is `www/demo/fan-normal.wav` (MIMII fan id_00, 16 kHz).

use std::path::{Path, PathBuf};
use std::time::Instant;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use safetensors::tensor::{Dtype, TensorView};
use serde_json::{json, Value};
use sonomaly::audio::{decode_file, resample, to_mono, ChannelSelect};
use sonomaly::backbone::{Backbone, BackboneSpec, Runtime};
use sonomaly::bank::Bank;
use sonomaly::detector::patchcore::{PatchCore, PatchCoreConfig};
use sonomaly::detector::Detector;
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
                const GROUPS: [&str; 4] = ["backbone", "knn", "coreset", "sgemm"];
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

/// Window starts as the pipeline cuts them: every `hop` frames, the last window aligned to the end.
fn window_starts(t: usize, w: usize, hop: usize) -> Vec<usize> {
    if t <= w {
        return vec![0];
    }
    let mut s: Vec<usize> = (0..).map(|i| i * hop).take_while(|&s| s + w < t).collect();
    s.push(t - w);
    s
}

fn bench_backbone(
    o: &Options,
    records: &mut Vec<Value>,
    outputs: &mut Tensors,
    model: &str,
    dir: &Path,
    logmel: &[f32],
    frames: usize,
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
    let names: Vec<String> = spec.outputs.iter().map(|o| o.name.clone()).collect();
    let mel = spec.front_end_config().n_mels;
    assert_eq!(logmel.len(), frames * mel);

    let whole =
        Backbone::with_frames(&onnx, spec.clone(), &names, frames, Runtime::Auto).expect("backbone, whole clip");
    let tract = Backbone::with_frames(&onnx, spec.clone(), &names, frames, Runtime::Tract).expect("tract, whole clip");
    let maps = whole.run(logmel).expect("run");
    let tract_maps = tract.run(logmel).expect("run");
    let max_diff = maps
        .iter()
        .zip(&tract_maps)
        .flat_map(|(a, b)| a.data.iter().zip(&b.data).map(|(x, y)| (x - y).abs()))
        .fold(0.0f32, f32::max);
    for m in &maps {
        outputs.add(&format!("{model}.{}", m.name), &[1, m.channels, m.time, m.freq], &m.data);
    }
    let extra = json!({ "group": "backbone", "model": model, "frames": frames, "mel_bins": mel, "outputs": names });
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
        let t = p.install(|| {
            measure(o, || {
                tract.run(logmel).unwrap();
            })
        });
        let info = json!({ "impl": "tract", "runtime": "tract", "threads": threads });
        record(records, &format!("backbone.{model}.tract.whole-{threads}t"), t, info.merge(&extra));
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

fn bench_coreset(o: &Options, records: &mut Vec<Value>, inputs: &mut Tensors, d: usize, seed: u64) {
    let n = 100_000;
    println!("coreset of {n} x {d} patches (one run; up to a few minutes for the larger one) ...");
    let patches = clusters(n, d, 64, seed);
    inputs.add(&format!("coreset.d{d}.patches"), &[n, d], &patches);
    let config = PatchCoreConfig::default();
    let once = Options { out: o.out.clone(), reps: 1, warmup: 0, only: Vec::new() };
    let mut kept = 0;
    let t = measure(&once, || kept = PatchCore::fit(&patches, d, config.clone()).unwrap().len());
    let k = sonomaly::detector::patchcore::johnson_lindenstrauss_min_dim(n, config.projection_eps);
    let threads = rayon::current_num_threads();
    record(
        records,
        &format!("coreset.d{d}.sonomaly"),
        t,
        json!({ "group": "coreset", "impl": "sonomaly", "threads": threads, "patches": n, "dims": d, "coreset": kept,
                "projected_dims": if k < d { k } else { d } }),
    );
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
    for (preset, key) in [(Preset::Aisfx, "aisfx"), (Preset::PannsCnn14, "panns")] {
        let config = LogMelConfig::preset(preset);
        let samples = resample(&mono, audio.sample_rate, config.sample_rate).expect("resampling");
        inputs.add(&format!("audio_{key}"), &[samples.len()], &samples);
        let lm = LogMel::new(config.clone()).expect("front end");
        let spec = lm.compute(&samples).expect("log-mel");
        let (t, m) = (spec.frames, spec.mel_bins);
        inputs.add(&format!("logmel_{key}"), &[1, 1, t, m], &spec.data);
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

    let (_, lm_aisfx, t_aisfx) = &logmels[0];
    let (_, lm_panns, t_panns) = &logmels[1];
    if o.wants("backbone") {
        bench_backbone(&o, &mut records, &mut outputs, "aisfx", &root.join("models/aisfx-cnn14"), lm_aisfx, *t_aisfx);
        bench_backbone(&o, &mut records, &mut outputs, "cnn14-panns", &o.out.join("cnn14-panns"), lm_panns, *t_panns);
    }

    if o.wants("knn") {
        bench_demo_knn(&o, &mut records, &mut inputs, &mut outputs, &root);
        let big = clusters(24_096, 896, 256, 3);
        let (bank_rows, query_rows) = big.split_at(20_000 * 896);
        bench_knn(&o, &mut records, &mut inputs, &mut outputs, "cnn", bank_rows.to_vec(), query_rows.to_vec(), 896);
    }
    if o.wants("coreset") {
        bench_coreset(&o, &mut records, &mut inputs, 10, 21);
        bench_coreset(&o, &mut records, &mut inputs, 896, 22);
    }
    if o.wants("sgemm") {
        bench_sgemm(&o, &mut records);
    }

    let name = if o.only.is_empty() {
        inputs.write(&o.out.join("inputs.safetensors"));
        outputs.write(&o.out.join("outputs.safetensors"));
        "native.json"
    } else {
        "native-partial.json"
    };
    let report = json!({ "records": records, "reps": o.reps, "cpu": cpu_name(),
                         "threads_available": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1) });
    std::fs::write(o.out.join(name), serde_json::to_string_pretty(&report).unwrap()).expect("writing the results");
    println!("wrote {}", o.out.join(name).display());
}

/// The demo bank with 4800 queries: its rows plus a little noise (about the default embedding's patch count for the
/// windows of a 10 s clip).
fn bench_demo_knn(o: &Options, records: &mut Vec<Value>, inputs: &mut Tensors, outputs: &mut Tensors, root: &Path) {
    // kNN: the demo bank with queries near its rows, and a CNN-sized bank.
    let bank = Bank::from_bytes(&std::fs::read(root.join("www/demo/fan-demo.bank")).expect("demo bank")).expect("bank");
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
