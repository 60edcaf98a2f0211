//! Transforms: each target column is a SQL expression over the source columns, evaluated
//! vectorised on Arrow batches by DataFusion, then cast into its declared type without loss.

mod sql;

use std::ops::Range;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, BooleanArray, new_null_array};
use arrow::compute::kernels::cast::can_cast_types;
use arrow::compute::{concat, filter_record_batch, prep_null_mask_filter};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use datafusion_common::{DFSchema, DataFusionError, SchemaError};
use datafusion_expr::simplify::SimplifyContext;
use datafusion_optimizer::simplify_expressions::ExprSimplifier;
use datafusion_physical_expr::PhysicalExpr;
use datafusion_physical_expr::utils::collect_columns;
use rayon::prelude::*;

pub(crate) use self::sql::ExprContext;
use crate::config::{Diagnostic, Diagnostics, Pipeline, suggest};
use crate::types::ColumnType;
use crate::types::cast::{cast_zoned, type_name, value_text};
use crate::{Error, Result};

/// A compiled set of target-column expressions and the filter. Pure and `Sync`: any
/// thread may apply it to any batch.
pub struct Transform {
    filter: Option<Arc<dyn PhysicalExpr>>,
    columns: Vec<OutputColumn>,
    output: SchemaRef,
}

struct OutputColumn {
    name: String,
    expr: Arc<dyn PhysicalExpr>,
    ty: ColumnType,
    nullable: bool,
    /// For timestamptz: the zone of values that carry none.
    zone: Option<String>,
    /// For date and timestamp columns: the strict format of their text values.
    format: Option<String>,
}

/// The result of transforming one batch.
#[derive(Debug)]
pub struct Transformed {
    /// The rows that passed, in the target schema.
    pub batch: RecordBatch,
    /// How many input rows the filter dropped.
    pub filtered: usize,
    /// Rows that failed, with why; one entry per row, the first failure found. They are
    /// not in `batch`.
    pub rejects: Vec<Reject>,
    /// For each row of `batch`, its index in the input; `None` when every input row passed.
    pub rows: Option<Vec<usize>>,
}

/// One input row that could not be transformed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reject {
    /// Row index in the input batch.
    pub row: usize,
    /// The target column that failed; `None` for the filter.
    pub column: Option<String>,
    /// The offending value, when known.
    pub value: Option<String>,
    /// Why.
    pub reason: String,
}

impl Transform {
    /// Compiles the pipeline's expressions against the source schema. Every problem is
    /// reported at once, each at the line of its expression.
    pub fn compile(pipeline: &Pipeline, input: SchemaRef) -> Result<Transform> {
        let ctx = ExprContext::new();
        let df_schema = DFSchema::try_from(input.as_ref().clone())
            .map_err(|e| Error::Internal(e.to_string()))?;
        let mut diags = pipeline.diagnostics();
        let mut columns = Vec::new();
        for c in &pipeline.target.columns {
            let what = format!("expression for column `{}`", c.name.value);
            let Some(expr) = compile_expr(
                &ctx,
                &df_schema,
                &input,
                &c.expr.value,
                &c.expr.span,
                &what,
                &Scope::Source,
                &mut diags,
            ) else {
                continue;
            };
            let ty = c.ty.value;
            let got = match expr.data_type(&input) {
                Ok(t) => t,
                Err(e) => {
                    diags.push(Diagnostic::at(
                        c.expr.span.clone(),
                        format!("{what}: {}", df_message(&e)),
                    ));
                    continue;
                }
            };
            if let Some(f) = &c.format
                && !matches!(
                    got,
                    DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
                )
            {
                diags.push(Diagnostic::at(
                    f.span.clone(),
                    format!(
                        "`format` reads text, but the {what} gives {}",
                        type_name(&got)
                    ),
                ));
                continue;
            }
            if !can_cast_types(&got, &ty.arrow_type()) {
                diags.push(
                    Diagnostic::at(
                        c.ty.span.clone(),
                        format!("{what} gives {}, which cannot become {ty}", type_name(&got)),
                    )
                    .with_help(
                        "change the type, or convert in the expression, e.g. CAST(x AS DATE)",
                    ),
                );
                continue;
            }
            columns.push(OutputColumn {
                name: c.name.value.clone(),
                expr,
                ty,
                nullable: c.nullable,
                zone: c.timezone.as_ref().map(|z| z.value.clone()),
                format: c.format.as_ref().map(|f| f.value.clone()),
            });
        }
        let mut filter = None;
        if let Some(f) = &pipeline.filter
            && let Some(expr) = compile_expr(
                &ctx,
                &df_schema,
                &input,
                &f.value,
                &f.span,
                "filter",
                &Scope::Source,
                &mut diags,
            )
        {
            match expr.data_type(&input) {
                Ok(DataType::Boolean) => filter = Some(expr),
                Ok(other) => diags.push(Diagnostic::at(
                    f.span.clone(),
                    format!(
                        "filter must be true or false for each row, but gives {}",
                        type_name(&other)
                    ),
                )),
                Err(e) => diags.push(Diagnostic::at(
                    f.span.clone(),
                    format!("filter: {}", df_message(&e)),
                )),
            }
        }
        diags.into_result()?;
        let output = Arc::new(Schema::new(
            columns
                .iter()
                .map(|c| Field::new(&c.name, c.ty.arrow_type(), c.nullable))
                .collect::<Vec<_>>(),
        ));
        Ok(Transform {
            filter,
            columns,
            output,
        })
    }

