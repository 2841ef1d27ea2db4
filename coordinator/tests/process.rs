//! The real `parley-coordinator` binary as a process: JSON logs on request, and a clean
//! shutdown on SIGTERM (what service managers and Kubernetes send).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_parley-coordinator");

fn coordinator(dir: &Path, args: &[&str]) {
    let out = Command::new(BIN)
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[cfg(unix)]
#[test]
fn json_logs_and_a_clean_exit_on_sigterm() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    coordinator(dir, &["ca", "init", "--dir", "certs"]);
    coordinator(
        dir,
        &[
            "ca",
            "issue",
            "--dir",
            "certs",
            "--role",
            "coordinator",
            "--name",
            "coordinator",
            "--san",
            "127.0.0.1",
        ],
    );
    std::fs::write(
        dir.join("coordinator.toml"),
        "listen = \"127.0.0.1:0\"\ndatabase = \"state/jobs.sqlite\"\n[tls]\n\
         ca_cert = \"certs/ca.pem\"\ncert = \"certs/coordinator.pem\"\n\
         key = \"certs/coordinator.key\"\n",
    )
    .unwrap();
    let mut child = Command::new(BIN)
        .current_dir(dir)
        .args([
            "run",
            "--config",
            "coordinator.toml",
            "--log-format",
            "json",
        ])
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut lines = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !lines
        .iter()
        .any(|l: &String| l.contains("coordinator listening"))
    {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => lines.push(line),
            Err(_) => panic!("no 'coordinator listening' line; got {lines:?}"),
        }
    }
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let started = Instant::now();
    let exit = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "still running 30 s after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(exit.success(), "exit status after SIGTERM: {exit}");
    // The reader ends at end of file, after the process's last line.
    lines.extend(rx.iter());
    assert!(
        lines.iter().any(|l| l.contains("shutting down")),
        "{lines:?}"
    );
    for line in &lines {
        let v: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
        assert!(
            v.get("level").is_some() && v.get("fields").is_some(),
            "{line}"
        );
        assert!(
            !line.contains('\u{1b}'),
            "colour codes in a JSON log: {line}"
        );
    }
}
