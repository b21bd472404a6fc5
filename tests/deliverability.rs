//! Deliverability checks against a real authoritative DNS server on loopback
//! (hickory-server, in-process): SPF results as RFC 7208 names them, DKIM keys, DMARC
//! policies, MX, DNS blocklists, temporary failures and the cache.

mod support;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use smtp_relay_operator::api::{ConditionStatus, RelayDeliverabilitySpec};
use smtp_relay_operator::deliverability::{Checker, DnsSettings, DomainQuery, verdict};
use support::dns::DnsServer;

const K2048: &str = "MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAv90LGlzGSymfNFcL4uJpMGvTQx9ddiGrdvfM71iHEOgBP5uxGuVV1rS+HIji++XdkPL7jCnKhT0Y4AuG6mE2yWm/8ztR96cN8D0cLMTAQR2M9wRr40XG9u2tuEakAlt27VF9SRrOXbNp0x5QX+EOQOZcNHhxkyjQj/Ya2NDWjZXHSKIXfxrXoeJ6aXRhobE4oiT91MTpNl1raW+wwuArNHokZu1rmPyMyqkO0fkGjaVtpzuZa4hTbvpCZoE7pgRgP9Zs6Fx2TcFR5fn8gKNM2AonWfkCAxD5K7w1MokdQ7QhhJIJ/Ppsf99Htw6a/dNi7HXB50ObYy4f5n5uQCaTbQIDAQAB";
const K1024: &str = "MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQDurgRVR+Q/7DjiYaFkfrjSmGcRuhboS6/P+EVBwzNoi1DAdvmur/Md2mfWP7VCZStcbmPXYEnPF7vLAocIsICVygcIm5ySeUE6ofI7EreyuJHQHs8jfHIM1znqsb+IEvfB7a91tVziKfKAl819zrl68k8HSQIpbyiajPJfDzybNwIDAQAB";
const K512: &str = "MFwwDQYJKoZIhvcNAQEBBQADSwAwSAJBAMRMqSHaHyM1QmJd17qCxM90wTmXp2F+MFwfFfPzkwcd020EVjz/hmmI3qIScEy3BkKGE7xZclX+n4U5bacYm+0CAwEAAQ==";
const KED: &str = "yCc6TwRMLZV2VhaEEdM33IHxRD9nCvqxSXZKZ8gzGcg=";

