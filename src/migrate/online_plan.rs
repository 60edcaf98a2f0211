//! What `rowshift plan` shows of an online step, beside its table DDL, load and
//! post-load: the change capture installed on the source table before the copy, the
//! catch-up after it, and the cut-over (`up`) or swap-back (`down`) with the locks each
//! statement takes. The capture's statements are the capture's own
//! ([`Capture::install_sql`], [`Capture::drop_trigger_sql`]); the cut-over's lock and
//! renames are written as each database's sink runs them (`db/<db>/sink/replay.rs`),
//! with the lock in the words of docs/online.md.

use crate::config::{Location, Pipeline};
use crate::db::{mysql, postgres};
use crate::runtime::IoRuntime;
use crate::source::capture::Capture;
use crate::sql::quote_ident;

/// One statement an online step adds to a plan.
pub(super) struct Planned {
    /// `capture`, `catch-up`, `cutover` or `swap-back`.
    pub phase: &'static str,
    /// The statement.
    pub sql: String,
    /// The lock it takes, when the target's own reading of the statement would not say
    /// it (a trigger, a `LOCK TABLE`); `None`: as the target reads it.
    pub lock: Option<String>,
    /// What it moves, for a catch-up or a drain.
    pub estimate: Option<String>,
}

/// What `BEGIN IMMEDIATE` holds through a SQLite cut-over or swap-back.
const SQLITE_WRITE_LOCK: &str = "the database write lock, from here to the commit: writers wait in their busy handler, readers go on (WAL)";

/// What MariaDB's `UNLOCK TABLES` ends a cut-over's or swap-back's lock with.
const UNLOCK: &str =
    "releases the READ lock: the server grants the waiting RENAME TABLE before the waiting writes";

fn at(phase: &'static str, sql: String, lock: Option<String>) -> Planned {
    Planned {
        phase,
        sql,
        lock,
        estimate: None,
    }
}

/// The database a location is, for the statements that differ.
#[derive(Clone, Copy, PartialEq)]
enum Db {
    Pg,
    My,
    Lite,
}

/// An online step's tables, as its target's SQL names them.
struct Names {
    db: Db,
    schema: String,
    source: String,
    target: String,
    old: String,
}

impl Names {
    fn of(p: &Pipeline) -> Names {
        let t = super::online::Tables::of(p);
        let (db, schema) = match &p.target.location {
            Location::Postgres { schema, .. } => (Db::Pg, schema.clone()),
            Location::Mysql { schema, .. } => (Db::My, schema.clone()),
            _ => (Db::Lite, String::new()),
        };
        Names {
            db,
            schema,
            source: t.source,
            target: t.target,
            old: t.old,
        }
    }

    /// `table` qualified and quoted.
    fn q(&self, table: &str) -> String {
        match self.db {
            Db::Pg => postgres::qualified(&self.schema, table),
            Db::My => mysql::qualified(&self.schema, table),
            Db::Lite => quote_ident(table),
        }
    }

    /// A table's name as `RENAME TO` takes it.
    fn bare(&self, table: &str) -> String {
        match self.db {
            Db::My => mysql::qualified(&self.schema, table),
            _ => quote_ident(table),
        }
    }

    /// The lock a trigger's creation or drop takes on `table`.
    fn trigger_lock(&self, table: &str) -> Option<String> {
        match self.db {
            Db::Pg => Some(format!(
                "SHARE ROW EXCLUSIVE on {table}: reads go on; writes wait while the trigger is created or dropped (a moment)"
            )),
            Db::My => Some(format!(
                "an exclusive metadata lock on {table}: reads and writes wait while the trigger is created or dropped (a moment); it commits on its own"
            )),
            Db::Lite => None,
        }
    }
}

/// The lock of a capture statement: its trigger's on `table`, the target's reading of
/// any other.
fn capture_lock(n: &Names, sql: &str, table: &str) -> Option<String> {
    let upper = sql.trim_start().to_ascii_uppercase();
    match upper.starts_with("CREATE TRIGGER") || upper.starts_with("DROP TRIGGER") {
        true => n.trigger_lock(table),
        false => None,
    }
}

/// An online step's forward capture and, when it has a reverse pipeline, its reverse one.
type Captures = (Box<dyn Capture>, Option<Box<dyn Capture>>);

