//! A balancer read that fails, or that comes back empty while servers are
//! recorded behind it, stops the step: nothing is stopped, terminated or
//! detached on a read Phoenix cannot trust. The balancer here is a mockall
//! mock (feature `mock`) in front of the simulated one.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use common::r;
use phoenix_core::events::Invariant;
use phoenix_core::executor::{ExecError, FailureCause, PortFailure};
use phoenix_core::plan::Step;
use phoenix_core::ports::{LbCapabilities, LoadBalancer, MockLoadBalancer, PortError};
use phoenix_core::sim::{SimCloud, SimConfig};

fn failing_or_empty(fail: bool) -> MockLoadBalancer {
    let mut lb = MockLoadBalancer::new();
    lb.expect_capabilities().returning(|| LbCapabilities {
        atomic_swap: false,
        drain: true,
        reports_connections: true,
        max_batch: 100,
        reactivates_draining: true,
        stages: false,
        keeps_standby: false,
        check_interval: None,
    });
    lb.expect_members().returning(move || {
        if fail {
            Err(PortError::temporary("mock balancer", "HTTP 503"))
        } else {
            Ok(Vec::new())
        }
    });
    lb.expect_detach().never();
    lb.expect_attach().never();
    lb
}

#[tokio::test(start_paused = true)]
async fn untrusted_reads_stop_terminations_and_detaches() {
    for fail in [true, false] {
        let cloud = SimCloud::new(SimConfig::default());
        let phoenix = cloud.phoenix().build().unwrap();
        let (shop, web) = cloud.demo_deployment(&phoenix, 2).await.unwrap();
        let plan = phoenix.plan_deploy(&shop, &web, &r("v1")).await.unwrap();
        phoenix.apply(plan).await.unwrap();
        let snap = phoenix.snapshot(&shop).await.unwrap();
        let live = snap.live_pool(&web).unwrap().id.clone();

        // The same deployment, seen through a balancer that cannot be read.
        let blind = cloud
            .phoenix()
            .balancer(Arc::new(failing_or_empty(fail)) as Arc<dyn LoadBalancer>)
            .holder("blind")
            .build()
            .unwrap();
        for step in [
            Step::Terminate {
                pool: live.clone(),
                slots: vec![0],
            },
            Step::Stop {
                pool: live.clone(),
                slots: vec![1],
            },
            Step::Detach {
                pool: live.clone(),
                slots: vec![0],
                replacements: vec![],
            },
        ] {
            let mut plan = blind
                .plan_provision(&shop, &web, &r("v1"), Some(1))
                .await
                .unwrap();
            plan.steps = vec![step.clone()];
            plan.on_failure = phoenix_core::policy::FailurePolicy::Halt;
            let before = cloud.stats();
            let err = blind.apply(plan).await.unwrap_err();
            let text = err.report().unwrap().error.clone().unwrap();
            // The cause is typed: a caller tells a transient port failure
            // (try again) from a guard's refusal without reading the text.
            let Err(ExecError::Failed { cause, .. }) = Err::<(), _>(err) else {
                panic!("{step}: expected a failed operation");
            };
            if fail {
                assert!(text.contains("HTTP 503"), "{step}: {text}");
                assert!(
                    matches!(
                        &cause,
                        FailureCause::Port {
                            kind: PortFailure::Temporary,
                            ..
                        }
                    ) && cause.is_transient(),
                    "{step}: {cause:?}"
                );
            } else {
                assert_eq!(
                    cause,
                    FailureCause::Guard {
                        invariant: Invariant::NoServingTermination
                    },
                    "{step}"
                );
                assert!(
                    text.contains(&Invariant::NoServingTermination.to_string())
                        && text.contains("empty read"),
                    "{step}: {text}"
                );
            }
            let after = cloud.stats();
            assert_eq!(before.terminate_calls, after.terminate_calls, "{step}");
            assert_eq!(before.stop_calls, after.stop_calls, "{step}");
        }
        assert_eq!(cloud.members().len(), 2, "both servers still serve");
        assert!(cloud.violations().is_empty());
    }
}
