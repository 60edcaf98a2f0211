//! The strict record splitter: the reference reading of a CSV file, used to plan files the
//! fast scan declines and to decode the records the fast decoder declines.
//!
//! Every byte of the file ends up in a record, a blank line, or a set-aside span with its
//! reason: the end of the file inside quotes, a record longer than `max_record_bytes`, or
//! quoting that RFC 4180 does not allow never becomes a value.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use crate::config::{CsvOptions, Encoding, Quoting};
use crate::{Error, Result};

/// How records are split, from the CSV options.
#[derive(Debug, Clone)]
pub(crate) struct Dialect {
    /// One or more bytes between fields.
    pub delimiter: Vec<u8>,
    /// `None` when fields are never quoted (`quote = ""`).
    pub quote: Option<u8>,
    pub escape: Option<u8>,
    pub lenient: bool,
    pub trim: bool,
    pub max_record_bytes: usize,
}

impl Dialect {
    pub fn of(opts: &CsvOptions) -> Dialect {
        Dialect {
            delimiter: opts.delimiter_bytes(),
            quote: (opts.quoting != Quoting::Off).then_some(opts.quote),
            escape: opts.escape,
            lenient: opts.quoting == Quoting::Lenient,
            trim: opts.trim,
            max_record_bytes: usize::try_from(opts.max_record_bytes).unwrap_or(usize::MAX),
        }
    }

    fn is_blank(&self, b: u8) -> bool {
        (b == b' ' || b == b'\t') && !self.delimiter.contains(&b)
    }
}

/// The fields of the last record split: decoded bytes, where each ends, and whether each
/// was quoted (a quoted empty field is an empty string, an unquoted one may be NULL).
#[derive(Debug, Default)]
pub(crate) struct Fields {
    pub bytes: Vec<u8>,
    pub ends: Vec<usize>,
    pub quoted: Vec<bool>,
}

impl Fields {
    fn clear(&mut self) {
        self.bytes.clear();
        self.ends.clear();
        self.quoted.clear();
    }

    fn end_field(&mut self, quoted: bool) {
        self.ends.push(self.bytes.len());
        self.quoted.push(quoted);
    }

    /// Field `i`'s decoded bytes.
    pub fn get(&self, i: usize) -> &[u8] {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.bytes[start..self.ends[i]]
    }

    pub fn len(&self) -> usize {
        self.ends.len()
    }
}

/// What [`split`] found at the start of its input.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Split {
    /// A record of `len` bytes, its line end included; its fields are in [`Fields`].
    Record(usize),
    /// `len` bytes that are set aside as one unreadable record, with why.
    Bad(usize, String),
    /// Blank lines, which belong to no record.
    Blank(usize),
    /// The input ends inside a record and more may follow.
    More,
    /// Nothing is left.
    End,
}

