//! Startup and authentication, the ParameterStatus values sent after it,
//! and cancel requests.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::Arc;

use async_trait::async_trait;
use futures::sink::{Sink, SinkExt};
use pgwire::api::auth::{StartupHandler, finish_authentication, protocol_negotiation};
use pgwire::api::cancel::CancelHandler;
use pgwire::api::{ClientInfo, PgWireConnectionState, PidSecretKeyGenerator};
use pgwire::error::{PgWireError, PgWireResult};
use pgwire::messages::cancel::CancelRequest;
use pgwire::messages::startup::Authentication;
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};

use super::{ConnHandler, printable};
use crate::audit::events;
use crate::auth::AuthFailure;
use crate::error::SqlError;
use crate::session::Session;

#[async_trait]
impl StartupHandler for ConnHandler {
    async fn on_startup<C>(
        &self,
        client: &mut C,
        message: PgWireFrontendMessage,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        match message {
            PgWireFrontendMessage::Startup(ref startup) => {
                protocol_negotiation(client, startup).await?;
                client.metadata_mut().extend(
                    startup
                        .parameters
                        .iter()
                        .map(|(k, v)| (k.clone(), v.clone())),
                );
                if !client.is_secure() && !self.shared.plaintext_allowed(client.socket_addr()) {
                    self.audit_refused(client, None, "28000", "tls_required");
                    return Err(SqlError::tls_required().into_pgwire());
                }
                if client.metadata().get("user").is_none_or(|u| u.is_empty()) {
                    self.audit_refused(client, None, "28000", "no_user");
                    return Err(SqlError::fatal("28000", "no user name given").into_pgwire());
                }
                client.set_state(PgWireConnectionState::AuthenticationInProgress);
                client
                    .send(PgWireBackendMessage::Authentication(
                        Authentication::CleartextPassword,
                    ))
                    .await?;
            }
            PgWireFrontendMessage::PasswordMessageFamily(pwd) => {
                if !matches!(
                    client.state(),
                    PgWireConnectionState::AuthenticationInProgress
                ) {
                    return Err(
                        SqlError::fatal("08P01", "unexpected password message").into_pgwire()
                    );
                }
                let token = pwd.into_password().map(|p| p.password).unwrap_or_default();
                let user = client.metadata().get("user").cloned().unwrap_or_default();
                let principal = match self.shared.auth.verify(&user, &token) {
                    Ok(p) => p,
                    Err(reason) => {
                        self.audit_refused(client, None, reason.sqlstate(), reason.class());
                        tracing::info!(client = %client.socket_addr().ip(), reason = reason.class(), "authentication failed");
                        return Err(SqlError::fatal(
                            reason.sqlstate(),
                            format!(
                                "password authentication failed for user \"{}\"",
                                printable(&user)
                            ),
                        )
                        .into_pgwire());
                    }
                };
                let params: BTreeMap<String, String> = client
                    .metadata()
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                let database = params
                    .get("database")
                    .cloned()
                    .unwrap_or_else(|| user.clone());
                let session = Arc::new(Session::new(
                    principal,
                    self.shared.policy.current(),
                    database,
                    client.socket_addr(),
                    client.is_secure(),
                ));
                session.set_shadow(self.shared.policy.shadow());
                if !session.has_known_role() {
                    // A valid token whose roles grant nothing: the same answer as
                    // any other failed check; the reason goes to the audit log.
                    self.audit_refused(
                        client,
                        Some(&session),
                        AuthFailure::Claims.sqlstate(),
                        AuthFailure::Claims.class(),
                    );
                    return Err(SqlError::fatal(
                        AuthFailure::Claims.sqlstate(),
                        format!(
                            "password authentication failed for user \"{}\"",
                            printable(&user)
                        ),
                    )
                    .into_pgwire());
                }
                if let Err(mut e) = session.apply_startup(&params) {
                    self.audit_refused(client, Some(&session), e.code, "startup_parameter");
                    e.fatal = true;
                    return Err(e.into_pgwire());
                }
                let (_, secret) =
                    pgwire::api::RandomPidSecretKeyGenerator::default().generate(client);
                let pid = self.shared.registry.register(&session, secret.clone());
                client.set_pid_and_secret_key(pid, secret);
                // No session without its audit record.
                if let Err(mut e) = self
                    .shared
                    .audit
                    .record(events::connect_allowed(&session))
                    .await
                {
                    self.shared.registry.unregister(session.id);
                    e.fatal = true;
                    return Err(e.into_pgwire());
                }
                let _ = self.parser.session.set(session.clone());
                tracing::info!(session = %session.id, user = %session.user, tls = session.tls, "session started");
                finish_authentication(client, &ParamProvider { session }).await?;
            }
            _ => {}
        }
        Ok(())
    }
}

