//! What `rowshift init` reads of a schema beyond a table's columns: the schema's tables
//! and the objects a migration set cannot carry (views, routines, triggers, sequences of
//! their own), and a table's defaults, identity columns, indexes, foreign keys and checks.

use sqlx::Row;
use sqlx::postgres::PgPool;

use crate::Result;
use crate::db::postgres::errors::error as db_error;
use crate::sql::catalog::{
    ColumnDetail, ForeignKeyDetail, IndexDetail, SchemaObjects, TableDetails,
};

/// The relation `$1.$2`'s oid, as a subquery.
const OID: &str = "(SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                    WHERE n.nspname = $1 AND c.relname = $2)";

/// Reads the tables and other objects of `schema`.
pub async fn schema_objects(pool: &PgPool, schema: &str, shown: &str) -> Result<SchemaObjects> {
    let rows = sqlx::query(
        "SELECT c.relname::text, c.relkind::text FROM pg_class c \
         JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname = $1 AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S') AND NOT c.relispartition \
           AND NOT (c.relkind = 'S' AND EXISTS (SELECT 1 FROM pg_depend d \
                    WHERE d.objid = c.oid AND d.classid = 'pg_class'::regclass AND d.deptype IN ('a', 'i'))) \
         ORDER BY c.relname",
    )
    .bind(schema)
    .fetch_all(pool)
    .await
    .map_err(|e| db_error(shown, e))?;
    let mut out = SchemaObjects::default();
    for r in &rows {
        let name: String = r.try_get(0).map_err(|e| db_error(shown, e))?;
        let kind: String = r.try_get(1).map_err(|e| db_error(shown, e))?;
        let kind = match kind.as_str() {
            "r" | "p" => {
                out.tables.push(name);
                continue;
            }
            "v" => "view",
            "m" => "materialized view",
            "f" => "foreign table",
            _ => "sequence",
        };
        out.others.push((kind.to_string(), name));
    }
    let routines: Vec<(String, String)> = sqlx::query_as(
        "SELECT CASE p.prokind WHEN 'p' THEN 'procedure' WHEN 'a' THEN 'aggregate' ELSE 'function' END, \
                p.proname::text FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace \
         WHERE n.nspname = $1 AND NOT EXISTS (SELECT 1 FROM pg_depend d \
               WHERE d.objid = p.oid AND d.deptype = 'e') ORDER BY 2",
    )
    .bind(schema)
    .fetch_all(pool)
    .await
    .map_err(|e| db_error(shown, e))?;
    out.others.extend(routines);
    let triggers: Vec<(String, String)> = sqlx::query_as(
        "SELECT 'trigger', t.tgname::text || ' on ' || c.relname::text FROM pg_trigger t \
         JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname = $1 AND NOT t.tgisinternal ORDER BY 2",
    )
    .bind(schema)
    .fetch_all(pool)
    .await
    .map_err(|e| db_error(shown, e))?;
    out.others.extend(triggers);
    Ok(out)
}

/// A referential action code of `pg_constraint` in SQL words (`None`: NO ACTION).
fn action(code: &str) -> Option<&'static str> {
    match code {
        "r" => Some("RESTRICT"),
        "c" => Some("CASCADE"),
        "n" => Some("SET NULL"),
        "d" => Some("SET DEFAULT"),
        _ => None,
    }
}

