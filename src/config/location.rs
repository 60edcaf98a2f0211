//! Where data lives: the `url` of a source or target, resolved and redacted.

use std::path::{Path, PathBuf};

/// A file format for file sources and targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileFormat {
    /// Comma (or other) separated values.
    Csv,
    /// Apache Parquet.
    Parquet,
}

impl FileFormat {
    /// The format a file name's extension implies.
    pub fn from_extension(path: &str) -> Option<Self> {
        let lower = path.trim_end_matches(['/', '\\']).to_ascii_lowercase();
        if lower.ends_with(".csv") || lower.ends_with(".tsv") {
            Some(FileFormat::Csv)
        } else if lower.ends_with(".parquet") || lower.ends_with(".pq") {
            Some(FileFormat::Parquet)
        } else {
            None
        }
    }

    /// The extension part files get.
    pub fn extension(self) -> &'static str {
        match self {
            FileFormat::Csv => "csv",
            FileFormat::Parquet => "parquet",
        }
    }
}

/// A resolved `url` from a pipeline file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A SQLite database file.
    Sqlite {
        /// Absolute path of the database file.
        path: PathBuf,
    },
    /// A PostgreSQL database.
    Postgres {
        /// The connection URL, password included; it prints redacted.
        url: SecretUrl,
        /// The schema the table lives in (`schema` in [source] or [target]). Default:
        /// `public`.
        schema: String,
    },
    /// A MySQL or MariaDB server.
    Mysql {
        /// The connection URL, password included; it prints redacted.
        url: SecretUrl,
        /// The database the table lives in (`schema` in [source] or [target]). Default:
        /// the URL's database.
        schema: String,
    },
    /// Files: a file or glob for a source, a directory of part files for a target.
    Files {
        /// Absolute path or glob pattern.
        path: PathBuf,
        /// The files' format.
        format: FileFormat,
    },
}

impl Location {
    /// Parses `url` (after `${VAR}` expansion); relative paths are taken from `base`.
    ///
    /// `format` is the explicit `format` key, if the pipeline set one.
    pub fn parse(url: &str, base: &Path, format: Option<FileFormat>) -> Result<Self, String> {
        let resolve = |p: &str| -> PathBuf {
            let p = Path::new(p);
            normalize(&if p.is_absolute() {
                p.to_path_buf()
            } else {
                base.join(p)
            })
        };
        if let Some(rest) = url.strip_prefix("sqlite:") {
            let rest = rest.strip_prefix("//").unwrap_or(rest);
            let rest = rest.split('?').next().unwrap_or(rest);
            if rest.is_empty() || rest == ":memory:" {
                return Err("a sqlite url needs a file path, e.g. sqlite://data/shop.db".into());
            }
            return Ok(Location::Sqlite {
                path: resolve(rest),
            });
        }
        if let Some((scheme, _)) = url.split_once("://") {
            match scheme {
                "postgres" | "postgresql" => {
                    return check_postgres_url(url).map(|()| Location::Postgres {
                        url: SecretUrl(url.to_string()),
                        schema: "public".to_string(),
                    });
                }
                "mysql" | "mariadb" => {
                    let url = SecretUrl(url.to_string());
                    return check_mysql_url(&url).map(|schema| Location::Mysql { url, schema });
                }
                _ => {
                    return Err(format!(
                        "unknown url scheme `{scheme}`; expected sqlite://PATH, postgres://USER@HOST/DB, mysql://USER@HOST/DB or a CSV/Parquet path"
                    ));
                }
            };
        }
        let path = url.strip_prefix("file://").unwrap_or(url);
        let format = format
            .or_else(|| FileFormat::from_extension(path))
            .ok_or_else(|| {
                format!(
                    "cannot tell the file format of `{path}`; set format = \"csv\" or \"parquet\""
                )
            })?;
        Ok(Location::Files {
            path: resolve(path),
            format,
        })
    }
}

/// A connection URL that may hold a password. `Debug` and [`SecretUrl::shown`] redact it;
/// only [`SecretUrl::expose`] gives the password, to connect with.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretUrl(String);

impl SecretUrl {
    /// The URL with its password, for the driver only: never put it in a message.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The URL with the password hidden, for messages.
    pub fn shown(&self) -> String {
        redact(&self.0)
    }
}

impl std::fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.shown())
    }
}

