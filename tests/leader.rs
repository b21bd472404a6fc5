//! Leader election against kube's tower-test mock API server and the fake API server.

mod support;

use support::mock::{body_json, no_more_requests, not_found, respond};

use std::time::Duration;

use http::{Request, Response, StatusCode};
use kube::Client;
use kube::client::Body;
use serde_json::json;

#[tokio::test]
async fn leader_election_creates_the_lease_when_absent_and_waits_for_a_live_holder() {
    use smtp_relay_operator::leader::{Elector, LeaseConfig};
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, "default");
    let elector = Elector::new(
        client,
        LeaseConfig {
            namespace: "smtp-relay-system".into(),
            name: "smtp-relay-operator".into(),
            identity: "pod-a".into(),
            duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            renew_every: Duration::from_secs(4),
        },
    );
    let path = "/apis/coordination.k8s.io/v1/namespaces/smtp-relay-system/leases";
    let task = tokio::spawn(async move {
        let first = elector.try_once().await.expect("first attempt");
        let second = elector.try_once().await.expect("second attempt");
        (first, second)
    });
    let (req, send) = handle.next_request().await.expect("get");
    assert_eq!(
        (req.method().clone(), req.uri().path()),
        (http::Method::GET, &*format!("{path}/smtp-relay-operator"))
    );
    respond(send, StatusCode::NOT_FOUND, not_found("leases"));
    let (req, send) = handle.next_request().await.expect("create");
    assert_eq!(
        (req.method().clone(), req.uri().path()),
        (http::Method::POST, path)
    );
    let lease = body_json(req).await;
    assert_eq!(lease["spec"]["holderIdentity"], "pod-a");
    assert_eq!(lease["spec"]["leaseDurationSeconds"], 15);
    respond(send, StatusCode::CREATED, lease);
    // Someone else renewed it a moment ago: wait, write nothing.
    let (_req, send) = handle.next_request().await.expect("get");
    let now = jiff::Timestamp::now().to_string();
    respond(
        send,
        StatusCode::OK,
        json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
               "metadata": {"name": "smtp-relay-operator", "namespace": "smtp-relay-system", "resourceVersion": "9"},
               "spec": {"holderIdentity": "pod-b", "leaseDurationSeconds": 15, "renewTime": now}}),
    );
    let (first, second) = task.await.expect("join");
    assert!(first, "created and holds the lease");
    assert!(!second, "a live lease held by another replica is respected");
    no_more_requests(&mut handle).await;
}

#[tokio::test]
async fn a_follower_takes_over_when_the_leader_stops_and_at_once_when_it_releases() {
    use smtp_relay_operator::leader::{Elector, LeaseConfig};
    let fake = support::fake_api::FakeApi::default();
    let elector = |id: &str| {
        Elector::new(
            fake.client(),
            LeaseConfig {
                namespace: "smtp-relay-system".into(),
                name: "smtp-relay-operator".into(),
                identity: id.into(),
                duration: Duration::from_secs(1),
                renew_deadline: Duration::from_millis(700),
                renew_every: Duration::from_millis(100),
            },
        )
    };
    let (a, b) = (elector("pod-a"), elector("pod-b"));
    assert!(a.try_once().await.expect("a"), "a leads");
    assert!(!b.try_once().await.expect("b"), "b follows while a renews");
    assert!(a.try_once().await.expect("a renews"));
    // a dies (stops renewing): b takes over once the lease runs out, not before.
    tokio::time::timeout(Duration::from_secs(10), b.acquire())
        .await
        .expect("b takes over");
    assert!(
        !a.try_once().await.expect("a"),
        "the old leader is now a follower"
    );
    // A graceful stop releases the lease: the other replica takes it at once.
    b.release().await;
    assert!(
        a.try_once().await.expect("a"),
        "taken over right after release"
    );
}
