//! The Octavia v2 calls the balancer makes (catalog type
//! `load-balancer`, paths under `/v2/lbaas`).

use phoenix_core::ports::{ErrorKind, PortError};
use phoenix_providers::openstack::pagination::{self, Page};
use phoenix_providers::openstack::{ApiRequest, Retry, Session};
use serde_json::{json, Map, Value};

const SERVICE: &str = "load-balancer";
const VERSION: &str = "v2";

/// Fields Octavia sets itself: left out of a batch update.
const READ_ONLY: &[&str] = &[
    "id",
    "project_id",
    "tenant_id",
    "created_at",
    "updated_at",
    "provisioning_status",
    "operating_status",
];

/// A member as Octavia returns it.
pub(super) type RawMember = Map<String, Value>;

/// Every member of the pool. Octavia answers at most its
/// `pagination_max_limit` (1000 by default) members per request, so this
/// follows the `next` links: the batch update replaces the whole set, and
/// a member missed here would be deleted by the next change.
pub(super) async fn members(session: &Session, pool: &str) -> Result<Vec<RawMember>, PortError> {
    let op = format!("octavia: listing members of pool {pool}");
    let op = op.as_str();
    let listing = pagination::by_marker(op, |marker| async move {
        let mut req = ApiRequest::get(
            SERVICE,
            "/lbaas/pools/{pool_id}/members",
            format!("/lbaas/pools/{pool}/members"),
        )
        .version(VERSION)
        .operation(op);
        if let Some(m) = marker {
            req = req.query("marker", m);
        }
        let body: Value = session.send(req).await?.json()?;
        let raw = body
            .get("members")
            .and_then(Value::as_array)
            .ok_or_else(|| {
                PortError::new(
                    op,
                    ErrorKind::BadResponse("the answer has no `members` list".into()),
                )
            })?;
        let items = raw
            .iter()
            .map(|m| {
                m.as_object().cloned().ok_or_else(|| {
                    PortError::new(
                        op,
                        ErrorKind::BadResponse("a member is not a JSON object".into()),
                    )
                })
            })
            .collect::<Result<Vec<RawMember>, _>>()?;
        Ok(Page {
            items,
            last_id: pagination::last_id(raw),
            more: pagination::has_next_link(&body, "members_links"),
        })
    })
    .await?;
    Ok(listing.items)
}

/// A member as a batch update names it: what Octavia returned, less
/// what Octavia sets itself.
pub(super) fn desired(member: &RawMember) -> RawMember {
    member
        .iter()
        .filter(|(k, v)| !READ_ONLY.contains(&k.as_str()) && !v.is_null())
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// Sets the pool's whole member set in one call (the batch member
/// update): members matched by address and port are updated, the others
/// created, and members not named are deleted.
pub(super) async fn replace(
    session: &Session,
    pool: &str,
    members: Vec<RawMember>,
) -> Result<(), PortError> {
    let n = members.len();
    session
        .send(
            ApiRequest::put(
                SERVICE,
                "/lbaas/pools/{pool_id}/members",
                format!("/lbaas/pools/{pool}/members"),
                json!({ "members": members }),
            )
            .version(VERSION)
            .retry(Retry::Never)
            .operation(format!("octavia: setting the {n} member(s) of pool {pool}")),
        )
        .await
        .map(|_| ())
}

/// The pool's provisioning status (`ACTIVE`, `PENDING_UPDATE`, `ERROR`, …).
pub(super) async fn provisioning_status(
    session: &Session,
    pool: &str,
) -> Result<String, PortError> {
    let op = format!("octavia: reading pool {pool}");
    let body: Value = session
        .send(
            ApiRequest::get(
                SERVICE,
                "/lbaas/pools/{pool_id}",
                format!("/lbaas/pools/{pool}"),
            )
            .version(VERSION)
            .operation(&op),
        )
        .await?
        .json()?;
    body.get("pool")
        .and_then(|p| p.get("provisioning_status"))
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| {
            PortError::new(
                op,
                ErrorKind::BadResponse("the pool has no provisioning_status".into()),
            )
        })
}
