//! lakeward's own settings: the role whose policy applies, the declared
//! purpose of use and break-glass.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::SqlError;
use crate::policy::Purpose;

use super::{Session, Vars};

/// Shortest break-glass justification accepted.
pub(crate) const MIN_JUSTIFICATION: usize = 20;

/// Break-glass activations since start (exported as a metric).
pub(crate) static BREAK_GLASS_ACTIVATIONS: AtomicU64 = AtomicU64::new(0);

impl Session {
    pub(super) fn set_role(&self, value: Option<String>) -> Result<(), SqlError> {
        let Some(v) = value else {
            return Err(SqlError::new(
                "22023",
                "lakeward.role cannot be reset; reconnect to change role",
            ));
        };
        let v = v.trim().to_owned();
        if !self.principal.roles.contains(&v) || self.policy().role(&v).is_none() {
            return Err(SqlError::permission_denied(format!(
                "role \"{v}\" is not granted to this user"
            )));
        }
        let mut vars = self.vars();
        if vars.cur.role.as_deref().is_some_and(|r| r != v)
            && (vars.cur.purpose.is_some() || vars.cur.break_glass.is_some())
        {
            return Err(SqlError::new(
                "55000",
                "lakeward.role cannot change after a purpose is declared",
            ));
        }
        vars.cur.role = Some(v);
        Ok(())
    }

    pub(super) fn set_purpose(&self, value: Option<String>) -> Result<(), SqlError> {
        let Some(v) = value else {
            self.vars().cur.purpose = None;
            return Ok(());
        };
        let purpose = Purpose::parse(&v).ok_or_else(|| {
            SqlError::new(
                "22023",
                "invalid value for lakeward.purpose (treatment, payment, operations, research)",
            )
        })?;
        let mut vars = self.vars();
        let role =
            vars.cur.role.clone().ok_or_else(|| {
                SqlError::permission_denied("choose a role first: SET lakeward.role")
            })?;
        let by_role = self
            .policy()
            .role(&role)
            .is_some_and(|r| r.purposes.contains(&purpose));
        let by_token = self.principal.purposes.is_empty()
            || self
                .principal
                .purposes
                .iter()
                .any(|p| p.eq_ignore_ascii_case(purpose.as_str()));
        if !by_role || !by_token {
            return Err(SqlError::permission_denied(format!(
                "purpose \"{purpose}\" is not allowed for this user"
            )));
        }
        vars.cur.purpose = Some(purpose);
        Ok(())
    }

    pub(super) fn set_break_glass(&self, value: Option<String>) -> Result<(), SqlError> {
        let Some(v) = value.map(|v| v.trim().to_owned()).filter(|v| !v.is_empty()) else {
            let mut vars = self.vars();
            vars.cur.break_glass = None;
            self.follow_break_glass(&mut vars);
            return Ok(());
        };
        let role = self
            .role()
            .ok_or_else(|| SqlError::permission_denied("choose a role first: SET lakeward.role"))?;
        if !self.policy().role(&role).is_some_and(|r| r.break_glass) {
            return Err(SqlError::permission_denied(
                "break-glass is not allowed for this role",
            ));
        }
        // Only letters and digits count: twenty zero-width spaces or
        // punctuation marks justify nothing.
        if v.chars().filter(|c| c.is_alphanumeric()).count() < MIN_JUSTIFICATION
            || v.len() > 1000
            || v.chars().any(char::is_control)
        {
            return Err(SqlError::new(
                "22023",
                format!(
                    "break-glass needs a justification of at least {MIN_JUSTIFICATION} letters or digits"
                ),
            ));
        }
        {
            let mut vars = self.vars();
            vars.cur.break_glass = Some(v);
            if vars.break_glass_gauge.is_none() {
                vars.break_glass_gauge =
                    Some(crate::metrics::Metrics::global().break_glass_started());
            }
        }
        BREAK_GLASS_ACTIVATIONS.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(session = %self.id, user = %self.user, role = %role, "BREAK-GLASS activated: site restriction lifted");
        Ok(())
    }

    /// Keep the break-glass gauge and log in step with the break-glass
    /// setting after it changed by other means than `SET` (transaction end,
    /// savepoint rollback, `RESET ALL`).
    pub(super) fn follow_break_glass(&self, vars: &mut Vars) {
        match (&vars.cur.break_glass, &vars.break_glass_gauge) {
            (Some(_), None) => {
                vars.break_glass_gauge =
                    Some(crate::metrics::Metrics::global().break_glass_resumed());
                tracing::warn!(session = %self.id, user = %self.user, "BREAK-GLASS active again: site restriction lifted");
            }
            (None, Some(_)) => {
                vars.break_glass_gauge = None;
                tracing::warn!(session = %self.id, user = %self.user, "break-glass ended");
            }
            _ => {}
        }
    }
}
