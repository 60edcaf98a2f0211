//! Decoding SQLite rows into Arrow batches, strictly: a value whose storage class does not
//! fit its column's type is an error, never a silent conversion. Sources read tables with
//! it, and sinks read back what they wrote.
//!
//! Rows are stepped on the raw `sqlite3` handle behind sqlx's connection
//! ([`sqlx::sqlite::SqliteConnection::lock_handle`]). sqlx's generic rows box every value
//! and cross a channel per row, which held reads under 300,000 rows/s; stepping the
//! statement here reads each value straight into its Arrow builder.

use std::ffi::{CStr, c_int};
use std::marker::PhantomData;
use std::ptr::{self, NonNull};

use arrow::array::{
    ArrayRef, BinaryBuilder, BooleanBuilder, Float64Builder, Int64Builder, StringBuilder,
};
use arrow::datatypes::{DataType, SchemaRef};
use arrow::record_batch::RecordBatch;
use libsqlite3_sys as ffi;
use sqlx::Sqlite;
use sqlx::sqlite::LockedSqliteHandle;

use crate::chunk::KeyValue;
use crate::types::ColumnType;
use crate::types::cast::cast_batch;
use crate::{Error, Result, RowFailure};

/// How a column's values are read, from its declared type's affinity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Int,
    Real,
    Text,
    Blob,
    Bool,
}

impl Kind {
    /// SQLite's affinity rules (section 3.1 of its datatype page), plus BOOLEAN. Columns
    /// with NUMERIC affinity (DECIMAL, DATE, ...) are read as text so nothing is rounded.
    pub(crate) fn from_decl(decl: &str) -> Kind {
        let d = decl.to_ascii_uppercase();
        if d.contains("INT") {
            Kind::Int
        } else if d.contains("CHAR") || d.contains("CLOB") || d.contains("TEXT") || d.is_empty() {
            Kind::Text
        } else if d.contains("BLOB") {
            Kind::Blob
        } else if d.contains("REAL") || d.contains("FLOA") || d.contains("DOUB") {
            Kind::Real
        } else if d.contains("BOOL") {
            Kind::Bool
        } else {
            Kind::Text
        }
    }

    /// How a target column of type `ty` is read back: the inverse of how sinks bind it.
    pub(crate) fn for_type(ty: ColumnType) -> Kind {
        match ty {
            ColumnType::SmallInt | ColumnType::Int | ColumnType::BigInt => Kind::Int,
            ColumnType::Boolean => Kind::Bool,
            ColumnType::Real | ColumnType::Double => Kind::Real,
            ColumnType::Bytes => Kind::Blob,
            _ => Kind::Text,
        }
    }

    pub(crate) fn arrow_type(self) -> DataType {
        match self {
            Kind::Int => DataType::Int64,
            Kind::Real => DataType::Float64,
            Kind::Text => DataType::Utf8,
            Kind::Blob => DataType::Binary,
            Kind::Bool => DataType::Boolean,
        }
    }
}

/// Binds a key value: each part of a composite key to its own parameter.
pub(crate) fn bind_key<'q>(
    q: sqlx::query::Query<'q, Sqlite, sqlx::sqlite::SqliteArguments>,
    v: &KeyValue,
) -> sqlx::query::Query<'q, Sqlite, sqlx::sqlite::SqliteArguments> {
    v.parts().iter().fold(q, |q, p| match p {
        KeyValue::Int(i) => q.bind(*i),
        KeyValue::Text(s) => q.bind(s.clone()),
        KeyValue::Tuple(_) => q.bind(p.to_string()),
    })
}

/// The raw handle of a connection whose lock this thread holds.
///
/// Statements borrow it, so they are all finalized before the lock is given back to
/// sqlx's worker thread, which cannot use the connection meanwhile.
pub(crate) struct RawConn<'h> {
    db: NonNull<ffi::sqlite3>,
    _lock: PhantomData<&'h mut ()>,
}

impl<'h> RawConn<'h> {
    /// The handle behind `lock`.
    pub(crate) fn new(lock: &'h mut LockedSqliteHandle<'_>) -> Self {
        RawConn {
            db: lock.as_raw_handle(),
            _lock: PhantomData,
        }
    }

    /// Prepares `sql` and binds `binds` to its first `?` parameters in order.
    pub(crate) fn prepare(
        &self,
        sql: &str,
        binds: &[KeyValue],
    ) -> Result<RawStatement<'_>, RawError> {
        let len = c_int::try_from(sql.len()).map_err(|_| RawError::misuse("statement too long"))?;
        let mut stmt = ptr::null_mut();
        // SAFETY: `db` is a live handle this thread holds the lock of; `sql` outlives the call.
        let rc = unsafe {
            ffi::sqlite3_prepare_v2(
                self.db.as_ptr(),
                sql.as_ptr().cast(),
                len,
                &mut stmt,
                ptr::null_mut(),
            )
        };
        if rc != ffi::SQLITE_OK {
            return Err(RawError::last(self.db));
        }
        let stmt = NonNull::new(stmt).ok_or_else(|| RawError::misuse("empty statement"))?;
        let mut this = RawStatement {
            stmt,
            db: self.db,
            _conn: PhantomData,
        };
        // A composite key's parts bind to consecutive parameters.
        for (i, value) in binds.iter().flat_map(KeyValue::parts).enumerate() {
            match value {
                KeyValue::Int(v) => this.bind(i, Bind::Int(*v), ffi::SQLITE_TRANSIENT())?,
                KeyValue::Text(t) => this.bind(i, Bind::Text(t), ffi::SQLITE_TRANSIENT())?,
                KeyValue::Tuple(_) => {
                    return Err(RawError::misuse("a key part is itself a tuple"));
                }
            }
        }
        Ok(this)
    }
}

