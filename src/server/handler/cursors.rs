//! Cursors and portals: DECLARE, FETCH and CLOSE, DISCARD ALL and
//! DEALLOCATE, the access rules each portal was opened under, and the
//! idle-portal timeout.

use std::collections::{HashMap, HashSet};
use std::fmt::Debug;
use std::sync::Arc;
use std::time::Instant;

use futures::sink::{Sink, SinkExt};
use futures::stream::StreamExt;
use pgwire::api::portal::{Format, Portal, PortalExecutionState};
use pgwire::api::results::{QueryResponse, Tag};
use pgwire::api::store::{Entry, MemPortalStore, PortalStore};
use pgwire::api::{ClientInfo, ClientPortalStore};
use pgwire::error::{PgWireError, PgWireResult};
use pgwire::messages::PgWireBackendMessage;

use super::run::Outcome;
use super::{AccessKey, ConnHandler, Prepared, access_key, printable};
use crate::engine::encode::pg_fields;
use crate::error::SqlError;
use crate::session::Session;

/// One suspended portal's authorisation and last use.
pub(super) struct PortalGrant {
    key: AccessKey,
    /// The portal's execution state: identifies the portal (a portal bound
    /// again under the same name is another portal).
    state: std::sync::Weak<tokio::sync::Mutex<PortalExecutionState>>,
    last_used: Instant,
}

/// The connection's portals, where cursors live. pgwire keeps them in a
/// `MemPortalStore` of this handler's statements; anything else is a
/// wiring mistake and refuses (fail closed).
fn cursor_store<C>(client: &C) -> Result<&MemPortalStore<Prepared>, SqlError>
where
    C: ClientPortalStore,
    C::PortalStore: PortalStore,
{
    (client.portal_store() as &dyn std::any::Any)
        .downcast_ref::<MemPortalStore<Prepared>>()
        .ok_or_else(SqlError::internal)
}

impl ConnHandler {
    /// Remember that the portal `name` (state `state`) was opened under the
    /// session's current access rules.
    pub(super) fn grant_portal(
        &self,
        name: &str,
        state: &Arc<tokio::sync::Mutex<PortalExecutionState>>,
        session: &Session,
    ) {
        self.expired_names().remove(name);
        self.grants().insert(
            name.to_owned(),
            PortalGrant {
                key: access_key(session),
                state: Arc::downgrade(state),
                last_used: Instant::now(),
            },
        );
    }

    /// Check, before more rows of the portal `name` are sent, that the
    /// session's access rules are still those it was opened under (a
    /// reloaded policy has been adopted by then). On a mismatch the portal
    /// is forgotten and the caller closes it.
    pub(super) fn check_portal(
        &self,
        name: &str,
        state: &Arc<tokio::sync::Mutex<PortalExecutionState>>,
        session: &Session,
    ) -> Result<(), SqlError> {
        let mut grants = self.grants();
        let current = access_key(session);
        let ok = grants.get_mut(name).is_some_and(|g| {
            let same =
                g.key == current && g.state.upgrade().is_some_and(|s| Arc::ptr_eq(&s, state));
            g.last_used = Instant::now();
            same
        });
        if ok {
            return Ok(());
        }
        grants.remove(name);
        Err(SqlError::permission_denied(
            "access rules changed since the portal was opened (role, purpose, break-glass, policy or token): run the statement again",
        ))
    }

    pub(super) fn forget_portal(&self, name: &str) {
        self.grants().remove(name);
    }

