//! `make scale`: the operator at scale on a real API server. Starts kube-apiserver +
//! etcd (../shared/envtest) and its own instance of the Postfix harness (queue and
//! Maildir in /dev/shm), creates N SmtpRelays (STARTTLS + AUTH, all on that instance)
//! and M SenderIdentities that require confirmation, runs
//! the release binary and prints: time to all relays Ready, time to all confirmation
//! mails sent, identities still waiting, RSS peak and steady, status writes during an
//! idle period after convergence, and SMTP sessions and status writes after a
//! restart; plus where the time went (the operator's own metrics). A benchmark: it
//! prints numbers and asserts nothing.
//!
//! SCALE_RELAYS (2000), SCALE_IDENTITIES (10000), SCALE_NAMESPACES (20),
//! SCALE_IDLE_SECS (60), SCALE_TIMEOUT_SECS (600), SMTP_RELAY_ENVTEST (../shared/envtest),
//! SCALE_HARNESS_DIR (/dev/shm/smtp-relay-scale; target/scale-harness without /dev/shm),
//! SCALE_OPERATOR_ARGS (extra `run` flags, for experiments), SCALE_OPERATOR_WRAPPER (a
//! profiler to run the operator under, e.g. `heaptrack -o target/scale-heap`).
//!
//! Then, on the restarted operator, the rows a change must keep (`scale/keep.rs`):
//! apply → Ready of SCALE_KEEP_RELAYS (20) new relays one at a time, RSS before and
//! after SCALE_NOISE_SECRETS (20000) unrelated 10 KiB Secrets, and a new relay's
//! apply → Ready after kube-apiserver is restarted under the operator.

#[path = "scale/keep.rs"]
mod keep;
#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use futures::{StreamExt, TryStreamExt, stream};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Api, ListParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;
use smtp_relay_operator::api::{SenderIdentity, SmtpRelay};
use support::cluster::{self, Namespaces};

fn env_num(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// The bench's own Postfix instance, stopped and deleted on drop. Its queue and
/// Maildir are in memory (/dev/shm where there is one): the relay's disk is not the
/// operator's cost, and its fsyncs made the runs vary by several seconds. Being
/// private, it also leaves the test suite's Maildir alone.
struct ScaleHarness(support::Harness);

impl ScaleHarness {
    fn start() -> Self {
        let shm = Path::new("/dev/shm");
        let dir = std::env::var("SCALE_HARNESS_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|_| {
                if shm.is_dir() {
                    shm.join("smtp-relay-scale")
                } else {
                    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/scale-harness")
                }
            });
        // Beside the test harness (25250..25252) and Dovecot (25260..25263).
        Self(support::start_harness(&dir, 25270))
    }
}

impl Drop for ScaleHarness {
    fn drop(&mut self) {
        self.0.stop_and_remove();
    }
}

/// A relay of the harness (STARTTLS + AUTH) in a namespace that holds the
/// `harness-ca` ConfigMap and the `creds` Secret.
fn relay_doc(ns: &str, name: &str, port: u16) -> SmtpRelay {
    serde_json::from_value(json!({
        "apiVersion": "smtprelay.io/v1alpha1", "kind": "SmtpRelay",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"title": name, "host": "localhost", "port": port,
                 "tls": {"mode": "StartTls", "caBundleRef": {"kind": "ConfigMap", "name": "harness-ca"}},
                 "auth": {"credentialsSecretRef": {"name": "creds"}},
                 "defaultSender": {"address": format!("{name}@example.test"), "name": "Scale"},
                 "usage": ["sales", "purchasing"],
                 "verification": {"interval": "1h", "timeout": "20s"}}}))
    .expect("relay")
}

/// Is the relay's Ready condition True?
fn relay_ready(r: &SmtpRelay) -> bool {
    r.status.as_ref().is_some_and(|s| {
        s.conditions.iter().any(|c| {
            c.type_ == "Ready" && c.status == smtp_relay_operator::api::ConditionStatus::True
        })
    })
}

