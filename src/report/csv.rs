//! CSV (RFC 4180) with a header line: every field of the table.

use crate::plugin::Row;

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// CSV with a header line (RFC 4180).
pub fn to_csv(rows: &[Row]) -> String {
    let header = [
        "kind",
        "namespace",
        "name",
        "title",
        "host",
        "port",
        "security",
        "auth",
        "user",
        "sender",
        "usage",
        "confirmation",
        "link",
        "ready",
        "reason",
        "lastVerified",
        "failingStep",
        "senderAddress",
        "senderName",
        "latencyP50Micros",
        "latencyP95Micros",
        "recentFailures",
        "delivery",
    ];
    let mut out = header.join(",") + "\r\n";
    for r in rows {
        let micros = |v: Option<i64>| v.map(|n| n.to_string()).unwrap_or_default();
        let fields = [
            r.kind.clone(),
            r.namespace.clone(),
            r.name.clone(),
            r.title.clone(),
            r.host.clone(),
            r.port.clone(),
            r.security.clone(),
            r.auth.clone(),
            r.user.clone(),
            r.sender.clone(),
            r.usage.clone(),
            r.confirmation.clone(),
            r.link.clone(),
            r.ready.clone(),
            r.reason.clone(),
            r.last_verified.clone(),
            r.failing_step.clone(),
            r.sender_address.clone(),
            r.sender_name.clone(),
            micros(r.latency_p50_micros),
            micros(r.latency_p95_micros),
            r.recent_failures.clone(),
            r.delivery.clone(),
        ];
        out += &fields
            .iter()
            .map(|f| csv_field(f))
            .collect::<Vec<_>>()
            .join(",");
        out += "\r\n";
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_quotes_what_needs_quoting() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        let rows = vec![Row {
            kind: "SmtpRelay".into(),
            sender: "ACME, Inc <a@b.c>".into(),
            latency_p50_micros: Some(1200),
            ..Default::default()
        }];
        let csv = to_csv(&rows);
        assert!(csv.starts_with("kind,namespace,name,"));
        assert!(csv.contains("\"ACME, Inc <a@b.c>\""));
        assert!(
            csv.lines().nth(1).is_some_and(|l| l.ends_with(",1200,,,")),
            "{csv}"
        );
        assert_eq!(csv.lines().count(), 2);
    }
}
