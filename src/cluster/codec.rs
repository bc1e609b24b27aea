//! How lakeward's plan nodes cross from the coordinator to a worker.
//!
//! DataFusion's own nodes are encoded by datafusion-proto and
//! datafusion-distributed's by its codec; this codec adds lakeward's:
//!
//! - the policy barrier ([`BarrierExec`]): the table's name and its policy
//!   subtree (raw Parquet scan, row filter, consent check, masks), encoded
//!   with this same codec. A worker decodes the subtree as planned on the
//!   coordinator; it never plans SQL.
//! - [`NoFloatPruning`], the snapshot scan's guard against NaN pruning.
//! - patient accounting taps: a worker's copy records into the worker's
//!   sets for the statement, which the coordinator collects at its end
//!   (`cluster::accounting`).
//! - membership functions (consent checks, subquery row filters): a consent
//!   check travels as what defines its set (consent table columns, purpose,
//!   decision) and the worker computes the set from its own copy of the
//!   consent table, brought to its newest version before the stage runs;
//!   a filter set travels as its ids.
//!
//! Mask functions travel by name and resolve from the worker's registry,
//! which holds them keyed with the worker's own pseudonymisation key.
//! Anything else lakeward-specific is refused here: such a plan stays on
//! the coordinator (`cluster::coordinator` encodes a plan before
//! distributing it).

use std::sync::Arc;

use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::TaskContext;
use datafusion::logical_expr::ScalarUDF;
use datafusion::physical_plan::ExecutionPlan;
use datafusion_proto::physical_plan::{
    PhysicalExtensionCodec, PhysicalPlanDecodeContext, PhysicalProtoConverterExtension,
};
use prost::Message;

use crate::engine::Engine;
use crate::engine::accounting::Disclosure;
use crate::engine::accounting::tap::{Collect, TapExec};
use crate::engine::consent::{self, Decision, MembershipSpec};
use crate::engine::secure::BarrierExec;
use crate::engine::snapshot_scan::NoFloatPruning;
use crate::policy::{ConsentRules, Purpose};

/// One lakeward node.
#[derive(Clone, PartialEq, Message)]
struct NodeProto {
    #[prost(oneof = "node_proto::Kind", tags = "1, 2, 3")]
    kind: Option<node_proto::Kind>,
}

mod node_proto {
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub(super) enum Kind {
        #[prost(message, tag = "1")]
        Barrier(super::BarrierProto),
        #[prost(bool, tag = "2")]
        NoFloatPruning(bool),
        #[prost(message, tag = "3")]
        Tap(super::TapProto),
    }
}

/// A patient accounting tap: a worker records into its own sets under the
/// statement's id, which the coordinator collects when the statement ends
/// (`cluster::accounting`).
#[derive(Clone, PartialEq, Message)]
struct TapProto {
    #[prost(bytes = "vec", tag = "1")]
    sets: Vec<u8>,
    #[prost(bool, tag = "2")]
    returned: bool,
    /// Key column positions (a tap over key columns).
    #[prost(uint32, repeated, tag = "3")]
    keys: Vec<u32>,
    /// The patients of a whole scan, known before it runs (a compressed
    /// bitmap), for a whole-table tap.
    #[prost(bytes = "vec", optional, tag = "4")]
    whole: Option<Vec<u8>>,
}

#[derive(Clone, PartialEq, Message)]
struct BarrierProto {
    #[prost(string, tag = "1")]
    table: String,
    /// The policy subtree, a datafusion-proto `PhysicalPlanNode`.
    #[prost(bytes = "vec", tag = "2")]
    input: Vec<u8>,
}

/// A membership function's set.
#[derive(Clone, PartialEq, Message)]
struct MembershipProto {
    #[prost(oneof = "membership_proto::Kind", tags = "1, 2")]
    kind: Option<membership_proto::Kind>,
}

mod membership_proto {
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub(super) enum Kind {
        #[prost(message, tag = "1")]
        Consent(super::ConsentProto),
        /// A serialised compressed bitmap of the ids' `i64` bit patterns.
        #[prost(bytes = "vec", tag = "2")]
        Ids(Vec<u8>),
    }
}

