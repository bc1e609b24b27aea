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
                        let prepared = match stmt {
                            Pending::Ready(p) => p,
                            Pending::Parsed(stmt) => {
                                let p = self.parser.prepare(&session, *stmt).await?;
                                self.parser.remember(key.take(), &p);
                                p
                            }
                        };
                        if status == TransactionStatus::Error
                            && !allowed_in_failed_transaction(&prepared)
                        {
                            return Err(self.refused(&session, &prepared, aborted_transaction()));
                        }
                        let outcome = self
                            .run(&session, &prepared, None, &Format::UnifiedText, cancel)
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