    /// The schema of transformed batches.
    pub fn output_schema(&self) -> SchemaRef {
        self.output.clone()
    }

    /// The positions of the input columns that some expression or the filter reads, in
    /// order. A run need not read the others (see [`crate::plan::Plan::used_columns`]).
    pub fn input_columns(&self) -> Vec<usize> {
        let mut used: Vec<usize> = self
            .columns
            .iter()
            .map(|c| &c.expr)
            .chain(&self.filter)
            .flat_map(collect_columns)
            .map(|c| c.index())
            .collect();
        used.sort_unstable();
        used.dedup();
        used
    }

    /// The declared type of each output column.
    pub fn column_types(&self) -> Vec<(String, ColumnType, bool)> {
        self.columns
            .iter()
            .map(|c| (c.name.clone(), c.ty, c.nullable))
            .collect()
    }

    /// Filters and transforms one batch. Row-level problems become [`Reject`]s; only a
    /// failure that no single row explains is an error.
    pub fn apply(&self, input: &RecordBatch) -> Result<Transformed> {
        let n = input.num_rows();
        let mut rejects: Vec<Reject> = Vec::new();
        let (batch, kept, filtered) = match &self.filter {
            None => (input.clone(), None, 0),
            Some(f) => {
                let (mask, failures) = eval_lenient(f, input)?;
                for (row, reason) in failures {
                    rejects.push(Reject {
                        row,
                        column: None,
                        value: Some(inputs_text(f, input, row)),
                        reason: format!("filter: {reason}"),
                    });
                }
                let mask = mask
                    .as_any()
                    .downcast_ref::<BooleanArray>()
                    .ok_or_else(|| Error::Internal("filter is not boolean".into()))?;
                let mask = if mask.null_count() > 0 {
                    prep_null_mask_filter(mask)
                } else {
                    mask.clone()
                };
                let keep = mask.true_count();
                // Rows whose filter failed are NULL in the mask, so they are not counted twice.
                let filtered = n - keep - rejects.len();
                let kept: Vec<usize> = (0..n).filter(|&i| mask.value(i)).collect();
                (
                    filter_record_batch(input, &mask)
                        .map_err(|e| Error::Internal(e.to_string()))?,
                    Some(kept),
                    filtered,
                )
            }
        };
        let to_input_row = |row: usize| kept.as_ref().map_or(row, |k| k[row]);

        let results: Vec<Result<(ArrayRef, Vec<Reject>)>> = self
            .columns
            .par_iter()
            .map(|c| self.column(c, &batch))
            .collect();
        let mut arrays = Vec::with_capacity(self.columns.len());
        let mut bad = vec![false; batch.num_rows()];
        for r in results {
            let (array, col_rejects) = r?;
            for mut rj in col_rejects {
                bad[rj.row] = true;
                rj.row = to_input_row(rj.row);
                rejects.push(rj);
            }
            arrays.push(array);
        }
        let out = RecordBatch::try_new(self.output.clone(), arrays)
            .map_err(|e| Error::Internal(e.to_string()))?;
        let any_bad = bad.iter().any(|b| *b);
        let out = if any_bad {
            let keep = BooleanArray::from(bad.iter().map(|b| !b).collect::<Vec<_>>());
            filter_record_batch(&out, &keep).map_err(|e| Error::Internal(e.to_string()))?
        } else {
            out
        };
        let rows = match (kept, any_bad) {
            (None, false) => None,
            (kept, _) => Some(
                (0..bad.len())
                    .filter(|&i| !bad[i])
                    .map(|i| kept.as_ref().map_or(i, |k| k[i]))
                    .collect(),
            ),
        };
        // A row that fails in several columns is one rejected row.
        rejects.sort_by_key(|r| r.row);
        rejects.dedup_by_key(|r| r.row);
        Ok(Transformed {
            batch: out,
            filtered,
            rejects,
            rows,
        })
    }

