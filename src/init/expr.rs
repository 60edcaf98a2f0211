//! Checks and defaults carried from one database to another: the source's SQL text is
//! parsed in its own dialect and written again in the target's, for the portable part
//! of SQL (comparisons, `IN`, `BETWEEN`, `LIKE`, `IS NULL`, arithmetic, a few functions,
//! literals and the current date and time). PostgreSQL's spellings of these
//! (`x = ANY (ARRAY[...])`, `'a'::text`) become their standard forms. Anything else is
//! refused with the reason, and init lists it as not carried over.

use datafusion_sql::sqlparser::ast::{
    BinaryOperator, CastKind, Expr, FunctionArg, FunctionArgExpr, FunctionArguments,
    ObjectNamePart, UnaryOperator, Value,
};
use datafusion_sql::sqlparser::dialect::{Dialect, MySqlDialect, PostgreSqlDialect, SQLiteDialect};
use datafusion_sql::sqlparser::parser::Parser;

use crate::types::ColumnType;

/// A kind of SQL database, for the spelling of expressions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Engine {
    Sqlite,
    Postgres,
    Mysql,
}

impl Engine {
    /// `name` quoted for this database when it needs quotes, else bare.
    pub(crate) fn ident(self, name: &str) -> String {
        let bare = name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            && !RESERVED.contains(&name);
        if bare {
            return name.to_string();
        }
        match self {
            Engine::Mysql => format!("`{}`", name.replace('`', "``")),
            _ => format!("\"{}\"", name.replace('"', "\"\"")),
        }
    }

    /// `name` always quoted.
    pub(crate) fn quote(self, name: &str) -> String {
        match self {
            Engine::Mysql => format!("`{}`", name.replace('`', "``")),
            _ => format!("\"{}\"", name.replace('"', "\"\"")),
        }
    }

    fn dialect(self) -> Box<dyn Dialect> {
        match self {
            Engine::Sqlite => Box::new(SQLiteDialect {}),
            Engine::Postgres => Box::new(PostgreSqlDialect {}),
            Engine::Mysql => Box::new(MySqlDialect {}),
        }
    }

    /// The database's name in messages.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Engine::Sqlite => "SQLite",
            Engine::Postgres => "PostgreSQL",
            Engine::Mysql => "MySQL",
        }
    }
}

/// Words that are reserved in at least one of the three databases, so a column of that
/// name is quoted.
const RESERVED: &[&str] = &[
    "all",
    "and",
    "any",
    "as",
    "asc",
    "between",
    "by",
    "case",
    "check",
    "column",
    "constraint",
    "create",
    "cross",
    "current_date",
    "current_time",
    "current_timestamp",
    "default",
    "desc",
    "distinct",
    "drop",
    "else",
    "end",
    "exists",
    "false",
    "for",
    "foreign",
    "from",
    "full",
    "grant",
    "group",
    "having",
    "in",
    "index",
    "inner",
    "insert",
    "interval",
    "into",
    "is",
    "join",
    "key",
    "left",
    "like",
    "limit",
    "natural",
    "not",
    "null",
    "offset",
    "on",
    "or",
    "order",
    "outer",
    "primary",
    "range",
    "references",
    "right",
    "rows",
    "select",
    "set",
    "some",
    "table",
    "then",
    "to",
    "true",
    "union",
    "unique",
    "update",
    "user",
    "using",
    "values",
    "when",
    "where",
    "window",
    "with",
];

/// A check constraint's expression, from `source`'s SQL into `target`'s.
/// Also returns the columns it names.
pub(crate) fn check(
    text: &str,
    source: Engine,
    target: Engine,
) -> Result<(String, Vec<String>), String> {
    let expr = parse(text, source)?;
    let w = Writer {
        target,
        names: Default::default(),
    };
    let out = w.expr(&expr)?;
    Ok((out, w.names.into_inner()))
}

