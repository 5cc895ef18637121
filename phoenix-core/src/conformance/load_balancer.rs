//! The `LoadBalancer` contract.
//!
//! [`run`] checks the basic cycle (attach, health, detach with a drain,
//! swap). [`reactivation`] and [`attribution`] check what the executor's
//! safety guards rely on when they read `members()`: a member left
//! draining, disabled or in maintenance is made active again by `attach`,
//! and every member is reported with the endpoint it really has and the
//! server really behind it, never a stale one and never silently left
//! out. [`staging`] checks the staging half of an atomic switch (or that
//! a balancer that cannot stage says so). [`run_all`] runs the four.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use async_trait::async_trait;

use crate::id::ServerId;
use crate::ports::{ErrorKind, LoadBalancer, Member, MemberHealth, MemberState, Target};

#[path = "load_balancer_staging.rs"]
mod staging;
#[path = "load_balancer_standby.rs"]
mod standby;
pub use staging::staging;
pub use standby::standby;

/// What the suite needs from the balancer under test.
#[derive(Debug, Clone)]
pub struct LbFixture {
    /// At least three healthy backends (real servers the balancer's checks
    /// reach), not yet members, for [`run`]; [`reactivation`] and
    /// [`attribution`] need only one (a second serves as a bystander).
    pub healthy: Vec<Target>,
    /// A backend that fails health checks, if the balancer checks health.
    pub unhealthy: Option<Target>,
    /// How long health changes may take to show.
    pub settle: Duration,
    /// Drain time to ask for.
    pub drain: Duration,
    /// How often to poll.
    pub poll: Duration,
}

fn find<'a>(members: &'a [Member], id: &ServerId) -> Option<&'a Member> {
    members.iter().find(|m| &m.server == id)
}

/// A drain long enough that a member detached with it is still present
/// (draining) while the checks look at it, on balancers that keep a
/// detached member until its drain period ends.
const LONG_DRAIN: Duration = Duration::from_secs(3600);

/// A way a member can be present yet take no new traffic, left by
/// something other than this adapter's `detach`: an operator, another
/// process, or a detach that stopped part-way (a rollback re-attaches a
/// pool whose detach failed half-way).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Sidelined {
    /// Draining: no new connections (HAProxy `state drain`, a Cloud Load
    /// Balancers node `DRAINING`, an Octavia member at weight 0, an
    /// embedded member detached while a connection is open).
    Draining,
    /// At weight 0 (HAProxy `set weight 0`).
    ZeroWeight,
    /// Disabled or in maintenance (HAProxy `state maint`, a node
    /// `DISABLED`, an Octavia member with `admin_state_up: false`).
    Disabled,
    /// Drained, then disabled: where a detach that stopped before removing
    /// the member leaves it (HAProxy `drain` then `maint`; an Octavia
    /// member at weight 0 and administratively down).
    DrainedThenDisabled,
}

impl Sidelined {
    /// The state `members` must report for a member left this way.
    pub fn reported(self) -> MemberState {
        match self {
            Self::Draining | Self::ZeroWeight => MemberState::Draining,
            Self::Disabled | Self::DrainedThenDisabled => MemberState::Disabled,
        }
    }
}

/// A member the fixture put on the balancer that the adapter cannot fully
/// read (no usable address, a name it cannot turn into a server id, …).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unparsable {
    /// Its true endpoint, where it has one: the adapter must then either
    /// report a member there (with a stand-in server id) or fail the read.
    /// `None`: the adapter cannot know where it sends traffic, so the read
    /// must fail. Not one of the fixture's endpoints.
    pub endpoint: Option<SocketAddr>,
    /// What is wrong with it, for failure messages.
    pub what: String,
}

/// Changes to the balancer made behind the adapter's back, for the checks
/// that need states the port itself does not produce. Every method has a
/// default that offers nothing.
#[async_trait]
pub trait OutOfBand: Send + Sync {
    /// The ways [`sideline`](Self::sideline) can leave a member.
    fn sidelines(&self) -> Vec<Sidelined> {
        Vec::new()
    }