fn zone() -> Vec<String> {
    let mut z: Vec<String> = [
        "good.test 300 MX 10 mx.good.test",
        "mx.good.test 300 A 127.0.0.1",
        "good.test 300 TXT v=spf1 ip4:127.0.0.1 -all",
        "_dmarc.good.test 300 TXT v=DMARC1; p=reject; pct=50; adkim=s",
        "bad._domainkey.good.test 300 TXT v=DKIM1; k=rsa; p=!!notbase64",
        "revoked._domainkey.good.test 300 TXT v=DKIM1; k=rsa; p=",
        "softfail.test 300 MX 10 mx.good.test",
        "softfail.test 300 TXT v=spf1 ip4:127.0.0.9 ~all",
        "_dmarc.softfail.test 300 TXT v=DMARC1; p=none",
        "fail.test 300 MX 10 mx.good.test",
        "fail.test 300 TXT v=spf1 ip4:127.0.0.9 -all",
        "neutral.test 300 MX 10 mx.good.test",
        "neutral.test 300 TXT v=spf1 ?all",
        "include.test 300 MX 10 mx.good.test",
        "include.test 300 TXT v=spf1 include:_spf.provider.test -all",
        "_spf.provider.test 300 TXT v=spf1 ip4:127.0.0.0/8 -all",
        "redirect.test 300 MX 10 mx.good.test",
        "redirect.test 300 TXT v=spf1 redirect=_spf.provider.test",
        "brokeninclude.test 300 MX 10 mx.good.test",
        "brokeninclude.test 300 TXT v=spf1 include:nothing-here.test -all",
        "macro.test 300 MX 10 mx.good.test",
        "macro.test 300 TXT v=spf1 exists:%{i}._spf.macro.test -all",
        "127.0.0.1._spf.macro.test 300 A 127.0.0.2",
        "void.test 300 MX 10 mx.good.test",
        // Three void lookups before the end: receivers give up.
        "void.test 300 TXT v=spf1 a:nx1.void.test a:nx2.void.test a:nx3.void.test -all",
        // Void lookups after the relay's match are never reached: pass.
        "latevoid.test 300 MX 10 mx.good.test",
        "latevoid.test 300 TXT v=spf1 ip4:127.0.0.1 a:nx1.void.test a:nx2.void.test a:nx3.void.test -all",
        "twospf.test 300 MX 10 mx.good.test",
        "nospf.test 300 MX 10 mx.good.test",
        "nullmx.test 300 MX 0 .",
        "nullmx.test 300 TXT v=spf1 ip4:127.0.0.1 -all",
        "implicit.test 300 A 127.0.0.5",
        "implicit.test 300 TXT v=spf1 ip4:127.0.0.1 -all",
        "sub.org.test 300 MX 10 mx.good.test",
        "sub.org.test 300 TXT v=spf1 ip4:127.0.0.1 -all",
        "_dmarc.org.test 300 TXT v=DMARC1; p=quarantine; sp=reject",
        "twodmarc.test 300 MX 10 mx.good.test",
        "twodmarc.test 300 TXT v=spf1 ip4:127.0.0.1 -all",
        "short.test 300 MX 10 mx.good.test",
        "short.test 1 TXT v=spf1 ip4:127.0.0.1 -all",
        "2.0.0.127.bl.test 300 A 127.0.0.2",
        "2.0.0.127.bl.test 300 TXT listed for testing, see https://bl.test/2",
        "3.0.0.127.bl.test 300 A 127.255.255.254",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    z.push(format!(
        "s1._domainkey.good.test 300 TXT v=DKIM1; k=rsa; p={K2048}"
    ));
    z.push(format!(
        "weak._domainkey.good.test 300 TXT v=DKIM1; k=rsa; p={K1024}"
    ));
    z.push(format!(
        "tiny._domainkey.good.test 300 TXT v=DKIM1; k=rsa; p={K512}"
    ));
    z.push(format!(
        "ed._domainkey.good.test 300 TXT v=DKIM1; k=ed25519; p={KED}"
    ));
    // Eleven DNS-querying terms, every one of them a valid record.
    let many: Vec<String> = (1..=11)
        .map(|i| format!("include:l{i}.provider.test"))
        .collect();
    z.push(format!(
        "toomany.test 300 TXT v=spf1 {} -all",
        many.join(" ")
    ));
    z.push("toomany.test 300 MX 10 mx.good.test".into());
    for i in 1..=11 {
        z.push(format!(
            // None names the relay: receivers evaluate all eleven and stop.
            "l{i}.provider.test 300 TXT v=spf1 ip4:127.0.0.9 ?all"
        ));
    }
    z
}

async fn server() -> DnsServer {
    let z = zone();
    let lines: Vec<&str> = z.iter().map(String::as_str).collect();
    let s = DnsServer::start(&lines).await;
    // Records that share a name and type go in one set: add the second ones now.
    s.zone_add("twospf.test 300 TXT v=spf1 ip4:127.0.0.1 -all")
        .await;
    s.zone_add("twospf.test 300 TXT v=spf1 ip4:127.0.0.2 -all")
        .await;
    s
}

/// A resolver asking `s`, patient enough for a busy machine: a retry would count as
/// a second query.
fn checker(s: &DnsServer, zones: &[&str]) -> Checker {
    checker_waiting(s, zones, Duration::from_secs(2))
}

/// A resolver for names `s` was told not to answer: it gives up quickly.
fn silent_checker(s: &DnsServer, zones: &[&str]) -> Checker {
    checker_waiting(s, zones, Duration::from_millis(400))
}

fn checker_waiting(s: &DnsServer, zones: &[&str], timeout: Duration) -> Checker {
    Checker::new(
        &DnsSettings {
            server: Some(s.addr),
            timeout: Some(timeout),
        },
        zones.iter().map(|z| z.to_string()).collect(),
    )
    .expect("resolver")
}

fn query(address: &str, selectors: &[&str]) -> DomainQuery {
    DomainQuery {
        address: address.into(),
        sending: vec!["127.0.0.1".parse().expect("ip")],
        sending_label: "[127.0.0.1]".into(),
        selectors: selectors.iter().map(|s| s.to_string()).collect(),
        relay_host: "127.0.0.1".into(),
    }
}

// The DNS test server runs on its own worker, not behind the test's own work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spf_results_are_the_rfc_results_with_the_record_read() {
    let s = server().await;
    let c = checker(&s, &[]);
    // (address, SPF result, DomainAuthenticated status, reason)
    let cases = [
        (
            "a@good.test",
            "pass",
            ConditionStatus::True,
            "Authenticated",
        ),
        (
            "a@softfail.test",
            "softfail",
            ConditionStatus::False,
            "SpfNotAuthorizingRelay",
        ),
        (
            "a@fail.test",
            "fail",
            ConditionStatus::False,
            "SpfNotAuthorizingRelay",
        ),
        (
            "a@neutral.test",
            "neutral",
            ConditionStatus::False,
            "SpfNotAuthorizingRelay",
        ),
        (
            "a@include.test",
            "pass",
            ConditionStatus::False,
            "DmarcMissing",
        ),
        (
            "a@redirect.test",
            "pass",
            ConditionStatus::False,
            "DmarcMissing",
        ),
        (
            "a@macro.test",
            "pass",
            ConditionStatus::False,
            "DmarcMissing",
        ),
        (
            "a@brokeninclude.test",
            "permerror",
            ConditionStatus::False,
            "SpfPermError",
        ),
        (
            "a@toomany.test",
            "permerror",
            ConditionStatus::False,
            "SpfTooManyLookups",
        ),
        (
            "a@void.test",
            "permerror",
            ConditionStatus::False,
            "SpfTooManyLookups",
        ),
        (
            "a@latevoid.test",
            "pass",
            ConditionStatus::False,
            "DmarcMissing",
        ),
        (
            "a@twospf.test",
            "permerror",
            ConditionStatus::False,
            "SpfPermError",
        ),
        ("a@nospf.test", "none", ConditionStatus::False, "SpfMissing"),
    ];
    for (address, spf, status, reason) in cases {
        let d = c.check_domain(&query(address, &[])).await;
        assert_eq!(d.spf.result, spf, "{address}: {:?}", d.spf);
        let j = verdict::domain_condition(&d);
        assert_eq!(
            (j.status, j.reason),
            (status, reason),
            "{address}: {}",
            j.message
        );
    }
    let good = c.check_domain(&query("a@good.test", &[])).await;
    assert_eq!(
        good.spf.record.as_deref(),
        Some("v=spf1 ip4:127.0.0.1 -all")
    );
    assert_eq!(good.spf.addresses[0].address, "127.0.0.1");
    let many = c.check_domain(&query("a@toomany.test", &[])).await;
    assert_eq!(many.spf.lookups, 11);
    assert!(
        many.spf.message.contains("11 DNS-querying terms"),
        "{}",
        many.spf.message
    );
    let void = c.check_domain(&query("a@void.test", &[])).await;
    assert_eq!(void.spf.void_lookups, 3);
    // The same domain judged for an address it does not authorize.
    let mut other = query("a@good.test", &[]);
    other.sending = vec!["127.0.0.7".parse().expect("ip")];
    other.sending_label = "[127.0.0.7]".into();
    assert_eq!(c.check_domain(&other).await.spf.result, "fail");
}

