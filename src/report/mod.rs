//! `kubectl smtprelay export`: the seed's table of SMTP servers and sender
//! addresses for people who do not use kubectl, as CSV, JSON (in the plugin), an
//! Excel workbook or a PDF. Pure: rows in, bytes out.

pub mod csv;
mod pdf;
mod xlsx;

pub use pdf::to_pdf;
pub use xlsx::{headers as xlsx_headers, to_xlsx};

use crate::api::SmtpRelayStatus;
use crate::plugin::Row;
use crate::relay::human_micros;

/// Why a report could not be written.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("cannot write the spreadsheet: {0}")]
    Xlsx(#[from] rust_xlsxwriter::XlsxError),
}

/// The report's columns, in order (the seed's table).
pub const COLUMNS: [&str; 16] = [
    "ID",
    "Title",
    "Host",
    "Port",
    "Security",
    "Auth",
    "Sender address",
    "Sender name",
    "User",
    "Usage",
    "Confirmation",
    "Ready",
    "Last verification",
    "Latency p50",
    "Latency p95",
    "Delivery",
];

/// One cell: text, a whole number (the port), or a duration in microseconds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Cell {
    Text(String),
    Number(i64),
    Micros(Option<i64>),
}

impl Cell {
    /// The cell as people read it (`2.35ms` for a duration, empty when unknown).
    pub fn text(&self) -> String {
        match self {
            Cell::Text(t) => t.clone(),
            Cell::Number(n) => n.to_string(),
            Cell::Micros(Some(us)) => human_micros(*us),
            Cell::Micros(None) => String::new(),
        }
    }
}

/// `namespace/name`, or `name` for a cluster-scoped relay.
pub fn id(row: &Row) -> String {
    if row.namespace.is_empty() {
        row.name.clone()
    } else {
        format!("{}/{}", row.namespace, row.name)
    }
}

/// The report cells of one row, in [`COLUMNS`] order.
pub fn cells(row: &Row) -> [Cell; 16] {
    let text = |s: &str| Cell::Text(s.to_string());
    let ready = if row.reason.is_empty() || row.ready == "True" {
        row.ready.clone()
    } else {
        format!("{} ({})", row.ready, row.reason)
    };
    [
        Cell::Text(id(row)),
        text(&row.title),
        text(&row.host),
        row.port
            .parse::<i64>()
            .map(Cell::Number)
            .unwrap_or_else(|_| text(&row.port)),
        text(&row.security),
        text(&row.auth),
        text(&row.sender_address),
        text(&row.sender_name),
        text(&row.user),
        text(&row.usage),
        text(&row.confirmation),
        Cell::Text(ready),
        text(&row.last_verified),
        Cell::Micros(row.latency_p50_micros),
        Cell::Micros(row.latency_p95_micros),
        text(&row.delivery),
    ]
}

/// The two parts of a report: relays (both kinds), then sender identities.
pub fn sections(rows: &[Row]) -> [(&'static str, Vec<&Row>); 2] {
    let (identities, relays): (Vec<&Row>, Vec<&Row>) =
        rows.iter().partition(|r| r.kind == "SenderIdentity");
    [("Relays", relays), ("Sender identities", identities)]
}

/// The delivery cell of a relay: status.lastVerification.delivery, written by the
/// round-trip probe when the relay has one. Read through JSON so the column fills
/// in with whatever that field carries, and stays empty without it.
pub fn delivery_of(status: &SmtpRelayStatus) -> String {
    serde_json::to_value(status)
        .ok()
        .map(|v| delivery_text(v.pointer("/lastVerification/delivery")))
        .unwrap_or_default()
}

/// A delivery value in a few words: its result (or state), and its latency when it
/// has one (a field named latency… or duration…, in Micros, Ms or Seconds).
pub fn delivery_text(value: Option<&serde_json::Value>) -> String {
    use serde_json::Value;
    match value {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Object(o)) => {
            let result = ["result", "state", "status"]
                .iter()
                .find_map(|k| o.get(*k).and_then(Value::as_str));
            let latency = o.iter().find_map(|(k, v)| {
                let v = v.as_f64()?;
                if !(k.starts_with("latency") || k.starts_with("duration")) {
                    return None;
                }
                let micros = if k.ends_with("Micros") {
                    v
                } else if k.ends_with("Ms") {
                    v * 1e3
                } else if k.ends_with("Seconds") {
                    v * 1e6
                } else {
                    return None;
                };
                Some(human_micros(micros as i64))
            });
            match (result, latency) {
                (Some(r), Some(l)) => format!("{r} in {l}"),
                (Some(r), None) => r.to_string(),
                (None, Some(l)) => l,
                (None, None) => String::new(),
            }
        }
        Some(other) => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn delivery_reads_what_the_probe_writes() {
        assert_eq!(delivery_text(None), "");
        assert_eq!(
            delivery_text(Some(&json!({"result": "Delivered", "latencyMs": 1500}))),
            "Delivered in 1.50s"
        );
        assert_eq!(
            delivery_text(Some(&json!({"state": "Missing", "folder": "INBOX"}))),
            "Missing"
        );
        assert_eq!(
            delivery_text(Some(&json!({"durationMicros": 800}))),
            "800µs"
        );
        assert_eq!(delivery_of(&SmtpRelayStatus::default()), "");
    }

    #[test]
    fn cells_follow_the_columns() {
        let row = Row {
            kind: "SmtpRelay".into(),
            namespace: "team".into(),
            name: "plain".into(),
            port: "2525".into(),
            ready: "False".into(),
            reason: "AuthRejected".into(),
            latency_p50_micros: Some(2_345),
            ..Default::default()
        };
        let c = cells(&row);
        assert_eq!(c[0], Cell::Text("team/plain".into()));
        assert_eq!(c[3], Cell::Number(2525));
        assert_eq!(c[11].text(), "False (AuthRejected)");
        assert_eq!(c[13].text(), "2.35ms");
        assert_eq!(c[14].text(), "");
        let cluster = Row {
            name: "shared".into(),
            ..Default::default()
        };
        assert_eq!(id(&cluster), "shared");
        let both = [
            row.clone(),
            Row {
                kind: "SenderIdentity".into(),
                ..Default::default()
            },
        ];
        let [(relays, r), (identities, i)] = sections(&both);
        assert_eq!(
            (relays, r.len(), identities, i.len()),
            ("Relays", 1, "Sender identities", 1)
        );
    }
}