/// A value to bind to a statement parameter.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Bind<'a> {
    Null,
    Int(i64),
    Real(f64),
    Text(&'a str),
    Blob(&'a [u8]),
}

/// A prepared statement on a [`RawConn`].
pub(crate) struct RawStatement<'c> {
    stmt: NonNull<ffi::sqlite3_stmt>,
    db: NonNull<ffi::sqlite3>,
    _conn: PhantomData<&'c ()>,
}

impl RawStatement<'_> {
    /// Binds parameter `index` (from 0). With SQLITE_TRANSIENT SQLite copies text and
    /// blobs; with SQLITE_STATIC it keeps pointers to them, so the caller must keep them
    /// alive until the bindings are cleared.
    fn bind(
        &mut self,
        index: usize,
        value: Bind<'_>,
        keep: ffi::sqlite3_destructor_type,
    ) -> Result<(), RawError> {
        let s = self.stmt.as_ptr();
        let at = c_int::try_from(index + 1).map_err(|_| RawError::misuse("too many parameters"))?;
        let len = |n: usize| {
            c_int::try_from(n).map_err(|_| RawError::misuse("value too long for SQLite"))
        };
        // SAFETY: a live statement; the byte lifetimes are the caller's promise above.
        let rc = unsafe {
            match value {
                Bind::Null => ffi::sqlite3_bind_null(s, at),
                Bind::Int(v) => ffi::sqlite3_bind_int64(s, at, v),
                Bind::Real(v) => ffi::sqlite3_bind_double(s, at, v),
                Bind::Text(t) => {
                    ffi::sqlite3_bind_text(s, at, t.as_ptr().cast(), len(t.len())?, keep)
                }
                Bind::Blob(b) => {
                    ffi::sqlite3_bind_blob(s, at, b.as_ptr().cast(), len(b.len())?, keep)
                }
            }
        };
        if rc != ffi::SQLITE_OK {
            return Err(RawError::last(self.db));
        }
        Ok(())
    }

    /// Advances to the next row; `false` when there is none.
    pub(crate) fn step(&mut self) -> Result<bool, RawError> {
        // SAFETY: a live statement on a handle this thread holds the lock of.
        match unsafe { ffi::sqlite3_step(self.stmt.as_ptr()) } {
            ffi::SQLITE_ROW => Ok(true),
            ffi::SQLITE_DONE => Ok(false),
            _ => Err(RawError::last(self.db)),
        }
    }

    /// Runs a statement that returns no rows with `values` bound to its parameters, then
    /// resets it and clears the bindings. Returns the rows it changed.
    ///
    /// The values are bound without copying them (SQLITE_STATIC): they are borrowed for
    /// this call only, and SQLite holds no pointer to them once it returns.
    pub(crate) fn execute_with(&mut self, values: &[Bind<'_>]) -> Result<u64, RawError> {
        let s = self.stmt.as_ptr();
        // The values outlive the step below, and the bindings are cleared before this
        // function returns: SQLite need not copy them.
        let bound = (values.iter().enumerate())
            .try_for_each(|(i, value)| self.bind(i, *value, ffi::SQLITE_STATIC()));
        let stepped = bound.and_then(|()| self.step());
        // SAFETY: a live statement and handle. Reset and clear even after an error, so no
        // pointer to `values` stays behind.
        let changes = unsafe {
            let changes = ffi::sqlite3_changes64(self.db.as_ptr());
            ffi::sqlite3_reset(s);
            ffi::sqlite3_clear_bindings(s);
            changes
        };
        match stepped? {
            false => Ok(changes as u64),
            true => Err(RawError::misuse("the statement returned rows")),
        }
    }

    /// The value of column `i` of the current row. Valid until the next step.
    pub(crate) fn cell(&self, i: usize) -> Cell<'_> {
        let s = self.stmt.as_ptr();
        let i = i as c_int;
        // SAFETY: called on a row the last `step` produced; SQLite keeps the text and blob
        // buffers until the next step, which needs `&mut self`. Text is read before its
        // length, as SQLite's documentation requires.
        unsafe {
            match ffi::sqlite3_column_type(s, i) {
                ffi::SQLITE_INTEGER => Cell::Int(ffi::sqlite3_column_int64(s, i)),
                ffi::SQLITE_FLOAT => Cell::Real(ffi::sqlite3_column_double(s, i)),
                ffi::SQLITE_TEXT => {
                    let p = ffi::sqlite3_column_text(s, i);
                    Cell::Text(bytes(p.cast(), ffi::sqlite3_column_bytes(s, i)))
                }
                ffi::SQLITE_BLOB => {
                    let p = ffi::sqlite3_column_blob(s, i);
                    Cell::Blob(bytes(p.cast(), ffi::sqlite3_column_bytes(s, i)))
                }
                _ => Cell::Null,
            }
        }
    }
}