// The DNS test server runs on its own worker, not behind the test's own work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dkim_keys_are_judged_by_what_receivers_accept() {
    let s = server().await;
    let c = checker(&s, &[]);
    let d = c
        .check_domain(&query(
            "a@good.test",
            &["s1", "weak", "tiny", "bad", "revoked", "ed", "absent"],
        ))
        .await;
    let got: Vec<(String, String, Option<i32>)> = d
        .dkim
        .iter()
        .map(|k| (k.selector.clone(), k.result.clone(), k.key_bits))
        .collect();
    let want = [
        ("s1", "Valid", Some(2048)),
        ("weak", "Weak", Some(1024)),
        ("tiny", "TooWeak", Some(512)),
        ("bad", "Invalid", None),
        ("revoked", "Revoked", None),
        ("ed", "Valid", None),
        ("absent", "Missing", None),
    ];
    let want: Vec<(String, String, Option<i32>)> = want
        .iter()
        .map(|(s, r, b)| (s.to_string(), r.to_string(), *b))
        .collect();
    assert_eq!(got, want);
    let j = verdict::domain_condition(&d);
    assert_eq!(j.reason, "DkimKeyMissing", "{}", j.message);
    // A weak (1024-bit) key alone is a warning: still authenticated.
    let weak = c.check_domain(&query("a@good.test", &["s1", "weak"])).await;
    let j = verdict::domain_condition(&weak);
    assert_eq!((j.status, j.reason), (ConditionStatus::True, "DkimKeyWeak"));
    let tiny = c.check_domain(&query("a@good.test", &["tiny"])).await;
    assert_eq!(
        verdict::domain_condition(&tiny).status,
        ConditionStatus::False
    );
    let ed = d.dkim.iter().find(|k| k.selector == "ed").expect("ed");
    assert_eq!(ed.key_type.as_deref(), Some("ed25519"));
}