/// Splits the record at the start of `buf` (whose first byte is on `line`). `eof` says that
/// nothing follows `buf`.
pub(crate) fn split(buf: &[u8], eof: bool, d: &Dialect, line: u64, f: &mut Fields) -> Split {
    f.clear();
    if buf.is_empty() {
        return if eof { Split::End } else { Split::More };
    }
    let blank = buf
        .iter()
        .take_while(|&&b| b == b'\n' || b == b'\r')
        .count();
    if blank > 0 {
        return Split::Blank(blank);
    }
    let n = buf.len();
    let delim = d.delimiter.as_slice();
    let d0 = delim[0];
    let q = d.quote.unwrap_or(0);
    let quoting = d.quote.is_some();
    let mut i = 0;
    // Where the last opening quote is: a record set aside past a quoted line end is cut
    // after the line that quote opened on.
    let mut opened: Option<usize> = None;
    let line_of = |at: usize| line + memchr::memchr_iter(b'\n', &buf[..at]).count() as u64;
    // The end of the record that is set aside because of a problem at `at`: after the
    // line the open quote started on, if its field runs past a line end; else after the
    // line of `at`. `None` when that line end is not in `buf` yet.
    let cut = |at: usize, opened: Option<usize>| -> Option<usize> {
        let from = match opened {
            Some(o) if memchr::memchr(b'\n', &buf[o..at.min(n)]).is_some() => o,
            _ => at.min(n),
        };
        match memchr::memchr(b'\n', &buf[from..]) {
            Some(k) => Some(from + k + 1),
            None if eof => Some(n),
            None => None,
        }
    };
    let too_long = |opened: Option<usize>| -> Split {
        match cut(n, opened.or(Some(0))) {
            Some(end) => Split::Bad(
                end,
                format!(
                    "record longer than max_record_bytes = {}{}; {}",
                    d.max_record_bytes,
                    match opened {
                        Some(o) => format!(" (from a quote opened at line {})", line_of(o)),
                        None => String::new(),
                    },
                    resumes(line, &buf[..end]),
                ),
            ),
            None => Split::More,
        }
    };
    // A whole record is still set aside if it is too long, whatever the buffer held.
    let bounded = |s: Split, opened: Option<usize>| match s {
        Split::Record(len) if len > d.max_record_bytes => too_long(opened),
        s => s,
    };
    loop {
        // The start of a field.
        let mut field_quoted = false;
        let field_start = i;
        if d.trim {
            while i < n && d.is_blank(buf[i]) {
                i += 1;
            }
        }
        if i == n {
            if !eof {
                return more(n, d, opened, too_long);
            }
            f.end_field(false);
            return bounded(Split::Record(n), opened);
        }
        if quoting && buf[i] == q {
            opened = Some(i);
            field_quoted = true;
            i += 1;
            // Inside quotes until the closing one.
            loop {
                let found = match d.escape {
                    Some(e) if e != q => memchr::memchr2(q, e, &buf[i..]),
                    _ => memchr::memchr(q, &buf[i..]),
                };
                let Some(k) = found else {
                    f.bytes.extend_from_slice(&buf[i..]);
                    if !eof {
                        return more(n, d, opened, too_long);
                    }
                    if n > d.max_record_bytes {
                        return too_long(opened);
                    }
                    let o = opened.expect("set above");
                    let end = cut(n, Some(o)).expect("eof");
                    return Split::Bad(
                        end,
                        format!(
                            "unterminated quoted field opened at line {}: the input ends inside it, {} bytes later; {}",
                            line_of(o),
                            n - o,
                            resumes(line, &buf[..end])
                        ),
                    );
                };
                f.bytes.extend_from_slice(&buf[i..i + k]);
                i += k;
                if d.escape.is_some_and(|e| e == buf[i] && e != q) {
                    if i + 1 == n {
                        if !eof {
                            return more(n, d, opened, too_long);
                        }
                        i += 1;
                        continue; // the end of the input inside quotes, above
                    }
                    f.bytes.push(buf[i + 1]);
                    i += 2;
                    continue;
                }
                // A quote: doubled, or (with an escape that is the quote) escaped, or the
                // closing one.
                if i + 1 == n && !eof {
                    return more(n, d, opened, too_long);
                }
                if i + 1 < n && buf[i + 1] == q && d.escape.is_none_or(|e| e == q) {
                    f.bytes.push(q);
                    i += 2;
                    continue;
                }
                i += 1;
                break;
            }
            if d.trim {
                while i < n && d.is_blank(buf[i]) {
                    i += 1;
                }
            }
            // After the closing quote: a delimiter, the line's end, or the input's end.
            if i == n {
                if !eof {
                    return more(n, d, opened, too_long);
                }
                f.end_field(true);
                return bounded(Split::Record(n), opened);
            }
            if n - i < delim.len() && !eof && delim.starts_with(&buf[i..]) {
                return more(n, d, opened, too_long);
            }
            if buf[i..].starts_with(delim) {
                f.end_field(true);
                i += delim.len();
                continue;
            }
            if buf[i] == b'\n' || buf[i] == b'\r' {
                f.end_field(true);
                return bounded(record_end(buf, i, eof, d, opened, too_long), opened);
            }
            if !d.lenient {
                let rest_end = memchr::memchr3(d0, b'\n', b'\r', &buf[i..]).map_or(n, |k| i + k);
                let Some(end) = cut(i, opened) else {
                    return more(n, d, opened, too_long);
                };
                return Split::Bad(
                    end,
                    format!(
                        "malformed quoting at line {}: field {} has text after its closing quote ({}); a quote inside a field must be doubled and the whole field quoted (RFC 4180; quoting = \"lenient\" keeps such text)",
                        line_of(i),
                        f.len() + 1,
                        show(&buf[i..rest_end.min(i + 40)])
                    ),
                );
            }
            // Lenient: the rest of the field is read as unquoted text.
        }
        // Unquoted text up to the next delimiter or line end (in lenient mode, also the
        // text after a closing quote).
        loop {
            let found = if quoting && !d.lenient {
                // A lone `\r` ends a record too: looked for before the first other stop.
                let other = memchr::memchr3(d0, b'\n', q, &buf[i..]);
                let span = &buf[i..other.map_or(n, |k| i + k)];
                memchr::memchr(b'\r', span).or(other)
            } else {
                memchr::memchr3(d0, b'\n', b'\r', &buf[i..])
            };
            let Some(k) = found else {
                if !eof {
                    return more(n, d, opened, too_long);
                }
                f.bytes.extend_from_slice(&buf[i..n]);
                if d.trim {
                    trim_end(f, d);
                }
                f.end_field(field_quoted);
                return bounded(Split::Record(n), opened);
            };
            let at = i + k;
            let b = buf[at];
            if quoting && !d.lenient && b == q {
                // A quote in an unquoted field, or after blanks before a quoted one.
                let start = field_start;
                let blanks_only = buf[start..at].iter().all(|&c| c == b' ' || c == b'\t');
                let Some(end) = cut(at, opened) else {
                    return more(n, d, opened, too_long);
                };
                let what = if blanks_only {
                    format!("field {} has blanks before its opening quote", f.len() + 1)
                } else {
                    format!(
                        "field {} is not quoted but holds a quote ({}); a field with a quote must be quoted and the quote doubled",
                        f.len() + 1,
                        show(
                            buf[start..(at + 20).min(n)]
                                .split(|&c| c == b'\n' || c == b'\r')
                                .next()
                                .unwrap_or_default()
                        )
                    )
                };
                return Split::Bad(
                    end,
                    format!(
                        "malformed quoting at line {}: {what} (RFC 4180; quoting = \"lenient\" keeps such text)",
                        line_of(at)
                    ),
                );
            }
            if b == d0 && !buf[at..].starts_with(delim) {
                if n - at < delim.len() && !eof {
                    return more(n, d, opened, too_long);
                }
                f.bytes.extend_from_slice(&buf[i..=at]);
                i = at + 1;
                continue;
            }
            f.bytes.extend_from_slice(&buf[i..at]);
            if d.trim {
                trim_end(f, d);
            }
            f.end_field(field_quoted);
            if b == d0 {
                i = at + delim.len();
                break;
            }
            return bounded(record_end(buf, at, eof, d, opened, too_long), opened);
        }
    }
}

