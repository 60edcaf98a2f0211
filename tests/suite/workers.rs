//! Runs shared by several processes (`rowshift run --worker`): three workers on one
//! PostgreSQL-target run and one MariaDB-target run, one killed with SIGKILL mid-chunk
//! and one stopped with SIGSTOP until its lease ran out. The target must then equal a
//! run of one process: no row lost, none twice, verify clean. Each test works in a
//! schema or database of its own.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{MyDb, PgSchema, Workspace, my_quote, my_url, pg_quote, pg_url, sqlite_exec};

/// Rows in the source: 24 chunks of 100.
const ROWS: usize = 2400;

/// The lease the workers run with, in seconds.
const LEASE: u64 = 2;

/// The server a test's runs write to.
enum Server {
    Postgres(PgSchema),
    Mysql(MyDb),
}

impl Server {
    /// The `[target]` lines for table `table`.
    fn toml(&self, table: &str) -> String {
        match self {
            Server::Postgres(pg) => format!(
                "url = \"{}\"\nschema = \"{}\"\ntable = \"{table}\"",
                pg_url(),
                pg.name
            ),
            Server::Mysql(my) => format!("url = \"{}\"\ntable = \"{table}\"", my.url()),
        }
    }

    /// Rows of `sql`, `{s}` standing for the quoted schema or database.
    fn rows(&self, sql: &str) -> Vec<Vec<String>> {
        match self {
            Server::Postgres(pg) => pg.rows(&sql.replace("{s}", &pg_quote(&pg.name))),
            Server::Mysql(my) => my.rows(&sql.replace("{s}", &my_quote(&my.name))),
        }
    }

    /// Every row of `table` as text, by id.
    fn table(&self, table: &str) -> Vec<Vec<String>> {
        let cast = match self {
            Server::Postgres(_) => "text",
            Server::Mysql(_) => "CHAR",
        };
        self.rows(&format!(
            "SELECT CAST(id AS {cast}), name, CAST(amount AS {cast}) FROM {{s}}.{table} AS t ORDER BY t.id"
        ))
    }

    /// The chunks of `pipeline`'s checkpoint: id, state, attempts, worker.
    fn chunks(&self, pipeline: &str) -> Vec<(usize, String, u32, String)> {
        let cast = match self {
            Server::Postgres(_) => "text",
            Server::Mysql(_) => "CHAR",
        };
        let mut chunks = self
            .rows(&format!(
                "SELECT CAST(id AS {cast}), state, CAST(attempts AS {cast}), coalesce(worker, '') \
             FROM {{s}}._rowshift_chunks WHERE pipeline = '{pipeline}'"
            ))
            .into_iter()
            .map(|r| {
                (
                    r[0].parse().unwrap(),
                    r[1].clone(),
                    r[2].parse().unwrap(),
                    r[3].clone(),
                )
            })
            .collect::<Vec<_>>();
        chunks.sort();
        chunks
    }

    /// The chunk the process `pid` holds now, if any.
    fn held_by(&self, pipeline: &str, pid: u32) -> Option<usize> {
        self.chunks(pipeline)
            .into_iter()
            .find(|(_, state, _, worker)| {
                state == "running" && worker.ends_with(&format!(":{pid}"))
            })
            .map(|c| c.0)
    }
}

/// A SQLite source of [`ROWS`] rows.
fn source(ws: &Workspace) {
    sqlite_exec(
        &ws.path("samples/shared.db"),
        &format!(
            "CREATE TABLE src (id INTEGER PRIMARY KEY, name TEXT NOT NULL, amount REAL NOT NULL);
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {ROWS})
             INSERT INTO src SELECT i, 'name ' || i, i * 0.25 FROM n;"
        ),
    );
}

/// Pipeline `name` writing table `name` in chunks of 100 rows, one chunk at a time per
/// process, leases of [`LEASE`] seconds.
fn pipeline(ws: &Workspace, server: &Server, name: &str) -> String {
    ws.write(
        &format!("pipelines/{name}.toml"),
        &format!(
            r#"name = "{name}"
[source]
url = "sqlite://../samples/shared.db"
table = "src"
key = "id"
[target]
{target}
[target.columns]
id = {{ type = "bigint", expr = "id" }}
name = {{ type = "text", expr = "upper(name)" }}
amount = {{ type = "double", expr = "amount * 2" }}
[chunks]
rows = 100
parallel = 1
lease_seconds = {LEASE}
"#,
            target = server.toml(name)
        ),
    )
}

