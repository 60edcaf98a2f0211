//! Passwords in connection URLs: [`SecretUrl`] keeps one out of every `Debug` and
//! message, and [`redact`] hides any that reaches a text.

/// A connection URL that may hold a password. `Debug` and [`SecretUrl::shown`] redact it;
/// only [`SecretUrl::expose`] gives the password, to connect with.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretUrl(pub(crate) String);

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
pub fn percent_decode(text: &str) -> String {
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
}
