//! The kind of a statement, in the style of PostgreSQL command tags.

use datafusion::sql::sqlparser::ast::{SetExpr, Statement};

/// The kind of the statement, in the style of PostgreSQL command tags:
/// `SELECT` (queries, including WITH, VALUES and set operations),
/// `EXPLAIN`, `SET`, `SHOW`, `RESET`, `BEGIN`, `COMMIT`, `ROLLBACK`,
/// `PREPARE`, `EXECUTE`, `DEALLOCATE`, `DECLARE`, `FETCH`, `CLOSE`,
/// `INSERT`, `UPDATE`, `DELETE`, `CREATE`, `DROP`, `ALTER`, `COPY`, and
/// `OTHER` for everything else.
pub(crate) fn statement_kind(stmt: &Statement) -> &'static str {
    match stmt {
        Statement::Query(q) => match q.body.as_ref() {
            // WITH … INSERT/UPDATE/DELETE
            SetExpr::Insert(_) => "INSERT",
            SetExpr::Update(_) => "UPDATE",
            SetExpr::Delete(_) => "DELETE",
            SetExpr::Merge(_) => "OTHER",
            _ => "SELECT",
        },
        Statement::Explain { .. } | Statement::ExplainTable { .. } => "EXPLAIN",
        Statement::Set(_) => "SET",
        Statement::ShowVariable { .. }
        | Statement::ShowVariables { .. }
        | Statement::ShowStatus { .. }
        | Statement::ShowFunctions { .. }
        | Statement::ShowCreate { .. }
        | Statement::ShowColumns { .. }
        | Statement::ShowCatalogs { .. }
        | Statement::ShowDatabases { .. }
        | Statement::ShowProcessList { .. }
        | Statement::ShowSchemas { .. }
        | Statement::ShowCharset(_)
        | Statement::ShowObjects(_)
        | Statement::ShowTables { .. }
        | Statement::ShowViews { .. }
        | Statement::ShowCollation { .. } => "SHOW",
        Statement::Reset(_) => "RESET",
        Statement::StartTransaction { .. } => "BEGIN",
        Statement::Commit { .. } => "COMMIT",
        Statement::Rollback { .. } => "ROLLBACK",
        Statement::Prepare { .. } => "PREPARE",
        Statement::Execute { .. } => "EXECUTE",
        Statement::Deallocate { .. } => "DEALLOCATE",
        Statement::Declare { .. } => "DECLARE",
        Statement::Fetch { .. } => "FETCH",
        Statement::Close { .. } => "CLOSE",
        Statement::Insert(_) => "INSERT",
        Statement::Update(_) => "UPDATE",
        Statement::Delete(_) => "DELETE",
        Statement::Copy { .. } | Statement::CopyIntoSnowflake { .. } => "COPY",
        Statement::CreateTable(_)
        | Statement::CreateView(_)
        | Statement::CreateIndex(_)
        | Statement::CreateSchema { .. }
        | Statement::CreateDatabase { .. }
        | Statement::CreateFunction(_)
        | Statement::CreateRole(_)
        | Statement::CreateUser(_)
        | Statement::CreateExtension(_)
        | Statement::CreateSequence { .. }
        | Statement::CreateType { .. }
        | Statement::CreatePolicy(_) => "CREATE",
        Statement::Drop { .. } | Statement::DropFunction(_) | Statement::DropPolicy(_) => "DROP",
        Statement::AlterTable(_)
        | Statement::AlterView { .. }
        | Statement::AlterRole { .. }
        | Statement::AlterUser(_)
        | Statement::AlterSchema(_)
        | Statement::AlterIndex { .. }
        | Statement::AlterPolicy(_) => "ALTER",
        // The many rarer CREATE/DROP/ALTER variants: by leading keyword.
        other => match leading_keyword(&other.to_string()).as_deref() {
            Some("CREATE") => "CREATE",
            Some("DROP") => "DROP",
            Some("ALTER") => "ALTER",
            _ => "OTHER",
        },
    }
}

/// The first word of a printed statement when it is an upper-case keyword.
fn leading_keyword(text: &str) -> Option<String> {
    let word = text
        .split(|c: char| !(c.is_ascii_alphabetic() || c == '_'))
        .next()?;
    let is_keyword = !word.is_empty()
        && word.len() <= 32
        && word.bytes().all(|b| b.is_ascii_uppercase() || b == b'_')
        && text[word.len()..]
            .chars()
            .next()
            .is_none_or(|c| c.is_whitespace() || c == ';');
    is_keyword.then(|| word.to_owned())
}