/// Reads the defaults, identity columns, indexes, foreign keys and checks of `schema.table`.
pub async fn table_details(
    pool: &PgPool,
    schema: &str,
    table: &str,
    shown: &str,
) -> Result<TableDetails> {
    let err = |e| db_error(shown, e);
    let mut out = TableDetails::default();
    let rows = sqlx::query(crate::sql::stmt(format!(
        "SELECT a.attname::text, pg_get_expr(d.adbin, d.adrelid), a.attidentity::text, a.attgenerated::text, \
                CASE WHEN t.typtype = 'e' THEN ARRAY(SELECT e.enumlabel::text FROM pg_enum e \
                     WHERE e.enumtypid = t.oid ORDER BY e.enumsortorder) END \
         FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid \
         LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum \
         WHERE a.attrelid = {OID} AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum"
    )))
    .bind(schema)
    .bind(table)
    .fetch_all(pool)
    .await
    .map_err(err)?;
    for r in &rows {
        let default: Option<String> = r.try_get(1).map_err(err)?;
        let identity: String = r.try_get(2).map_err(err)?;
        let generated: String = r.try_get(3).map_err(err)?;
        let is_generated = !generated.is_empty();
        // A serial column's default is its sequence: it numbers rows like an identity.
        let serial = !is_generated
            && default
                .as_deref()
                .is_some_and(|d| d.starts_with("nextval("));
        out.columns.push(ColumnDetail {
            name: r.try_get(0).map_err(err)?,
            default: default.clone().filter(|_| !is_generated && !serial),
            identity: !identity.is_empty() || serial,
            generated: default.filter(|_| is_generated),
            on_update: false,
            labels: r.try_get(4).map_err(err)?,
        });
    }
    let rows = sqlx::query(crate::sql::stmt(format!(
        "SELECT ic.relname::text, i.indisunique, i.indpred IS NOT NULL, am.amname::text, \
                ARRAY(SELECT a.attname::text FROM unnest(i.indkey::int2[]) WITH ORDINALITY k(n, o) \
                      LEFT JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.n \
                      WHERE k.o <= i.indnkeyatts ORDER BY k.o), \
                i.indnatts > i.indnkeyatts, \
                EXISTS (SELECT 1 FROM unnest(i.indoption::int2[]) o WHERE o & 1 = 1), \
                pg_get_indexdef(i.indexrelid) \
         FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid JOIN pg_am am ON am.oid = ic.relam \
         WHERE i.indrelid = {OID} AND NOT i.indisprimary ORDER BY 1"
    )))
    .bind(schema)
    .bind(table)
    .fetch_all(pool)
    .await
    .map_err(err)?;
    for r in &rows {
        let mut unusual = Vec::new();
        if r.try_get::<bool, _>(2).map_err(err)? {
            unusual.push("partial (it has a WHERE clause)".to_string());
        }
        let method: String = r.try_get(3).map_err(err)?;
        if method != "btree" {
            unusual.push(format!("a {method} index"));
        }
        if r.try_get::<bool, _>(5).map_err(err)? {
            unusual.push("it has INCLUDE columns".to_string());
        }
        if r.try_get::<bool, _>(6).map_err(err)? {
            unusual.push("a column is descending".to_string());
        }
        out.indexes.push(IndexDetail {
            name: r.try_get(0).map_err(err)?,
            unique: r.try_get(1).map_err(err)?,
            columns: r.try_get(4).map_err(err)?,
            unusual,
            definition: Some(r.try_get(7).map_err(err)?),
        });
    }
    let rows = sqlx::query(crate::sql::stmt(format!(
        "SELECT c.conname::text, \
                ARRAY(SELECT a.attname::text FROM unnest(c.conkey) WITH ORDINALITY k(n, o) \
                      JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.n ORDER BY k.o), \
                rn.nspname::text, rc.relname::text, \
                ARRAY(SELECT a.attname::text FROM unnest(c.confkey) WITH ORDINALITY k(n, o) \
                      JOIN pg_attribute a ON a.attrelid = c.confrelid AND a.attnum = k.n ORDER BY k.o), \
                c.confdeltype::text, c.confupdtype::text \
         FROM pg_constraint c JOIN pg_class rc ON rc.oid = c.confrelid \
         JOIN pg_namespace rn ON rn.oid = rc.relnamespace \
         WHERE c.contype = 'f' AND c.conrelid = {OID} ORDER BY 1"
    )))
    .bind(schema)
    .bind(table)
    .fetch_all(pool)
    .await
    .map_err(err)?;
    for r in &rows {
        let del: String = r.try_get(5).map_err(err)?;
        let upd: String = r.try_get(6).map_err(err)?;
        out.foreign_keys.push(ForeignKeyDetail {
            name: Some(r.try_get(0).map_err(err)?),
            columns: r.try_get(1).map_err(err)?,
            schema: Some(r.try_get(2).map_err(err)?),
            table: r.try_get(3).map_err(err)?,
            references: r.try_get(4).map_err(err)?,
            on_delete: action(&del),
            on_update: action(&upd),
        });
    }
    let rows: Vec<(String, String, String)> = sqlx::query_as(crate::sql::stmt(format!(
        "SELECT conname::text, contype::text, pg_get_constraintdef(oid) FROM pg_constraint \
         WHERE conrelid = {OID} AND contype IN ('c', 'x', 't') ORDER BY 1"
    )))
    .bind(schema)
    .bind(table)
    .fetch_all(pool)
    .await
    .map_err(err)?;
    for (name, kind, def) in rows {
        let inner = def
            .strip_prefix("CHECK ")
            .map(|s| s.trim_end_matches(" NOT VALID").trim());
        match (kind.as_str(), inner) {
            ("c", Some(expr)) => out.checks.push((Some(name), expr.to_string())),
            _ => out.others.push((name, def)),
        }
    }
    Ok(out)
}
