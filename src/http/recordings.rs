//! `/recordings`: the session recordings in `--record-dir`, listed and downloaded with an API
//! token, and a player page for one of them.
//!
//! The player page holds no recording data, so it is served to anyone; its script asks for
//! the token and fetches `<name>.cast` with it. Only strictly plain names are looked up, and
//! only regular files are served: nothing in a request can name a path outside the directory.

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::HeaderMap;
use hyper::{Response, StatusCode};
use serde_json::json;

use super::error::ApiError;
use super::{State, assets, uncached};

/// Recordings are served whole from memory; bigger ones are fetched from the disk directly.
pub const MAX_DOWNLOAD: u64 = 256 * 1024 * 1024;
/// Most entries `/recordings` lists (the newest); bounds the answer for a directory that
/// nobody rotates.
pub const MAX_LISTED: usize = 10_000;

/// `GET /recordings`: `[{"name","size","modified"}]`, newest first.
pub async fn list(
    headers: &HeaderMap,
    state: &State,
    client: IpAddr,
) -> Result<Response<Full<Bytes>>, ApiError> {
    state.authenticate_admin(headers, client)?;
    let dir = record_dir(state)?;
    let entries = tokio::task::spawn_blocking(move || read_list(&dir))
        .await
        .map_err(|_| ApiError::recording_unavailable("the directory could not be listed"))?
        .map_err(|e| {
            tracing::warn!(error = %e, "cannot list the recording directory");
            ApiError::recording_unavailable("the directory could not be listed")
        })?;
    let body: Vec<_> = entries
        .iter()
        .map(|(name, size, modified)| {
            json!({
                "name": name,
                "size": size,
                "modified": humantime::format_rfc3339_seconds(*modified).to_string(),
            })
        })
        .collect();
    Ok(uncached(
        StatusCode::OK,
        "application/json",
        serde_json::Value::from(body).to_string().into(),
    ))
}

/// `GET /recordings/<name>.cast` (the file, with a token) or `/recordings/<name>` (the
/// player page). Any other name is `not_found`, exactly like a missing file.
pub async fn get(
    name: &str,
    headers: &HeaderMap,
    state: &State,
    client: IpAddr,
) -> Result<Response<Full<Bytes>>, ApiError> {
    if !name.ends_with(".cast") {
        // The same check as for the file, so the page exists exactly for names that could.
        return if is_plain_name(&format!("{name}.cast")) {
            Ok(assets::player(&state.page_csp))
        } else {
            Err(ApiError::not_found())
        };
    }
    // An admin token reads every recording; the token that created a session, its own.
    let caller = state.authenticate(headers, client)?;
    if !caller.admin && !state.ledger.recorded_by(name, &caller.name) {
        return Err(ApiError::admin_required());
    }
    let dir = record_dir(state)?;
    if !is_plain_name(name) {
        return Err(ApiError::not_found());
    }
    let path = dir.join(name);
    let read = tokio::task::spawn_blocking(move || read_file(&path))
        .await
        .map_err(|_| ApiError::recording_unavailable("the recording could not be read"))?;
    let body = match read {
        Ok(body) => body,
        Err(Unreadable::Missing) => return Err(ApiError::not_found()),
        Err(Unreadable::TooLarge) => {
            return Err(ApiError::recording_unavailable(&format!(
                "recordings over {} MiB are not served; copy the file from the recording directory",
                MAX_DOWNLOAD >> 20
            )));
        }
        Err(Unreadable::Io(e)) => {
            tracing::warn!(name, error = %e, "cannot read a recording");
            return Err(ApiError::recording_unavailable(
                "the recording could not be read",
            ));
        }
    };
    Ok(uncached(
        StatusCode::OK,
        "application/x-asciicast",
        body.into(),
    ))
}

/// No recording directory: the endpoints do not exist.
fn record_dir(state: &State) -> Result<PathBuf, ApiError> {
    state
        .ws
        .settings
        .record
        .as_ref()
        .map(|r| r.dir.clone())
        .ok_or_else(ApiError::not_found)
}

