use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::redis_server::answered_by;

/// A real Redis Cluster on loopback: `redis-server` processes in cluster
/// mode joined by `redis-cli --cluster create`, stopped when dropped. Nodes
/// time out after one second, so a killed primary's replica takes over
/// within a few.
pub struct RedisCluster {
    nodes: Vec<Node>,
    _dir: tempfile::TempDir,
}

struct Node {
    port: u16,
    child: Option<Child>,
}

impl RedisCluster {
    /// `primaries` shards with `replicas` replicas each.
    pub fn start(primaries: usize, replicas: usize) -> RedisCluster {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut nodes = Vec::new();
        for _ in 0..primaries * (1 + replicas) {
            let (port, child) = start_node(dir.path());
            nodes.push(Node {
                port,
                child: Some(child),
            });
        }
        let mut create = Command::new("redis-cli");
        create.arg("--cluster").arg("create");
        for node in &nodes {
            create.arg(format!("127.0.0.1:{}", node.port));
        }
        let created = create
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect(
                "redis-cli is missing: scripts/test installs redis-server (it brings redis-cli)",
            );
        assert!(created.success(), "redis-cli --cluster create failed");
        let cluster = RedisCluster { nodes, _dir: dir };
        cluster.wait_until_ok();
        // A replica can take over only once it has the primary's data.
        wait_for(|| {
            let synced = cluster.nodes.iter().filter(|node| {
                redis_cli(node.port, &["INFO", "replication"])
                    .is_some_and(|info| info.contains("master_link_status:up"))
            });
            synced.count() == primaries * replicas
        });
        cluster
    }

    /// The store setting the hosts get: `redis-cluster://` and every node.
    pub fn url(&self) -> String {
        let seeds: Vec<String> = self
            .nodes
            .iter()
            .map(|node| format!("127.0.0.1:{}", node.port))
            .collect();
        format!("redis-cluster://{}", seeds.join(","))
    }

    /// Wait until every running node says the cluster is ok and agrees on
    /// which primaries there are.
    pub fn wait_until_ok(&self) {
        wait_for(|| {
            let running = self.nodes.iter().filter(|node| node.child.is_some());
            let states: Vec<Option<String>> = running
                .map(|node| redis_cli(node.port, &["CLUSTER", "INFO"]))
                .collect();
            states.iter().all(|info| {
                info.as_deref()
                    .is_some_and(|info| info.contains("cluster_state:ok"))
            })
        });
    }

    /// The port of the primary that serves `key` now.
    pub fn primary_of(&self, key: &str) -> u16 {
        self.serving(key)
            .unwrap_or_else(|| panic!("no primary serves {key:?}"))
    }

    /// The primary a running node names for `key`'s slot, if any.
    fn serving(&self, key: &str) -> Option<u16> {
        let slot: u16 = redis_cli(self.any_port(), &["CLUSTER", "KEYSLOT", key])?
            .parse()
            .ok()?;
        let shards = redis_cli(self.any_port(), &["CLUSTER", "SLOTS"])?;
        // redis-cli prints the nested reply flat: start, end, then per node
        // ip, port, id (and hostname fields on newer servers); the first
        // node of a range is its primary.
        let lines: Vec<&str> = shards.lines().collect();
        let mut at = 0;
        while at + 4 < lines.len() {
            let (Ok(start), Ok(end)) = (lines[at].parse::<u16>(), lines[at + 1].parse::<u16>())
            else {
                at += 1;
                continue;
            };
            if lines[at + 2] == "127.0.0.1"
                && let Ok(port) = lines[at + 3].parse::<u16>()
            {
                if (start..=end).contains(&slot) {
                    return Some(port);
                }
                at += 4;
            } else {
                at += 1;
            }
        }
        None
    }

    /// Kill the primary that serves `key` (SIGKILL, as a crashed machine)
    /// and wait until its replica serves the slot; the dead primary's port.
    pub fn fail_over(&mut self, key: &str) -> u16 {
        let primary = self.primary_of(key);
        self.kill(primary);
        wait_for(|| self.serving(key).is_some_and(|port| port != primary));
        self.wait_until_ok();
        primary
    }

    /// Move `key`'s slot, with its keys, to another primary, as a
    /// resharding does; the new owner's port.
    pub fn move_slot(&self, key: &str) -> u16 {
        let moving = self.begin_slot_move(key);
        self.finish_slot_move(moving)
    }

