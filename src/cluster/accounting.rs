//! Patient access accounting of distributed statements.
//!
//! A statement's taps (`engine::accounting`) run where their stage runs.
//! A tap sent to a worker records into that worker's sets for the
//! statement, named by an id the coordinator drew; when the statement's
//! result stream has ended on the coordinator, it asks every worker for
//! those sets (an Arrow Flight action on the worker's port, with the
//! cluster token) and merges them into the statement's own, before the
//! statement's audit record is completed. A worker's taps record each
//! batch's patients as it passes; the worker answers once its taps for the
//! statement have ended (or after a short wait, for a stream the statement
//! stopped reading), and forgets the sets it answered; sets nobody asks for
//! (a statement that failed) expire after ten minutes.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use arrow_flight::flight_service_server::FlightService;
use arrow_flight::{
    Action, ActionType, Criteria, Empty, FlightData, FlightDescriptor, FlightInfo,
    HandshakeRequest, HandshakeResponse, PollInfo, PutResult, SchemaResult, Ticket,
};
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::SendableRecordBatchStream;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use futures::{Stream, StreamExt};
use prost::Message;
use tonic::{Request, Response, Status, Streaming};
use url::Url;

use super::coordinator::TlsChannels;
use crate::engine::accounting::{Disclosure, PatientSets};

/// The action a coordinator collects a statement's sets with.
pub(crate) const TAKE_ACTION: &str = "lakeward.accounting.take";

/// How long a worker waits for a statement's taps to end before answering
/// with what they recorded so far (a worker's taps record each batch as it
/// passes: a stream still open is one the statement no longer reads, such
/// as the probe side of a join whose build side came out empty).
const TAPS_END_WITHIN: Duration = Duration::from_millis(500);

/// A worker's sets, by statement.
#[derive(Debug, Clone)]
pub(crate) struct RemoteSets(Arc<moka::sync::Cache<u128, Arc<PatientSets>>>);

impl Default for RemoteSets {
    fn default() -> Self {
        RemoteSets(Arc::new(
            moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_idle(Duration::from_secs(600))
                .build(),
        ))
    }
}

impl RemoteSets {
    /// The sets of statement `id` (created on first use).
    pub(crate) fn sets(&self, id: u128) -> Arc<PatientSets> {
        self.0.get_with(id, || Arc::new(PatientSets::default()))
    }

    /// Statement `id`'s sets once its taps have ended, forgotten here.
    async fn take(&self, id: u128) -> Option<Arc<PatientSets>> {
        let sets = self.0.get(&id)?;
        let deadline = tokio::time::Instant::now() + TAPS_END_WITHIN;
        while sets.open_streams() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        self.0.invalidate(&id);
        Some(sets)
    }
}

/// One worker's share of a statement's sets.
#[derive(Clone, PartialEq, Message)]
struct SetsProto {
    /// Compressed bitmaps of the patient keys (`i64` bit patterns).
    #[prost(bytes = "vec", tag = "1")]
    returned: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    aggregated: Vec<u8>,
}

/// The worker's Flight service: only [`TAKE_ACTION`].
#[derive(Debug, Clone)]
pub(crate) struct AccountingService {
    sets: RemoteSets,
}

impl AccountingService {
    pub(crate) fn new(sets: RemoteSets) -> AccountingService {
        AccountingService { sets }
    }
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

fn unsupported<T>() -> Result<T, Status> {
    Err(Status::unimplemented(
        "a lakeward worker answers one action only",
    ))
}

#[tonic::async_trait]
impl FlightService for AccountingService {
    type HandshakeStream = BoxStream<HandshakeResponse>;
    type ListFlightsStream = BoxStream<FlightInfo>;
    type DoGetStream = BoxStream<FlightData>;
    type DoPutStream = BoxStream<PutResult>;
    type DoActionStream = BoxStream<arrow_flight::Result>;
    type ListActionsStream = BoxStream<ActionType>;
    type DoExchangeStream = BoxStream<FlightData>;

