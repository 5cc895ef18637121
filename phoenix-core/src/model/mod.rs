//! The domain: images, releases, pools, servers and deployments, with
//! checked lifecycle transitions.

mod deployment;
mod image;
mod pool;
mod promotion;
mod release;
mod server;

pub use deployment::{Deployment, Environment, Role};
pub use image::{
    EvidenceEntry, EvidenceReport, Image, ImageState, TestEvidence, EVIDENCE_SUMMARY_MAX,
};
pub use pool::{
    DiscardedServer, LostLaunch, Pool, PoolState, PoolTransition, Slot, SlotState, StandbyKind,
    Traffic,
};
pub use promotion::{PromotionProof, PromotionRule};
pub use release::Release;
pub use server::{Server, ServerStatus};

/// An illegal lifecycle transition. Never a silent overwrite.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{entity} {id}: cannot go from {from} to {to}: {reason}")]
pub struct TransitionError {
    /// `image` or `pool`.
    pub entity: &'static str,
    /// The entity's id.
    pub id: String,
    /// Its current state.
    pub from: String,
    /// The refused target state.
    pub to: String,
    /// Why it is refused.
    pub reason: String,
}
