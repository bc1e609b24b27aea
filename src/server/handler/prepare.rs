//! Statement preparation: the extended-protocol [`Parser`], the plan cache
//! and the audit record of a statement parsed but never executed.

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::sql::sqlparser::ast::Statement;
use pgwire::api::portal::Format;
use pgwire::api::results::FieldInfo;
use pgwire::api::stmt::QueryParser;
use pgwire::api::{ClientInfo, Type};
use pgwire::error::PgWireResult;

use super::{Parser, Prepared, PreparedInner, PreparedKind, token_expired};
use crate::audit::events::StatementAudit;
use crate::enforce::PlanKey;
use crate::engine::encode::pg_fields;
use crate::error::SqlError;
use crate::rewrite::fingerprint::{fingerprint, statement_kind};
use crate::rewrite::gate::{self, StatementKind};
use crate::session::Session;

/// A statement planned for a Parse message that has not been executed:
/// when the statement is closed (or the session ends) without an Execute,
/// its audit record says so. Planning disclosed its columns to a Describe.
pub(crate) struct Unexecuted {
    audit: Mutex<Option<StatementAudit>>,
    executed: AtomicBool,
}

impl Unexecuted {
    pub(super) fn mark_executed(&self) {
        self.executed.store(true, Ordering::Relaxed);
    }
}

impl Drop for Unexecuted {
    fn drop(&mut self) {
        if self.executed.load(Ordering::Relaxed) {
            return;
        }
        let audit = self
            .audit
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(audit) = audit {
            audit.never_executed();
        }
    }
}

impl Debug for Unexecuted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Unexecuted")
            .field("executed", &self.executed.load(Ordering::Relaxed))
            .finish()
    }
}

/// The plan-cache key of `sql` in `session`'s current state: the same SQL
/// text planned for another subject (role, site, purpose, break-glass),
/// policy version, search path or database is another plan.
pub(super) fn plan_key_of(session: &Session, sql: &str) -> PlanKey {
    PlanKey {
        sql: Arc::from(sql),
        policy_version: session.policy_key(),
        subject: session.subject(),
        search_path: session.search_path(),
        database: session.database.clone(),
    }
}

impl Parser {
    /// The plan-cache key of `sql` in this session's current state, or
    /// `None` when the cache is off.
    pub(super) fn plan_key(&self, session: &Session, sql: &str) -> Option<PlanKey> {
        self.shared.plans.as_ref()?;
        Some(plan_key_of(session, sql))
    }

    pub(super) fn cached(&self, key: Option<&PlanKey>) -> Option<Prepared> {
        let found = self.shared.plans.as_ref()?.get(key?);
        crate::metrics::Metrics::global().cache(crate::metrics::Cache::Plan, found.is_some());
        found
    }

    pub(super) fn remember(&self, key: Option<PlanKey>, prepared: &Prepared) {
        if let (Some(cache), Some(key)) = (self.shared.plans.as_ref(), key)
            && prepared.0.shareable
        {
            cache.insert(key, prepared.clone());
        }
    }

    /// A planned statement of a Parse message, with the guard that audits
    /// it if it is never executed.
    fn with_parse_audit(&self, session: &Session, prepared: Prepared) -> Prepared {
        if !matches!(prepared.0.kind, PreparedKind::Plan { .. }) {
            return prepared;
        }
        let mut audit = StatementAudit::new(
            &self.shared.audit,
            session,
            prepared.0.statement_kind,
            Some(prepared.0.fingerprint.clone()),
        );
        if let Some(r) = &prepared.0.report {
            audit.report(r);
        }
        let guard = Unexecuted {
            audit: Mutex::new(Some(audit)),
            executed: AtomicBool::new(false),
        };
        Prepared(prepared.0, Some(Arc::new(guard)))
    }

    fn session(&self) -> Result<Arc<Session>, SqlError> {
        self.session
            .get()
            .cloned()
            .ok_or_else(|| SqlError::fatal("08P01", "query before startup completed"))
    }