    /// Leaves `member` (attached and active) present but `how`, by
    /// whatever means the balancer offers (its own API, an open connection
    /// and a long drain, …). Called only with a way `sidelines` lists.
    async fn sideline(&self, member: &Target, how: Sidelined) {
        panic!("the fixture offers no way to leave {member:?} {how:?}");
    }

    /// Puts a member the adapter cannot fully read on the balancer, if the
    /// balancer can hold one, and says what it is.
    async fn add_unparsable(&self) -> Option<Unparsable> {
        None
    }

    /// Removes what [`add_unparsable`](Self::add_unparsable) added.
    async fn remove_unparsable(&self) {}
}

/// What [`reactivation`] and [`attribution`] may use besides the balancer
/// under test; everything is optional.
#[derive(Clone, Default)]
pub struct LbExtras<'a> {
    /// A second adapter instance on the same balancer, built fresh, as
    /// another orchestrator process (or a restarted one) would have it.
    pub second: Option<&'a dyn LoadBalancer>,
    /// Changes behind the adapter's back.
    pub out_of_band: Option<&'a dyn OutOfBand>,
    /// Servers other than the fixture's first healthy one, each of which
    /// the balancer accepts at that one's endpoint (an address reused by
    /// a new server). The suite uses two and makes up the ids of those
    /// missing (`<first id>-reuse-<n>`), which suits balancers that do not
    /// check ids against a cloud.
    pub reuse: Vec<Target>,
    /// The balancer holds one member at a time (a floating IP): attaching
    /// another server replaces the holder.
    pub single: bool,
}

impl fmt::Debug for LbExtras<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LbExtras")
            .field("second", &self.second.is_some())
            .field("out_of_band", &self.out_of_band.is_some())
            .field("reuse", &self.reuse)
            .field("single", &self.single)
            .finish()
    }
}

impl LbExtras<'_> {
    fn reuse(&self, at: &Target, n: usize) -> Target {
        self.reuse.get(n).cloned().unwrap_or_else(|| Target {
            server: ServerId::new(format!("{}-reuse-{}", at.server, n + 1))
                .expect("a valid id with a valid suffix is valid"),
            endpoint: at.endpoint,
        })
    }
}

/// Runs every check against a balancer that starts with no members; it
/// ends with none.
pub async fn run(lb: &dyn LoadBalancer, f: &LbFixture) {
    assert!(
        f.healthy.len() >= 3,
        "the fixture needs three healthy backends"
    );
    let caps = lb.capabilities();
    assert!(caps.max_batch >= 1);
    assert!(lb.members().await.unwrap().is_empty(), "starts empty");
    let (a, b, c) = (&f.healthy[0], &f.healthy[1], &f.healthy[2]);

    lb.attach(&[a.clone(), b.clone()]).await.unwrap();
    lb.attach(std::slice::from_ref(a)).await.unwrap();
    let members = lb.members().await.unwrap();
    assert_eq!(
        members.len(),
        2,
        "attaching twice does not duplicate: {members:?}"
    );
    let ma = find(&members, &a.server).expect("a is a member");
    assert_eq!(ma.endpoint, a.endpoint);
    assert_eq!(ma.state, MemberState::Active);
    super::eventually("a and b are healthy", f.settle, f.poll, || async {
        let m = lb.members().await.ok()?;
        [&a.server, &b.server]
            .iter()
            .all(|id| find(&m, id).is_some_and(Member::is_serving_healthy))
            .then_some(())
    })
    .await;

    if let Some(bad) = &f.unhealthy {
        lb.attach(std::slice::from_ref(bad)).await.unwrap();
        super::eventually("the bad backend is unhealthy", f.settle, f.poll, || async {
            let m = lb.members().await.ok()?;
            (find(&m, &bad.server)?.health == MemberHealth::Unhealthy).then_some(())
        })
        .await;
        lb.detach(std::slice::from_ref(&bad.server), f.drain)
            .await
            .unwrap();
    }

    lb.detach(std::slice::from_ref(&a.server), f.drain)
        .await
        .unwrap();
    let m = lb.members().await.unwrap();
    if let Some(ma) = find(&m, &a.server) {
        assert_ne!(
            ma.state,
            MemberState::Active,
            "a detached member takes no new traffic"
        );
    }
    assert!(find(&m, &b.server).is_some_and(|m| m.state == MemberState::Active));
    super::eventually(
        "a is gone after draining",
        f.drain + f.settle,
        f.poll,
        || async {
            let m = lb.members().await.ok()?;
            find(&m, &a.server).is_none().then_some(())
        },
    )
    .await;
    lb.detach(std::slice::from_ref(&a.server), f.drain)
        .await
        .expect("detaching a non-member succeeds");

    lb.swap(
        std::slice::from_ref(c),
        std::slice::from_ref(&b.server),
        f.drain,
    )
    .await
    .unwrap();
    super::eventually(
        "the swap leaves only c",
        f.drain + f.settle,
        f.poll,
        || async {
            let m = lb.members().await.ok()?;
            let ok = m.len() == 1
                && find(&m, &c.server).is_some_and(|m| m.state == MemberState::Active)
                && f.unhealthy
                    .as_ref()
                    .is_none_or(|bad| find(&m, &bad.server).is_none());
            ok.then_some(())
        },
    )
    .await;
    lb.detach(std::slice::from_ref(&c.server), f.drain)
        .await
        .unwrap();
    super::eventually("empty again", f.drain + f.settle, f.poll, || async {
        lb.members().await.ok()?.is_empty().then_some(())
    })
    .await;
}

