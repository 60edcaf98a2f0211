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

/// Hides every credential in every `scheme://…` URL found in `text`: the password of the
/// user-info (`user:password@`), and the value of each query parameter that holds one
/// (`password`, `sslpassword` and every other key naming a password, a secret or a
/// token, also when the key is percent-encoded, as drivers decode it). Paths, such as
/// a `.pgpass` file's or a certificate's, stay visible.
///
/// Every message and log line that can hold a URL passes through this.
pub fn redact(text: &str) -> String {
    // A URL in a message ends at a blank or at the quote that encloses it.
    const END: &[char] = &[' ', '\t', '\r', '\n', '"', '\'', '`', '<', '>'];
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("://") {
        let (head, tail) = rest.split_at(i + 3);
        out.push_str(head);
        let mut url_end = tail.find(END).unwrap_or(tail.len());
        // `URL: message` (how errors name a place): the colon is the message's.
        if url_end > 0 && tail[..url_end].ends_with(':') {
            url_end -= 1;
        }
        let url = &tail[..url_end];
        // The user-info ends at the last `@` before the path: a password may hold `?`
        // or `#` unescaped, a query may hold `@`.
        let path = url.find('/').unwrap_or(url.len());
        let from = url[..path].rfind('@').unwrap_or(0);
        let authority_end = url[from..]
            .find(['/', '?', '#'])
            .map_or(url.len(), |e| from + e);
        let authority = &url[..authority_end];
        match (authority.rfind('@'), authority.find(':')) {
            (Some(at), Some(colon)) if colon < at => {
                out.push_str(&authority[..colon]);
                out.push_str(":***");
                out.push_str(&authority[at..]);
            }
            _ => out.push_str(authority),
        }
        let after = &url[authority_end..];
        let fragment = after.find('#').unwrap_or(after.len());
        match after[..fragment].split_once('?') {
            Some((path, query)) => {
                out.push_str(path);
                out.push('?');
                for (n, pair) in query.split('&').enumerate() {
                    if n > 0 {
                        out.push('&');
                    }
                    match pair.split_once('=') {
                        Some((key, _)) if is_secret_key(key) => {
                            out.push_str(key);
                            out.push_str("=***");
                        }
                        _ => out.push_str(pair),
                    }
                }
                out.push_str(&after[fragment..]);
            }
            None => out.push_str(after),
        }
        rest = &tail[url_end..];
    }
    out.push_str(rest);
    out
}

/// Whether a URL query key names a credential, read as a driver reads it: percent- and
/// `+`-decoded; case, `-` and `_` do not matter (`sslpassword`, `ssl-password`,
/// `PassWord`, `pass%77ord`).
fn is_secret_key(key: &str) -> bool {
    let key: String = percent_decode(&key.replace('+', " "))
        .to_lowercase()
        .chars()
        .filter(|c| !matches!(c, '-' | '_' | ' ' | '.'))
        .collect();
    [
        "password",
        "passwd",
        "pwd",
        "secret",
        "token",
        "apikey",
        "credential",
    ]
    .iter()
    .any(|w| key.contains(w))
        || key == "pass"
}

/// `%XX` escapes decoded; an invalid escape stays as written, invalid UTF-8 is replaced.
pub(crate) fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (bytes[i], bytes.get(i + 1), bytes.get(i + 2)) {
            (b'%', Some(&h), Some(&l)) if hex(h).is_some() && hex(l).is_some() => {
                out.push((hex(h).unwrap_or(0) * 16 + hex(l).unwrap_or(0)) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
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
    fn redacts_every_credential_of_a_query() {
        for (url, shown) in [
            (
                "postgres://u@h/db?password=S3CR3T",
                "postgres://u@h/db?password=***",
            ),
            (
                "postgres://u@h/db?sslmode=require&sslpassword=S3CR3T&application_name=x",
                "postgres://u@h/db?sslmode=require&sslpassword=***&application_name=x",
            ),
            (
                "postgresql://u@h:5432/db?pass%77ord=S3CR3T%21#frag",
                "postgresql://u@h:5432/db?pass%77ord=***#frag",
            ),
            (
                "mysql://root@h/test?ssl-mode=DISABLED&PASSWORD=S3CR3T",
                "mysql://root@h/test?ssl-mode=DISABLED&PASSWORD=***",
            ),
            (
                "mariadb://u:S3CR3T@h/test?ssl_password=S3CR3T&sslrootcert=/etc/ca.pem",
                "mariadb://u:***@h/test?ssl_password=***&sslrootcert=/etc/ca.pem",
            ),
            // A password with `?` or `#` unescaped, a query value with `@`.
            ("postgres://u:S3?CR#3T@h/db", "postgres://u:***@h/db"),
            (
                "postgres://u@h/db?password=S3CR3T@x&passfile=/home/u/.pgpass",
                "postgres://u@h/db?password=***&passfile=/home/u/.pgpass",
            ),
        ] {
            assert_eq!(redact(url), shown);
            let text = format!("cannot connect to `{url}`: refused; also \"{url}\"");
            assert!(!redact(&text).contains("S3"), "{}", redact(&text));
            assert!(!redact(&text).contains("CR3T"), "{}", redact(&text));
        }
        assert_eq!(
            redact("no url here: a=b&password=x"),
            "no url here: a=b&password=x"
        );
        assert_eq!(
            redact("postgres://u@h:1/db?password=S3CR3T: connection refused"),
            "postgres://u@h:1/db?password=***: connection refused"
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