#[derive(Clone, PartialEq, Message)]
struct ConsentProto {
    #[prost(string, tag = "1")]
    table: String,
    #[prost(string, tag = "2")]
    patient_key: String,
    #[prost(string, tag = "3")]
    purpose_column: String,
    #[prost(string, tag = "4")]
    granted_column: String,
    #[prost(string, tag = "5")]
    recorded_at_column: String,
    #[prost(string, tag = "6")]
    expires_at_column: String,
    #[prost(string, tag = "7")]
    purpose: String,
    #[prost(bool, tag = "8")]
    granted: bool,
}

/// lakeward's codec. Decoding a consent check needs the engine whose
/// consent table computes its set (a worker's; on the coordinator, its own).
#[derive(Debug, Clone)]
pub(crate) struct LakewardCodec {
    engine: std::sync::Weak<Engine>,
    /// On a worker: the patient sets of the statements whose taps ran
    /// here, by the coordinator's id, until it collects them.
    remote_sets: super::accounting::RemoteSets,
}

impl LakewardCodec {
    pub(crate) fn new(engine: &Arc<Engine>) -> LakewardCodec {
        LakewardCodec {
            engine: Arc::downgrade(engine),
            remote_sets: super::accounting::RemoteSets::default(),
        }
    }

    /// The sets taps decoded here record into.
    pub(crate) fn remote_sets(&self) -> &super::accounting::RemoteSets {
        &self.remote_sets
    }
}

fn proto_err(what: &str) -> DataFusionError {
    DataFusionError::Internal(format!("lakeward plan codec: {what}"))
}

impl PhysicalExtensionCodec for LakewardCodec {
    fn try_decode(
        &self,
        buf: &[u8],
        inputs: &[Arc<dyn ExecutionPlan>],
        ctx: &TaskContext,
        proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let node = NodeProto::decode(buf).map_err(|_| proto_err("malformed node"))?;
        match node.kind {
            Some(node_proto::Kind::Barrier(b)) => {
                if !inputs.is_empty() {
                    return Err(proto_err("a policy barrier has no inputs"));
                }
                let inner =
                    datafusion_proto::protobuf::PhysicalPlanNode::decode(b.input.as_slice())
                        .map_err(|_| proto_err("malformed policy subtree"))?;
                let decode = PhysicalPlanDecodeContext::new(ctx, self);
                let input = proto_converter.proto_to_execution_plan(&inner, &decode)?;
                Ok(Arc::new(BarrierExec::new(input, b.table)))
            }
            Some(node_proto::Kind::NoFloatPruning(_)) => match inputs {
                [inner] => Ok(Arc::new(NoFloatPruning::new(inner.clone()))),
                _ => Err(proto_err("NoFloatPruning has one input")),
            },
            Some(node_proto::Kind::Tap(t)) => {
                let [input] = inputs else {
                    return Err(proto_err("a tap has one input"));
                };
                let id = <[u8; 16]>::try_from(t.sets.as_slice())
                    .map(u128::from_be_bytes)
                    .map_err(|_| proto_err("malformed tap"))?;
                let collect = match t.whole {
                    Some(bytes) => Collect::Whole {
                        patients: Arc::new(
                            roaring::RoaringTreemap::deserialize_from(bytes.as_slice())
                                .map_err(|_| proto_err("malformed tap"))?,
                        ),
                        recorded: Default::default(),
                    },
                    None => Collect::Keys(t.keys.iter().map(|&k| k as usize).collect()),
                };
                let class = if t.returned {
                    Disclosure::Returned
                } else {
                    Disclosure::Aggregated
                };
                Ok(Arc::new(TapExec::from_parts(
                    input.clone(),
                    collect,
                    class,
                    self.remote_sets.sets(id),
                )))
            }
            None => Err(proto_err("unknown node")),
        }
    }