/// The `reason` label of a refused connection (audit reason classes of
/// [`crate::auth::AuthFailure::class`] and the startup checks).
fn refusal_reason(reason: &str) -> crate::metrics::AuthFailureReason {
    use crate::metrics::AuthFailureReason as R;
    match reason {
        "missing" | "malformed" | "algorithm" | "signature" | "issuer" | "audience" => R::BadToken,
        "expired" | "not_yet_valid" | "lifetime" => R::Expired,
        "unknown_key" => R::UnknownKey,
        "claims" | "user_mismatch" | "unknown_role" => R::BadClaims,
        "tls_required" => R::NoTls,
        _ => R::Other,
    }
}

impl ConnHandler {
    /// Audit a refused connection attempt (queued: nothing is disclosed).
    /// `verified`: the session of a token verified before the refusal;
    /// without one, the user name is recorded as the client's claim.
    fn audit_refused<C: ClientInfo>(
        &self,
        client: &C,
        verified: Option<&Session>,
        sqlstate: &str,
        reason: &str,
    ) {
        crate::metrics::Metrics::global().auth_failure(refusal_reason(reason));
        let meta = client.metadata();
        let field = |k: &str| meta.get(k).map(|v| printable(v)).unwrap_or_default();
        self.shared.audit.record_later(match verified {
            Some(session) => events::connect_refused_verified(
                session,
                &field("application_name"),
                reason,
                sqlstate,
            ),
            None => events::connect_refused(
                &field("user"),
                client.socket_addr(),
                &field("application_name"),
                reason,
                sqlstate,
            ),
        });
    }
}

/// ParameterStatus values sent after authentication.
struct ParamProvider {
    session: Arc<Session>,
}

impl pgwire::api::auth::ServerParameterProvider for ParamProvider {
    fn server_parameters<C>(&self, _client: &C) -> Option<std::collections::HashMap<String, String>>
    where
        C: ClientInfo,
    {
        let s = &self.session;
        let mut m = std::collections::HashMap::new();
        m.insert(
            "server_version".into(),
            crate::session::SERVER_VERSION.into(),
        );
        m.insert("server_encoding".into(), "UTF8".into());
        m.insert("client_encoding".into(), "UTF8".into());
        m.insert("DateStyle".into(), "ISO, MDY".into());
        m.insert("TimeZone".into(), "UTC".into());
        m.insert("IntervalStyle".into(), "postgres".into());
        m.insert("integer_datetimes".into(), "on".into());
        m.insert("standard_conforming_strings".into(), "on".into());
        m.insert("is_superuser".into(), "off".into());
        m.insert("default_transaction_read_only".into(), "on".into());
        m.insert("in_hot_standby".into(), "off".into());
        m.insert("session_authorization".into(), s.user.clone());
        m.insert("application_name".into(), s.application_name());
        Some(m)
    }
}

#[async_trait]
impl CancelHandler for ConnHandler {
    async fn on_cancel_request(&self, request: CancelRequest) {
        self.shared
            .registry
            .cancel(request.pid, &request.secret_key);
    }
}
