//! The Cloud Load Balancers v1.0 calls the balancer makes, over the
//! shared OpenStack session (catalog type `rax:load-balancer`).

use phoenix_core::ports::{ErrorKind, PortError};
use phoenix_providers::openstack::{ApiRequest, Retry, Session};
use serde::Deserialize;
use serde_json::{json, Value};

pub(super) const SERVICE: &str = "rax:load-balancer";

/// A node of a Cloud Load Balancer.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Node {
    /// Its id.
    pub id: u64,
    /// The backend's address.
    pub address: String,
    /// The backend's port.
    pub port: u16,
    /// `ENABLED`, `DRAINING` or `DISABLED`.
    #[serde(default)]
    pub condition: String,
    /// `ONLINE` or `OFFLINE`, as the health monitor sees it.
    #[serde(default)]
    pub status: String,
}

#[derive(Deserialize)]
struct Nodes {
    #[serde(default)]
    nodes: Vec<Node>,
}

#[derive(Deserialize)]
struct Lb {
    #[serde(rename = "loadBalancer")]
    load_balancer: LbBody,
}

#[derive(Deserialize)]
struct LbBody {
    id: u64,
    #[serde(default)]
    status: String,
}

/// The balancer's status, normalised (`PENDING-UPDATE` as Mimic writes
/// it becomes `PENDING_UPDATE`).
pub(super) async fn status(session: &Session, lb: u64) -> Result<String, PortError> {
    let body: Lb = session
        .send(
            ApiRequest::get(
                SERVICE,
                "/loadbalancers/{id}",
                format!("/loadbalancers/{lb}"),
            )
            .operation(format!("cloud load balancers: reading balancer {lb}")),
        )
        .await?
        .json()?;
    Ok(body
        .load_balancer
        .status
        .to_ascii_uppercase()
        .replace('-', "_"))
}

pub(super) async fn nodes(session: &Session, lb: u64) -> Result<Vec<Node>, PortError> {
    let body: Nodes = session
        .send(
            ApiRequest::get(
                SERVICE,
                "/loadbalancers/{id}/nodes",
                format!("/loadbalancers/{lb}/nodes"),
            )
            .operation(format!("cloud load balancers: listing nodes of {lb}")),
        )
        .await?
        .json()?;
    Ok(body.nodes)
}

/// Adds nodes; returns the new nodes the answer names (the API's answer
/// lists them with their ids; an answer without them is not an error, as
/// the nodes were added).
pub(super) async fn add(
    session: &Session,
    lb: u64,
    nodes: &[(String, u16)],
) -> Result<Vec<Node>, PortError> {
    let body = json!({"nodes": nodes.iter().map(|(address, port)| json!({
        "address": address, "port": port, "condition": "ENABLED", "type": "PRIMARY",
    })).collect::<Vec<_>>()});
    session
        .send(
            ApiRequest::post(
                SERVICE,
                "/loadbalancers/{id}/nodes",
                format!("/loadbalancers/{lb}/nodes"),
                body,
            )
            .retry(Retry::Never)
            .operation(format!(
                "cloud load balancers: adding {} node(s) to {lb}",
                nodes.len()
            )),
        )
        .await
        .map(|answer| answer.json::<Nodes>().map(|b| b.nodes).unwrap_or_default())
}

pub(super) async fn set_condition(
    session: &Session,
    lb: u64,
    node: u64,
    condition: &str,
) -> Result<(), PortError> {
    session
        .send(
            ApiRequest::put(
                SERVICE,
                "/loadbalancers/{id}/nodes/{node}",
                format!("/loadbalancers/{lb}/nodes/{node}"),
                json!({"node": {"condition": condition}}),
            )
            .retry(Retry::Never)
            .operation(format!(
                "cloud load balancers: setting node {node} of {lb} {condition}"
            )),
        )
        .await
        .map(|_| ())
}

/// Removes nodes (at most ten a call, the API's limit).
pub(super) async fn remove(session: &Session, lb: u64, ids: &[u64]) -> Result<(), PortError> {
    let mut req = ApiRequest::delete(
        SERVICE,
        "/loadbalancers/{id}/nodes?id=…",
        format!("/loadbalancers/{lb}/nodes"),
    )
    .retry(Retry::Never)
    .operation(format!(
        "cloud load balancers: removing {} node(s) of {lb}",
        ids.len()
    ));
    for id in ids {
        req = req.query("id", id.to_string());
    }
    session.send(req).await.map(|_| ())
}

/// Creates a balancer (for tests, examples and tools; Phoenix itself only
/// manages nodes) and returns its id.
pub(super) async fn create(
    session: &Session,
    name: &str,
    protocol: &str,
    port: u16,
    metadata: &[(&str, &str)],
) -> Result<u64, PortError> {
    let op = format!("cloud load balancers: creating balancer {name}");
    let mut lb = json!({
        "name": name, "protocol": protocol, "port": port,
        "virtualIps": [{"type": "PUBLIC"}],
    });
    if !metadata.is_empty() {
        lb["metadata"] = Value::Array(
            metadata
                .iter()
                .map(|(k, v)| json!({"key": k, "value": v}))
                .collect(),
        );
    }
    let body: Lb = session
        .send(
            ApiRequest::post(
                SERVICE,
                "/loadbalancers",
                "/loadbalancers".into(),
                json!({"loadBalancer": lb}),
            )
            .operation(&op),
        )
        .await?
        .json()?;
    if body.load_balancer.id == 0 {
        return Err(PortError::new(
            op,
            ErrorKind::BadResponse("the new balancer has no id".into()),
        ));
    }
    Ok(body.load_balancer.id)
}

pub(super) async fn delete(session: &Session, lb: u64) -> Result<(), PortError> {
    match session
        .send(
            ApiRequest::delete(
                SERVICE,
                "/loadbalancers/{id}",
                format!("/loadbalancers/{lb}"),
            )
            .operation(format!("cloud load balancers: deleting balancer {lb}")),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if e.is_not_found() => Ok(()),
        Err(e) => Err(e),
    }
}
