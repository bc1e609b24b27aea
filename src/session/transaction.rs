//! Transaction blocks and savepoints: the settings they restore at
//! `ROLLBACK` and `ROLLBACK TO SAVEPOINT`, and keep at `COMMIT`.

use crate::error::SqlError;

use super::{Session, Settings};

/// An open transaction block, as PostgreSQL keeps settings in one: what to
/// restore at `ROLLBACK` (`at_begin`), what survives `COMMIT`
/// (`session_level`: the settings with only the non-`LOCAL` changes), and
/// both again at each savepoint.
#[derive(Debug, Clone)]
pub(super) struct Transaction {
    at_begin: Settings,
    pub(super) session_level: Settings,
    savepoints: Vec<Savepoint>,
}

#[derive(Debug, Clone)]
struct Savepoint {
    name: String,
    current: Settings,
    session_level: Settings,
}

impl Session {
    /// `BEGIN`: open a transaction block (a no-op inside one, where
    /// PostgreSQL warns). Returns whether a block was opened.
    pub fn begin_transaction(&self) -> bool {
        let mut vars = self.vars();
        if vars.transaction.is_some() {
            return false;
        }
        vars.transaction = Some(Transaction {
            at_begin: vars.cur.clone(),
            session_level: vars.cur.clone(),
            savepoints: Vec::new(),
        });
        true
    }

    /// `COMMIT` (`commit = true`) or `ROLLBACK` of the open block: `SET
    /// LOCAL` changes end either way, other changes survive a commit only.
    pub fn end_transaction(&self, commit: bool) {
        let mut vars = self.vars();
        let vars = &mut *vars;
        if let Some(t) = vars.transaction.take() {
            vars.cur = if commit { t.session_level } else { t.at_begin };
            self.follow_break_glass(vars);
        }
    }

    /// `SAVEPOINT name`.
    pub fn savepoint(&self, name: &str) -> Result<(), SqlError> {
        let mut vars = self.vars();
        let vars = &mut *vars;
        let t = open_block(&mut vars.transaction, "SAVEPOINT")?;
        t.savepoints.push(Savepoint {
            name: name.to_owned(),
            current: vars.cur.clone(),
            session_level: t.session_level.clone(),
        });
        Ok(())
    }

    /// `ROLLBACK TO SAVEPOINT name`: settings as they were at the savepoint,
    /// which stays.
    pub fn rollback_to_savepoint(&self, name: &str) -> Result<(), SqlError> {
        let mut vars = self.vars();
        let vars = &mut *vars;
        let t = open_block(&mut vars.transaction, "ROLLBACK TO SAVEPOINT")?;
        let at = t.savepoint_index(name)?;
        t.savepoints.truncate(at + 1);
        let sp = &t.savepoints[at];
        vars.cur = sp.current.clone();
        t.session_level = sp.session_level.clone();
        self.follow_break_glass(vars);
        Ok(())
    }

    /// `RELEASE SAVEPOINT name`: forget it and every later savepoint.
    pub fn release_savepoint(&self, name: &str) -> Result<(), SqlError> {
        let mut vars = self.vars();
        let t = open_block(&mut vars.transaction, "RELEASE SAVEPOINT")?;
        let at = t.savepoint_index(name)?;
        t.savepoints.truncate(at);
        Ok(())
    }

    /// Is a transaction block open?
    pub fn in_transaction(&self) -> bool {
        self.vars().transaction.is_some()
    }
}

impl Transaction {
    /// The latest savepoint called `name`.
    fn savepoint_index(&self, name: &str) -> Result<usize, SqlError> {
        self.savepoints
            .iter()
            .rposition(|s| s.name == name)
            .ok_or_else(|| SqlError::new("3B001", "savepoint does not exist"))
    }
}

/// The open transaction block, or PostgreSQL's error for `command` outside
/// one.
fn open_block<'a>(
    transaction: &'a mut Option<Transaction>,
    command: &str,
) -> Result<&'a mut Transaction, SqlError> {
    transaction.as_mut().ok_or_else(|| {
        SqlError::new(
            "25P01",
            format!("{command} can only be used in transaction blocks"),
        )
    })
}
