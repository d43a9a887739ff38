//! `voxgate-ops loadtest` end to end, with real processes: an echo engine (`voxgate
//! --local-engine-mode echo`), a gateway (`voxgate --realtime-url ws://…/v1/realtime`) using it as
//! its upstream, and the load tool against the gateway.
//!
//! Cargo only provides `CARGO_BIN_EXE_*` for this package's own binaries, so the `voxgate` binary
//! is looked up next to `voxgate-ops` in the same target directory; if it is not there (e.g.
//! `cargo test -p voxgate-ops` alone), it is built with the same cargo, profile and target dir.

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

const KEY: &str = "sk-loadtest-shared";

/// Kills the child process when dropped, so a failing test leaves nothing running.
struct Running {
    child: Child,
    addr: String,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn voxgate_binary() -> PathBuf {
    let ops = PathBuf::from(env!("CARGO_BIN_EXE_voxgate-ops"));
    let dir = ops.parent().expect("binary directory");
    let voxgate = dir.join(format!("voxgate{}", std::env::consts::EXE_SUFFIX));
    if voxgate.exists() {
        return voxgate;
    }
    // target/<profile>/voxgate-ops: build the gateway binary into the same place.
    let profile = dir.file_name().and_then(|n| n.to_str()).unwrap_or("debug");
    let target_dir = dir.parent().expect("target directory");
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root");
    let mut build = Command::new(option_env!("CARGO").unwrap_or("cargo"));
    build
        .current_dir(workspace)
        .args(["build", "-p", "voxgate", "--bin", "voxgate"])
        .env("CARGO_TARGET_DIR", target_dir);
    if profile != "debug" {
        build.args([
            "--profile",
            if profile == "release" {
                "release"
            } else {
                profile
            },
        ]);
    }
    let status = build
        .status()
        .expect("run cargo build for the voxgate binary");
    assert!(status.success(), "building the voxgate binary failed");
    voxgate
}

/// Starts `voxgate` with `args` and waits for its "listening on" line.
fn start_voxgate(binary: &Path, data_dir: &Path, args: &[&str]) -> Running {
    let mut child = Command::new(binary)
        .args(["--http-addr", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir)
        .args(args)
        .env("OPENAI_API_KEY", KEY)
        .env("RUST_LOG", "info")
        .env_remove("VOXGATE_REALTIME_URL")
        .env_remove("VOXGATE_HTTP_ADDR")
        .env_remove("VOXGATE_CONFIG")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start voxgate");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(at) = line.find("listening on http://") {
                let addr: String = line[at + "listening on http://".len()..]
                    .chars()
                    .take_while(|c| c.is_ascii_digit() || *c == '.' || *c == ':')
                    .collect();
                let _ = tx.send(addr);
            }
            // Keep draining so the child never blocks on a full pipe.
        }
    });
    let mut running = Running {
        child,
        addr: String::new(),
    };
    running.addr = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("voxgate reports its address");
    running
}

#[test]
fn echo_loadtest_through_a_real_gateway_loses_nothing() {
    let binary = voxgate_binary();
    let dir = tempfile::tempdir().expect("tempdir");
    let (engine_dir, gateway_dir) = (dir.path().join("engine"), dir.path().join("gateway"));
    let engine = start_voxgate(&binary, &engine_dir, &["--local-engine-mode", "echo"]);
    let upstream = format!("ws://{}/v1/realtime", engine.addr);
    let gateway = start_voxgate(&binary, &gateway_dir, &["--realtime-url", &upstream]);

    // A 16 kHz input exercises the tool's resampling to 24 kHz.
    let wav = dir.path().join("input.wav");
    let tone: Vec<f32> = (0..16_000).map(|i| (i as f32 * 0.07).sin() * 0.3).collect();
    voxgate_dsp::wav::write_wav_pcm16(&wav, 16_000, &tone).expect("write input");

    let pid = gateway.child.id().to_string();
    let url = format!("ws://{}/ws/realtime", gateway.addr);
    let output = Command::new(env!("CARGO_BIN_EXE_voxgate-ops"))
        .args([
            "loadtest",
            "--url",
            &url,
            "--sessions",
            "5",
            "--duration",
            "3",
            "--json",
        ])
        .args(["--gateway-pid", &pid, "--input"])
        .arg(&wav)
        .output()
        .expect("run the load tool");
    assert!(
        output.status.success(),
        "loadtest failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: Value = serde_json::from_slice(&output.stdout).expect("JSON report");

    assert_eq!(report["sessions"], 5);
    assert_eq!(report["frames_sent"], 5 * 150, "{report}");
    assert_eq!(report["frames_received"], 5 * 150, "{report}");
    assert_eq!(report["frames_lost"], 0, "{report}");
    assert_eq!(report["frames_duplicated"], 0, "{report}");
    let latency = &report["latency_ms"];
    let (p50, p99, max) = (
        latency["p50"].as_f64().expect("p50"),
        latency["p99"].as_f64().expect("p99"),
        latency["max"].as_f64().expect("max"),
    );
    assert!(0.0 < p50 && p50 <= p99 && p99 <= max, "{latency}");
    // Loopback round trips through two processes; generous for a busy shared machine.
    assert!(p99 < 250.0, "{latency}");
    // The gateway's own histogram samples both directions: one read in GATEWAY_STAMP_EVERY per socket is
    // dated, and nearly every read here is one frame (half the expected count leaves room for coalesced
    // reads and the handshakes' stamped first reads).
    let relay = &report["gateway_relay_ms"];
    let sampled = u64::from(2 * 5 * 150 / voxgate::net::GATEWAY_STAMP_EVERY);
    let count = relay["count"].as_u64().expect("count");
    assert!(sampled / 2 <= count && count <= 2 * 5 * 150, "{relay}");
    // Each direction's time (from the kernel's receipt to the gateway's write) lies inside the frame's round
    // trip, so its median is at most the round trip's; the report gives the upper bound of the histogram
    // bucket, at most 2.5 times the value in it.
    assert!(relay["p50"].as_f64().expect("p50") <= 2.5 * p50, "{relay}");
    let usage = &report["gateway"];
    assert!(usage["cpu_s"].as_f64().expect("cpu") > 0.0, "{usage}");
    assert!(
        usage["rss_end_kib"].as_u64().expect("rss") > 1024,
        "{usage}"
    );
    assert!(
        usage["cpu_ms_per_session_s"].as_f64().expect("cost") > 0.0,
        "{usage}"
    );
    drop(gateway);
    drop(engine);
}

#[test]
fn loadtest_reports_an_unreachable_gateway() {
    // Port 9 (discard) on loopback: nothing listens there in a test environment.
    let output = Command::new(env!("CARGO_BIN_EXE_voxgate-ops"))
        .args([
            "loadtest",
            "--url",
            "ws://127.0.0.1:9/ws/realtime",
            "--sessions",
            "1",
            "--duration",
            "1",
        ])
        .args(["--connect-timeout", "2"])
        .output()
        .expect("run the load tool");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("cannot connect"), "{stderr}");
}
