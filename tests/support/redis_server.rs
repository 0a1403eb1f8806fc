//! A real `redis-server` for tests: started on a free loopback port, killable and restartable on
//! the same port (so clients configured with its URL can reconnect).
//!
//! ```ignore
//! let mut redis = RedisServer::start();          // waits until it answers PING
//! let store = RedisStore::connect(&redis.url()).await?;
//! redis.kill();                                  // SIGKILL: an outage
//! redis.restart();                               // same port, empty data set
//! ```
//!
//! The server keeps nothing on disk (`--save "" --appendonly no`) and runs with
//! `setpriv --pdeathsig KILL` where available, so it dies with the thread that started it even if
//! the test process is killed. Start it from the test's own thread (the body of a test or an
//! `async fn` it runs), not from `spawn_blocking`, whose threads come and go. `Drop` kills it.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const REDIS_SERVER: &str = "redis-server";
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// A `redis-server` process owned by the test.
pub struct RedisServer {
    port: u16,
    child: Option<Child>,
    /// Cluster mode: the node's config file (removed on drop).
    cluster_config: Option<String>,
}

impl RedisServer {
    /// Starts a server on a free loopback port and waits until it answers `PING`.
    /// Panics (it is a test helper) if `redis-server` is missing or never comes up.
    pub fn start() -> Self {
        Self::start_mode(false)
    }

    /// Starts a node with `--cluster-enabled yes` (its cluster bus port, `port + 10000`, is
    /// checked free too). Join nodes into a cluster with [`create_cluster`].
    pub fn start_cluster_node() -> Self {
        Self::start_mode(true)
    }

    fn start_mode(cluster: bool) -> Self {
        let mut last_error = String::new();
        // The free port is found by binding :0 and closing it; another process may take it in
        // between, so try a few ports.
        for _ in 0..10 {
            let port = free_port();
            if cluster && (port > 55_000 || !port_is_free(port + 10_000)) {
                continue;
            }
            let cluster_config =
                cluster.then(|| format!("/tmp/tower-sticky-test-nodes-{port}.conf"));
            let mut server = Self {
                port,
                child: None,
                cluster_config,
            };
            match server.spawn() {
                Ok(()) => return server,
                Err(e) => last_error = e,
            }
        }
        panic!("could not start redis-server: {last_error}");
    }

    /// The port it listens on (stays the same across [`restart`](Self::restart)).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:<port>/`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Whether the process is running (started and not killed).
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Kills the server (SIGKILL, like a crash) and waits for the process to exit.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port (with an empty data set), waiting for `PING`.
    pub fn restart(&mut self) {
        self.kill();
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            match self.spawn() {
                Ok(()) => return,
                // The old socket may linger for a moment.
                Err(e) if Instant::now() > deadline => panic!("redis-server restart failed: {e}"),
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    fn spawn(&mut self) -> Result<(), String> {
        let port = self.port.to_string();
        let args = [
            "--port",
            port.as_str(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--protected-mode",
            "no",
            "--dir",
            "/tmp",
        ];
        let mut cluster_args = Vec::new();
        if let Some(file) = &self.cluster_config {
            let _ = std::fs::remove_file(file);
            cluster_args = vec![
                "--cluster-enabled".to_owned(),
                "yes".to_owned(),
                "--cluster-config-file".to_owned(),
                file.clone(),
            ];
        }
        let mut cmd = if std::path::Path::new("/usr/bin/setpriv").exists() {
            let mut c = Command::new("/usr/bin/setpriv");
            c.args(["--pdeathsig", "KILL", REDIS_SERVER]);
            c
        } else {
            Command::new(REDIS_SERVER)
        };
        let mut child = cmd
            .args(args)
            .args(&cluster_args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("spawning {REDIS_SERVER}: {e}"))?;
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!("redis-server on port {port} exited: {status}"));
            }
            // Another process may have taken the port: only our own server counts.
            if server_pid(self.port) == Some(child.id()) {
                self.child = Some(child);
                return Ok(());
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("redis-server on port {port} did not answer PING"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        if let Some(file) = &self.cluster_config {
            let _ = std::fs::remove_file(file);
        }
    }
}

/// Joins cluster nodes into one Redis Cluster (no replicas, slots spread evenly) with
/// `redis-cli --cluster create`, and waits until every node reports `cluster_state:ok`.
pub fn create_cluster(nodes: &[RedisServer]) {
    let addrs: Vec<String> = nodes
        .iter()
        .map(|n| format!("127.0.0.1:{}", n.port()))
        .collect();
    let status = Command::new("redis-cli")
        .args(["--cluster", "create"])
        .args(&addrs)
        .args(["--cluster-replicas", "0", "--cluster-yes"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("run redis-cli");
    assert!(status.success(), "redis-cli --cluster create failed");
    let deadline = Instant::now() + Duration::from_secs(20);
    for n in nodes {
        loop {
            let out = Command::new("redis-cli")
                .args(["-p", &n.port().to_string(), "cluster", "info"])
                .output()
                .expect("run redis-cli");
            if String::from_utf8_lossy(&out.stdout).contains("cluster_state:ok") {
                break;
            }
            assert!(Instant::now() < deadline, "cluster did not become ok");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn port_is_free(port: u16) -> bool {
    TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok()
}

fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind a free loopback port")
}

/// The `process_id` reported by `INFO server` of whatever answers on `port`, if anything does.
fn server_pid(port: u16) -> Option<u32> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_millis(500)))
        .ok()?;
    stream.write_all(b"PING\r\nINFO server\r\n").ok()?;
    let mut reply = Vec::new();
    let mut buf = [0u8; 4096];
    while !reply.windows(11).any(|w| w == b"process_id:") || !reply.ends_with(b"\r\n") {
        let n = stream.read(&mut buf).ok()?;
        if n == 0 || reply.len() > 64 * 1024 {
            return None;
        }
        reply.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&reply);
    if !text.starts_with("+PONG") {
        return None;
    }
    let line = text.lines().find_map(|l| l.strip_prefix("process_id:"))?;
    line.trim().parse().ok()
}