/// The forward capture of `p`, and the reverse one (on the source table's name, as
/// after the cut-over) of `reverse`.
fn captures(p: &Pipeline, reverse: Option<&Pipeline>, io: &IoRuntime) -> crate::Result<Captures> {
    let none = || crate::Error::Internal("an online step without a database source".into());
    let forward = crate::plan::open_capture(&p.source, &p.name, io)?.ok_or_else(none)?;
    let reverse = match reverse {
        Some(r) => {
            let mut source = r.source.clone();
            if let Some(t) = source.table.as_mut() {
                t.value = super::online::Tables::of(p).source;
            }
            Some(crate::plan::open_capture(&source, &r.name, io)?.ok_or_else(none)?)
        }
        None => None,
    };
    Ok((forward, reverse))
}

/// The statements that install `capture` on `on` (its triggers' lock on `lock_on`), or
/// a note saying why they cannot be shown: MySQL's record the table's InnoDB id, read
/// from the server (not offline, and not before the table exists).
fn install(
    n: &Names,
    capture: &dyn Capture,
    (on, lock_on): (&str, &str),
    phase: &'static str,
    offline: bool,
) -> Result<Vec<Planned>, String> {
    if offline && n.db == Db::My {
        return Err(format!(
            "the change capture's statements on {on} ({}) are not shown offline: on MySQL/MariaDB they record the table's InnoDB id, read from the server",
            capture.describe()
        ));
    }
    match capture.install_sql(on) {
        Ok(all) => Ok(all
            .into_iter()
            .map(|sql| {
                let lock = capture_lock(n, &sql, lock_on);
                at(phase, sql, lock)
            })
            .collect()),
        Err(e) => Err(format!(
            "the change capture's statements on {on} ({}) cannot be shown now: {}",
            capture.describe(),
            crate::config::redact(&e.to_string())
        )),
    }
}

/// Appends `got`'s statements to `out`, or its note to `notes`.
fn add(got: Result<Vec<Planned>, String>, out: &mut Vec<Planned>, notes: &mut Vec<String>) {
    match got {
        Ok(mut all) => out.append(&mut all),
        Err(note) => notes.push(note),
    }
}

/// What an online step's data phase adds: the capture before the load, the catch-up
/// after it. `load` is the load's statement, which a replayed batch repeats for its rows.
pub(super) fn data(
    p: &Pipeline,
    load: &str,
    offline: bool,
    notes: &mut Vec<String>,
) -> (Vec<Planned>, Planned) {
    let n = Names::of(p);
    let mut capture = Vec::new();
    match IoRuntime::new().and_then(|io| captures(p, None, &io)) {
        Ok((forward, _)) => add(
            install(
                &n,
                forward.as_ref(),
                (&n.source, &n.source),
                "capture",
                offline,
            ),
            &mut capture,
            notes,
        ),
        Err(e) => notes.push(format!("the change capture cannot be shown: {e}")),
    }
    let o = &p.online;
    let catch_up = Planned {
        phase: "catch-up",
        sql: load.to_string(),
        lock: None,
        estimate: Some(format!(
            "the changes logged in the source during the copy: per transaction, up to {} of them ([online] batch_rows), their keys' rows deleted and written again as the source has them now; until fewer than {} wait (max_lag_rows)",
            o.batch_rows, o.max_lag_rows
        )),
    };
    (capture, catch_up)
}