/// [`run`], [`staging`] and [`standby`] (unless the balancer holds a single member),
/// then [`reactivation`] and [`attribution`]. Like each of them, it needs
/// a balancer with no members and leaves it with none.
pub async fn run_all(lb: &dyn LoadBalancer, f: &LbFixture, x: &LbExtras<'_>) {
    if !x.single {
        run(lb, f).await;
        staging(lb, f).await;
        standby(lb, f).await;
    }
    reactivation(lb, f, x).await;
    attribution(lb, f, x).await;
}

/// `t.server` is a member exactly once, at `t.endpoint`, and active.
fn assert_active_once(members: &[Member], t: &Target, what: &str) {
    let found: Vec<&Member> = members.iter().filter(|m| m.server == t.server).collect();
    assert_eq!(
        found.len(),
        1,
        "{what}: {} is a member exactly once: {members:?}",
        t.server
    );
    assert_eq!(
        found[0].endpoint, t.endpoint,
        "{what}: {} is reported at the endpoint it was attached with: {members:?}",
        t.server
    );
    assert_eq!(
        found[0].state,
        MemberState::Active,
        "{what}: {} is active again: {members:?}",
        t.server
    );
}

/// The members are exactly `attached`: each once, at the endpoint it was
/// attached with, and nothing else.
fn assert_reports(members: &[Member], attached: &[Target], what: &str) {
    for t in attached {
        let found: Vec<&Member> = members.iter().filter(|m| m.server == t.server).collect();
        assert_eq!(
            found.len(),
            1,
            "{what}: {} is reported exactly once: {members:?}",
            t.server
        );
        assert_eq!(
            found[0].endpoint, t.endpoint,
            "{what}: {} is reported at the endpoint it was attached with: {members:?}",
            t.server
        );
    }
    assert_eq!(
        members.len(),
        attached.len(),
        "{what}: no member other than those attached: {members:?}"
    );
}

/// What another adapter instance reports for the members the first one
/// attached: the same endpoints, each once, and no attached server at an
/// endpoint it was not attached with. It may not know the servers (a
/// stand-in id), but it never names the wrong one.
fn assert_same_endpoints(members: &[Member], attached: &[Target], what: &str) {
    let mut got: Vec<SocketAddr> = members.iter().map(|m| m.endpoint).collect();
    let mut want: Vec<SocketAddr> = attached.iter().map(|t| t.endpoint).collect();
    got.sort_unstable();
    want.sort_unstable();
    assert_eq!(
        got, want,
        "{what} reports the endpoints of the members attached: {members:?}"
    );
    for m in members {
        if let Some(t) = attached.iter().find(|t| t.server == m.server) {
            assert_eq!(
                m.endpoint, t.endpoint,
                "{what} reports {} at an endpoint it was not attached with: {members:?}",
                t.server
            );
        }
    }
}