    fn grants(&self) -> std::sync::MutexGuard<'_, HashMap<String, PortalGrant>> {
        self.portals.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn expired_names(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.expired.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn statement_names(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.statements.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The error for a portal that is not there: closed by the idle-portal
    /// timeout, or never opened.
    pub(super) fn missing_portal(&self, name: &str, what: &str) -> SqlError {
        if self.expired_names().remove(name) {
            return SqlError::new(
                "55000",
                format!(
                    "{what} \"{}\" was closed after staying idle longer than limits.idle_portal_timeout_secs",
                    printable(name)
                ),
            );
        }
        SqlError::new(
            "34000",
            format!("{what} \"{}\" does not exist", printable(name)),
        )
    }

    /// Keep a declared cursor's rows in a portal named after it, where
    /// `FETCH`, `CLOSE` and a Describe of that portal find them. A cursor
    /// of the same name is replaced.
    async fn open_cursor<C: ClientPortalStore<PortalStore: PortalStore>>(
        &self,
        client: &C,
        session: &Session,
        name: String,
        inner: Prepared,
        rows: QueryResponse,
    ) -> Result<(), SqlError> {
        let stored = Arc::new(pgwire::api::stmt::StoredStatement::new(
            name.clone(),
            inner,
            vec![],
        ));
        let portal = Portal::new_cursor(name.clone(), stored);
        portal.start(rows).await;
        self.grant_portal(&name, &portal.state(), session);
        cursor_store(client)?.put_portal(Arc::new(portal));
        Ok(())
    }

    fn close_cursor<C: ClientPortalStore<PortalStore: PortalStore>>(
        &self,
        client: &C,
        name: Option<&str>,
    ) -> Result<(), SqlError> {
        let store = cursor_store(client)?;
        match name {
            Some(n) => {
                store.rm_portal(n);
                self.forget_portal(n);
            }
            None => {
                store.clear_portals();
                self.grants().clear();
            }
        }
        Ok(())
    }

    /// `DISCARD ALL` after the session's settings were reset: every cursor
    /// and portal closed, every prepared statement deallocated.
    fn discard_all<C: ClientPortalStore<PortalStore: PortalStore>>(
        &self,
        client: &C,
    ) -> Result<(), SqlError> {
        self.close_cursor(client, None)?;
        self.deallocate(client, None)
    }

    /// `DEALLOCATE name` / `DEALLOCATE ALL`: statements of SQL `PREPARE`
    /// and of Parse (one namespace, as in PostgreSQL).
    fn deallocate<C: ClientPortalStore<PortalStore: PortalStore>>(
        &self,
        client: &C,
        name: Option<&str>,
    ) -> Result<(), SqlError> {
        let store = cursor_store(client)?;
        let mut names = self.statement_names();
        match name {
            Some(n) => {
                if self.parser.drop_sql_statements(Some(n)) {
                    return Ok(());
                }
                if !names.remove(n) {
                    return Err(super::prepare::missing_statement(n));
                }
                store.rm_statement(n);
            }
            None => {
                self.parser.drop_sql_statements(None);
                for n in names.drain() {
                    store.rm_statement(&n);
                }
            }
        }
        Ok(())
    }

    /// `FETCH`: stream up to `count` rows (all when `None`) of a cursor to
    /// the client as one result, `FETCH n`.
    pub(super) async fn fetch_cursor<C>(
        &self,
        client: &mut C,
        session: &Session,
        name: &str,
        count: Option<usize>,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let store = cursor_store(client).map_err(SqlError::into_pgwire)?;
        let Some(Entry::Value(portal)) = store.get_portal(name) else {
            return Err(self.missing_portal(name, "cursor").into_pgwire());
        };
        // Rows were authorised for the access rules of DECLARE; once the
        // role, purpose, break-glass or policy version changes, the cursor
        // ends.
        if let Err(e) = self.check_portal(name, &portal.state(), session) {
            store.rm_portal(name);
            return Err(e.into_pgwire());
        }
        let fields = match &portal.statement.statement.0.result_schema {
            Some(schema) => {
                pg_fields(schema, &Format::UnifiedText).map_err(SqlError::into_pgwire)?
            }
            None => vec![],
        };
        client
            .feed(PgWireBackendMessage::RowDescription(
                pgwire::messages::data::RowDescription::new(
                    fields.iter().map(Into::into).collect(),
                ),
            ))
            .await?;
        let state = portal.state();
        let mut guard = state.lock().await;
        let mut sent = 0usize;
        if let PortalExecutionState::Suspended(results) = &mut *guard {
            while count.is_none_or(|n| sent < n) {
                match results.data_rows().next().await {
                    Some(Ok(row)) => {
                        client.feed(PgWireBackendMessage::DataRow(row)).await?;
                        sent += 1;
                    }
                    Some(Err(e)) => {
                        *guard = PortalExecutionState::Finished;
                        return Err(e);
                    }
                    None => {
                        *guard = PortalExecutionState::Finished;
                        break;
                    }
                }
            }
        }
        drop(guard);
        client
            .feed(PgWireBackendMessage::CommandComplete(
                Tag::new("FETCH").with_rows(sent).into(),
            ))
            .await?;
        Ok(())
    }

    /// Outcomes that act on the connection's portals and statements
    /// (`DECLARE`, `CLOSE`, `DISCARD ALL`, `DEALLOCATE`), done the same way
    /// for both protocols; each becomes its command tag.
    pub(super) async fn apply_to_connection<C: ClientPortalStore<PortalStore: PortalStore>>(
        &self,
        client: &C,
        session: &Session,
        outcome: Outcome,
    ) -> Result<Outcome, SqlError> {
        let tag = match outcome {
            Outcome::Cursor { name, inner, rows } => {
                self.open_cursor(client, session, name, inner, rows).await?;
                "DECLARE CURSOR"
            }
            Outcome::Close(name) => {
                self.close_cursor(client, name.as_deref())?;
                "CLOSE CURSOR"
            }
            Outcome::DiscardAll => {
                self.discard_all(client)?;
                "DISCARD ALL"
            }
            Outcome::Deallocate(name) => {
                self.deallocate(client, name.as_deref())?;
                "DEALLOCATE"
            }
            other => return Ok(other),
        };
        Ok(Outcome::Tag(Tag::new(tag)))
    }

    /// When the next suspended portal reaches the idle-portal timeout, if
    /// any is suspended.
    pub(crate) fn next_portal_expiry(&self) -> Option<tokio::time::Instant> {
        let timeout = self.shared.limits.idle_portal_timeout()?;
        let oldest = self.grants().values().map(|g| g.last_used).min()?;
        Some(tokio::time::Instant::from_std(oldest + timeout))
    }

    /// Close every portal and cursor idle longer than the idle-portal
    /// timeout: its row stream is dropped, which releases its concurrency
    /// slot and memory and writes its completion record.
    pub(crate) fn expire_idle_portals<C: ClientPortalStore<PortalStore: PortalStore>>(
        &self,
        client: &C,
    ) {
        let Some(timeout) = self.shared.limits.idle_portal_timeout() else {
            return;
        };
        let Ok(store) = cursor_store(client) else {
            return;
        };
        let now = Instant::now();
        let idle: Vec<(String, PortalGrant)> = {
            let mut grants = self.grants();
            let names: Vec<String> = grants
                .iter()
                .filter(|(_, g)| now.saturating_duration_since(g.last_used) >= timeout)
                .map(|(n, _)| n.clone())
                .collect();
            names
                .into_iter()
                .filter_map(|n| grants.remove(&n).map(|g| (n, g)))
                .collect()
        };
        for (name, grant) in idle {
            let same = match store.get_portal(&name) {
                Some(Entry::Value(p)) => grant
                    .state
                    .upgrade()
                    .is_some_and(|s| Arc::ptr_eq(&s, &p.state())),
                _ => false,
            };
            if same {
                store.rm_portal(&name);
                let mut expired = self.expired_names();
                // Only a reminder for a better error message: bounded.
                if expired.len() >= 1024 {
                    expired.clear();
                }
                expired.insert(name);
                tracing::info!(
                    timeout_secs = timeout.as_secs(),
                    "idle portal closed (limits.idle_portal_timeout_secs)"
                );
            }
        }
    }
}
