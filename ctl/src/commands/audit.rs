//! `parleyctl audit`: offline verification of a node's exported privacy-budget ledger.
//!
//! The auditor needs the export (`parley-node ledger export`) and the node's Ed25519 public key,
//! obtained out of band (from the node's certificate-bound key binding, which `parleyctl nodes
//! --keys` shows, never from the export). The audit checks the hash chain, every signature, and
//! spending per refresh period against the budget recorded in the rows
//! (`parley_crypto::ledger::audit_witnessed`). To catch a truncated or rewritten ledger it also
//! checks that every head the coordinator recorded from the node's own reports is in the export
//! (signed by the node; the signature is checked here too, so a coordinator cannot invent a
//! head); the export may extend past the newest. Rows dated after the coordinator recorded them,
//! or after the auditor's clock, fail (a node clock run ahead). `--head SEQ:HASH` gives one
//! expected head directly; `--offline` skips the head check and says so.
//!
//! Exit status: 0 the ledger passed, 2 it failed (the first bad row and why are printed),
//! 1 the audit could not be run (unreadable file, bad key, coordinator unreachable).

use std::io::Write;
use std::path::Path;

use anyhow::{Context as _, bail};
use parley_crypto::ledger::{Head, LedgerExport, Witness, WitnessedHead, audit_witnessed};
use parley_proto::LedgerHeadsRequest;

use crate::config::{ConnectionArgs, CtlConfig, connect};
use crate::error::RpcError;
use crate::{EXIT_JOB_DID_NOT_SUCCEED, EXIT_OK};

/// Where the expected head comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeadSource {
    /// Given on the command line.
    Given(String),
    /// Fetched from the coordinator.
    Coordinator,
    /// Not checked.
    Offline,
}

/// The auditor's clock, ms since the Unix epoch.
fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Parses an Ed25519 public key: 64 hex digits, or a file holding them.
pub fn parse_node_key(arg: &str) -> anyhow::Result<[u8; 32]> {
    let text = if Path::new(arg).is_file() {
        std::fs::read_to_string(arg)
            .with_context(|| format!("cannot read node key file '{arg}'"))?
    } else {
        arg.to_string()
    };
    let hex_text = text.trim();
    let bytes = hex::decode(hex_text).map_err(|_| {
        anyhow::anyhow!(
            "--node-key: expected the node's Ed25519 public key as 64 hex digits (or a file \
             holding them); `parley-node ledger export` prints it"
        )
    })?;
    <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| {
        anyhow::anyhow!(
            "--node-key: an Ed25519 public key is 32 bytes (64 hex digits), got {} bytes",
            bytes.len()
        )
    })
}