impl RawStatement<'_> {
    /// The current row as a JSON object of its stored values (blobs in hex), for the
    /// quarantine: what is in the table, whatever the columns were declared as.
    pub(crate) fn row_json(&self, names: &[&str]) -> String {
        let mut row = serde_json::Map::new();
        for (i, name) in names.iter().enumerate() {
            let value = match self.cell(i) {
                Cell::Null => serde_json::Value::Null,
                Cell::Int(v) => v.into(),
                Cell::Real(v) => v.into(),
                Cell::Text(t) => String::from_utf8_lossy(t).into(),
                Cell::Blob(b) => b
                    .iter()
                    .map(|x| format!("{x:02x}"))
                    .collect::<String>()
                    .into(),
            };
            row.insert(name.to_string(), value);
        }
        serde_json::Value::Object(row).to_string()
    }
}

impl Drop for RawStatement<'_> {
    fn drop(&mut self) {
        // SAFETY: finalized once, while the lock is held (the `RawConn` outlives `self`).
        unsafe {
            ffi::sqlite3_finalize(self.stmt.as_ptr());
        }
    }
}

/// # Safety
/// `p` must point at `len` bytes that stay valid for `'a` (or be null with `len` 0).
unsafe fn bytes<'a>(p: *const u8, len: c_int) -> &'a [u8] {
    if p.is_null() || len <= 0 {
        &[]
    } else {
        // SAFETY: the caller's promise.
        unsafe { std::slice::from_raw_parts(p, len as usize) }
    }
}

/// An error SQLite reported on the raw handle, with its extended result code so that
/// busy and locked databases are still recognised as transient.
#[derive(Debug)]
pub(crate) struct RawError {
    code: c_int,
    message: String,
}

impl RawError {
    /// The handle's last error.
    fn last(db: NonNull<ffi::sqlite3>) -> Self {
        // SAFETY: a live handle; sqlite3_errmsg returns a NUL-terminated string it owns.
        unsafe {
            RawError {
                code: ffi::sqlite3_extended_errcode(db.as_ptr()),
                message: CStr::from_ptr(ffi::sqlite3_errmsg(db.as_ptr()))
                    .to_string_lossy()
                    .into_owned(),
            }
        }
    }

    fn misuse(message: &str) -> Self {
        RawError {
            code: ffi::SQLITE_MISUSE,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for RawError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for RawError {}

impl sqlx::error::DatabaseError for RawError {
    fn message(&self) -> &str {
        &self.message
    }

    fn code(&self) -> Option<std::borrow::Cow<'_, str>> {
        Some(self.code.to_string().into())
    }

    fn as_error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        self
    }

    fn as_error_mut(&mut self) -> &mut (dyn std::error::Error + Send + Sync + 'static) {
        self
    }

    fn into_error(self: Box<Self>) -> Box<dyn std::error::Error + Send + Sync + 'static> {
        self
    }

    fn kind(&self) -> sqlx::error::ErrorKind {
        use sqlx::error::ErrorKind;
        match self.code {
            ffi::SQLITE_CONSTRAINT_UNIQUE | ffi::SQLITE_CONSTRAINT_PRIMARYKEY => {
                ErrorKind::UniqueViolation
            }
            ffi::SQLITE_CONSTRAINT_FOREIGNKEY => ErrorKind::ForeignKeyViolation,
            ffi::SQLITE_CONSTRAINT_NOTNULL => ErrorKind::NotNullViolation,
            ffi::SQLITE_CONSTRAINT_CHECK => ErrorKind::CheckViolation,
            _ => ErrorKind::Other,
        }
    }
}

/// An order-independent sum of row hashes over values *as stored*: what a sink bound,
/// and what it reads back, without decoding either into Arrow. Equal sums mean the
/// database holds exactly the values it was given.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct StoredSum {
    pub(crate) rows: u64,
    pub(crate) sum: u64,
}

impl StoredSum {
    fn hasher() -> impl std::hash::Hasher {
        use std::hash::BuildHasher;
        datafusion_common::hash_utils::RandomState::with_seed(0x726f_7773_6869_6674).build_hasher()
    }

    /// Adds one row, given its values in column order.
    pub(crate) fn add_bound(&mut self, row: &[Bind<'_>]) {
        let mut h = Self::hasher();
        for v in row {
            match *v {
                Bind::Null => hash_value(&mut h, 0, &[]),
                Bind::Int(i) => hash_value(&mut h, 1, &i.to_le_bytes()),
                Bind::Real(f) => hash_value(&mut h, 2, &f.to_bits().to_le_bytes()),
                Bind::Text(t) => hash_value(&mut h, 3, t.as_bytes()),
                Bind::Blob(b) => hash_value(&mut h, 4, b),
            }
        }
        self.rows += 1;
        self.sum = self.sum.wrapping_add(std::hash::Hasher::finish(&h));
    }

    /// Adds the statement's current row, its first `width` columns.
    pub(crate) fn add_stored(&mut self, row: &RawStatement<'_>, width: usize) {
        let mut h = Self::hasher();
        for i in 0..width {
            match row.cell(i) {
                Cell::Null => hash_value(&mut h, 0, &[]),
                Cell::Int(v) => hash_value(&mut h, 1, &v.to_le_bytes()),
                Cell::Real(f) => hash_value(&mut h, 2, &f.to_bits().to_le_bytes()),
                Cell::Text(t) => hash_value(&mut h, 3, t),
                Cell::Blob(b) => hash_value(&mut h, 4, b),
            }
        }
        self.rows += 1;
        self.sum = self.sum.wrapping_add(std::hash::Hasher::finish(&h));
    }
}

fn hash_value(h: &mut impl std::hash::Hasher, tag: u8, bytes: &[u8]) {
    h.write_u8(tag);
    h.write_usize(bytes.len());
    h.write(bytes);
}

/// One value of a row, by its storage class.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Cell<'a> {
    Null,
    Int(i64),
    Real(f64),
    Text(&'a [u8]),
    Blob(&'a [u8]),
}

impl Cell<'_> {
    fn storage(&self) -> &'static str {
        match self {
            Cell::Null => "NULL",
            Cell::Int(_) => "INTEGER",
            Cell::Real(_) => "REAL",
            Cell::Text(_) => "TEXT",
            Cell::Blob(_) => "BLOB",
        }
    }

