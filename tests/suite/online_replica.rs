//! `[online] max_replica_lag_ms` against a real streaming replica of the test server: a
//! hot standby made for the test (`pg_basebackup -R`, a second `postgres` on a free
//! port) that replays a set delay behind (`recovery_min_apply_delay`). While it lags, the
//! catch-up writes nothing and `status` names the replica; once the delay is lifted the
//! catch-up goes on and `run` reports the time it waited.
//!
//! The primary must take replication connections from 127.0.0.1 (a `host replication`
//! line in pg_hba.conf; `.ci/run` adds it).

use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::throttle::with_online;
use super::*;

/// The limit the test sets, in milliseconds.
const LIMIT_MS: u64 = 1000;

/// How far behind the standby replays while it lags: well over [`LIMIT_MS`]. While
/// commits flow, `replay_lag` climbs to it and stays within milliseconds of it; it would
/// fall to nothing only if no commit came for longer than this (see the ticker).
const DELAY_MS: u64 = 10_000;

/// A hot standby of the test server, streaming from it, stopped and its data directory
/// removed when dropped (a failed test included). No replication slot is made (the base
/// backup's is temporary), so nothing is left on the primary.
struct Standby {
    /// Its `application_name`, which `pg_stat_replication` shows.
    name: String,
    bin: PathBuf,
    /// Owned by the server's OS user: `data/` and the server's `log`.
    dir: tempfile::TempDir,
    /// A connection to the standby, to change its apply delay.
    conn: Box<dyn Writer + Send>,
}

