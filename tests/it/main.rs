//! Integration tests: the gateway in-process against a real OpenSSH sshd, driven over real
//! HTTP and WebSocket connections. Run `tests/setup-test-user.sh` (as root) first; `make
//! test` does.

mod support;

mod bad_input;
mod browser;
mod client;
mod compat;
mod connect;
mod contrib;
mod destination;
mod docs;
mod encodings;
mod fuzz;
mod handback_page;
mod hidpi;
mod host_keys;
mod jump;
mod kbd_auth;
mod lifecycle;
mod notice_pages;
mod paste;
mod player;
mod process;
mod recording;
mod resume;
mod resume_page;
mod secrets;
mod security;
mod session_api;
mod sessions;
mod share;
mod tls;
mod webhooks;