/// Checks a PostgreSQL URL without connecting: it parses, and names a database.
fn check_postgres_url(url: &str) -> Result<(), String> {
    use std::str::FromStr;
    let opts = sqlx::postgres::PgConnectOptions::from_str(url).map_err(|e| {
        format!(
            "invalid PostgreSQL url `{}`: {}",
            redact(url),
            redact(&e.to_string())
        )
    })?;
    if opts.get_database().is_none() {
        return Err(format!(
            "the PostgreSQL url `{}` names no database; add it: postgres://USER@HOST:PORT/DATABASE",
            redact(url)
        ));
    }
    Ok(())
}

/// Checks a MySQL/MariaDB URL without connecting: it parses, and names a database,
/// which it returns.
fn check_mysql_url(url: &SecretUrl) -> Result<String, String> {
    let opts = crate::db::mysql::options(url)?;
    match opts.get_database() {
        Some(db) if !db.is_empty() => Ok(db.to_string()),
        _ => Err(format!(
            "the MySQL url `{}` names no database; add it: mysql://USER@HOST:PORT/DATABASE",
            url.shown()
        )),
    }
}

/// Removes `.` and `..` components without touching the file system (the file may not
/// exist yet), so messages show `samples/x.csv` rather than `pipelines/../samples/x.csv`.
fn normalize(path: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir
                if matches!(out.components().next_back(), Some(Component::Normal(_))) =>
            {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// Hides the password in every `scheme://user:password@host` found in `text`.
///
/// Every message and log line that can hold a URL passes through this.
pub fn redact(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("://") {
        let (head, tail) = rest.split_at(i + 3);
        out.push_str(head);
        let authority_end = tail
            .find(['/', '?', '#', ' ', '\n', '"', '\''])
            .unwrap_or(tail.len());
        let authority = &tail[..authority_end];
        match (authority.rfind('@'), authority.find(':')) {
            (Some(at), Some(colon)) if colon < at => {
                out.push_str(&authority[..colon]);
                out.push_str(":***");
                out.push_str(&authority[at..]);
            }
            _ => out.push_str(authority),
        }
        rest = &tail[authority_end..];
    }
    out.push_str(rest);
    out
}

/// A path as messages show it: relative to the working directory when it is below it.
pub fn show_path(path: &Path) -> String {
    let cwd = std::env::current_dir().ok();
    let rel = cwd.as_deref().and_then(|cwd| path.strip_prefix(cwd).ok());
    rel.unwrap_or(path).display().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_passwords_anywhere_in_text() {
        assert_eq!(
            redact("cannot connect to postgres://app:s3cr:et@db:5432/x?sslmode=require"),
            "cannot connect to postgres://app:***@db:5432/x?sslmode=require"
        );
        assert_eq!(
            redact("mysql://root@localhost/test"),
            "mysql://root@localhost/test"
        );
        assert_eq!(
            redact("a://u:p@h and b://v:q@i"),
            "a://u:***@h and b://v:***@i"
        );
    }

    #[test]
    fn postgres_urls_parse_and_never_show_their_password() {
        let l =
            Location::parse("postgres://app:s3cret@db:5432/shop", Path::new("/"), None).unwrap();
        let Location::Postgres { url, schema } = &l else {
            panic!("{l:?}");
        };
        assert_eq!(schema, "public");
        assert_eq!(url.expose(), "postgres://app:s3cret@db:5432/shop");
        assert!(!format!("{l:?}").contains("s3cret"), "{l:?}");
        assert_eq!(url.shown(), "postgres://app:***@db:5432/shop");
        let e =
            Location::parse("postgresql://app:s3cret@db:5432", Path::new("/"), None).unwrap_err();
        assert_eq!(
            e,
            "the PostgreSQL url `postgresql://app:***@db:5432` names no database; add it: postgres://USER@HOST:PORT/DATABASE"
        );
        let e = Location::parse("postgres://app:s3cret@db:notaport/x", Path::new("/"), None)
            .unwrap_err();
        assert!(!e.contains("s3cret"), "{e}");
    }

    #[test]
    fn resolves_relative_paths_against_the_pipeline_folder() {
        let base = Path::new("/pipes");
        assert_eq!(
            Location::parse("sqlite://../data/shop.db", base, None).unwrap(),
            Location::Sqlite {
                path: "/data/shop.db".into()
            }
        );
        assert_eq!(
            Location::parse("/abs/x.csv", base, None).unwrap(),
            Location::Files {
                path: "/abs/x.csv".into(),
                format: FileFormat::Csv
            }
        );
        assert_eq!(
            Location::parse("out/dir", base, None).unwrap_err(),
            "cannot tell the file format of `out/dir`; set format = \"csv\" or \"parquet\""
        );
    }
}