    fn column(&self, c: &OutputColumn, batch: &RecordBatch) -> Result<(ArrayRef, Vec<Reject>)> {
        let reject = |row, value, reason| Reject {
            row,
            column: Some(c.name.clone()),
            value,
            reason,
        };
        let (values, failures) = eval_lenient(&c.expr, batch)?;
        // A failing expression has no value: the inputs it read are what explains it.
        let mut rejects: Vec<Reject> = failures
            .into_iter()
            .map(|(row, reason)| reject(row, Some(inputs_text(&c.expr, batch, row)), reason))
            .collect();
        let target = c.ty.arrow_type();
        let (values, format_failures) = match &c.format {
            Some(f) => crate::types::datefmt::parse_column(&values, f, &target)
                .map_err(|e| Error::Internal(format!("column {}: {e}", c.name)))?,
            None => (values, Vec::new()),
        };
        let (mut cast, mut cast_failures) = cast_zoned(&values, &target, c.zone.as_deref())
            .map_err(|e| Error::Internal(format!("column {}: {e}", c.name)))?;
        cast_failures.extend(format_failures);
        cast_failures.sort_by_key(|f| f.row);
        rejects.extend(
            cast_failures
                .into_iter()
                .map(|f| reject(f.row, f.value, format!("value {}", f.reason))),
        );
        if let ColumnType::Varchar(max) = c.ty {
            let strings = cast
                .as_any()
                .downcast_ref::<arrow::array::StringArray>()
                .ok_or_else(|| Error::Internal("varchar is not utf8".into()))?;
            for row in 0..strings.len() {
                if strings.is_valid(row) {
                    let len = strings.value(row).chars().count();
                    if len > max as usize {
                        rejects.push(reject(
                            row,
                            Some(strings.value(row).to_string()),
                            format!("has {len} characters, more than varchar({max}) holds"),
                        ));
                    }
                }
            }
        }
        if !c.nullable && cast.null_count() > 0 {
            let failed: std::collections::HashSet<usize> = rejects.iter().map(|r| r.row).collect();
            for row in 0..cast.len() {
                if cast.is_null(row) && !failed.contains(&row) {
                    rejects.push(reject(
                        row,
                        None,
                        format!(
                            "is NULL, but the column is declared nullable = false ({})",
                            c.ty
                        ),
                    ));
                }
            }
        }
        if cast.null_count() > 0 && !c.nullable {
            // Keep the batch valid for a non-nullable field: rejected rows are removed
            // afterwards, so their placeholder value does not matter.
            cast = fill_nulls(&cast)?;
        }
        Ok((cast, rejects))
    }
}

/// Replaces NULLs with the type's default so a non-nullable field accepts the array.
fn fill_nulls(array: &ArrayRef) -> Result<ArrayRef> {
    let data = array
        .to_data()
        .into_builder()
        .nulls(None)
        .build()
        .map_err(|e| Error::Internal(e.to_string()))?;
    Ok(arrow::array::make_array(data))
}

