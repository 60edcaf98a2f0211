//! The statements a command executes, as it executes them: `rowshift up --print-sql`
//! shows them, and a test compares them with what `rowshift plan` said would run.
//!
//! The code that runs DDL and bookkeeping statements on the calling thread (the
//! migration history, a sink's `prepare` and post-load DDL) reports each one with
//! [`executed`]. Nothing is kept unless the thread has started a trace with [`start`]:
//! a run's chunk workers and any other thread record nothing. Reads (catalog queries,
//! counts) are not reported; the chunks' own writes are one entry of the caller's.

use std::cell::RefCell;

thread_local! {
    static TRACE: RefCell<Option<Vec<String>>> = const { RefCell::new(None) };
}

/// Starts keeping the statements this thread executes (dropping any kept so far).
pub fn start() {
    TRACE.with(|t| *t.borrow_mut() = Some(Vec::new()));
}

/// Stops keeping statements on this thread.
pub fn stop() {
    TRACE.with(|t| *t.borrow_mut() = None);
}

/// The statements kept since the last call, in the order they ran.
pub fn take() -> Vec<String> {
    TRACE.with(|t| {
        t.borrow_mut()
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default()
    })
}

/// Reports a statement that was executed on this thread.
pub fn executed(sql: &str) {
    TRACE.with(|t| {
        if let Some(kept) = t.borrow_mut().as_mut() {
            kept.push(sql.to_string());
        }
    });
}

/// `sql`, reported as executed: for a statement built and run in one expression.
pub fn traced(sql: String) -> String {
    executed(&sql);
    sql
}

#[cfg(test)]
mod tests {
    #[test]
    fn keeps_statements_only_once_started_and_only_on_its_thread() {
        super::executed("CREATE TABLE a (x int)");
        assert!(super::take().is_empty());
        super::start();
        super::executed("CREATE TABLE b (x int)");
        std::thread::spawn(|| super::executed("CREATE TABLE c (x int)"))
            .join()
            .unwrap();
        assert_eq!(super::take(), vec!["CREATE TABLE b (x int)".to_string()]);
        assert!(super::take().is_empty());
        super::stop();
        super::executed("CREATE TABLE d (x int)");
        assert!(super::take().is_empty());
    }
}