async fn wait_serving(lb: &dyn LoadBalancer, f: &LbFixture, targets: &[&Target], what: &str) {
    super::eventually(what, f.settle, f.poll, || async {
        let m = lb.members().await.ok()?;
        targets
            .iter()
            .all(|t| find(&m, &t.server).is_some_and(Member::is_serving_healthy))
            .then_some(())
    })
    .await;
}

async fn wait_gone(lb: &dyn LoadBalancer, f: &LbFixture, id: &ServerId, what: &str) {
    super::eventually(what, f.drain + f.settle, f.poll, || async {
        let m = lb.members().await.ok()?;
        find(&m, id).is_none().then_some(())
    })
    .await;
}

async fn empty_again(lb: &dyn LoadBalancer, f: &LbFixture) {
    super::eventually("empty again", f.drain + f.settle, f.poll, || async {
        lb.members().await.ok()?.is_empty().then_some(())
    })
    .await;
}

/// After `a` was attached again: it is active exactly once at its
/// endpoint, the bystander is untouched, nothing was duplicated, and `a`
/// passes its checks again.
async fn brought_back(
    lb: &dyn LoadBalancer,
    f: &LbFixture,
    a: &Target,
    bystander: Option<&Target>,
    what: &str,
) {
    let m = lb.members().await.unwrap();
    assert_active_once(&m, a, what);
    if let Some(b) = bystander {
        assert_active_once(&m, b, &format!("{what} (the bystander)"));
    }
    assert_eq!(
        m.len(),
        1 + usize::from(bystander.is_some()),
        "{what}: no duplicate or stray member: {m:?}"
    );
    wait_serving(lb, f, &[a], &format!("{what}: it is healthy again")).await;
}

