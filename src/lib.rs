//! alfresco-ssh: a web SSH gateway in one binary.
//!
//! A CI job or a person `POST`s SSH credentials to `/create-session` and gets a one-time
//! URL; the browser that opens it gets an xterm.js terminal, bridged over a WebSocket to an
//! SSH shell. Data flows one way through the modules:
//!
//! - `http`: the hyper service. Routes, create-session parsing, the embedded page.
//! - `store`: pending sessions (target and credentials) under one-time ids, with expiry.
//! - `ledger`: every session's public status (state, times, outcome) from create to end
//!   and a while after, for `/sessions` and its waiters; fed by the session tasks.
//! - `ws`: the WebSocket side. Claims a pending session and runs it, speaking the
//!   Socket.IO-lite `protocol`.
//! - `ssh`: the bridge. One dedicated thread per live session owns the libssh2 session, and
//!   checks the server's host key (`hostkey`) before any credential is sent.
//!
//! Leaves used by all: `config` (checked settings), `tls` (the certificate and key, loaded
//! and checked with the config), `request` (what a session asks for), `secret` (credentials
//! that cannot leak), `record` (session recordings as asciicast files, and their replay).
//! `server` ties them together, and does the TLS handshake when configured; `main` only
//! turns the command line into a `Config` and a `logging` subscriber (or hands `replay FILE`
//! to `record::replay`, and `session …` to `client`, the CI side's HTTP client of the API).
//! `webhook` posts session events to the operator's URLs from tasks of its own, so a slow
//! receiver never slows a session.
//!
//! The HTTP and WebSocket contract is docs/PROTOCOL.md.
#![forbid(unsafe_code)]

pub mod client;
pub mod config;
pub mod destination;
pub mod http;
pub mod ledger;
pub mod logging;
pub mod metrics;
pub mod record;
pub mod request;
pub mod secret;
pub mod server;
pub mod ssh;
pub mod store;
pub mod tls;
pub mod webhook;
pub mod ws;

pub use config::{Args, Config};
pub use server::{Handle, Server};
