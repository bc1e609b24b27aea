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
    let channels = TlsChannels::new(cluster, &token)?;
    let codec = Arc::new(LakewardCodec::new(&engine));
    let served = Arc::new(ServedFiles::of(&engine));
    let accounting = super::accounting::AccountingService::new(codec.remote_sets().clone());
    let functions = Arc::new(engine.stage_functions());
    let runtime = functions.runtime.clone();
    let worker = Worker::from_session_builder(move |ctx: WorkerQueryContext| {
        let codec = codec.clone();
        let functions = functions.clone();
        let channels = channels.clone();
        let served = served.clone();
        async move {
            let mut builder = ctx
                .builder
                .with_distributed_user_codec_arc(codec)
                .with_distributed_worker_plan_rewrite_handler(
                    move |ev: WorkerPlanRewriteEvent<'_>| {
                        check_stage(&ev.plan, &served)?;
                        Ok(WorkerPlanRewriteEventResponse::new(ev.plan))
                    },
                );
            builder = builder.with_distributed_channel_resolver(channels);
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
    // A reload signal changes nothing on a worker (it holds no policy):
    // it is logged, not left to end the process.
    #[cfg(unix)]
    tokio::spawn(async {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut hup) = signal(SignalKind::hangup()) {
            while hup.recv().await.is_some() {
                tracing::info!("SIGHUP ignored: a worker has nothing to reload");
            }
        }
    });
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

/// Where the tables this worker serves keep their files: object store
/// URL and path prefix, per table.
#[derive(Debug, Clone, Default)]
pub(crate) struct ServedFiles(Vec<(String, String)>);

impl ServedFiles {
    fn of(engine: &crate::engine::Engine) -> ServedFiles {
        let mut prefixes = Vec::new();
        for table in engine.tables().values() {
            let url = match url::Url::parse(&table.location) {
                Ok(u) if u.scheme().len() > 1 => u,
                _ => match url::Url::from_directory_path(&table.location) {
                    Ok(u) => u,
                    Err(()) => continue,
                },
            };
            let store = url[..url::Position::BeforePath].to_owned() + "/";
            let path = url.path().trim_matches('/').to_owned() + "/";
            prefixes.push((store, path));
        }
        ServedFiles(prefixes)
    }

    /// Whether every file `config` reads belongs to a served table.
    fn admits(&self, config: &FileScanConfig) -> bool {
        let store = config.object_store_url.as_str();
        config
            .file_groups
            .iter()
            .flat_map(|g| g.iter())
            .all(|file| {
                let location = file.object_meta.location.as_ref();
                self.0
                    .iter()
                    .any(|(s, prefix)| s == store && location.starts_with(prefix.as_str()))
            })
    }
}

/// Refuse a stage that reads a file other than through a policy barrier,
/// or a barrier reading files of no served table. Every other leaf must
/// be an empty relation, a single row, or another stage's output.
pub(crate) fn check_stage(plan: &Arc<dyn ExecutionPlan>, served: &ServedFiles) -> DfResult<()> {
    use datafusion::physical_plan::empty::EmptyExec;
    use datafusion::physical_plan::placeholder_row::PlaceholderRowExec;
    let mut refused = false;
    plan.apply(|node| {
        if let Some(barrier) = node.downcast_ref::<BarrierExec>() {
            // The policy subtree reads only served tables' files.
            barrier.input().apply(|inner| {
                let scan = inner
                    .downcast_ref::<DataSourceExec>()
                    .and_then(|d| d.data_source().downcast_ref::<FileScanConfig>());
                if let Some(config) = scan
                    && !served.admits(config)
                {
                    refused = true;
                    return Ok(TreeNodeRecursion::Stop);
                }
                Ok(TreeNodeRecursion::Continue)
            })?;
            return Ok(if refused {
                TreeNodeRecursion::Stop
            } else {
                TreeNodeRecursion::Jump
            });
        }
        if node.is_network_boundary() {
            // Another stage's output, checked where it ran.
            return Ok(TreeNodeRecursion::Jump);
        }
        let allowed_leaf = node.downcast_ref::<EmptyExec>().is_some()
            || node.downcast_ref::<PlaceholderRowExec>().is_some();
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
