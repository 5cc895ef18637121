//! The `Compute` contract.

use std::time::Duration;

use crate::id::{
    DeploymentId, EnvironmentName, IdempotencyToken, ImageId, OperationId, PoolId, ReleaseLabel,
    RoleName, ServerId,
};
use crate::labels::{keys, LabelSelector, Labels};
use crate::model::{Server, ServerStatus};
use crate::ports::{BootPayload, Compute, LaunchRequest};

/// What the suite needs from the back end under test.
pub struct ComputeFixture {
    /// An image that boots.
    pub image: ImageId,
    /// A flavor, if the back end needs one.
    pub flavor: Option<String>,
    /// Builds a boot payload in the back end's format for a server name.
    pub boot: Box<dyn Fn(&str) -> BootPayload + Send + Sync>,
    /// How long a server may take to become active.
    pub ready_within: Duration,
    /// How often to poll.
    pub poll: Duration,
}

impl std::fmt::Debug for ComputeFixture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ComputeFixture")
            .field("image", &self.image)
            .field("ready_within", &self.ready_within)
            .finish_non_exhaustive()
    }
}

struct Names {
    deployment: DeploymentId,
    pool: PoolId,
    op: OperationId,
}

fn request(c: &ComputeFixture, n: &Names, slot: u32) -> LaunchRequest {
    let token = IdempotencyToken::derive(&n.op, &n.pool, slot, 0);
    let name = format!("{}-{slot}", n.pool);
    LaunchRequest {
        boot: (c.boot)(&name),
        name,
        image: c.image.clone(),
        flavor: c.flavor.clone(),
        labels: Labels::for_server(
            &n.deployment,
            &EnvironmentName::from_valid("conformance".into()),
            &RoleName::from_valid("web".into()),
            &ReleaseLabel::from_valid("v1".into()),
            &n.pool,
            slot,
            &token,
        ),
        token,
    }
}

async fn wait_status(
    compute: &dyn Compute,
    f: &ComputeFixture,
    ids: &[ServerId],
    what: &str,
    want: fn(&ServerStatus) -> bool,
) -> Vec<Server> {
    super::eventually(what, f.ready_within, f.poll, || async {
        let seen = compute.describe(ids).await.ok()?;
        (seen.len() == ids.len() && seen.iter().all(|s| want(&s.status))).then_some(seen)
    })
    .await
}

/// Runs every check; the servers it launches are terminated at the end.
pub async fn run(compute: &dyn Compute, f: &ComputeFixture) {
    let caps = compute.capabilities();
    assert!(caps.max_launch_batch >= 1 && caps.max_describe_batch >= 1);
    let n = Names {
        deployment: DeploymentId::from_valid(super::unique("conf")),
        pool: PoolId::from_valid(super::unique("pool")),
        op: OperationId::from_valid(super::unique("op")),
    };
    let requests: Vec<LaunchRequest> = (0..2).map(|i| request(f, &n, i)).collect();
    let mut launched = Vec::new();
    for chunk in requests.chunks(caps.max_launch_batch) {
        for r in compute.launch(chunk).await {
            launched.push(r.unwrap_or_else(|e| panic!("launch failed: {e}")));
        }
    }
    assert_eq!(launched.len(), 2, "one result per request");
    let ids: Vec<ServerId> = launched.iter().map(|s| s.id.clone()).collect();
    assert_ne!(ids[0], ids[1]);

    let absent = ServerId::from_valid(super::unique("no-such-server"));
    let seen = compute
        .describe(std::slice::from_ref(&absent))
        .await
        .expect("describing an unknown id succeeds");
    assert!(seen.is_empty(), "an unknown id is absent, not an error");

    let active = wait_status(
        compute,
        f,
        &ids,
        "both servers are active",
        ServerStatus::is_active,
    )
    .await;
    for s in &active {
        assert!(!s.addresses.is_empty(), "{} has an address", s.id);
        assert!(s.launched_at.is_some(), "{} has a launch time", s.id);
        for k in [
            keys::DEPLOYMENT,
            keys::POOL,
            keys::RELEASE,
            keys::ROLE,
            keys::SLOT,
            keys::TOKEN,
        ] {
            assert!(s.labels.get(k).is_some(), "{} carries label {k}", s.id);
        }
        assert_eq!(s.labels.get(keys::DEPLOYMENT), Some(n.deployment.as_str()));
    }

    let by_deployment = LabelSelector::deployment(&n.deployment);
    let listed = super::eventually("list shows both", f.ready_within, f.poll, || async {
        let l = compute.list(&by_deployment).await.ok()?;
        (l.len() == 2).then_some(l)
    })
    .await;
    let mut listed_ids: Vec<ServerId> = listed.into_iter().map(|s| s.id).collect();
    listed_ids.sort();
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(listed_ids, sorted, "list by label finds exactly them");
    let one = by_deployment.clone().with(keys::SLOT, "1");
    let l = compute.list(&one).await.unwrap();
    assert_eq!(l.len(), 1, "list filters on every label");
    assert_eq!(l[0].labels.slot(), Some(1));

    if caps.idempotent_launch {
        let again = compute.launch(&[request(f, &n, 0)]).await;
        let again = again.into_iter().next().unwrap().unwrap();
        assert_eq!(again.id, ids[0], "a repeated token launches nothing new");
    }

    if caps.stop_start {
        compute.stop(&ids[0]).await.unwrap();
        wait_status(compute, f, &ids[..1], "the server is stopped", |s| {
            matches!(s, ServerStatus::Stopped)
        })
        .await;
        compute.start(&ids[0]).await.unwrap();
        wait_status(
            compute,
            f,
            &ids[..1],
            "the server runs again",
            ServerStatus::is_active,
        )
        .await;
    }

    for id in &ids {
        compute.terminate(id).await.unwrap();
    }
    super::eventually(
        "terminated servers are gone",
        f.ready_within,
        f.poll,
        || async {
            let seen = compute.describe(&ids).await.ok()?;
            seen.iter()
                .all(|s| s.status == ServerStatus::Deleted)
                .then_some(())
        },
    )
    .await;
    for id in &ids {
        compute
            .terminate(id)
            .await
            .expect("terminating a terminated server succeeds");
    }
    let left = compute.list(&by_deployment).await.unwrap();
    assert!(
        left.iter().all(|s| s.status == ServerStatus::Deleted),
        "list no longer shows them as running"
    );
}
