//! Whether the sender domain accepts mail (replies, bounces): MX records, the
//! implicit MX of an A/AAAA record (RFC 5321 §5.1), or a null MX (RFC 7505).

use hickory_resolver::TokioResolver;

use super::dns::{self, Miss};
use crate::api::MxCheck;

fn outcome(result: &str, records: Vec<String>, message: String) -> MxCheck {
    MxCheck {
        result: result.into(),
        records,
        message,
    }
}

pub async fn check(r: &TokioResolver, domain: &str) -> MxCheck {
    match dns::mx(r, domain).await {
        Ok(records) => {
            let texts: Vec<String> = records
                .iter()
                .map(|(p, e)| format!("{p} {}", if e.is_empty() { "." } else { e }))
                .collect();
            if records.len() == 1 && records[0].1.is_empty() {
                return outcome(
                    "NullMx",
                    texts,
                    format!(
                        "{domain} publishes a null MX (RFC 7505): it accepts no mail, so receivers may refuse it as a sender"
                    ),
                );
            }
            outcome("Found", texts, format!("{domain} receives mail"))
        }
        Err(Miss::Temporary(e)) => outcome("TempError", vec![], format!("MX of {domain}: {e}")),
        Err(Miss::NotFound) => match dns::addresses(r, domain).await {
            Ok(ips) => outcome(
                "ImplicitA",
                ips.iter().map(|i| i.to_string()).collect(),
                format!("{domain} has no MX; mail goes to its A/AAAA address"),
            ),
            Err(Miss::NotFound) => outcome(
                "NoMx",
                vec![],
                format!(
                    "{domain} has no MX and no address: replies and bounces cannot reach it, and receivers may refuse it as a sender"
                ),
            ),
            Err(Miss::Temporary(e)) => {
                outcome("TempError", vec![], format!("A/AAAA of {domain}: {e}"))
            }
        },
    }
}