    /// Turn one parsed statement into a [`Prepared`]: classify, bind session
    /// functions, plan.
    pub(super) async fn prepare(
        &self,
        session: &Session,
        stmt: Statement,
    ) -> Result<Prepared, SqlError> {
        let kind = statement_kind(&stmt);
        let text = fingerprint(&stmt, &crate::enforce::catalog_names(&self.shared.engine));
        // Under a shadow policy a refused statement is planned under it too.
        let source = session.shadow().map(|_| stmt.clone());
        match self.prepare_unaudited(session, stmt, kind, &text).await {
            Ok(p) => Ok(p),
            Err(e) => {
                let mut audit = StatementAudit::new(&self.shared.audit, session, kind, Some(text));
                if let Some(source) = source {
                    let principal = crate::query::Principal::of_session(
                        session,
                        self.shared.registry.pid_of(session.id).unwrap_or(0),
                    );
                    let verdict = crate::query::shadow::verdict_of_refused(
                        &self.shared.engine,
                        &principal,
                        source,
                    )
                    .await;
                    audit.shadow(verdict.as_ref());
                }
                audit.failed(&e);
                Err(e)
            }
        }
    }

    /// A statement that could not be parsed, audited without a fingerprint.
    pub(super) fn refused_unparsed(&self, session: &Session, e: &SqlError) {
        StatementAudit::new(&self.shared.audit, session, "UNKNOWN", None).failed(e);
    }

    /// [`Parser::prepare`] without the audit record of a refusal (the
    /// caller records it).
    pub(super) async fn prepare_unaudited(
        &self,
        session: &Session,
        stmt: Statement,
        statement_kind: &'static str,
        fingerprint: &str,
    ) -> Result<Prepared, SqlError> {
        let source = stmt.clone();
        match crate::query::classify(stmt)? {
            StatementKind::Query(stmt) | StatementKind::Explain(stmt) => {
                let principal = crate::query::Principal::of_session(
                    session,
                    self.shared.registry.pid_of(session.id).unwrap_or(0),
                );
                let planned =
                    crate::query::plan_query(&self.shared.engine, &principal, stmt).await?;
                Ok(Prepared(
                    Arc::new(PreparedInner::planned(
                        planned,
                        &principal,
                        source,
                        statement_kind,
                        fingerprint,
                    )),
                    None,
                ))
            }
            StatementKind::Declare { name, query } => {
                self.around_query(session, *query, statement_kind, fingerprint, |inner| {
                    PreparedKind::Declare { name, inner }
                })
                .await
            }
            StatementKind::Copy { query, options } => {
                self.around_query(session, *query, statement_kind, fingerprint, |inner| {
                    PreparedKind::Copy { options, inner }
                })
                .await
            }
            StatementKind::Prepare { name, statement } => {
                let kind = crate::rewrite::fingerprint::statement_kind(&statement);
                let text = crate::rewrite::fingerprint::fingerprint(
                    &statement,
                    &crate::enforce::catalog_names(&self.shared.engine),
                );
                let inner =
                    Box::pin(self.prepare_unaudited(session, *statement, kind, &text)).await?;
                if !matches!(inner.0.kind, PreparedKind::Plan { .. }) {
                    return Err(SqlError::new(
                        "0A000",
                        "PREPARE is supported for queries only",
                    ));
                }
                Ok(Prepared(
                    Arc::new(PreparedInner::around(
                        inner,
                        |inner| PreparedKind::Prepare { name, inner },
                        statement_kind,
                        fingerprint,
                    )),
                    None,
                ))
            }
            StatementKind::Execute { name, params } => {
                let inner = self.sql_statement(&name)?;
                let args = execute_args(&name, &params, &inner.0.param_data_types)?;
                // The EXECUTE's own `$n` take the types of the parameters
                // they stand for.
                let count = args
                    .iter()
                    .filter_map(|a| match a {
                        ExecuteArg::Param(j) => Some(j + 1),
                        ExecuteArg::Value(_) => None,
                    })
                    .max()
                    .unwrap_or(0);
                let mut param_types = vec![Type::TEXT; count];
                let mut param_data_types = vec![None; count];
                for (i, arg) in args.iter().enumerate() {
                    if let ExecuteArg::Param(j) = arg {
                        param_types[*j] = inner.0.param_types.get(i).cloned().unwrap_or(Type::TEXT);
                        param_data_types[*j] = inner.0.param_data_types.get(i).cloned().flatten();
                    }
                }
                // Audited as the statement it runs: its kind and shape.
                Ok(Prepared(
                    Arc::new(PreparedInner {
                        result_schema: inner.0.result_schema.clone(),
                        reads_tables: inner.0.reads_tables,
                        param_types,
                        param_data_types,
                        ..PreparedInner::new(
                            PreparedKind::Execute {
                                args,
                                inner: inner.clone(),
                            },
                            inner.0.statement_kind,
                            &inner.0.fingerprint,
                        )
                    }),
                    None,
                ))
            }
            other => {
                let result_schema = match &other {
                    StatementKind::Show { name } if name == "all" => {
                        Some(Arc::new(Schema::new(vec![
                            Field::new("name", DataType::Utf8, false),
                            Field::new("setting", DataType::Utf8, false),
                            Field::new("description", DataType::Utf8, false),
                        ])))
                    }
                    StatementKind::Show { name } => Some(Arc::new(Schema::new(vec![Field::new(
                        name.clone(),
                        DataType::Utf8,
                        false,
                    )]))),
                    _ => None,
                };
                Ok(Prepared(
                    Arc::new(PreparedInner {
                        result_schema,
                        ..PreparedInner::new(
                            PreparedKind::Utility(other),
                            statement_kind,
                            fingerprint,
                        )
                    }),
                    None,
                ))
            }
        }
    }
}

