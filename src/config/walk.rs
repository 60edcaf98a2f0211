//! The TOML walker: reads a pipeline document into the model, reporting every problem
//! at once, each at its line and column.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use toml_edit::{Item, TableLike};

use super::*;

impl Pipeline {
    /// Parses pipeline text; `env` looks up variables for `${VAR}`.
    pub fn parse(
        file: &Path,
        text: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Pipeline> {
        let text: Arc<str> = text.into();
        let mut diags = Diagnostics::new(file.to_path_buf(), text.clone());
        let base_dir = file
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
        let base_dir = std::path::absolute(&base_dir).map_err(|e| Error::io(&base_dir, e))?;
        let doc = match toml_edit::Document::parse(text.to_string()) {
            Ok(doc) => doc,
            Err(e) => {
                let msg = e.message().to_string();
                diags.push(Diagnostic::at(e.span(), format!("invalid TOML: {msg}")));
                diags.into_result()?;
                unreachable!("a diagnostic was pushed")
            }
        };
        let mut w = Walker {
            diags: &mut diags,
            env,
            base_dir: &base_dir,
        };
        let root = Section {
            table: doc.as_table(),
            path: String::new(),
            span: Some(0..0),
        };
        w.check_keys(
            &root,
            &[
                "name", "verify", "source", "target", "filter", "chunks", "limits", "checks",
                "online",
            ],
        );
        let name = w.string(&root, "name", true).map(|s| s.value);
        let source = w.section(&root, "source", true).and_then(|s| w.source(&s));
        let target = w.section(&root, "target", true).and_then(|s| w.target(&s));
        let filter = w.section(&root, "filter", false).and_then(|s| {
            w.check_keys(&s, &["where"]);
            w.string(&s, "where", true)
        });
        let chunks = match w.section(&root, "chunks", false) {
            Some(s) => w.chunks(&s),
            None => ChunkConfig::default(),
        };
        // Each chunk in flight holds a connection: a smaller pool would keep chunks
        // waiting for one, and past the acquire timeout fail them.
        let (mut source, mut target) = (source, target);
        if let Some(s) = source.as_mut() {
            w.pool_size(&root, "source", &s.location, &mut s.db, chunks.parallel);
        }
        if let Some(t) = target.as_mut() {
            w.pool_size(&root, "target", &t.location, &mut t.db, chunks.parallel);
        }
        let limits = match w.section(&root, "limits", false) {
            Some(s) => w.limits(&s),
            None => Limits::default(),
        };
        let verify = match w.string(&root, "verify", false) {
            None => Verify::ReadBack,
            Some(v) => match v.value.as_str() {
                "on" | "read-back" => Verify::ReadBack,
                "off" => Verify::Off,
                other => {
                    w.error(
                        v.span,
                        format!("unknown verify `{other}`; expected \"on\" or \"off\""),
                    );
                    Verify::ReadBack
                }
            },
        };
        let checks = w.checks(&root, target.as_ref());
        let online = match w.section(&root, "online", false) {
            Some(s) => w.online(&s, source.as_ref()),
            None => OnlineConfig::default(),
        };
        if let Some(name) = &name
            && (name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c)))
        {
            let span = root.table.get("name").and_then(Item::span);
            w.diags.push(
                Diagnostic::at(span, format!("invalid name `{name}`"))
                    .with_help("use letters, digits, `_`, `-` and `.`: the name labels state files and history"),
            );
        }
        diags.into_result()?;
        match (name, source, target) {
            (Some(name), Some(source), Some(target)) => Ok(Pipeline {
                name,
                file: file.to_path_buf(),
                base_dir,
                source,
                target,
                filter,
                chunks,
                limits,
                checks,
                verify,
                online,
                text,
            }),
            _ => Err(Error::Internal("a missing section was not reported".into())),
        }
    }
}

mod ddl;
mod online;

/// A table of the document being walked, with its dotted path for messages.
struct Section<'t> {
    table: &'t dyn TableLike,
    path: String,
    span: Option<Range<usize>>,
}

impl Section<'_> {
    fn label(&self) -> String {
        if self.path.is_empty() {
            "the top level".into()
        } else {
            format!("[{}]", self.path)
        }
    }

    fn key_span(&self, key: &str) -> Option<Range<usize>> {
        self.table
            .get_key_value(key)
            .and_then(|(k, v)| k.span().or_else(|| v.span()))
            .or(self.span.clone())
    }
}

pub(super) struct Walker<'a> {
    diags: &'a mut Diagnostics,
    env: &'a dyn Fn(&str) -> Option<String>,
    base_dir: &'a Path,
}

impl<'a> Walker<'a> {
    fn error(&mut self, span: Option<Range<usize>>, message: impl Into<String>) {
        self.diags.push(Diagnostic::at(span, message));
    }