    /// The value as a key, when it is one (INTEGER or valid UTF-8 TEXT).
    pub(crate) fn key(&self) -> Option<KeyValue> {
        match self {
            Cell::Int(v) => Some(KeyValue::Int(*v)),
            Cell::Text(t) => std::str::from_utf8(t)
                .ok()
                .map(|s| KeyValue::Text(s.into())),
            _ => None,
        }
    }

    /// The value as text for messages.
    fn shown(&self) -> Option<String> {
        match self {
            Cell::Null => None,
            Cell::Int(v) => Some(v.to_string()),
            Cell::Real(v) => Some(v.to_string()),
            Cell::Text(t) | Cell::Blob(t) => Some(String::from_utf8_lossy(t).into_owned()),
        }
    }
}

/// One column's builder.
enum Builder {
    Int(Int64Builder),
    Real(Float64Builder),
    Text(StringBuilder),
    Blob(BinaryBuilder),
    Bool(BooleanBuilder),
}

impl Builder {
    fn new(kind: Kind, cap: usize) -> Self {
        match kind {
            Kind::Int => Builder::Int(Int64Builder::with_capacity(cap)),
            Kind::Real => Builder::Real(Float64Builder::with_capacity(cap)),
            Kind::Text => Builder::Text(StringBuilder::with_capacity(cap, cap * 16)),
            Kind::Blob => Builder::Blob(BinaryBuilder::with_capacity(cap, cap * 16)),
            Kind::Bool => Builder::Bool(BooleanBuilder::with_capacity(cap)),
        }
    }

    fn kind(&self) -> Kind {
        match self {
            Builder::Int(_) => Kind::Int,
            Builder::Real(_) => Kind::Real,
            Builder::Text(_) => Kind::Text,
            Builder::Blob(_) => Kind::Blob,
            Builder::Bool(_) => Kind::Bool,
        }
    }

    fn finish(&mut self) -> ArrayRef {
        use std::sync::Arc;
        match self {
            Builder::Int(b) => Arc::new(b.finish()),
            Builder::Real(b) => Arc::new(b.finish()),
            Builder::Text(b) => Arc::new(b.finish()),
            Builder::Blob(b) => Arc::new(b.finish()),
            Builder::Bool(b) => Arc::new(b.finish()),
        }
    }

    fn append_null(&mut self) {
        match self {
            Builder::Int(b) => b.append_null(),
            Builder::Real(b) => b.append_null(),
            Builder::Text(b) => b.append_null(),
            Builder::Blob(b) => b.append_null(),
            Builder::Bool(b) => b.append_null(),
        }
    }

    /// Why `cell` cannot go into this column without loss, if it cannot: the value to
    /// show and the reason.
    fn refuse(&self, cell: Cell<'_>) -> Option<(Option<String>, String)> {
        let refused = |value: String, reason: &str| Some((Some(value), reason.to_string()));
        match (self, cell) {
            (_, Cell::Null)
            | (Builder::Int(_), Cell::Int(_))
            | (Builder::Real(_), Cell::Real(_))
            | (Builder::Text(_), Cell::Int(_) | Cell::Real(_))
            | (Builder::Blob(_), Cell::Blob(_) | Cell::Text(_))
            | (Builder::Bool(_), Cell::Int(0 | 1)) => None,
            (Builder::Real(_), Cell::Int(v)) => (v.unsigned_abs() > 1 << 53).then(|| {
                (
                    Some(v.to_string()),
                    "integer too large for a REAL column without losing precision".into(),
                )
            }),
            (Builder::Text(_), Cell::Text(t)) => match std::str::from_utf8(t) {
                Ok(_) => None,
                Err(_) => refused(
                    String::from_utf8_lossy(t).into_owned(),
                    "is not valid UTF-8 text",
                ),
            },
            (Builder::Bool(_), Cell::Int(v)) => refused(
                v.to_string(),
                "a BOOLEAN column holds an integer other than 0 or 1",
            ),
            (b, cell) => Some((
                cell.shown(),
                format!(
                    "a {} value in a column read as {}",
                    cell.storage(),
                    kind_name(b.kind())
                ),
            )),
        }
    }

