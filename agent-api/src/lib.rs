//! The node agent's API.
//!
//! `matrixhostd` (the control plane) runs as an unprivileged user. Everything that needs root
//! (volumes and their keys, tenant users, sandboxes, cgroups, processes, and the file work of
//! backups and restores) is done by `matrixhost-agent`, which serves this API on a Unix socket
//! (mode 0600, owned by the control plane's user; the agent also checks the caller's peer
//! credentials). Both sides take their types from this crate, so the seam is a contract.
//!
//! * Requests name homeservers and backups by checked ids ([`HomeserverId`], [`BackupId`]).
//! * What a homeserver should run is a typed [`SynapseSpec`]; the agent renders the config.
//! * Every failure is an [`AgentError`]: a code from a fixed set ([`ErrorCode`]) and a
//!   correlation id. Details, which may hold text a tenant wrote, stay in the agent's log under
//!   that id; they never cross the socket.

mod client;
mod error;
mod ids;
mod layout;
mod messages;
mod spec;
mod wire;

pub use client::AgentClient;
pub use error::{AgentError, ErrorCode};
pub use ids::{BackupId, HomeserverId, IdError};
pub use layout::{StateLayout, SYNAPSE_SOCKET};
pub use messages::*;
pub use spec::*;
pub use wire::{read_frame, write_frame, WireError, MAX_FRAME_BYTES};

/// Spoken by both sides; an agent of another version is refused at `Hello`.
pub const PROTOCOL_VERSION: u32 = 1;

/// A fresh correlation id (`ref-` and 12 hex characters), logged next to the details of what
/// went wrong and shown to the customer in their place.
pub fn correlation_id() -> String {
    format!("ref-{}", hex::encode(rand::random::<[u8; 6]>()))
}