/// `[A-Za-z0-9._-]+\.cast` without `..`: what the recorder writes, and nothing that could
/// leave the directory or name a hidden file.
pub fn is_plain_name(name: &str) -> bool {
    let Some(stem) = name.strip_suffix(".cast") else {
        return false;
    };
    !stem.is_empty()
        && name.len() <= 255
        && !name.starts_with('.')
        && !name.contains("..")
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Regular `*.cast` files with plain names: (name, size, modified), newest first.
fn read_list(dir: &Path) -> std::io::Result<Vec<(String, u64, SystemTime)>> {
    let mut entries = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        // DirEntry::metadata does not follow symbolic links.
        let Ok(meta) = entry.metadata() else { continue };
        if !is_plain_name(&name) || !meta.is_file() {
            continue;
        }
        let modified = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
        entries.push((name, meta.len(), modified));
    }
    entries.sort_by(|a, b| b.2.cmp(&a.2).then_with(|| b.0.cmp(&a.0)));
    entries.truncate(MAX_LISTED);
    Ok(entries)
}

enum Unreadable {
    Missing,
    TooLarge,
    Io(std::io::Error),
}

/// The whole file, if it is a regular file (not a link, not a FIFO that would block).
fn read_file(path: &Path) -> Result<Vec<u8>, Unreadable> {
    let flags = rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::NONBLOCK;
    let opened = OpenOptions::new()
        .read(true)
        .custom_flags(flags.bits() as i32)
        .open(path);
    let file: File = match opened {
        Ok(file) => file,
        // ELOOP: a symbolic link, which is not served.
        Err(e)
            if e.kind() == std::io::ErrorKind::NotFound
                || e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) =>
        {
            return Err(Unreadable::Missing);
        }
        Err(e) => return Err(Unreadable::Io(e)),
    };
    let meta = file.metadata().map_err(Unreadable::Io)?;
    if !meta.is_file() {
        return Err(Unreadable::Missing);
    }
    if meta.len() > MAX_DOWNLOAD {
        return Err(Unreadable::TooLarge);
    }
    let mut body = Vec::with_capacity(meta.len() as usize);
    // A file still being recorded grows; the cap holds for what is read too.
    file.take(MAX_DOWNLOAD)
        .read_to_end(&mut body)
        .map_err(Unreadable::Io)?;
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_names() {
        for good in ["20261203T074012Z-5b0e6f1c.cast", "a.cast", "a-2_b.c.cast"] {
            assert!(is_plain_name(good), "{good}");
        }
        for bad in [
            ".cast",
            "..cast",
            "a..b.cast",
            "../a.cast",
            "a/b.cast",
            "..%2Fa.cast",
            ".probe.cast",
            "a.cast.txt",
            "a b.cast",
            "é.cast",
            "a\0.cast",
            "",
        ] {
            assert!(!is_plain_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn lists_regular_cast_files_newest_first() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, age: u64| {
            let path = dir.path().join(name);
            std::fs::write(&path, name).unwrap();
            let when = SystemTime::now() - std::time::Duration::from_secs(age);
            File::options()
                .write(true)
                .open(&path)
                .unwrap()
                .set_modified(when)
                .unwrap();
        };
        write("old.cast", 100);
        write("new.cast", 1);
        write("notes.txt", 0);
        std::os::unix::fs::symlink("/etc/passwd", dir.path().join("link.cast")).unwrap();
        std::fs::create_dir(dir.path().join("dir.cast")).unwrap();
        let names: Vec<_> = read_list(dir.path())
            .unwrap()
            .into_iter()
            .map(|e| e.0)
            .collect();
        assert_eq!(names, ["new.cast", "old.cast"]);
        assert!(matches!(
            read_file(&dir.path().join("link.cast")),
            Err(Unreadable::Missing)
        ));
        assert!(matches!(
            read_file(&dir.path().join("dir.cast")),
            Err(Unreadable::Missing)
        ));
        assert_eq!(
            read_file(&dir.path().join("new.cast")).ok().unwrap(),
            b"new.cast"
        );
    }
}