// The DNS test server runs on its own worker, not behind the test's own work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dmarc_policies_and_mx_as_published() {
    let s = server().await;
    let c = checker(&s, &[]);
    let good = c.check_domain(&query("a@good.test", &[])).await;
    assert_eq!(good.dmarc.result, "Found");
    assert_eq!(good.dmarc.policy.as_deref(), Some("reject"));
    assert_eq!(good.dmarc.pct, Some(50));
    assert_eq!(good.dmarc.adkim.as_deref(), Some("strict"));
    assert_eq!(good.dmarc.aspf.as_deref(), Some("relaxed"));
    assert_eq!(good.dmarc.found_at.as_deref(), Some("_dmarc.good.test"));
    assert_eq!(good.mx.result, "Found");
    assert_eq!(good.mx.records, ["10 mx.good.test"]);
    let none = c.check_domain(&query("a@softfail.test", &[])).await;
    assert_eq!(none.dmarc.policy.as_deref(), Some("none"));
    let inherited = c.check_domain(&query("a@sub.org.test", &[])).await;
    assert_eq!(inherited.dmarc.found_at.as_deref(), Some("_dmarc.org.test"));
    assert_eq!(inherited.dmarc.subdomain_policy.as_deref(), Some("reject"));
    assert_eq!(
        verdict::domain_condition(&inherited).status,
        ConditionStatus::True
    );
    s.set(&["_dmarc.twodmarc.test 300 TXT v=DMARC1; p=reject"])
        .await;
    s.zone_add("_dmarc.twodmarc.test 300 TXT v=DMARC1; p=none")
        .await;
    let two = c.check_domain(&query("a@twodmarc.test", &[])).await;
    assert_eq!(two.dmarc.result, "Invalid", "{:?}", two.dmarc);
    assert_eq!(verdict::domain_condition(&two).reason, "DmarcInvalid");
    let null = c.check_domain(&query("a@nullmx.test", &[])).await;
    assert_eq!(null.mx.result, "NullMx");
    let j = verdict::domain_condition(&null);
    assert!(
        j.reason == "NullMx" || j.message.contains("null MX"),
        "{}",
        j.message
    );
    let implicit = c.check_domain(&query("a@implicit.test", &[])).await;
    assert_eq!(implicit.mx.result, "ImplicitA");
    assert_eq!(implicit.mx.records, ["127.0.0.5"]);
    let nothing = c.check_domain(&query("a@nowhere.test", &[])).await;
    assert_eq!(nothing.mx.result, "NoMx");
}

