//! The state directory both processes share, and who owns each part of it.
//!
//! ```text
//! STATE/                   root 0711   the operator's choice of place (may sit under a 0700 parent)
//! ├── api/                 API user 0700   matrixhostd: database, secrets key, dev token
//! ├── agent/               root 0700   master key, volume keys, volumes, configs, logs, backups
//! └── run/                 root 0711
//!     ├── agent.sock       API user 0600   the node agent's socket
//!     └── homeservers/     root 0711
//!         └── <id>/        tenant:API group 0750   bound into the sandbox; Synapse's socket
//! ```
//!
//! The API user may traverse `STATE` and `run` (never list them) and owns nothing the agent
//! relies on; the agent never acts inside `api/`.

use std::path::{Path, PathBuf};

use crate::HomeserverId;

/// The Unix socket each homeserver's Synapse listens on, inside its socket directory.
pub const SYNAPSE_SOCKET: &str = "synapse.sock";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateLayout {
    root: PathBuf,
}

impl StateLayout {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        let root = root.into();
        let root = std::path::absolute(&root).unwrap_or(root);
        StateLayout { root }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn api_dir(&self) -> PathBuf {
        self.root.join("api")
    }

    pub fn agent_dir(&self) -> PathBuf {
        self.root.join("agent")
    }

    pub fn run_dir(&self) -> PathBuf {
        self.root.join("run")
    }

    pub fn agent_socket(&self) -> PathBuf {
        self.run_dir().join("agent.sock")
    }

    pub fn sockets_dir(&self) -> PathBuf {
        self.run_dir().join("homeservers")
    }

    pub fn homeserver_socket_dir(&self, id: &HomeserverId) -> PathBuf {
        self.sockets_dir().join(id.as_str())
    }
}
