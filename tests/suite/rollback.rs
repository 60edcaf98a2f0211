//! Rollback that proves nothing is lost, on SQLite, PostgreSQL and MariaDB: reverse
//! pipelines (`NNN_name.down.toml`) that `down` runs before a step's down SQL, `down`
//! refusing when a data step's source is gone or changed (then allowed with `--force`),
//! and `test-rollback`, which runs up, down and up on a throwaway copy and names the
//! first difference, never touching the real target or sources.
//!
//! Each test has a source (a SQLite file, or a schema / database of its own on the
//! server) holding `people_v1` and `tags_v1`, and a target of its own.

use crate::common::{MyDb, PgSchema, Workspace, my_url, pg_url, sqlite_exec, sqlite_rows};

/// The source's rows: `people_v1` (id, name, email) and `tags_v1` (id, label, rank).
const PEOPLE: &[(i64, &str, Option<&str>)] = &[
    (1, "ann", Some("ann@example.com")),
    (2, "bob", None),
    (3, "cy", Some("cy@example.com")),
    (4, "dee", Some("dee@example.com")),
];
const TAGS: &[(i64, &str, i64)] = &[(1, "red", 3), (2, "green", 1), (3, "blue", 2)];

enum Db {
    Sqlite,
    Pg(PgSchema, PgSchema),
    My(MyDb, MyDb),
}

struct Fixture {
    ws: Workspace,
    db: Db,
}

impl Fixture {
    /// A source with the rows above, a target, and the three-step set with a reverse
    /// pipeline for each data step (`lossy`: the people's one leaves `email` out).
    fn new(kind: &str, lossy: bool) -> Fixture {
        let ws = Workspace::new();
        std::fs::create_dir_all(ws.path("set")).unwrap();
        let db = match kind {
            "sqlite" => Db::Sqlite,
            "pg" => Db::Pg(PgSchema::new("rb_src"), PgSchema::new("rb_dst")),
            _ => Db::My(MyDb::new("rb_src"), MyDb::new("rb_dst")),
        };
        let f = Fixture { ws, db };
        let text = match f.db {
            Db::My(..) => "VARCHAR(100)",
            _ => "TEXT",
        };
        let mut sql = format!(
            "CREATE TABLE {p} (id BIGINT PRIMARY KEY, name {text} NOT NULL, email {text});
             CREATE TABLE {t} (id BIGINT PRIMARY KEY, label {text} NOT NULL, `rank` BIGINT NOT NULL);",
            p = f.source_table("people_v1"),
            t = f.source_table("tags_v1"),
        );
        for (id, name, email) in PEOPLE {
            let email = email.map_or("NULL".to_string(), |e| format!("'{e}'"));
            sql.push_str(&format!(
                "INSERT INTO {} VALUES ({id}, '{name}', {email});",
                f.source_table("people_v1")
            ));
        }
        for (id, label, rank) in TAGS {
            sql.push_str(&format!(
                "INSERT INTO {} VALUES ({id}, '{label}', {rank});",
                f.source_table("tags_v1")
            ));
        }
        let sql = match f.db {
            Db::My(..) => sql,
            _ => sql.replace('`', "\""),
        };
        f.source_exec(&sql);
        f.write_set(lossy);
        f
    }

    fn source_table(&self, t: &str) -> String {
        match &self.db {
            Db::Sqlite => t.to_string(),
            Db::Pg(s, _) => format!("\"{}\".{t}", s.name),
            Db::My(s, _) => format!("`{}`.{t}", s.name),
        }
    }

    fn source_exec(&self, sql: &str) {
        match &self.db {
            Db::Sqlite => sqlite_exec(&self.ws.path("src.db"), sql),
            Db::Pg(s, _) => s.exec(sql),
            Db::My(s, _) => s.exec(sql),
        }
    }

    /// The source's `people_v1` rows in id order, values as text.
    fn people(&self) -> Vec<Vec<String>> {
        self.source_rows(
            "SELECT id::text, name, coalesce(email, 'NULL') FROM {}.people_v1 ORDER BY id",
            "SELECT CAST(id AS CHAR), name, IFNULL(email, 'NULL') FROM {}.people_v1 ORDER BY id",
            "SELECT id, name, email FROM people_v1 ORDER BY id",
        )
    }

