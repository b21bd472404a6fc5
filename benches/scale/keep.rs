//! The rows of `make scale` that a change must keep, measured on the converged, idle
//! operator: apply → Ready of one new relay, the memory cost of unrelated Secrets, and
//! recovery when the API server restarts under the operator.

use std::path::Path;
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt, stream};
use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::api::{Api, PostParams};
use serde_json::json;
use smtp_relay_operator::api::SmtpRelay;

use crate::support::cluster::Namespaces;

/// Create relay `name` in `ns` (which holds the `harness-ca` ConfigMap and the `creds`
/// Secret) and time from the create call to the watch event that shows it Ready. The
/// watch is established (the API server answered its request), and a connection for
/// the create is open, before the clock starts.
async fn apply_to_ready(
    client: &Client,
    ns: &str,
    name: &str,
    port: u16,
    limit: Duration,
) -> Option<Duration> {
    use kube::api::{ListParams, WatchEvent, WatchParams};
    let api: Api<SmtpRelay> = Api::namespaced(client.clone(), ns);
    let selector = format!("metadata.name={name}");
    let version = api
        .list_metadata(&ListParams::default().fields(&selector))
        .await
        .ok()?
        .metadata
        .resource_version?;
    let mut events = std::pin::pin!(
        api.watch(&WatchParams::default().fields(&selector), &version)
            .await
            .ok()?
    );
    // The watch holds its connection: warm another for the create, so that a new
    // connection's TCP and TLS set-up (and its delayed ACKs) is not timed.
    api.get_opt(name).await.ok()?;
    let relay = super::relay_doc(ns, name, port);
    let start = Instant::now();
    api.create(&PostParams::default(), &relay).await.ok()?;
    let ready = async {
        while let Some(event) = events.next().await {
            if let Ok(WatchEvent::Added(r) | WatchEvent::Modified(r)) = event
                && super::relay_ready(&r)
            {
                return Some(start.elapsed());
            }
        }
        None
    };
    tokio::time::timeout(limit, ready).await.ok().flatten()
}

fn millis(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

/// p50 and max of apply → Ready over `n` relays created one after the other.
pub async fn apply_to_ready_row(client: &Client, ns: &str, port: u16, n: usize) {
    let mut times = Vec::new();
    for i in 0..n {
        if let Some(t) = apply_to_ready(
            client,
            ns,
            &format!("keep-{i}"),
            port,
            Duration::from_secs(30),
        )
        .await
        {
            times.push(t);
        }
    }
    times.sort();
    match (times.get(times.len() / 2), times.last()) {
        (Some(p50), Some(max)) => println!(
            "| apply → Ready, one relay at a time, idle operator ({} of {n}) | p50 {}, max {} |",
            times.len(),
            millis(*p50),
            millis(*max)
        ),
        _ => println!("| apply → Ready, one relay at a time, idle operator | none Ready of {n} |"),
    }
}

/// RSS of the operator before and after `n` Secrets of 10 KiB that no relay uses.
pub async fn unrelated_secrets_row(client: &Client, operator: u32, n: usize) {
    let steady = |pid| async move {
        // The mean of a few samples, so one allocation burst does not decide.
        let mut sum = 0.0;
        for _ in 0..5 {
            sum += super::rss(pid).map_or(0.0, |(now, _)| now);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        sum / 5.0
    };
    let before = steady(operator).await;
    // Left in place, like the rest of the world: down.sh ends the control plane.
    Namespaces::create(client, vec!["scale-noise".to_string()]).await;
    let api: Api<Secret> = Api::namespaced(client.clone(), "scale-noise");
    let blob = super::b64(&"x".repeat(10 * 1024));
    let created = Instant::now();
    let made = stream::iter(0..n)
        .map(|i| {
            let api = api.clone();
            let secret: Secret = serde_json::from_value(json!({
                "metadata": {"name": format!("noise-{i}")},
                "data": {"blob": blob}}))
            .expect("secret");
            async move {
                api.create(&PostParams::default(), &secret)
                    .await
                    .map(|_| ())
            }
        })
        .buffer_unordered(32)
        .try_collect::<Vec<_>>()
        .await
        .map(|v| v.len());
    let took = created.elapsed();
    // Time for whatever the operator receives of them to arrive.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let after = steady(operator).await;
    let hwm = super::rss(operator).map_or(0.0, |(_, hwm)| hwm);
    match made {
        Ok(made) => println!(
            "| +{made} unrelated 10 KiB Secrets (created in {:.1} s) | RSS {before:.1} → {after:.1} MiB ({:+.1} MiB), peak so far {hwm:.1} MiB |",
            took.as_secs_f64(),
            after - before
        ),
        Err(e) => println!("| unrelated Secrets | creating them failed: {e} |"),
    }
}

/// Stop kube-apiserver, start it again with the same command line (same port and
/// certificates), and time a new relay's apply → Ready once it answers.
pub async fn apiserver_restart_row(client: &Client, envtest_dir: &Path, ns: &str, port: u16) {
    use std::os::unix::process::CommandExt as _;
    let pid_file = envtest_dir.join("apiserver.pid");
    let Some(pid) = std::fs::read_to_string(&pid_file)
        .ok()
        .and_then(|p| p.trim().parse::<u32>().ok())
    else {
        println!("| API server restarted under the operator | no apiserver.pid |");
        return;
    };
    let argv: Vec<String> = std::fs::read(format!("/proc/{pid}/cmdline"))
        .unwrap_or_default()
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    let Some((program, args)) = argv.split_first() else {
        println!("| API server restarted under the operator | no command line for {pid} |");
        return;
    };
    // Stopped as down.sh stops it: SIGTERM, and SIGKILL if it is still there after
    // 5 s (its graceful shutdown waits for open watches). Started again only once it
    // is gone, so the new process has the port.
    let stopped = Instant::now();
    // Gone, or a zombie nobody reaps (up.sh started it with setsid).
    let gone = || super::proc_stat(pid).is_none_or(|(_, f)| f.first().is_none_or(|s| s == "Z"));
    let _ = std::process::Command::new("kill")
        .arg(pid.to_string())
        .status();
    while !gone() && stopped.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if !gone() {
        let _ = std::process::Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status();
    }
    while !gone() && stopped.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if !gone() {
        println!("| API server restarted under the operator | pid {pid} did not stop |");
        return;
    }
    // A log of its own: the first process wrote apiserver.log at its own offset.
    let log = std::fs::File::create(envtest_dir.join("apiserver-restarted.log"))
        .expect("apiserver-restarted.log");
    let mut child = std::process::Command::new(program)
        .args(args)
        .process_group(0)
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("start kube-apiserver again");
    let new_pid = child.id();
    // down.sh stops it by this file.
    let _ = std::fs::write(&pid_file, new_pid.to_string());
    let mut up = false;
    while stopped.elapsed() < Duration::from_secs(120) {
        if !matches!(child.try_wait(), Ok(None)) {
            break;
        }
        if client.apiserver_version().await.is_ok() {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Reaped when down.sh stops it.
    std::thread::spawn(move || child.wait());
    if !up {
        println!(
            "| API server restarted under the operator | the new kube-apiserver (pid {new_pid}) did not answer; see apiserver-restarted.log |"
        );
        return;
    }
    let down_for = stopped.elapsed();
    let ready = apply_to_ready(
        client,
        ns,
        "keep-after-restart",
        port,
        Duration::from_secs(120),
    )
    .await;
    println!(
        "| API server restarted under the operator (down {:.1} s) | new relay Ready {} after apply |",
        down_for.as_secs_f64(),
        ready.map_or_else(|| "not within 120 s".to_string(), millis)
    );
}