/// Removes blanks at the end of the field being built.
fn trim_end(f: &mut Fields, d: &Dialect) {
    let start = f.ends.last().copied().unwrap_or(0);
    while f.bytes.len() > start && d.is_blank(*f.bytes.last().expect("non-empty")) {
        f.bytes.pop();
    }
}

/// The record ends at the line end at `at` (`\n`, `\r\n` or a lone `\r`).
fn record_end(
    buf: &[u8],
    at: usize,
    eof: bool,
    d: &Dialect,
    opened: Option<usize>,
    too_long: impl Fn(Option<usize>) -> Split,
) -> Split {
    if buf[at] == b'\n' {
        return Split::Record(at + 1);
    }
    // `\r`: a `\n` may follow.
    if at + 1 == buf.len() && !eof {
        return more(buf.len(), d, opened, too_long);
    }
    if buf.get(at + 1) == Some(&b'\n') {
        Split::Record(at + 2)
    } else {
        Split::Record(at + 1)
    }
}

/// More input is needed, unless the record is already longer than the bound.
fn more(
    n: usize,
    d: &Dialect,
    opened: Option<usize>,
    too_long: impl Fn(Option<usize>) -> Split,
) -> Split {
    if n > d.max_record_bytes {
        too_long(opened)
    } else {
        Split::More
    }
}