/// The columns an expression sees, for messages about a name it does not find.
pub(crate) enum Scope<'a> {
    /// A target column's expression or the filter: the source columns.
    Source,
    /// A check: the target columns, beside the source's (`source`), which it does not
    /// see.
    Target {
        /// The source's columns.
        source: &'a SchemaRef,
    },
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn compile_expr(
    ctx: &ExprContext,
    df_schema: &DFSchema,
    input: &SchemaRef,
    sql: &str,
    span: &Option<Range<usize>>,
    what: &str,
    scope: &Scope<'_>,
    diags: &mut Diagnostics,
) -> Option<Arc<dyn PhysicalExpr>> {
    let expr = match ctx.parse_sql_expr(sql, df_schema) {
        Ok(e) => e,
        Err(e) => {
            diags.push(df_diagnostic(&e, span, what, input, scope));
            return None;
        }
    };
    if expr.is_volatile() {
        diags.push(
            Diagnostic::at(span.clone(), format!("{what} calls a volatile function (such as random()); its value would differ when a chunk is redone"))
                .with_help("derive the value from the row, e.g. md5(CAST(id AS TEXT))"),
        );
        return None;
    }
    // Some functions (coalesce, nvl) only exist after simplification; the physical planner
    // expects it to have run. It also folds now() to one value for the whole run.
    let simplifier = ExprSimplifier::new(
        SimplifyContext::builder()
            .with_schema(Arc::new(df_schema.clone()))
            .with_query_execution_start_time(Some(chrono::Utc::now()))
            .build(),
    );
    let simplified = simplifier
        .coerce(expr, df_schema)
        .and_then(|e| simplifier.simplify(e));
    let expr = match simplified {
        Ok(e) => e,
        Err(e) => {
            diags.push(df_diagnostic(&e, span, what, input, scope));
            return None;
        }
    };
    match ctx.create_physical_expr(expr, df_schema) {
        Ok(p) => Some(p),
        Err(e) => {
            diags.push(df_diagnostic(&e, span, what, input, scope));
            None
        }
    }
}

fn df_diagnostic(
    e: &DataFusionError,
    span: &Option<Range<usize>>,
    what: &str,
    input: &SchemaRef,
    scope: &Scope<'_>,
) -> Diagnostic {
    let names: Vec<&str> = input.fields().iter().map(|f| f.name().as_str()).collect();
    if let (Some(SchemaError::FieldNotFound { field, .. }), Scope::Target { source }) =
        (find_schema_error(e), scope)
    {
        let sources: Vec<&str> = source.fields().iter().map(|f| f.name().as_str()).collect();
        let name = &field.name;
        let mut help = format!(
            "target columns are: {}; source columns are: {}",
            names.join(", "),
            sources.join(", ")
        );
        if sources.contains(&name.as_str()) {
            help = format!(
                "`{name}` is a source column; to check it, add a target column with expr = \"{name}\" and check that. {help}"
            );
        } else if let Some(best) = suggest(name, names.iter().copied()) {
            help = format!("did you mean `{best}`? {help}");
        }
        return Diagnostic::at(
            span.clone(),
            format!(
                "{what} names column `{name}`, which is not a target column: checks see the target columns, not the source's"
            ),
        )
        .with_help(help);
    }
    if let Some(SchemaError::FieldNotFound { field, .. }) = find_schema_error(e) {
        let d = Diagnostic::at(
            span.clone(),
            format!(
                "{what} names column `{}`, which the source does not have",
                field.name
            ),
        );
        return match suggest(&field.name, names.iter().copied()) {
            Some(best) => d.with_help(format!(
                "did you mean `{best}`? (unquoted names are lowercased; quote mixed case: \"Name\")"
            )),
            None => d.with_help(format!("source columns are: {}", names.join(", "))),
        };
    }
    Diagnostic::at(span.clone(), format!("{what}: {}", df_message(e)))
}

fn find_schema_error(e: &DataFusionError) -> Option<&SchemaError> {
    match e {
        DataFusionError::SchemaError(s, _) => Some(s),
        DataFusionError::Context(_, inner) => find_schema_error(inner),
        DataFusionError::Diagnostic(_, inner) => find_schema_error(inner),
        _ => None,
    }
}

