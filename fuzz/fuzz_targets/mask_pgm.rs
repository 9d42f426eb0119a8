#![no_main]
//! Fuzz target `mask_pgm`: see fuzz/targets.rs.

#[path = "../targets.rs"]
mod targets;

libfuzzer_sys::fuzz_target!(|data: &[u8]| targets::mask_pgm(data));