    fn tags(&self) -> Vec<Vec<String>> {
        self.source_rows(
            "SELECT id::text, label, rank::text FROM {}.tags_v1 ORDER BY id",
            "SELECT CAST(id AS CHAR), label, CAST(`rank` AS CHAR) FROM {}.tags_v1 ORDER BY id",
            "SELECT id, label, rank FROM tags_v1 ORDER BY id",
        )
    }

    fn source_rows(&self, pg: &str, my: &str, lite: &str) -> Vec<Vec<String>> {
        match &self.db {
            Db::Sqlite => sqlite_rows(&self.ws.path("src.db"), lite),
            Db::Pg(s, _) => s.rows(&pg.replace("{}", &format!("\"{}\"", s.name))),
            Db::My(s, _) => s.rows(&my.replace("{}", &format!("`{}`", s.name))),
        }
    }

    /// The target's tables other than rowshift's own, and the set's history rows.
    fn target_state(&self) -> (Vec<String>, Vec<Vec<String>>) {
        match &self.db {
            Db::Sqlite => {
                let path = self.ws.path("target.db");
                if !path.exists() {
                    return (Vec::new(), Vec::new());
                }
                let tables = sqlite_rows(
                    &path,
                    "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE '\\_rowshift%' ESCAPE '\\' AND name NOT LIKE '%\\_rejects' ESCAPE '\\' ORDER BY 1",
                );
                let history = sqlite_rows(
                    &path,
                    "SELECT step, state, phase FROM _rowshift_history WHERE set_name = 't' ORDER BY step",
                );
                (tables.into_iter().map(|r| r[0].clone()).collect(), history)
            }
            Db::Pg(_, t) => {
                let tables = t.rows(&format!(
                    "SELECT table_name::text FROM information_schema.tables WHERE table_schema = '{}' AND table_name NOT LIKE '\\_rowshift%' AND table_name NOT LIKE '%\\_rejects' ORDER BY 1",
                    t.name
                ));
                let history = t.rows(&format!(
                    "SELECT step::text, state, phase FROM rowshift.history WHERE set_name = 't' AND target = '{}' ORDER BY step",
                    t.name
                ));
                (tables.into_iter().map(|r| r[0].clone()).collect(), history)
            }
            Db::My(_, t) => {
                let tables = t.rows(&format!(
                    "SELECT CAST(table_name AS CHAR) FROM information_schema.tables WHERE table_schema = '{}' AND table_name NOT LIKE '\\_rowshift%' AND table_name NOT LIKE '%\\_rejects' ORDER BY 1",
                    t.name
                ));
                let has_history = !t
                    .rows(&format!(
                        "SELECT table_name FROM information_schema.tables WHERE table_schema = '{}' AND table_name = '_rowshift_history'",
                        t.name
                    ))
                    .is_empty();
                let history = match has_history {
                    true => t.rows(&format!(
                        "SELECT CAST(step AS CHAR), CAST(state AS CHAR), CAST(phase AS CHAR) FROM `{}`._rowshift_history WHERE set_name = 't' ORDER BY step",
                        t.name
                    )),
                    false => Vec::new(),
                };
                (tables.into_iter().map(|r| r[0].clone()).collect(), history)
            }
        }
    }

    /// Whether a schema or database test-rollback named in its report still exists.
    fn scratch_exists(&self, shown: &str) -> bool {
        match &self.db {
            Db::Sqlite => {
                let path = shown.trim_start_matches("sqlite://");
                std::path::Path::new(path).exists()
            }
            Db::Pg(s, _) => {
                let name = shown.rsplit(' ').next().unwrap();
                !s.rows(&format!(
                    "SELECT nspname::text FROM pg_namespace WHERE nspname = '{name}'"
                ))
                .is_empty()
                    || !s
                        .rows(&format!(
                            "SELECT 1::text FROM rowshift.history WHERE target = '{name}'"
                        ))
                        .is_empty()
            }
            Db::My(s, _) => {
                let name = shown.rsplit(' ').next().unwrap();
                !s.rows(&format!(
                    "SELECT schema_name FROM information_schema.schemata WHERE schema_name = '{name}'"
                ))
                .is_empty()
            }
        }
    }