/// A column default, from `source`'s SQL into `target`'s, for a column of type `ty`.
/// `Ok(None)`: the default is NULL, which needs no declaration.
pub(crate) fn default(
    text: &str,
    source: Engine,
    target: Engine,
    ty: ColumnType,
) -> Result<Option<String>, String> {
    let mut expr = parse(text, source)?;
    while let Expr::Nested(inner) = expr {
        expr = *inner;
    }
    let mut expr = strip_casts(expr);
    // A text literal cast to a type of the source's own (an enum, a domain) is the
    // value's text, which a text column holds as it is.
    if matches!(ty, ColumnType::Text | ColumnType::Varchar(_))
        && let Expr::Cast { expr: inner, .. } = &expr
        && let Expr::Value(v) = inner.as_ref()
        && matches!(v.value, Value::SingleQuotedString(_))
    {
        expr = *inner.clone();
    }
    if let Expr::Value(v) = &expr
        && v.value == Value::Null
    {
        return Ok(None);
    }
    // 0 and 1 are the booleans of MySQL and SQLite; PostgreSQL wants the words.
    if ty == ColumnType::Boolean
        && let Expr::Value(v) = &expr
        && let Value::Number(n, _) | Value::SingleQuotedString(n) = &v.value
    {
        match n.as_str() {
            "0" => return Ok(Some("false".into())),
            "1" => return Ok(Some("true".into())),
            _ => {}
        }
    }
    let w = Writer {
        target,
        names: Default::default(),
    };
    let out = w.expr(&expr)?;
    // MySQL's current time in a DATETIME(6) column must have the column's precision.
    if target == Engine::Mysql
        && matches!(ty, ColumnType::Timestamp | ColumnType::TimestampTz)
        && out == "CURRENT_TIMESTAMP"
    {
        return Ok(Some("CURRENT_TIMESTAMP(6)".into()));
    }
    Ok(Some(out))
}

fn parse(text: &str, source: Engine) -> Result<Expr, String> {
    let dialect = source.dialect();
    Parser::new(dialect.as_ref())
        .try_with_sql(text)
        .and_then(|mut p| p.parse_expr())
        .map_err(|e| format!("{} cannot read `{text}`: {e}", source.name()))
}

/// The expression without casts of literals and columns to the types every database
/// compares the same way (text, numbers, dates), which PostgreSQL's catalog adds.
fn strip_casts(e: Expr) -> Expr {
    match e {
        Expr::Cast {
            kind: CastKind::DoubleColon | CastKind::Cast,
            expr,
            data_type,
            ..
        } if plain_type(&data_type.to_string()) => strip_casts(*expr),
        Expr::Nested(inner) => match strip_casts(*inner) {
            e @ (Expr::Value(_) | Expr::Identifier(_) | Expr::Array(_)) => e,
            e => Expr::Nested(Box::new(e)),
        },
        e => e,
    }
}

fn plain_type(t: &str) -> bool {
    let t = t.to_ascii_lowercase();
    let base = t
        .split('(')
        .next()
        .unwrap_or("")
        .trim()
        .trim_end_matches("[]");
    matches!(
        base,
        "text"
            | "varchar"
            | "character varying"
            | "char"
            | "character"
            | "bpchar"
            | "numeric"
            | "decimal"
            | "integer"
            | "int"
            | "int2"
            | "int4"
            | "int8"
            | "bigint"
            | "smallint"
            | "real"
            | "double precision"
            | "date"
            | "timestamp"
            | "timestamp without time zone"
            | "timestamp with time zone"
            | "boolean"
    )
}

struct Writer {
    target: Engine,
    /// The columns the expression names.
    names: std::cell::RefCell<Vec<String>>,
}

