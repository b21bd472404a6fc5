//! smtp-relay-operator command line: `run` (the operator), `crd` (print or write the
//! CRDs), `verify` (the controller's verification on manifest files, offline).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use smtp_relay_operator::{api, confirm, runtime, smtp, verify};

#[derive(Parser)]
#[command(name = "smtp-relay-operator", version, about)]
struct Cli {
    /// Log as JSON lines instead of human-readable text.
    #[arg(long, global = true, env = "SMTP_RELAY_LOG_JSON")]
    log_json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum Output {
    Table,
    Yaml,
    Json,
}

// Parsed once at start-up: the size of the largest variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Run the operator against the cluster in KUBECONFIG (or in-cluster config).
    Run {
        /// Namespace for ClusterSmtpRelay references that name none.
        #[arg(long, env = "POD_NAMESPACE", default_value = "smtp-relay-operator")]
        namespace: String,
        /// Concurrent SMTP sessions per relay host.
        #[arg(long, default_value_t = 2)]
        sessions_per_host: usize,
        /// Concurrent reconciles per kind.
        #[arg(long, default_value_t = 16)]
        concurrency: u16,
        /// Address of /healthz, /readyz and /metrics.
        #[arg(long, default_value = "0.0.0.0:8080")]
        metrics_addr: std::net::SocketAddr,
        /// Address of the confirmation endpoint (links mailed to sender addresses).
        #[arg(long, default_value = "0.0.0.0:8081")]
        confirmation_addr: std::net::SocketAddr,
        /// Public base URL of the confirmation endpoint, e.g. https://mail-confirm.example.com.
        /// Without it, confirmation mails carry only the code.
        #[arg(long)]
        confirmation_base_url: Option<String>,
        /// From address of confirmation mails (default: the relay's defaultSender
        /// address, which the relay accepts).
        #[arg(long)]
        confirmation_from: Option<String>,
        /// Display name of confirmation mails.
        #[arg(long, default_value = confirm::DEFAULT_CONFIRMATION_FROM_NAME)]
        confirmation_from_name: String,
        /// Reply-To of confirmation mails (default: the From address).
        #[arg(long)]
        confirmation_reply_to: Option<String>,
        /// Secret in --namespace holding the confirmation key (created if absent).
        #[arg(long, default_value = "smtp-relay-operator-confirmation-key")]
        confirmation_key_secret: String,
        /// CIDRs of proxies in front of the confirmation endpoint (comma-separated);
        /// their X-Forwarded-For names the client the rate limit counts.
        #[arg(long, value_delimiter = ',')]
        trusted_proxies: Vec<smtp_relay_operator::confirm::server::Cidr>,
        /// Take a coordination.k8s.io Lease before acting (for replicas > 1).
        #[arg(long, default_value_t = false, action = clap::ArgAction::Set)]
        leader_election: bool,
        /// Name of the Lease, in --namespace.
        #[arg(long, default_value = "smtp-relay-operator")]
        lease_name: String,
        #[command(flatten)]
        destinations: Destinations,
        #[command(flatten)]
        dns: Dns,
        /// Longest wait for in-flight SMTP sessions on shutdown.
        #[arg(long, default_value = "30s", value_parser = parse_duration)]
        shutdown_timeout: std::time::Duration,
    },
    /// Print the CRDs as YAML, or write one file per CRD into a directory.
    Crd {
        /// Directory to write into (e.g. crds/); prints to stdout when omitted.
        #[arg(long)]
        out_dir: Vec<PathBuf>,
    },
    /// Verify relays described in manifest files, exactly as the controller would.
    Verify {
        /// Files or directories with SmtpRelay, ClusterSmtpRelay, Secret, ConfigMap manifests.
        #[arg(short = 'f', long = "filename", required = true)]
        files: Vec<PathBuf>,
        /// Output format.
        #[arg(short = 'o', long = "output", value_enum, default_value = "table")]
        output: Output,
        /// Read Secrets and ConfigMaps missing from the files from the cluster.
        #[arg(long)]
        secrets_from_cluster: bool,
        /// Namespace for ClusterSmtpRelay references that name none.
        #[arg(long, default_value = "smtp-relay-operator")]
        operator_namespace: String,
        /// Concurrent SMTP sessions per relay host.
        #[arg(long, default_value_t = 2)]
        sessions_per_host: usize,
        #[command(flatten)]
        destinations: Destinations,
        #[command(flatten)]
        dns: Dns,
    },
}

fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    smtp_relay_operator::duration::parse(s).map_err(|e| format!("{s:?} is not a duration: {e}"))
}