    fn lines(&self, which: &str) -> String {
        match (&self.db, which) {
            (Db::Sqlite, "target") => "url = \"sqlite://../target.db\"\n".into(),
            (Db::Sqlite, _) => "url = \"sqlite://../src.db\"\n".into(),
            (Db::Pg(s, t), w) => format!(
                "url = \"{}\"\nschema = \"{}\"\n",
                pg_url(),
                if w == "target" { &t.name } else { &s.name }
            ),
            (Db::My(s, t), w) => format!(
                "url = \"{}\"\nschema = \"{}\"\n",
                my_url(),
                if w == "target" { &t.name } else { &s.name }
            ),
        }
    }

    fn write(&self, file: &str, text: &str) {
        std::fs::write(self.ws.path(&format!("set/{file}")), text).unwrap();
    }

    /// The three-step set: a SQL step, then two data steps, each with its down SQL and
    /// a reverse pipeline.
    fn write_set(&self, lossy: bool) {
        let (src, dst) = (self.lines("source"), self.lines("target"));
        self.write("rowshift.toml", &format!("name = \"t\"\n{dst}"));
        self.write(
            "001_audit.sql",
            "-- rowshift:up\nCREATE TABLE audit (id BIGINT PRIMARY KEY, note VARCHAR(100));\n\n-- rowshift:down\nDROP TABLE audit;\n",
        );
        self.write(
            "002_people.toml",
            &format!(
                "name = \"t_people\"\n\n[source]\n{src}table = \"people_v1\"\nkey = \"id\"\n\n[target]\n{dst}table = \"people\"\n\n[target.columns]\nid = {{ type = \"bigint\", expr = \"id\", primary_key = true }}\nfull_name = {{ type = \"text\", expr = \"name\", nullable = false }}\nemail = {{ type = \"text\", expr = \"email\" }}\n"
            ),
        );
        self.write("002_people.sql", "-- rowshift:down\nDROP TABLE people;\n");
        let email = match lossy {
            true => "",
            false => "email = { type = \"text\", expr = \"email\" }\n",
        };
        self.write(
            "002_people.down.toml",
            &format!(
                "name = \"t_people_down\"\n\n[source]\n{dst}table = \"people\"\nkey = \"id\"\n\n[target]\n{src}table = \"people_v1\"\nif_exists = \"replace\"\n\n[target.columns]\nid = {{ type = \"bigint\", expr = \"id\", primary_key = true }}\nname = {{ type = \"text\", expr = \"full_name\", nullable = false }}\n{email}"
            ),
        );
        self.write(
            "003_tags.toml",
            &format!(
                "name = \"t_tags\"\n\n[source]\n{src}table = \"tags_v1\"\nkey = \"id\"\n\n[target]\n{dst}table = \"tags\"\n\n[target.columns]\nid = {{ type = \"bigint\", expr = \"id\", primary_key = true }}\nlabel = {{ type = \"text\", expr = \"label\", nullable = false }}\nweight = {{ type = \"bigint\", expr = \"\\\"rank\\\"\", nullable = false }}\n"
            ),
        );
        self.write(
            "003_tags.sql",
            "-- rowshift:after\nCREATE INDEX tags_weight ON tags (weight);\n\n-- rowshift:down\nDROP TABLE tags;\n",
        );
        self.write(
            "003_tags.down.toml",
            &format!(
                "name = \"t_tags_down\"\n\n[source]\n{dst}table = \"tags\"\nkey = \"id\"\n\n[target]\n{src}table = \"tags_v1\"\nif_exists = \"replace\"\n\n[target.columns]\nid = {{ type = \"bigint\", expr = \"id\", primary_key = true }}\nlabel = {{ type = \"text\", expr = \"label\", nullable = false }}\nrank = {{ type = \"bigint\", expr = \"weight\", nullable = false }}\n"
            ),
        );
    }

