//! The documents keep up with the code: docs/PROTOCOL.md names every event and error code
//! (the HTTP ones from `ApiErrorKind::ALL`, so a new variant must be documented),
//! and the README flags table every flag of `--help` with its default.

use alfresco_ssh::{http, ssh, ws};

#[test]
fn every_event_and_code_is_documented() {
    let doc =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/PROTOCOL.md")).unwrap();
    let mut names: Vec<&str> = Vec::new();
    names.extend(ws::event_name::ALL);
    names.extend(http::ApiErrorKind::ALL.iter().map(|k| k.code()));
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

/// The HTTP error table is exactly `ApiErrorKind::ALL`: every code once, with its status, and
/// no code the gateway cannot send.
#[test]
fn http_error_table_matches_the_kinds() {
    let doc =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/PROTOCOL.md")).unwrap();
    let table = doc
        .split_once("\n### Errors\n")
        .and_then(|(_, rest)| rest.split_once("\n### "))
        .map(|(table, _)| table)
        .expect("PROTOCOL.md has a ### Errors section");
    // Rows are `| status | `code` | when |`.
    let mut documented: Vec<(u16, String)> = table
        .lines()
        .filter_map(|line| {
            let mut cells = line.strip_prefix('|')?.split('|').map(str::trim);
            let status = cells.next()?.parse().ok()?;
            let code = cells.next()?.strip_prefix('`')?.strip_suffix('`')?;
            Some((status, code.to_owned()))
        })
        .collect();
    let mut kinds: Vec<(u16, String)> = http::ApiErrorKind::ALL
        .iter()
        .map(|k| (k.status().as_u16(), k.code().to_owned()))
        .collect();
    documented.sort();
    kinds.sort();
    assert_eq!(
        documented, kinds,
        "docs/PROTOCOL.md ### Errors vs ApiErrorKind::ALL"
    );
}

/// The `ssh-error` table gives each code the close code the socket really ends with, for
/// every code of both sides (taken from the kind enums, so none is left out).
#[test]
fn every_error_code_is_documented_with_its_close_code() {
    let doc =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/PROTOCOL.md")).unwrap();
    let own = ws::ErrorKind::ALL.iter().map(|&k| ws::ErrorCode::from(k));
    let ssh = ssh::SshErrorKind::ALL
        .iter()
        .map(|&k| ws::ErrorCode::from(k));
    let wrong: Vec<String> = own
        .chain(ssh)
        .map(|c| format!("| `{}` | {} |", c.code(), u16::from(c.close_code())))
        .filter(|row| !doc.contains(row.as_str()))
        .collect();
    assert!(
        wrong.is_empty(),
        "docs/PROTOCOL.md's ssh-error table lacks the rows {wrong:?}"
    );
}

#[test]
fn readme_flags_table_matches_help() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let help = std::process::Command::new(env!("CARGO_BIN_EXE_alfresco-ssh"))
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8(help.stdout).unwrap();
    // Each option starts a line "      --name <VALUE>"; its text runs to the next option.
    let mut options: Vec<(String, Option<String>)> = Vec::new();
    for line in help.lines() {
        if let Some(rest) = line.trim_start().strip_prefix("--") {
            let name = rest.split([' ', '=']).next().unwrap().to_owned();
            options.push((name, None));
        } else if let (Some(default), Some(last)) =
            (line.split("[default: ").nth(1), options.last_mut())
        {
            last.1 = Some(default.split(']').next().unwrap().to_owned());
        }
    }
    let options: Vec<_> = options
        .into_iter()
        .filter(|(n, _)| n != "help" && n != "version")
        .collect();
    assert!(
        options.len() >= 15,
        "parsed the --help options: {options:?}"
    );
    for (name, default) in options {
        let row = readme
            .lines()
            .find(|l| l.starts_with(&format!("| `--{name}`")))
            .unwrap_or_else(|| panic!("README's flags table has no row for --{name}"));
        if let Some(default) = default {
            assert!(
                row.contains(&format!("`{default}`")),
                "README gives another default for --{name} (help: {default}): {row}"
            );
        }
    }
}
