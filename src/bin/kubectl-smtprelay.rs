//! kubectl plugin: `kubectl smtprelay status|test|resend|confirm|export`.
//! Install by putting this binary on PATH (kubectl finds `kubectl-smtprelay`).

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use smtp_relay_operator::plugin;

#[derive(Parser)]
#[command(
    name = "kubectl smtprelay",
    version,
    about = "SMTP relays and sender identities at a glance"
)]
struct Cli {
    /// Namespace (default: the kubeconfig context's namespace).
    #[arg(short = 'n', long, global = true)]
    namespace: Option<String>,
    /// All namespaces.
    #[arg(short = 'A', long, global = true)]
    all_namespaces: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Csv,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Relays and identities in one table.
    Status,
    /// Send a test message through a relay now and print the relay's answer.
    Test {
        /// The SmtpRelay (or, with --cluster, ClusterSmtpRelay).
        relay: String,
        /// Recipient of the test message.
        #[arg(long)]
        to: String,
        /// The relay is a ClusterSmtpRelay.
        #[arg(long)]
        cluster: bool,
        /// How long to wait for the answer, in seconds.
        #[arg(long, default_value_t = 90)]
        timeout: u64,
    },
    /// Ask for a new confirmation mail for a SenderIdentity.
    Resend { identity: String },
    /// Confirm a SenderIdentity with the code from its confirmation mail.
    Confirm {
        identity: String,
        #[arg(long)]
        code: String,
        #[arg(long, default_value_t = 60)]
        timeout: u64,
    },
    /// The status table as CSV or JSON.
    Export {
        #[arg(long, value_enum, default_value = "csv")]
        format: Format,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let client = match kube::Client::try_default().await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: cannot configure a cluster client: {e}");
            return ExitCode::from(2);
        }
    };
    let ns = cli
        .namespace
        .clone()
        .unwrap_or_else(|| client.default_namespace().to_string());
    let scope = (!cli.all_namespaces).then_some(ns.as_str());
    let result: Result<ExitCode, plugin::PluginError> = async {
        match cli.command {
            Command::Status => {
                print!(
                    "{}",
                    plugin::render_table(&plugin::collect(&client, scope).await?)
                );
                Ok(ExitCode::SUCCESS)
            }
            Command::Export { format } => {
                let rows = plugin::collect(&client, scope).await?;
                match format {
                    Format::Csv => print!("{}", plugin::to_csv(&rows)),
                    Format::Json => println!(
                        "{}",
                        serde_json::to_string_pretty(&rows)
                            .map_err(|e| plugin::PluginError::Invalid(e.to_string()))?
                    ),
                }
                Ok(ExitCode::SUCCESS)
            }
            Command::Test {
                relay,
                to,
                cluster,
                timeout,
            } => {
                eprintln!("asking the operator to send a test message through {relay} to {to}...");
                let t = plugin::test_send(
                    &client,
                    cluster,
                    &ns,
                    &relay,
                    &to,
                    Duration::from_secs(timeout),
                )
                .await?;
                println!(
                    "{}: {} ({}){}",
                    t.result,
                    t.message,
                    t.reason,
                    t.message_id
                        .map(|m| format!(", Message-ID {m}"))
                        .unwrap_or_default()
                );
                Ok(if t.result == "Succeeded" {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::FAILURE
                })
            }
            Command::Resend { identity } => {
                let value = plugin::resend(&client, &ns, &identity).await?;
                println!("new confirmation requested for {ns}/{identity} (request {value})");
                Ok(ExitCode::SUCCESS)
            }
            Command::Confirm {
                identity,
                code,
                timeout,
            } => {
                let (ok, message) =
                    plugin::confirm(&client, &ns, &identity, &code, Duration::from_secs(timeout))
                        .await?;
                println!(
                    "{}: {message}",
                    if ok { "confirmed" } else { "not confirmed" }
                );
                Ok(if ok {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::FAILURE
                })
            }
        }
    }
    .await;
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}
