#![no_main]
//! Fuzz target `eval_csv`: see fuzz/targets.rs.

#[path = "../targets.rs"]
mod targets;

libfuzzer_sys::fuzz_target!(|data: &[u8]| targets::eval_csv(data));
