//! Scale-out on one machine, for real: three `smelt --port` replicas behind HAProxy on
//! loopback with /health checks, one killed with SIGKILL in the middle of a load run
//! (scripts/scale-out-haproxy.py). Every request must succeed, HAProxy must mark the dead
//! replica down within 2 s, and no request may reach it afterwards.

mod common;

use std::process::Command;

#[test]
fn three_replicas_behind_haproxy_survive_a_killed_one() {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/scale-out-haproxy.py");
    let out = Command::new("python3")
        .args([script, env!("CARGO_BIN_EXE_smelt")])
        .arg(common::gguf_path())
        .arg("12")
        .output()
        .expect("run python3");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "scale-out check failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("scale-out check passed"), "{stdout}");
    eprintln!("{stdout}");
}
