//! Real cloud-init (Debian's package, which hack/test.sh installs) for tests of what a machine renders from its
//! instance data.

/// What `cloud-init query --format FORMAT` prints on a machine whose instance data is `instance_data` (user data and
/// vendor data empty).
pub fn cloud_init_query(instance_data: &serde_json::Value, format: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("instance-data.json");
    std::fs::write(&data, instance_data.to_string()).unwrap();
    let empty = dir.path().join("empty");
    std::fs::write(&empty, "").unwrap();
    let out = std::process::Command::new("cloud-init")
        .args(["query", "--instance-data"])
        .arg(&data)
        .arg("--user-data")
        .arg(&empty)
        .arg("--vendor-data")
        .arg(&empty)
        .args(["--format", format])
        .output()
        .expect("cloud-init (Debian package cloud-init; hack/test.sh installs it)");
    assert!(
        out.status.success(),
        "cloud-init query: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}
