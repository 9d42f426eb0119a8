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
mod cli;
