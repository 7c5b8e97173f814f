//! The service manager's readiness protocol (`sd_notify`), so a unit of `Type=notify` is started
//! only once the node serves, and the manager knows when a stop is flushing rather than hung.
//!
//! The protocol is one datagram of `KEY=VALUE` lines to the Unix socket named by
//! `NOTIFY_SOCKET` (a path, or an abstract name written with a leading `@`). Without that
//! variable (not started by systemd) every call does nothing. Linux only, as systemd is.

use std::os::unix::net::UnixDatagram;

/// Environment variable naming the manager's socket.
const NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";

/// Tells the manager the node serves its listeners.
pub fn ready(status: &str) {
    notify(&format!("READY=1\nSTATUS={status}\nMAINPID={}", std::process::id()));
}

/// Tells the manager the node is stopping (flushing its memtables).
pub fn stopping() {
    notify("STOPPING=1\nSTATUS=flushing memtables before exit");
}

/// Sends `state`; failures are logged, never fatal: a node runs the same without a manager.
fn notify(state: &str) {
    let Some(target) = std::env::var_os(NOTIFY_SOCKET) else { return };
    if let Err(e) = send(&target.to_string_lossy(), state) {
        tracing::warn!("could not notify the service manager at {target:?}: {e}");
    }
}

fn send(target: &str, state: &str) -> std::io::Result<()> {
    let socket = UnixDatagram::unbound()?;
    match target.strip_prefix('@') {
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
            socket.send_to_addr(state.as_bytes(), &addr)?;
        }
        None => {
            socket.send_to(state.as_bytes(), target)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_reaches_a_path_socket_and_an_abstract_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let listener = UnixDatagram::bind(&path).unwrap();
        send(path.to_str().unwrap(), "READY=1").unwrap();
        let mut buf = [0u8; 64];
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");

        use std::os::linux::net::SocketAddrExt;
        let name = format!("hotlake-notify-test-{}", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let listener = UnixDatagram::bind_addr(&addr).unwrap();
        send(&format!("@{name}"), "STOPPING=1").unwrap();
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"STOPPING=1");
    }
}
