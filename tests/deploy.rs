//! The Kubernetes manifests under deploy/k8s/ pass scripts/check-deploy.py, run with the
//! helper venv's Python (kubernetes-validate, jsonschema, PyYAML; installed by
//! scripts/fetch-test-models.sh): strict schema validation of every document, the
//! cross-document checks (pool selector and ports, probes on /health, endpoint picker
//! reference, HPA target, grace period over `--shutdown-grace`), and the script's own
//! self-test that broken manifests are rejected.

use std::path::PathBuf;
use std::process::Command;

#[test]
fn deploy_manifests_are_valid() {
    let cache = std::env::var("SMELT_TEST_MODELS")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/smelt-test-models")
        });
    let python = cache.join("venv/bin/python");
    assert!(
        python.is_file(),
        "{} missing: run scripts/fetch-test-models.sh",
        python.display()
    );
    let root = env!("CARGO_MANIFEST_DIR");
    let out = Command::new(&python)
        .arg(format!("{root}/scripts/check-deploy.py"))
        .current_dir(root)
        .output()
        .expect("run scripts/check-deploy.py");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "check-deploy failed:\n{stdout}\n{stderr}"
    );
    assert_eq!(
        stdout.lines().last(),
        Some("all deploy manifests valid"),
        "{stdout}"
    );
}