/// Where relays may connect: the same flags on `run` and `verify`.
#[derive(clap::Args)]
struct Destinations {
    /// Destinations relays may reach although the defaults refuse them
    /// (comma-separated CIDRs or addresses, e.g. 127.0.0.0/8 for a relay on the
    /// node's loopback). An explicit rule wins over the defaults.
    #[arg(long, value_delimiter = ',')]
    allowed_destinations: Vec<smtp::Cidr>,
    /// Destinations relays may never reach (comma-separated CIDRs or addresses).
    #[arg(long, value_delimiter = ',')]
    denied_destinations: Vec<smtp::Cidr>,
    /// The cluster's service and pod ranges (comma-separated CIDRs): refused for
    /// SmtpRelays unless allowed with --allowed-destinations.
    #[arg(long, value_delimiter = ',')]
    cluster_cidrs: Vec<smtp::Cidr>,
}

/// The deliverability checks: the same flags on `run` and `verify`.
#[derive(clap::Args)]
struct Dns {
    /// DNS server for the deliverability checks (MX, SPF, DKIM, DMARC, blocklists),
    /// as IP or IP:PORT (port 53 by default). Default: the system resolver.
    #[arg(long, env = "SMTP_RELAY_DNS_SERVER", value_parser = parse_dns_server)]
    dns_server: Option<std::net::SocketAddr>,
    /// DNS blocklist zones the relays' sending addresses are looked up in
    /// (comma-separated; "" for none).
    #[arg(long, value_delimiter = ',', default_values_t = smtp_relay_operator::deliverability::DEFAULT_DNSBL_ZONES.iter().map(|z| z.to_string()).collect::<Vec<_>>(), value_parser = parse_zone)]
    dnsbl_zones: Vec<String>,
    /// Check sender domains and blocklists (false for clusters without DNS).
    #[arg(long, env = "SMTP_RELAY_DELIVERABILITY_CHECKS", default_value_t = true, action = clap::ArgAction::Set)]
    deliverability_checks: bool,
}

fn parse_dns_server(s: &str) -> Result<std::net::SocketAddr, String> {
    if let Ok(addr) = s.parse::<std::net::SocketAddr>() {
        return Ok(addr);
    }
    s.parse::<std::net::IpAddr>()
        .map(|ip| std::net::SocketAddr::new(ip, 53))
        .map_err(|_| format!("{s:?} is not an IP address or IP:PORT"))
}

fn parse_zone(s: &str) -> Result<String, String> {
    let zone = s.trim().trim_end_matches('.');
    if zone.is_empty() {
        return Ok(String::new());
    }
    if zone.len() > 200 || smtp_relay_operator::api::check_host(zone).is_err() {
        return Err(format!("{s:?} is not a DNS zone name"));
    }
    Ok(zone.to_ascii_lowercase())
}

impl Dns {
    fn checker(self) -> Result<Option<smtp_relay_operator::deliverability::Checker>, String> {
        if !self.deliverability_checks {
            return Ok(None);
        }
        let zones: Vec<String> = self
            .dnsbl_zones
            .into_iter()
            .filter(|z| !z.is_empty())
            .collect();
        let settings = smtp_relay_operator::deliverability::DnsSettings {
            server: self.dns_server,
            timeout: None,
        };
        smtp_relay_operator::deliverability::Checker::new(&settings, zones)
            .map(Some)
            .map_err(|e| e.to_string())
    }
}

impl Destinations {
    fn policy(self) -> std::sync::Arc<smtp::DestinationPolicy> {
        std::sync::Arc::new(smtp::DestinationPolicy::new(
            self.allowed_destinations,
            self.denied_destinations,
            self.cluster_cidrs,
        ))
    }
}