impl Writer {
    fn expr(&self, e: &Expr) -> Result<String, String> {
        let e = strip_casts(e.clone());
        Ok(match &e {
            Expr::Identifier(id) => {
                self.names.borrow_mut().push(id.value.clone());
                self.target.ident(&id.value)
            }
            Expr::Nested(inner) => self.expr(inner)?,
            Expr::Value(v) => self.value(&v.value)?,
            Expr::TypedString(ts) => self.value(&ts.value.value)?,
            Expr::UnaryOp { op, expr } => {
                let inner = self.operand(expr)?;
                match op {
                    UnaryOperator::Not => format!("NOT {inner}"),
                    UnaryOperator::Minus => format!("-{inner}"),
                    UnaryOperator::Plus => inner,
                    other => return Err(format!("the operator {other} has no portable form")),
                }
            }
            Expr::BinaryOp { left, op, right } => {
                let (l, r) = (self.operand(left)?, self.operand(right)?);
                let op = match op {
                    BinaryOperator::Eq => "=",
                    BinaryOperator::NotEq => "<>",
                    BinaryOperator::Lt => "<",
                    BinaryOperator::LtEq => "<=",
                    BinaryOperator::Gt => ">",
                    BinaryOperator::GtEq => ">=",
                    BinaryOperator::And => "AND",
                    BinaryOperator::Or => "OR",
                    BinaryOperator::Plus => "+",
                    BinaryOperator::Minus => "-",
                    BinaryOperator::Multiply => "*",
                    BinaryOperator::Divide => "/",
                    BinaryOperator::Modulo => "%",
                    BinaryOperator::StringConcat if self.target == Engine::Mysql => {
                        return Ok(format!("CONCAT({l}, {r})"));
                    }
                    BinaryOperator::StringConcat => "||",
                    other => return Err(format!("the operator {other} has no portable form")),
                };
                format!("{l} {op} {r}")
            }
            Expr::IsNull(x) => format!("{} IS NULL", self.operand(x)?),
            Expr::IsNotNull(x) => format!("{} IS NOT NULL", self.operand(x)?),
            Expr::InList {
                expr,
                list,
                negated,
            } => {
                let items: Result<Vec<String>, String> =
                    list.iter().map(|i| self.expr(i)).collect();
                format!(
                    "{} {}IN ({})",
                    self.operand(expr)?,
                    if *negated { "NOT " } else { "" },
                    items?.join(", ")
                )
            }
            Expr::AnyOp {
                left,
                compare_op,
                right,
                ..
            } if *compare_op == BinaryOperator::Eq => self.in_array(left, right, false)?,
            Expr::AllOp {
                left,
                compare_op,
                right,
            } if *compare_op == BinaryOperator::NotEq => self.in_array(left, right, true)?,
            Expr::Between {
                expr,
                negated,
                low,
                high,
            } => format!(
                "{} {}BETWEEN {} AND {}",
                self.operand(expr)?,
                if *negated { "NOT " } else { "" },
                self.operand(low)?,
                self.operand(high)?
            ),
            Expr::Like {
                negated,
                any: false,
                expr,
                pattern,
                escape_char: None,
            } => format!(
                "{} {}LIKE {}",
                self.operand(expr)?,
                if *negated { "NOT " } else { "" },
                self.operand(pattern)?
            ),
            Expr::Function(f) => self.function(f)?,
            other => {
                return Err(format!("`{other}` has no portable form"));
            }
        })
    }

    /// An operand: parenthesised unless it is a single term.
    fn operand(&self, e: &Expr) -> Result<String, String> {
        let mut inner = strip_casts(e.clone());
        while let Expr::Nested(x) = inner {
            inner = strip_casts(*x);
        }
        let text = self.expr(&inner)?;
        Ok(match inner {
            Expr::Identifier(_) | Expr::Value(_) | Expr::TypedString(_) | Expr::Function(_) => text,
            _ => format!("({text})"),
        })
    }

    /// PostgreSQL's `x = ANY (ARRAY[...])` as `x IN (...)`, `x <> ALL (...)` as NOT IN.
    fn in_array(&self, left: &Expr, right: &Expr, negated: bool) -> Result<String, String> {
        let mut r = strip_casts(right.clone());
        while let Expr::Nested(x) = r {
            r = strip_casts(*x);
        }
        let Expr::Array(array) = r else {
            return Err(format!("`{right}` is not a list of values"));
        };
        let items: Result<Vec<String>, String> = array.elem.iter().map(|i| self.expr(i)).collect();
        Ok(format!(
            "{} {}IN ({})",
            self.operand(left)?,
            if negated { "NOT " } else { "" },
            items?.join(", ")
        ))
    }

    fn value(&self, v: &Value) -> Result<String, String> {
        Ok(match v {
            Value::Number(n, _) => n.to_string(),
            Value::SingleQuotedString(s) | Value::EscapedStringLiteral(s) => {
                format!("'{}'", s.replace('\'', "''"))
            }
            Value::DoubleQuotedString(s) if self.target != Engine::Postgres => {
                format!("'{}'", s.replace('\'', "''"))
            }
            Value::Boolean(true) => "TRUE".into(),
            Value::Boolean(false) => "FALSE".into(),
            Value::Null => "NULL".into(),
            other => return Err(format!("the literal {other} has no portable form")),
        })
    }