    /// `cell` converted into this column's kind by SQLite's own rules (CAST), when that
    /// loses nothing: a column `[source.types]` declares, whatever the table declares
    /// and stores. An integer read as text is its decimal text, a float its shortest
    /// decimal; text is read as an integer only when it is written as one and in
    /// range, as a float only when the float reads back as the same number; a float
    /// is read as an integer only when it is whole. Otherwise the value to show and why.
    fn convert<'a>(&self, cell: Cell<'a>) -> Result<Cell<'a>, (Option<String>, String)> {
        use crate::types::cast::{double_text, integer_text};
        let refused = |reason: String| Err((cell.shown(), reason));
        let text = |t: &'a [u8]| std::str::from_utf8(t).ok();
        match (self, cell) {
            (Builder::Int(_), Cell::Text(t)) => match text(t) {
                Some(s) => integer_text(s, "an integer", i64::MIN, i64::MAX)
                    .map(Cell::Int)
                    .or_else(refused),
                None => {
                    refused("is not valid UTF-8 text, so it cannot be read as an integer".into())
                }
            },
            (Builder::Int(_), Cell::Real(v)) => {
                // i64::MAX as a float rounds up to 2^63, which is out of range.
                if !v.is_finite() {
                    refused("is not a finite number, so it cannot be read as an integer".into())
                } else if v.fract() != 0.0 {
                    refused(
                        "has a fraction, which an integer cannot hold (it takes whole numbers)"
                            .into(),
                    )
                } else if !(-9.223_372_036_854_776e18..9.223_372_036_854_776e18).contains(&v) {
                    refused(format!(
                        "is out of range for an integer ({} to {})",
                        i64::MIN,
                        i64::MAX
                    ))
                } else {
                    Ok(Cell::Int(v as i64))
                }
            }
            (Builder::Real(_), Cell::Text(t)) => match text(t) {
                Some(s) => double_text(s).map(Cell::Real).or_else(refused),
                None => refused("is not valid UTF-8 text, so it cannot be read as double".into()),
            },
            (Builder::Text(_), Cell::Blob(b)) => match text(b) {
                Some(_) => Ok(Cell::Text(b)),
                None => refused("is a BLOB that is not UTF-8 text".into()),
            },
            (Builder::Bool(_), Cell::Int(v)) if v != 0 && v != 1 => {
                refused("is an integer other than 0 or 1, so it cannot be read as boolean".into())
            }
            (Builder::Bool(_), Cell::Real(v)) if v == 0.0 || v == 1.0 => Ok(Cell::Int(v as i64)),
            (Builder::Bool(_), Cell::Text(t)) => match text(t) {
                Some("0") => Ok(Cell::Int(0)),
                Some("1") => Ok(Cell::Int(1)),
                _ => {
                    refused("is text other than '0' or '1', so it cannot be read as boolean".into())
                }
            },
            (b, cell) => b.refuse(cell).map_or(Ok(cell), Err),
        }
    }

    /// Appends a cell [`Self::refuse`] accepted.
    fn append(&mut self, cell: Cell<'_>) {
        match (self, cell) {
            (b, Cell::Null) => b.append_null(),
            (Builder::Int(b), Cell::Int(v)) => b.append_value(v),
            (Builder::Real(b), Cell::Real(v)) => b.append_value(v),
            (Builder::Real(b), Cell::Int(v)) => b.append_value(v as f64),
            (Builder::Text(b), Cell::Text(t)) => {
                // SAFETY: `refuse` checked that the bytes are UTF-8.
                b.append_value(unsafe { std::str::from_utf8_unchecked(t) })
            }
            (Builder::Text(b), Cell::Int(v)) => b.append_value(v.to_string()),
            // Rust prints the shortest text that reads back as the same float: exact.
            (Builder::Text(b), Cell::Real(v)) => b.append_value(v.to_string()),
            (Builder::Blob(b), Cell::Blob(t) | Cell::Text(t)) => b.append_value(t),
            (Builder::Bool(b), Cell::Int(v)) => b.append_value(v == 1),
            (b, cell) => unreachable!(
                "{} refused by `refuse`, into {:?}",
                cell.storage(),
                b.kind()
            ),
        }
    }
}

/// The key columns of decoded rows, by position: they name a row in messages.
#[derive(Debug, Clone, Default)]
pub(crate) struct KeyCols {
    /// Each key column's position in the statement's result.
    pub(crate) index: Vec<usize>,
    /// Each key column's name.
    pub(crate) names: Vec<String>,
}

