//! Every carla API the sidecar calls exists in the real carla 0.9.16 package (installed into
//! target/py-venv from carla-bridge/requirements.txt); the checker also catches a misspelling.
#![allow(clippy::unwrap_used, reason = "a test helper failing is a test failing")]

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The project venv with carla==0.9.16 (idempotent: pip does nothing when it is there).
fn venv_python() -> PathBuf {
    let out =
        Command::new("bash").arg(root().join("scripts/python-env.sh")).current_dir(root()).output().unwrap();
    assert!(out.status.success(), "python-env.sh failed: {}", String::from_utf8_lossy(&out.stderr));
    let python = PathBuf::from(String::from_utf8(out.stdout).unwrap().lines().last().unwrap().trim());
    let requirements = root().join("carla-bridge/requirements.txt");
    let status = Command::new(&python)
        .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check", "-r"])
        .arg(requirements)
        .status()
        .unwrap();
    assert!(status.success(), "installing carla==0.9.16 into the venv failed");
    python
}

fn check(python: &Path, sidecar: &Path) -> (bool, String) {
    let out = Command::new(python)
        .arg(root().join("carla-bridge/check_carla_api.py"))
        .arg(sidecar)
        .output()
        .unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn every_carla_api_the_sidecar_uses_exists_in_carla_0_9_16() {
    let python = venv_python();
    let sidecar = root().join("carla-bridge/sidecar/ads_carla_sidecar.py");
    let (ok, report) = check(&python, &sidecar);
    println!("{report}");
    assert!(ok, "{report}");
    assert!(report.starts_with("carla 0.9.16 from"), "checked against the real package: {report}");

    let text = std::fs::read_to_string(&sidecar).unwrap();
    let broken = text.replace("set_target_velocity(", "set_target_speed(").replace("attach_to=", "parent=");
    let bad = std::env::temp_dir().join(format!("ads-bad-sidecar-{}.py", std::process::id()));
    std::fs::write(&bad, broken).unwrap();
    let (ok, report) = check(&python, &bad);
    std::fs::remove_file(&bad).unwrap();
    assert!(!ok, "{report}");
    assert!(report.contains("'set_target_speed'") && report.contains("'parent'"), "{report}");
}