/// The cut-over: the last catch-up, the lock, the drain of the last changes, the swap
/// with the forward triggers dropped and the reverse ones installed.
pub(super) fn cutover(
    p: &Pipeline,
    reverse: Option<&Pipeline>,
    offline: bool,
    notes: &mut Vec<String>,
) -> Vec<Planned> {
    let n = Names::of(p);
    let mut out = Vec::new();
    let (forward, rev) = match IoRuntime::new().and_then(|io| captures(p, reverse, &io)) {
        Ok(c) => c,
        Err(e) => {
            notes.push(format!("the cut-over cannot be shown: {e}"));
            return out;
        }
    };
    let o = &p.online;
    let drain = |table: &str| {
        Planned {
        phase: "cutover",
        sql: crate::sql::dialect::Locks::load(
            super::plan::locks_for(&p.target.location)
                .expect("a database target")
                .as_ref(),
            &n.schema,
            table,
            &p.target
                .columns
                .iter()
                .map(|c| c.name.value.clone())
                .collect::<Vec<_>>(),
        ),
        lock: None,
        estimate: Some(
            "the changes logged since the last catch-up, under the lock, each batch's rows read back and compared with what was written".into(),
        ),
    }
    };
    let bounded = format!(
        "each attempt waits at most {} ms ([online] lock_timeout_ms), {} attempts (lock_attempts)",
        o.lock_timeout_ms, o.lock_attempts
    );
    if n.db == Db::Pg {
        notes.push(format!(
            "the cut-over of table {} moves its sequences, views and other tables' foreign keys to the new table in the same transaction (docs/online.md)",
            n.source
        ));
    }
    let swap = Swap {
        phase: "cutover",
        other: &n.target,
        live_to: &n.old,
        drop: forward.drop_trigger_sql(),
        drain: drain(&n.target),
        bounded,
        lock_timeout_ms: o.lock_timeout_ms,
    };
    let install = rev.as_ref().map(|r| (r.as_ref(), offline));
    swap.plan(&n, install, &mut out, notes);
    if reverse.is_none() {
        notes.push(format!(
            "table {} is cut over without a reverse pipeline: writes after the cut-over do not reach {}, so down cannot swap it back",
            n.source, n.old
        ));
    }
    out
}

/// `down`'s swap-back: the old table caught up from the reverse capture, then the
/// cut-over's lock, drain and renames with the tables' roles exchanged.
pub(super) fn swap_back(p: &Pipeline, reverse: &Pipeline, notes: &mut Vec<String>) -> Vec<Planned> {
    let n = Names::of(p);
    let mut out = Vec::new();
    let rev = match IoRuntime::new().and_then(|io| captures(p, Some(reverse), &io)) {
        Ok((_, Some(r))) => r,
        Ok((_, None)) => return out,
        Err(e) => {
            notes.push(format!("the swap-back cannot be shown: {e}"));
            return out;
        }
    };
    let o = &p.online;
    let columns: Vec<String> = reverse
        .target
        .columns
        .iter()
        .map(|c| c.name.value.clone())
        .collect();
    let load = crate::sql::dialect::Locks::load(
        super::plan::locks_for(&p.target.location)
            .expect("a database target")
            .as_ref(),
        &n.schema,
        &n.old,
        &columns,
    );
    out.push(Planned {
        phase: "swap-back",
        sql: load.clone(),
        lock: None,
        estimate: Some(format!(
            "the changes the reverse capture logged since the cut-over, through {}, up to {} a transaction",
            super::apply::pipeline_file(reverse),
            o.batch_rows
        )),
    });
    let drain = Planned {
        phase: "swap-back",
        sql: load,
        lock: None,
        estimate: Some(
            "the changes logged since, under the lock, each batch's rows read back and compared with what was written".into(),
        ),
    };
    let bounded = format!(
        "each attempt waits at most {} ms ([online] lock_timeout_ms), {} attempts (lock_attempts)",
        o.lock_timeout_ms, o.lock_attempts
    );
    let swap = Swap {
        phase: "swap-back",
        other: &n.old,
        live_to: &n.target,
        drop: rev.drop_trigger_sql(),
        drain,
        bounded,
        lock_timeout_ms: o.lock_timeout_ms,
    };
    swap.plan(&n, None, &mut out, notes);
    notes.push(format!(
        "the swap-back of table {} then removes both change captures (their triggers, logs and replay positions){}",
        n.source,
        match n.db {
            Db::Pg => "; the sequences, views and foreign keys the cut-over moved move back",
            _ => "",
        }
    ));
    out
}

/// A swap's lock, drain and renames as each database runs them: the live table (the
/// source's name) takes the name `live_to`, and `other` takes the source's name. The
/// cut-over's swap has the forward triggers dropped and the reverse capture installed;
/// `down`'s swap-back the reverse triggers dropped and nothing installed.
struct Swap<'a> {
    phase: &'static str,
    other: &'a str,
    live_to: &'a str,
    /// The triggers the swap drops.
    drop: Vec<String>,
    drain: Planned,
    /// How long each lock attempt waits, for the lock's line.
    bounded: String,
    /// `[online] lock_timeout_ms`.
    lock_timeout_ms: u64,
}