    fn try_encode(
        &self,
        node: Arc<dyn ExecutionPlan>,
        buf: &mut Vec<u8>,
        proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> DfResult<()> {
        let kind = if let Some(barrier) = node.downcast_ref::<BarrierExec>() {
            let inner = proto_converter.execution_plan_to_proto(barrier.input(), self)?;
            node_proto::Kind::Barrier(BarrierProto {
                table: barrier.table().to_owned(),
                input: inner.encode_to_vec(),
            })
        } else if node.downcast_ref::<NoFloatPruning>().is_some() {
            node_proto::Kind::NoFloatPruning(true)
        } else if let Some(tap) = node.downcast_ref::<TapExec>() {
            let (_, collect, class, sets) = tap.parts();
            let (keys, whole) = match collect {
                Collect::Keys(keys) => (
                    keys.iter()
                        .map(|&k| u32::try_from(k).map_err(|_| proto_err("tap key position")))
                        .collect::<DfResult<Vec<u32>>>()?,
                    None,
                ),
                Collect::Whole { patients, .. } => {
                    let mut bytes = Vec::new();
                    patients
                        .serialize_into(&mut bytes)
                        .map_err(|_| proto_err("encode a tap"))?;
                    (Vec::new(), Some(bytes))
                }
            };
            node_proto::Kind::Tap(TapProto {
                sets: sets.remote_id().to_be_bytes().to_vec(),
                returned: class == Disclosure::Returned,
                keys,
                whole,
            })
        } else {
            // Not a node a worker may run: the statement stays local.
            return Err(DataFusionError::NotImplemented(format!(
                "{} does not run on workers",
                node.name()
            )));
        };
        NodeProto { kind: Some(kind) }
            .encode(buf)
            .map_err(|_| proto_err("encode"))
    }

    fn try_encode_udf(&self, node: &ScalarUDF, buf: &mut Vec<u8>) -> DfResult<()> {
        let kind = match consent::membership_spec(node) {
            Some(MembershipSpec::Consent {
                rules,
                purpose,
                decision,
            }) => membership_proto::Kind::Consent(ConsentProto {
                table: rules.table,
                patient_key: rules.patient_key,
                purpose_column: rules.purpose_column,
                granted_column: rules.granted_column,
                recorded_at_column: rules.recorded_at_column,
                expires_at_column: rules.expires_at_column,
                purpose: purpose.as_str().to_owned(),
                granted: decision == Decision::Granted,
            }),
            Some(MembershipSpec::Ids(ids)) => {
                let mut bytes = Vec::new();
                ids.to_treemap()
                    .serialize_into(&mut bytes)
                    .map_err(|_| proto_err("encode a filter set"))?;
                membership_proto::Kind::Ids(bytes)
            }
            None if is_membership(node.name()) => {
                // A filter set never computed: nothing a worker could probe.
                return Err(proto_err("membership set unavailable"));
            }
            // Any other function resolves by name from the worker's registry.
            None => return Ok(()),
        };
        MembershipProto { kind: Some(kind) }
            .encode(buf)
            .map_err(|_| proto_err("encode"))
    }

    fn try_decode_udf(&self, name: &str, buf: &[u8]) -> DfResult<Arc<ScalarUDF>> {
        if !is_membership(name) {
            return Err(DataFusionError::Plan(format!(
                "function {name} is not available on this worker"
            )));
        }
        let m = MembershipProto::decode(buf).map_err(|_| proto_err("malformed membership"))?;
        match m.kind {
            Some(membership_proto::Kind::Consent(c)) => {
                let purpose =
                    Purpose::parse(&c.purpose).ok_or_else(|| proto_err("unknown purpose"))?;
                let rules = ConsentRules {
                    table: c.table,
                    patient_key: c.patient_key,
                    purpose_column: c.purpose_column,
                    granted_column: c.granted_column,
                    recorded_at_column: c.recorded_at_column,
                    expires_at_column: c.expires_at_column,
                    purposes: Default::default(),
                };
                let decision = if c.granted {
                    Decision::Granted
                } else {
                    Decision::Refused
                };
                // The set as of the consent table's newest version, as a
                // coordinator's statement would see it: computed (or
                // refreshed) from now on, and waited for by the stage's
                // first probe, not by its set-up (which datafusion-
                // distributed gives ten seconds).
                let engine = self
                    .engine
                    .upgrade()
                    .ok_or_else(|| proto_err("engine stopped"))?;
                let udf = consent::deferred_membership_udf(name, async move {
                    engine.current_consent_set(&rules, purpose, decision).await
                })?;
                Ok(Arc::new(udf))
            }
            Some(membership_proto::Kind::Ids(bytes)) => {
                let map = roaring::RoaringTreemap::deserialize_from(bytes.as_slice())
                    .map_err(|_| proto_err("malformed filter set"))?;
                let ids = consent::IdSet::from_ids(map.iter().map(|id| id as i64).collect());
                Ok(Arc::new(consent::fixed_membership_udf(name, Arc::new(ids))))
            }
            None => Err(proto_err("membership set missing")),
        }
    }
}

fn is_membership(name: &str) -> bool {
    name.starts_with(consent::CONSENT_FUNCTION_PREFIX)
        || name.starts_with(crate::engine::filter_sets::FILTER_SET_PREFIX)
}
