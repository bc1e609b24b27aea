//! The simple Query protocol: every statement of a query string in turn,
//! one ReadyForQuery at the end.

use std::fmt::Debug;

use async_trait::async_trait;
use datafusion::sql::sqlparser::ast::Statement;
use futures::sink::{Sink, SinkExt};
use pgwire::api::portal::Format;
use pgwire::api::query::{SimpleQueryHandler, send_query_response};
use pgwire::api::results::{Response, Tag};
use pgwire::api::store::PortalStore;
use pgwire::api::{ClientInfo, ClientPortalStore, PgWireConnectionState};
use pgwire::error::{PgWireError, PgWireResult};
use pgwire::messages::PgWireBackendMessage;
use pgwire::messages::response::{EmptyQueryResponse, ReadyForQuery, TransactionStatus};
use pgwire::messages::simplequery::Query;

use super::run::Outcome;
use super::{ConnHandler, Prepared, aborted_transaction, allowed_in_failed_transaction};
use crate::error::SqlError;
use crate::rewrite::gate;
use crate::session::Session;

/// A statement of a simple Query: served from the plan cache, or parsed.
enum Pending {
    Ready(Prepared),
    Parsed(Box<Statement>),
}

#[async_trait]
impl SimpleQueryHandler for ConnHandler {
    async fn on_query<C>(&self, client: &mut C, query: Query) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        if !matches!(client.state(), PgWireConnectionState::ReadyForQuery) {
            return Err(PgWireError::NotReadyForQuery);
        }
        let session = self.require_session()?;
        client.set_state(PgWireConnectionState::QueryInProgress);
        let mut status = client.transaction_status();

        // A single statement seen before in the same session state is served
        // from the plan cache; anything else is parsed.
        let key = self.parser.plan_key(&session, &query.query);
        let statements = match self.parser.cached(key.as_ref()) {
            Some(hit) => Ok(vec![Pending::Ready(hit)]),
            None => gate::parse(&query.query, self.shared.parse_limits).map(|v| {
                v.into_iter()
                    .map(|s| Pending::Parsed(Box::new(s)))
                    .collect::<Vec<_>>()
            }),
        };
        let single = statements.as_ref().is_ok_and(|s| s.len() == 1);
        let mut key = key.filter(|_| single);
        match statements {
            Err(e) => {
                self.parser.refused_unparsed(&session, &e);
                send_error(client, e).await?;
                status = status.to_error_state();
            }
            Ok(stmts) if stmts.is_empty() => {
                client
                    .feed(PgWireBackendMessage::EmptyQueryResponse(
                        EmptyQueryResponse::new(),
                    ))
                    .await?;
            }
            Ok(stmts) => {
                for stmt in stmts {
                    let cancel = session.begin_statement();
                    let result = async {
                        let (prepared, params) = match stmt {
                            Pending::Ready(p) => (p, None),
                            Pending::Parsed(stmt) => {
                                let lifted = match single {
                                    true => self.prepare_lifted(&session, &stmt).await,
                                    false => None,
                                };
                                match lifted {
                                    Some((p, params)) => (p, Some(params)),
                                    None => {
                                        let p = self.parser.prepare(&session, *stmt).await?;
                                        self.parser.remember(key.take(), &p);
                                        (p, None)
                                    }
                                }
                            }
                        };
                        if status == TransactionStatus::Error
                            && !allowed_in_failed_transaction(&prepared)
                        {
                            return Err(self.refused(&session, &prepared, aborted_transaction()));
                        }
                        let outcome = self
                            .run(&session, &prepared, params, &Format::UnifiedText, cancel)
                            .await?;
                        self.apply_to_connection(client, &session, outcome).await
                    }
                    .await;
                    let complete = |tag: Tag| PgWireBackendMessage::CommandComplete(tag.into());
                    let sent: PgWireResult<()> = match result {
                        // A row can fail mid-stream (cancel, execution error).
                        Ok(Outcome::Rows(rows)) => send_query_response(client, rows, true).await,
                        Ok(Outcome::Tag(tag)) => {
                            client.feed(complete(tag)).await.map_err(Into::into)
                        }
                        Ok(Outcome::Copy(copy)) => copy.send(client).await,
                        Ok(
                            Outcome::Cursor { .. }
                            | Outcome::Close(_)
                            | Outcome::DiscardAll
                            | Outcome::Deallocate(_),
                        ) => Err(SqlError::internal().into_pgwire()),
                        Ok(Outcome::Fetch { name, count }) => {
                            self.fetch_cursor(client, &session, &name, count).await
                        }
                        Ok(Outcome::RolledBackTo) => {
                            status = TransactionStatus::Transaction;
                            client
                                .feed(complete(Tag::new("ROLLBACK")))
                                .await
                                .map_err(Into::into)
                        }
                        Ok(Outcome::Begin) => {
                            status = status.to_in_transaction_state();
                            client
                                .feed(complete(Tag::new("BEGIN")))
                                .await
                                .map_err(Into::into)
                        }
                        Ok(Outcome::End { commit }) => {
                            // COMMIT of a failed transaction rolls it back.
                            let commit = commit && status != TransactionStatus::Error;
                            session.end_transaction(commit);
                            status = status.to_idle_state();
                            let tag = if commit { "COMMIT" } else { "ROLLBACK" };
                            client
                                .feed(complete(Tag::new(tag)))
                                .await
                                .map_err(Into::into)
                        }
                        Err(e) => Err(e.into_pgwire()),
                    };
                    // One way out for every statement error: report it, mark
                    // the transaction failed, skip the rest of the query.
                    match sent {
                        Ok(()) => {}
                        Err(PgWireError::UserError(info)) => {
                            client
                                .feed(PgWireBackendMessage::ErrorResponse((*info).into()))
                                .await?;
                            status = status.to_error_state();
                            break;
                        }
                        Err(other) => return Err(other),
                    }
                }
            }
        }
        client.set_state(PgWireConnectionState::ReadyForQuery);
        client.set_transaction_status(status);
        client
            .send(PgWireBackendMessage::ReadyForQuery(ReadyForQuery::new(
                status,
            )))
            .await?;
        Ok(())
    }

    async fn do_query<C>(&self, _client: &mut C, _query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        // `on_query` is overridden and never calls this.
        Err(SqlError::internal().into_pgwire())
    }
}

