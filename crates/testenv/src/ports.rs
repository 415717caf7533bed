//! Free loopback ports.

use std::net::TcpListener;

/// A port that was free a moment ago. Another process may take it before ours binds it; the caller retries the
/// whole start-up when a process fails to bind (see `TestEnv::start`).
pub fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}
