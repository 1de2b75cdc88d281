//! Real NATS servers for the fleet tests: Debian's `nats-server` (installed
//! by scripts/setup.sh), as a cluster of nodes on loopback with JetStream,
//! each node a child process with its own store directory. Nodes can be
//! killed and restarted to test the bus going away.

use std::io::{Read, Write};
use std::net::TcpStream;

use super::free_port;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// One node's ports and process.
pub struct Node {
    pub name: String,
    pub client_port: u16,
    pub cluster_port: u16,
    pub monitor_port: u16,
    conf: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

/// A NATS cluster on loopback; every node is killed on drop.
pub struct NatsCluster {
    pub dir: tempfile::TempDir,
    pub nodes: Vec<Node>,
}

impl NatsCluster {
    /// Start `n` nodes (n >= 1; n >= 3 for replicated JetStream) with
    /// JetStream, and wait until every node's JetStream is ready.
    /// `extra` is added to each node's configuration (accounts,
    /// authorization).
    pub fn start(n: usize, extra: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut nodes: Vec<Node> = (0..n)
            .map(|i| Node {
                name: format!("n{i}"),
                client_port: free_port(),
                cluster_port: free_port(),
                monitor_port: free_port(),
                conf: dir.path().join(format!("n{i}.conf")),
                log: dir.path().join(format!("n{i}.log")),
                child: None,
            })
            .collect();
        let routes: Vec<String> = nodes
            .iter()
            .map(|n| format!("nats-route://127.0.0.1:{}", n.cluster_port))
            .collect();
        for node in &nodes {
            let store = dir.path().join(format!("{}-js", node.name));
            let cluster = if n > 1 {
                format!(
                    "cluster {{\n  name: genl-test\n  listen: 127.0.0.1:{}\n  routes: [{}]\n}}\n",
                    node.cluster_port,
                    routes.join(", ")
                )
            } else {
                String::new()
            };
            let conf = format!(
                "server_name: {name}\nlisten: 127.0.0.1:{port}\nhttp: 127.0.0.1:{mon}\nmax_payload: 1MB\n\
                 jetstream {{\n  store_dir: \"{store}\"\n  max_memory_store: 256MB\n  max_file_store: 2GB\n}}\n{cluster}{extra}\n",
                name = node.name,
                port = node.client_port,
                mon = node.monitor_port,
                store = store.display(),
            );
            std::fs::write(&node.conf, conf).expect("write nats conf");
        }
        for node in &mut nodes {
            node.spawn();
        }
        let cluster = Self { dir, nodes };
        for i in 0..n {
            cluster.wait_ready(i, 60);
        }
        cluster
    }

    /// The client URLs of every node, for `[bus] urls`.
    pub fn urls(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|n| format!("nats://127.0.0.1:{}", n.client_port))
            .collect()
    }

    /// `urls = [...]` for a `[bus]` section.
    pub fn urls_toml(&self) -> String {
        let quoted: Vec<String> = self.urls().iter().map(|u| format!("\"{u}\"")).collect();
        format!("urls = [{}]", quoted.join(", "))
    }

    /// Kill node `i` (SIGKILL: as a crash would).
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.nodes[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Start node `i` again, with its store, and wait until it is ready.
    pub fn restart(&mut self, i: usize) {
        self.nodes[i].spawn();
        self.wait_ready(i, 60);
    }

    /// Kill every node.
    pub fn kill_all(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill(i);
        }
    }

    /// Start every node again and wait until all are ready.
    pub fn restart_all(&mut self) {
        for node in &mut self.nodes {
            node.spawn();
        }
        for i in 0..self.nodes.len() {
            self.wait_ready(i, 60);
        }
    }

    /// Node `i`'s log so far.
    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(&self.nodes[i].log).unwrap_or_default()
    }

    /// Wait until node `i` reports healthy with JetStream (its monitoring
    /// `/healthz`, which in 2.9 includes JetStream's readiness).
    pub fn wait_ready(&self, i: usize, secs: u64) {
        let node = &self.nodes[i];
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some(body) = http_get(node.monitor_port, "/healthz")
                && body.contains("\"ok\"")
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "nats node {} not ready after {secs} s; its log:\n{}",
                node.name,
                self.log(i)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Node {
    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("nats log");
        let child = Command::new("nats-server")
            .arg("-c")
            .arg(&self.conf)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("nats-server must be installed (scripts/setup.sh installs Debian's nats-server)");
        self.child = Some(child);
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        self.kill_all();
    }
}

/// A tiny HTTP GET on loopback (the monitoring port), body only.
fn http_get(port: u16, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    out.split_once("\r\n\r\n").map(|(_, b)| b.to_owned())
}
