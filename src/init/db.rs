//! `rowshift init --from postgres://…` and `mysql://…`: a table's columns, primary key
//! and type mappings, from the catalogs the sources read.

use arrow::datatypes::DataType;

use super::{Column, InitOptions, infer};
use crate::config::{DbOptions, Location};
use crate::db::mysql::{MyColumn, MyKind};
use crate::db::postgres::{PgColumn, PgKind};
use crate::runtime::IoRuntime;
use crate::types::ColumnType;
use crate::{Error, Result};

/// A `[source.types]` line init writes, and why.
pub(crate) struct SourceType {
    /// The column.
    pub column: String,
    /// The type it is read as.
    pub ty: ColumnType,
    /// The comment above the line.
    pub why: String,
    /// Whether the column is copied to the target (else its line there is a comment).
    pub copied: bool,
}

/// What a server table is made of.
pub(crate) struct Found {
    pub columns: Vec<Column>,
    pub key: Vec<String>,
    pub table: String,
    /// The schema (PostgreSQL) to write in [source], when it is not the default.
    pub schema: Option<String>,
    /// The schema or database the table is in.
    pub in_schema: String,
    pub types: Vec<SourceType>,
    pub notes: Vec<String>,
}

/// PostgreSQL types without a rowshift type whose text form is the value itself, so a
/// text column holds them without loss.
const PG_TEXT_TYPES: &[&str] = &[
    "interval", "inet", "cidr", "macaddr", "macaddr8", "xml", "citext", "bit", "varbit", "timetz",
    "numeric",
];

/// MySQL types without a rowshift type that read as text without loss (spatial values
/// as WKT, decimals wider than an Arrow decimal as their digits).
const MY_TEXT_TYPES: &[&str] = &[
    "decimal",
    "numeric",
    "geometry",
    "point",
    "linestring",
    "polygon",
    "multipoint",
    "multilinestring",
    "multipolygon",
    "geometrycollection",
    "geomcollection",
];

/// Reads the table's columns and primary key.
pub(crate) fn server_columns(
    opts: &InitOptions,
    location: &Location,
    io: &IoRuntime,
) -> Result<Found> {
    let Some(given) = opts.table.clone() else {
        return Err(Error::Unsupported(
            "name the table with --table (SCHEMA.TABLE for a PostgreSQL schema other than public), or pass --set DIR to write a migration set of every table"
                .into(),
        ));
    };
    match location {
        Location::Postgres { url, schema } => {
            let (schema, table) = match (&opts.schema, given.split_once('.')) {
                (Some(s), _) => (s.clone(), given.clone()),
                (None, Some((s, t))) => (s.to_string(), t.to_string()),
                (None, None) => (schema.clone(), given.clone()),
            };
            let shown = url.shown();
            let pool = crate::db::postgres::connect(io, url, &DbOptions::default())?;
            let Some(cols) = io.block_on(crate::db::postgres::table_columns(
                &pool, &schema, &table, &shown,
            ))?
            else {
                let names =
                    io.block_on(crate::db::postgres::table_names(&pool, &schema, &shown))?;
                return Err(Error::data(
                    &shown,
                    format!(
                        "table `{schema}.{table}` does not exist; tables are: {}",
                        names.join(", ")
                    ),
                ));
            };
            let key = io.block_on(crate::db::postgres::primary_key(
                &pool, &schema, &table, &shown,
            ))?;
            let mut found = Found {
                columns: Vec::new(),
                key: Vec::new(),
                table: table.clone(),
                schema: (schema != "public").then_some(schema.clone()),
                in_schema: schema.clone(),
                types: Vec::new(),
                notes: Vec::new(),
            };
            for c in &cols {
                add_column(&mut found, &c.name, !c.not_null, pg_type(c)?);
            }
            found.key = choose_key(opts, key, &format!("{schema}.{table}"))?;
            Ok(found)
        }
        Location::Mysql { url, schema } => {
            let (database, table) = match (&opts.schema, given.split_once('.')) {
                (Some(s), _) => (s.clone(), given.clone()),
                (None, Some((s, t))) => (s.to_string(), t.to_string()),
                (None, None) => (schema.clone(), given.clone()),
            };
            let shown = url.shown();
            let pool = crate::db::mysql::connect(io, url, &DbOptions::default())?;
            let Some(cols) = io.block_on(crate::db::mysql::table_columns(
                &pool, &database, &table, &shown,
            ))?
            else {
                let names = io.block_on(crate::db::mysql::table_names(&pool, &database, &shown))?;
                return Err(Error::data(
                    &shown,
                    format!(
                        "table `{database}.{table}` does not exist; tables are: {}",
                        names.join(", ")
                    ),
                ));
            };
            let key = io.block_on(crate::db::mysql::primary_key(
                &pool, &database, &table, &shown,
            ))?;
            let mut found = Found {
                columns: Vec::new(),
                key: Vec::new(),
                table: table.clone(),
                schema: (&database != schema).then_some(database.clone()),
                in_schema: database.clone(),
                types: Vec::new(),
                notes: Vec::new(),
            };
            for c in &cols {
                add_column(&mut found, &c.name, !c.not_null, my_type(c)?);
            }
            found.key = choose_key(opts, key, &format!("{database}.{table}"))?;
            Ok(found)
        }
        _ => Err(Error::Internal("server_columns on a file source".into())),
    }
}