impl Parser {
    /// A statement that runs a query (`DECLARE … CURSOR FOR`, `COPY (…) TO
    /// STDOUT`): the query prepared under the statement's own kind and
    /// fingerprint, then wrapped.
    async fn around_query(
        &self,
        session: &Session,
        query: Statement,
        statement_kind: &'static str,
        fingerprint: &str,
        wrap: impl FnOnce(Prepared) -> PreparedKind,
    ) -> Result<Prepared, SqlError> {
        let inner =
            Box::pin(self.prepare_unaudited(session, query, statement_kind, fingerprint)).await?;
        Ok(Prepared(
            Arc::new(PreparedInner::around(
                inner,
                wrap,
                statement_kind,
                fingerprint,
            )),
            None,
        ))
    }

    fn sql_statements(&self) -> std::sync::MutexGuard<'_, HashMap<String, Prepared>> {
        self.sql_statements
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// How many statements of SQL `PREPARE` are held.
    pub(super) fn sql_statement_count(&self) -> usize {
        self.sql_statements().len()
    }

    /// The statement `PREPARE`d as `name`.
    fn sql_statement(&self, name: &str) -> Result<Prepared, SqlError> {
        self.sql_statements()
            .get(name)
            .cloned()
            .ok_or_else(|| missing_statement(name))
    }

    /// Keep a `PREPARE`d statement under `name`; `taken` says whether a
    /// statement of Parse already has the name (one namespace, as in
    /// PostgreSQL), `protocol` how many Parse statements are held.
    pub(super) fn keep_sql_statement(
        &self,
        name: &str,
        inner: &Prepared,
        taken: bool,
        protocol: usize,
    ) -> Result<(), SqlError> {
        let mut statements = self.sql_statements();
        if statements.len() + protocol >= super::MAX_PREPARED_STATEMENTS {
            return Err(super::too_many_statements());
        }
        if taken || statements.contains_key(name) {
            return Err(SqlError::new(
                "42P05",
                format!(
                    "prepared statement \"{}\" already exists",
                    super::printable(name)
                ),
            ));
        }
        statements.insert(name.to_owned(), inner.clone());
        Ok(())
    }