// The DNS test server runs on its own worker, not behind the test's own work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocklists_listed_not_listed_refused_and_silent() {
    let s = server().await;
    let c = checker(&s, &["bl.test"]);
    let ips = |v: &[&str]| {
        v.iter()
            .map(|i| i.parse().expect("ip"))
            .collect::<Vec<IpAddr>>()
    };
    let listed = c
        .check_blocklists(&ips(&["127.0.0.2", "127.0.0.1"]), "now")
        .await;
    assert_eq!(listed.listings.len(), 1);
    assert_eq!(listed.listings[0].address, "127.0.0.2");
    assert_eq!(listed.listings[0].code.as_deref(), Some("127.0.0.2"));
    assert!(listed.listings[0].reason.contains("listed for testing"));
    let j = verdict::blocklist_condition(&listed);
    assert_eq!((j.status, j.reason), (ConditionStatus::False, "Listed"));
    let clean = c.check_blocklists(&ips(&["127.0.0.1"]), "now").await;
    assert_eq!(verdict::blocklist_condition(&clean).reason, "NotListed");
    let refused = c.check_blocklists(&ips(&["127.0.0.3"]), "now").await;
    assert!(
        refused.listings.is_empty(),
        "a refusal code is not a listing"
    );
    assert_eq!(
        verdict::blocklist_condition(&refused).reason,
        "BlocklistQueryRefused"
    );
    s.silence("bl.test");
    // A fresh resolver: the answers above are cached (as receivers' would be).
    let c = silent_checker(&s, &["bl.test"]);
    let silent = c.check_blocklists(&ips(&["127.0.0.1"]), "later").await;
    assert!(silent.listings.is_empty());
    assert_eq!(
        verdict::blocklist_condition(&silent).reason,
        "DnsTemporaryFailure"
    );
    // No zone answered: the last answers are kept, and say so.
    let kept = verdict::keep_last_blocklist(Some(&clean), silent, jiff::Timestamp::now());
    assert!(kept.temporary_failure.is_some());
    assert_eq!(verdict::blocklist_condition(&kept).reason, "NotListed");
    // The relay's own addresses: its host when sendingAddresses is empty.
    let spec = RelayDeliverabilitySpec::default();
    assert_eq!(
        c.sending_addresses(&spec, "127.0.0.1", true).await,
        Ok(ips(&["127.0.0.1"]))
    );
    assert_eq!(
        c.sending_addresses(&spec, "mx.good.test", true).await,
        Ok(ips(&["127.0.0.1"]))
    );
}

// The DNS test server runs on its own worker, not behind the test's own work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_temporary_failure_keeps_the_last_result() {
    let s = server().await;
    let c = checker(&s, &[]);
    let first = c.check_domain(&query("a@good.test", &[])).await;
    assert!(verdict::has_temporary_failure(&first).is_none());
    s.silence("good.test");
    // A new resolver: nothing cached, so the silence is seen.
    let c2 = silent_checker(&s, &[]);
    let failed = c2.check_domain(&query("a@good.test", &[])).await;
    assert!(
        verdict::has_temporary_failure(&failed).is_some(),
        "{failed:?}"
    );
    let kept = verdict::keep_last(Some(&first), (*failed).clone(), jiff::Timestamp::now());
    assert_eq!(kept.spf.result, "pass");
    assert!(kept.temporary_failure.is_some());
    let j = verdict::domain_condition_kept(&kept);
    assert_eq!(j.status, ConditionStatus::True);
    assert!(j.message.starts_with("kept from"), "{}", j.message);
    // Without earlier results it is reported as what it is.
    assert_eq!(
        verdict::domain_condition(&failed).reason,
        "DnsTemporaryFailure"
    );
}

