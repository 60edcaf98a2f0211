//! What follows a PostgreSQL table at an online move's cut-over (docs/online.md): its
//! sequences, the views built on it, and the foreign keys of other tables that reference
//! it. PostgreSQL ties each of them to the table's identity (its oid), not to its name,
//! so after the renames they would all still belong to the old table.
//!
//! [`Dependents::read`] runs in the cut-over's transaction before the renames, with an
//! empty `search_path`, so that every definition it reads names its tables with their
//! schema: the source table's name, once the new table has taken it, then names the new
//! table. [`Dependents::apply`] runs after the renames, in the same transaction;
//! [`Dependents::validate`] after the commit.
//!
//! - A sequence the old table owns (`serial`) is given to the new table's column of the
//!   same name (`ALTER SEQUENCE ... OWNED BY`). An identity column's sequence cannot
//!   change hands: the old column's identity is dropped and the new column gets one
//!   under the same sequence name, options and current value. A `nextval` default the
//!   new column lacks is copied.
//! - A view is replaced (`CREATE OR REPLACE VIEW`, which keeps its owner, privileges,
//!   comments, triggers and the views built on it). If its columns' types change, it is
//!   dropped and created again with its owner, privileges, comments, column defaults,
//!   triggers and rules restored. A materialized view, a view that names a column the new
//!   table lacks, or one that other objects depend on when it must be dropped, refuses the
//!   cut-over.
//! - A foreign key of another table is dropped and added again against the new table
//!   `NOT VALID` (no scan under the lock), then validated after the commit. A key that
//!   fails validation stays `NOT VALID` and is reported.

use sqlx::Row;
use sqlx::postgres::{PgConnection, PgPool};

use crate::sql::stmt;
use crate::{Error, Result};

/// A sequence owned by one of the old table's columns.
#[derive(Debug)]
struct Sequence {
    column: String,
    /// Qualified and quoted (`regclass` text).
    name: String,
    /// `a`: owned (`serial`); `i`: an identity column's.
    dep: String,
    /// `a` (ALWAYS) or `d` (BY DEFAULT) for an identity column.
    identity: String,
    options: String,
    last_value: i64,
    is_called: bool,
}

/// A view on the old table.
#[derive(Debug)]
struct View {
    /// Qualified and quoted.
    name: String,
    /// `v` (a view), `m` (a materialized view), or the kind of another relation whose
    /// rule reads the table.
    kind: String,
    definition: String,
    /// `WITH (...)` options, empty if none.
    options: String,
    /// What a drop would lose, as statements that put it back.
    restore: Vec<String>,
}

/// A foreign key of another table that references the old table.
#[derive(Debug)]
struct ForeignKey {
    name: String,
    /// The referencing table, qualified and quoted.
    table: String,
    /// Its definition without `NOT VALID`.
    definition: String,
    /// Whether it was validated (only then is it validated again).
    validated: bool,
}

/// The old table's dependents, read before the renames.
#[derive(Debug, Default)]
pub(super) struct Dependents {
    sequences: Vec<Sequence>,
    /// Columns whose `nextval` default the new table lacks: (column, expression).
    defaults: Vec<(String, String)>,
    views: Vec<View>,
    keys: Vec<ForeignKey>,
    /// The new table's columns: name -> (identity kind, has a default).
    target: std::collections::HashMap<String, (String, bool)>,
}

/// How the cut-over refuses, nothing swapped.
fn refuse(what: String) -> Error {
    Error::Unsupported(format!(
        "{what}; the cut-over was refused and nothing was swapped"
    ))
}