    /// `DEALLOCATE name`: whether a `PREPARE`d statement had the name;
    /// `DEALLOCATE ALL` (`None`): every one is dropped.
    pub(super) fn drop_sql_statements(&self, name: Option<&str>) -> bool {
        let mut statements = self.sql_statements();
        match name {
            Some(n) => statements.remove(n).is_some(),
            None => {
                statements.clear();
                true
            }
        }
    }
}

/// The error for a statement name that names nothing.
pub(super) fn missing_statement(name: &str) -> SqlError {
    SqlError::new(
        "26000",
        format!(
            "prepared statement \"{}\" does not exist",
            super::printable(name)
        ),
    )
}

/// One value of `EXECUTE name(v1, …)`.
#[derive(Debug, Clone)]
pub(super) enum ExecuteArg {
    /// A constant, read as the type the parameter was planned with.
    Value(datafusion::common::ScalarValue),
    /// A parameter of the `EXECUTE` statement itself (`EXECUTE q($1)`, as
    /// psycopg sends it), 0-based.
    Param(usize),
}

/// The values of `EXECUTE name(v1, …)` as the statement's parameters:
/// constants (a literal, a signed number, a typed string or a cast of
/// one), each read as the type the parameter was planned with, or the
/// `EXECUTE`'s own `$n`.
fn execute_args(
    name: &str,
    values: &[datafusion::sql::sqlparser::ast::Expr],
    types: &[Option<DataType>],
) -> Result<Vec<ExecuteArg>, SqlError> {
    use datafusion::common::ScalarValue;
    use datafusion::sql::sqlparser::ast::{Expr, Value};
    if values.len() != types.len() {
        return Err(SqlError::new(
            "42601",
            format!(
                "wrong number of parameters for prepared statement \"{}\": expected {}, got {}",
                super::printable(name),
                types.len(),
                values.len()
            ),
        ));
    }
    let mut args = Vec::with_capacity(values.len());
    for (i, (value, ty)) in values.iter().zip(types).enumerate() {
        if let Expr::Value(v) = value
            && let Value::Placeholder(p) = &v.value
        {
            let n = p
                .strip_prefix('$')
                .and_then(|n| n.parse::<usize>().ok())
                .filter(|n| (1..=65535).contains(n))
                .ok_or_else(|| SqlError::new("42P02", "parameters must be written $1, $2, ..."))?;
            args.push(ExecuteArg::Param(n - 1));
            continue;
        }
        let text = constant_text(value).ok_or_else(|| {
            SqlError::new(
                "0A000",
                format!("EXECUTE parameter ${} must be a constant", i + 1),
            )
        })?;
        let target = ty.clone().unwrap_or(DataType::Utf8);
        let scalar = match text {
            None => ScalarValue::try_from(&target)
                .map_err(|_| SqlError::new("22P02", "invalid value for a parameter"))?,
            Some(t) => ScalarValue::Utf8(Some(t)).cast_to(&target).map_err(|_| {
                SqlError::new("22P02", format!("invalid value for parameter ${}", i + 1))
            })?,
        };
        args.push(ExecuteArg::Value(scalar));
    }
    Ok(args)
}