    fn check_keys(&mut self, s: &Section<'_>, allowed: &[&str]) {
        for (key, _) in s.table.iter() {
            if !allowed.contains(&key) {
                let mut d = Diagnostic::at(
                    s.key_span(key),
                    format!("unknown key `{key}` in {}", s.label()),
                );
                d = match suggest(key, allowed.iter().copied()) {
                    Some(best) => d.with_help(format!("did you mean `{best}`?")),
                    None => d.with_help(format!("valid keys are: {}", allowed.join(", "))),
                };
                self.diags.push(d);
            }
        }
    }

    fn missing(&mut self, s: &Section<'_>, key: &str) {
        let span = s.span.clone();
        self.error(span, format!("missing `{key}` in {}", s.label()));
    }

    fn section<'t>(&mut self, s: &Section<'t>, key: &str, required: bool) -> Option<Section<'t>> {
        match s.table.get(key) {
            None => {
                if required {
                    let span = s.span.clone();
                    self.error(
                        span,
                        format!("missing [{}] section", join_path(&s.path, key)),
                    );
                }
                None
            }
            Some(item) => match item.as_table_like() {
                Some(table) => Some(Section {
                    table,
                    path: join_path(&s.path, key),
                    span: item.span().or(s.key_span(key)),
                }),
                None => {
                    let span = item.span();
                    self.error(
                        span,
                        format!(
                            "`{}` must be a table, not {}",
                            join_path(&s.path, key),
                            item.type_name()
                        ),
                    );
                    None
                }
            },
        }
    }

    fn string(&mut self, s: &Section<'_>, key: &str, required: bool) -> Option<Spanned<String>> {
        match s.table.get(key) {
            None => {
                if required {
                    self.missing(s, key);
                }
                None
            }
            Some(item) => match item.as_str() {
                Some(v) => Some(Spanned {
                    value: v.to_string(),
                    span: item.span(),
                }),
                None => {
                    let span = item.span();
                    self.error(
                        span,
                        format!(
                            "`{}` must be a string, not {}",
                            join_path(&s.path, key),
                            item.type_name()
                        ),
                    );
                    None
                }
            },
        }
    }

    fn bool(&mut self, s: &Section<'_>, key: &str, default: bool) -> bool {
        match s.table.get(key) {
            None => default,
            Some(item) => item.as_bool().unwrap_or_else(|| {
                let span = item.span();
                self.error(
                    span,
                    format!(
                        "`{}` must be true or false, not {}",
                        join_path(&s.path, key),
                        item.type_name()
                    ),
                );
                default
            }),
        }
    }

    fn integer(&mut self, s: &Section<'_>, key: &str, min: i64, default: i64) -> i64 {
        match s.table.get(key) {
            None => default,
            Some(item) => match item.as_integer() {
                Some(v) if v >= min => v,
                _ => {
                    let span = item.span();
                    self.error(
                        span,
                        format!(
                            "`{}` must be an integer of at least {min}",
                            join_path(&s.path, key)
                        ),
                    );
                    default
                }
            },
        }
    }

    fn char(&mut self, s: &Section<'_>, key: &str, default: Option<u8>) -> Option<u8> {
        let v = self.string(s, key, false)?;
        match v.value.as_bytes() {
            [b] if b.is_ascii() => Some(*b),
            [] if key == "escape" => None,
            _ => {
                let path = join_path(&s.path, key);
                self.error(
                    v.span,
                    format!(
                        "`{path}` must be a single ASCII character, not \"{}\"",
                        v.value
                    ),
                );
                default
            }
        }
        .or(default)
    }

    /// `[source] key`: one column name, or a non-empty list of distinct names.
    fn key_list(&mut self, s: &Section<'_>) -> Option<Spanned<Vec<String>>> {
        let span = s.table.get("key")?.span();
        let names = self.string_list(s, "key")?;
        let mut seen = std::collections::HashSet::new();
        let problem = if names.is_empty() {
            Some("`source.key` is an empty list; name at least one column".to_string())
        } else if names.iter().any(|n| n.is_empty()) {
            Some("`source.key` has an empty column name; name a column of the source".to_string())
        } else {
            names
                .iter()
                .find(|n| !seen.insert(n.as_str()))
                .map(|n| format!("`source.key` names column `{n}` twice"))
        };
        if let Some(msg) = problem {
            self.error(span, msg);
            return None;
        }
        Some(Spanned { value: names, span })
    }

    fn string_list(&mut self, s: &Section<'_>, key: &str) -> Option<Vec<String>> {
        let item = s.table.get(key)?;
        if let Some(v) = item.as_str() {
            return Some(vec![v.to_string()]);
        }
        let list = item
            .as_array()
            .and_then(|a| a.iter().map(|v| v.as_str().map(str::to_string)).collect());
        if list.is_none() {
            let span = item.span();
            self.error(
                span,
                format!(
                    "`{}` must be a string or a list of strings",
                    join_path(&s.path, key)
                ),
            );
        }
        list
    }

    /// Expands `${VAR}` in a url, then resolves it.
    fn url(
        &mut self,
        s: &Section<'_>,
        format: Option<FileFormat>,
    ) -> Option<(Spanned<String>, Location)> {
        let raw = self.string(s, "url", true)?;
        let expanded = match expand_env(&raw.value, self.env) {
            Ok(v) => v,
            Err(msg) => {
                self.error(raw.span, msg);
                return None;
            }
        };
        let shown = Spanned {
            value: redact(&expanded),
            span: raw.span.clone(),
        };
        match Location::parse(&expanded, self.base_dir, format) {
            Ok(location) => Some((shown, location)),
            Err(msg) => {
                self.error(raw.span, redact(&msg));
                None
            }
        }
    }

    fn format(&mut self, s: &Section<'_>) -> Option<FileFormat> {
        let v = self.string(s, "format", false)?;
        match v.value.as_str() {
            "csv" => Some(FileFormat::Csv),
            "parquet" => Some(FileFormat::Parquet),
            other => {
                self.error(
                    v.span,
                    format!("unknown format `{other}`; expected \"csv\" or \"parquet\""),
                );
                None
            }
        }
    }

    fn csv(&mut self, parent: &Section<'_>, reading: bool) -> CsvOptions {
        let mut o = CsvOptions::default();
        let Some(s) = self.section(parent, "csv", false) else {
            return o;
        };
        let allowed: &[&str] = if reading {
            &[
                "header",
                "delimiter",
                "quote",
                "quoting",
                "escape",
                "null",
                "null_quoted",
                "null_columns",
                "columns",
                "max_record_bytes",
                "encoding",
                "skip_lines",
                "trim",
            ]
        } else {
            &["header", "delimiter", "quote", "null"]
        };
        self.check_keys(&s, allowed);
        o.header = self.bool(&s, "header", true);
        match self.string(&s, "delimiter", false) {
            Some(v) if reading && v.value.len() > 1 && !v.value.contains(['\n', '\r']) => {
                o.delimiter = v.value.as_bytes()[0];
                o.delimiter_multi = Some(v.value.into_bytes());
            }
            _ => o.delimiter = self.char(&s, "delimiter", Some(b',')).unwrap_or(b','),
        }
        if reading && s.table.get("quote").and_then(|i| i.as_str()) == Some("") {
            o.quoting = Quoting::Off;
        } else {
            o.quote = self.char(&s, "quote", Some(b'"')).unwrap_or(b'"');
        }
        if let Some(v) = self.string(&s, "quoting", false) {
            match v.value.as_str() {
                "strict" if o.quoting != Quoting::Off => o.quoting = Quoting::Strict,
                "lenient" if o.quoting != Quoting::Off => o.quoting = Quoting::Lenient,
                "strict" | "lenient" => self.error(
                    v.span,
                    "`quoting` has no effect with `quote = \"\"` (no quoting); remove one",
                ),
                other => self.error(
                    v.span,
                    format!("unknown quoting `{other}`; expected \"strict\" or \"lenient\""),
                ),
            }
        }
        o.escape = self.char(&s, "escape", None);
        if let Some(null) = self.string_list(&s, "null") {
            o.null = null;
        }
        o.null_quoted = self.bool(&s, "null_quoted", false);
        if let Some(cols) = self.section(&s, "null_columns", false) {
            for (name, _) in cols.table.iter() {
                if let Some(markers) = self.string_list(&cols, name) {
                    o.null_columns.push((name.to_string(), markers));
                }
            }
        }
        o.columns = self.string_list(&s, "columns");
        o.max_record_bytes =
            self.integer(&s, "max_record_bytes", 1, o.max_record_bytes as i64) as u64;
        if let Some(v) = self.string(&s, "encoding", false) {
            match v.value.to_ascii_lowercase().replace('_', "-").as_str() {
                "utf-8" | "utf8" => o.encoding = Encoding::Utf8,
                "latin1" | "latin-1" | "iso-8859-1" => o.encoding = Encoding::Latin1,
                "windows-1252" | "cp1252" => o.encoding = Encoding::Windows1252,
                other => self.error(
                    v.span,
                    format!(
                        "unknown encoding `{other}`; expected \"utf-8\", \"latin1\" or \"windows-1252\""
                    ),
                ),
            }
        }
        o.skip_lines = self.integer(&s, "skip_lines", 0, 0) as u64;
        o.trim = self.bool(&s, "trim", false);
        if !o.header && o.columns.is_none() && reading {
            let span = s.span.clone();
            self.error(
                span,
                "with header = false, list the column names: columns = [\"a\", \"b\"]",
            );
        }
        o
    }

    fn source(&mut self, s: &Section<'_>) -> Option<SourceConfig> {
        self.check_keys(
            s,
            &[
                "url",
                "table",
                "key",
                "format",
                "csv",
                "types",
                "schema",
                "pool_size",
                "statement_timeout_ms",
                "lock_timeout_ms",
            ],
        );
        let format = self.format(s);
        let url = self.url(s, format);
        let schema = self.string(s, "schema", false);
        let db = self.db_options(s);
        let table = self.string(s, "table", false);
        let key = self.key_list(s);
        let csv = self.csv(s, true);
        let mut types = Vec::new();
        if let Some(t) = self.section(s, "types", false) {
            for (name, item) in t.table.iter() {
                let span = item.span();
                match item.as_str().map(str::parse::<ColumnType>) {
                    Some(Ok(ty)) => types.push((
                        Spanned {
                            value: name.to_string(),
                            span: t.key_span(name),
                        },
                        Spanned { value: ty, span },
                    )),
                    Some(Err(msg)) => self.error(span, msg),
                    None => self.error(
                        span,
                        format!("`source.types.{name}` must be a type name string"),
                    ),
                }
            }
        }
        let (url, mut location) = url?;
        self.set_schema(s, &mut location, schema);
        if matches!(
            location,
            Location::Sqlite { .. } | Location::Postgres { .. } | Location::Mysql { .. }
        ) {
            // A `table` of the wrong type was reported as such already.
            if table.is_none() && !s.table.contains_key("table") {
                self.missing(s, "table");
            }
            if key.is_none() && !s.table.contains_key("key") {
                let span = s.span.clone();
                self.diags.push(
                    Diagnostic::at(span, "missing `key` in [source]")
                        .with_help("name a unique, non-null column (usually the primary key): chunks are ranges of it"),
                );
            }
        }
        Some(SourceConfig {
            url,
            location,
            table,
            key,
            csv,
            types,
            db,
        })
    }

    /// Checks a database section's `pool_size` against `[chunks] parallel`, and sets the
    /// default: 8, or `parallel` when that is more.
    fn pool_size(
        &mut self,
        root: &Section<'_>,
        section: &str,
        location: &Location,
        db: &mut DbOptions,
        parallel: usize,
    ) {
        if !matches!(location, Location::Postgres { .. } | Location::Mysql { .. }) {
            return;
        }
        let parallel = parallel.min(u32::MAX as usize) as u32;
        match db.pool_size {
            None => db.pool_size = Some(parallel.max(DEFAULT_POOL_SIZE)),
            Some(n) if n < parallel => {
                let span = root
                    .table
                    .get(section)
                    .and_then(|s| s.as_table_like())
                    .and_then(|t| t.get("pool_size"))
                    .and_then(Item::span);
                self.diags.push(
                    Diagnostic::at(
                        span,
                        format!("pool_size = {n} is less than [chunks] parallel = {parallel}: each chunk in flight holds a connection, so chunks would wait for one"),
                    )
                    .with_help(format!("set pool_size = {parallel} or more, or lower parallel")),
                );
            }
            Some(_) => {}
        }
    }

    /// `pool_size`, `statement_timeout_ms` and `lock_timeout_ms`.
    fn db_options(&mut self, s: &Section<'_>) -> DbOptions {
        let opt = |w: &mut Self, key: &str, min: i64| {
            s.table
                .contains_key(key)
                .then(|| w.integer(s, key, min, min))
        };
        DbOptions {
            pool_size: opt(self, "pool_size", 1).map(|v| v.min(u32::MAX as i64) as u32),
            statement_timeout_ms: opt(self, "statement_timeout_ms", 0).map(|v| v as u64),
            lock_timeout_ms: opt(self, "lock_timeout_ms", 0).map(|v| v as u64),
        }
    }

    /// Puts `schema` into a PostgreSQL location; refuses it and the connection settings
    /// anywhere else.
    fn set_schema(
        &mut self,
        s: &Section<'_>,
        location: &mut Location,
        schema: Option<Spanned<String>>,
    ) {
        if let Location::Postgres { schema: into, .. } | Location::Mysql { schema: into, .. } =
            location
        {
            if let Some(v) = schema {
                if v.value.is_empty() {
                    self.error(
                        v.span,
                        "`schema` is empty; leave it out for the default (`public`, or the MySQL url's database)",
                    );
                } else {
                    *into = v.value;
                }
            }
            return;
        }
        let keys = [
            "schema",
            "pool_size",
            "statement_timeout_ms",
            "lock_timeout_ms",
        ];
        for key in keys {
            if let Some(item) = s.table.get(key) {
                let span = item.span();
                self.error(
                    span,
                    format!(
                        "`{key}` applies to PostgreSQL and MySQL urls only; {} is not one",
                        s.label()
                    ),
                );
            }
        }
    }

    fn target(&mut self, s: &Section<'_>) -> Option<TargetConfig> {
        self.check_keys(
            s,
            &[
                "url",
                "table",
                "format",
                "if_exists",
                "columns",
                "csv",
                "parquet",
                "write_mode",
                "schema",
                "pool_size",
                "statement_timeout_ms",
                "lock_timeout_ms",
                "indexes",
                "foreign_keys",
                "constraints",
            ],
        );
        let format = self.format(s);
        let url = self.url(s, format);
        let table = self.string(s, "table", false);
        let schema = self.string(s, "schema", false);
        let db = self.db_options(s);
        let write_mode_item = self.string(s, "write_mode", false);
        let write_mode = match &write_mode_item {
            None => WriteMode::Insert,
            Some(v) => match v.value.as_str() {
                "insert" => WriteMode::Insert,
                "upsert" => WriteMode::Upsert,
                "replace-chunk" => WriteMode::ReplaceChunk,
                other => {
                    self.error(v.span.clone(), format!("unknown write_mode `{other}`; expected \"insert\", \"upsert\" or \"replace-chunk\""));
                    WriteMode::Insert
                }
            },
        };
        let if_exists = match self.string(s, "if_exists", false) {
            None => IfExists::Fail,
            Some(v) => match v.value.as_str() {
                "fail" => IfExists::Fail,
                "replace" => IfExists::Replace,
                "append" => IfExists::Append,
                other => {
                    self.error(v.span, format!("unknown if_exists `{other}`; expected \"fail\", \"replace\" or \"append\""));
                    IfExists::Fail
                }
            },
        };
        let csv = self.csv(s, false);
        let parquet = self.parquet(s);
        let columns = match self.section(s, "columns", true) {
            Some(c) => self.columns(&c),
            None => Vec::new(),
        };
        let (url, mut location) = url?;
        self.set_schema(s, &mut location, schema);
        self.same_names(&location, &columns);
        let table_name = table.as_ref().map_or("", |t| t.value.as_str());
        let decls = self.declarations(s, table_name, &location, &columns);
        if let Some(v) = &write_mode_item {
            if write_mode != WriteMode::Insert
                && !matches!(location, Location::Postgres { .. } | Location::Mysql { .. })
            {
                self.error(
                    v.span.clone(),
                    format!(
                        "write_mode = \"{}\" works for PostgreSQL and MySQL targets only",
                        v.value
                    ),
                );
            }
            if write_mode == WriteMode::Upsert && !columns.iter().any(|c| c.primary_key) {
                self.error(v.span.clone(), "write_mode = \"upsert\" needs a primary key: set primary_key = true on the key column(s) in [target.columns]");
            }
        }
        match &location {
            Location::Sqlite { .. } | Location::Postgres { .. } | Location::Mysql { .. }
                if table.is_none() && !s.table.contains_key("table") =>
            {
                self.missing(s, "table")
            }
            Location::Files { .. } if if_exists == IfExists::Append => {
                let span = s.table.get("if_exists").and_then(Item::span);
                self.error(span, "if_exists = \"append\" works for database targets only; a file target is written whole");
            }
            _ => {}
        }
        Some(TargetConfig {
            url,
            location,
            table,
            if_exists,
            columns,
            csv,
            parquet,
            write_mode,
            db,
            indexes: decls.indexes,
            foreign_keys: decls.foreign_keys,
            constraints: decls.constraints,
        })
    }

    /// Reports target columns whose names the target database takes for one: SQLite
    /// compares column names with ASCII case folded, MySQL and MariaDB with any case
    /// folded. (PostgreSQL keeps quoted names apart; files keep every name.)
    fn same_names(&mut self, location: &Location, columns: &[TargetColumn]) {
        let (fold, db): (fn(&str) -> String, &str) = match location {
            Location::Sqlite { .. } => (|n| n.to_ascii_lowercase(), "SQLite"),
            Location::Mysql { .. } => (|n| n.to_lowercase(), "MySQL and MariaDB"),
            _ => return,
        };
        let mut seen: std::collections::HashMap<String, &TargetColumn> = Default::default();
        for c in columns {
            match seen.get(&fold(&c.name.value)) {
                Some(first) => {
                    let line = first
                        .name
                        .span
                        .as_ref()
                        .map(|sp| self.diags.line_col(sp.start).0);
                    let at = line.map_or(String::new(), |l| format!(" (line {l})"));
                    self.diags.push(
                        Diagnostic::at(
                            c.name.span.clone(),
                            format!(
                                "column `{}` and column `{}`{at} are one column to {db}, which compares column names without case",
                                c.name.value, first.name.value
                            ),
                        )
                        .with_help("rename one of them"),
                    );
                }
                None => {
                    seen.insert(fold(&c.name.value), c);
                }
            }
        }
    }

    fn parquet(&mut self, parent: &Section<'_>) -> ParquetOptions {
        let mut o = ParquetOptions::default();
        let Some(s) = self.section(parent, "parquet", false) else {
            return o;
        };
        self.check_keys(&s, &["compression", "row_group_rows"]);
        if let Some(v) = self.string(&s, "compression", false) {
            match parse_compression(&v.value) {
                Ok(c) => o.compression = c,
                Err(msg) => self.error(v.span, msg),
            }
        }
        o.row_group_rows = self.integer(&s, "row_group_rows", 1, o.row_group_rows as i64) as usize;
        o
    }

    fn columns(&mut self, s: &Section<'_>) -> Vec<TargetColumn> {
        let mut out = Vec::new();
        for (name, item) in s.table.iter() {
            let Some(table) = item.as_table_like() else {
                let span = item.span();
                self.diags.push(
                    Diagnostic::at(span, format!("column `{name}` must be a table"))
                        .with_help(format!("{name} = {{ type = \"text\", expr = \"{name}\" }}")),
                );
                continue;
            };
            let c = Section {
                table,
                path: format!("{}.{name}", s.path),
                span: item.span().or(s.key_span(name)),
            };
            self.check_keys(
                &c,
                &[
                    "type",
                    "expr",
                    "primary_key",
                    "nullable",
                    "timezone",
                    "format",
                    "default",
                    "identity",
                ],
            );
            let ty =
                self.string(&c, "type", true)
                    .and_then(|t| match t.value.parse::<ColumnType>() {
                        Ok(ty) => Some(Spanned {
                            value: ty,
                            span: t.span,
                        }),
                        Err(msg) => {
                            self.error(t.span, msg);
                            None
                        }
                    });
            let expr = self.string(&c, "expr", true);
            let primary_key = self.bool(&c, "primary_key", false);
            let nullable = self.bool(&c, "nullable", !primary_key);
            if primary_key && nullable {
                let span = c.table.get("nullable").and_then(Item::span);
                self.error(
                    span,
                    format!("primary key column `{name}` cannot be nullable"),
                );
            }
            let timezone = self.string(&c, "timezone", false);
            if let Some(tz) = &timezone {
                let zoned = ty
                    .as_ref()
                    .is_some_and(|t| t.value == ColumnType::TimestampTz);
                if !zoned {
                    self.error(
                        tz.span.clone(),
                        format!(
                            "`timezone` applies to timestamptz columns only; `{name}` is not one"
                        ),
                    );
                } else if let Err(msg) = crate::types::cast::check_zone(&tz.value) {
                    self.error(tz.span.clone(), msg);
                }
            }
            let format = self.string(&c, "format", false);
            if let (Some(f), Some(t)) = (&format, &ty)
                && let Err(msg) = crate::types::datefmt::check_format(&f.value, &t.value)
            {
                self.error(f.span.clone(), msg);
            }
            let default = self.default(&c);
            let identity = self.bool(&c, "identity", false);
            if identity {
                let span = c.key_span("identity");
                let integer = ty.as_ref().is_none_or(|t| {
                    matches!(
                        t.value,
                        ColumnType::SmallInt | ColumnType::Int | ColumnType::BigInt
                    )
                });
                if !primary_key || !integer {
                    self.error(
                        span.clone(),
                        format!("`identity` applies to an integer primary key column (smallint, int or bigint with primary_key = true); `{name}` is not one"),
                    );
                }
                if default.is_some() {
                    self.error(
                        span,
                        format!("column `{name}` has both `identity` and `default`; an identity column is numbered by the target"),
                    );
                }
            }
            if let (Some(ty), Some(expr)) = (ty, expr) {
                out.push(TargetColumn {
                    name: Spanned {
                        value: name.to_string(),
                        span: s.key_span(name),
                    },
                    ty,
                    expr,
                    primary_key,
                    nullable,
                    timezone,
                    format,
                    default,
                    identity,
                });
            }
        }
        if out.is_empty() && s.table.is_empty() {
            let span = s.span.clone();
            self.error(span, "[target.columns] lists no columns");
        }
        out
    }

    fn limits(&mut self, s: &Section<'_>) -> Limits {
        self.check_keys(s, &["max_rejects", "max_reject_ratio"]);
        let max_rejects = s
            .table
            .contains_key("max_rejects")
            .then(|| self.integer(s, "max_rejects", 0, 0) as u64);
        let max_reject_ratio = s.table.get("max_reject_ratio").and_then(|item| {
            let v = item
                .as_float()
                .or_else(|| item.as_integer().map(|i| i as f64));
            match v {
                Some(v) if (0.0..=1.0).contains(&v) => Some(v),
                _ => {
                    self.error(
                        item.span(),
                        "`limits.max_reject_ratio` must be a number from 0 to 1",
                    );
                    None
                }
            }
        });
        Limits {
            max_rejects,
            max_reject_ratio,
        }
    }

    /// `[[checks]]`: each entry names one rule, optionally a column and a policy.
    fn checks(&mut self, root: &Section<'_>, target: Option<&TargetConfig>) -> Vec<CheckConfig> {
        const RULES: [&str; 9] = [
            "not_null",
            "unique",
            "min",
            "max",
            "regex",
            "accepted",
            "references",
            "expr",
            "range",
        ];
        let Some(item) = root.table.get("checks") else {
            return Vec::new();
        };
        let Some(array) = item.as_array_of_tables() else {
            let span = item.span().or(root.key_span("checks"));
            self.diags.push(
                Diagnostic::at(span, "`checks` must be an array of tables")
                    .with_help("write each check as [[checks]] followed by its keys"),
            );
            return Vec::new();
        };
        let columns: Vec<&str> = target
            .map(|t| t.columns.iter().map(|c| c.name.value.as_str()).collect())
            .unwrap_or_default();
        let mut out = Vec::new();
        for (i, table) in array.iter().enumerate() {
            let s = Section {
                table,
                path: format!("checks.{i}"),
                span: table.span().or(root.key_span("checks")),
            };
            let mut allowed = vec!["name", "column", "policy"];
            allowed.extend(RULES.iter().filter(|r| **r != "range"));
            self.check_keys(&s, &allowed);
            let column = self.string(&s, "column", false);
            if let Some(c) = &column
                && target.is_some()
                && !columns.contains(&c.value.as_str())
            {
                let d = Diagnostic::at(
                    c.span.clone(),
                    format!(
                        "check names column `{}`, which [target.columns] does not declare",
                        c.value
                    ),
                );
                self.diags
                    .push(match suggest(&c.value, columns.iter().copied()) {
                        Some(best) => d.with_help(format!("did you mean `{best}`?")),
                        None => d.with_help(format!("target columns are: {}", columns.join(", "))),
                    });
            }
            let policy = match self.string(&s, "policy", false) {
                None => Policy::Reject,
                Some(v) => match v.value.as_str() {
                    "reject" => Policy::Reject,
                    "fail" => Policy::Fail,
                    "warn" => Policy::Warn,
                    other => {
                        self.error(
                            v.span,
                            format!("unknown policy `{other}`; expected \"reject\", \"fail\" or \"warn\""),
                        );
                        Policy::Reject
                    }
                },
            };
            let present: Vec<&str> = RULES
                .iter()
                .copied()
                .filter(|r| s.table.contains_key(r))
                .collect();
            let kind_span = present
                .first()
                .and_then(|k| s.key_span(k))
                .or(s.span.clone());
            let is_range = present.iter().all(|k| *k == "min" || *k == "max");
            if present.is_empty() || (present.len() > 1 && !is_range) {
                self.diags.push(
                    Diagnostic::at(
                        kind_span,
                        if present.is_empty() {
                            "a check needs one rule".to_string()
                        } else {
                            format!("a check has one rule, this one has {}", present.join(", "))
                        },
                    )
                    .with_help("rules: not_null = true, unique = true, min/max, regex, accepted = [...], references = \"table.column\", expr = \"SQL\""),
                );
                continue;
            }
            let needs_column = present[0] != "expr";
            if needs_column && column.is_none() {
                let span = s.span.clone();
                self.error(span, format!("a `{}` check needs `column`", present[0]));
                continue;
            }
            if !needs_column && column.is_some() {
                let span = column.as_ref().and_then(|c| c.span.clone());
                self.diags.push(
                    Diagnostic::at(
                        span,
                        "an `expr` check is over the whole row; it takes no `column`",
                    )
                    .with_help("name the columns in the expression"),
                );
                continue;
            }
            let kind = match present[0] {
                "not_null" | "unique" => {
                    let key = present[0];
                    if !self.bool(&s, key, false) {
                        let span = s.key_span(key);
                        self.error(
                            span,
                            format!("`{key}` can only be true; remove the check instead"),
                        );
                        continue;
                    }
                    if key == "not_null" {
                        CheckKind::NotNull
                    } else {
                        CheckKind::Unique
                    }
                }
                "min" | "max" => CheckKind::Range {
                    min: self.literal(&s, "min"),
                    max: self.literal(&s, "max"),
                },
                "regex" => {
                    let Some(v) = self.string(&s, "regex", true) else {
                        continue;
                    };
                    if let Err(e) = regex::Regex::new(&v.value) {
                        self.error(v.span, format!("invalid regex: {e}"));
                        continue;
                    }
                    CheckKind::Regex(v.value)
                }
                "accepted" => {
                    let item = s.table.get("accepted").expect("present");
                    let values: Option<Vec<String>> = item
                        .as_array()
                        .and_then(|a| a.iter().map(literal_sql).collect());
                    match values {
                        Some(v) if !v.is_empty() => CheckKind::Accepted(v),
                        _ => {
                            self.error(
                                item.span(),
                                "`accepted` must be a non-empty list of strings or numbers",
                            );
                            continue;
                        }
                    }
                }
                "references" => {
                    let Some(v) = self.string(&s, "references", true) else {
                        continue;
                    };
                    match v.value.rsplit_once('.') {
                        Some((t, c)) if !t.is_empty() && !c.is_empty() => CheckKind::References {
                            table: t.to_string(),
                            column: c.to_string(),
                        },
                        _ => {
                            self.error(
                                v.span,
                                format!(
                                    "`references` must be \"table.column\", not \"{}\"",
                                    v.value
                                ),
                            );
                            continue;
                        }
                    }
                }
                _ => {
                    let Some(v) = self.string(&s, "expr", true) else {
                        continue;
                    };
                    CheckKind::Expr(v.value)
                }
            };
            let default_name = match (&column, &kind) {
                (Some(c), k) => format!("{} {}", c.value, kind_label(k)),
                (None, _) => format!("check {}", i + 1),
            };
            let name = self
                .string(&s, "name", false)
                .map_or(default_name, |n| n.value);
            out.push(CheckConfig {
                name,
                column,
                kind: Spanned {
                    value: kind,
                    span: kind_span,
                },
                policy,
            });
        }
        out
    }

    /// A `min`/`max` bound as a SQL literal.
    fn literal(&mut self, s: &Section<'_>, key: &str) -> Option<String> {
        let item = s.table.get(key)?;
        let v = item.as_value().and_then(literal_sql);
        if v.is_none() {
            self.error(
                item.span(),
                format!("`{key}` must be a number or a string (dates as \"2024-01-31\")"),
            );
        }
        v
    }

    fn chunks(&mut self, s: &Section<'_>) -> ChunkConfig {
        self.check_keys(
            s,
            &[
                "rows",
                "parallel",
                "batch_rows",
                "retry_seconds",
                "lease_seconds",
            ],
        );
        let d = ChunkConfig::default();
        ChunkConfig {
            rows: self.integer(s, "rows", 1, d.rows as i64) as u64,
            parallel: self.integer(s, "parallel", 1, d.parallel as i64) as usize,
            batch_rows: self.integer(s, "batch_rows", 1, d.batch_rows as i64) as usize,
            retry_seconds: self.integer(s, "retry_seconds", 0, d.retry_seconds as i64) as u64,
            // A lease shorter than two heartbeats (a third of it each) would expire
            // under a worker that is only a little slow.
            lease_seconds: self.integer(s, "lease_seconds", 2, d.lease_seconds as i64) as u64,
        }
    }
}