/// (VmRSS, VmHWM) of a process, in MiB.
fn rss(pid: u32) -> Option<(f64, f64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<f64> {
        let line = text.lines().find(|l| l.starts_with(name))?;
        let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib / 1024.0)
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

fn start_operator(
    kubeconfig: &Path,
    metrics_port: u16,
    confirm_port: u16,
    log: &Path,
) -> cluster::Operator {
    let file = std::fs::File::create(log).expect("log");
    // Experiments: SCALE_OPERATOR_WRAPPER="heaptrack -o target/scale-heap" runs the
    // operator under a profiler (then RSS and timings are the profiler's).
    let wrapper: Vec<String> = std::env::var("SCALE_OPERATOR_WRAPPER")
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_string)
        .collect();
    let binary = env!("CARGO_BIN_EXE_smtp-relay-operator");
    let mut command = match wrapper.split_first() {
        Some((program, args)) => {
            let mut c = Command::new(program);
            c.args(args).arg(binary);
            c
        }
        None => Command::new(binary),
    };
    let child = command
        // Tests and benches never ask the system resolver.
        .env("SMTP_RELAY_DELIVERABILITY_CHECKS", "false")
        .args(["run", "--namespace", "scale-ops"])
        .arg(format!("--metrics-addr=127.0.0.1:{metrics_port}"))
        .arg(format!("--confirmation-addr=127.0.0.1:{confirm_port}"))
        .arg(format!(
            "--confirmation-base-url=http://127.0.0.1:{confirm_port}"
        ))
        // The relays are the Postfix harness on loopback.
        .arg("--allowed-destinations=127.0.0.0/8")
        // Experiments: SCALE_OPERATOR_ARGS="--concurrency 64".
        .args(
            std::env::var("SCALE_OPERATOR_ARGS")
                .unwrap_or_default()
                .split_whitespace(),
        )
        .env("KUBECONFIG", kubeconfig)
        .env("NO_COLOR", "1")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::from(file))
        .spawn()
        .expect("start the release binary");
    cluster::Operator(child)
}

/// Sum of every sample of a metric family in Prometheus text, by label set.
async fn scrape(port: u16) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else {
        return String::new();
    };
    let _ = s
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await;
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out).await;
    String::from_utf8_lossy(&out).into_owned()
}

fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter(|l| {
            let rest = &l[name.len()..];
            rest.starts_with('{') || rest.starts_with(' ')
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// resourceVersion of every relay and identity.
async fn versions(client: &Client) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let lp = ListParams::default();
    for r in Api::<SmtpRelay>::all(client.clone())
        .list(&lp)
        .await
        .expect("list")
    {
        out.insert(
            format!("r/{}/{}", r.namespace().unwrap_or_default(), r.name_any()),
            r.resource_version().unwrap_or_default(),
        );
    }
    for i in Api::<SenderIdentity>::all(client.clone())
        .list(&lp)
        .await
        .expect("list")
    {
        out.insert(
            format!("i/{}/{}", i.namespace().unwrap_or_default(), i.name_any()),
            i.resource_version().unwrap_or_default(),
        );
    }
    out
}

fn changed(a: &BTreeMap<String, String>, b: &BTreeMap<String, String>) -> usize {
    b.iter().filter(|(k, v)| a.get(*k) != Some(*v)).count()
}

/// Per object, whether it is done; the watch stops when this is dropped.
struct Tracked {
    state: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, bool>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Watch a kind and keep, per object, whether `done` holds.
fn track<K>(api: Api<K>, done: fn(&K) -> bool) -> Tracked
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    use kube::runtime::WatchStreamExt as _;
    use kube::runtime::watcher;
    let state: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, bool>>> =
        Default::default();
    let shared = state.clone();
    // With a backoff: once the API server is gone, an immediate retry that fails at
    // once would never yield, and the runtime could not stop this task.
    let task = tokio::spawn(async move {
        let state = shared;
        let mut events = std::pin::pin!(
            watcher(api, watcher::Config::default().any_semantic()).default_backoff()
        );
        while let Some(event) = events.next().await {
            let mut map = state.lock().unwrap_or_else(|e| e.into_inner());
            match event {
                Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o)) => {
                    let key = format!("{}/{}", o.namespace().unwrap_or_default(), o.name_any());
                    map.insert(key, done(&o));
                }
                Ok(watcher::Event::Delete(o)) => {
                    map.remove(&format!(
                        "{}/{}",
                        o.namespace().unwrap_or_default(),
                        o.name_any()
                    ));
                }
                _ => {}
            }
        }
    });
    Tracked { state, task }
}

