//! The shipped systemd unit passes `systemd-analyze verify` silently and scores an
//! exposure of 2.0 or lower in `systemd-analyze security`. Skipped (with a note on
//! stderr) where systemd-analyze is not installed.

use std::path::Path;
use std::process::Command;

fn analyze_available() -> bool {
    Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

fn unit() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd/steward.service")
}

#[test]
fn the_unit_verifies_cleanly() {
    if !analyze_available() {
        eprintln!("systemd-analyze not installed: unit not verified");
        return;
    }
    // verify checks that ExecStart= binaries exist; point them at the binary
    // under test instead of the install path /usr/local/bin/steward.
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(unit())
        .unwrap()
        .replace("/usr/local/bin/steward", crate::common::BIN);
    let copy = dir.path().join("steward.service");
    std::fs::write(&copy, text).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&copy)
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "verify said: {said}"
    );
}

#[test]
fn the_unit_exposure_is_at_most_2() {
    if !analyze_available() {
        eprintln!("systemd-analyze not installed: exposure not checked");
        return;
    }
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=true"])
        .arg(unit())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_else(|| panic!("{text}"));
    let level: f64 = line
        .split(':')
        .nth(1)
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{line}"));
    assert!(level <= 2.0, "{line}");
}

/// The unit's open-file limit leaves room for the default connection cap and
/// the daemon's own files (without it, idle sockets once exhausted the default
/// 1,024 and every request timed out).
#[test]
fn the_unit_allows_the_default_connections_and_the_daemons_own_files() {
    let text = std::fs::read_to_string(unit()).unwrap();
    let limit: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("LimitNOFILE="))
        .expect("the unit sets LimitNOFILE")
        .trim()
        .parse()
        .unwrap();
    let defaults = steward::config::Config::defaults().unwrap();
    assert!(
        limit >= defaults.server.max_connections as u64 + steward::server::listen::RESERVED_FDS,
        "LimitNOFILE={limit}"
    );
}

/// One journal entry as sent over journald's native protocol: `KEY=value\n`
/// lines, or `KEY\n`, a 64-bit little-endian length and the value, for values
/// holding a newline.
fn journal_fields(datagram: &[u8]) -> std::collections::HashMap<String, String> {
    let mut fields = std::collections::HashMap::new();
    let mut rest = datagram;
    while !rest.is_empty() {
        let line_end = rest.iter().position(|b| *b == b'\n').unwrap_or(rest.len());
        let line = &rest[..line_end];
        if let Some(eq) = line.iter().position(|b| *b == b'=') {
            fields.insert(
                String::from_utf8_lossy(&line[..eq]).into_owned(),
                String::from_utf8_lossy(&line[eq + 1..]).into_owned(),
            );
            rest = &rest[(line_end + 1).min(rest.len())..];
        } else {
            let key = String::from_utf8_lossy(line).into_owned();
            let after = &rest[line_end + 1..];
            let len = u64::from_le_bytes(after[..8].try_into().unwrap()) as usize;
            let value = String::from_utf8_lossy(&after[8..8 + len]).into_owned();
            fields.insert(key, value);
            rest = &after[(8 + len + 1).min(after.len())..];
        }
    }
    fields
}

/// Under systemd (`JOURNAL_STREAM` set, `log.format = "auto"`) the daemon logs
/// through journald's native socket: a warning is a warning to the journal
/// (PRIORITY 4, what `journalctl -p warning` shows), info is not (PRIORITY 5 or
/// more), and fields stay fields. The daemon runs in its own mount namespace
/// with a test socket bound over /run/systemd/journal (needs root, as CI runs
/// the tests).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_systemd_the_log_goes_to_the_journal_with_priorities_and_fields() {
    use std::os::unix::net::UnixDatagram;
    use std::time::{Duration, Instant};

    let journal = tempfile::tempdir().unwrap();
    let socket = UnixDatagram::bind(journal.path().join("socket")).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    crate::common::write_config(
        dir.path(),
        "[server]\nlisten = \"127.0.0.1:0\"\nmax_connections = 1\n",
    );
    let mut cmd = Command::new("unshare");
    cmd.args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg(
            "mkdir -p /run/systemd/journal && mount --bind \"$1\" /run/systemd/journal \
             && exec \"$2\" serve --config steward.toml",
        )
        .arg("sh")
        .arg(journal.path())
        .arg(env!("CARGO_BIN_EXE_steward"))
        .current_dir(dir.path())
        .env("JOURNAL_STREAM", "8:12345")
        .env("STEWARD_LOG__FORMAT", "auto")
        .env_remove("RUST_LOG")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    let mut child = crate::common::ChildGuard::spawn(&mut cmd);

    let deadline = Instant::now() + Duration::from_secs(60);
    let mut entries = Vec::new();
    let next = |entries: &mut Vec<std::collections::HashMap<String, String>>| {
        assert!(
            Instant::now() < deadline,
            "journal entries so far: {entries:?}"
        );
        let mut buf = vec![0u8; 1 << 16];
        let n = socket.recv(&mut buf).expect("a journal entry within 30 s");
        let fields = journal_fields(&buf[..n]);
        entries.push(fields.clone());
        fields
    };
    let listening = loop {
        let e = next(&mut entries);
        if e.get("MESSAGE").is_some_and(|m| m == "listening") {
            break e;
        }
    };
    assert_eq!(listening["SYSLOG_IDENTIFIER"], "steward");
    assert_eq!(listening["PRIORITY"], "5", "info is below warning");
    assert_eq!(listening["F_MAX_CONNECTIONS"], "1", "fields stay fields");
    let addr = listening["F_ADDR"].clone();

    // At the cap of one connection, a second one closes the idle first, which
    // the daemon logs as a warning.
    let _idle = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let r = reqwest::get(format!("http://{addr}/readyz")).await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let warning = loop {
        let e = next(&mut entries);
        if e.get("MESSAGE")
            .is_some_and(|m| m.starts_with("connection limit reached"))
        {
            break e;
        }
    };
    assert_eq!(warning["PRIORITY"], "4", "{warning:?}");
    assert_eq!(warning["F_MAX_CONNECTIONS"], "1");
    assert!(warning.contains_key("TARGET"), "{warning:?}");
    let pid = child.0.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let status = crate::common::wait(&mut child.0, Duration::from_secs(60));
    assert!(status.success());
    // Nothing went to stderr: the journal had it all.
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.0.stderr.take().unwrap(), &mut stderr).unwrap();
    assert_eq!(stderr, "", "entries: {}", entries.len());
}
