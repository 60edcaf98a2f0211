//! What a statement does, as far as the locks it takes go: read from its words, for
//! `rowshift plan`. Each database says what lock an [`Op`] takes in its own terms
//! ([`super::dialect::Locks`], in its `dialect.rs`); this file knows only SQL's words.

/// What a statement does to which object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// `CREATE TABLE`; `references` when its columns or constraints name another table.
    CreateTable {
        /// The table (unquoted, without its schema).
        table: String,
        /// Whether it declares a foreign key.
        references: bool,
    },
    /// `CREATE [UNIQUE] INDEX [CONCURRENTLY] name ON table`.
    CreateIndex {
        /// The index.
        name: String,
        /// Its table.
        table: String,
        /// `UNIQUE`.
        unique: bool,
        /// `CONCURRENTLY`.
        concurrently: bool,
    },
    /// `CREATE SCHEMA`.
    CreateSchema,
    /// `CREATE DATABASE`.
    CreateDatabase,
    /// Another `CREATE` (view, sequence, type, function...): its words.
    CreateOther(String),
    /// `DROP TABLE`.
    DropTable {
        /// The tables.
        tables: Vec<String>,
    },
    /// `DROP INDEX [CONCURRENTLY] name [ON table]`.
    DropIndex {
        /// `CONCURRENTLY`.
        concurrently: bool,
    },
    /// Another `DROP`: its words.
    DropOther(String),
    /// `ALTER TABLE table op, op, ...`.
    AlterTable {
        /// The table.
        table: String,
        /// What it changes, in order.
        ops: Vec<Alter>,
    },
    /// `INSERT` or `REPLACE` into a table.
    Insert(String),
    /// `UPDATE`.
    Update(String),
    /// `DELETE FROM`.
    Delete(String),
    /// `COPY table FROM ...`.
    Copy(String),
    /// `TRUNCATE`.
    Truncate(String),
    /// `SELECT`, with the functions it calls (lower case): a lock function takes a lock.
    Select {
        /// The functions called.
        calls: Vec<String>,
    },
    /// `SET`, `USE`, `BEGIN`, `COMMIT`, `PRAGMA`: the session, not the data.
    Session,
    /// Anything else: its first words.
    Other(String),
}

/// One change of an `ALTER TABLE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alter {
    /// `ADD [COLUMN]`.
    AddColumn,
    /// `DROP [COLUMN]`.
    DropColumn,
    /// `ADD [CONSTRAINT name] CHECK (...)`.
    AddCheck {
        /// `NOT VALID`: the existing rows are not checked now.
        not_valid: bool,
    },
    /// `ADD [CONSTRAINT name] FOREIGN KEY ...`.
    AddForeignKey {
        /// `NOT VALID`.
        not_valid: bool,
    },
    /// `ADD [CONSTRAINT name] UNIQUE | PRIMARY KEY`, or MySQL's `ADD INDEX | KEY`.
    AddIndex {
        /// A primary key.
        primary: bool,
    },
    /// `VALIDATE CONSTRAINT`.
    ValidateConstraint,
    /// `DROP CONSTRAINT | INDEX | KEY | FOREIGN KEY | CHECK`.
    DropConstraint,
    /// A column's type: `ALTER COLUMN ... TYPE`, MySQL's `MODIFY` and `CHANGE`.
    ColumnType,
    /// `ALTER COLUMN ... SET DEFAULT | DROP DEFAULT`.
    Default,
    /// `ALTER COLUMN ... SET NOT NULL`.
    SetNotNull,
    /// `ALTER COLUMN ... DROP NOT NULL`.
    DropNotNull,
    /// An identity column's sequence: `ALTER COLUMN ... RESTART`, `ADD GENERATED`, ...
    Identity,
    /// The table option `AUTO_INCREMENT = n`.
    AutoIncrement,
    /// `RENAME`.
    Rename,
    /// Anything else.
    Other,
}

/// A word of a statement: keywords upper case, quoted names as written inside quotes.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    Word(String),
    Name(String),
    Sym(char),
    Literal,
}

impl Tok {
    fn is(&self, word: &str) -> bool {
        matches!(self, Tok::Word(w) if w == word)
    }

    fn name(&self) -> Option<String> {
        match self {
            Tok::Word(w) => Some(w.to_ascii_lowercase()),
            Tok::Name(n) => Some(n.clone()),
            _ => None,
        }
    }
}

