//! The real recordings and models beside the repository (`../shared`, see `../shared/data/SOURCES.md`). Tests that
//! need them are marked `#[ignore = "needs ../shared ..."]`: `cargo test` lists them as ignored, with the reason;
//! `cargo test -- --include-ignored` runs them (`./build.sh test` does whenever `../shared/data` is there), and
//! run without the files they fail with a message that says what is missing.

use std::path::{Path, PathBuf};

/// `rel` under `../shared` (e.g. `data/industrial/mimii_fan_id00`).
///
/// # Panics
/// If it is absent, naming it and what the test needs.
pub fn shared(rel: &str) -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared").join(rel);
    assert!(
        p.exists(),
        "{} is absent: this test needs the real recordings and models beside the repository (../shared, see \
         ../shared/data/SOURCES.md); without them run `cargo test` (it skips the tests marked ignored)",
        p.display()
    );
    p
}