/// Starts a worker of `pipeline`; each chunk pauses `pause_ms` before its commit, with
/// its rows sent, so that kills land mid-chunk.
fn start_worker(ws: &Workspace, pipeline: &str, pause_ms: u64) -> Child {
    Command::new(env!("CARGO_BIN_EXE_rowshift"))
        .args(["run", pipeline, "--worker"])
        .current_dir(ws.path("."))
        .env("ROWSHIFT_FAULT", format!("pause={pause_ms}"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits for `child` to end (within two minutes): its exit code and what it printed.
fn wait(mut child: Child) -> (i32, String) {
    let t0 = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if t0.elapsed() > Duration::from_secs(120) {
            child.kill().unwrap();
            let out = child.wait_with_output().unwrap();
            panic!(
                "worker still running after 120 s:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// Polls `f` every 20 ms until it gives something, for at most `limit`.
fn until<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let t0 = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(t0.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Stops the process `pid` (SIGSTOP) while it holds a chunk of `pipeline`, and returns
/// that chunk: the chunk is read after the stop, so that the process cannot have moved
/// on to another.
fn stop_holding(server: &Server, pipeline: &str, pid: u32) -> usize {
    let t0 = Instant::now();
    loop {
        until("the worker holds a chunk", Duration::from_secs(60), || {
            server.held_by(pipeline, pid)
        });
        signal(pid, "-STOP");
        // A commit already sent lands meanwhile.
        std::thread::sleep(Duration::from_millis(150));
        if let Some(chunk) = server.held_by(pipeline, pid) {
            return chunk;
        }
        signal(pid, "-CONT");
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "never stopped holding a chunk"
        );
    }
}

fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill {sig} {pid}");
}

/// Three workers share a run; one is killed with SIGKILL holding a chunk, one is
/// stopped with SIGSTOP holding a chunk until its lease ran out and another worker took
/// the chunk, then continued. The target equals a run of one process.
fn three_workers_one_killed_one_stopped(server: Server) {
    let ws = Workspace::new();
    source(&ws);

    // What one process writes.
    let single = pipeline(&ws, &server, "single");
    let out = ws.rowshift(&["run", &single, "--quiet", "--parallel", "3"]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    let expected = server.table("single");
    assert_eq!(expected.len(), ROWS);

    let shared = pipeline(&ws, &server, "shared");
    // The two workers the test stops pause long before each commit: the one they hold
    // when stopped is then surely still in flight, not committed a moment before.
    let killed = start_worker(&ws, &shared, 4000);
    let stopped = start_worker(&ws, &shared, 4000);
    let third = start_worker(&ws, &shared, 200);
    let (k, s) = (killed.id(), stopped.id());
    // Every worker has joined (the run lock is held only while one joins).
    until("three workers joined", Duration::from_secs(60), || {
        let n = server.rows(
            "SELECT CAST(count(*) AS CHAR(10)) FROM {s}._rowshift_workers WHERE pipeline = 'shared'",
        );
        (n.first().and_then(|r| r.first()).map(|c| c.trim()) == Some("3")).then_some(())
    });

    // The killed worker dies with a chunk in flight: its rows were sent, not committed.
    let lost_chunk = stop_holding(&server, "shared", k);
    signal(k, "-KILL");
    let (code, _) = wait(killed);
    assert_eq!(code, -1, "SIGKILL ends the process");

    // While the others run, a run of its own is refused: it would take their chunks.
    let alone = ws.rowshift(&["run", &shared, "--quiet"]);
    assert_eq!(alone.code, 2, "{}{}", alone.stdout, alone.stderr);
    assert!(
        alone
            .stderr
            .contains("error: pipeline shared is being run by "),
        "{}",
        alone.stderr
    );
    assert!(
        alone.stderr.contains(" worker(s) of a shared run: "),
        "{}",
        alone.stderr
    );
    assert!(
        alone
            .stderr
            .contains("join them with `rowshift run --worker`")
    );

    // The stopped worker keeps a chunk until its lease runs out and another takes it.
    let stale_chunk = stop_holding(&server, "shared", s);
    until(
        &format!("another worker takes the stopped worker's chunk {stale_chunk}"),
        Duration::from_secs(60),
        || {
            let c = server.chunks("shared");
            let (_, state, _, worker) = &c[stale_chunk];
            (!worker.ends_with(&format!(":{s}")) || state == "done").then_some(())
        },
    );
    // Status shows the three workers, the killed and the stopped one lost once their
    // last heartbeat is a lease old, the third running.
    let v = until(
        "status shows the killed and the stopped worker lost",
        Duration::from_secs(20),
        || {
            let status = ws.rowshift(&["status", &shared, "--json"]);
            let v: serde_json::Value = serde_json::from_str(&status.stdout).unwrap();
            let state_of = |pid: u32| {
                v["workers"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|w| w["pid"] == pid)
                    .map(|w| w["state"].as_str().unwrap().to_string())
            };
            (state_of(k).as_deref() == Some("lost") && state_of(s).as_deref() == Some("lost"))
                .then_some(v)
        },
    );
    assert_eq!(v["workers"].as_array().unwrap().len(), 3, "{v}");
    assert_eq!(v["running"]["state"], "shared", "{v}");
    let text = ws.rowshift(&["status", &shared]).stdout;
    assert!(text.contains("  workers  3\n"), "{text}");
    assert!(text.contains(&format!(":{k} lost: ")), "{text}");
    signal(s, "-CONT");

    let (code, text) = wait(stopped);
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains(&format!(
            "chunk {stale_chunk} given up: its lease ran out and another worker takes it"
        )),
        "{text}"
    );
    let (code, text) = wait(third);
    assert_eq!(code, 0, "{text}");

    // No row lost, none twice, every value as one process wrote it.
    let got = server.table("shared");
    assert_eq!(got.len(), ROWS);
    assert_eq!(got, expected);
    let chunks = server.chunks("shared");
    assert_eq!(chunks.len(), ROWS / 100);
    assert!(chunks.iter().all(|c| c.1 == "done"), "{chunks:?}");
    // The dead and the stale worker's chunks were committed by another, on a later
    // attempt.
    for id in [lost_chunk, stale_chunk] {
        let (_, _, attempts, worker) = &chunks[id];
        assert!(*attempts >= 2, "chunk {id}: {chunks:?}");
        assert!(
            !worker.ends_with(&format!(":{k}")) && !worker.ends_with(&format!(":{s}")),
            "chunk {id} committed by {worker}"
        );
    }
    let verify = ws.rowshift(&["verify", &shared]);
    assert_eq!(verify.code, 0, "{}{}", verify.stdout, verify.stderr);
    // Each worker's record: the killed one never said it ended; the others finished.
    let status = ws.rowshift(&["status", &shared, "--json"]);
    let v: serde_json::Value = serde_json::from_str(&status.stdout).unwrap();
    let states: Vec<(u64, String, u64)> = v["workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| {
            (
                w["pid"].as_u64().unwrap(),
                w["state"].as_str().unwrap().to_string(),
                w["chunks_done"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(states.len(), 3, "{v}");
    // A finished worker's last heartbeat counts every chunk it committed, as the chunks
    // it is named on; the killed one's, at most those.
    for (pid, state, done) in &states {
        let committed = chunks
            .iter()
            .filter(|c| c.3.ends_with(&format!(":{pid}")))
            .count() as u64;
        if *pid == k as u64 {
            assert_eq!(state, "lost", "{v}");
            assert!(*done <= committed, "{v}");
        } else {
            assert_eq!(state, "finished", "{v}");
            assert_eq!(*done, committed, "{v}");
        }
    }
    assert_eq!(v["chunks"]["done"], ROWS / 100);
}

#[test]
fn three_postgres_workers_one_killed_one_stopped_end_as_one_run() {
    three_workers_one_killed_one_stopped(Server::Postgres(PgSchema::new("rs_workers")));
}

#[test]
fn three_mariadb_workers_one_killed_one_stopped_end_as_one_run() {
    three_workers_one_killed_one_stopped(Server::Mysql(MyDb::new("rs_workers")));
}

/// A SQLite or file target is written by one process: `--worker` says so and changes
/// nothing.
#[test]
fn a_sqlite_or_file_target_cannot_be_shared() {
    let ws = Workspace::new();
    source(&ws);
    let sqlite = ws.write(
        "pipelines/local.toml",
        r#"name = "local"
[source]
url = "sqlite://../samples/shared.db"
table = "src"
key = "id"
[target]
url = "sqlite://../out/local.db"
table = "t"
[target.columns]
id = { type = "bigint", expr = "id" }
"#,
    );
    let out = ws.rowshift(&["run", &sqlite, "--worker"]);
    assert_eq!(out.code, 2, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains(
            "error: --worker: sqlite://out/local.db table t cannot be shared by several processes: workers share a run through the checkpoint tables of a PostgreSQL or MySQL/MariaDB target, and a SQLite file or a file target is written by one process only"
        ),
        "{}",
        out.stderr
    );
    assert!(!ws.path("out/local.db").exists());
    let files = ws.write(
        "pipelines/files.toml",
        r#"name = "files"
[source]
url = "sqlite://../samples/shared.db"
table = "src"
key = "id"
[target]
url = "../out/files"
format = "parquet"
[target.columns]
id = { type = "bigint", expr = "id" }
"#,
    );
    let out = ws.rowshift(&["run", &files, "--worker"]);
    assert_eq!(out.code, 2, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains("cannot be shared by several processes"),
        "{}",
        out.stderr
    );
    assert!(!ws.path("out/files").exists());
}

/// A network namespace of the test's own, joined to the host by a veth pair whose host
/// end the test can take down: a worker run inside it reaches the server at the same
/// `127.0.0.1:<port>` as the others, through a proxy listening inside the namespace, the
/// link and a proxy on the host. Removed (with its link) when dropped.
struct Netns {
    name: String,
    host_if: String,
}

impl Netns {
    fn new(port: u16) -> Netns {
        static SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = (std::process::id() % 10_000) * 10
            + SEQ.fetch_add(1, std::sync::atomic::Ordering::SeqCst) % 10;
        let ns = Netns {
            name: format!("rsw{n}"),
            host_if: format!("rswh{n}"),
        };
        let inner = format!("rswn{n}");
        // 10.77.a.b/30 from n: a network of its own per namespace.
        let (a, b) = ((n / 64) % 256, (n % 64) * 4);
        let host_ip = format!("10.77.{a}.{}", b + 1);
        let ns_ip = format!("10.77.{a}.{}", b + 2);
        for args in [
            vec!["netns", "add", &ns.name],
            vec![
                "link",
                "add",
                &ns.host_if,
                "type",
                "veth",
                "peer",
                "name",
                &inner,
            ],
            vec!["link", "set", &inner, "netns", &ns.name],
            vec!["addr", "add", &format!("{host_ip}/30"), "dev", &ns.host_if],
            vec!["link", "set", &ns.host_if, "up"],
            vec![
                "-n",
                &ns.name,
                "addr",
                "add",
                &format!("{ns_ip}/30"),
                "dev",
                &inner,
            ],
            vec!["-n", &ns.name, "link", "set", &inner, "up"],
            vec!["-n", &ns.name, "link", "set", "lo", "up"],
        ] {
            ip(&args);
        }
        // Host side: the link's address to the server.
        let upstream = std::net::TcpListener::bind((host_ip.as_str(), 0)).unwrap();
        let link_port = upstream.local_addr().unwrap().port();
        proxy(upstream, format!("127.0.0.1:{port}"));
        // Namespace side: 127.0.0.1:<port> to the link. The listener is made by a thread
        // that joined the namespace; a socket keeps the namespace it was made in.
        let path = format!("/var/run/netns/{}", ns.name);
        let target = format!("{host_ip}:{link_port}");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::os::fd::AsRawFd;
            let f = std::fs::File::open(&path).unwrap();
            // SAFETY: setns on a valid namespace file only moves this thread.
            let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
            let listener = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
            tx.send(()).unwrap();
            // Connections to the host are made here too, inside the namespace.
            for conn in listener.incoming() {
                let Ok(conn) = conn else { return };
                let Ok(up) = std::net::TcpStream::connect(&target) else {
                    continue;
                };
                pipe(conn, up);
            }
        });
        rx.recv().unwrap();
        ns
    }

    /// Takes the host end of the link down (`up = false`) or up again.
    fn link(&self, up: bool) {
        ip(&["link", "set", &self.host_if, if up { "up" } else { "down" }]);
    }

    /// `args` run inside the namespace.
    fn command(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_if])
            .output();
    }
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Forwards every connection `listener` accepts to `target`.
fn proxy(listener: std::net::TcpListener, target: String) {
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { return };
            let Ok(up) = std::net::TcpStream::connect(&target) else {
                continue;
            };
            pipe(conn, up);
        }
    });
}

/// Copies bytes both ways between `a` and `b` until either side closes.
fn pipe(a: std::net::TcpStream, b: std::net::TcpStream) {
    for (mut from, mut to) in [(a.try_clone().unwrap(), b.try_clone().unwrap()), (b, a)] {
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut from, &mut to);
            let _ = to.shutdown(std::net::Shutdown::Both);
        });
    }
}