/// The statement's words, outside comments and literals.
fn tokens(sql: &str) -> Vec<Tok> {
    let chars: Vec<char> = sql.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c.is_whitespace() {
            i += 1;
        } else if c == '-' && next == Some('-') || c == '#' {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            i += 2;
            while i + 1 < chars.len() && !(chars[i] == '*' && chars[i + 1] == '/') {
                i += 1;
            }
            i += 2;
        } else if c == '"' || c == '`' {
            let mut name = String::new();
            i += 1;
            while i < chars.len() {
                if chars[i] == c && chars.get(i + 1) == Some(&c) {
                    name.push(c);
                    i += 2;
                } else if chars[i] == c {
                    i += 1;
                    break;
                } else {
                    name.push(chars[i]);
                    i += 1;
                }
            }
            out.push(Tok::Name(name));
        } else if c == '\'' {
            i += 1;
            while i < chars.len() {
                if chars[i] == '\'' && chars.get(i + 1) == Some(&'\'') {
                    i += 2;
                } else if chars[i] == '\'' {
                    i += 1;
                    break;
                } else {
                    i += 1;
                }
            }
            out.push(Tok::Literal);
        } else if c == '$' && next.is_some_and(|d| d.is_ascii_digit()) {
            // A parameter: `$1`.
            i += 1;
            while i < chars.len() && chars[i].is_ascii_digit() {
                i += 1;
            }
            out.push(Tok::Literal);
        } else if c == '$' {
            // A dollar-quoted body: `$$...$$`, `$tag$...$tag$`.
            let mut e = i + 1;
            while e < chars.len() && (chars[e].is_alphanumeric() || chars[e] == '_') {
                e += 1;
            }
            if chars.get(e) == Some(&'$') {
                let tag = &chars[i..=e];
                let mut j = e + 1;
                while j < chars.len() && !chars[j..].starts_with(tag) {
                    j += 1;
                }
                i = (j + tag.len()).min(chars.len());
                out.push(Tok::Literal);
            } else {
                out.push(Tok::Sym(c));
                i += 1;
            }
        } else if c.is_alphanumeric() || c == '_' {
            let start = i;
            while i < chars.len()
                && (chars[i].is_alphanumeric() || chars[i] == '_' || chars[i] == '$')
            {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            if word.chars().next().is_some_and(|ch| ch.is_ascii_digit()) {
                out.push(Tok::Literal);
            } else {
                out.push(Tok::Word(word.to_ascii_uppercase()));
            }
        } else {
            out.push(Tok::Sym(c));
            i += 1;
        }
    }
    out
}

/// A cursor over a statement's words.
struct Words {
    toks: Vec<Tok>,
    at: usize,
}

