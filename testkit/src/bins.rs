//! Where the binaries under test are: beside the test (or benchmark) executable's `deps/`
//! folder, in the Cargo target directory of its profile.

use std::path::PathBuf;

/// `target/<profile>/<name>`, for the profile the running test was built with.
fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable's path");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("the test executable is in target/<profile>/deps");
    let path = profile_dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: build it first with `cargo build --workspace --bins` (hack/test does)",
        path.display()
    );
    path
}

/// The operator binary (`lro-operator`).
pub fn operator_bin() -> PathBuf {
    bin("lro-operator")
}

/// The upstream simulator binary (`lro-sim`).
pub fn sim_bin() -> PathBuf {
    bin("lro-sim")
}