fn init_logging(json: bool) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,kube=warn,tower=warn,hyper=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().flatten_event(true).init();
    } else {
        builder.init();
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Crd { out_dir } => crd(out_dir),
        Command::Run {
            namespace,
            sessions_per_host,
            concurrency,
            metrics_addr,
            confirmation_addr,
            confirmation_base_url,
            confirmation_from,
            confirmation_from_name,
            confirmation_reply_to,
            confirmation_key_secret,
            trusted_proxies,
            leader_election,
            lease_name,
            destinations,
            dns,
            shutdown_timeout,
        } => {
            init_logging(cli.log_json);
            let deliverability = match dns.checker() {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(2);
                }
            };
            let client = match kube::Client::try_default().await {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("error: cannot configure a cluster client: {e}");
                    return ExitCode::from(2);
                }
            };
            let identity = std::env::var("POD_NAME")
                .unwrap_or_else(|_| format!("local-{}", std::process::id()));
            tracing::info!(%namespace, sessions_per_host, leader_election, "starting");
            let opts = runtime::RunOptions {
                settings: runtime::Settings {
                    operator_namespace: namespace,
                    sessions_per_host,
                    concurrency,
                    destinations: destinations.policy(),
                    // Read from the operator's key Secret once running.
                    input_key: None,
                    deliverability,
                },
                metrics_addr,
                confirmation_addr,
                confirmation_base_url: confirmation_base_url.filter(|u| !u.is_empty()),
                confirmation_sender: confirm::ConfirmationSender {
                    from: confirmation_from.filter(|a| !a.is_empty()),
                    from_name: confirmation_from_name,
                    reply_to: confirmation_reply_to.filter(|a| !a.is_empty()),
                },
                confirmation_key_secret,
                trusted_proxies,
                leader_election,
                lease_name,
                identity,
                shutdown_timeout,
            };
            match runtime::run(client, opts).await {
                Ok(()) => {
                    tracing::info!("stopped");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    tracing::error!(error = %e, "stopped");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Verify {
            files,
            output,
            secrets_from_cluster,
            operator_namespace,
            sessions_per_host,
            destinations,
            dns,
        } => {
            let deliverability = match dns.checker() {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(2);
                }
            };
            let options = verify::Options {
                operator_namespace,
                sessions_per_host,
                destinations: destinations.policy(),
                deliverability,
            };
            run_verify(files, output, secrets_from_cluster, options).await
        }
    }
}

/// Relays then identities, as one list (each item says its kind).
fn all_verdicts(
    relays: &[verify::Verdict],
    identities: &[verify::IdentityVerdict],
) -> Result<Vec<serde_json::Value>, String> {
    let mut out = Vec::new();
    for r in relays {
        out.push(serde_json::to_value(r).map_err(|e| e.to_string())?);
    }
    for i in identities {
        out.push(serde_json::to_value(i).map_err(|e| e.to_string())?);
    }
    Ok(out)
}

fn crd(out_dirs: Vec<PathBuf>) -> ExitCode {
    let docs = match api::crds_yaml() {
        Ok(d) => d,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    if out_dirs.is_empty() {
        let all: Vec<String> = docs.into_iter().map(|(_, y)| y).collect();
        print!("{}", all.join("---\n"));
        return ExitCode::SUCCESS;
    }
    for dir in out_dirs {
        for (name, yaml) in &docs {
            let path = dir.join(name);
            if let Err(e) = std::fs::create_dir_all(&dir).and_then(|_| std::fs::write(&path, yaml))
            {
                eprintln!("error: writing {}: {e}", path.display());
                return ExitCode::FAILURE;
            }
            eprintln!("wrote {}", path.display());
        }
    }
    ExitCode::SUCCESS
}

async fn run_verify(
    files: Vec<PathBuf>,
    output: Output,
    secrets_from_cluster: bool,
    options: verify::Options,
) -> ExitCode {
    let manifests = match verify::load(&files) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let cluster = if secrets_from_cluster {
        match kube::Client::try_default().await {
            Ok(client) => Some(smtp_relay_operator::k8s::source::KubeSource {
                client,
                input_key: None,
            }),
            Err(e) => {
                eprintln!("error: --secrets-from-cluster: cannot reach the cluster: {e}");
                return ExitCode::from(2);
            }
        }
    } else {
        None
    };
    let mut manifests = manifests;
    let identities = std::mem::take(&mut manifests.identities);
    let relays = manifests.relays.clone();
    let verdicts = verify::run(manifests, cluster, &options, |line| eprintln!("{line}")).await;
    if !identities.is_empty() && options.deliverability.is_some() {
        eprintln!(
            "checking the DNS records of {} sender domains...",
            identities.len()
        );
    }
    let domains =
        verify::check_identities(identities, &relays, options.deliverability.as_ref()).await;
    let rendered = match output {
        Output::Table => Ok(format!(
            "{}{}{}",
            if verdicts.is_empty() {
                String::new()
            } else {
                verify::render_table(&verdicts)
            },
            verify::render_blocklists(&verdicts),
            verify::render_identities(&domains)
        )),
        Output::Yaml => all_verdicts(&verdicts, &domains)
            .and_then(|v| serde_yaml::to_string(&v).map_err(|e| e.to_string())),
        Output::Json => all_verdicts(&verdicts, &domains).and_then(|v| {
            serde_json::to_string_pretty(&v)
                .map(|s| s + "\n")
                .map_err(|e| e.to_string())
        }),
    };
    match rendered {
        Ok(text) => print!("{text}"),
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    }
    if !domains.iter().all(verify::IdentityVerdict::acceptable) {
        return ExitCode::FAILURE;
    }
    if verdicts.iter().all(verify::Verdict::ready) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