/// DataFusion's message without its internal prefixes.
fn df_message(e: &DataFusionError) -> String {
    let text = e.strip_backtrace();
    let mut s = text.as_str();
    for prefix in [
        "Error during planning: ",
        "Arrow error: ",
        "Execution error: ",
        "SQL error: ",
        "Optimizer rule 'simplify_expressions' failed\ncaused by\n",
    ] {
        while let Some(rest) = s.strip_prefix(prefix) {
            s = rest;
        }
    }
    s.to_string()
}

fn eval(expr: &Arc<dyn PhysicalExpr>, batch: &RecordBatch) -> Result<ArrayRef, DataFusionError> {
    expr.evaluate(batch)?.into_array(batch.num_rows())
}

/// Evaluates `expr`; if the batch fails as a whole, bisects it to find the rows that fail
/// and why. Those rows are NULL in the result.
pub(crate) fn eval_lenient(
    expr: &Arc<dyn PhysicalExpr>,
    batch: &RecordBatch,
) -> Result<(ArrayRef, Vec<(usize, String)>)> {
    match eval(expr, batch) {
        Ok(a) => Ok((a, Vec::new())),
        Err(_) => {
            let ty = expr
                .data_type(&batch.schema())
                .map_err(|e| Error::Internal(e.to_string()))?;
            let mut pieces = Vec::new();
            let mut failures = Vec::new();
            bisect(
                expr,
                batch,
                0,
                batch.num_rows(),
                &ty,
                &mut pieces,
                &mut failures,
            )?;
            let refs: Vec<&dyn Array> = pieces.iter().map(|a| a.as_ref()).collect();
            let array = concat(&refs).map_err(|e| Error::Internal(e.to_string()))?;
            Ok((array, failures))
        }
    }
}

fn bisect(
    expr: &Arc<dyn PhysicalExpr>,
    batch: &RecordBatch,
    start: usize,
    len: usize,
    ty: &DataType,
    pieces: &mut Vec<ArrayRef>,
    failures: &mut Vec<(usize, String)>,
) -> Result<()> {
    if len == 0 {
        return Ok(());
    }
    match eval(expr, &batch.slice(start, len)) {
        Ok(a) => pieces.push(a),
        Err(e) if len == 1 && !is_row_error(&e) => return Err(Error::Internal(df_message(&e))),
        Err(e) if len == 1 => {
            failures.push((start, df_message(&e)));
            pieces.push(new_null_array(ty, 1));
        }
        Err(_) => {
            let half = len / 2;
            bisect(expr, batch, start, half, ty, pieces, failures)?;
            bisect(expr, batch, start + half, len - half, ty, pieces, failures)?;
        }
    }
    Ok(())
}

/// Whether an evaluation error is about the values of a row (a cast, an overflow, a
/// division by zero) rather than a defect that would fail any row.
fn is_row_error(e: &DataFusionError) -> bool {
    match e {
        DataFusionError::ArrowError(..) | DataFusionError::Execution(_) => true,
        DataFusionError::Context(_, inner) | DataFusionError::Diagnostic(_, inner) => {
            is_row_error(inner)
        }
        _ => false,
    }
}

/// The source columns `expr` reads and their values at `row` of `batch`, for the
/// quarantine of a row whose expression failed: `amount=12,5, qty=3` (the row's stored
/// values are kept beside it as JSON).
fn inputs_text(expr: &Arc<dyn PhysicalExpr>, batch: &RecordBatch, row: usize) -> String {
    let mut columns: Vec<_> = collect_columns(expr).into_iter().collect();
    columns.sort_by_key(|c| c.index());
    columns
        .iter()
        .map(|c| {
            let value = batch
                .columns()
                .get(c.index())
                .and_then(|a| value_text(a.as_ref(), row))
                .unwrap_or_else(|| "NULL".to_string());
            format!("{}={value}", c.name())
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The text of `batch[column][row]`, for messages.
pub fn cell_text(batch: &RecordBatch, column: usize, row: usize) -> Option<String> {
    value_text(batch.column(column).as_ref(), row)
}

#[cfg(test)]
mod tests;