impl Words {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.at)
    }

    fn eat(&mut self, word: &str) -> bool {
        match self.peek() {
            Some(t) if t.is(word) => {
                self.at += 1;
                true
            }
            _ => false,
        }
    }

    fn eat_all(&mut self, words: &[&str]) -> bool {
        let save = self.at;
        for w in words {
            if !self.eat(w) {
                self.at = save;
                return false;
            }
        }
        true
    }

    /// A possibly qualified name (`a.b.c`): its last part.
    fn object(&mut self) -> String {
        let mut last = String::new();
        while let Some(n) = self.peek().and_then(Tok::name) {
            last = n;
            self.at += 1;
            if self.peek() == Some(&Tok::Sym('.')) {
                self.at += 1;
            } else {
                break;
            }
        }
        last
    }

    /// The words up to the end, split at commas outside parentheses.
    fn clauses(&mut self) -> Vec<Vec<Tok>> {
        let mut out = vec![Vec::new()];
        let mut depth = 0;
        for t in &self.toks[self.at..] {
            match t {
                Tok::Sym('(') => depth += 1,
                Tok::Sym(')') => depth -= 1,
                Tok::Sym(',') if depth == 0 => {
                    out.push(Vec::new());
                    continue;
                }
                _ => {}
            }
            out.last_mut().expect("one clause at least").push(t.clone());
        }
        self.at = self.toks.len();
        out
    }

    fn rest_has(&self, word: &str) -> bool {
        self.toks[self.at..].iter().any(|t| t.is(word))
    }

    /// The first `n` words of the statement.
    fn first_words(&self, n: usize) -> String {
        Self::words(&self.toks, n)
    }

    /// The next `n` words.
    fn next_words(&self, n: usize) -> String {
        Self::words(&self.toks[self.at..], n)
    }

    fn words(toks: &[Tok], n: usize) -> String {
        toks.iter()
            .filter_map(|t| match t {
                Tok::Word(w) => Some(w.clone()),
                _ => None,
            })
            .take(n)
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// Reads what `sql` does.
pub fn classify(sql: &str) -> Op {
    let mut w = Words {
        toks: tokens(sql),
        at: 0,
    };
    let other = |w: &Words| Op::Other(w.first_words(3));
    if w.eat("CREATE") {
        w.eat_all(&["OR", "REPLACE"]);
        let unique = w.eat("UNIQUE");
        if w.eat("INDEX") {
            let concurrently = w.eat("CONCURRENTLY");
            w.eat_all(&["IF", "NOT", "EXISTS"]);
            let name = match w.peek() {
                Some(t) if t.is("ON") => String::new(),
                _ => w.object(),
            };
            w.eat("ON");
            w.eat("ONLY");
            let table = w.object();
            return Op::CreateIndex {
                name,
                table,
                unique,
                concurrently,
            };
        }
        w.eat("TEMPORARY");
        w.eat("TEMP");
        w.eat("UNLOGGED");
        if w.eat("TABLE") {
            w.eat_all(&["IF", "NOT", "EXISTS"]);
            let table = w.object();
            let references = w.rest_has("REFERENCES");
            return Op::CreateTable { table, references };
        }
        if w.eat("SCHEMA") {
            return Op::CreateSchema;
        }
        if w.eat("DATABASE") {
            return Op::CreateDatabase;
        }
        return Op::CreateOther(w.next_words(3));
    }
    if w.eat("DROP") {
        if w.eat("TABLE") {
            w.eat_all(&["IF", "EXISTS"]);
            let mut tables = vec![w.object()];
            while w.peek() == Some(&Tok::Sym(',')) {
                w.at += 1;
                tables.push(w.object());
            }
            return Op::DropTable { tables };
        }
        if w.eat("INDEX") {
            return Op::DropIndex {
                concurrently: w.eat("CONCURRENTLY"),
            };
        }
        return Op::DropOther(w.next_words(3));
    }
    if w.eat("ALTER") {
        if !w.eat("TABLE") {
            return other(&w);
        }
        w.eat_all(&["IF", "EXISTS"]);
        w.eat("ONLY");
        let table = w.object();
        let ops = w.clauses().iter().map(|c| alter(c)).collect();
        return Op::AlterTable { table, ops };
    }
    if w.eat("INSERT") || w.eat("REPLACE") {
        w.eat("IGNORE");
        w.eat("INTO");
        return Op::Insert(w.object());
    }
    if w.eat("UPDATE") {
        w.eat("ONLY");
        return Op::Update(w.object());
    }
    if w.eat("DELETE") {
        w.eat("FROM");
        w.eat("ONLY");
        return Op::Delete(w.object());
    }
    if w.eat("COPY") {
        return Op::Copy(w.object());
    }
    if w.eat("TRUNCATE") {
        w.eat("TABLE");
        w.eat("ONLY");
        return Op::Truncate(w.object());
    }
    if w.eat("SELECT") || w.eat("WITH") {
        let calls = w
            .toks
            .windows(2)
            .filter(|p| p[1] == Tok::Sym('('))
            .filter_map(|p| match &p[0] {
                Tok::Word(f) => Some(f.to_ascii_lowercase()),
                _ => None,
            })
            .collect();
        return Op::Select { calls };
    }
    let session = [
        "SET", "USE", "BEGIN", "START", "COMMIT", "ROLLBACK", "PRAGMA",
    ];
    if session.iter().any(|s| w.peek().is_some_and(|t| t.is(s))) {
        return Op::Session;
    }
    other(&w)
}

/// One clause of an `ALTER TABLE`.
fn alter(clause: &[Tok]) -> Alter {
    let mut w = Words {
        toks: clause.to_vec(),
        at: 0,
    };
    let not_valid = clause
        .windows(2)
        .any(|p| p[0].is("NOT") && p[1].is("VALID"));
    if w.eat("ADD") {
        if w.eat("CONSTRAINT") {
            w.object();
        }
        return match w.peek() {
            Some(t) if t.is("CHECK") => Alter::AddCheck { not_valid },
            Some(t) if t.is("FOREIGN") => Alter::AddForeignKey { not_valid },
            Some(t) if t.is("PRIMARY") => Alter::AddIndex { primary: true },
            Some(t)
                if ["UNIQUE", "INDEX", "KEY", "FULLTEXT", "SPATIAL"]
                    .iter()
                    .any(|k| t.is(k)) =>
            {
                Alter::AddIndex { primary: false }
            }
            Some(t) if t.is("GENERATED") => Alter::Identity,
            _ => Alter::AddColumn,
        };
    }
    if w.eat("DROP") {
        return match w.peek() {
            Some(t)
                if ["CONSTRAINT", "INDEX", "KEY", "FOREIGN", "CHECK", "PRIMARY"]
                    .iter()
                    .any(|k| t.is(k)) =>
            {
                Alter::DropConstraint
            }
            _ => Alter::DropColumn,
        };
    }
    if w.eat_all(&["VALIDATE", "CONSTRAINT"]) {
        return Alter::ValidateConstraint;
    }
    if w.eat("MODIFY") || w.eat("CHANGE") {
        return Alter::ColumnType;
    }
    if w.eat("RENAME") {
        return Alter::Rename;
    }
    if w.eat("AUTO_INCREMENT") {
        return Alter::AutoIncrement;
    }
    if w.eat("ALTER") {
        w.eat("COLUMN");
        w.object();
        let has = |word: &str| w.rest_has(word);
        return if has("TYPE") {
            Alter::ColumnType
        } else if has("DEFAULT") && !has("GENERATED") {
            Alter::Default
        } else if has("RESTART") || has("GENERATED") || has("IDENTITY") {
            Alter::Identity
        } else if w.eat_all(&["SET", "NOT", "NULL"]) {
            Alter::SetNotNull
        } else if w.eat_all(&["DROP", "NOT", "NULL"]) {
            Alter::DropNotNull
        } else {
            Alter::Other
        };
    }
    Alter::Other
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_statements_a_migration_runs() {
        assert_eq!(
            classify("CREATE TABLE IF NOT EXISTS \"s\".\"my \"\"t\" (id bigint REFERENCES p (id))"),
            Op::CreateTable {
                table: "my \"t".into(),
                references: true
            }
        );
        assert_eq!(
            classify("-- why\nCREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS ix ON `db`.`t` (a)"),
            Op::CreateIndex {
                name: "ix".into(),
                table: "t".into(),
                unique: true,
                concurrently: true
            }
        );
        assert_eq!(
            classify("ALTER TABLE \"s\".\"t\" ADD CONSTRAINT \"c\" CHECK (a > 0) NOT VALID"),
            Op::AlterTable {
                table: "t".into(),
                ops: vec![Alter::AddCheck { not_valid: true }]
            }
        );
        assert_eq!(
            classify(
                "ALTER TABLE t ADD COLUMN x int DEFAULT 1, ALTER COLUMN y SET NOT NULL, VALIDATE CONSTRAINT f"
            ),
            Op::AlterTable {
                table: "t".into(),
                ops: vec![
                    Alter::AddColumn,
                    Alter::SetNotNull,
                    Alter::ValidateConstraint
                ]
            }
        );
        assert_eq!(
            classify("ALTER TABLE `t` AUTO_INCREMENT = 7"),
            Op::AlterTable {
                table: "t".into(),
                ops: vec![Alter::AutoIncrement]
            }
        );
        assert_eq!(
            classify("ALTER TABLE t ALTER COLUMN id RESTART WITH 7"),
            Op::AlterTable {
                table: "t".into(),
                ops: vec![Alter::Identity]
            }
        );
        assert_eq!(
            classify("SELECT pg_try_advisory_lock($1)"),
            Op::Select {
                calls: vec!["pg_try_advisory_lock".into()]
            }
        );
        assert_eq!(
            classify("DELETE FROM \"rowshift\".\"history\" WHERE set_name = $1"),
            Op::Delete("history".into())
        );
        assert_eq!(classify("SET LOCAL search_path TO \"x\""), Op::Session);
        assert_eq!(
            classify("DROP TABLE IF EXISTS a, b"),
            Op::DropTable {
                tables: vec!["a".into(), "b".into()]
            }
        );
        assert_eq!(
            classify("CREATE FUNCTION f() RETURNS int AS $$ SELECT 1; $$ LANGUAGE sql"),
            Op::CreateOther("FUNCTION F RETURNS".into())
        );
    }
}