fn count(t: &Tracked) -> usize {
    t.state
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .values()
        .filter(|d| **d)
        .count()
}

/// A process's command name and CPU seconds from /proc/PID/stat: its own (user +
/// system) and that of the children it has reaped.
struct ProcCpu {
    comm: String,
    own: f64,
    reaped: f64,
}

/// /proc/PID/stat of a live process: its command name, and the fields after the name
/// (the state first). None once it is gone.
fn proc_stat(pid: u32) -> Option<(String, Vec<String>)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start after ") ".
    let (head, rest) = stat.rsplit_once(") ")?;
    Some((
        head.split_once(" (").map_or("?", |(_, c)| c).to_string(),
        rest.split_whitespace().map(str::to_string).collect(),
    ))
}

fn proc_cpu(pid: u32) -> Option<ProcCpu> {
    let (comm, f) = proc_stat(pid)?;
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime, stime, cutime, cstime are fields 14 to 17 of stat; 12 to 15 after the name.
    Some(ProcCpu {
        own: (ticks(11) + ticks(12)) / 100.0,
        reaped: (ticks(13) + ticks(14)) / 100.0,
        comm,
    })
}

/// CPU seconds (user + system) of a process.
fn cpu_secs(pid: u32) -> f64 {
    proc_cpu(pid).map_or(0.0, |p| p.own)
}

/// (busy, total) CPU seconds of the whole machine, all cores.
fn machine_cpu() -> (f64, f64) {
    let text = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = text.lines().find(|l| l.starts_with("cpu ")) else {
        return (0.0, 0.0);
    };
    let v: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let total: f64 = v.iter().take(8).sum();
    // idle and iowait
    let idle = v.get(3).copied().unwrap_or(0.0) + v.get(4).copied().unwrap_or(0.0);
    ((total - idle) / 100.0, total / 100.0)
}

/// Before the clock starts: the set-up's writes (12,000 objects through etcd) are
/// flushed to disk, and the machine is quiet (under 10% busy for half a second, or 20
/// s have passed). Otherwise the kernel writes them back during the measured window,
/// up to 30 s later, and the operator is charged for the bench's own set-up.
async fn settle() -> Duration {
    let start = Instant::now();
    let _ = tokio::process::Command::new("sync").status().await;
    while start.elapsed() < Duration::from_secs(20) {
        let (busy0, total0) = machine_cpu();
        tokio::time::sleep(Duration::from_millis(500)).await;
        let (busy1, total1) = machine_cpu();
        if (busy1 - busy0) < 0.1 * (total1 - total0) {
            break;
        }
    }
    start.elapsed()
}

/// CPU seconds of the operator, kube-apiserver and etcd.
fn cpu_table(operator: u32, envtest_dir: &Path) -> [f64; 3] {
    let pid_of = |name: &str| {
        std::fs::read_to_string(envtest_dir.join(name))
            .ok()
            .and_then(|p| p.trim().parse::<u32>().ok())
            .unwrap_or(0)
    };
    [
        cpu_secs(operator),
        cpu_secs(pid_of("apiserver.pid")),
        cpu_secs(pid_of("etcd.pid")),
    ]
}

/// CPU seconds of every other process, by PID with its command name (user + system,
/// with the children it has reaped: Postfix's master collects its short-lived
/// daemons), and of this benchmark itself as "bench"; the operator, kube-apiserver
/// and etcd are in [`cpu_table`].
fn cpu_others(operator: u32) -> BTreeMap<u32, (String, f64)> {
    let me = std::process::id();
    let mut out = BTreeMap::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == operator {
            continue;
        }
        let Some(p) = proc_cpu(pid) else {
            continue;
        };
        if p.comm == "kube-apiserver" || p.comm == "etcd" {
            continue;
        }
        // The bench's children (the operator) are counted on their own.
        let entry = if pid == me {
            ("bench".to_string(), p.own)
        } else {
            (p.comm, p.own + p.reaped)
        };
        out.insert(pid, entry);
    }
    out
}