/// The end of a reason for a set-aside span: which lines it was and where reading goes on.
fn resumes(line: u64, span: &[u8]) -> String {
    let lines = memchr::memchr_iter(b'\n', span).count() as u64;
    let last = if span.ends_with(b"\n") {
        line + lines.saturating_sub(1)
    } else {
        line + lines
    };
    if last == line {
        format!(
            "line {line} is set aside and reading resumes at line {}",
            line + 1
        )
    } else {
        format!(
            "lines {line}-{last} are set aside and reading resumes at line {}",
            last + 1
        )
    }
}

/// A short piece of a record for a message.
fn show(text: &[u8]) -> String {
    format!("`{}`", String::from_utf8_lossy(text))
}

/// Why a split record is no row: its field count, or a field that is not text in the
/// file's encoding. The column is named when one is at fault.
pub(crate) fn check_record(
    f: &Fields,
    want: usize,
    encoding: Encoding,
    names: &[String],
) -> Option<(Option<String>, String)> {
    if f.len() != want {
        return Some((None, format!("expected {want} fields, found {}", f.len())));
    }
    (0..want)
        .find_map(|i| decode_problem(f.get(i), encoding).map(|why| (Some(names[i].clone()), why)))
}

/// Why `bytes` are not text in `encoding`, if they are not.
pub(crate) fn decode_problem(bytes: &[u8], encoding: Encoding) -> Option<String> {
    match encoding {
        Encoding::Utf8 => std::str::from_utf8(bytes)
            .err()
            .map(|_| "is not valid UTF-8 text".to_string()),
        Encoding::Latin1 => None,
        Encoding::Windows1252 => bytes
            .iter()
            .position(|&b| windows_1252(b).is_none())
            .map(|at| {
                format!(
                    "is not windows-1252 text: byte 0x{:02x} at offset {at} has no character",
                    bytes[at]
                )
            }),
    }
}

/// Appends `bytes` decoded from `encoding` (checked by [`decode_problem`]) as UTF-8.
pub(crate) fn decode_into(out: &mut Vec<u8>, bytes: &[u8], encoding: Encoding) {
    if encoding == Encoding::Utf8 || bytes.is_ascii() {
        out.extend_from_slice(bytes);
        return;
    }
    let mut tmp = [0u8; 4];
    for &b in bytes {
        let c = match encoding {
            Encoding::Windows1252 => windows_1252(b).unwrap_or('\u{fffd}'),
            _ => char::from(b),
        };
        out.extend_from_slice(c.encode_utf8(&mut tmp).as_bytes());
    }
}

/// The character of a windows-1252 byte; `None` for the five bytes it leaves undefined.
fn windows_1252(b: u8) -> Option<char> {
    const HIGH: [u16; 32] = [
        0x20AC, 0, 0x201A, 0x0192, 0x201E, 0x2026, 0x2020, 0x2021, 0x02C6, 0x2030, 0x0160, 0x2039,
        0x0152, 0, 0x017D, 0, 0, 0x2018, 0x2019, 0x201C, 0x201D, 0x2022, 0x2013, 0x2014, 0x02DC,
        0x2122, 0x0161, 0x203A, 0x0153, 0, 0x017E, 0x0178,
    ];
    if (0x80..0xA0).contains(&b) {
        match HIGH[usize::from(b - 0x80)] {
            0 => None,
            c => char::from_u32(u32::from(c)),
        }
    } else {
        Some(char::from(b))
    }
}

/// One thing [`Records`] found.
#[derive(Debug)]
pub(crate) struct Item {
    /// File offset of its first byte.
    pub offset: u64,
    /// Its first line.
    pub line: u64,
    /// Its length in bytes.
    pub len: usize,
    /// `None` for a record (fields in [`Records::fields`]), or why it is set aside.
    pub bad: Option<String>,
}

