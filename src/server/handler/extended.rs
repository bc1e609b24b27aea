//! The extended query protocol: Parse, Close, Execute (Bind, Describe and
//! Sync are pgwire's own).

use std::fmt::Debug;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::DataType;
use futures::sink::{Sink, SinkExt};
use futures::stream::StreamExt;
use pgwire::api::portal::{Portal, PortalExecutionState};
use pgwire::api::query::ExtendedQueryHandler;
use pgwire::api::results::{Response, Tag};
use pgwire::api::store::{Entry, PortalStore};
use pgwire::api::{ClientInfo, ClientPortalStore, DEFAULT_NAME, PgWireConnectionState};
use pgwire::error::{PgWireError, PgWireResult};
use pgwire::messages::PgWireBackendMessage;
use pgwire::messages::extendedquery::{
    Close, CloseComplete, Execute, Parse, ParseComplete, PortalSuspended, TARGET_TYPE_BYTE_PORTAL,
    TARGET_TYPE_BYTE_STATEMENT,
};
use pgwire::messages::response::{EmptyQueryResponse, TransactionStatus};

use super::run::Outcome;
use super::{ConnHandler, Parser, Prepared, aborted_transaction, allowed_in_failed_transaction};
use crate::error::SqlError;

#[async_trait]
impl ExtendedQueryHandler for ConnHandler {
    type Statement = Prepared;
    type QueryParser = Parser;

    fn query_parser(&self) -> Arc<Parser> {
        self.parser.clone()
    }

