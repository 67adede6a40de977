//! The create-session body and the secrets in it: read from the files and variables the
//! flags name (never from argv), serialized once into a buffer sized beforehand, so no grown
//! and freed copy is left behind. Everything read is wiped when dropped; the body itself
//! after the request (`Api::create`).

use std::path::Path;

use serde::Serialize;
use zeroize::Zeroizing;

use super::Env;
use super::args::CreateArgs;
use super::error::ClientError;
use crate::secret::Secret;

/// The create-session body, serialized once into a buffer sized beforehand, so the
/// credentials in it are never left behind in a grown and freed allocation. The buffer is
/// wiped after the request (see `Api::create`); the files and variables read are wiped here.
pub fn create_body(args: &CreateArgs, env: Env<'_>) -> Result<Zeroizing<Vec<u8>>, ClientError> {
    let c = &args.credentials;
    let key = c
        .key_file
        .as_deref()
        .map(|p| read_secret_file(p, "--key-file", false))
        .transpose()?;
    let password = match (&c.password_env, &c.password_file) {
        (Some(var), _) => Some(read_secret_var(env, var, "--password-env")?),
        (None, Some(path)) => Some(read_secret_file(path, "--password-file", true)?),
        (None, None) => None,
    };
    let passphrase = match (&c.passphrase_env, &c.passphrase_file) {
        (Some(var), _) => Some(read_secret_var(env, var, "--passphrase-env")?),
        (None, Some(path)) => Some(read_secret_file(path, "--passphrase-file", true)?),
        (None, None) => None,
    };
    let body = CreateBody {
        hostname: &args.host,
        port: args.port,
        username: &args.user,
        password: password.as_ref().map(|s| s.expose().as_str()),
        private_key: key.as_ref().map(|s| s.expose().as_str()),
        passphrase: passphrase.as_ref().map(|s| s.expose().as_str()),
        host_key: args.host_key.as_deref(),
        ttl: args.ttl.map(|d| d.as_secs()),
        max_duration: args.max_duration.map(|d| d.as_secs()),
        idle_timeout: args.idle_timeout.map(|d| d.as_secs()),
        resume_grace: args.resume_grace.map(|d| d.as_secs()),
        handback: args.handback.then_some(true),
    };
    // JSON escapes at most sextuple a byte (`\u0000`); the rest is field names and numbers.
    let text_len = [&key, &password, &passphrase]
        .iter()
        .filter_map(|s| s.as_ref().map(|s| s.expose().len()))
        .sum::<usize>()
        + args.host.len()
        + args.user.len()
        + args.host_key.as_ref().map_or(0, String::len);
    let capacity = text_len * 6 + 1024;
    let mut buffer = Zeroizing::new(Vec::with_capacity(capacity));
    serde_json::to_writer(&mut *buffer, &body)
        .map_err(|e| ClientError::usage(format!("cannot encode the request: {e}")))?;
    debug_assert_eq!(buffer.capacity(), capacity, "the body never grew");
    Ok(buffer)
}

#[derive(Serialize)]
struct CreateBody<'a> {
    hostname: &'a str,
    port: u16,
    username: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    password: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    private_key: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    passphrase: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    host_key: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ttl: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_duration: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    idle_timeout: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    resume_grace: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    handback: Option<bool>,
}

/// A secret file's text; with `one_line`, without its trailing newline (as `echo` writes).
pub fn read_secret_file(
    path: &Path,
    flag: &str,
    one_line: bool,
) -> Result<Secret<String>, ClientError> {
    let bytes = Zeroizing::new(
        std::fs::read(path)
            .map_err(|e| ClientError::usage(format!("{flag} {}: {e}", path.display())))?,
    );
    let text = std::str::from_utf8(&bytes)
        .map_err(|_| ClientError::usage(format!("{flag} {}: not UTF-8 text", path.display())))?;
    let text = if one_line {
        text.strip_suffix('\n')
            .map_or(text, |t| t.strip_suffix('\r').unwrap_or(t))
    } else {
        text
    };
    if text.is_empty() {
        return Err(ClientError::usage(format!(
            "{flag} {}: empty",
            path.display()
        )));
    }
    Ok(Secret::new(text.to_owned()))
}

/// A secret environment variable, named by a flag; unset or empty is a usage error.
pub fn read_secret_var(env: Env<'_>, var: &str, flag: &str) -> Result<Secret<String>, ClientError> {
    let value = env(var).ok_or_else(|| ClientError::usage(format!("{flag}: {var} is not set")))?;
    let value = Secret::new(
        value
            .into_string()
            .map_err(|_| ClientError::usage(format!("{flag}: {var} is not UTF-8")))?,
    );
    if value.expose().is_empty() {
        return Err(ClientError::usage(format!("{flag}: {var} is empty")));
    }
    Ok(value)
}
