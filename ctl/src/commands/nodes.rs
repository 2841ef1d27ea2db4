//! `parleyctl nodes [--keys]`: connected nodes with their datasets, one row per dataset; with
//! `--keys`, each node's Ed25519 ledger key after checking its binding against the federation
//! CA.

use std::io::Write;

use parley_proto::{ListNodesRequest, NodeInfo};

use super::Session;
use crate::EXIT_OK;
use crate::error::{CtlError, RpcError};
use crate::render::{format_ms, group, write_table};

/// Runs `nodes`.
pub async fn run(
    connection: &crate::ConnectionArgs,
    keys: bool,
    out: &mut (dyn Write + Send),
) -> anyhow::Result<i32> {
    let mut session = Session::open(connection).await?;
    let mut nodes = session
        .client
        .list_nodes(ListNodesRequest {})
        .await
        .map_err(|s| RpcError::new("list nodes", session.url(), s))?
        .into_inner()
        .nodes;
    nodes.sort_by(|a, b| a.name.cmp(&b.name));
    write_nodes_table(&nodes, out)?;
    if keys {
        let config = &session.config;
        let tls = parley_net::TlsMaterial::load(&config.ca_cert, &config.cert, &config.key)
            .map_err(CtlError::from)?;
        writeln!(out)?;
        for n in &nodes {
            let verified = n.keys.as_ref().map(|b| {
                parley_net::binding::verify_key_binding(
                    tls.ca_der(),
                    b,
                    std::time::SystemTime::now(),
                )
            });
            writeln!(out, "{}", key_line(&n.name, verified))?;
        }
    }
    Ok(EXIT_OK)
}

/// The `--keys` line of node `listed` (the name the coordinator lists it under): its ledger
/// key only when the binding verified against the CA *and* names that same node, so that a
/// coordinator cannot show one node's genuine binding under another node's name.
fn key_line(
    listed: &str,
    verified: Option<Result<parley_net::binding::VerifiedKeys, parley_net::NetError>>,
) -> String {
    match verified {
        Some(Ok(k)) if k.node_name != listed => format!(
            "{listed}  key binding REJECTED: it is the binding of node '{}', not of '{listed}'",
            k.node_name
        ),
        Some(Ok(k)) => format!(
            "{listed}  ledger key {}  (binding verified against the federation CA)",
            hex::encode(k.ed25519_public)
        ),
        Some(Err(e)) => format!("{listed}  key binding REJECTED: {e}"),
        None => format!("{listed}  no key binding"),
    }
}

/// Prints the `nodes` table: one row per dataset.
fn write_nodes_table(nodes: &[NodeInfo], out: &mut (dyn Write + Send)) -> std::io::Result<()> {
    if nodes.is_empty() {
        return writeln!(out, "no nodes connected");
    }
    let mut rows = Vec::new();
    for node in nodes {
        let since = format_ms(node.connected_at_ms);
        if node.datasets.is_empty() {
            rows.push(vec![
                node.name.clone(),
                since,
                "-".into(),
                "-".into(),
                "-".into(),
            ]);
            continue;
        }
        for (i, ds) in node.datasets.iter().enumerate() {
            let columns = ds
                .columns
                .iter()
                .map(|c| format!("{}:{}", c.name, c.kind))
                .collect::<Vec<_>>()
                .join(", ");
            let (name, since) = if i == 0 {
                (node.name.clone(), since.clone())
            } else {
                (String::new(), String::new())
            };
            rows.push(vec![
                name,
                since,
                ds.name.clone(),
                group(ds.row_count),
                columns,
            ]);
        }
    }
    write_table(
        out,
        &["NODE", "CONNECTED (UTC)", "DATASET", "ROWS", "COLUMNS"],
        &rows,
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn nodes_table_renders() {
        let nodes = vec![NodeInfo {
            name: "brand".into(),
            datasets: vec![parley_proto::DatasetInfo {
                name: "crm".into(),
                columns: vec![parley_proto::ColumnInfo {
                    name: "email".into(),
                    kind: "email".into(),
                }],
                row_count: 12345,
            }],
            connected_at_ms: 0,
            ..Default::default()
        }];
        let mut out = Vec::new();
        write_nodes_table(&nodes, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("1970-01-01 00:00:00"), "{text}");
        assert!(text.contains("12,345"), "{text}");
        assert!(text.contains("email:email"), "{text}");
    }

    #[test]
    fn a_key_binding_of_another_node_is_rejected() {
        let keys = |node_name: &str| parley_net::binding::VerifiedKeys {
            node_name: node_name.into(),
            x25519_public: [1; 32],
            ed25519_public: [2; 32],
        };
        let key_hex = hex::encode([2u8; 32]);
        let line = key_line("brand", Some(Ok(keys("publisher"))));
        assert!(line.contains("REJECTED"), "{line}");
        assert!(line.contains("'publisher'"), "{line}");
        assert!(!line.contains(&key_hex), "{line}");
        let line = key_line("brand", Some(Ok(keys("brand"))));
        assert!(line.contains(&key_hex), "{line}");
        assert!(!line.contains("REJECTED"), "{line}");
    }
}