// The DNS test server runs on its own worker, not behind the test's own work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_identities_on_few_domains_cost_one_lookup_per_record_within_its_ttl() {
    let s = server().await;
    let c = Arc::new(checker(&s, &[]));
    let domains = [
        "good.test",
        "include.test",
        "redirect.test",
        "softfail.test",
        "sub.org.test",
    ];
    let jobs = (0..200).map(|i| {
        let c = Arc::clone(&c);
        let address = format!("user{i}@{}", domains[i % domains.len()]);
        async move { c.check_domain(&query(&address, &[])).await }
    });
    let _ = futures::future::join_all(jobs).await;
    for d in domains {
        assert_eq!(s.queries(d, "TXT"), 1, "TXT {d}: {:?}", s.all_queries());
        assert_eq!(s.queries(d, "MX"), 1, "MX {d}");
    }
    assert_eq!(s.queries("_spf.provider.test", "TXT"), 1);
    // Again, later: still within the TTLs, nothing new is asked.
    for i in 0..50 {
        let _ = c
            .check_domain(&query(&format!("again{i}@good.test"), &[]))
            .await;
    }
    assert_eq!(s.queries("good.test", "TXT"), 1);
    // A record with a 1 s TTL is asked again once it expired.
    let _ = c.check_domain(&query("a@short.test", &[])).await;
    assert_eq!(s.queries("short.test", "TXT"), 1);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let _ = c.check_domain(&query("b@short.test", &[])).await;
    assert_eq!(s.queries("short.test", "TXT"), 2);
}

// The DNS test server runs on its own worker, not behind the test's own work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_prints_each_check_with_its_result_and_record() {
    let s = server().await;
    let h = support::harness();
    let dir = tempfile::tempdir().expect("tempdir");
    let manifest = format!(
        r#"apiVersion: smtprelay.io/v1alpha1
kind: SmtpRelay
metadata: {{name: plain, namespace: team}}
spec:
  host: 127.0.0.1
  port: {port}
  tls: {{mode: None}}
  defaultSender: {{address: sales@good.test}}
  deliverability: {{dkimSelectors: [s1]}}
---
apiVersion: smtprelay.io/v1alpha1
kind: SenderIdentity
metadata: {{name: sales, namespace: team}}
spec:
  address: sales@good.test
  relayRef: {{kind: SmtpRelay, name: plain}}
---
apiVersion: smtprelay.io/v1alpha1
kind: SenderIdentity
metadata: {{name: ops, namespace: team}}
spec:
  address: ops@softfail.test
  relayRef: {{kind: SmtpRelay, name: plain}}
  deliverability: {{enforce: true}}
"#,
        port = h.plain_port
    );
    let path = dir.path().join("m.yaml");
    std::fs::write(&path, manifest).expect("write");
    let run = |output: &'static str| {
        let path = path.clone();
        let addr = s.addr;
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_smtp-relay-operator"))
                .args(["verify", "--allowed-destinations=127.0.0.0/8", "-o", output])
                .arg(format!("--dns-server={addr}"))
                .arg("--dnsbl-zones=bl.test")
                .arg("-f")
                .arg(&path)
                .output()
                .expect("run verify")
        })
    };
    let out = run("table").await.expect("join");
    let text = String::from_utf8_lossy(&out.stdout);
    // enforce on an identity whose domain is not authenticated: verify fails.
    assert_eq!(out.status.code(), Some(1), "{text}");
    for line in [
        "SenderIdentity team/sales <sales@good.test> via SmtpRelay team/plain",
        "MX     Found      10 mx.good.test",
        "SPF    pass       v=spf1 ip4:127.0.0.1 -all  (0 lookups, 0 void)",
        "127.0.0.1 pass",
        "DKIM   Valid      s1: s1._domainkey.good.test: 2048-bit RSA key",
        "DMARC  Found      v=DMARC1; p=reject; pct=50; adkim=s  (at _dmarc.good.test)",
        "DomainAuthenticated=True Authenticated",
        "SPF    softfail   v=spf1 ip4:127.0.0.9 ~all",
        "DomainAuthenticated=False SpfNotAuthorizingRelay",
        "SmtpRelay team/plain: NotListed=True NotListed: 127.0.0.1 on none of bl.test",
    ] {
        assert!(text.contains(line), "missing {line:?} in:\n{text}");
    }
    let out = run("json").await.expect("join");
    let items: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let sales = items
        .as_array()
        .and_then(|a| a.iter().find(|i| i["name"] == "sales"))
        .expect("sales");
    assert_eq!(sales["kind"], "SenderIdentity");
    assert_eq!(sales["deliverability"]["spf"]["result"], "pass");
    assert_eq!(sales["deliverability"]["dkim"][0]["keyBits"], 2048);
    assert_eq!(sales["conditions"][0]["type"], "DomainAuthenticated");
}