/// A TOML number or string as a SQL literal.
fn literal_sql(v: &toml_edit::Value) -> Option<String> {
    match v {
        toml_edit::Value::Integer(i) => Some(i.value().to_string()),
        toml_edit::Value::Float(f) if f.value().is_finite() => Some(format!("{:?}", f.value())),
        toml_edit::Value::String(s) => Some(format!("'{}'", s.value().replace('\'', "''"))),
        _ => None,
    }
}

/// How a rule reads in a default check name.
fn kind_label(k: &CheckKind) -> &'static str {
    match k {
        CheckKind::NotNull => "not_null",
        CheckKind::Unique => "unique",
        CheckKind::Range { .. } => "range",
        CheckKind::Regex(_) => "regex",
        CheckKind::Accepted(_) => "accepted",
        CheckKind::References { .. } => "references",
        CheckKind::Expr(_) => "expr",
    }
}

fn join_path(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    }
}

/// Replaces each `${NAME}` with the variable's value; an unset variable is an error.
pub fn expand_env(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| format!("unclosed `${{` in \"{}\"", redact(text)))?;
        let name = &after[..end];
        let value = env(name).ok_or_else(|| format!("environment variable `{name}` is not set"))?;
        out.push_str(&value);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Parses a Parquet compression name: `snappy`, `zstd`, `zstd(3)`, `lz4`, `gzip`, `gzip(6)`, `none`.
