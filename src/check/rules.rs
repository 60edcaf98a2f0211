//! Declared checks (`[[checks]]`): rules over the transformed rows, each with a policy.
//!
//! Stateless rules (not null, range, regex, accepted values, SQL expressions) compile to
//! DataFusion predicates over the target schema and run vectorised. `unique` keeps a
//! run-wide set of 128-bit value hashes; `references` looks values up in another table,
//! caching the ones found.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use arrow::array::{Array, ArrayRef, BooleanArray};
use arrow::datatypes::{DataType, SchemaRef};
use arrow::record_batch::RecordBatch;
use datafusion_common::DFSchema;
use datafusion_common::hash_utils::{RandomState, create_hashes};
use datafusion_physical_expr::PhysicalExpr;

use crate::config::{CheckKind, Diagnostic, Pipeline, Policy};
use crate::transform::ExprContext;
use crate::transform::{Scope, compile_expr, eval_lenient};
use crate::types::cast::value_text;
use crate::{Error, Result};

/// The table a `references` check looks its values up in.
///
/// Contract: `missing` is called from several workers at once, with a column of the
/// target schema; it returns the rows whose non-NULL value the referenced column does
/// not hold (a NULL is never missing), and fails rather than guess when the lookup
/// cannot be made.
pub trait Lookup: Send + Sync {
    /// Rows of `values` whose (non-NULL) value the referenced column does not hold.
    fn missing(&self, values: &ArrayRef) -> Result<Vec<usize>>;

    /// The referenced `table.column`, for messages.
    fn referenced(&self) -> String;
}

/// Opens the [`Lookup`] of `references = { table, column }`, or says why it cannot:
/// the message is reported at the check's line.
pub type OpenLookup<'a> = dyn Fn(&str, &str) -> std::result::Result<Box<dyn Lookup>, String> + 'a;

/// The compiled `[[checks]]` of a pipeline. Shared by every worker of a run.
pub struct Checks {
    rules: Vec<Rule>,
}

struct Rule {
    name: String,
    /// The checked column and its index in the target schema.
    column: Option<(String, usize)>,
    policy: Policy,
    kind: RuleKind,
}

enum RuleKind {
    /// Fails where the predicate is false (or NULL, when `null_fails`).
    Predicate {
        expr: Arc<dyn PhysicalExpr>,
        null_fails: bool,
        reason: String,
    },
    /// Value hash -> the chunk that wrote it.
    Unique(Mutex<HashMap<u128, usize>>),
    References(Box<dyn Lookup>),
}

/// One row that failed a check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// Row index in the checked batch.
    pub row: usize,
    /// The column checked, if the check has one.
    pub column: Option<String>,
    /// The value, as text.
    pub value: Option<String>,
    /// Why, starting with the check's name.
    pub reason: String,
    /// What the failure does.
    pub policy: Policy,
}

/// The `unique` values a chunk claimed, so they can be given back if it fails.
#[derive(Debug, Default)]
pub struct Claims(Vec<(usize, u128)>);

impl Checks {
    /// No checks.
    pub fn none() -> Checks {
        Checks { rules: Vec::new() }
    }