    async fn handshake(
        &self,
        _request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<Self::HandshakeStream>, Status> {
        unsupported()
    }

    async fn list_flights(
        &self,
        _request: Request<Criteria>,
    ) -> Result<Response<Self::ListFlightsStream>, Status> {
        unsupported()
    }

    async fn get_flight_info(
        &self,
        _request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        unsupported()
    }

    async fn poll_flight_info(
        &self,
        _request: Request<FlightDescriptor>,
    ) -> Result<Response<PollInfo>, Status> {
        unsupported()
    }

    async fn get_schema(
        &self,
        _request: Request<FlightDescriptor>,
    ) -> Result<Response<SchemaResult>, Status> {
        unsupported()
    }

    async fn do_get(
        &self,
        _request: Request<Ticket>,
    ) -> Result<Response<Self::DoGetStream>, Status> {
        unsupported()
    }

    async fn do_put(
        &self,
        _request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoPutStream>, Status> {
        unsupported()
    }

    async fn do_exchange(
        &self,
        _request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoExchangeStream>, Status> {
        unsupported()
    }

    async fn list_actions(
        &self,
        _request: Request<Empty>,
    ) -> Result<Response<Self::ListActionsStream>, Status> {
        unsupported()
    }

    async fn do_action(
        &self,
        request: Request<Action>,
    ) -> Result<Response<Self::DoActionStream>, Status> {
        let action = request.into_inner();
        if action.r#type != TAKE_ACTION {
            return unsupported();
        }
        let id = <[u8; 16]>::try_from(action.body.as_ref())
            .map(u128::from_be_bytes)
            .map_err(|_| Status::invalid_argument("malformed statement id"))?;
        let answer = match self.sets.take(id).await {
            Some(sets) => {
                let (returned, aggregated) = sets.collected();
                let mut proto = SetsProto {
                    returned: Vec::new(),
                    aggregated: Vec::new(),
                };
                returned
                    .serialize_into(&mut proto.returned)
                    .and_then(|_| aggregated.serialize_into(&mut proto.aggregated))
                    .map_err(|_| Status::internal("cannot encode patient sets"))?;
                proto
            }
            None => SetsProto {
                returned: Vec::new(),
                aggregated: Vec::new(),
            },
        };
        let result = arrow_flight::Result {
            body: answer.encode_to_vec().into(),
        };
        Ok(Response::new(Box::pin(futures::stream::once(async move {
            Ok(result)
        }))))
    }
}

/// Collect statement `sets`' shares from `workers` into it.
async fn collect(channels: &TlsChannels, workers: &[Url], sets: &PatientSets) -> DfResult<()> {
    let id = sets.remote_id().to_be_bytes().to_vec();
    let lost =
        || DataFusionError::Execution("a worker did not return its patient accounting".into());
    let failed = |_: Status| lost();
    for url in workers {
        let mut client =
            arrow_flight::flight_service_client::FlightServiceClient::new(channels.service(url)?);
        let mut answers = client
            .do_action(Action {
                r#type: TAKE_ACTION.to_owned(),
                body: id.clone().into(),
            })
            .await
            .map_err(failed)?
            .into_inner();
        let Some(answer) = answers.message().await.map_err(failed)? else {
            return Err(lost());
        };
        let share = SetsProto::decode(answer.body.as_ref()).map_err(|_| lost())?;
        for (class, bytes) in [
            (Disclosure::Returned, &share.returned),
            (Disclosure::Aggregated, &share.aggregated),
        ] {
            // A worker that ran none of the statement's taps sends nothing.
            if bytes.is_empty() {
                continue;
            }
            let set =
                roaring::RoaringTreemap::deserialize_from(bytes.as_slice()).map_err(|_| lost())?;
            sets.merge_set(class, &set);
        }
    }
    Ok(())
}

/// `stream`, which ends only once the shares of `sets` have been collected
/// from `workers` (an error if one cannot be: the statement's account
/// would be incomplete).
pub(crate) fn collected_at_end(
    stream: SendableRecordBatchStream,
    channels: TlsChannels,
    workers: Vec<Url>,
    sets: Vec<Arc<PatientSets>>,
) -> SendableRecordBatchStream {
    let schema = stream.schema();
    let tail = futures::stream::once(async move {
        for s in &sets {
            collect(&channels, &workers, s).await?;
        }
        Ok::<(), DataFusionError>(())
    })
    .filter_map(|r| async move { r.err().map(Err) });
    Box::pin(RecordBatchStreamAdapter::new(schema, stream.chain(tail)))
}