impl Dependents {
    /// Reads what depends on `source` (qualified and quoted) and the columns of `target`,
    /// on `conn` inside the cut-over's transaction, before the renames.
    pub(super) async fn read(
        conn: &mut PgConnection,
        source: &str,
        target: &str,
    ) -> sqlx::Result<Dependents> {
        // Every name in a definition read from now on carries its schema.
        sqlx::query("SELECT set_config('search_path', '', true)")
            .execute(&mut *conn)
            .await?;
        let mut out = Dependents::default();
        for r in sqlx::query(
            "SELECT a.attname::text, s.oid::regclass::text, d.deptype::text, a.attidentity::text, \
             format('INCREMENT BY %s MINVALUE %s MAXVALUE %s START WITH %s CACHE %s %s', q.seqincrement, q.seqmin, q.seqmax, q.seqstart, q.seqcache, CASE WHEN q.seqcycle THEN 'CYCLE' ELSE 'NO CYCLE' END) \
             FROM pg_depend d JOIN pg_class s ON s.oid = d.objid AND s.relkind = 'S' \
             JOIN pg_sequence q ON q.seqrelid = s.oid \
             JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid \
             WHERE d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_class'::regclass \
             AND d.refobjid = $1::regclass AND d.deptype IN ('a', 'i') ORDER BY a.attnum",
        )
        .bind(source)
        .fetch_all(&mut *conn)
        .await?
        {
            let name: String = r.try_get(1)?;
            let (last_value, is_called): (i64, bool) = sqlx::query_as(stmt(format!(
                "SELECT last_value, is_called FROM {name}"
            )))
            .fetch_one(&mut *conn)
            .await?;
            out.sequences.push(Sequence {
                column: r.try_get(0)?,
                name,
                dep: r.try_get(2)?,
                identity: r.try_get(3)?,
                options: r.try_get(4)?,
                last_value,
                is_called,
            });
        }
        for r in sqlx::query(
            "SELECT a.attname::text, a.attidentity::text, ad.oid IS NOT NULL \
             FROM pg_attribute a LEFT JOIN pg_attrdef ad ON ad.adrelid = a.attrelid AND ad.adnum = a.attnum \
             WHERE a.attrelid = $1::regclass AND a.attnum > 0 AND NOT a.attisdropped",
        )
        .bind(target)
        .fetch_all(&mut *conn)
        .await?
        {
            out.target
                .insert(r.try_get(0)?, (r.try_get(1)?, r.try_get(2)?));
        }
        let defaults: Vec<(String, String)> = sqlx::query_as(
            "SELECT a.attname::text, pg_get_expr(ad.adbin, ad.adrelid) FROM pg_attrdef ad \
             JOIN pg_attribute a ON a.attrelid = ad.adrelid AND a.attnum = ad.adnum \
             WHERE ad.adrelid = $1::regclass AND NOT a.attisdropped AND a.attidentity = '' \
             AND pg_get_expr(ad.adbin, ad.adrelid) LIKE 'nextval(%' ORDER BY a.attnum",
        )
        .bind(source)
        .fetch_all(&mut *conn)
        .await?;
        out.defaults = defaults
            .into_iter()
            .filter(|(c, _)| {
                out.target
                    .get(c)
                    .is_some_and(|(id, has)| id.is_empty() && !has)
            })
            .collect();
        let views: Vec<(String, String, String, String)> = sqlx::query_as(
            "SELECT DISTINCT v.oid::regclass::text, v.relkind::text, \
             CASE WHEN v.relkind = 'v' THEN pg_get_viewdef(v.oid) ELSE '' END, \
             COALESCE(array_to_string(v.reloptions, ', '), '') \
             FROM pg_depend d JOIN pg_rewrite r ON r.oid = d.objid JOIN pg_class v ON v.oid = r.ev_class \
             WHERE d.classid = 'pg_rewrite'::regclass AND d.refclassid = 'pg_class'::regclass \
             AND d.refobjid = $1::regclass AND v.oid <> $1::regclass ORDER BY 1",
        )
        .bind(source)
        .fetch_all(&mut *conn)
        .await?;
        for (name, kind, definition, options) in views {
            let restore = if kind == "v" {
                sqlx::query_scalar(RESTORE_VIEW)
                    .bind(&name)
                    .fetch_all(&mut *conn)
                    .await?
            } else {
                Vec::new()
            };
            out.views.push(View {
                name,
                kind,
                definition: definition.trim_end().trim_end_matches(';').to_string(),
                options,
                restore,
            });
        }
        for r in sqlx::query(
            "SELECT c.conname::text, c.conrelid::regclass::text, pg_get_constraintdef(c.oid), c.convalidated \
             FROM pg_constraint c WHERE c.contype = 'f' AND c.confrelid = $1::regclass \
             AND c.conrelid <> $1::regclass AND c.conparentid = 0 ORDER BY 2, 1",
        )
        .bind(source)
        .fetch_all(&mut *conn)
        .await?
        {
            let definition: String = r.try_get(2)?;
            out.keys.push(ForeignKey {
                name: r.try_get(0)?,
                table: r.try_get(1)?,
                definition: definition
                    .trim_end()
                    .trim_end_matches("NOT VALID")
                    .trim_end()
                    .to_string(),
                validated: r.try_get(3)?,
            });
        }
        Ok(out)
    }