/// Records of a file from an offset, read in blocks. The buffer holds at least the
/// current record, so [`Records::raw`] gives its exact bytes.
pub(crate) struct Records {
    path: PathBuf,
    file: File,
    dialect: Dialect,
    buf: Vec<u8>,
    /// `buf[start..len]` is not split yet.
    start: usize,
    len: usize,
    /// File offset of `buf[0]`.
    base: u64,
    eof: bool,
    line: u64,
    /// The last item's span in `buf`.
    last: (usize, usize),
    pub fields: Fields,
}

impl Records {
    /// Records of `path` from `offset`, where line `line` starts.
    pub fn open(path: &Path, dialect: Dialect, offset: u64, line: u64) -> Result<Records> {
        let mut file = File::open(path).map_err(|e| Error::io(path, e))?;
        file.seek(SeekFrom::Start(offset))
            .map_err(|e| Error::io(path, e))?;
        Ok(Records {
            path: path.to_path_buf(),
            file,
            dialect,
            buf: vec![0; 1 << 20],
            start: 0,
            len: 0,
            base: offset,
            eof: false,
            line,
            last: (0, 0),
            fields: Fields::default(),
        })
    }

    /// The exact bytes of the last item.
    pub fn raw(&self) -> &[u8] {
        &self.buf[self.last.0..self.last.1]
    }

    /// File offset where the next item starts.
    pub fn offset(&self) -> u64 {
        self.base + self.start as u64
    }

    /// The next record or set-aside span; blank lines are passed over.
    pub fn next_item(&mut self) -> Result<Option<Item>> {
        loop {
            let res = split(
                &self.buf[self.start..self.len],
                self.eof,
                &self.dialect,
                self.line,
                &mut self.fields,
            );
            let (len, bad) = match res {
                Split::End => return Ok(None),
                Split::More => {
                    self.fill()?;
                    continue;
                }
                Split::Blank(len) => {
                    self.line += count_lines(&self.buf[self.start..self.start + len]);
                    self.start += len;
                    continue;
                }
                Split::Record(len) => (len, None),
                Split::Bad(len, why) => (len, Some(why)),
            };
            let item = Item {
                offset: self.offset(),
                line: self.line,
                len,
                bad,
            };
            self.last = (self.start, self.start + len);
            self.line += count_lines(&self.buf[self.start..self.start + len]);
            self.start += len;
            return Ok(Some(item));
        }
    }

    /// Reads more of the file, keeping the bytes not split yet.
    fn fill(&mut self) -> Result<()> {
        if self.start > 0 {
            self.buf.copy_within(self.start..self.len, 0);
            self.len -= self.start;
            self.base += self.start as u64;
            self.start = 0;
        }
        if self.len == self.buf.len() {
            self.buf.resize(self.buf.len() * 2, 0);
        }
        loop {
            match self.file.read(&mut self.buf[self.len..]) {
                Ok(0) => {
                    self.eof = true;
                    return Ok(());
                }
                Ok(k) => {
                    self.len += k;
                    return Ok(());
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Error::io(&self.path, e)),
            }
        }
    }
}