    fn function(&self, f: &datafusion_sql::sqlparser::ast::Function) -> Result<String, String> {
        let name = match f.name.0.as_slice() {
            [ObjectNamePart::Identifier(id)] => id.value.to_ascii_lowercase(),
            _ => return Err(format!("the function {} has no portable form", f.name)),
        };
        let args: Vec<&Expr> = match &f.args {
            FunctionArguments::None => Vec::new(),
            FunctionArguments::List(list) if list.clauses.is_empty() => {
                let mut out = Vec::new();
                for a in &list.args {
                    match a {
                        FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => out.push(e),
                        _ => return Err(format!("`{f}` has no portable form")),
                    }
                }
                out
            }
            _ => return Err(format!("`{f}` has no portable form")),
        };
        if f.filter.is_some() || f.over.is_some() {
            return Err(format!("`{f}` has no portable form"));
        }
        let now = match name.as_str() {
            "current_timestamp" | "now" | "localtimestamp" | "sysdate" | "utc_timestamp"
                if args.is_empty() || matches!(args.as_slice(), [Expr::Value(_)]) =>
            {
                Some("CURRENT_TIMESTAMP")
            }
            "current_date" | "curdate" if args.is_empty() => Some("CURRENT_DATE"),
            "current_time" | "curtime" | "localtime" if args.is_empty() => Some("CURRENT_TIME"),
            _ => None,
        };
        if let Some(now) = now {
            return Ok(now.to_string());
        }
        // SQLite's datetime('now'), date('now').
        if let ("datetime" | "date", [Expr::Value(v)]) = (name.as_str(), args.as_slice())
            && matches!(&v.value, Value::SingleQuotedString(s) if s.eq_ignore_ascii_case("now"))
        {
            return Ok(if name == "date" {
                "CURRENT_DATE"
            } else {
                "CURRENT_TIMESTAMP"
            }
            .to_string());
        }
        let spelled = match (name.as_str(), self.target) {
            ("length" | "char_length" | "character_length", Engine::Sqlite) => "length",
            ("length" | "char_length" | "character_length", _) => "char_length",
            ("lower" | "lcase", _) => "lower",
            ("upper" | "ucase", _) => "upper",
            ("trim", _) => "trim",
            ("abs", _) => "abs",
            ("coalesce" | "ifnull", _) => "coalesce",
            _ => return Err(format!("the function {name}() has no portable form")),
        };
        let args: Result<Vec<String>, String> = args.iter().map(|a| self.expr(a)).collect();
        Ok(format!("{spelled}({})", args?.join(", ")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_postgres_checks_in_every_dialect() {
        let pg = "((status)::text = ANY ((ARRAY['new'::character varying, 'paid'::character varying])::text[]))";
        assert_eq!(
            check(pg, Engine::Postgres, Engine::Mysql).unwrap().0,
            "status IN ('new', 'paid')"
        );
        assert_eq!(
            check(
                "((price >= (0)::numeric) AND (qty > 0))",
                Engine::Postgres,
                Engine::Sqlite
            )
            .unwrap()
            .0,
            "(price >= 0) AND (qty > 0)"
        );
        assert_eq!(
            check("`Order` in ('a','b''c')", Engine::Mysql, Engine::Postgres)
                .unwrap()
                .0,
            "\"Order\" IN ('a', 'b''c')"
        );
        assert!(
            check("(name ~ '^[a-z]+$'::text)", Engine::Postgres, Engine::Mysql)
                .unwrap_err()
                .contains("no portable form")
        );
    }

    #[test]
    fn writes_defaults_for_the_column_type() {
        let d = |t, s, tg, ty| default(t, s, tg, ty).unwrap();
        assert_eq!(
            d(
                "'new'::character varying",
                Engine::Postgres,
                Engine::Mysql,
                ColumnType::Text
            ),
            Some("'new'".into())
        );
        assert_eq!(
            d("0", Engine::Mysql, Engine::Postgres, ColumnType::Boolean),
            Some("false".into())
        );
        assert_eq!(
            d(
                "current_timestamp()",
                Engine::Mysql,
                Engine::Postgres,
                ColumnType::Timestamp
            ),
            Some("CURRENT_TIMESTAMP".into())
        );
        assert_eq!(
            d(
                "now()",
                Engine::Postgres,
                Engine::Mysql,
                ColumnType::TimestampTz
            ),
            Some("CURRENT_TIMESTAMP(6)".into())
        );
        assert_eq!(
            d("NULL", Engine::Mysql, Engine::Postgres, ColumnType::Text),
            None
        );
        assert_eq!(
            d(
                "(datetime('now'))",
                Engine::Sqlite,
                Engine::Postgres,
                ColumnType::Text
            ),
            Some("CURRENT_TIMESTAMP".into())
        );
        assert_eq!(
            d(
                "'happy'::\"s 1\".mood",
                Engine::Postgres,
                Engine::Mysql,
                ColumnType::Text
            ),
            Some("'happy'".into())
        );
        assert!(
            default(
                "nextval('t_id_seq'::regclass)",
                Engine::Postgres,
                Engine::Sqlite,
                ColumnType::BigInt
            )
            .is_err()
        );
    }
}
