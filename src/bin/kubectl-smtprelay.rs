//! kubectl plugin: `kubectl smtprelay status|test|resend|confirm|export`.
//! Install by putting this binary on PATH (kubectl finds `kubectl-smtprelay`).

use std::process::ExitCode;
use std::time::Duration;

use std::io::{IsTerminal as _, Write as _};

use clap::{Parser, Subcommand, ValueEnum};
use smtp_relay_operator::{plugin, report};

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
    /// An Excel workbook: a sheet of relays and one of sender identities.
    Xlsx,
    /// A PDF (A4 landscape): the relays, then the sender identities.
    Pdf,
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
    /// The status table as CSV, JSON, an Excel workbook or a PDF.
    Export {
        #[arg(long, value_enum, default_value = "csv")]
        format: Format,
        /// Write to this file instead of standard output (xlsx and pdf are binary:
        /// they go to standard output only when it is not a terminal).
        #[arg(short = 'o', long)]
        output: Option<std::path::PathBuf>,
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
            Command::Export { format, output } => {
                let binary = matches!(format, Format::Xlsx | Format::Pdf);
                if binary && output.is_none() && std::io::stdout().is_terminal() {
                    return Err(plugin::PluginError::Invalid(
                        "xlsx and pdf are binary: pass --output FILE or redirect standard output"
                            .into(),
                    ));
                }
                let rows = plugin::collect(&client, scope).await?;
                let bytes = match format {
                    Format::Csv => plugin::to_csv(&rows).into_bytes(),
                    Format::Json => {
                        let mut text = serde_json::to_string_pretty(&rows)
                            .map_err(|e| plugin::PluginError::Invalid(e.to_string()))?;
                        text.push('\n');
                        text.into_bytes()
                    }
                    Format::Xlsx => report::to_xlsx(&rows)
                        .map_err(|e| plugin::PluginError::Invalid(e.to_string()))?,
                    Format::Pdf => {
                        let now = jiff::Timestamp::now();
                        report::to_pdf(
                            &rows,
                            &now.round(jiff::Unit::Second).unwrap_or(now).to_string(),
                        )
                    }
                };
                let written = match &output {
                    Some(path) => std::fs::write(path, &bytes).map_err(|e| {
                        plugin::PluginError::Invalid(format!(
                            "cannot write {}: {e}",
                            path.display()
                        ))
                    }),
                    None => std::io::stdout().write_all(&bytes).map_err(|e| {
                        plugin::PluginError::Invalid(format!("cannot write the export: {e}"))
                    }),
                };
                written?;
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
