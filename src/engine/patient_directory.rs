//! The patient directory of the unusual-access signals (`audit::watch`):
//! each patient's site and keyed surname, read by lakeward from the
//! configured table with the raw context (no policy: the values never leave
//! this process; surnames are hashed as they are read).

use std::sync::{Arc, Weak};

use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::datatypes::{DataType, Int64Type};
use futures::StreamExt;

use super::Engine;
use crate::audit::signals::{SignalConfig, SurnameKeyer};
use crate::audit::watch::{Directory, DirectorySource};

/// Reads the directory through an engine.
pub struct EngineDirectory {
    engine: Weak<Engine>,
    sql: String,
}

impl EngineDirectory {
    /// The directory `cfg` names, when it names a served table (else the
    /// cross-site and shared-surname signals are off).
    pub fn for_config(
        engine: &Arc<Engine>,
        cfg: &SignalConfig,
    ) -> Option<Arc<dyn DirectorySource>> {
        let (schema, table) = cfg.patients_table.split_once('.')?;
        let served = engine
            .tables()
            .keys()
            .any(|t| t.schema == schema && t.table == table);
        if !served {
            tracing::warn!(
                table = %cfg.patients_table,
                "audit.signals.patients_table is not served: cross-site and shared-surname signals are off"
            );
            return None;
        }
        // Plain identifiers (checked by the configuration), quoted.
        let sql = format!(
            "SELECT \"{}\", CAST(\"{}\" AS VARCHAR), CAST(\"{}\" AS VARCHAR) FROM \"{schema}\".\"{table}\"",
            cfg.patient_key, cfg.site_column, cfg.surname_column
        );
        Some(Arc::new(EngineDirectory {
            engine: Arc::downgrade(engine),
            sql,
        }))
    }
}

#[async_trait::async_trait]
impl DirectorySource for EngineDirectory {
    async fn load(&self, keyer: &SurnameKeyer) -> Result<Directory, String> {
        let engine = self.engine.upgrade().ok_or("the engine has stopped")?;
        let state = engine.state_for(None);
        let statement = crate::rewrite::gate::parse(&self.sql, Default::default())
            .ok()
            .and_then(|mut s| s.pop())
            .ok_or("directory statement")?;
        let plan = engine
            .plan(&state, statement)
            .await
            .map_err(|e| e.message.clone())?;
        let mut stream = engine
            .execute(&state, plan, false)
            .await
            .map_err(|e| e.message.clone())?;
        let mut directory = Directory::default();
        while let Some(batch) = stream.next().await {
            let batch = batch.map_err(|e| super::errors::to_sql_error(&e).message)?;
            let ids = datafusion::arrow::compute::cast(batch.column(0), &DataType::Int64)
                .map_err(|_| "patient key is not an integer")?;
            let ids = ids.as_primitive::<Int64Type>();
            let sites = datafusion::arrow::compute::cast(batch.column(1), &DataType::Utf8)
                .map_err(|_| "site column")?;
            let sites = sites.as_string::<i32>();
            let names = datafusion::arrow::compute::cast(batch.column(2), &DataType::Utf8)
                .map_err(|_| "surname column")?;
            let names = names.as_string::<i32>();
            for i in 0..batch.num_rows() {
                if ids.is_null(i) {
                    continue;
                }
                let site = (!sites.is_null(i)).then(|| sites.value(i));
                let surname = (!names.is_null(i))
                    .then(|| keyer.key(names.value(i)))
                    .flatten();
                directory.insert(ids.value(i), site, surname);
            }
        }
        Ok(directory)
    }
}