/// The inner statement's parameters from `EXECUTE`'s values and the
/// `EXECUTE`'s own bound parameters.
pub(super) fn bind_execute_args(
    args: &[ExecuteArg],
    outer: Option<&datafusion::common::ParamValues>,
) -> Result<Option<datafusion::common::ParamValues>, SqlError> {
    use datafusion::common::ParamValues;
    if args.is_empty() {
        return Ok(None);
    }
    let mut values = Vec::with_capacity(args.len());
    for arg in args {
        match arg {
            ExecuteArg::Value(v) => values.push(v.clone().into()),
            ExecuteArg::Param(j) => match outer {
                Some(ParamValues::List(list)) => {
                    values.push(list.get(*j).cloned().ok_or_else(|| {
                        SqlError::new("08P01", "a parameter of EXECUTE is not bound")
                    })?)
                }
                _ => {
                    return Err(SqlError::new(
                        "08P01",
                        "statement has parameters but none were bound",
                    ));
                }
            },
        }
    }
    Ok(Some(ParamValues::List(values)))
}

/// The text of a constant (`None` inside: SQL NULL), or `None` when the
/// expression is not a constant.
fn constant_text(e: &datafusion::sql::sqlparser::ast::Expr) -> Option<Option<String>> {
    use datafusion::sql::sqlparser::ast::{Expr, UnaryOperator, Value};
    match e {
        Expr::Value(v) => match &v.value {
            Value::Null => Some(None),
            Value::Number(n, _) => Some(Some(n.clone())),
            Value::Boolean(b) => Some(Some(b.to_string())),
            other => other.clone().into_string().map(Some),
        },
        Expr::Nested(inner) | Expr::Cast { expr: inner, .. } => constant_text(inner),
        Expr::TypedString(t) => t.value.clone().into_string().map(Some),
        Expr::UnaryOp {
            op: op @ (UnaryOperator::Minus | UnaryOperator::Plus),
            expr,
        } => match expr.as_ref() {
            Expr::Value(v) => match &v.value {
                Value::Number(n, _) => Some(Some(match op {
                    UnaryOperator::Minus => format!("-{n}"),
                    _ => n.clone(),
                })),
                _ => None,
            },
            _ => None,
        },
        _ => None,
    }
}

#[async_trait]
impl QueryParser for Parser {
    type Statement = Prepared;

    async fn parse_sql<C>(
        &self,
        _client: &C,
        sql: &str,
        _types: &[Option<Type>],
    ) -> PgWireResult<Option<Prepared>>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        let session = self.session().map_err(SqlError::into_pgwire)?;
        if session.principal.is_expired() {
            return Err(token_expired().into_pgwire());
        }
        session.set_policy(self.shared.policy.current());
        session.set_shadow(self.shared.policy.shadow());
        let key = self.plan_key(&session, sql);
        if let Some(hit) = self.cached(key.as_ref()) {
            return Ok(Some(self.with_parse_audit(&session, hit)));
        }
        let mut stmts = gate::parse(sql, self.shared.parse_limits).map_err(|e| {
            self.refused_unparsed(&session, &e);
            e.into_pgwire()
        })?;
        match stmts.len() {
            0 => Ok(None),
            1 => {
                let stmt = stmts.remove(0);
                let prepared = self.prepare(&session, stmt).await.map_err(|e| {
                    tracing::debug!(session = %session.id, sqlstate = e.code, "parse refused");
                    e.into_pgwire()
                })?;
                self.remember(key, &prepared);
                Ok(Some(self.with_parse_audit(&session, prepared)))
            }
            _ => {
                let e = SqlError::new(
                    "42601",
                    "cannot insert multiple commands into a prepared statement",
                );
                self.refused_unparsed(&session, &e);
                Err(e.into_pgwire())
            }
        }
    }

    fn get_parameter_types(&self, stmt: &Prepared) -> PgWireResult<Vec<Type>> {
        Ok(stmt.0.param_types.clone())
    }

    fn get_result_schema(
        &self,
        stmt: &Prepared,
        column_format: Option<&Format>,
    ) -> PgWireResult<Vec<FieldInfo>> {
        match &stmt.0.result_schema {
            Some(schema) => {
                let default = Format::UnifiedText;
                pg_fields(schema, column_format.unwrap_or(&default)).map_err(SqlError::into_pgwire)
            }
            None => Ok(vec![]),
        }
    }
}
