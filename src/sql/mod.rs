//! What every SQL database's code shares and none owns: identifier quoting, keyset
//! conditions over one or more key columns, the order-independent row digest, and the
//! pool settings. It names no database: each one's own code is in `crate::db`.

pub mod catalog;
pub mod dialect;
pub mod keyset;
pub mod locks;
pub mod trace;

/// Quotes an identifier from a pipeline file for SQL: `a"b` becomes `"a""b"`.
///
/// Every table and column name that reaches a statement goes through this, so names with
/// spaces, quotes, mixed case or reserved words work and cannot inject SQL.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `text` as a standard SQL string literal (`'` doubled). For names rowshift makes
/// itself, which hold no backslash (MySQL reads one as an escape).
pub fn quote_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// An order-independent digest of rows as a database sends them: their count and the
/// wrapping sum of a fixed-seed hash of each row's bytes.
///
/// Where the stored values come back as bytes that follow from the values sent, rows
/// read back digest exactly as the rows sent did, in any order, and the read-back needs
/// no decoding into Arrow. Any change to a stored value changes its bytes, and so (but
/// for a 64-bit hash collision) the digest. Each database lays a row's bytes out its own
/// way: binary `COPY` for PostgreSQL; for MySQL, the binary protocol's values, each hashed
/// and folded into the row's hash in column order (see `db::mysql::DigestLayout`).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RowDigest {
    /// Rows digested.
    pub rows: u64,
    /// Wrapping sum of the rows' hashes.
    pub sum: u64,
}

impl RowDigest {
    /// Adds one row, its bytes as the database's layout gives them.
    pub(crate) fn add(&mut self, row: &[u8]) {
        self.rows += 1;
        self.sum = self.sum.wrapping_add(hash_bytes(row));
    }
}

/// The fixed-seed hash digests are built from: the same bytes hash the same in every run
/// and every process.
pub(crate) fn hash_bytes(bytes: &[u8]) -> u64 {
    use std::hash::BuildHasher;
    const SEED: u64 = 0x7073_6368_6563_6b73;
    foldhash::quality::FixedState::with_seed(SEED).hash_one(bytes)
}

/// Pool options every database pool of rowshift starts from.
///
/// No idle timeout and no maximum lifetime: with either, sqlx 0.9.0 runs a maintenance
/// task that can spin at 100% CPU forever after a rare race (an idle counter wraps below
/// zero; sqlx issue 3645, fixed upstream after 0.9.0), which hangs the process at exit.
/// A run is finite, and its connections are in use until it ends, so reaping them buys
/// nothing.
pub(crate) fn pool_options<DB: sqlx::Database>() -> sqlx::pool::PoolOptions<DB> {
    sqlx::pool::PoolOptions::new()
        .idle_timeout(None)
        .max_lifetime(None)
        .min_connections(0)
}

/// Marks a statement built by rowshift as audited for sqlx: every identifier in it went
/// through [`quote_ident`] and every value is a bound parameter.
pub fn stmt(sql: impl Into<String>) -> sqlx::AssertSqlSafe<String> {
    sqlx::AssertSqlSafe(sql.into())
}

#[cfg(test)]
mod tests {
    #[test]
    fn quotes_identifiers() {
        assert_eq!(super::quote_ident("order"), "\"order\"");
        assert_eq!(super::quote_ident("we\"ird name"), "\"we\"\"ird name\"");
    }
}