/// Re-activation: `attach` makes a member that is present but draining,
/// at weight 0, disabled or in maintenance active again — the same member,
/// not a second one — and it is healthy again once its checks pass;
/// attaching an active member changes nothing. A rollback relies on it: it
/// re-attaches a pool whose detach stopped part-way.
///
/// Uses the fixture's first healthy backend (and its second as a
/// bystander unless the balancer holds a single member); with
/// [`LbExtras::out_of_band`], every way it can sideline a member; with
/// [`LbExtras::second`], attaches through the second instance too, as
/// another orchestrator process would. Starts with no members and ends
/// with none.
pub async fn reactivation(lb: &dyn LoadBalancer, f: &LbFixture, x: &LbExtras<'_>) {
    let a = f
        .healthy
        .first()
        .expect("the fixture has a healthy backend");
    let bystander = if x.single { None } else { f.healthy.get(1) };
    assert!(lb.members().await.unwrap().is_empty(), "starts empty");
    let mut first = vec![a.clone()];
    first.extend(bystander.cloned());
    lb.attach(&first).await.unwrap();
    let serving: Vec<&Target> = first.iter().collect();
    wait_serving(lb, f, &serving, "the members are healthy").await;

    let attachers: Vec<(&dyn LoadBalancer, &str)> = std::iter::once((lb, "the same adapter"))
        .chain(x.second.map(|s| (s, "a second adapter instance")))
        .collect();
    for (who, name) in &attachers {
        who.attach(std::slice::from_ref(a)).await.unwrap();
        let m = lb.members().await.unwrap();
        let what = format!("an active member attached again by {name}");
        assert_active_once(&m, a, &what);
        assert_eq!(m.len(), first.len(), "{what}: no duplicate: {m:?}");
        assert!(
            find(&m, &a.server).is_some_and(Member::is_serving_healthy),
            "{what}: its health is not reset: {m:?}"
        );
    }

    let reactivates = lb.capabilities().reactivates_draining;
    // A balancer that cannot re-activate a draining member is tried with
    // the fixture's drain, so that the drain ends within the test.
    let drain = if reactivates { LONG_DRAIN } else { f.drain };
    lb.detach(std::slice::from_ref(&a.server), drain)
        .await
        .unwrap();
    let m = lb.members().await.unwrap();
    // A balancer may remove an idle member at once, whatever the drain.
    if let Some(ma) = find(&m, &a.server) {
        assert_ne!(
            ma.state,
            MemberState::Active,
            "a member detached with a drain takes no new traffic: {m:?}"
        );
        assert_eq!(ma.endpoint, a.endpoint, "{m:?}");
    }
    if reactivates {
        lb.attach(std::slice::from_ref(a)).await.unwrap();
        brought_back(lb, f, a, bystander, "attached again during a long drain").await;
    } else {
        if let Err(e) = lb.attach(std::slice::from_ref(a)).await {
            assert!(
                e.is_retryable(),
                "a balancer that cannot re-activate a draining member fails temporarily: {e}"
            );
        }
        super::eventually(
            "attached again once the drain ended",
            f.drain + f.settle,
            f.poll,
            || async { lb.attach(std::slice::from_ref(a)).await.ok() },
        )
        .await;
        brought_back(lb, f, a, bystander, "attached again after its drain").await;
    }

    if let Some(oob) = x.out_of_band {
        for how in oob.sidelines() {
            for (who, name) in &attachers {
                oob.sideline(a, how).await;
                let m = lb.members().await.unwrap();
                let ma = find(&m, &a.server).unwrap_or_else(|| {
                    panic!("a member left {how:?} is still a member, and reported: {m:?}")
                });
                // A balancer that keeps standby members may report a
                // drained member with nothing open as one: it takes no
                // traffic at all.
                let standby = how == Sidelined::Draining
                    && lb.capabilities().keeps_standby
                    && ma.state == MemberState::Disabled
                    && ma.connections == Some(0);
                assert!(
                    ma.state == how.reported() || standby,
                    "a member left {how:?} is reported as such: {m:?}"
                );
                assert_eq!(ma.endpoint, a.endpoint, "{m:?}");
                who.attach(std::slice::from_ref(a)).await.unwrap();
                brought_back(
                    lb,
                    f,
                    a,
                    bystander,
                    &format!("left {how:?}, then attached again by {name}"),
                )
                .await;
            }
        }
    }

    let ids: Vec<ServerId> = first.iter().map(|t| t.server.clone()).collect();
    lb.detach(&ids, f.drain).await.unwrap();
    empty_again(lb, f).await;
}