    /// Compiles the pipeline's checks against the target schema (`output`; `source` is
    /// the source's, named in messages about a column the checks do not see). Every
    /// problem is reported at once, at the check's line. Referenced tables are looked up
    /// now.
    pub fn compile(
        pipeline: &Pipeline,
        output: &SchemaRef,
        source: &SchemaRef,
        open_lookup: &OpenLookup<'_>,
    ) -> Result<Checks> {
        let ctx = ExprContext::new();
        let df_schema = DFSchema::try_from(output.as_ref().clone())
            .map_err(|e| Error::Internal(e.to_string()))?;
        let mut diags = pipeline.diagnostics();
        let mut rules = Vec::new();
        for c in &pipeline.checks {
            let column = c
                .column
                .as_ref()
                .and_then(|col| Some((col.value.clone(), output.index_of(&col.value).ok()?)));
            if c.column.is_some() && column.is_none() {
                // The column failed its own type or expression check; reported there.
                continue;
            }
            let col_sql = column
                .as_ref()
                .map(|(n, _)| sql_ident(n))
                .unwrap_or_default();
            let predicate =
                |sql: String, null_fails: bool, reason: String| (sql, null_fails, reason);
            let pred = match &c.kind.value {
                CheckKind::NotNull => Some(predicate(
                    format!("{col_sql} IS NOT NULL"),
                    true,
                    "is NULL".into(),
                )),
                CheckKind::Range { min, max } => {
                    let mut parts = Vec::new();
                    if let Some(m) = min {
                        parts.push(format!("{col_sql} >= {m}"));
                    }
                    if let Some(m) = max {
                        parts.push(format!("{col_sql} <= {m}"));
                    }
                    let bounds = match (min.as_deref().map(shown), max.as_deref().map(shown)) {
                        (Some(a), Some(b)) => format!("from {a} to {b}"),
                        (Some(a), None) => format!("at least {a}"),
                        (None, Some(b)) => format!("at most {b}"),
                        (None, None) => unreachable!("a range has a bound"),
                    };
                    Some(predicate(
                        parts.join(" AND "),
                        false,
                        format!("is out of range: expected {bounds}"),
                    ))
                }
                CheckKind::Regex(re) => Some(predicate(
                    format!("regexp_like({col_sql}, {})", sql_string(re)),
                    false,
                    format!("does not match regex `{re}`"),
                )),
                CheckKind::Accepted(values) => Some(predicate(
                    format!("{col_sql} IN ({})", values.join(", ")),
                    false,
                    format!(
                        "is not one of the accepted values: {}",
                        values
                            .iter()
                            .map(|v| shown(v))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                )),
                CheckKind::Expr(sql) => {
                    Some(predicate(sql.clone(), false, format!("row fails {sql}")))
                }
                CheckKind::Unique | CheckKind::References { .. } => None,
            };
            let kind = match (pred, &c.kind.value) {
                (Some((sql, null_fails, reason)), _) => {
                    let what = format!("check `{}`", c.name);
                    let Some(expr) = compile_expr(
                        &ctx,
                        &df_schema,
                        output,
                        &sql,
                        &c.kind.span,
                        &what,
                        &Scope::Target { source },
                        &mut diags,
                    ) else {
                        continue;
                    };
                    match expr.data_type(output) {
                        Ok(DataType::Boolean) => {}
                        Ok(other) => {
                            diags.push(Diagnostic::at(
                                c.kind.span.clone(),
                                format!(
                                    "{what} must be true or false for each row, but gives {other}"
                                ),
                            ));
                            continue;
                        }
                        Err(e) => {
                            diags.push(Diagnostic::at(c.kind.span.clone(), format!("{what}: {e}")));
                            continue;
                        }
                    }
                    RuleKind::Predicate {
                        expr,
                        null_fails,
                        reason,
                    }
                }
                (None, CheckKind::Unique) => RuleKind::Unique(Mutex::new(HashMap::new())),
                (
                    None,
                    CheckKind::References {
                        table,
                        column: rcol,
                    },
                ) => match open_lookup(table, rcol) {
                    Ok(l) => RuleKind::References(l),
                    Err(msg) => {
                        diags.push(Diagnostic::at(c.kind.span.clone(), msg));
                        continue;
                    }
                },
                (None, _) => unreachable!("every other rule is a predicate"),
            };
            rules.push(Rule {
                name: c.name.clone(),
                column,
                policy: c.policy,
                kind,
            });
        }
        diags.into_result()?;
        Ok(Checks { rules })
    }

    /// Whether there is nothing to check.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Whether a rule keeps state across chunks (`unique`), which a resumed run must seed
    /// from what the target already holds.
    pub fn has_unique(&self) -> bool {
        self.rules
            .iter()
            .any(|r| matches!(r.kind, RuleKind::Unique(_)))
    }

    /// Checks every row of `batch` (in the target schema) for `chunk`. Returns one
    /// violation per failing row and rule. Values that `unique` accepts are recorded in
    /// `claims`; rows another rule rejects or fails claim nothing.
    pub fn apply(
        &self,
        batch: &RecordBatch,
        chunk: usize,
        claims: &mut Claims,
    ) -> Result<Vec<Violation>> {
        let n = batch.num_rows();
        let mut out = Vec::new();
        if n == 0 {
            return Ok(out);
        }
        let violation = |rule: &Rule, row: usize, reason: String| Violation {
            row,
            column: rule.column.as_ref().map(|c| c.0.clone()),
            value: rule
                .column
                .as_ref()
                .and_then(|(_, i)| value_text(batch.column(*i).as_ref(), row)),
            reason,
            policy: rule.policy,
        };
        let named = |rule: &Rule, reason: &str| format!("check `{}`: {reason}", rule.name);
        for rule in &self.rules {
            match &rule.kind {
                RuleKind::Predicate {
                    expr,
                    null_fails,
                    reason,
                } => {
                    let (mask, errors) = eval_lenient(expr, batch)?;
                    let mask = mask
                        .as_any()
                        .downcast_ref::<BooleanArray>()
                        .ok_or_else(|| Error::Internal("check is not boolean".into()))?;
                    let errored: HashSet<usize> = errors.iter().map(|(r, _)| *r).collect();
                    for (row, e) in errors {
                        let why = named(rule, &format!("cannot be evaluated: {e}"));
                        out.push(violation(rule, row, why));
                    }
                    // Made once: every failing row has the same reason.
                    let reason = named(rule, reason);
                    for row in 0..n {
                        let failed = if mask.is_null(row) {
                            *null_fails && !errored.contains(&row)
                        } else {
                            !mask.value(row)
                        };
                        if failed {
                            out.push(violation(rule, row, reason.clone()));
                        }
                    }
                }
                RuleKind::References(lookup) => {
                    let (_, i) = rule.column.as_ref().expect("references has a column");
                    for row in lookup.missing(batch.column(*i))? {
                        let why = named(rule, &format!("has no match in {}", lookup.referenced()));
                        out.push(violation(rule, row, why));
                    }
                }
                RuleKind::Unique(_) => {}
            }
        }
        // Unique last: a row that another rule keeps out of the target must not take the
        // value from a later row that is written.
        if !self.has_unique() {
            out.sort_by_key(|v| v.row);
            return Ok(out);
        }
        let blocked: HashSet<usize> = out
            .iter()
            .filter(|v| v.policy != Policy::Warn)
            .map(|v| v.row)
            .collect();
        for (r, rule) in self.rules.iter().enumerate() {
            let RuleKind::Unique(seen) = &rule.kind else {
                continue;
            };
            let (_, i) = rule.column.as_ref().expect("unique has a column");
            let hashes = value_hashes(batch.column(*i))?;
            let mut seen = seen.lock().unwrap_or_else(|p| p.into_inner());
            for (row, hash) in hashes.into_iter().enumerate() {
                if blocked.contains(&row) || batch.column(*i).is_null(row) {
                    continue;
                }
                match seen.get(&hash) {
                    Some(&owner) => {
                        let whose = if owner == chunk {
                            "an earlier row of this chunk".to_string()
                        } else if owner == usize::MAX {
                            "a row the target already holds".to_string()
                        } else {
                            format!("a row of chunk {owner}")
                        };
                        let why =
                            named(rule, &format!("is not unique: {whose} has the same value"));
                        out.push(violation(rule, row, why));
                    }
                    None => {
                        seen.insert(hash, chunk);
                        claims.0.push((r, hash));
                    }
                }
            }
        }
        out.sort_by_key(|v| v.row);
        Ok(out)
    }

    /// Gives back the values a chunk claimed: it failed, so they were not written.
    pub fn release(&self, claims: Claims) {
        for (r, h) in claims.0 {
            if let RuleKind::Unique(seen) = &self.rules[r].kind {
                seen.lock().unwrap_or_else(|p| p.into_inner()).remove(&h);
            }
        }
    }

    /// Gives back the `unique` values a chunk claimed for `rows` (target rows the target
    /// refused): they were not written, so a later row may have them. A value one of the
    /// chunk's `written` rows also holds (a `warn` rule lets both through) stays claimed.
    pub fn release_rows(
        &self,
        claims: &mut Claims,
        rows: &[RecordBatch],
        written: &[RecordBatch],
    ) -> Result<()> {
        let hashes = |batches: &[RecordBatch], i: usize| -> Result<HashSet<u128>> {
            let mut out = HashSet::new();
            for b in batches {
                let column = b.column(i);
                for (row, h) in value_hashes(column)?.into_iter().enumerate() {
                    if column.is_valid(row) {
                        out.insert(h);
                    }
                }
            }
            Ok(out)
        };
        for (r, rule) in self.rules.iter().enumerate() {
            let RuleKind::Unique(seen) = &rule.kind else {
                continue;
            };
            let (_, i) = rule.column.as_ref().expect("unique has a column");
            let held = hashes(written, *i)?;
            let release: HashSet<u128> = hashes(rows, *i)?
                .into_iter()
                .filter(|h| !held.contains(h))
                .collect();
            let mut freed = Vec::new();
            claims.0.retain(|&(cr, h)| {
                let give = cr == r && release.contains(&h);
                if give {
                    freed.push(h);
                }
                !give
            });
            let mut seen = seen.lock().unwrap_or_else(|p| p.into_inner());
            for h in freed {
                seen.remove(&h);
            }
        }
        Ok(())
    }

    /// Records the values of target rows written by an earlier run, so `unique` sees them.
    pub fn seed(&self, batch: &RecordBatch) -> Result<()> {
        for rule in &self.rules {
            let RuleKind::Unique(seen) = &rule.kind else {
                continue;
            };
            let name = &rule.column.as_ref().expect("unique has a column").0;
            let Ok(i) = batch.schema().index_of(name) else {
                continue;
            };
            let column = batch.column(i);
            let hashes = value_hashes(column)?;
            let mut seen = seen.lock().unwrap_or_else(|p| p.into_inner());
            for (row, h) in hashes.into_iter().enumerate() {
                if column.is_valid(row) {
                    seen.insert(h, usize::MAX);
                }
            }
        }
        Ok(())
    }
}

/// Two independent 64-bit hashes per value: 128 bits make a false "not unique" as likely
/// as a disk returning a wrong bit unnoticed.
fn value_hashes(column: &ArrayRef) -> Result<Vec<u128>> {
    let n = column.len();
    let mut a = vec![0u64; n];
    let mut b = vec![0u64; n];
    let cols = std::slice::from_ref(column);
    create_hashes(cols, &RandomState::with_seed(0x756e_6971_7565_0001), &mut a)
        .and_then(|_| create_hashes(cols, &RandomState::with_seed(0x756e_6971_7565_0002), &mut b))
        .map_err(|e| Error::Internal(format!("unique: {e}")))?;
    Ok(a.into_iter()
        .zip(b)
        .map(|(x, y)| (u128::from(x) << 64) | u128::from(y))
        .collect())
}

/// A SQL identifier for DataFusion, quoted so any name works.
fn sql_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A SQL literal as a reason shows it: strings without their quotes, so summaries that
/// group reasons by their quoted values keep them.
fn shown(literal: &str) -> String {
    literal
        .strip_prefix('\'')
        .and_then(|l| l.strip_suffix('\''))
        .map_or_else(|| literal.to_string(), |l| l.replace("''", "'"))
}

/// A SQL string literal.
fn sql_string(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}