impl ConnHandler {
    /// A simple query's statement planned with its key literals lifted into
    /// parameters (`rewrite::lift`), from the plan cache when a statement of
    /// the same shape was planned before, with the literals as the
    /// parameter values. `None`: nothing to lift, or a literal whose
    /// binding might not be the comparison DataFusion would make; the
    /// statement is then planned as written (and any error reported from
    /// there, audited).
    async fn prepare_lifted(
        &self,
        session: &Session,
        stmt: &Statement,
    ) -> Option<(Prepared, datafusion::common::ParamValues)> {
        let (lifted, literals) = crate::rewrite::lift::lift_literals(stmt)?;
        let key = self.parser.plan_key(session, &lifted.to_string());
        let prepared = match self.parser.cached(key.as_ref()) {
            Some(hit) => hit,
            None => {
                // Audited with the statement's own fingerprint (literals as
                // `?`), the same for every statement of this shape.
                let kind = crate::rewrite::fingerprint::statement_kind(stmt);
                let text = crate::rewrite::fingerprint::fingerprint(
                    stmt,
                    &crate::enforce::catalog_names(&self.shared.engine),
                );
                let p = self
                    .parser
                    .prepare_unaudited(session, lifted, kind, &text)
                    .await
                    .ok()?;
                if !matches!(p.0.kind, super::PreparedKind::Plan { .. }) {
                    return None;
                }
                // Kept for the next statement of this shape only when its
                // parameters take literals as written.
                let values = lifted_values(&literals, &p.0.param_data_types)?;
                self.parser.remember(key, &p);
                return Some((p, values));
            }
        };
        let values = lifted_values(&literals, &prepared.0.param_data_types)?;
        Some((prepared, values))
    }
}

/// The lifted literals as values of the parameters they became: an integer
/// only for an integer column, a string for a string, integer or boolean
/// column; `None` for anything else (or a value that does not convert).
fn lifted_values(
    literals: &[crate::rewrite::lift::Lifted],
    types: &[Option<datafusion::arrow::datatypes::DataType>],
) -> Option<datafusion::common::ParamValues> {
    use datafusion::arrow::datatypes::DataType;
    use datafusion::common::ScalarValue;
    if literals.len() != types.len() {
        return None;
    }
    let mut values = Vec::with_capacity(literals.len());
    for (literal, ty) in literals.iter().zip(types) {
        let ty = ty.as_ref()?;
        let integer_type = ty.is_integer();
        let string_type = matches!(
            ty,
            DataType::Utf8 | DataType::Utf8View | DataType::LargeUtf8
        );
        let fits = match literal.integer {
            true => integer_type,
            false => integer_type || string_type || *ty == DataType::Boolean,
        };
        if !fits {
            return None;
        }
        let value = ScalarValue::Utf8(Some(literal.text.clone()))
            .cast_to(ty)
            .ok()
            .filter(|v| !v.is_null())?;
        values.push(value.into());
    }
    Some(datafusion::common::ParamValues::List(values))
}

async fn send_error<C>(client: &mut C, e: SqlError) -> PgWireResult<()>
where
    C: Sink<PgWireBackendMessage> + Unpin + Send,
    C::Error: Debug,
    PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
{
    match e.into_pgwire() {
        PgWireError::UserError(info) => {
            client
                .feed(PgWireBackendMessage::ErrorResponse((*info).into()))
                .await?;
            Ok(())
        }
        other => Err(other),
    }
}