impl Standby {
    /// Copies the test server with `pg_basebackup -R` and starts the copy as a hot
    /// standby replaying without delay, then waits until the primary shows it
    /// streaming.
    fn start(primary: &PgSchema, name: &str) -> Standby {
        let major: u32 = primary.rows("SELECT current_setting('server_version_num')")[0][0]
            .parse::<u32>()
            .unwrap()
            / 10000;
        let bin = PathBuf::from(format!("/usr/lib/postgresql/{major}/bin"));
        assert!(
            bin.join("pg_basebackup").exists() && bin.join("postgres").exists(),
            "the replica test runs the server's own binaries from {}, which has no pg_basebackup or postgres",
            bin.display()
        );
        let dir = tempfile::tempdir().unwrap();
        if as_root() {
            // postgres refuses to run as root: the standby's files belong to the server's
            // OS user.
            succeed(
                Command::new("chown")
                    .args(["postgres:postgres"])
                    .arg(dir.path()),
            );
        }
        let data = dir.path().join("data");
        let url = pg_url();
        let conninfo = format!(
            "host={} port={} user={} application_name={name}",
            url_part(&url, "host"),
            url_part(&url, "port"),
            url_part(&url, "user")
        );
        let backup = output_of(
            server_user(&bin.join("pg_basebackup"))
                .args(["-d", &conninfo, "-D"])
                .arg(&data)
                .args([
                    "-R",
                    "-X",
                    "stream",
                    "-c",
                    "fast",
                    "--no-sync",
                    "--no-manifest",
                ]),
        );
        assert!(
            backup.status.success(),
            "pg_basebackup from {conninfo} failed: {}; the test server must take replication connections from 127.0.0.1 \
             (a `host replication all 127.0.0.1/32 trust` line in pg_hba.conf, which .ci/run adds), with wal_level \
             replica or logical and max_wal_senders above 0",
            String::from_utf8_lossy(&backup.stderr)
        );

        // The primary's own configuration lives outside its data directory (Debian's
        // /etc/postgresql), so the copy gets one of its own. A hot standby needs these
        // five at least as large as the primary's.
        let port = free_port();
        let mut conf = format!(
            "port = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = ''\nhot_standby = on\n\
             shared_buffers = 16MB\nwal_receiver_status_interval = 1s\n"
        );
        for r in primary.rows(
            "SELECT name, setting FROM pg_settings WHERE name IN ('max_connections', 'max_worker_processes', \
             'max_wal_senders', 'max_prepared_transactions', 'max_locks_per_transaction')",
        ) {
            conf.push_str(&format!("{} = {}\n", r[0], r[1]));
        }
        std::fs::write(data.join("postgresql.conf"), &conf).unwrap();
        std::fs::write(
            data.join("pg_hba.conf"),
            "host all all 127.0.0.1/32 trust\n",
        )
        .unwrap();
        std::fs::write(data.join("pg_ident.conf"), "").unwrap();

        let mut standby = Standby {
            name: name.to_string(),
            bin,
            dir,
            conn: Box::new(NoConn),
        };
        let log = standby.dir.path().join("log");
        let started = output_of(
            server_user(&standby.bin.join("pg_ctl"))
                .args(["start", "-w", "-t", "120", "-D"])
                .arg(&data)
                .arg("-l")
                .arg(&log),
        );
        assert!(
            started.status.success(),
            "the standby did not start: {}{}\n{}",
            String::from_utf8_lossy(&started.stdout),
            String::from_utf8_lossy(&started.stderr),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        standby.conn = Box::new(connect::<sqlx::Postgres>(&format!(
            "postgres://{}@127.0.0.1:{port}/test",
            url_part(&url, "user")
        )));
        let streaming = format!(
            "SELECT count(*)::text FROM pg_stat_replication WHERE application_name = '{name}' AND state = 'streaming'"
        );
        wait_until(Duration::from_secs(60), "the standby streams", || {
            primary.rows(&streaming)[0][0] == "1"
        });
        standby
    }

    /// Sets how far behind the primary's commits the standby applies them
    /// (`recovery_min_apply_delay`; 0 catches up at once), and reloads it.
    fn delay(&mut self, ms: u64) {
        // ALTER SYSTEM runs outside a transaction block: one statement at a time.
        for sql in [
            format!("ALTER SYSTEM SET recovery_min_apply_delay = '{ms}ms'"),
            "SELECT pg_reload_conf()".to_string(),
        ] {
            self.conn
                .run(&sql)
                .unwrap_or_else(|e| panic!("on the standby, {sql}: {e}"));
        }
    }
}

impl Drop for Standby {
    fn drop(&mut self) {
        // An immediate stop: the copy is thrown away. Never a panic here (this runs while
        // a failed test unwinds); the TempDir goes once this returns.
        let data = self.dir.path().join("data");
        match server_user(&self.bin.join("pg_ctl"))
            .args(["stop", "-m", "immediate", "-w", "-t", "60", "-D"])
            .arg(&data)
            .output()
        {
            Ok(o) if o.status.success() => {}
            Ok(o) => eprintln!(
                "stopping the standby {} in {}: {}",
                self.name,
                data.display(),
                String::from_utf8_lossy(&o.stderr)
            ),
            Err(e) => eprintln!("stopping the standby {}: {e}", self.name),
        }
    }
}

/// Stands in for the standby's connection until it accepts one.
struct NoConn;

impl Writer for NoConn {
    fn run(&mut self, _: &str) -> Result<u64, String> {
        Err("the standby has not started".into())
    }
}

/// Whether the test runs as root, whom postgres refuses to run as.
fn as_root() -> bool {
    std::fs::metadata("/proc/self").unwrap().uid() == 0
}

/// A command for `program` run as the server's OS user (`postgres`) when the test runs as
/// root, else as the test's own user.
fn server_user(program: &Path) -> Command {
    if as_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

fn output_of(c: &mut Command) -> std::process::Output {
    c.output()
        .unwrap_or_else(|e| panic!("could not run {c:?}: {e}"))
}

fn succeed(c: &mut Command) {
    let out = output_of(c);
    assert!(
        out.status.success(),
        "{c:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The `host`, `port` or `user` of a `postgres://user@host:port/db` URL ([`pg_url`]), with
/// the defaults libpq would use.
fn url_part(url: &str, part: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?']).next().unwrap_or("");
    let (user, hostport) = authority
        .rsplit_once('@')
        .unwrap_or(("postgres", authority));
    let user = user.split(':').next().unwrap_or("postgres");
    let (host, port) = hostport.rsplit_once(':').unwrap_or((hostport, "5432"));
    match part {
        "host" => host,
        "port" => port,
        _ => user,
    }
    .to_string()
}

/// A TCP port on 127.0.0.1 nobody listens on, below the kernel's range for outgoing
/// connections (32768 and up), so that no client socket takes it before the standby
/// binds it.
fn free_port() -> u16 {
    let first = 20_000 + (std::process::id() % 10_000) as u16;
    (first..first + 2000)
        .find(|p| std::net::TcpListener::bind(("127.0.0.1", *p)).is_ok())
        .expect("a free port for the standby")
}

/// Polls `done` every 100 ms until it holds, failing the test after `limit`.
fn wait_until(limit: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !done() {
        assert!(t0.elapsed() < limit, "waited {limit:?} for: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The local ports of the TCP connections process `pid` holds: its sessions'
/// `client_port` in `pg_stat_activity`.
fn tcp_ports(pid: u32) -> Vec<u16> {
    let inodes: HashSet<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter_map(|l| {
            let l = l.to_str()?;
            Some(l.strip_prefix("socket:[")?.strip_suffix(']')?.to_string())
        })
        .collect();
    let table = std::fs::read_to_string(format!("/proc/{pid}/net/tcp")).unwrap_or_default();
    table
        .lines()
        .skip(1)
        .filter_map(|l| {
            // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
            let f: Vec<&str> = l.split_whitespace().collect();
            if !inodes.contains(*f.get(9)?) {
                return None;
            }
            u16::from_str_radix(f[1].rsplit(':').next()?, 16).ok()
        })
        .collect()
}

/// The replica lag `status` names: the milliseconds of `capture: throttled: replica
/// <replica> replays N ms behind, over [online] max_replica_lag_ms = <limit>`, if the
/// line is there with that replica and that limit.
fn throttled_ms(status: &str, replica: &str, limit: u64) -> Option<u64> {
    let line = status
        .lines()
        .find(|l| l.starts_with("capture: throttled: "))?;
    line.strip_prefix(&format!("capture: throttled: replica {replica} replays "))?
        .strip_suffix(&format!(
            " ms behind, over [online] max_replica_lag_ms = {limit}; the catch-up waits"
        ))?
        .parse()
        .ok()
}

/// The seconds `run`'s report says the catch-up waited: (paused, on a busy server).
fn waited(report: &str) -> Option<(f64, f64)> {
    let line = report
        .lines()
        .find(|l| l.starts_with("online: the catch-up waited "))?;
    let rest = line.strip_prefix("online: the catch-up waited ")?;
    let (paused, rest) = rest.split_once("s paused (rowshift pause) and ")?;
    let busy = rest.strip_suffix("s on a busy source server")?;
    Some((paused.parse().ok()?, busy.parse().ok()?))
}

/// 300 changes wait while a standby replays 10 s behind, over `max_replica_lag_ms =
/// 1000`: the catch-up writes no batch and no replay position, `status` names the
/// replica and its lag; once the delay is lifted the catch-up replays all 300, no batch
/// begun before that, and `run` reports the seconds it waited.
#[test]
fn postgres_catch_up_waits_while_a_replica_replays_behind() {
    let ws = Workspace::new();
    let db = Db::new(Kind::Pg, &ws);
    let replica = format!("rowshift_replica_{}", std::process::id());
    let mut standby = Standby::start(db.pg.as_ref().unwrap(), &replica);
    db.seed();
    let p = db.pipeline(&ws);
    with_online(&ws, &format!("max_replica_lag_ms = {LIMIT_MS}\n"));
    let (code, text) = finish(rowshift(&ws, &["run", &p], &[]));
    assert_eq!(code, 0, "{text}");
    db.record_writes();
    db.exec(&format!(
        "UPDATE {} SET qty = qty + 1 WHERE id <= 300",
        db.table("items")
    ));

    // `replay_lag` is measured from the standby's reports of the commits it applied:
    // with none to apply it keeps its last figure and then goes NULL. A commit every
    // 100 ms keeps it measured; `remote_apply` makes the standby report each one as soon
    // as it is applied (it does not make the commit wait: the standby is not
    // synchronous).
    let tick = db.table("tick");
    db.exec(&format!("CREATE TABLE {tick} (at timestamptz NOT NULL)"));
    let stop = Arc::new(AtomicBool::new(false));
    let ticker = {
        let (mut w, stop) = (writer_for(&db), stop.clone());
        std::thread::spawn(move || {
            w.run("SET synchronous_commit = remote_apply").unwrap();
            while !stop.load(Ordering::SeqCst) {
                w.run(&format!("INSERT INTO {tick} VALUES (clock_timestamp())"))
                    .unwrap();
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    let status = || {
        let (code, text) = finish(rowshift(&ws, &["status", &p], &[]));
        assert_eq!(code, 0, "{text}");
        text
    };

    standby.delay(DELAY_MS);
    wait_until(
        Duration::from_secs(60),
        "status says the replica replays over the limit",
        || throttled_ms(&status(), &replica, LIMIT_MS).is_some(),
    );
    let mut run = rowshift(&ws, &["run", &p], &[]);
    // The run's catch-up asks pg_stat_replication before each batch, and again every
    // 250 ms while the replica is over the limit (nothing else in a run asks it): a
    // second question from the run's sessions, with no batch written, is the run
    // waiting.
    let asked = |run: &std::process::Child| -> Option<f64> {
        let ports = tcp_ports(run.id());
        if ports.is_empty() {
            return None;
        }
        db.rows(&format!(
            "SELECT EXTRACT(EPOCH FROM max(query_start))::text FROM pg_stat_activity WHERE client_port IN ({}) AND query LIKE '%FROM pg_stat_replication%'",
            ports.iter().map(|p| p.to_string()).collect::<Vec<_>>().join(", ")
        ))[0][0]
            .parse()
            .ok()
    };
    let mut first = None;
    wait_until(
        Duration::from_secs(120),
        "the run checks the replica's lag twice",
        || {
            if let Some(done) = run.try_wait().unwrap() {
                panic!("the run ended ({done}) while the replica lagged");
            }
            match (first, asked(&run)) {
                (None, at) => {
                    first = at;
                    false
                }
                (Some(a), Some(b)) => b > a,
                (Some(_), None) => false,
            }
        },
    );
    let text = status();
    let lag = throttled_ms(&text, &replica, LIMIT_MS).unwrap_or_else(|| {
        panic!("capture: throttled: replica {replica} replays N ms behind, over [online] max_replica_lag_ms = {LIMIT_MS}; not in: {text}")
    });
    assert!(lag > LIMIT_MS, "{text}");
    assert!(
        text.contains("; replayed 0 changes, up to none yet\ncapture lag: 300 changes"),
        "no replayed batch, no replay position: {text}"
    );
    assert_eq!(db.written_batches(), vec![], "no row written while it lags");
    assert!(run.try_wait().unwrap().is_none(), "the run waits");

    let lifted = db.clock();
    standby.delay(0);
    wait_until(Duration::from_secs(120), "the run ends", || {
        run.try_wait().unwrap().is_some()
    });
    let (code, text) = finish(run);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("online: replayed 300 changes"), "{text}");
    let (paused, throttled) = waited(&text).unwrap_or_else(|| panic!("{text}"));
    assert_eq!(paused, 0.0, "{text}");
    assert!(throttled > 0.0, "{text}");
    let batches = db.written_batches();
    assert_eq!(batches.iter().map(|b| b.1).sum::<u64>(), 300, "{batches:?}");
    assert!(
        batches[0].0 >= lifted,
        "the first batch began {:.3}s before the delay was lifted",
        lifted - batches[0].0
    );
    assert_eq!(db.table_rows("items_new"), db.table_rows("items"));
    stop.store(true, Ordering::SeqCst);
    ticker.join().unwrap();
    eprintln!(
        "replica {replica} {lag} ms behind over max_replica_lag_ms = {LIMIT_MS}: the catch-up waited {throttled:.1}s; first batch {:.2}s after the delay was lifted",
        batches[0].0 - lifted
    );
}
