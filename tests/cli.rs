//! The operator's command line: what the image's binary offers. The simulator is a binary of
//! its own (`lro-sim`, in `sim/`), not a part of the operator.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_lro-operator");

#[test]
fn the_operator_binary_has_no_simulator() {
    let out = Command::new(BIN)
        .args(["sim", "--listen", "127.0.0.1:0"])
        .output()
        .expect("runs");
    assert!(!out.status.success(), "`lro-operator sim` must be refused");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("unrecognized subcommand 'sim'"), "{stderr}");
    let help = Command::new(BIN).arg("--help").output().expect("runs");
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains("run") && help.contains("crd"), "{help}");
    assert!(!help.contains("sim"), "{help}");
}