/// How init maps one column.
enum Mapped {
    /// A rowshift type, read as the source reads it.
    Type(ColumnType),
    /// Read as text through `[source.types]`: the reason, and whether the text is the
    /// value without loss (then it is copied).
    Text { why: String, copied: bool },
}

fn add_column(found: &mut Found, name: &str, nullable: bool, mapped: Mapped) {
    match mapped {
        Mapped::Type(ty) => found.columns.push(Column {
            name: name.to_string(),
            ty,
            nullable,
            marker: None,
        }),
        Mapped::Text { why, copied } => {
            found.types.push(SourceType {
                column: name.to_string(),
                ty: ColumnType::Text,
                why,
                copied,
            });
            if copied {
                found.columns.push(Column {
                    name: name.to_string(),
                    ty: ColumnType::Text,
                    nullable,
                    marker: None,
                });
            }
        }
    }
}

fn choose_key(opts: &InitOptions, pk: Vec<String>, table: &str) -> Result<Vec<String>> {
    let key = if opts.key.is_empty() {
        pk
    } else {
        opts.key.clone()
    };
    if key.is_empty() {
        return Err(Error::Unsupported(format!(
            "no key found: table `{table}` has no primary key. rowshift splits a table into ranges of a unique, non-null key; pass --key COLUMN (repeat it for a composite key) to name it"
        )));
    }
    Ok(key)
}

fn pg_type(c: &PgColumn) -> Result<Mapped> {
    match PgKind::for_column(c) {
        // An unconstrained numeric reads as its exact text; a decimal type would need a
        // precision and scale the column does not promise.
        Ok((PgKind::NumericText, _)) => Ok(Mapped::Type(ColumnType::Text)),
        Ok((PgKind::Text, _)) if c.type_name == "varchar" && c.typmod > 4 => {
            Ok(Mapped::Type(ColumnType::Varchar((c.typmod - 4) as u32)))
        }
        Ok((kind, _)) => Ok(Mapped::Type(arrow_type(&kind.arrow_type(), &c.name)?)),
        Err(why) => {
            let copied = PG_TEXT_TYPES.contains(&c.type_name.as_str());
            Ok(Mapped::Text {
                why: text_why(&why, copied),
                copied,
            })
        }
    }
}

fn my_type(c: &MyColumn) -> Result<Mapped> {
    // An ENUM is its labels' text: as long as the longest, which its check keeps to.
    if let Some(labels) = crate::db::mysql::enum_labels(&c.column_type) {
        let longest = labels.iter().map(|l| l.chars().count()).max().unwrap_or(1);
        return Ok(Mapped::Type(ColumnType::Varchar(longest.max(1) as u32)));
    }
    match MyKind::for_column(c) {
        // A key of text must have a length in a MySQL target; keep the declared one.
        Ok((MyKind::Text, _)) if matches!(c.data_type.as_str(), "varchar" | "char") => Ok(
            Mapped::Type(c.column_type.parse().unwrap_or(ColumnType::Text)),
        ),
        Ok((_, t)) => Ok(Mapped::Type(arrow_type(&t, &c.name)?)),
        Err(why) => {
            let copied = MY_TEXT_TYPES.contains(&c.data_type.as_str());
            Ok(Mapped::Text {
                why: text_why(&why, copied),
                copied,
            })
        }
    }
}

fn text_why(why: &str, copied: bool) -> String {
    if copied {
        format!("{why}; its text form holds the value, so it is read and copied as text")
    } else {
        format!(
            "{why}, and no rowshift type maps it; it is read as text only so the table can be read (uncomment its line in [target.columns] to copy that text)"
        )
    }
}

fn arrow_type(t: &DataType, name: &str) -> Result<ColumnType> {
    infer(None, t, name)
}
