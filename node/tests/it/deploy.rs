//! What `deploy/` ships, checked against the tools that run it: the systemd unit by
//! `systemd-analyze` (syntax and hardening), and the readiness protocol its `Type=notify` relies
//! on, spoken by a real node.

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::NodeProcess;

const UNIT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/systemd/hotlake.service");

/// Highest `systemd-analyze security` exposure the unit may have (0 is the most confined, 10
/// the least; systemd calls up to 2 "OK").
const EXPOSURE_MAX: f64 = 2.0;

/// A root directory holding the unit, the real `hotlake` binary where the unit expects it, and
/// the host's system units (the targets the unit is ordered after).
fn unit_root(dir: &Path) {
    let bin = dir.join("usr/local/bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::copy(env!("CARGO_BIN_EXE_hotlake"), bin.join("hotlake")).unwrap();
    let units = dir.join("etc/systemd/system");
    std::fs::create_dir_all(&units).unwrap();
    std::fs::copy(UNIT, units.join("hotlake.service")).unwrap();
    std::fs::create_dir_all(dir.join("usr/lib/systemd")).unwrap();
    let copied =
        Command::new("cp").args(["-r", "/usr/lib/systemd/system"]).arg(dir.join("usr/lib/systemd/")).status().unwrap();
    assert!(copied.success(), "copy the host's system units");
}

fn systemd_analyze(args: &[&str], root: &Path) -> std::process::Output {
    Command::new("systemd-analyze")
        .args(args)
        .arg(format!("--root={}", root.display()))
        .output()
        .expect("systemd-analyze (Debian package systemd; scripts/test installs it)")
}

#[test]
fn the_systemd_unit_verifies_and_is_confined() {
    let root = tempfile::tempdir().unwrap();
    unit_root(root.path());
    let unit_path = root.path().join("etc/systemd/system/hotlake.service");
    // `verify` exits 0 even for lines it ignores; any message at all is a finding.
    let verified = systemd_analyze(&["verify", unit_path.to_str().unwrap()], root.path());
    let said = format!("{}{}", String::from_utf8_lossy(&verified.stdout), String::from_utf8_lossy(&verified.stderr));
    assert!(verified.status.success() && said.trim().is_empty(), "systemd-analyze verify: {said}");

    let security = systemd_analyze(&["security", "--offline=yes", "hotlake.service"], root.path());
    let report = String::from_utf8_lossy(&security.stdout);
    let exposure: f64 = report
        .lines()
        .find_map(|l| l.split("Overall exposure level for hotlake.service:").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|x| x.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in: {report}{}", String::from_utf8_lossy(&security.stderr)));
    assert!(exposure <= EXPOSURE_MAX, "exposure {exposure} > {EXPOSURE_MAX}:\n{report}");
}

/// The messages a node sent to a notify socket, waiting up to `timeout` for one containing `want`.
fn receive_until(socket: &UnixDatagram, want: &str, timeout: Duration) -> String {
    let deadline = Instant::now() + timeout;
    let mut seen = String::new();
    let mut buf = vec![0u8; 4096];
    while Instant::now() < deadline {
        if let Ok(n) = socket.recv(&mut buf) {
            let message = String::from_utf8_lossy(&buf[..n]).into_owned();
            if message.lines().any(|l| l == want) {
                return message;
            }
            seen.push_str(&message);
            seen.push('\n');
        }
    }
    panic!("no {want:?} within {timeout:?}; received: {seen:?}");
}

#[test]
fn a_node_tells_the_service_manager_when_it_serves_and_when_it_stops() {
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let data = dir.path().join("data");
    let notify = format!("NOTIFY_SOCKET={}", socket_path.display());
    // `env` execs the node, so the process systemd would watch is the node itself.
    let mut node = NodeProcess::start_at(&data, &NodeProcess::free_addrs(), &["env".into(), notify], &[]);
    let ready = receive_until(&socket, "READY=1", Duration::from_secs(30));
    assert!(ready.lines().any(|l| l.starts_with("STATUS=serving HTTP on ")), "{ready}");
    assert!(ready.lines().any(|l| l.strip_prefix("MAINPID=").is_some_and(|p| p.parse::<u32>().is_ok())), "{ready}");
    assert_eq!(node.write("telemetry", "cpu,host=a v=1 1").status(), 204);
    node.stop();
    receive_until(&socket, "STOPPING=1", Duration::from_secs(5));
}
