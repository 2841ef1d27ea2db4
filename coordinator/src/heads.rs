//! Ledger heads: the latest row of each node's privacy-budget ledger, per dataset.
//!
//! A node reports its ledger heads (dataset, sequence number, row hash, Ed25519 signature) over
//! its link. The coordinator records a head only for a dataset the node announced in its hello,
//! only when the signature over the hash verifies with the Ed25519 key of the node's
//! certificate-bound key binding, only when it is not dated more
//! than `parley_crypto::ledger::CLOCK_TOLERANCE_MS` after the coordinator's clock, and only when
//! it is newer than the recorded one: a head that would move backwards is logged and the
//! recorded head kept (the node's ledger lost or rewrote rows). Every recorded head is kept,
//! append-only, so an audit can require all of them in an export. Analysts and auditors read
//! the newest heads, or one chain's whole history, through `Jobs/LedgerHeads`. A head carries
//! no dataset contents.

use parley_proto::{LedgerHead, RecordedHead};

use crate::error::ServiceError;
use crate::service::Inner;
use crate::store::{HeadUpdate, now_ms};

impl Inner {
    /// Records a node's ledger head after checking the node's signature over the row hash
    /// (with the Ed25519 key of its certificate-bound key binding). Blocks on the store: run
    /// it off the async runtime.
    pub(crate) fn on_ledger_head(&self, node: &str, head: LedgerHead) {
        let Some(key) = self.ed25519_key_of(node) else {
            return;
        };
        if !self.announced(node, &head.dataset) {
            tracing::warn!(
                node,
                dataset = %crate::service::sanitize(&head.dataset, 64),
                "ledger head for a dataset the node did not announce ignored"
            );
            return;
        }
        let valid = head.hash.len() == 32
            && parley_crypto::ledger::signed_message(head.row_format.max(1), &head.hash)
                .is_some_and(|m| {
                    ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, &key)
                        .verify(&m, &head.signature)
                        .is_ok()
                });
        if !valid {
            tracing::warn!(node, dataset = %head.dataset, "ledger head with an invalid signature ignored");
            return;
        }
        let now = now_ms();
        if head.at_ms > now.saturating_add(parley_crypto::ledger::CLOCK_TOLERANCE_MS) {
            tracing::warn!(
                node,
                dataset = %head.dataset,
                seq = head.seq,
                ahead_ms = head.at_ms - now,
                "ledger head dated in the future of the coordinator's clock ignored (the node's clock runs ahead)"
            );
            return;
        }
        match self.store.record_head(node, &head, now) {
            Ok(HeadUpdate::Rejected) => tracing::warn!(
                node,
                dataset = %head.dataset,
                seq = head.seq,
                "node reported a ledger head older than the recorded one; kept the recorded head (its ledger lost or rewrote rows)"
            ),
            Ok(_) => {}
            Err(e) => tracing::error!(node, error = %e, "cannot record ledger head"),
        }
    }

    /// The recorded heads, filtered by `node` and `dataset` (empty: all): the newest of each
    /// chain, or, when both are given, every head recorded for that one chain, oldest first.
    pub(crate) fn ledger_heads(
        &self,
        node: &str,
        dataset: &str,
    ) -> Result<Vec<RecordedHead>, ServiceError> {
        let heads = if node.is_empty() || dataset.is_empty() {
            self.store.heads(node, dataset)
        } else {
            self.store.head_history(node, dataset)
        };
        let heads = heads.map_err(|error| ServiceError::Store {
            action: "read ledger heads",
            error,
        })?;
        Ok(heads
            .into_iter()
            .map(|h| RecordedHead {
                node: h.node,
                head: Some(h.head),
                recorded_at_ms: h.recorded_at_ms,
            })
            .collect())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::Arc;

    use parley_crypto::ledger::CLOCK_TOLERANCE_MS;
    use parley_proto::{DatasetInfo, Hello, KeyBinding};
    use ring::signature::{Ed25519KeyPair, KeyPair};

    use super::*;
    use crate::config::Limits;
    use crate::registry::Connected;
    use crate::service::Coordinator;
    use crate::store::JobStore;

    /// A coordinator with node `brand` connected, announcing dataset `crm`, and brand's
    /// ledger key (keep the link alive while reporting heads).
    fn brand_connected() -> (Arc<Inner>, Ed25519KeyPair, Connected) {
        let store = JobStore::open_in_memory().unwrap();
        let inner = Coordinator::new(store, Vec::new(), Limits::default()).inner;
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new()).unwrap();
        let key = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
        let hello = Hello {
            keys: Some(KeyBinding {
                node_name: "brand".into(),
                ed25519_public: key.public_key().as_ref().to_vec(),
                ..Default::default()
            }),
            datasets: vec![DatasetInfo {
                name: "crm".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        let link = inner.connect("brand", hello);
        (inner, key, link)
    }

    /// A format-2 head of `dataset` at `seq`, dated `at_ms`, signed with `key`.
    fn head(key: &Ed25519KeyPair, dataset: &str, seq: u64, at_ms: i64) -> LedgerHead {
        let hash = [3u8; 32];
        LedgerHead {
            dataset: dataset.into(),
            seq,
            hash: hash.to_vec(),
            signature: key
                .sign(&parley_crypto::ledger::signed_message(2, &hash).unwrap())
                .as_ref()
                .to_vec(),
            at_ms,
            row_format: 2,
        }
    }

    /// The `(dataset, seq)` of every newest head recorded for `brand`.
    fn recorded(inner: &Inner) -> Vec<(String, u64)> {
        inner
            .ledger_heads("brand", "")
            .unwrap()
            .into_iter()
            .filter_map(|h| h.head)
            .map(|h| (h.dataset, h.seq))
            .collect()
    }

    #[test]
    fn heads_of_datasets_the_node_did_not_announce_are_ignored() {
        let (inner, key, _link) = brand_connected();
        inner.on_ledger_head("brand", head(&key, "ghost", 0, now_ms()));
        inner.on_ledger_head("brand", head(&key, "crm", 0, now_ms()));
        assert_eq!(recorded(&inner), [("crm".to_owned(), 0)]);
    }

    #[test]
    fn heads_dated_beyond_the_clock_tolerance_are_ignored() {
        let (inner, key, _link) = brand_connected();
        let minute = 60_000;
        let ahead = now_ms() + CLOCK_TOLERANCE_MS + minute;
        inner.on_ledger_head("brand", head(&key, "crm", 0, ahead));
        assert!(recorded(&inner).is_empty());
        // Within the tolerance, and long in the past (a node reporting its last charge of
        // a month ago on reconnect), heads are recorded.
        let month_ago = now_ms() - 30 * 24 * 3_600_000;
        inner.on_ledger_head("brand", head(&key, "crm", 0, month_ago));
        assert_eq!(recorded(&inner), [("crm".to_owned(), 0)]);
        let skewed = now_ms() + CLOCK_TOLERANCE_MS - minute;
        inner.on_ledger_head("brand", head(&key, "crm", 1, skewed));
        assert_eq!(recorded(&inner), [("crm".to_owned(), 1)]);
    }
}
