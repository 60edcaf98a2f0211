//! Turning a pipeline's SQL text into a physical expression, with only the DataFusion
//! parts that needs: the SQL parser and planner, the scalar function library, the
//! simplifier and the physical expression planner.
//!
//! rowshift evaluates row-wise expressions over one batch at a time; it never plans a
//! query, scans a table or aggregates. DataFusion's `SessionContext` would bring the
//! query engine, its data sources and its aggregate, window and table functions with it,
//! which more than doubled the cold build.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::datatypes::DataType;
use datafusion_common::config::ConfigOptions;
use datafusion_common::{DFSchema, Result, TableReference, plan_err};
use datafusion_expr::execution_props::ExecutionProps;
use datafusion_expr::physical_planning_context::PhysicalPlanningContext;
use datafusion_expr::planner::{ContextProvider, ExprPlanner};
use datafusion_expr::{AggregateUDF, Expr, HigherOrderUDF, ScalarUDF, TableSource, WindowUDF};
use datafusion_physical_expr::PhysicalExpr;
use datafusion_sql::parser::DFParserBuilder;
use datafusion_sql::planner::{PlannerContext, SqlToRel};
use datafusion_sql::sqlparser::dialect::GenericDialect;

/// What expressions may call, and how SQL syntax maps onto functions: the scalar
/// functions DataFusion ships (string, date/time, regex, math, hashing, encoding, `CASE`
/// helpers such as `coalesce` and `nvl`) and the planners that turn syntax such as
/// `EXTRACT`, `POSITION` or `SUBSTRING ... FROM` into calls of them.
pub(crate) struct ExprContext {
    functions: HashMap<String, Arc<ScalarUDF>>,
    planners: Vec<Arc<dyn ExprPlanner>>,
    options: ConfigOptions,
    props: ExecutionProps,
}

impl ExprContext {
    /// The default function library, as `SessionContext::new()` has it for scalar
    /// expressions.
    pub(crate) fn new() -> Self {
        let mut functions = HashMap::new();
        for f in datafusion_functions::all_default_functions() {
            // Their formats are read strictly: a year of one digit or text left over fails
            // the row instead of becoming a guessed date (see `datefmt`).
            let f = if crate::types::datefmt::PARSING_FUNCTIONS.contains(&f.name()) {
                Arc::new(crate::types::datefmt::StrictDateFunction::wrap(&f))
            } else {
                f
            };
            for alias in f.aliases() {
                functions.insert(alias.clone(), Arc::clone(&f));
            }
            functions.insert(f.name().to_string(), f);
        }
        let planners: Vec<Arc<dyn ExprPlanner>> = vec![
            Arc::new(datafusion_functions::core::planner::CoreFunctionPlanner::default()),
            Arc::new(datafusion_functions::datetime::planner::DatetimeFunctionPlanner),
            Arc::new(datafusion_functions::unicode::planner::UnicodeFunctionPlanner),
        ];
        ExprContext {
            functions,
            planners,
            options: ConfigOptions::default(),
            props: ExecutionProps::new(),
        }
    }

    /// Parses `sql` and plans it against `schema` into a logical expression.
    pub(crate) fn parse_sql_expr(&self, sql: &str, schema: &DFSchema) -> Result<Expr> {
        let dialect = GenericDialect {};
        let parsed = DFParserBuilder::new(sql)
            .with_dialect(&dialect)
            .with_recursion_limit(self.options.sql_parser.recursion_limit.get())
            .build()?
            .parse_into_expr()?;
        let planner = SqlToRel::new_with_options(self, (&self.options.sql_parser).into());
        planner.sql_to_expr_with_alias(parsed, schema, &mut PlannerContext::new())
    }

    /// Plans a simplified, type-coerced logical expression into one that evaluates
    /// batches.
    pub(crate) fn create_physical_expr(
        &self,
        expr: Expr,
        schema: &DFSchema,
    ) -> Result<Arc<dyn PhysicalExpr>> {
        datafusion_physical_expr::create_physical_expr(
            &expr,
            schema,
            &self.props,
            &PhysicalPlanningContext::default(),
        )
    }
}

impl ContextProvider for ExprContext {
    fn get_table_source(&self, name: TableReference) -> Result<Arc<dyn TableSource>> {
        plan_err!("an expression reads the row it is given, not table '{name}'")
    }

    fn get_expr_planners(&self) -> &[Arc<dyn ExprPlanner>] {
        &self.planners
    }

    fn get_function_meta(&self, name: &str) -> Option<Arc<ScalarUDF>> {
        self.functions.get(name).cloned()
    }

    fn get_higher_order_meta(&self, _name: &str) -> Option<Arc<HigherOrderUDF>> {
        None
    }

    fn get_aggregate_meta(&self, _name: &str) -> Option<Arc<AggregateUDF>> {
        None
    }

    fn get_window_meta(&self, _name: &str) -> Option<Arc<WindowUDF>> {
        None
    }

    fn get_variable_type(&self, _variable_names: &[String]) -> Option<DataType> {
        None
    }

    fn options(&self) -> &ConfigOptions {
        &self.options
    }

    fn udf_names(&self) -> Vec<String> {
        self.functions.keys().cloned().collect()
    }

    fn higher_order_function_names(&self) -> Vec<String> {
        Vec::new()
    }

    fn udaf_names(&self) -> Vec<String> {
        Vec::new()
    }

    fn udwf_names(&self) -> Vec<String> {
        Vec::new()
    }
}