fn count_lines(bytes: &[u8]) -> u64 {
    memchr::memchr_iter(b'\n', bytes).count() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dialect() -> Dialect {
        Dialect {
            delimiter: b",".to_vec(),
            quote: Some(b'"'),
            escape: None,
            lenient: false,
            trim: false,
            max_record_bytes: 1 << 20,
        }
    }

    /// Splits all of `text`: each record's fields (quoted ones in brackets), or the
    /// reason of a span set aside.
    fn all(text: &str, d: &Dialect) -> Vec<String> {
        let buf = text.as_bytes();
        let mut f = Fields::default();
        let (mut at, mut line, mut out) = (0, 1, Vec::new());
        loop {
            match split(&buf[at..], true, d, line, &mut f) {
                Split::End => return out,
                Split::More => panic!("more at eof"),
                Split::Blank(n) => {
                    line += count_lines(&buf[at..at + n]);
                    at += n;
                }
                Split::Record(n) => {
                    out.push(
                        (0..f.len())
                            .map(|i| {
                                let t = String::from_utf8_lossy(f.get(i)).into_owned();
                                if f.quoted[i] { format!("[{t}]") } else { t }
                            })
                            .collect::<Vec<_>>()
                            .join("|"),
                    );
                    line += count_lines(&buf[at..at + n]);
                    at += n;
                }
                Split::Bad(n, why) => {
                    out.push(format!("BAD {why}"));
                    line += count_lines(&buf[at..at + n]);
                    at += n;
                }
            }
        }
    }

    #[test]
    fn splits_rfc_4180_records() {
        let d = dialect();
        assert_eq!(
            all("a,\"b,\"\"c\"\"\nd\",\n\n\"\",x\r\ny", &d),
            vec!["a|[b,\"c\"\nd]|", "[]|x", "y"]
        );
    }

    #[test]
    fn an_unclosed_quote_sets_aside_its_line_only() {
        let d = dialect();
        let got = all("1,a\n2,\"open\n3,c\n4,d\n", &d);
        assert_eq!(got.len(), 4, "{got:?}");
        assert_eq!(
            got[1],
            "BAD unterminated quoted field opened at line 2: the input ends inside it, 14 bytes later; line 2 is set aside and reading resumes at line 3"
        );
        assert_eq!(&got[2..], ["3|c", "4|d"]);
    }

    #[test]
    fn malformed_quoting_is_set_aside() {
        let d = dialect();
        let got = all("\"ab\"cd,1\n \"x\",2\nab\"cd,3\nok,4\n", &d);
        assert!(
            got[0].starts_with(
                "BAD malformed quoting at line 1: field 1 has text after its closing quote (`cd`)"
            ),
            "{}",
            got[0]
        );
        assert!(
            got[1].starts_with(
                "BAD malformed quoting at line 2: field 1 has blanks before its opening quote"
            ),
            "{}",
            got[1]
        );
        assert!(
            got[2].starts_with(
                "BAD malformed quoting at line 3: field 1 is not quoted but holds a quote"
            ),
            "{}",
            got[2]
        );
        assert_eq!(got[3], "ok|4");
        let lenient = Dialect {
            lenient: true,
            ..dialect()
        };
        assert_eq!(
            all("\"ab\"cd,1\nab\"cd,3\n", &lenient),
            vec!["[abcd]|1", "ab\"cd|3"]
        );
    }

    #[test]
    fn a_record_longer_than_the_bound_is_set_aside_with_its_line() {
        let d = Dialect {
            max_record_bytes: 16,
            ..dialect()
        };
        let text = "1,\"stray\n2,b\n3,c\n4,d\n5,e\n6,f\n";
        // Fed in pieces, as a file is read.
        let buf = text.as_bytes();
        match split(&buf[..20], false, &d, 1, &mut Fields::default()) {
            Split::Bad(n, why) => {
                assert_eq!(n, 9);
                assert!(
                    why.starts_with("record longer than max_record_bytes = 16"),
                    "{why}"
                );
                assert!(
                    why.ends_with("line 1 is set aside and reading resumes at line 2"),
                    "{why}"
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn trims_blanks_and_reads_multi_byte_delimiters_and_no_quotes() {
        let d = Dialect {
            delimiter: b"||".to_vec(),
            trim: true,
            ..dialect()
        };
        assert_eq!(all(" a || \"b\" ||c|d \n", &d), vec!["a|[b]|c|d"]);
        let d = Dialect {
            quote: None,
            ..dialect()
        };
        assert_eq!(all("a\"b,\"c\n", &d), vec!["a\"b|\"c"]);
    }

    #[test]
    fn windows_1252_decodes_exactly_and_refuses_undefined_bytes() {
        let mut out = Vec::new();
        decode_into(&mut out, b"h\xe9\x80", Encoding::Windows1252);
        assert_eq!(String::from_utf8(out).unwrap(), "hé€");
        assert!(decode_problem(b"a\x81", Encoding::Windows1252).is_some());
        let mut out = Vec::new();
        decode_into(&mut out, b"h\xe9\x80", Encoding::Latin1);
        assert_eq!(String::from_utf8(out).unwrap(), "hé\u{80}");
    }
}