/// Runs `parleyctl audit`. Returns [`EXIT_OK`] if the ledger passed, [`EXIT_JOB_DID_NOT_SUCCEED`]
/// (2) if it failed; errors mean the audit could not be run.
pub async fn run(
    file: &Path,
    node_key: &str,
    head: HeadSource,
    connection: &ConnectionArgs,
    out: &mut (dyn Write + Send),
) -> anyhow::Result<i32> {
    let key = parse_node_key(node_key)?;
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("cannot read ledger export '{}'", file.display()))?;
    let export = match LedgerExport::from_json(&text) {
        Ok(e) => e,
        Err(e) => {
            writeln!(
                out,
                "ledger audit of '{}': FAILED\n  the file is not a valid ledger export: {e}",
                file.display()
            )?;
            return Ok(EXIT_JOB_DID_NOT_SUCCEED);
        }
    };
    let (heads, note) = match head {
        HeadSource::Given(h) => {
            let h: Head = h
                .parse()
                .map_err(|e| anyhow::anyhow!("--head: {e} (expected SEQ:HASH)"))?;
            let note = format!("expected head {h} (given with --head)");
            let given = WitnessedHead {
                head: h,
                recorded_at_ms: None,
            };
            (vec![given], note)
        }
        HeadSource::Offline => (
            Vec::new(),
            "head NOT checked (--offline): rows removed from the end of the ledger cannot be \
             detected"
                .to_string(),
        ),
        HeadSource::Coordinator => {
            let recorded = coordinator_heads(&export, &key, connection).await?;
            match recorded.iter().map(|w| &w.head).max_by_key(|h| h.seq) {
                Some(h) => {
                    let note = format!(
                        "expected head {h} (recorded by the coordinator; {} recorded heads checked)",
                        recorded.len()
                    );
                    (recorded, note)
                }
                None if export.rows.is_empty() => (
                    Vec::new(),
                    "the coordinator recorded no head and the export is empty".to_string(),
                ),
                None => {
                    writeln!(
                        out,
                        "ledger audit of node '{}', dataset '{}': FAILED\n  the export has {} \
                         rows but the coordinator recorded no ledger head for this node and \
                         dataset; the export cannot be tied to what the node reported",
                        export.node,
                        export.dataset,
                        export.rows.len()
                    )?;
                    return Ok(EXIT_JOB_DID_NOT_SUCCEED);
                }
            }
        }
    };
    let witness = Witness {
        heads,
        now_ms: Some(now_ms()),
    };
    let report = audit_witnessed(&export, &key, &witness);
    write!(out, "{report}")?;
    writeln!(out, "  {note}")?;
    Ok(if report.passed() {
        EXIT_OK
    } else {
        EXIT_JOB_DID_NOT_SUCCEED
    })
}

/// Every head the coordinator recorded for the export's node and dataset, with when it
/// recorded each, after checking the node's signature over every one.
async fn coordinator_heads(
    export: &LedgerExport,
    key: &[u8; 32],
    connection: &ConnectionArgs,
) -> anyhow::Result<Vec<WitnessedHead>> {
    let config = CtlConfig::resolve(connection)?;
    let url = config.coordinator.clone();
    let mut client = connect(&config).await.context(
        "the audit compares the export with the heads the coordinator recorded; pass \
         --offline to skip that check, or --head SEQ:HASH",
    )?;
    let heads = client
        .ledger_heads(LedgerHeadsRequest {
            node: export.node.clone(),
            dataset: export.dataset.clone(),
        })
        .await
        .map_err(|s| RpcError::new("read ledger heads", &url, s))?
        .into_inner()
        .heads;
    let verifier = ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, key);
    let mut out = Vec::new();
    for r in heads.into_iter().filter(|h| h.node == export.node) {
        let Some(head) = r.head.filter(|h| h.dataset == export.dataset) else {
            continue;
        };
        let hash = <[u8; 32]>::try_from(head.hash.as_slice())
            .map_err(|_| anyhow::anyhow!("the coordinator returned a malformed ledger head"))?;
        // What the signature covers depends on the row's format (a domain tag since format 2).
        let signed = parley_crypto::ledger::signed_message(head.row_format.max(1), &hash)
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "a ledger head the coordinator recorded has row format {}, which this \
                     parleyctl does not know; use a newer parleyctl",
                    head.row_format
                )
            })?;
        if verifier.verify(&signed, &head.signature).is_err() {
            bail!(
                "a ledger head the coordinator recorded for node '{}' is not signed by \
                 --node-key; check the key, or the coordinator's record is not the node's",
                export.node
            );
        }
        out.push(WitnessedHead {
            head: Head {
                seq: head.seq,
                hash,
            },
            recorded_at_ms: (r.recorded_at_ms > 0).then_some(r.recorded_at_ms),
        });
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn node_keys_parse() {
        let hex64 = "ab".repeat(32);
        assert_eq!(parse_node_key(&hex64).unwrap(), [0xab; 32]);
        assert!(parse_node_key("xyz").is_err());
        assert!(
            parse_node_key(&"ab".repeat(31))
                .unwrap_err()
                .to_string()
                .contains("31 bytes")
        );
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("k.hex");
        std::fs::write(&f, format!("{hex64}\n")).unwrap();
        assert_eq!(parse_node_key(f.to_str().unwrap()).unwrap(), [0xab; 32]);
    }
}
