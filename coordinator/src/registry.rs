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

/// Most datasets one node may announce.
pub(crate) const MAX_HELLO_DATASETS: usize = 256;
/// Most columns one announced dataset may have (its key column included).
pub(crate) const MAX_HELLO_COLUMNS: usize = 1024;
/// Longest announced column kind, in bytes.
const MAX_KIND_BYTES: usize = 16;

/// Checks a hello's dataset announcements: at most [`MAX_HELLO_DATASETS`], names as in node
/// configs (1 to 64 of `[a-z0-9_-]`, unique), at most [`MAX_HELLO_COLUMNS`] columns each, with
/// non-empty names of at most 128 bytes and short kinds, no control characters. What the
/// coordinator stores and shows of a node is then well-formed; `Err` says what is not.
pub(crate) fn check_datasets(datasets: &[parley_proto::DatasetInfo]) -> Result<(), String> {
    use crate::service::sanitize;
    use parley_jobs::limits::{MAX_COLUMN_BYTES, MAX_NAME_BYTES};
    if datasets.len() > MAX_HELLO_DATASETS {
        return Err(format!(
            "{} datasets announced, at most {MAX_HELLO_DATASETS}",
            datasets.len()
        ));
    }
    let mut names = std::collections::HashSet::new();
    for (i, d) in datasets.iter().enumerate() {
        let valid = !d.name.is_empty()
            && d.name.len() <= MAX_NAME_BYTES
            && d.name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        if !valid {
            return Err(format!(
                "dataset {} has an invalid name '{}' (use 1 to {MAX_NAME_BYTES} of a-z, 0-9, - \
                 and _)",
                i + 1,
                sanitize(&d.name, 64)
            ));
        }
        if !names.insert(d.name.as_str()) {
            return Err(format!("dataset '{}' is announced twice", d.name));
        }
        if d.columns.len() > MAX_HELLO_COLUMNS {
            return Err(format!(
                "dataset '{}' announces {} columns, at most {MAX_HELLO_COLUMNS}",
                d.name,
                d.columns.len()
            ));
        }
        for c in &d.columns {
            let bad = |s: &str, max: usize| {
                s.is_empty() || s.len() > max || s.chars().any(char::is_control)
            };
            if bad(&c.name, MAX_COLUMN_BYTES) || bad(&c.kind, MAX_KIND_BYTES) {
                return Err(format!(
                    "dataset '{}' announces a column with an empty, overlong or control-character \
                     name or kind ('{}': '{}')",
                    d.name,
                    sanitize(&c.name, 64),
                    sanitize(&c.kind, 16)
                ));
            }
        }
    }
    Ok(())
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
        check_datasets(&hello.datasets).map_err(|problem| ServiceError::BadHello { problem })
    }

    /// True when connected node `node` announced a dataset named `dataset` in its hello.
    pub(crate) fn announced(&self, node: &str, dataset: &str) -> bool {
        self.lock()
            .nodes
            .get(node)
            .is_some_and(|c| c.hello.datasets.iter().any(|d| d.name == dataset))
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

#[cfg(test)]
mod tests {
    use parley_proto::{ColumnInfo, DatasetInfo, Hello};

    use super::*;
    use crate::config::Limits;
    use crate::service::Coordinator;
    use crate::store::JobStore;

    fn dataset(name: &str, columns: &[(&str, &str)]) -> DatasetInfo {
        DatasetInfo {
            name: name.into(),
            columns: columns
                .iter()
                .map(|(n, k)| ColumnInfo {
                    name: (*n).into(),
                    kind: (*k).into(),
                })
                .collect(),
            row_count: 10,
        }
    }

    #[test]
    fn announced_datasets_are_checked() {
        let ok = dataset("crm", &[("id", "key"), ("email", "email")]);
        assert_eq!(check_datasets(std::slice::from_ref(&ok)), Ok(()));
        let e = check_datasets(&[ok.clone(), ok.clone()]).unwrap_err();
        assert!(e.contains("announced twice"), "{e}");
        let e = check_datasets(&[dataset("CRM\x1b[2J", &[])]).unwrap_err();
        assert!(e.contains("invalid name") && !e.contains('\x1b'), "{e}");
        let e = check_datasets(&[dataset("crm", &[("e\nmail", "email")])]).unwrap_err();
        assert!(e.contains("control-character") && !e.contains('\n'), "{e}");
        let e = check_datasets(&[dataset("crm", &[("", "email")])]).unwrap_err();
        assert!(e.contains("empty"), "{e}");
        let many: Vec<DatasetInfo> = (0..=MAX_HELLO_DATASETS)
            .map(|i| dataset(&format!("d{i}"), &[]))
            .collect();
        assert!(check_datasets(&many).unwrap_err().contains("at most 256"));
        let wide: Vec<(String, String)> = (0..=MAX_HELLO_COLUMNS)
            .map(|i| (format!("c{i}"), "value".to_string()))
            .collect();
        let wide: Vec<(&str, &str)> = wide.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
        assert!(
            check_datasets(&[dataset("crm", &wide)])
                .unwrap_err()
                .contains("columns")
        );
    }

    #[test]
    fn only_announced_datasets_count() {
        let store = JobStore::open_in_memory().unwrap();
        let inner = Coordinator::new(store, Vec::new(), Limits::default()).inner;
        let hello = Hello {
            datasets: vec![dataset("crm", &[("id", "key")])],
            ..Default::default()
        };
        let link = inner.connect("brand", hello);
        assert!(inner.announced("brand", "crm"));
        assert!(!inner.announced("brand", "ghost"));
        assert!(!inner.announced("publisher", "crm"));
        drop(link);
    }
}