/// Attribution: every member is reported with the endpoint it was
/// attached with, and a second adapter instance on the same balancer
/// reports the same endpoints; once a server has left an endpoint and
/// another server is attached there (an address reused), the balancer
/// reports the new server there and never the old one — whichever
/// instance attached it; and a member the adapter cannot read is never
/// silently left out: the read fails with
/// [`ErrorKind::BadResponse`], or reports the member at its true endpoint
/// under a stand-in id.
///
/// Uses the fixture's healthy backends (only their endpoints need to
/// exist for the balancer) and [`LbExtras`]. Starts with no members and
/// ends with none.
pub async fn attribution(lb: &dyn LoadBalancer, f: &LbFixture, x: &LbExtras<'_>) {
    let a = f
        .healthy
        .first()
        .expect("the fixture has a healthy backend");
    assert!(lb.members().await.unwrap().is_empty(), "starts empty");
    let others: Vec<(&dyn LoadBalancer, &str)> = x
        .second
        .map(|s| (s, "a second adapter instance"))
        .into_iter()
        .collect();

    let held: Vec<Target> = if x.single {
        // Each attach moves the balancer to the new holder; `a` ends up
        // holding it.
        for t in f.healthy.iter().rev() {
            lb.attach(std::slice::from_ref(t)).await.unwrap();
            let m = lb.members().await.unwrap();
            assert_reports(&m, std::slice::from_ref(t), "the single holder");
        }
        vec![a.clone()]
    } else {
        for chunk in f.healthy.chunks(lb.capabilities().max_batch.max(1)) {
            lb.attach(chunk).await.unwrap();
        }
        f.healthy.clone()
    };
    let m = lb.members().await.unwrap();
    assert_reports(&m, &held, "the members attached");
    for (other, name) in &others {
        let m = other.members().await.unwrap();
        assert_same_endpoints(&m, &held, name);
    }
    if held.len() > 1 {
        let rest: Vec<ServerId> = held[1..].iter().map(|t| t.server.clone()).collect();
        lb.detach(&rest, f.drain).await.unwrap();
        for id in &rest {
            wait_gone(lb, f, id, "the others have left").await;
        }
    }

    // An address reused: `prev` leaves `a`'s endpoint, another server is
    // attached there, first by this instance, then by the second one.
    let attachers: Vec<(&dyn LoadBalancer, &str)> = std::iter::once((lb, "the same adapter"))
        .chain(others.iter().copied())
        .collect();
    let mut prev = a.clone();
    // Who attached `prev`: the one instance sure to know it, so the one
    // that detaches it (another may only know a stand-in id).
    let mut owner: &dyn LoadBalancer = lb;
    for (n, (attacher, name)) in attachers.iter().enumerate() {
        let next = x.reuse(a, n);
        assert_eq!(next.endpoint, a.endpoint, "a reused target is at {a:?}");
        assert_ne!(
            next.server, prev.server,
            "a reused target is another server"
        );
        owner
            .detach(std::slice::from_ref(&prev.server), f.drain)
            .await
            .unwrap();
        wait_gone(owner, f, &prev.server, "the previous server has left").await;
        wait_gone(lb, f, &prev.server, "the previous server has left").await;
        for (other, _) in &others {
            wait_gone(*other, f, &prev.server, "the previous server has left").await;
        }
        attacher.attach(std::slice::from_ref(&next)).await.unwrap();
        for (r, (reader, reader_name)) in attachers.iter().enumerate() {
            let m = reader.members().await.unwrap();
            let what = format!(
                "{reader_name}, after {} left {} and {name} attached {} there",
                prev.server, a.endpoint, next.server
            );
            assert!(
                find(&m, &prev.server).is_none(),
                "{what}: the server that left is not reported: {m:?}"
            );
            let at: Vec<&Member> = m.iter().filter(|m| m.endpoint == a.endpoint).collect();
            assert_eq!(at.len(), 1, "{what}: one member there: {m:?}");
            assert_eq!(at[0].state, MemberState::Active, "{what}: {m:?}");
            if r == n {
                assert_eq!(
                    at[0].server, next.server,
                    "{what}: the instance that attached it knows it: {m:?}"
                );
            }
        }
        prev = next;
        owner = *attacher;
    }

    if let Some(oob) = x.out_of_band {
        if let Some(u) = oob.add_unparsable().await {
            for (reader, name) in &attachers {
                let what = format!("{name}, with {} on the balancer", u.what);
                match reader.members().await {
                    Err(e) => assert!(
                        matches!(e.kind, ErrorKind::BadResponse(_)),
                        "{what}: the read fails as a bad response: {e}"
                    ),
                    Ok(m) => {
                        let at = u.endpoint.unwrap_or_else(|| {
                            panic!("{what}: the read must fail, as the adapter cannot tell where it sends traffic: {m:?}")
                        });
                        assert!(
                            m.iter().any(|m| m.endpoint == at),
                            "{what}: it is reported at {at}, not silently left out: {m:?}"
                        );
                        assert!(
                            m.iter().any(|m| m.endpoint == prev.endpoint),
                            "{what}: the others are still reported: {m:?}"
                        );
                    }
                }
            }
            oob.remove_unparsable().await;
            let m = lb.members().await.unwrap();
            assert_eq!(
                m.len(),
                1,
                "only the reused endpoint's member is left: {m:?}"
            );
        }
    }

    owner
        .detach(std::slice::from_ref(&prev.server), f.drain)
        .await
        .unwrap();
    // The instance that detached it finishes the drain.
    empty_again(owner, f).await;
    empty_again(lb, f).await;
}