/// A worker cut off from the database mid-chunk (its namespace's link taken down)
/// keeps its chunk's rows uncommitted; its lease runs out and the other worker takes
/// the chunk. When the link comes back, the cut-off worker's commit is refused: it gives
/// the chunk up, and the target equals a run of one process.
fn a_worker_cut_off_mid_chunk_gives_its_chunk_up(server: Server, port: u16) {
    let ws = Workspace::new();
    source(&ws);
    let single = pipeline(&ws, &server, "single");
    let out = ws.rowshift(&["run", &single, "--quiet"]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    let expected = server.table("single");

    let shared = pipeline(&ws, &server, "shared");
    let ns = Netns::new(port);
    let cut = ns
        .command(env!("CARGO_BIN_EXE_rowshift"))
        .args(["run", &shared, "--worker"])
        .current_dir(ws.path("."))
        .env("ROWSHIFT_FAULT", "pause=4000")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut cut = cut;
    let c = until(
        "the worker in the namespace holds a chunk",
        Duration::from_secs(60),
        || {
            if let Ok(Some(status)) = cut.try_wait() {
                let mut err = String::new();
                std::io::Read::read_to_string(cut.stderr.as_mut().unwrap(), &mut err).unwrap();
                panic!(
                    "the worker in the namespace ended ({status}) before it held a chunk: {err}"
                );
            }
            server
                .chunks("shared")
                .into_iter()
                .find(|(_, state, _, worker)| state == "running" && !worker.is_empty())
                .map(|(id, _, _, worker)| (id, worker))
        },
    );
    let (chunk, cut_id) = c;
    // Mid-chunk (it pauses 4 s before its commit): the link goes down.
    ns.link(false);
    let other = start_worker(&ws, &shared, 100);
    until(
        &format!("the other worker takes chunk {chunk}"),
        Duration::from_secs(60),
        || {
            let c = server.chunks("shared");
            (c[chunk].3 != cut_id).then_some(())
        },
    );
    ns.link(true);
    let (code, text) = wait(other);
    assert_eq!(code, 0, "{text}");
    let (code, text) = wait(cut);
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains(&format!(
            "chunk {chunk} given up: its lease ran out and another worker takes it"
        )),
        "{text}"
    );
    assert_eq!(server.table("shared"), expected);
    let chunks = server.chunks("shared");
    assert!(chunks.iter().all(|c| c.1 == "done"), "{chunks:?}");
    assert_ne!(
        chunks[chunk].3, cut_id,
        "the cut-off worker committed its chunk"
    );
    assert!(chunks[chunk].2 >= 2, "{chunks:?}");
    let verify = ws.rowshift(&["verify", &shared]);
    assert_eq!(verify.code, 0, "{}{}", verify.stdout, verify.stderr);
}

#[test]
fn a_worker_cut_off_from_postgres_mid_chunk_gives_its_chunk_up() {
    a_worker_cut_off_mid_chunk_gives_its_chunk_up(
        Server::Postgres(PgSchema::new("rs_workers_net")),
        port_of(&pg_url()),
    );
}

#[test]
fn a_worker_cut_off_from_mariadb_mid_chunk_gives_its_chunk_up() {
    a_worker_cut_off_mid_chunk_gives_its_chunk_up(
        Server::Mysql(MyDb::new("rs_workers_net")),
        port_of(&my_url()),
    );
}

/// The port of a server URL on this machine: the workers in a namespace reach it at
/// `127.0.0.1` and that port, as the others do.
fn port_of(url: &str) -> u16 {
    let host = url.split('@').next_back().unwrap_or(url);
    let host = host.split('/').next().unwrap_or(host);
    assert!(
        host.starts_with("127.0.0.1:") || host.starts_with("localhost:"),
        "the network test needs the server on this machine, at 127.0.0.1 with a port: {host}"
    );
    host.rsplit(':').next().unwrap().parse().unwrap()
}
