//! The systemd unit in contrib/ is valid and starts the real binary.

use std::process::Command;

#[test]
fn systemd_unit_verifies_against_the_built_binary() {
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/contrib/alfresco-ssh.service"
    ))
    .unwrap();
    assert!(
        unit.contains("ExecStart=/usr/local/bin/alfresco-ssh\n"),
        "the documented install path"
    );
    // A process that holds credentials must never be written to disk by systemd-coredump.
    assert!(
        unit.contains("\nLimitCORE=0\n"),
        "the unit turns core dumps off"
    );
    // Point ExecStart at the binary this build made; systemd-analyze checks it exists.
    let binary = env!("CARGO_BIN_EXE_alfresco-ssh");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("alfresco-ssh.service");
    std::fs::write(
        &path,
        unit.replace(
            "ExecStart=/usr/local/bin/alfresco-ssh",
            &format!("ExecStart={binary}"),
        ),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("systemd-analyze (Debian package systemd; make test-deps installs it)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && !stderr.contains(".service:"),
        "systemd-analyze verify:\n{stderr}"
    );

    // The unit's sandbox forbids writes outside StateDirectory; the binary it starts runs.
    let version = Command::new(binary).arg("--version").output().unwrap();
    assert!(String::from_utf8_lossy(&version.stdout).starts_with("alfresco-ssh "));
}
