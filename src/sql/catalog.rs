//! What a database's catalog says about a schema and a table beyond column types, in one
//! shape for every database: each one's `catalog.rs` (in `crate::db`) fills it in, and
//! `rowshift init` reads it once, whatever the database.

/// A schema's (or database's, or file's) tables, and its other objects.
#[derive(Debug, Clone, Default)]
pub struct SchemaObjects {
    /// Tables, by name.
    pub tables: Vec<String>,
    /// Objects a migration set cannot carry, as `(kind, name)`: `("view", "active_users")`,
    /// `("trigger", "audit on orders")`.
    pub others: Vec<(String, String)>,
}

/// A column's default and whether it numbers new rows.
#[derive(Debug, Clone, Default)]
pub struct ColumnDetail {
    /// Name.
    pub name: String,
    /// The default as the database writes it, when it has one that is a value or an
    /// expression (not a sequence that numbers rows: that is `identity`).
    pub default: Option<String>,
    /// Numbers new rows: PostgreSQL identity or serial, MySQL `AUTO_INCREMENT`, SQLite's
    /// rowid key.
    pub identity: bool,
    /// A generated column, with its expression where the catalog gives it (empty where it
    /// does not).
    pub generated: Option<String>,
    /// MySQL's `ON UPDATE CURRENT_TIMESTAMP`.
    pub on_update: bool,
    /// An enum's labels, in their order.
    pub labels: Option<Vec<String>>,
}

/// An index of the table other than its primary key's.
#[derive(Debug, Clone, Default)]
pub struct IndexDetail {
    /// Name, as a declaration can use it.
    pub name: String,
    /// Key columns in order; `None` for an expression.
    pub columns: Vec<Option<String>>,
    /// Unique.
    pub unique: bool,
    /// What makes it other than a plain list of ascending columns (partial, a method other
    /// than btree, descending, a prefix, included columns), in words; empty when nothing
    /// does.
    pub unusual: Vec<String>,
    /// Its definition, for messages, where the catalog gives one.
    pub definition: Option<String>,
}

/// A foreign key.
#[derive(Debug, Clone, Default)]
pub struct ForeignKeyDetail {
    /// Constraint name, where the database names them.
    pub name: Option<String>,
    /// Referencing columns.
    pub columns: Vec<String>,
    /// The referenced table's schema (PostgreSQL) or database (MySQL); `None` in SQLite.
    pub schema: Option<String>,
    /// The referenced table.
    pub table: String,
    /// Referenced columns.
    pub references: Vec<String>,
    /// `ON DELETE` action in SQL words, `None` for NO ACTION.
    pub on_delete: Option<&'static str>,
    /// `ON UPDATE` action.
    pub on_update: Option<&'static str>,
}

/// What a table declares beyond its column types.
#[derive(Debug, Clone, Default)]
pub struct TableDetails {
    /// One per column, in order.
    pub columns: Vec<ColumnDetail>,
    /// Indexes, but the primary key's.
    pub indexes: Vec<IndexDetail>,
    /// Foreign keys.
    pub foreign_keys: Vec<ForeignKeyDetail>,
    /// Check constraints: name (where given) and the expression inside `CHECK (...)`.
    pub checks: Vec<(Option<String>, String)>,
    /// Constraints no declaration holds (PostgreSQL's exclusion constraints and constraint
    /// triggers): name and definition.
    pub others: Vec<(String, String)>,
    /// Why the checks could not be read, where the database keeps them only as text
    /// (SQLite's `CREATE TABLE`) and it did not parse.
    pub unread_checks: Option<String>,
}