    /// Refuses what cannot follow the table, before anything is changed: a materialized
    /// view, a sequence whose column the new table lacks or gives its own default.
    pub(super) fn check(&self, source: &str) -> Result<()> {
        for v in &self.views {
            if v.kind == "m" {
                return Err(refuse(format!(
                    "materialized view {} depends on table {source}: it cannot be moved to the new table (its rows would have to be computed again under the lock); drop it before the cut-over and create it again after",
                    v.name
                )));
            } else if v.kind != "v" {
                return Err(refuse(format!(
                    "a rule of {} reads table {source}: it cannot be moved to the new table; drop it before the cut-over and create it again after",
                    v.name
                )));
            }
        }
        for s in &self.sequences {
            match self.target.get(&s.column) {
                None => {
                    return Err(refuse(format!(
                        "sequence {} belongs to column {} of table {source}, which the new table lacks",
                        s.name, s.column
                    )));
                }
                Some((id, true)) if id.is_empty() && s.dep == "i" => {
                    return Err(refuse(format!(
                        "column {} of table {source} is an identity column (sequence {}), and the new table's column {} has a default of its own: declare it `identity` in [target.columns], or drop the default",
                        s.column, s.name, s.column
                    )));
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Moves the dependents to `new` (the new table, now under the source's name) from
    /// `old` (the old table, renamed), on `conn` inside the cut-over's transaction.
    /// Returns what was done, one line each.
    pub(super) async fn apply(
        &self,
        conn: &mut PgConnection,
        old: &str,
        new: &str,
    ) -> std::result::Result<Vec<String>, Refused> {
        let mut done = Vec::new();
        for s in &self.sequences {
            let column = crate::sql::quote_ident(&s.column);
            let (identity, _) = self.target.get(&s.column).cloned().unwrap_or_default();
            if !identity.is_empty() {
                // The new column has a sequence of its own: it continues where the old
                // one stood.
                sqlx::query("SELECT setval(pg_get_serial_sequence($1, $2), $3, $4)")
                    .bind(new)
                    .bind(&s.column)
                    .bind(s.last_value)
                    .bind(s.is_called)
                    .execute(&mut *conn)
                    .await
                    .map_err(|e| Refused::sequence(s, e))?;
                done.push(format!(
                    "identity column {} continues from {} (sequence {})",
                    s.column, s.last_value, s.name
                ));
            } else if s.dep == "i" {
                let kind = if s.identity == "a" {
                    "ALWAYS"
                } else {
                    "BY DEFAULT"
                };
                for sql in [
                    format!("ALTER TABLE {old} ALTER COLUMN {column} DROP IDENTITY"),
                    format!(
                        "ALTER TABLE {new} ALTER COLUMN {column} ADD GENERATED {kind} AS IDENTITY (SEQUENCE NAME {} {})",
                        s.name, s.options
                    ),
                ] {
                    sqlx::query(stmt(sql))
                        .execute(&mut *conn)
                        .await
                        .map_err(|e| Refused::sequence(s, e))?;
                }
                sqlx::query("SELECT setval($1::regclass, $2, $3)")
                    .bind(&s.name)
                    .bind(s.last_value)
                    .bind(s.is_called)
                    .execute(&mut *conn)
                    .await
                    .map_err(|e| Refused::sequence(s, e))?;
                done.push(format!(
                    "identity column {} moved with its sequence {} (at {})",
                    s.column, s.name, s.last_value
                ));
            } else {
                sqlx::query(stmt(format!(
                    "ALTER SEQUENCE {} OWNED BY {new}.{column}",
                    s.name
                )))
                .execute(&mut *conn)
                .await
                .map_err(|e| Refused::sequence(s, e))?;
                done.push(format!(
                    "sequence {} now belongs to column {}",
                    s.name, s.column
                ));
            }
        }
        for (column, expr) in &self.defaults {
            sqlx::query(stmt(format!(
                "ALTER TABLE {new} ALTER COLUMN {} SET DEFAULT {expr}",
                crate::sql::quote_ident(column)
            )))
            .execute(&mut *conn)
            .await
            .map_err(|e| Refused::new(format!("the default {expr} of column {column}"), e))?;
            done.push(format!("column {column} defaults to {expr}"));
        }
        for v in &self.views {
            done.push(self.view(conn, v).await?);
        }
        for k in &self.keys {
            for sql in [
                format!(
                    "ALTER TABLE {} DROP CONSTRAINT {}",
                    k.table,
                    crate::sql::quote_ident(&k.name)
                ),
                format!(
                    "ALTER TABLE {} ADD CONSTRAINT {} {} NOT VALID",
                    k.table,
                    crate::sql::quote_ident(&k.name),
                    k.definition
                ),
            ] {
                sqlx::query(stmt(sql))
                    .execute(&mut *conn)
                    .await
                    .map_err(|e| {
                        Refused::new(
                            format!(
                                "foreign key {} of table {} ({})",
                                k.name, k.table, k.definition
                            ),
                            e,
                        )
                    })?;
            }
            done.push(format!(
                "foreign key {} of table {} references the new table",
                k.name, k.table
            ));
        }
        Ok(done)
    }

    /// Replaces view `v`; if its columns' types changed, drops and creates it again and
    /// restores what the drop lost.
    async fn view(
        &self,
        conn: &mut PgConnection,
        v: &View,
    ) -> std::result::Result<String, Refused> {
        let with = if v.options.is_empty() {
            String::new()
        } else {
            format!(" WITH ({})", v.options)
        };
        let create = |how: &str| format!("{how} VIEW {}{with} AS {}", v.name, v.definition);
        let failed = |e| Refused::new(format!("view {}", v.name), e);
        sqlx::query("SAVEPOINT rowshift_view")
            .execute(&mut *conn)
            .await
            .map_err(failed)?;
        match sqlx::query(stmt(create("CREATE OR REPLACE")))
            .execute(&mut *conn)
            .await
        {
            Ok(_) => {
                sqlx::query("RELEASE SAVEPOINT rowshift_view")
                    .execute(&mut *conn)
                    .await
                    .map_err(failed)?;
                return Ok(format!("view {} reads the new table", v.name));
            }
            // invalid_table_definition: a column's type or name would change.
            Err(e) if code(&e).as_deref() == Some("42P16") => {}
            Err(e) => return Err(failed(e)),
        }
        sqlx::query("ROLLBACK TO SAVEPOINT rowshift_view")
            .execute(&mut *conn)
            .await
            .map_err(failed)?;
        let mut statements = vec![format!("DROP VIEW {}", v.name), create("CREATE")];
        statements.extend(v.restore.iter().cloned());
        for sql in statements {
            sqlx::query(stmt(sql))
                .execute(&mut *conn)
                .await
                .map_err(failed)?;
        }
        Ok(format!(
            "view {} created again on the new table (its column types changed), with its owner, privileges, comments and triggers",
            v.name
        ))
    }

    /// Validates the foreign keys added `NOT VALID` (those that were valid before), after
    /// the commit. Returns one line for each that fails, which stays `NOT VALID`.
    pub(super) async fn validate(&self, pool: &PgPool) -> Vec<String> {
        let mut failed = Vec::new();
        for k in self.keys.iter().filter(|k| k.validated) {
            let sql = format!(
                "ALTER TABLE {} VALIDATE CONSTRAINT {}",
                k.table,
                crate::sql::quote_ident(&k.name)
            );
            if let Err(e) = sqlx::query(stmt(sql)).execute(pool).await {
                failed.push(format!(
                    "foreign key {} of table {} ({}) did not validate against the new table: {}; it stays NOT VALID (new rows are checked, old ones are not)",
                    k.name,
                    k.table,
                    k.definition,
                    server_words(&e)
                ));
            }
        }
        failed
    }
}

/// What [`Dependents::apply`] could not move, and the server's error.
#[derive(Debug)]
pub(super) struct Refused {
    what: String,
    error: sqlx::Error,
}

impl Refused {
    fn new(what: String, error: sqlx::Error) -> Refused {
        Refused { what, error }
    }

    fn sequence(s: &Sequence, e: sqlx::Error) -> Refused {
        Refused::new(format!("sequence {} of column {}", s.name, s.column), e)
    }

    /// The server's error, when it is a lock that was not had in time (the cut-over is
    /// tried again).
    pub(super) fn lock_timeout(&self) -> Option<&sqlx::Error> {
        (code(&self.error).as_deref() == Some("55P03")).then_some(&self.error)
    }

    /// The refusal.
    pub(super) fn into_error(self, source: &str) -> Error {
        refuse(format!(
            "{} depends on table {source} and could not be moved to the new table: {}",
            self.what,
            server_words(&self.error)
        ))
    }
}

/// The server's message, with its detail (which names the key of a failed check).
fn server_words(e: &sqlx::Error) -> String {
    e.as_database_error().map_or_else(
        || e.to_string(),
        |d| match d.try_downcast_ref::<sqlx::postgres::PgDatabaseError>() {
            Some(pg) => match pg.detail() {
                Some(more) => format!("{} ({more})", pg.message()),
                None => pg.message().to_string(),
            },
            None => d.message().to_string(),
        },
    )
}

fn code(e: &sqlx::Error) -> Option<String> {
    e.as_database_error()
        .and_then(|d| d.code())
        .map(|c| c.into_owned())
}

/// The statements that give view `$1` back what a `DROP VIEW` takes with it: its owner,
/// privileges, comments, column defaults, triggers and rules (read with an empty
/// `search_path`, so every name is qualified).
const RESTORE_VIEW: &str = "SELECT format('ALTER VIEW %s OWNER TO %I', c.oid::regclass, pg_get_userbyid(c.relowner)) FROM pg_class c WHERE c.oid = $1::regclass \
UNION ALL SELECT format('GRANT %s ON %s TO %s%s', x.privilege_type, c.oid::regclass, CASE WHEN x.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(x.grantee)) END, CASE WHEN x.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END) FROM pg_class c, aclexplode(c.relacl) x WHERE c.oid = $1::regclass AND x.grantee <> c.relowner \
UNION ALL SELECT format('COMMENT ON VIEW %s IS %L', $1::regclass, obj_description($1::regclass, 'pg_class')) WHERE obj_description($1::regclass, 'pg_class') IS NOT NULL \
UNION ALL SELECT format('COMMENT ON COLUMN %s.%I IS %L', $1::regclass, a.attname, col_description(a.attrelid, a.attnum)) FROM pg_attribute a WHERE a.attrelid = $1::regclass AND a.attnum > 0 AND col_description(a.attrelid, a.attnum) IS NOT NULL \
UNION ALL SELECT format('ALTER VIEW %s ALTER COLUMN %I SET DEFAULT %s', $1::regclass, a.attname, pg_get_expr(ad.adbin, ad.adrelid)) FROM pg_attrdef ad JOIN pg_attribute a ON a.attrelid = ad.adrelid AND a.attnum = ad.adnum WHERE ad.adrelid = $1::regclass \
UNION ALL SELECT pg_get_triggerdef(t.oid) FROM pg_trigger t WHERE t.tgrelid = $1::regclass AND NOT t.tgisinternal \
UNION ALL SELECT pg_get_ruledef(r.oid) FROM pg_rewrite r WHERE r.ev_class = $1::regclass AND r.rulename <> '_RETURN'";
