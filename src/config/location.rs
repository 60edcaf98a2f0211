//! Where data lives: the `url` of a source or target, resolved and redacted.

use std::path::{Path, PathBuf};

use crate::secret::{SecretUrl, percent_decode, redact};

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

/// Checks a PostgreSQL URL without connecting: it parses, and names a database.
fn check_postgres_url(url: &str) -> Result<(), String> {
    url_database(
        url,
        "PostgreSQL",
        "postgres://USER@HOST:PORT/DATABASE",
        Some("dbname"),
    )
    .map(|_| ())
}

/// Checks a MySQL/MariaDB URL without connecting: it parses, and names a database,
/// which it returns.
fn check_mysql_url(url: &SecretUrl) -> Result<String, String> {
    url_database(
        url.expose(),
        "MySQL",
        "mysql://USER@HOST:PORT/DATABASE",
        None,
    )
}

/// The database a server URL names in its path (or in the query key `query_key`), after
/// checking that the URL parses. The driver reads the rest of the URL when it connects;
/// this check needs no connection and knows no driver.
fn url_database(
    url: &str,
    kind: &str,
    example: &str,
    query_key: Option<&str>,
) -> Result<String, String> {
    let parsed =
        url::Url::parse(url).map_err(|e| format!("invalid {kind} url `{}`: {e}", redact(url)))?;
    let in_path = percent_decode(parsed.path().trim_start_matches('/'));
    let in_query = || {
        let key = query_key?;
        parsed
            .query_pairs()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.into_owned())
    };
    match Some(in_path).filter(|d| !d.is_empty()).or_else(in_query) {
        Some(db) if !db.is_empty() => Ok(db),
        _ => Err(format!(
            "the {kind} url `{}` names no database; add it: {example}",
            redact(url)
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