/// The largest CPU users among [`cpu_others`] between two samples, by name. Deltas
/// are taken per PID: a kernel worker's name changes with the work it is doing
/// ("kworker/u8:1-writeback"), so a delta by name would count a renamed worker's
/// whole lifetime. Workers are summed as "kworker".
fn others_since(
    now: &BTreeMap<u32, (String, f64)>,
    before: &BTreeMap<u32, (String, f64)>,
) -> String {
    let mut by_name: BTreeMap<&str, f64> = BTreeMap::new();
    for (pid, (comm, cpu)) in now {
        let name = if comm.starts_with("kworker/") {
            "kworker"
        } else {
            comm.as_str()
        };
        let earlier = before.get(pid).map_or(0.0, |(_, c)| *c);
        *by_name.entry(name).or_insert(0.0) += (cpu - earlier).max(0.0);
    }
    let mut v: Vec<(&str, f64)> = by_name.into_iter().filter(|(_, d)| *d >= 0.1).collect();
    v.sort_by(|a, b| b.1.total_cmp(&a.1));
    v.iter()
        .take(10)
        .map(|(k, d)| format!("{k} {d:.1}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// "operator / kube-apiserver / etcd" CPU seconds between two [`cpu_table`]s.
fn cpu_since(now: &[f64; 3], before: &[f64; 3]) -> String {
    now.iter()
        .zip(before)
        .map(|(a, b)| format!("{:.1}", a - b))
        .collect::<Vec<_>>()
        .join(" / ")
}

/// The API server's request counts by verb, resource and subresource.
async fn apiserver_requests(client: &Client) -> BTreeMap<String, f64> {
    let req = http::Request::get("/metrics")
        .body(Vec::new())
        .expect("request");
    let text = client.request_text(req).await.unwrap_or_default();
    let mut out = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| l.starts_with("apiserver_request_total{"))
    {
        // {code="200",component="apiserver",...,verb="PATCH",version="v1alpha1"} N
        let labels = line
            .split_once('{')
            .and_then(|(_, r)| r.rsplit_once('}'))
            .map_or("", |(l, _)| l);
        let label = |name: &str| {
            labels
                .split("\",")
                .find_map(|kv| kv.strip_prefix(&format!("{name}=\"")))
                .unwrap_or("")
                .trim_end_matches('"')
                .to_string()
        };
        let Some(n) = line.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) else {
            continue;
        };
        let sub = label("subresource");
        let key = format!(
            "{} {}{}",
            label("verb"),
            label("resource"),
            if sub.is_empty() {
                String::new()
            } else {
                format!("/{sub}")
            }
        );
        *out.entry(key).or_insert(0.0) += n;
    }
    out
}

#[tokio::main]
async fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("scale: benchmark; run it with `make scale` (cargo bench --bench scale)");
        return;
    }
    let relays_n = env_num("SCALE_RELAYS", 2000);
    let identities_n = env_num("SCALE_IDENTITIES", 10_000);
    let namespaces_n = env_num("SCALE_NAMESPACES", 20).max(1);
    let idle = Duration::from_secs(env_num("SCALE_IDLE_SECS", 60) as u64);
    let timeout = Duration::from_secs(env_num("SCALE_TIMEOUT_SECS", 600) as u64);
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let envtest = std::env::var("SMTP_RELAY_ENVTEST")
        .map(PathBuf::from)
        .unwrap_or_else(|_| root.join("../shared/envtest"));
    let dir = root.join("target/scale-envtest");
    let _ = Command::new("bash")
        .arg(envtest.join("down.sh"))
        .arg(&dir)
        .status();
    let _ = std::fs::remove_dir_all(dir.join("etcd"));
    let out = Command::new("bash")
        .arg(envtest.join("up.sh"))
        .arg(&dir)
        .output()
        .expect("start ../shared/envtest/up.sh");
    assert!(
        out.status.success(),
        "envtest: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let kubeconfig = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim().to_string());
    struct Down(PathBuf, PathBuf);
    impl Drop for Down {
        fn drop(&mut self) {
            let _ = Command::new("bash")
                .arg(self.0.join("down.sh"))
                .arg(&self.1)
                .status();
        }
    }
    let _down = Down(envtest.clone(), dir.clone());

    let harness = ScaleHarness::start();
    let h = &harness.0;
    let client = cluster::client(&kubeconfig).await;
    cluster::apply_crds(&client).await;
    println!(
        "scale: {relays_n} SmtpRelays and {identities_n} SenderIdentities in {namespaces_n} namespaces, real kube-apiserver v1.28.7 + etcd, Postfix, 2 cores"
    );
    println!(
        "Postfix: the bench's own instance on 127.0.0.1:{}, queue and Maildir in {}",
        h.submission_port,
        h.dir.display()
    );

    // The world, created before the operator starts.
    let created = Instant::now();
    let mut names: Vec<String> = (0..namespaces_n).map(|i| format!("scale-{i}")).collect();
    names.push("scale-ops".into());
    let _ns = Namespaces::create(&client, names).await;
    let ca = String::from_utf8(h.ca_pem()).expect("ca");
    for i in 0..namespaces_n {
        let ns = format!("scale-{i}");
        let pp = PostParams::default();
        let _ = Api::<ConfigMap>::namespaced(client.clone(), &ns)
            .create(
                &pp,
                &serde_json::from_value(
                    json!({"metadata": {"name": "harness-ca"}, "data": {"ca.crt": ca}}),
                )
                .expect("cm"),
            )
            .await;
        let _ = Api::<Secret>::namespaced(client.clone(), &ns)
            .create(&pp, &serde_json::from_value(json!({"metadata": {"name": "creds", "labels": {"smtprelay.io/credentials": "true"}},
                "data": {"username": b64(support::USER), "password": b64(support::PASSWORD)}})).expect("secret"))
            .await;
    }
    let relay_docs = (0..relays_n).map(|i| {
        let ns = format!("scale-{}", i % namespaces_n);
        let obj = relay_doc(&ns, &format!("relay-{i}"), h.submission_port);
        (ns, obj)
    });
    stream::iter(relay_docs)
        .map(|(ns, obj)| {
            let api: Api<SmtpRelay> = Api::namespaced(client.clone(), &ns);
            async move { api.create(&PostParams::default(), &obj).await.map(|_| ()) }
        })
        .buffer_unordered(32)
        .try_collect::<Vec<_>>()
        .await
        .expect("create relays");
    let relays_per_ns = relays_n.div_ceil(namespaces_n).max(1);
    let identity_docs = (0..identities_n).map(|i| {
        let n = i % namespaces_n;
        let ns = format!("scale-{n}");
        // A relay of the same namespace: relay-(n + k * namespaces).
        let k = (i / namespaces_n) % relays_per_ns;
        let relay = (n + k * namespaces_n).min(relays_n.saturating_sub(1));
        let relay = if relay % namespaces_n == n { relay } else { n };
        let obj: SenderIdentity = serde_json::from_value(json!({
            "apiVersion": "smtprelay.io/v1alpha1", "kind": "SenderIdentity",
            "metadata": {"name": format!("sender-{i}"), "namespace": ns},
            "spec": {"address": format!("sender-{i}@example.test"), "displayName": format!("Sender {i}"),
                     "usage": ["sales"], "relayRef": {"kind": "SmtpRelay", "name": format!("relay-{relay}")},
                     "confirmation": {"required": true, "ttl": "48h"}}})).expect("identity");
        (ns, obj)
    });
    stream::iter(identity_docs)
        .map(|(ns, obj)| {
            let api: Api<SenderIdentity> = Api::namespaced(client.clone(), &ns);
            async move { api.create(&PostParams::default(), &obj).await.map(|_| ()) }
        })
        .buffer_unordered(32)
        .try_collect::<Vec<_>>()
        .await
        .expect("create identities");
    println!("created in {:.1} s", created.elapsed().as_secs_f64());

    // Cold start.
    let logs = tempfile::tempdir().expect("tempdir");
    let metrics_port = cluster::free_port();
    let confirm_port = cluster::free_port();
    // Progress from one watch per kind: polling with full LISTs would load the API
    // server (10,000 identities are ~66 MB of JSON) and slow what is measured. The
    // watches start, and their initial lists are read, before the operator does.
    let ready_relays = track(Api::<SmtpRelay>::all(client.clone()), relay_ready);
    let sent_identities = track(
        Api::<SenderIdentity>::all(client.clone()),
        |i: &SenderIdentity| {
            i.status
                .as_ref()
                .and_then(|s| s.confirmation.as_ref())
                .is_some_and(|c| c.sent_at.is_some())
        },
    );
    let listed = |t: &Tracked| t.state.lock().unwrap_or_else(|e| e.into_inner()).len();
    let list_deadline = Instant::now() + Duration::from_secs(120);
    while (listed(&ready_relays) < relays_n || listed(&sent_identities) < identities_n)
        && Instant::now() < list_deadline
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let settled = settle().await;
    println!(
        "set-up written back and machine quiet after {:.1} s",
        settled.as_secs_f64()
    );
    let started = Instant::now();
    let operator = start_operator(
        &kubeconfig,
        metrics_port,
        confirm_port,
        &logs.path().join("first.log"),
    );
    let pid = operator.0.id();
    let cpu_before = cpu_table(pid, &dir);
    let others_before = cpu_others(pid);
    let machine_before = machine_cpu();
    let requests_before = apiserver_requests(&client).await;
    let (mut t_relays, mut t_sent) = (None, None);
    let mut at_relays = None;
    let mut peak = 0.0f64;
    let mut waiting = identities_n;
    let mut ready = 0;
    while started.elapsed() < timeout && (t_relays.is_none() || t_sent.is_none()) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if let Some((now, hwm)) = rss(pid) {
            peak = peak.max(now).max(hwm);
        }
        ready = count(&ready_relays);
        if ready == relays_n && t_relays.is_none() {
            t_relays = Some(started.elapsed());
            at_relays = Some((
                cpu_table(pid, &dir),
                cpu_others(pid),
                machine_cpu(),
                count(&sent_identities),
            ));
        }
        waiting = identities_n.saturating_sub(count(&sent_identities));
        if waiting == 0 && t_sent.is_none() {
            t_sent = Some(started.elapsed());
        }
    }
    let cpu_after = cpu_table(pid, &dir);
    let others_after = cpu_others(pid);
    // Progress is known; the watches would only add load from here on.
    drop(ready_relays);
    drop(sent_identities);
    let machine_after = machine_cpu();
    let requests_after = apiserver_requests(&client).await;
    let metrics = scrape(metrics_port).await;
    let secs = |d: Option<Duration>| {
        d.map(|d| format!("{:.1} s", d.as_secs_f64()))
            .unwrap_or_else(|| format!("not within {} s", timeout.as_secs()))
    };
    println!("| what | measured |");
    println!("|---|---|");
    println!(
        "| all relays Ready | {} ({ready}/{relays_n}) |",
        secs(t_relays)
    );
    println!("| all identities ConfirmationSent | {} |", secs(t_sent));
    println!("| identities still waiting | {waiting} |");

    // Idle: nothing is due, nothing is written.
    let before = versions(&client).await;
    let idle_start = Instant::now();
    while idle_start.elapsed() < idle {
        tokio::time::sleep(Duration::from_millis(500)).await;
        if let Some((now, hwm)) = rss(pid) {
            peak = peak.max(now).max(hwm);
        }
    }
    let after = versions(&client).await;
    let steady = rss(pid).map(|(now, _)| now).unwrap_or(0.0);
    println!("| RSS peak / steady | {peak:.1} MiB / {steady:.1} MiB |");
    println!(
        "| status writes in the idle {} s after convergence | {} |",
        idle.as_secs(),
        changed(&before, &after)
    );

    // Where the time went, from the operator's metrics.
    for kind in ["SmtpRelay", "SenderIdentity"] {
        let sum = metric_sum(
            &metrics,
            &format!("smtp_relay_reconcile_duration_seconds_sum{{kind=\"{kind}\"}}"),
        );
        let count = metric_sum(
            &metrics,
            &format!("smtp_relay_reconcile_duration_seconds_count{{kind=\"{kind}\"}}"),
        );
        println!(
            "| {kind} reconciles | {count:.0}, {sum:.1} s in all (mean {:.1} ms) |",
            if count > 0.0 {
                sum / count * 1000.0
            } else {
                0.0
            }
        );
    }
    let smtp_sum = metric_sum(
        &metrics,
        "smtp_relay_verification_step_duration_seconds_sum",
    );
    println!("| time in SMTP steps (all sessions) | {smtp_sum:.1} s |");
    println!(
        "| verification sessions | {:.0} |",
        metric_sum(&metrics, "smtp_relay_verifications_total")
    );
    println!(
        "| confirmation mails sent | {:.0} |",
        metric_sum(&metrics, "smtp_relay_confirmation_mails_sent_total")
    );

    println!(
        "| CPU while converging (s): operator / kube-apiserver / etcd | {} |",
        cpu_since(&cpu_after, &cpu_before)
    );
    println!(
        "| CPU while converging (s), everything else | {} |",
        others_since(&others_after, &others_before)
    );
    if let Some((cpu, others, machine, sent)) = at_relays {
        println!(
            "| until all relays Ready: CPU s operator / kube-apiserver / etcd, everything else, whole machine busy, identities already sent | {} ({}) / {:.1} of {:.1}, {sent} |",
            cpu_since(&cpu, &cpu_before),
            others_since(&others, &others_before),
            machine.0 - machine_before.0,
            machine.1 - machine_before.1,
        );
    }
    let (busy, total) = (
        machine_after.0 - machine_before.0,
        machine_after.1 - machine_before.1,
    );
    println!(
        "| whole machine while converging: busy CPU s / available | {busy:.1} / {total:.1} ({:.0}%) |",
        if total > 0.0 {
            busy / total * 100.0
        } else {
            0.0
        }
    );
    let mut calls: Vec<(String, f64)> = requests_after
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                v - requests_before.get(k).copied().unwrap_or(0.0),
            )
        })
        .filter(|(_, n)| *n >= 1.0)
        .collect();
    calls.sort_by(|a, b| b.1.total_cmp(&a.1));
    println!(
        "| API requests while converging (all clients) | {} |",
        calls
            .iter()
            .take(8)
            .map(|(k, n)| format!("{k} {n:.0}"))
            .collect::<Vec<_>>()
            .join(", ")
    );

    // Restart with everything converged.
    drop(operator);
    let before = versions(&client).await;
    let metrics_port = cluster::free_port();
    let restarted = start_operator(
        &kubeconfig,
        metrics_port,
        confirm_port,
        &logs.path().join("second.log"),
    );
    tokio::time::sleep(Duration::from_secs(20)).await;
    let metrics = scrape(metrics_port).await;
    let after = versions(&client).await;
    let sessions = metric_sum(&metrics, "smtp_relay_verifications_total")
        + metric_sum(&metrics, "smtp_relay_confirmation_mails_sent_total");
    println!(
        "| after a restart (20 s): SMTP sessions / status writes | {sessions:.0} / {} |",
        changed(&before, &after)
    );

    // The rows to keep, on the restarted operator, converged and idle.
    let keep_n = env_num("SCALE_KEEP_RELAYS", 20);
    keep::apply_to_ready_row(&client, "scale-0", h.submission_port, keep_n).await;
    keep::unrelated_secrets_row(
        &client,
        restarted.0.id(),
        env_num("SCALE_NOISE_SECRETS", 20_000),
    )
    .await;
    keep::apiserver_restart_row(&client, &dir, "scale-0", h.submission_port).await;
    drop(restarted);
    let log = std::fs::read_to_string(logs.path().join("first.log")).unwrap_or_default();
    let errors: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("ERROR") || l.contains("WARN"))
        // The envtest kubeconfig skips the API server's certificate check.
        .filter(|l| !l.contains("Server cert bypassed"))
        .collect();
    println!(
        "| operator warnings and errors (first run) | {} |",
        errors.len()
    );
    for line in errors.iter().take(5) {
        println!("    {}", line.chars().take(300).collect::<String>());
    }
}