impl Swap<'_> {
    /// Appends the statements to `out`; `reverse`, the capture the swap installs on
    /// the new live table (and whether the plan is offline), after the renames
    /// (PostgreSQL, SQLite) or before MySQL's `RENAME TABLE`, on the table by the name
    /// it has then.
    fn plan(
        self,
        n: &Names,
        reverse: Option<(&dyn Capture, bool)>,
        out: &mut Vec<Planned>,
        notes: &mut Vec<String>,
    ) {
        let phase = self.phase;
        let (src, other, to) = (n.q(&n.source), n.q(self.other), n.q(self.live_to));
        let mut install_on = |table: &str, out: &mut Vec<Planned>| {
            if let Some((capture, offline)) = reverse {
                add(
                    install(n, capture, (table, table), phase, offline),
                    out,
                    notes,
                );
            }
        };
        let bounded = &self.bounded;
        match n.db {
            Db::Pg => {
                out.push(at(
                    phase,
                    format!("SET LOCAL lock_timeout = {}", self.lock_timeout_ms.max(1)),
                    None,
                ));
                out.push(at(
                    phase,
                    format!("LOCK TABLE {src} IN EXCLUSIVE MODE"),
                    Some(format!(
                        "EXCLUSIVE on {}: writes wait from here to the commit, reads go on; {bounded}",
                        n.source
                    )),
                ));
                out.push(self.drain);
                for (t, name) in [(&src, &n.source.as_str()), (&other, &self.other)] {
                    out.push(at(
                        phase,
                        format!("LOCK TABLE {t} IN ACCESS EXCLUSIVE MODE"),
                        Some(format!(
                            "ACCESS EXCLUSIVE on {name}: reads wait too, until the commit (the renames)"
                        )),
                    ));
                }
                for sql in self.drop {
                    out.push(at(phase, sql, None));
                }
                out.push(at(
                    phase,
                    format!("ALTER TABLE {src} RENAME TO {}", n.bare(self.live_to)),
                    None,
                ));
                out.push(at(
                    phase,
                    format!("ALTER TABLE {other} RENAME TO {}", n.bare(&n.source)),
                    None,
                ));
                install_on(&n.source, out);
                out.push(at(phase, "COMMIT".into(), None));
            }
            Db::My => {
                out.push(at(
                    phase,
                    format!(
                        "CREATE TABLE {to} (sentry INT) ENGINE=InnoDB COMMENT 'rowshift cut-over sentry'"
                    ),
                    None,
                ));
                out.push(at(
                    phase,
                    format!("LOCK TABLES {src} READ, {to} WRITE"),
                    Some(format!(
                        "READ on {}: writes wait from here to the rename, reads go on; {bounded} (lock_wait_timeout, in whole seconds)",
                        n.source
                    )),
                ));
                out.push(self.drain);
                install_on(self.other, out);
                out.push(at(
                    phase,
                    format!("RENAME TABLE {src} TO {to}, {other} TO {src}"),
                    Some(format!(
                        "an exclusive metadata lock on {} and {}: issued by a second session, it waits, and is granted before the waiting writes once the first drops the sentry and unlocks",
                        n.source, self.other
                    )),
                ));
                out.push(at(phase, format!("DROP TABLE {to}"), None));
                out.push(at(phase, "UNLOCK TABLES".into(), Some(UNLOCK.into())));
                for sql in self.drop {
                    let lock = capture_lock(n, &sql, self.live_to);
                    out.push(at(phase, sql, lock));
                }
            }
            Db::Lite => {
                out.push(at(
                    phase,
                    "BEGIN IMMEDIATE".into(),
                    Some(SQLITE_WRITE_LOCK.into()),
                ));
                out.push(self.drain);
                for sql in self.drop {
                    out.push(at(phase, sql, None));
                }
                out.push(at(phase, "PRAGMA legacy_alter_table = ON".into(), None));
                out.push(at(
                    phase,
                    format!("ALTER TABLE {src} RENAME TO {}", n.bare(self.live_to)),
                    None,
                ));
                out.push(at(
                    phase,
                    format!("ALTER TABLE {other} RENAME TO {src}"),
                    None,
                ));
                out.push(at(phase, "PRAGMA legacy_alter_table = OFF".into(), None));
                install_on(&n.source, out);
                out.push(at(phase, "COMMIT".into(), None));
            }
        }
    }
}
