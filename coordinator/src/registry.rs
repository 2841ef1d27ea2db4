//! The registry of connected nodes.
//!
//! A node is registered once its `hello` names the node of its TLS certificate and carries a
//! key binding that verifies against the federation CA ([`Inner::check_hello`]). Each
//! connection gets a fresh id, so a stale link that ends after its node reconnected does not
//! remove the new one. A reconnect or a disconnect ends the node's part in its live jobs (see
//! `Inner::fail_jobs_of`).
//!
//! The registry holds only what a node announced in its hello (key binding, dataset metadata,
//! software version) and its outbound queue.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use parley_proto::{CoordinatorMessage, Hello, NodeInfo, Welcome, coordinator_message};
use tokio::sync::mpsc;
use tonic::Status;

use crate::error::ServiceError;
use crate::service::{Inner, NodeTx, Outgoing, State, coord_msg};
use crate::store::now_ms;

/// Outbound queue depth per node link (messages of at most ~1 MiB each).
const NODE_QUEUE: usize = 16;

/// One connected node.
pub(crate) struct NodeConn {
    /// Which connection of this node (see the module docs).
    pub(crate) conn_id: u64,
    tx: NodeTx,
    pub(crate) hello: Hello,
    connected_at_ms: i64,
}

/// A registered link: its id, the queue to stream to the node, and what the registration
/// itself must send (aborts of the jobs a reconnect interrupted).
pub(crate) struct Connected {
    pub(crate) conn_id: u64,
    pub(crate) rx: mpsc::Receiver<Result<CoordinatorMessage, Status>>,
    pub(crate) out: Outgoing,
}

impl State {
    /// The outbound queue of `node`, if it is connected.
    pub(crate) fn node_tx(&self, node: &str) -> Option<NodeTx> {
        self.nodes.get(node).map(|c| c.tx.clone())
    }

    /// The Ed25519 keys of the connected `nodes` with a well-formed key binding.
    pub(crate) fn ed25519_keys(&self, nodes: &[String]) -> HashMap<String, [u8; 32]> {
        nodes
            .iter()
            .filter_map(|p| {
                let k = self.nodes.get(p)?.hello.keys.as_ref()?;
                Some((
                    p.clone(),
                    <[u8; 32]>::try_from(k.ed25519_public.as_slice()).ok()?,
                ))
            })
            .collect()
    }
}

impl Inner {
    /// Checks that `hello` comes from node `cert_name` (the name in its certificate) and that
    /// its key binding verifies against the federation CA.
    pub(crate) fn check_hello(&self, cert_name: &str, hello: &Hello) -> Result<(), ServiceError> {
        let keys = hello.keys.as_ref().ok_or(ServiceError::Missing {
            field: "hello.keys",
        })?;
        if keys.node_name != cert_name {
            return Err(ServiceError::NameMismatch {
                claimed: keys.node_name.clone(),
                cert: cert_name.to_string(),
            });
        }
        parley_net::binding::verify_key_binding(&self.ca_der, keys, std::time::SystemTime::now())
            .map_err(|error| ServiceError::KeyBinding { error })?;
        Ok(())
    }

    /// Registers a checked node link and queues its welcome. A node that was still registered
    /// (a reconnect before its old link was noticed as dead) has its live jobs ended.
    pub(crate) fn connect(self: &Arc<Self>, name: &str, hello: Hello) -> Connected {
        let (tx, rx) = mpsc::channel(NODE_QUEUE);
        let conn_id = self.next_conn.fetch_add(1, Ordering::Relaxed);
        // The queue is new and empty: the welcome always fits.
        let _ = tx.try_send(Ok(coord_msg(coordinator_message::Body::Welcome(Welcome {
            software_version: env!("CARGO_PKG_VERSION").to_string(),
        }))));
        let replaced = self.lock().nodes.insert(
            name.to_string(),
            NodeConn {
                conn_id,
                tx,
                hello,
                connected_at_ms: now_ms(),
            },
        );
        tracing::info!(node = %name, conn_id, "node connected");
        let out = if replaced.is_some() {
            // A reconnect before the old link was noticed as dead: its jobs cannot continue.
            self.fail_jobs_of(
                name,
                &format!("node '{name}' reconnected during the job (its previous link was lost)"),
            )
        } else {
            Vec::new()
        };
        Connected { conn_id, rx, out }
    }

    /// Unregisters connection `conn_id` of `node` (unless the node has reconnected since) and
    /// ends the node's part in its live jobs.
    pub(crate) fn on_disconnect(self: &Arc<Self>, node: &str, conn_id: u64) -> Outgoing {
        let current = {
            let mut st = self.lock();
            let current = st.nodes.get(node).map(|c| c.conn_id) == Some(conn_id);
            if current {
                st.nodes.remove(node);
                tracing::info!(node, "node disconnected");
            }
            current
        };
        if !current {
            // A stale link (the node has reconnected since; its jobs on this link were ended
            // then) must not fail the jobs of the node's new link.
            tracing::debug!(node, conn_id, "a replaced link of the node ended");
            return Vec::new();
        }
        self.fail_jobs_of(
            node,
            &format!("node '{node}' disconnected from the coordinator during the job"),
        )
    }

    /// The connected nodes, sorted by name.
    pub(crate) fn list_nodes(&self) -> Vec<NodeInfo> {
        let st = self.lock();
        let mut nodes: Vec<NodeInfo> = st
            .nodes
            .iter()
            .map(|(name, c)| NodeInfo {
                name: name.clone(),
                datasets: c.hello.datasets.clone(),
                connected_at_ms: c.connected_at_ms,
                keys: c.hello.keys.clone(),
            })
            .collect();
        nodes.sort_by(|a, b| a.name.cmp(&b.name));
        nodes
    }

    /// The Ed25519 key of `node`'s key binding, if it is connected.
    pub(crate) fn ed25519_key_of(&self, node: &str) -> Option<Vec<u8>> {
        self.lock()
            .nodes
            .get(node)
            .and_then(|c| c.hello.keys.as_ref())
            .map(|k| k.ed25519_public.clone())
    }
}