    fn rowshift(&self, args: &[&str]) -> crate::common::Output {
        self.ws.rowshift(args)
    }
}

fn people_rows() -> Vec<Vec<String>> {
    PEOPLE
        .iter()
        .map(|(i, n, e)| {
            vec![
                i.to_string(),
                n.to_string(),
                e.unwrap_or("NULL").to_string(),
            ]
        })
        .collect()
}

fn tag_rows() -> Vec<Vec<String>> {
    TAGS.iter()
        .map(|(i, l, r)| vec![i.to_string(), l.to_string(), r.to_string()])
        .collect()
}

/// The three-step set with reverse pipelines that round-trip passes test-rollback, and
/// neither the real target nor the source is touched; the copies are gone after.
fn passes(kind: &str) {
    let f = Fixture::new(kind, false);
    let out = f.rowshift(&["validate", "set"]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    let before = f.target_state();
    let out = f.rowshift(&["test-rollback", "set", "--json", "--sample", "3"]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    let report: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert!(report["difference"].is_null(), "{}", out.stdout);
    assert_eq!(report["steps"], 3);
    // The sample: the first 3 rows by key of each source table.
    let tables: Vec<(String, u64)> = report["tables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["table"].as_str().unwrap().to_string(),
                t["rows"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        tables,
        [
            ("audit".to_string(), 0),
            ("people".into(), 3),
            ("tags".into(), 3)
        ]
    );
    let trips: Vec<(u64, String, u64)> = report["round_trips"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["step"].as_u64().unwrap(),
                t["table"].as_str().unwrap().to_string(),
                t["rows"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        trips,
        [(2, "people_v1".to_string(), 3), (3, "tags_v1".into(), 3)]
    );
    // Never the real target, nor the source; no copy left behind.
    assert_eq!(f.target_state(), before);
    assert_eq!(f.target_state(), (Vec::new(), Vec::new()));
    assert_eq!(f.people(), people_rows());
    assert_eq!(f.tags(), tag_rows());
    let scratch = report["scratch"].as_array().unwrap();
    assert_eq!(scratch.len(), 2, "{scratch:?}");
    for s in scratch {
        assert!(!f.scratch_exists(s.as_str().unwrap()), "{s} is left");
    }
    // The text report says the same.
    let out = f.rowshift(&["test-rollback", "set", "-q"]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains(
            "the second up gave the same target, and every reverse pipeline gave back its rows"
        ),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .contains("step 2: down(up(x)) = x for table people_v1: 4 rows"),
        "{}",
        out.stdout
    );
}

/// A reverse pipeline that leaves a column out fails test-rollback, naming the column;
/// the real target is untouched and the copies are dropped.
fn catches_a_lost_column(kind: &str) {
    let f = Fixture::new(kind, true);
    let out = f.rowshift(&["test-rollback", "set", "-q"]);
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    assert_eq!(
        out.stdout.trim(),
        "test-rollback: set t: step 2 (people): its reverse pipeline 002_people.down.toml does not return the original rows (down(up(x)) != x): table people_v1: column email is there in the source sample, not after down (its values are lost)"
    );
    assert_eq!(f.target_state(), (Vec::new(), Vec::new()));
    assert_eq!(f.people(), people_rows());
    let out = f.rowshift(&["test-rollback", "set", "--json"]);
    assert_eq!(out.code, 1);
    let report: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    for s in report["scratch"].as_array().unwrap() {
        assert!(!f.scratch_exists(s.as_str().unwrap()), "{s} is left");
    }
}

/// Without reverse pipelines, down refuses, changing nothing, when a data step's source
/// changed or is gone since up, naming the step, table and figures; --force reverts.
fn refuses_a_changed_source(kind: &str) {
    let f = Fixture::new(kind, false);
    std::fs::remove_file(f.ws.path("set/002_people.down.toml")).unwrap();
    std::fs::remove_file(f.ws.path("set/003_tags.down.toml")).unwrap();
    let out = f.rowshift(&["up", "set", "-q"]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    let applied = f.target_state();
    assert_eq!(applied.0, ["audit", "people", "tags"]);
    // Unchanged sources: down --to 1 would be allowed (checked by the plan, read-only).
    let out = f.rowshift(&["plan", "set", "--down", "--to", "1"]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);

    f.source_exec(&format!(
        "INSERT INTO {} VALUES (5, 'eve', NULL)",
        f.source_table("people_v1")
    ));
    f.source_exec(&format!(
        "UPDATE {} SET label = 'navy' WHERE id = 3",
        f.source_table("tags_v1")
    ));
    let out = f.rowshift(&["down", "set", "--to", "0"]);
    assert_eq!(out.code, 2, "{}{}", out.stdout, out.stderr);
    let shown = |t: &str| match &f.db {
        Db::Sqlite => format!("table {t} of sqlite://../src.db"),
        Db::Pg(s, _) => format!("table {}.{t} of {}", s.name, pg_url()),
        Db::My(s, _) => format!("table {}.{t} of {}", s.name, my_url()),
    };
    let err = &out.stderr;
    assert!(err.contains("down changed nothing"), "{err}");
    assert!(
        err.contains(&format!(
            "step 2 (people): its source, {}, changed since the step was applied on ",
            shown("people_v1")
        )),
        "{err}"
    );
    assert!(
        err.contains(": 1 rows added (4 then, 5 now) and the checksum differs ("),
        "{err}"
    );
    assert!(
        err.contains("the rows that reverting drops from table people could not be had again from it as they were; add a reverse pipeline, 002_people.down.toml, that brings them back, or pass --force to revert anyway"),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "step 3 (tags): its source, {}, changed since",
            shown("tags_v1")
        )),
        "{err}"
    );
    assert!(
        err.contains(": the same 3 rows, but their checksum differs ("),
        "{err}"
    );
    assert_eq!(f.target_state(), applied, "a refused down changed nothing");

    // A source gone is refused too.
    f.source_exec(&format!("DROP TABLE {}", f.source_table("tags_v1")));
    let out = f.rowshift(&["down", "set", "--to", "2"]);
    assert_eq!(out.code, 2, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains(&format!(
            "step 3 (tags): its source, {}, is gone, so the rows that reverting drops from table tags could not be had again; add a reverse pipeline, 003_tags.down.toml",
            shown("tags_v1")
        )),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains("step 2 (people)"), "{}", out.stderr);
    assert_eq!(f.target_state(), applied);

    let out = f.rowshift(&["down", "set", "--to", "0", "--force"]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    let (tables, history) = f.target_state();
    assert!(tables.is_empty(), "{tables:?}");
    assert!(history.iter().all(|r| r[1] == "reverted"), "{history:?}");
}

/// down with reverse pipelines brings the old tables' rows back exactly, even when the
/// old tables were emptied or dropped after up, before the step's down SQL drops the new
/// ones; the history shows each step reverted.
fn reverse_restores_rows(kind: &str) {
    let f = Fixture::new(kind, false);
    let out = f.rowshift(&["up", "set", "-q"]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    // The old schema goes away, as a later release would drop it.
    f.source_exec(&format!("DELETE FROM {}", f.source_table("people_v1")));
    f.source_exec(&format!("DROP TABLE {}", f.source_table("tags_v1")));
    // The plan lists each reverse move before the step's down section.
    let out = f.rowshift(&["plan", "set", "--down", "--to", "1", "--json"]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    let plan: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let phases: Vec<(u64, String)> = plan["statements"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| !s["step"].is_null() && s["phase"] != "history")
        .map(|s| {
            (
                s["step"].as_u64().unwrap(),
                s["phase"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let mut order: Vec<&(u64, String)> = phases
        .iter()
        .filter(|(_, p)| p == "load" || p == "down")
        .collect();
    // PostgreSQL's section starts with its search path, also under `down`.
    order.dedup();
    assert_eq!(
        order,
        [
            &(3, "load".to_string()),
            &(3, "down".into()),
            &(2, "load".into()),
            &(2, "down".into())
        ]
    );
    let out = f.rowshift(&["down", "set", "--to", "1", "--print-sql"]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    // What ran is what the plan listed, statement by statement.
    let ran: Vec<(u64, String)> = out
        .stderr
        .lines()
        .filter_map(|l| l.strip_prefix("-- step "))
        .filter_map(|l| {
            let (n, rest) = l.split_once(", ")?;
            let phase = rest.split(';').next()?;
            Some((n.parse().ok()?, phase.to_string()))
        })
        .filter(|(_, p)| p != "history")
        .collect();
    assert_eq!(ran, phases, "{}", out.stderr);
    assert!(
        out.stdout.contains(
            "step 3 (tags) reverted: 1 statements, reverse pipeline t_tags_down: 3 rows moved back"
        ),
        "{}",
        out.stdout
    );
    assert_eq!(f.people(), people_rows());
    assert_eq!(f.tags(), tag_rows());
    let (tables, history) = f.target_state();
    assert_eq!(tables, ["audit"]);
    let states: Vec<(String, String)> = history
        .iter()
        .map(|r| (r[0].clone(), r[1].clone()))
        .collect();
    assert_eq!(
        states,
        [
            ("1".to_string(), "applied".to_string()),
            ("2".into(), "reverted".into()),
            ("3".into(), "reverted".into())
        ]
    );
    // And up again moves the restored rows.
    let out = f.rowshift(&["up", "set", "-q"]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert_eq!(f.target_state().0, ["audit", "people", "tags"]);
}

/// A down killed after a reverse move, before its record moved on, is continued by the
/// next down: the history said where it stopped, the move's checkpoint is finished, and
/// the old rows end up exactly as they were, once.
fn resumes_a_killed_reverse(kind: &str) {
    let f = Fixture::new(kind, false);
    let out = f.rowshift(&["up", "set", "-q"]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    f.source_exec(&format!("DROP TABLE {}", f.source_table("tags_v1")));
    let out = f.ws.rowshift_env(
        &["down", "set", "--to", "2"],
        &[("ROWSHIFT_FAULT", "step=3,crash=reverse")],
    );
    assert_ne!(out.code, 0, "{}{}", out.stdout, out.stderr);
    let (tables, history) = f.target_state();
    assert_eq!(tables, ["audit", "people", "tags"], "nothing dropped yet");
    assert_eq!(history[2], ["3", "reverting", "reverse"]);
    let out = f.rowshift(&["status", "set"]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    let out = f.rowshift(&["up", "set"]);
    assert_eq!(
        out.code, 2,
        "up refuses a step mid-down: {}{}",
        out.stdout, out.stderr
    );
    let out = f.rowshift(&["down", "set", "--to", "2"]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains("step 3 (tags) reverted: 1 statements"),
        "{}",
        out.stdout
    );
    assert_eq!(f.tags(), tag_rows());
    let (tables, history) = f.target_state();
    assert_eq!(tables, ["audit", "people"]);
    assert_eq!(history[2], ["3", "reverted", "done"]);
}

/// A step whose down section leaves its rows behind makes the second up differ from the
/// first: test-rollback names the table and the row's key.
fn catches_a_second_up_that_differs(kind: &str) {
    let f = Fixture::new(kind, false);
    f.write(
        "001_audit.sql",
        "-- rowshift:up\nCREATE TABLE IF NOT EXISTS audit (id BIGINT PRIMARY KEY, note VARCHAR(100));\nINSERT INTO audit (id, note) SELECT COALESCE(MAX(id), 0) + 1, 'started' FROM audit;\n\n-- rowshift:down\n",
    );
    let out = f.rowshift(&["test-rollback", "set", "-q"]);
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    let key = match f.db {
        Db::My(..) => "id='2'",
        _ => "id=2",
    };
    assert_eq!(
        out.stdout.trim(),
        format!(
            "test-rollback: set t: the second up does not give the target the first gave: table audit: row {key} is there after the second, not after the first up"
        )
    );
    assert_eq!(f.target_state(), (Vec::new(), Vec::new()));
}

/// A data step whose chunk the target refuses whole is not recorded applied: up exits 2,
/// the history says failed with the refusal, and down has nothing of it to revert.
#[test]
fn a_refused_chunk_fails_its_step() {
    let f = Fixture::new("sqlite", false);
    f.write(
        "002_people.sql",
        "-- rowshift:up\nCREATE TABLE people (id BIGINT PRIMARY KEY, full_name TEXT NOT NULL CHECK (length(full_name) > 5), email TEXT);\n\n-- rowshift:down\nDROP TABLE people;\n",
    );
    f.write(
        "002_people.toml",
        &std::fs::read_to_string(f.ws.path("set/002_people.toml"))
            .unwrap()
            .replace("[target]\n", "[target]\nif_exists = \"append\"\n"),
    );
    // One step at a time: step 3 shares no table with step 2, and would otherwise be
    // applied beside it.
    let out = f.rowshift(&["up", "set", "-q", "--parallel", "1"]);
    assert_eq!(out.code, 2, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stderr
            .contains("step 2 (people): chunk 0 failed: the target refused"),
        "{}",
        out.stderr
    );
    let (tables, history) = f.target_state();
    assert_eq!(tables, ["audit", "people"]);
    assert_eq!(history[1][..2], ["2", "failed"]);
    assert_eq!(
        history.len(),
        2,
        "up stopped at the failed step: {history:?}"
    );
}

/// `validate` checks a reverse pipeline against its step, with file:line:col.
#[test]
fn validate_checks_reverse_pipelines() {
    let f = Fixture::new("sqlite", false);
    f.write(
        "003_tags.down.toml",
        "name = \"t_tags\"\n\n[source]\nurl = \"sqlite://../target.db\"\ntable = \"tag\"\nkey = \"id\"\n\n[target]\nurl = \"sqlite://../other.db\"\ntable = \"tags_v1\"\n\n[target.columns]\nid = { type = \"bigint\", expr = \"id\", primary_key = true }\n",
    );
    f.write(
        "001_audit.down.toml",
        "name = \"a\"\n\n[source]\nurl = \"sqlite://../target.db\"\ntable = \"audit\"\nkey = \"id\"\n\n[target]\nurl = \"sqlite://../src.db\"\ntable = \"audit_v1\"\n\n[target.columns]\nid = { type = \"bigint\", expr = \"id\", primary_key = true }\n",
    );
    let out = f.rowshift(&["validate", "set"]);
    assert_eq!(out.code, 2, "{}{}", out.stdout, out.stderr);
    let err = &out.stderr;
    for expected in [
        "error: set/001_audit.down.toml:4:7: a reverse pipeline undoes a data step's move, and step 1 has no data pipeline (001_audit.toml does not exist)",
        "set/003_tags.down.toml:5:9: the reverse pipeline reads table `tag`, but 003_tags.toml writes table `tags`: it reads the rows the step wrote",
        "set/003_tags.down.toml:9:7: the reverse pipeline writes to sqlite://../other.db, but 003_tags.toml reads from sqlite://../src.db: it brings the rows back where they came from",
        "set/003_tags.down.toml:4:7: the reverse pipeline has the name `t_tags` of 003_tags.toml",
    ] {
        assert!(err.contains(expected), "missing `{expected}` in:\n{err}");
    }
}

macro_rules! on_each {
    ($($kind:ident: $name:literal),*) => {$(
        mod $kind {
            #[test]
            fn test_rollback_passes_a_set_that_round_trips() {
                super::passes($name);
            }
            #[test]
            fn test_rollback_catches_a_reverse_pipeline_that_loses_a_column() {
                super::catches_a_lost_column($name);
            }
            #[test]
            fn down_refuses_a_changed_or_gone_source_then_force_reverts() {
                super::refuses_a_changed_source($name);
            }
            #[test]
            fn down_with_reverse_pipelines_restores_the_old_rows() {
                super::reverse_restores_rows($name);
            }
            #[test]
            fn test_rollback_catches_a_second_up_that_differs() {
                super::catches_a_second_up_that_differs($name);
            }
            #[test]
            fn down_killed_after_a_reverse_move_is_continued() {
                super::resumes_a_killed_reverse($name);
            }
        }
    )*};
}

on_each!(sqlite: "sqlite", pg: "pg", mariadb: "my");
