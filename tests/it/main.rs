//! Integration tests: the gateway in-process against a real OpenSSH sshd, driven over real
//! HTTP and WebSocket connections. Run `tests/setup-test-user.sh` (as root) first; `make
//! test` does.

mod support;

mod bad_input;
mod browser;
mod host_keys;
mod lifecycle;
mod protocol_doc;
mod secrets;
mod sessions;
