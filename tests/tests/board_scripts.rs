//! The board's scripts that CI does not run in full (the cross build, the packages: longer than
//! CI's budget, see scripts/test.sh) stay honest through their `--check` modes: the binaries
//! they build are the workspace's, the files they package exist, the maintainer scripts parse
//! and the units they ship name the packaged binaries.
#![allow(clippy::unwrap_used, reason = "a test helper failing is a test failing")]

use std::path::Path;
use std::process::{Command, Output};

fn script(name: &str, args: &[&str]) -> Output {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    Command::new("bash").arg(root.join("scripts").join(name)).args(args).current_dir(&root).output().unwrap()
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

#[test]
fn the_cross_builds_plan_matches_the_workspace() {
    let o = script("cross.sh", &["aarch64", "--check"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains(
            "plan ok: ads-vehicle ads-detection ads-ring ads-record ads-viewer for aarch64-unknown-linux-gnu"
        ),
        "{}",
        text(&o)
    );
    let o = script("cross.sh", &["armv7", "--check"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
}

#[test]
fn the_packages_inputs_exist_and_their_units_name_usr_bin() {
    let o = script("package.sh", &["--check"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("package: inputs present"), "{}", text(&o));
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let unit = std::fs::read_to_string(
        root.join("target/deb/stage/ads-vehicle/lib/systemd/system/ads-vehicle.service"),
    )
    .unwrap();
    assert!(unit.contains("ExecStart=/usr/bin/ads-vehicle --config /etc/ads/vehicle.toml"), "{unit}");
    let config =
        std::fs::read_to_string(root.join("target/deb/stage/ads-vehicle/etc/ads/detection.toml")).unwrap();
    assert!(config.contains("\"/usr/share/ads/models/"), "{config}");
}