    /// pgwire's Parse, remembering the statement's name for `DEALLOCATE
    /// ALL` and `DISCARD ALL`.
    async fn on_parse<C>(&self, client: &mut C, message: Parse) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let name = message
            .name
            .clone()
            .unwrap_or_else(|| DEFAULT_NAME.to_owned());
        if name != DEFAULT_NAME
            && !self.statement_names().contains(&name)
            && self.statement_names().len() + self.parser.sql_statement_count()
                >= super::MAX_PREPARED_STATEMENTS
        {
            return Err(super::too_many_statements().into_pgwire());
        }
        let parsed =
            pgwire::api::stmt::StoredStatement::parse(client, &message, self.parser.clone())
                .await?;
        match parsed {
            Some(stmt) => client.portal_store().put_statement(Arc::new(stmt)),
            None => client.portal_store().put_empty_statement(&name),
        }
        if name != DEFAULT_NAME {
            self.statement_names().insert(name);
        }
        client
            .send(PgWireBackendMessage::ParseComplete(ParseComplete::new()))
            .await?;
        Ok(())
    }

    /// pgwire's Close, also forgetting the name and the portal's grant.
    async fn on_close<C>(&self, client: &mut C, message: Close) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let name = message.name.as_deref().unwrap_or(DEFAULT_NAME);
        match message.target_type {
            TARGET_TYPE_BYTE_STATEMENT => {
                client.portal_store().rm_statement(name);
                self.statement_names().remove(name);
            }
            TARGET_TYPE_BYTE_PORTAL => {
                client.portal_store().rm_portal(name);
                self.forget_portal(name);
            }
            _ => {}
        }
        client
            .send(PgWireBackendMessage::CloseComplete(CloseComplete::new()))
            .await?;
        Ok(())
    }

    async fn do_query<C>(
        &self,
        client: &mut C,
        portal: &Portal<Prepared>,
        _max_rows: usize,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let outcome = self.execute_portal(client, portal).await?;
        self.respond(client, outcome)
    }

    /// Execute streams rows straight from the portal's stream to the socket,
    /// `max_rows` at a time, instead of pgwire's default which collects the
    /// rows of one Execute (all of them when `max_rows` is 0) into memory.
    async fn on_execute<C>(&self, client: &mut C, message: Execute) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        if !matches!(client.state(), PgWireConnectionState::ReadyForQuery) {
            return Err(PgWireError::NotReadyForQuery);
        }
        let mut status = client.transaction_status();
        client.set_state(PgWireConnectionState::QueryInProgress);
        let portal_name = message.name.as_deref().unwrap_or(DEFAULT_NAME);
        let max_rows = message.max_rows.max(0) as usize;

        let portal = match client.portal_store().get_portal(portal_name) {
            Some(Entry::Value(p)) => p,
            Some(Entry::Empty) => {
                client
                    .feed(PgWireBackendMessage::EmptyQueryResponse(
                        EmptyQueryResponse::new(),
                    ))
                    .await?;
                client.set_state(PgWireConnectionState::ReadyForQuery);
                return Ok(());
            }
            None => {
                client.set_state(PgWireConnectionState::ReadyForQuery);
                return Err(self.missing_portal(portal_name, "portal").into_pgwire());
            }
        };

        let state = portal.state();
        let mut guard = state.lock().await;
        if matches!(&*guard, PortalExecutionState::Suspended(_)) {
            // More rows of a portal opened earlier: only under the access
            // rules it was opened under, and only with a live token (an
            // expired one ends the session, FATAL 28000).
            let checked = self.require_session().and_then(|session| {
                self.check_portal(portal_name, &state, &session)
                    .map_err(SqlError::into_pgwire)
            });
            if let Err(e) = checked {
                *guard = PortalExecutionState::Finished;
                drop(guard);
                client.portal_store().rm_portal(portal_name);
                self.forget_portal(portal_name);
                client.set_state(PgWireConnectionState::ReadyForQuery);
                return Err(e);
            }
        }
        if matches!(&*guard, PortalExecutionState::Initial) {
            let resp = match self.execute_portal(client, portal.as_ref()).await {
                Ok(Outcome::Copy(copy)) => {
                    *guard = PortalExecutionState::Finished;
                    drop(guard);
                    let sent = copy.send(client).await;
                    client.set_state(PgWireConnectionState::ReadyForQuery);
                    return sent;
                }
                Ok(outcome) => self.respond(client, outcome),
                Err(e) => Err(e),
            };
            let resp = match resp {
                Ok(r) => r,
                Err(e) => {
                    client.set_state(PgWireConnectionState::ReadyForQuery);
                    return Err(e);
                }
            };
            // The statement may have changed the transaction state itself
            // (ROLLBACK TO SAVEPOINT).
            status = client.transaction_status();
            match resp {
                Response::Query(results) => {
                    if let Some(session) = self.session() {
                        self.grant_portal(portal_name, &state, &session);
                    }
                    *guard = PortalExecutionState::Suspended(results)
                }
                Response::Execution(tag) => {
                    *guard = PortalExecutionState::Finished;
                    client
                        .feed(PgWireBackendMessage::CommandComplete(tag.into()))
                        .await?;
                }
                Response::TransactionStart(tag) => {
                    *guard = PortalExecutionState::Finished;
                    client
                        .feed(PgWireBackendMessage::CommandComplete(tag.into()))
                        .await?;
                    status = status.to_in_transaction_state();
                }
                Response::TransactionEnd(tag) => {
                    *guard = PortalExecutionState::Finished;
                    client
                        .feed(PgWireBackendMessage::CommandComplete(tag.into()))
                        .await?;
                    status = status.to_idle_state();
                }
                _ => {
                    *guard = PortalExecutionState::Finished;
                    client.set_state(PgWireConnectionState::ReadyForQuery);
                    return Err(SqlError::internal().into_pgwire());
                }
            }
        }

        let mut failure = None;
        match &mut *guard {
            PortalExecutionState::Suspended(results) => {
                let tag_name = results.command_tag().to_owned();
                let mut sent = 0usize;
                let mut exhausted = false;
                while max_rows == 0 || sent < max_rows {
                    match results.data_rows().next().await {
                        Some(Ok(row)) => {
                            client.feed(PgWireBackendMessage::DataRow(row)).await?;
                            sent += 1;
                        }
                        Some(Err(e)) => {
                            failure = Some(e);
                            break;
                        }
                        None => {
                            exhausted = true;
                            break;
                        }
                    }
                }
                if failure.is_some() {
                    *guard = PortalExecutionState::Finished;
                    self.forget_portal(portal_name);
                } else if exhausted {
                    *guard = PortalExecutionState::Finished;
                    self.forget_portal(portal_name);
                    client
                        .feed(PgWireBackendMessage::CommandComplete(
                            Tag::new(&tag_name).with_rows(sent).into(),
                        ))
                        .await?;
                } else {
                    client
                        .feed(PgWireBackendMessage::PortalSuspended(PortalSuspended::new()))
                        .await?;
                }
            }
            PortalExecutionState::Finished => {}
            PortalExecutionState::Initial => failure = Some(SqlError::internal().into_pgwire()),
        }
        drop(guard);
        client.set_state(PgWireConnectionState::ReadyForQuery);
        client.set_transaction_status(status);
        match failure {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

impl ConnHandler {
    /// Run a bound portal's statement: parameters bound and checked, the
    /// pipeline's execution, the effect on the connection.
    async fn execute_portal<C>(
        &self,
        client: &mut C,
        portal: &Portal<Prepared>,
    ) -> PgWireResult<Outcome>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Prepared>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let session = self.require_session()?;
        let prepared = &portal.statement.statement;
        // The statement runs: its Parse needs no record of its own.
        if let Some(guard) = &prepared.1 {
            guard.mark_executed();
        }
        let params = (|| {
            if client.transaction_status() == TransactionStatus::Error
                && !allowed_in_failed_transaction(prepared)
            {
                return Err(aborted_transaction());
            }
            if prepared.0.param_types.is_empty() && portal.parameter_len() == 0 {
                return Ok(None);
            }
            if portal.parameter_len() != prepared.0.param_types.len() {
                return Err(SqlError::new(
                    "08P01",
                    format!(
                        "bind message supplies {} parameters, but prepared statement requires {}",
                        portal.parameter_len(),
                        prepared.0.param_types.len()
                    ),
                ));
            }
            let inferred: Vec<Option<&DataType>> = prepared
                .0
                .param_data_types
                .iter()
                .map(|t| t.as_ref())
                .collect();
            arrow_pg::datatypes::df::deserialize_parameters(portal, &inferred)
                .map(Some)
                .map_err(|_| SqlError::new("22P02", "invalid value for a bound parameter"))
        })()
        .map_err(|e| self.refused(&session, prepared, e).into_pgwire())?;
        let cancel = session.begin_statement();
        let outcome = match self
            .run(
                &session,
                prepared,
                params,
                &portal.result_column_format,
                cancel,
            )
            .await
        {
            Ok(o) => self.apply_to_connection(client, &session, o).await,
            Err(e) => Err(e),
        };
        outcome.map_err(SqlError::into_pgwire)
    }

    /// The pgwire response of an outcome (`COPY` is sent by `on_execute`).
    fn respond<C>(&self, client: &mut C, outcome: Outcome) -> PgWireResult<Response>
    where
        C: ClientInfo,
    {
        let session = self.require_session()?;
        match outcome {
            Outcome::Rows(rows) => Ok(Response::Query(rows)),
            Outcome::Tag(tag) => Ok(Response::Execution(tag)),
            Outcome::Cursor { .. }
            | Outcome::Close(_)
            | Outcome::DiscardAll
            | Outcome::Deallocate(_)
            | Outcome::Copy(_) => Err(SqlError::internal().into_pgwire()),
            Outcome::RolledBackTo => {
                client.set_transaction_status(TransactionStatus::Transaction);
                Ok(Response::Execution(Tag::new("ROLLBACK")))
            }
            Outcome::Fetch { .. } => Err(SqlError::new(
                "0A000",
                "FETCH is supported in simple queries; over the extended protocol, page a portal with Execute's row limit",
            )
            .into_pgwire()),
            Outcome::Begin => Ok(Response::TransactionStart(Tag::new("BEGIN"))),
            Outcome::End { commit } => {
                // COMMIT of a failed transaction rolls it back.
                let commit = commit && client.transaction_status() != TransactionStatus::Error;
                session.end_transaction(commit);
                let tag = if commit { "COMMIT" } else { "ROLLBACK" };
                Ok(Response::TransactionEnd(Tag::new(tag)))
            }
        }
    }
}
