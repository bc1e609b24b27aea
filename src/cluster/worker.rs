//! `lakeward worker`: runs the stages of distributed statements.
//!
//! A worker listens for stages from coordinators over TLS (gRPC, Arrow
//! Flight batches), and refuses any request without the cluster token
//! before anything is decoded. It reads the Delta tables itself (its own
//! `[data]`), keys the pseudonym mask with its own key (from its
//! environment), and computes consent sets from its own copy of the
//! consent table. It never plans SQL. A stage whose plan reads a file
//! other than through a policy barrier, or calls a function the worker
//! does not know, is refused.

use std::sync::Arc;

use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::datasource::physical_plan::FileScanConfig;
use datafusion::datasource::source::DataSourceExec;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::FunctionRegistry;
use datafusion::physical_plan::ExecutionPlan;
use datafusion_distributed::{
    DistributedExt, NetworkBoundaryExt, Worker, WorkerPlanRewriteEvent,
    WorkerPlanRewriteEventResponse, WorkerQueryContext,
};
use tonic::transport::{Identity, Server, ServerTlsConfig};

use super::codec::LakewardCodec;
use super::coordinator::TlsChannels;
use crate::config::Config;
use crate::engine::secure::BarrierExec;

/// What a stage refused for reading outside the policy says.
pub(crate) const UNSECURED_STAGE: &str =
    "stage refused: it reads a table other than through lakeward's policy barrier";

/// Serve stages until SIGTERM or Ctrl-C.
pub async fn run(config: Config) -> anyhow::Result<()> {
    crate::server::tls::install_crypto_provider();
    let cluster = &config.cluster;
    let token = cluster.token()?;
    let (Some(cert), Some(key)) = (&config.tls.cert_file, &config.tls.key_file) else {
        anyhow::bail!("a worker serves TLS only: set tls.cert_file and tls.key_file");
    };
    let identity = Identity::from_pem(
        std::fs::read(cert).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", cert.display()))?,
        std::fs::read(key).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", key.display()))?,
    );
    let pseudonym_key = config.policy.pseudonym_key()?;
    let engine = Arc::new(
        crate::engine::open_from_config(&config.data, &config.memory, &pseudonym_key, None).await?,
    );
    // Workers read each other's shuffle output with the same credentials.
    let channels = match cluster.ca_file {
        Some(_) => Some(TlsChannels::new(cluster, &token)?),
        None => None,
    };
    let codec = Arc::new(LakewardCodec::new(&engine));
    let accounting = super::accounting::AccountingService::new(codec.remote_sets().clone());
    let functions = Arc::new(engine.stage_functions());
    let runtime = functions.runtime.clone();
    let worker = Worker::from_session_builder(move |ctx: WorkerQueryContext| {
        let codec = codec.clone();
        let functions = functions.clone();
        let channels = channels.clone();
        async move {
            let mut builder = ctx
                .builder
                .with_distributed_user_codec_arc(codec)
                .with_distributed_worker_plan_rewrite_handler(verify_stage);
            if let Some(channels) = channels {
                builder = builder.with_distributed_channel_resolver(channels);
            }
            // lakeward's functions over DataFusion's of the same name.
            let mut state = builder.build();
            for f in &functions.scalar {
                state.register_udf(f.clone())?;
            }
            for f in &functions.aggregate {
                state.register_udaf(f.clone())?;
            }
            for f in &functions.window {
                state.register_udwf(f.clone())?;
            }
            Ok(state)
        }
    })
    .with_runtime_env(runtime);
    let expected = Arc::new(format!("Bearer {token}"));
    let authenticate = move |request: tonic::Request<()>| {
        let given = request
            .metadata()
            .get("authorization")
            .map(|v| v.as_bytes())
            .unwrap_or_default();
        if same(given, expected.as_bytes()) {
            Ok(request)
        } else {
            tracing::warn!("worker request refused: no valid cluster token");
            Err(tonic::Status::unauthenticated("cluster token required"))
        }
    };
    let service = tonic::service::interceptor::InterceptedService::new(
        worker.into_worker_server(),
        authenticate.clone(),
    );
    let accounting = tonic::service::interceptor::InterceptedService::new(
        arrow_flight::flight_service_server::FlightServiceServer::new(accounting),
        authenticate,
    );
    let listener = tokio::net::TcpListener::bind(cluster.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", cluster.listen))?;
    let local = listener.local_addr()?;
    tracing::info!(%local, "lakeward worker listening");
    Server::builder()
        .tls_config(ServerTlsConfig::new().identity(identity))?
        .add_service(service)
        .add_service(accounting)
        .serve_with_incoming_shutdown(
            tokio_stream_from(listener),
            crate::cli::services::shutdown_signal(),
        )
        .await?;
    Ok(())
}

/// The listener's connections as tonic takes them.
fn tokio_stream_from(
    listener: tokio::net::TcpListener,
) -> impl futures::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    futures::stream::unfold(listener, |listener| async move {
        let next = listener.accept().await.map(|(stream, _)| {
            let _ = stream.set_nodelay(true);
            stream
        });
        Some((next, listener))
    })
}

/// Constant-time equality of two byte strings of equal length.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Refuse a stage that reads a file other than inside a policy barrier.
/// Every other leaf must be one that reads no table (an empty relation,
/// one row, `VALUES`) or another stage's output.
fn verify_stage(ev: WorkerPlanRewriteEvent<'_>) -> DfResult<WorkerPlanRewriteEventResponse> {
    check_stage(&ev.plan)?;
    Ok(WorkerPlanRewriteEventResponse::new(ev.plan))
}

pub(crate) fn check_stage(plan: &Arc<dyn ExecutionPlan>) -> DfResult<()> {
    use datafusion::physical_plan::empty::EmptyExec;
    use datafusion::physical_plan::placeholder_row::PlaceholderRowExec;
    let mut refused = false;
    plan.apply(|node| {
        if node.downcast_ref::<BarrierExec>().is_some() || node.is_network_boundary() {
            // A barrier's subtree is the policy's; another stage's output
            // was checked where it ran.
            return Ok(TreeNodeRecursion::Jump);
        }
        let allowed_leaf = node.downcast_ref::<EmptyExec>().is_some()
            || node.downcast_ref::<PlaceholderRowExec>().is_some()
            || node
                .downcast_ref::<DataSourceExec>()
                .is_some_and(|d| d.data_source().downcast_ref::<FileScanConfig>().is_none());
        if node.children().is_empty() && !allowed_leaf {
            refused = true;
            return Ok(TreeNodeRecursion::Stop);
        }
        Ok(TreeNodeRecursion::Continue)
    })?;
    if refused {
        tracing::warn!("{UNSECURED_STAGE}");
        return Err(DataFusionError::Plan(UNSECURED_STAGE.into()));
    }
    Ok(())
}
