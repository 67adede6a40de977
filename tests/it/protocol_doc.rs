//! docs/PROTOCOL.md names every event and error code the code can send.

use alfresco_ssh::{http, ws};

#[test]
fn every_event_and_code_is_documented() {
    let doc =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/PROTOCOL.md")).unwrap();
    let mut names: Vec<&str> = Vec::new();
    names.extend(ws::event_name::ALL);
    names.extend(http::ERROR_CODES);
    names.extend(ws::error_codes());
    names.extend(ws::warning_codes());
    assert!(names.len() > 25, "the lists themselves are wired up");
    let missing: Vec<&str> = names
        .into_iter()
        .filter(|n| !doc.contains(&format!("`{n}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "missing from docs/PROTOCOL.md: {missing:?}"
    );
}
