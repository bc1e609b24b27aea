//! Arrow record batches → PostgreSQL DataRows, streamed.
//!
//! One batch is encoded at a time (arrow-pg's `RowEncoder`), so memory is
//! bounded by DataFusion's batch size whatever the result size. The stream
//! watches the statement's cancellation token between rows and while waiting
//! for the next batch: a CancelRequest stops a query that is already sending.

use std::sync::Arc;

use arrow_pg::datatypes::arrow_schema_to_pg_fields;
use arrow_pg::row_encoder::RowEncoder;
use datafusion::arrow::datatypes::Schema;
use datafusion::physical_plan::SendableRecordBatchStream;
use futures::{Stream, StreamExt};
use pgwire::api::portal::Format;
use pgwire::api::results::FieldInfo;
use pgwire::error::PgWireResult;
use pgwire::messages::data::DataRow;
use tokio_util::sync::CancellationToken;

use crate::error::SqlError;

/// Column descriptions for a result schema in the requested formats.
pub fn pg_fields(schema: &Schema, format: &Format) -> Result<Vec<FieldInfo>, SqlError> {
    arrow_schema_to_pg_fields(schema, format, None)
        .map_err(|_| SqlError::new("0A000", "result has a column type lakeward cannot send"))
}

/// Why a row stream stopped early.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamEnd {
    Finished,
    Cancelled,
    Failed,
}

struct State {
    batches: SendableRecordBatchStream,
    fields: Arc<Vec<FieldInfo>>,
    current: Option<RowEncoder>,
    cancel: CancellationToken,
    done: bool,
}

/// Stream the rows of `batches`, encoded for `fields`. Errors are sanitised
/// [`SqlError`]s turned into pgwire `UserError`s (the session stays open).
pub fn row_stream(
    batches: SendableRecordBatchStream,
    fields: Arc<Vec<FieldInfo>>,
    cancel: CancellationToken,
) -> impl Stream<Item = PgWireResult<DataRow>> + Send + 'static {
    let state = State {
        batches,
        fields,
        current: None,
        cancel,
        done: false,
    };
    futures::stream::unfold(state, |mut st| async move {
        if st.done {
            return None;
        }
        loop {
            if st.cancel.is_cancelled() {
                st.done = true;
                return Some((Err(SqlError::cancelled().into_pgwire()), st));
            }
            if let Some(enc) = st.current.as_mut() {
                match enc.next_row() {
                    Some(Ok(row)) => return Some((Ok(row), st)),
                    Some(Err(_)) => {
                        st.done = true;
                        let e = SqlError::new("XX000", "could not encode a result value");
                        return Some((Err(e.into_pgwire()), st));
                    }
                    None => st.current = None,
                }
            }
            let next = tokio::select! {
                biased;
                _ = st.cancel.cancelled() => {
                    st.done = true;
                    return Some((Err(SqlError::cancelled().into_pgwire()), st));
                }
                next = st.batches.next() => next,
            };
            match next {
                None => return None,
                Some(Ok(batch)) => {
                    if batch.num_rows() > 0 {
                        st.current = Some(RowEncoder::new(batch, st.fields.clone()));
                    }
                }
                Some(Err(e)) => {
                    st.done = true;
                    let err = super::errors::to_sql_error(&e);
                    tracing::debug!(sqlstate = err.code, "query execution failed");
                    return Some((Err(err.into_pgwire()), st));
                }
            }
        }
    })
}