    /// Start moving `key`'s slot to another primary: the new owner imports
    /// it, the old one migrates it (`CLUSTER SETSLOT`); no key moved yet.
    pub fn begin_slot_move(&self, key: &str) -> SlotMove {
        let from = self.primary_of(key);
        let to = self
            .primaries()
            .into_iter()
            .find(|port| *port != from)
            .expect("another primary");
        let slot = redis_cli(from, &["CLUSTER", "KEYSLOT", key]).expect("CLUSTER KEYSLOT");
        let id = |port: u16| redis_cli(port, &["CLUSTER", "MYID"]).expect("CLUSTER MYID");
        let (from_id, to_id) = (id(from), id(to));
        expect_ok(to, &["CLUSTER", "SETSLOT", &slot, "IMPORTING", &from_id]);
        expect_ok(from, &["CLUSTER", "SETSLOT", &slot, "MIGRATING", &to_id]);
        SlotMove {
            key: key.to_owned(),
            slot,
            from,
            to,
            to_id,
        }
    }

    /// `MIGRATE` up to `at_most` of the moving slot's keys; how many moved.
    pub fn migrate_keys(&self, moving: &SlotMove, at_most: usize) -> usize {
        let count = at_most.to_string();
        let keys = redis_cli(
            moving.from,
            &["CLUSTER", "GETKEYSINSLOT", &moving.slot, &count],
        )
        .unwrap_or_default();
        let keys: Vec<&str> = keys.lines().filter(|key| !key.is_empty()).collect();
        if keys.is_empty() {
            return 0;
        }
        let port = moving.to.to_string();
        let mut migrate = vec!["MIGRATE", "127.0.0.1", &port, "", "0", "5000", "KEYS"];
        migrate.extend(&keys);
        // A key already on the new owner (BUSYKEY) would mean a split slot.
        expect_ok(moving.from, &migrate);
        keys.len()
    }

    /// Migrate the rest and give the slot to its new owner on every
    /// primary; the new owner's port, once it serves the slot.
    pub fn finish_slot_move(&self, moving: SlotMove) -> u16 {
        while self.migrate_keys(&moving, 100) > 0 {}
        for port in self.primaries() {
            expect_ok(
                port,
                &["CLUSTER", "SETSLOT", &moving.slot, "NODE", &moving.to_id],
            );
        }
        wait_for(|| self.serving(&moving.key) == Some(moving.to));
        moving.to
    }

    /// The ports of the running primaries.
    fn primaries(&self) -> Vec<u16> {
        self.nodes
            .iter()
            .filter(|node| node.child.is_some())
            .filter(|node| {
                redis_cli(node.port, &["INFO", "replication"])
                    .is_some_and(|info| info.contains("role:master"))
            })
            .map(|node| node.port)
            .collect()
    }

    /// Kill a node outright (SIGKILL), as a crashed machine.
    pub fn kill(&mut self, port: u16) {
        let node = self
            .nodes
            .iter_mut()
            .find(|node| node.port == port)
            .expect("a node of this cluster");
        if let Some(mut child) = node.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn any_port(&self) -> u16 {
        self.nodes
            .iter()
            .find(|node| node.child.is_some())
            .map(|node| node.port)
            .expect("a running node")
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// A node on a free port, once it answers; another port when someone took
/// this one (or its bus port) first.
fn start_node(dir: &Path) -> (u16, Child) {
    for _ in 0..5 {
        let port = free_cluster_port();
        let node_dir = dir.join(port.to_string());
        std::fs::create_dir_all(&node_dir).expect("node dir");
        let mut child = spawn_node(port, &node_dir);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if redis_cli(port, &["PING"]).is_some_and(|out| out == "PONG")
                && answered_by(port, &child)
            {
                return (port, child);
            }
            if let Ok(Some(_)) = child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
    panic!("no cluster node started");
}

/// A slot on its way from one primary to another.
pub struct SlotMove {
    key: String,
    slot: String,
    from: u16,
    to: u16,
    to_id: String,
}

/// Run a command that answers `OK` (or `NOKEY`: nothing left to migrate).
fn expect_ok(port: u16, args: &[&str]) {
    let out = redis_cli(port, args).unwrap_or_default();
    assert!(out == "OK" || out == "NOKEY", "{args:?} on {port}: {out}");
}

/// A free port whose cluster bus port (+10000) is free too.
fn free_cluster_port() -> u16 {
    for _ in 0..200 {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
        let port = listener.local_addr().expect("bound").port();
        if port < 55_000 && std::net::TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
            return port;
        }
    }
    panic!("no free port pair for a cluster node");
}

fn spawn_node(port: u16, dir: &Path) -> Child {
    Command::new("redis-server")
        .args(["--bind", "127.0.0.1", "--port"])
        .arg(port.to_string())
        .args([
            "--cluster-enabled",
            "yes",
            "--cluster-node-timeout",
            "1000",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .arg("--dir")
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server is missing: scripts/test installs it (apt-get install redis-server)")
}

/// `redis-cli -p PORT ARGS...`'s output, trimmed, if it answered.
fn redis_cli(port: u16, args: &[&str]) -> Option<String> {
    let output = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .stderr(Stdio::null())
        .output()
        .ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

fn wait_for(mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if done() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("the Redis Cluster did not get ready within 30 s");
}