pub fn parse_compression(name: &str) -> Result<parquet::basic::Compression, String> {
    use parquet::basic::{Compression, GzipLevel, ZstdLevel};
    let lower = name.to_ascii_lowercase();
    let (base, level) = match lower.split_once('(') {
        Some((b, l)) => (
            b.to_string(),
            l.strip_suffix(')')
                .and_then(|l| l.trim().parse::<u32>().ok()),
        ),
        None => (lower.clone(), None),
    };
    let bad = || {
        format!(
            "unknown compression `{name}`; expected snappy, zstd, zstd(1-22), lz4, gzip, gzip(0-9) or none"
        )
    };
    Ok(match (base.as_str(), level) {
        ("snappy", None) => Compression::SNAPPY,
        ("lz4", None) => Compression::LZ4_RAW,
        ("none" | "uncompressed", None) => Compression::UNCOMPRESSED,
        ("zstd", None) => Compression::ZSTD(ZstdLevel::default()),
        ("zstd", Some(l)) => Compression::ZSTD(ZstdLevel::try_new(l as i32).map_err(|_| bad())?),
        ("gzip", None) => Compression::GZIP(GzipLevel::default()),
        ("gzip", Some(l)) => Compression::GZIP(GzipLevel::try_new(l).map_err(|_| bad())?),
        _ => return Err(bad()),
    })
}
