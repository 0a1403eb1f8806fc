//! Running the examples as a user would: spawned processes, found next to the test binary
//! (`cargo test` builds every example before running tests; when a single test target is run
//! and the examples are missing, they are built first).

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::Once;
use std::time::{Duration, Instant};

/// `target/<profile>/examples/<name>`.
pub fn example_path(name: &str) -> PathBuf {
    static BUILD: Once = Once::new();
    let exe = std::env::current_exe().expect("test binary path");
    // target/<profile>/deps/<test-binary> -> target/<profile>/examples/<name>
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile> directory");
    let path = profile_dir.join("examples").join(name);
    if !path.exists() {
        BUILD.call_once(|| {
            let status = Command::new(env!("CARGO"))
                .args(["build", "--all-features", "--examples"])
                .current_dir(env!("CARGO_MANIFEST_DIR"))
                .status()
                .expect("run cargo build --examples");
            assert!(status.success(), "building the examples failed");
        });
    }
    assert!(
        path.exists(),
        "example {name} not found at {}",
        path.display()
    );
    path
}

/// A free loopback port right now (bound then released).
pub fn free_addr() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr")
}

/// A spawned example, killed when dropped.
pub struct Program {
    pub child: Child,
}

impl Program {
    /// Starts example `name` with `args`; stderr is captured.
    pub fn start(name: &str, args: &[String]) -> Self {
        let child = Command::new(example_path(name))
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn example");
        Self { child }
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
    }

    /// Waits (bounded) for the process to exit; returns its output.
    pub fn wait(mut self, limit: Duration) -> Output {
        let started = Instant::now();
        loop {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            if started.elapsed() > limit {
                let _ = self.child.kill();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let child = std::mem::replace(
            &mut self.child,
            Command::new("true").spawn().expect("placeholder"),
        );
        child.wait_with_output().expect("output")
    }
}

impl Drop for Program {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs example `name` to completion (bounded) and returns its output.
pub fn run_to_end(name: &str, args: &[&str], limit: Duration) -> Output {
    let program = Program::start(
        name,
        &args.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
    );
    program.wait(limit)
}

/// Waits until something answers HTTP on `addr` (bounded).
pub async fn wait_http(addr: SocketAddr) {
    let client = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(30) {
        if client.get(format!("http://{addr}/")).send().await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("nothing answered on {addr} within 30 s");
}