impl KeyCols {
    /// The key columns `names` among `columns` (those missing are left out).
    pub(crate) fn find<'c>(
        names: &[String],
        columns: impl Iterator<Item = &'c str> + Clone,
    ) -> Self {
        let mut k = KeyCols::default();
        for n in names {
            if let Some(i) = columns.clone().position(|c| c == n) {
                k.index.push(i);
                k.names.push(n.clone());
            }
        }
        k
    }

    /// The current row's key value; `None` when a part is NULL or not a key type.
    pub(crate) fn value(&self, row: &RawStatement<'_>) -> Option<KeyValue> {
        let parts = self
            .index
            .iter()
            .map(|&i| row.cell(i).key())
            .collect::<Option<Vec<_>>>()?;
        (!parts.is_empty()).then(|| KeyValue::from_parts(parts))
    }

    /// The current row named by its key: `id=42`, `tenant=1, id='x'`.
    pub(crate) fn label(&self, row: &RawStatement<'_>) -> String {
        if self.index.is_empty() {
            return "key unknown".to_string();
        }
        self.index
            .iter()
            .zip(&self.names)
            .map(|(&i, n)| {
                let cell = row.cell(i);
                match cell.key() {
                    Some(k) => format!("{n}={k}"),
                    // Not a key value: show what is stored, and as what.
                    None => format!(
                        "{n}={} ({})",
                        cell.shown().unwrap_or_else(|| "NULL".into()),
                        cell.storage()
                    ),
                }
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Column builders for one batch, decoding each value by its storage class.
pub(crate) struct BatchBuilder {
    kinds: Vec<Kind>,
    /// The columns whose values are converted into their kind (see [`Builder::convert`])
    /// rather than refused when stored as another class.
    convert: Vec<bool>,
    builders: Vec<Builder>,
    pub(crate) len: usize,
    cap: usize,
}

impl BatchBuilder {
    pub(crate) fn new(kinds: &[Kind], cap: usize) -> Self {
        BatchBuilder {
            kinds: kinds.to_vec(),
            convert: vec![false; kinds.len()],
            builders: kinds.iter().map(|k| Builder::new(*k, cap)).collect(),
            len: 0,
            cap,
        }
    }

    /// A builder that converts the values of the columns `convert` marks into their
    /// kind by SQLite's rules, where nothing is lost (see [`Builder::convert`]).
    pub(crate) fn converting(kinds: &[Kind], convert: &[bool], cap: usize) -> Self {
        let mut b = Self::new(kinds, cap);
        b.convert = convert.to_vec();
        b
    }

    /// Appends the statement's current row, or, when a value does not fit its column,
    /// appends nothing and names the row by its key, the column and the value.
    pub(crate) fn push(
        &mut self,
        row: &RawStatement<'_>,
        schema: &SchemaRef,
        key: &KeyCols,
        here: &str,
    ) -> Result<(), RowFailure> {
        // Each value is fetched once (three calls into SQLite), checked, then appended.
        let n = self.builders.len();
        let mut on_stack = [Cell::Null; 16];
        let mut on_heap = Vec::new();
        let cells: &mut [Cell<'_>] = if n <= on_stack.len() {
            &mut on_stack[..n]
        } else {
            on_heap.resize(n, Cell::Null);
            &mut on_heap
        };
        for (i, c) in cells.iter_mut().enumerate() {
            *c = row.cell(i);
        }
        for (i, (b, cell)) in self.builders.iter().zip(cells.iter_mut()).enumerate() {
            let problem = match self.convert[i] {
                true => b.convert(*cell).map(|c| *cell = c).err(),
                false => b.refuse(*cell),
            };
            if let Some((value, reason)) = problem {
                return Err(RowFailure {
                    location: format!("{here}, {}", key.label(row)),
                    column: Some(schema.field(i).name().clone()),
                    value,
                    reason,
                });
            }
        }
        for (b, cell) in self.builders.iter_mut().zip(cells.iter()) {
            b.append(*cell);
        }
        self.len += 1;
        Ok(())
    }

    pub(crate) fn finish(
        &mut self,
        raw_schema: &SchemaRef,
        schema: &SchemaRef,
        here: &str,
    ) -> Result<RecordBatch> {
        let columns: Vec<ArrayRef> = self.builders.iter_mut().map(Builder::finish).collect();
        self.len = 0;
        self.builders = self
            .kinds
            .iter()
            .map(|k| Builder::new(*k, self.cap))
            .collect();
        let batch =
            RecordBatch::try_new(raw_schema.clone(), columns).map_err(|e| Error::data(here, e))?;
        if raw_schema == schema {
            return Ok(batch);
        }
        cast_batch(batch, schema, here, |row| {
            format!("{here}, batch row {}", row + 1)
        })
    }
}

fn kind_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Int => "INTEGER",
        Kind::Real => "REAL",
        Kind::Text => "TEXT",
        Kind::Blob => "BLOB",
        Kind::Bool => "BOOLEAN",
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Array, AsArray, RecordBatch};
    use arrow::datatypes::{Field, Schema, SchemaRef};
    use sqlx::Connection;
    use sqlx::sqlite::SqliteConnection;

    use super::*;

    /// Reads `sql` from a database holding `setup`, returning the batch or the failure.
    fn read(setup: &str, sql: &str, kinds: &[Kind]) -> Result<RecordBatch, String> {
        read_in(setup, sql, kinds, &[KeyValue::Int(0)], false)
    }

    /// Reads `sql` (bound to `params`) from a database holding `setup`; with `convert`,
    /// every column but the first (the key `c0`) is converted into its kind.
    fn read_in(
        setup: &str,
        sql: &str,
        kinds: &[Kind],
        params: &[KeyValue],
        convert: bool,
    ) -> Result<RecordBatch, String> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            let mut conn = SqliteConnection::connect("sqlite::memory:").await.unwrap();
            sqlx::raw_sql(sqlx::AssertSqlSafe(setup))
                .execute(&mut conn)
                .await
                .unwrap();
            let schema: SchemaRef = Arc::new(Schema::new(
                kinds
                    .iter()
                    .enumerate()
                    .map(|(i, k)| Field::new(format!("c{i}"), k.arrow_type(), true))
                    .collect::<Vec<_>>(),
            ));
            let mut lock = conn.lock_handle().await.unwrap();
            let raw = RawConn::new(&mut lock);
            let mut rows = raw.prepare(sql, params).map_err(|e| e.to_string())?;
            let converted: Vec<bool> = (0..kinds.len()).map(|i| i > 0).collect();
            let mut builder = match convert {
                true => BatchBuilder::converting(kinds, &converted, 16),
                false => BatchBuilder::new(kinds, 16),
            };
            let key = KeyCols {
                index: vec![0],
                names: vec!["c0".into()],
            };
            while rows.step().map_err(|e| e.to_string())? {
                builder
                    .push(&rows, &schema, &key, "t")
                    .map_err(|f| f.to_string())?;
            }
            builder
                .finish(&schema, &schema, "t")
                .map_err(|e| e.to_string())
        })
    }

    #[test]
    fn reads_each_storage_class_into_its_column() {
        let batch = read(
            "CREATE TABLE t(id INTEGER, r REAL, s TEXT, b BLOB, f BOOLEAN);
             INSERT INTO t VALUES (1, 2.5, 'ünï', x'00ff', 1), (2, 3, 42, 'ab', 0),
                                  (3, NULL, 0.1, NULL, NULL);",
            "SELECT * FROM t WHERE id > ? ORDER BY id",
            &[Kind::Int, Kind::Real, Kind::Text, Kind::Blob, Kind::Bool],
        )
        .unwrap();
        assert_eq!(batch.num_rows(), 3);
        let ints = batch
            .column(0)
            .as_primitive::<arrow::datatypes::Int64Type>();
        assert_eq!(ints.values().to_vec(), vec![1, 2, 3]);
        let reals = batch
            .column(1)
            .as_primitive::<arrow::datatypes::Float64Type>();
        assert_eq!(
            (reals.value(0), reals.value(1), reals.is_null(2)),
            (2.5, 3.0, true)
        );
        let texts = batch.column(2).as_string::<i32>();
        assert_eq!(
            (texts.value(0), texts.value(1), texts.value(2)),
            ("ünï", "42", "0.1")
        );
        let blobs = batch.column(3).as_binary::<i32>();
        assert_eq!(
            (blobs.value(0), blobs.value(1)),
            (&[0u8, 255][..], &b"ab"[..])
        );
        let bools = batch.column(4).as_boolean();
        assert_eq!(
            (bools.value(0), bools.value(1), bools.is_null(2)),
            (true, false, true)
        );
    }

    #[test]
    fn a_value_that_does_not_fit_names_key_column_and_value() {
        let ints = "CREATE TABLE t(id INTEGER, v); INSERT INTO t VALUES (7, 'seven');";
        assert_eq!(
            read(
                ints,
                "SELECT id, v FROM t WHERE id > ?",
                &[Kind::Int, Kind::Int]
            )
            .unwrap_err(),
            "t, c0=7, column c1, value 'seven': a TEXT value in a column read as INTEGER"
        );
        let bools = "CREATE TABLE t(id INTEGER, v); INSERT INTO t VALUES (8, 2);";
        assert_eq!(
            read(
                bools,
                "SELECT id, v FROM t WHERE id > ?",
                &[Kind::Int, Kind::Bool]
            )
            .unwrap_err(),
            "t, c0=8, column c1, value '2': a BOOLEAN column holds an integer other than 0 or 1"
        );
        let big = "CREATE TABLE t(id INTEGER, v); INSERT INTO t VALUES (9, 9007199254740993);";
        assert_eq!(
            read(
                big,
                "SELECT id, v FROM t WHERE id > ?",
                &[Kind::Int, Kind::Real]
            )
            .unwrap_err(),
            "t, c0=9, column c1, value '9007199254740993': integer too large for a REAL column without losing precision"
        );
        let utf8 =
            "CREATE TABLE t(id INTEGER, v); INSERT INTO t VALUES (10, CAST(x'41ff' AS TEXT));";
        assert_eq!(
            read(
                utf8,
                "SELECT id, v FROM t WHERE id > ?",
                &[Kind::Int, Kind::Text]
            )
            .unwrap_err(),
            "t, c0=10, column c1, value 'A\u{fffd}': is not valid UTF-8 text"
        );
    }

    /// Reads `sql` with every column but the first converted into its kind.
    fn read_converting(setup: &str, sql: &str, kinds: &[Kind]) -> Result<RecordBatch, String> {
        read_in(setup, sql, kinds, &[], true)
    }

    #[test]
    fn declared_kinds_convert_what_sqlite_stores_where_nothing_is_lost() {
        let setup = "CREATE TABLE t(id INTEGER, v);
             INSERT INTO t VALUES (1, 1), (2, 1.0), (3, '1'), (4, 0), (5, NULL);";
        let b = read_converting(
            setup,
            "SELECT id, v, v, v FROM t ORDER BY id",
            &[Kind::Int, Kind::Bool, Kind::Int, Kind::Text],
        )
        .unwrap();
        let bools = b.column(1).as_boolean();
        assert_eq!(
            (0..5)
                .map(|i| bools.is_valid(i).then(|| bools.value(i)))
                .collect::<Vec<_>>(),
            [Some(true), Some(true), Some(true), Some(false), None]
        );
        let ints = b.column(2).as_primitive::<arrow::datatypes::Int64Type>();
        assert_eq!(ints.values()[..4].to_vec(), vec![1, 1, 1, 0]);
        let texts = b.column(3).as_string::<i32>();
        assert_eq!(
            (texts.value(0), texts.value(1), texts.value(2)),
            ("1", "1", "1")
        );
        let blob = "CREATE TABLE t(id INTEGER, v); INSERT INTO t VALUES (1, x'c3a9'), (2, 2.5);";
        let b = read_converting(
            blob,
            "SELECT id, v FROM t ORDER BY id",
            &[Kind::Int, Kind::Text],
        )
        .unwrap();
        let texts = b.column(1).as_string::<i32>();
        assert_eq!((texts.value(0), texts.value(1)), ("é", "2.5"));
        for (value, kind, why) in [
            (
                "2.5",
                Kind::Int,
                "t, c0=1, column c1, value '2.5': has a fraction, which an integer cannot hold (it takes whole numbers)",
            ),
            (
                "9e999",
                Kind::Int,
                "t, c0=1, column c1, value 'inf': is not a finite number, so it cannot be read as an integer",
            ),
            (
                "9.3e18",
                Kind::Int,
                "t, c0=1, column c1, value '9300000000000000000': is out of range for an integer (-9223372036854775808 to 9223372036854775807)",
            ),
            (
                "'x'",
                Kind::Real,
                "t, c0=1, column c1, value 'x': is not a number, so it cannot be read as double",
            ),
            (
                "2",
                Kind::Bool,
                "t, c0=1, column c1, value '2': is an integer other than 0 or 1, so it cannot be read as boolean",
            ),
            (
                "x'ff'",
                Kind::Text,
                "t, c0=1, column c1, value '\u{fffd}': is a BLOB that is not UTF-8 text",
            ),
        ] {
            let setup =
                format!("CREATE TABLE t(id INTEGER, v); INSERT INTO t VALUES (1, {value});");
            assert_eq!(
                read_converting(&setup, "SELECT id, v FROM t", &[Kind::Int, kind]).unwrap_err(),
                why,
                "{value}"
            );
        }
    }

    #[test]
    fn statement_errors_keep_sqlite_codes() {
        let err = read(
            "CREATE TABLE t(id INTEGER);",
            "SELECT nope FROM t WHERE id > ?",
            &[Kind::Int],
        )
        .unwrap_err();
        assert_eq!(err, "no such column: nope");
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            let mut conn = SqliteConnection::connect("sqlite::memory:").await.unwrap();
            sqlx::raw_sql("CREATE TABLE t(id INTEGER PRIMARY KEY)")
                .execute(&mut conn)
                .await
                .unwrap();
            let mut lock = conn.lock_handle().await.unwrap();
            let raw = RawConn::new(&mut lock);
            let mut insert = raw.prepare("INSERT INTO t VALUES (?)", &[]).unwrap();
            assert_eq!(insert.execute_with(&[Bind::Int(1)]).unwrap(), 1);
            let e = insert.execute_with(&[Bind::Int(1)]).unwrap_err();
            assert_eq!(e.to_string(), "UNIQUE constraint failed: t.id");
            let e = sqlx::Error::from(e);
            let db = e.as_database_error().unwrap();
            assert_eq!(db.code().as_deref(), Some("1555"));
            assert!(db.is_unique_violation());
        });
    }

    #[test]
    fn stored_sums_match_only_what_sqlite_kept_unchanged() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            let mut conn = SqliteConnection::connect("sqlite::memory:").await.unwrap();
            sqlx::raw_sql("CREATE TABLE t(a INTEGER, b TEXT, c BLOB, d REAL)")
                .execute(&mut conn)
                .await
                .unwrap();
            let mut lock = conn.lock_handle().await.unwrap();
            let raw = RawConn::new(&mut lock);
            let rows: [[Bind<'_>; 4]; 3] = [
                [
                    Bind::Int(1),
                    Bind::Text("ünï"),
                    Bind::Blob(&[0, 1]),
                    Bind::Real(2.5),
                ],
                [Bind::Int(2), Bind::Null, Bind::Blob(&[]), Bind::Real(1e300)],
                // Column `a` has INTEGER affinity: SQLite stores the text '007' as 7.
                [Bind::Text("007"), Bind::Text(""), Bind::Null, Bind::Null],
            ];
            let mut insert = raw
                .prepare("INSERT INTO t VALUES (?, ?, ?, ?)", &[])
                .unwrap();
            let (mut bound, mut kept) = (StoredSum::default(), StoredSum::default());
            for (i, row) in rows.iter().enumerate() {
                insert.execute_with(row).unwrap();
                bound.add_bound(row);
                if i < 2 {
                    kept.add_bound(row);
                }
            }
            let read = |sql: &str| {
                let mut sum = StoredSum::default();
                let mut st = raw.prepare(sql, &[]).unwrap();
                while st.step().unwrap() {
                    sum.add_stored(&st, 4);
                }
                sum
            };
            assert_eq!(
                read("SELECT * FROM t WHERE rowid < 3 ORDER BY rowid DESC"),
                kept
            );
            let all = read("SELECT * FROM t");
            assert_eq!(all.rows, 3);
            assert_ne!(all, bound);
        });
    }
}
