//! Property tests with a bounded budget (run by `cargo test`, so in CI): whatever the
//! input, manifest loading and validation, duration parsing, the destination policy
//! and the table renderer never panic, and they keep their promises. Manifests are
//! generated from the bundled examples (structure-aware mutations, then text-level
//! damage). Nothing here opens a connection: only loading and validation functions
//! run, never a verification session.
//!
//! The budget per property is `PROPTEST_CASES` when set (e.g. `PROPTEST_CASES=20000`
//! for a longer local campaign), else the number below.

#[path = "support/examples.rs"]
mod examples;
#[path = "support/hosts.rs"]
mod hosts;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use proptest::prelude::*;
use serde_json::{Map, Value, json};
use smtp_relay_operator::duration;
use smtp_relay_operator::relay::{effective_port, schedule};
use smtp_relay_operator::smtp::{DestinationPolicy, Scope};
use smtp_relay_operator::table;
use smtp_relay_operator::verify::{self, Manifests};

fn config(default_cases: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(default_cases);
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Every document of examples/, as the seed corpus.
fn corpus() -> &'static [Value] {
    static CORPUS: std::sync::OnceLock<Vec<Value>> = std::sync::OnceLock::new();
    CORPUS.get_or_init(|| {
        let mut out = Vec::new();
        for p in examples::example_files() {
            let text = std::fs::read_to_string(&p).expect("read");
            for d in smtp_relay_operator::manifest::documents(&text).expect("yaml") {
                if !d.value.is_null() {
                    out.push(d.value);
                }
            }
        }
        out.sort_by_key(|v| v.to_string());
        assert!(out.len() >= 10, "only {} example documents", out.len());
        out
    })
}

/// Values a fuzzer likes: boundaries, bad patterns, control characters, huge
/// numbers and strings, wrong types.
fn edge_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<String>().prop_map(Value::String),
        "[a-z0-9.:\\[\\]-]{0,12}".prop_map(Value::String),
        prop::sample::select(
            vec![
                "",
                "0",
                "-1",
                "169.254.169.254",
                "localhost",
                "a\u{0}b",
                "a\u{1b}[31m",
                "a\u{7f}",
                "a\u{85}",
                "a\u{2028}",
                "a\r\nBcc: x@y.z",
                "\u{feff}x",
                "5124095576030431h",
                "5124095576030430h9h",
                "0.99999999999999999999s",
                "2562047h47m16.854775807s",
                "2562047h47m16.854775808s",
                "1h30m",
                "-5m",
                "1e400",
                "yes",
                "Bad Name/../x",
                "a@b@c",
                "x@example.com",
                "Secret",
                "ConfigMap",
                "StartTls",
                "Plain",
            ]
            .into_iter()
            .chain(hosts::MALFORMED_HOSTS.iter().copied())
            .collect::<Vec<_>>()
        )
        .prop_map(|s| Value::String(s.to_string())),
        (1usize..70_000, any::<char>()).prop_map(|(n, c)| Value::String(c.to_string().repeat(n))),
        any::<i64>().prop_map(|n| json!(n)),
        any::<u64>().prop_map(|n| json!(n)),
        prop::sample::select(vec![
            0i64,
            1,
            25,
            465,
            587,
            65535,
            65536,
            -1,
            i64::MAX,
            i64::MIN
        ])
        .prop_map(|n| json!(n)),
        any::<f64>().prop_map(|f| json!(f)),
        any::<bool>().prop_map(Value::Bool),
        Just(Value::Null),
        Just(json!({})),
        Just(json!([])),
        Just(json!([null, 1, "x", {"name": "X-A", "value": "v"}])),
        Just(json!({"name": "from", "value": "x"})),
    ]
}

#[derive(Clone, Debug)]
enum Edit {
    Set(usize, Value),
    Remove(usize),
    Add(usize, String, Value),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        4 => (any::<usize>(), edge_value()).prop_map(|(p, v)| Edit::Set(p, v)),
        1 => any::<usize>().prop_map(Edit::Remove),
        1 => (any::<usize>(), "[a-zA-Z]{1,8}", edge_value()).prop_map(|(p, k, v)| Edit::Add(p, k, v)),
    ]
}

/// Damage done to the text after the edits.
#[derive(Clone, Debug)]
enum Damage {
    None,
    FlipByte(usize, u8),
    Truncate(usize),
    DuplicateLine(usize),
    Insert(usize, String),
    Bom,
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        4 => Just(Damage::None),
        1 => (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Damage::FlipByte(i, b)),
        1 => any::<usize>().prop_map(Damage::Truncate),
        1 => any::<usize>().prop_map(Damage::DuplicateLine),
        1 => (any::<usize>(), any::<String>()).prop_map(|(i, s)| Damage::Insert(i, s)),
        1 => Just(Damage::Bom),
    ]
}

/// Paths to every node of `v` (keys and indexes).
fn paths(v: &Value, at: Vec<Value>, out: &mut Vec<Vec<Value>>) {
    out.push(at.clone());
    match v {
        Value::Object(m) => {
            for (k, sub) in m {
                let mut p = at.clone();
                p.push(Value::String(k.clone()));
                paths(sub, p, out);
            }
        }
        Value::Array(a) => {
            for (i, sub) in a.iter().enumerate() {
                let mut p = at.clone();
                p.push(json!(i));
                paths(sub, p, out);
            }
        }
        _ => {}
    }
}

fn node<'a>(v: &'a mut Value, path: &[Value]) -> Option<&'a mut Value> {
    let mut cur = v;
    for seg in path {
        cur = match seg {
            Value::String(k) => cur.as_object_mut()?.get_mut(k)?,
            Value::Number(i) => cur.as_array_mut()?.get_mut(i.as_u64()? as usize)?,
            _ => return None,
        };
    }
    Some(cur)
}

fn apply(doc: &mut Value, edit: &Edit) {
    let mut all = Vec::new();
    paths(doc, Vec::new(), &mut all);
    let pick = |i: usize| all[i % all.len()].clone();
    match edit {
        Edit::Set(i, value) => {
            if let Some(n) = node(doc, &pick(*i)) {
                *n = value.clone();
            }
        }
        Edit::Remove(i) => {
            let path = pick(*i);
            if let Some((last, parent)) = path.split_last()
                && let Some(p) = node(doc, parent)
            {
                match (p, last) {
                    (Value::Object(m), Value::String(k)) => {
                        m.remove(k);
                    }
                    (Value::Array(a), Value::Number(n)) => {
                        if let Some(i) = n.as_u64().map(|i| i as usize).filter(|i| *i < a.len()) {
                            a.remove(i);
                        }
                    }
                    _ => {}
                }
            }
        }
        Edit::Add(i, key, value) => {
            if let Some(Value::Object(m)) = node(doc, &pick(*i)) {
                m.insert(key.clone(), value.clone());
            }
        }
    }
}

fn damaged(text: String, damage: &Damage) -> String {
    match damage {
        Damage::None => text,
        Damage::Bom => format!("\u{feff}{text}"),
        Damage::FlipByte(i, b) => {
            let mut bytes = text.into_bytes();
            if !bytes.is_empty() {
                let i = i % bytes.len();
                bytes[i] = *b;
            }
            String::from_utf8_lossy(&bytes).into_owned()
        }
        Damage::Truncate(i) => {
            let bytes = text.as_bytes();
            let cut = if bytes.is_empty() { 0 } else { i % bytes.len() };
            String::from_utf8_lossy(&bytes[..cut]).into_owned()
        }
        Damage::DuplicateLine(i) => {
            let mut lines: Vec<&str> = text.lines().collect();
            if !lines.is_empty() {
                let i = i % lines.len();
                lines.insert(i, lines[i]);
            }
            lines.join("\n")
        }
        Damage::Insert(i, s) => {
            let mut at = if text.is_empty() { 0 } else { i % text.len() };
            while !text.is_char_boundary(at) {
                at -= 1;
            }
            format!("{}{s}{}", &text[..at], &text[at..])
        }
    }
}

/// Load a text as `verify` does, then run what the controller runs on a relay before
/// any session (schedule, port, host checks). Never connects.
fn load_and_check(text: &str) {
    let mut m = Manifests::default();
    if verify::load_text(text, "fuzz.yaml", &mut m).is_ok() {
        for r in &m.relays {
            let _ = schedule(&r.spec);
            let _ = effective_port(&r.spec);
            let _ = smtp_relay_operator::api::check_host(&r.spec.host);
        }
    }
}

proptest! {
    #![proptest_config(config(768))]

    /// Mutated examples, as YAML or JSON, damaged or not: loading and validation
    /// answer (Ok or a refusal), never panic, and a refusal never repeats a huge input.
    #[test]
    fn mutated_manifests_never_panic(
        seed in any::<usize>(),
        edits in prop::collection::vec(edit(), 0..6),
        as_json in any::<bool>(),
        damage in damage(),
    ) {
        let corpus = corpus();
        let mut doc = corpus[seed % corpus.len()].clone();
        for e in &edits {
            apply(&mut doc, e);
        }
        let text = if as_json {
            serde_json::to_string(&doc).unwrap_or_default()
        } else {
            serde_yaml::to_string(&doc).unwrap_or_default()
        };
        let text = damaged(text, &damage);
        let mut m = Manifests::default();
        match verify::load_text(&text, "fuzz.yaml", &mut m) {
            Ok(()) => {
                for r in &m.relays {
                    let _ = schedule(&r.spec);
                    let _ = effective_port(&r.spec);
                }
            }
            Err(e) => prop_assert!(e.to_string().len() < 64 * 1024, "refusal of {} bytes", e.to_string().len()),
        }
    }

    /// Any text at all.
    #[test]
    fn arbitrary_text_never_panics(text in any::<String>()) {
        load_and_check(&text);
    }

    /// Texts made of YAML's own punctuation, the likeliest to reach odd parser states.
    #[test]
    fn yaml_punctuation_never_panics(parts in prop::collection::vec(prop::sample::select(vec![
        "a", ": ", "- ", "\n", "  ", "{", "}", "[", "]", ",", "&x ", "*x", "<<: ", "!!str ",
        "!!binary ", "!!int ", "? ", "---\n", "...\n", "'", "\"", "|\n", ">\n", "#", "%YAML 1.1\n",
        "\u{feff}", "\u{85}", "1e3", ".nan", "yes", "~", "\t", "\\u0000",
    ]), 0..40)) {
        load_and_check(&parts.concat());
    }

    /// Durations: any string is a value or an error, never a panic.
    #[test]
    fn any_duration_text_is_an_answer(text in any::<String>()) {
        let _ = duration::parse(&text);
    }

    /// Durations in Go's syntax: the exact sum of their parts, or OutOfRange past the
    /// API server's bound.
    #[test]
    fn go_durations_parse_exactly(parts in prop::collection::vec(
        (0u64..100_000_000_000, prop::option::of(0u32..1_000_000_000),
         prop::sample::select(vec![("ns", 1u128), ("us", 1_000), ("µs", 1_000), ("ms", 1_000_000),
             ("s", 1_000_000_000), ("m", 60_000_000_000), ("h", 3_600_000_000_000)])), 1..5)) {
        let mut text = String::new();
        let mut exact: u128 = 0;
        for (int, frac, (unit, nanos)) in &parts {
            text.push_str(&int.to_string());
            exact += u128::from(*int) * nanos;
            if let Some(f) = frac {
                text.push_str(&format!(".{f:09}"));
                exact += u128::from(*f) * nanos / 1_000_000_000;
            }
            text.push_str(unit);
        }
        match duration::parse_nanos(&text) {
            Ok(n) => prop_assert_eq!(n, exact, "{}", text),
            Err(e) => {
                prop_assert_eq!(e, duration::DurationError::OutOfRange);
                prop_assert!(exact > duration::MAX_NANOS, "{} refused at {} ns", text, exact);
            }
        }
    }

    /// Written as Go writes it, a duration reads back to itself.
    #[test]
    fn durations_round_trip(nanos in 0u64..=i64::MAX as u64) {
        let d = std::time::Duration::from_nanos(nanos);
        prop_assert_eq!(duration::parse(&duration::format(d)), Ok(d));
    }

    /// The table: any cells, any count; never a panic, never a line wider than its
    /// columns' bound, never a control character.
    #[test]
    fn tables_never_panic(rows in prop::collection::vec(prop::collection::vec(
        prop_oneof![any::<String>(), (0usize..100_000).prop_map(|n| "x".repeat(n))], 0..12), 0..6)) {
        let out = table::aligned(&rows, "-");
        let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
        for line in out.lines() {
            prop_assert!(line.chars().count() <= columns * (table::MAX_CELL + 2));
            prop_assert!(!line.chars().any(|c| c.is_control()), "{:?}", line);
        }
    }

    /// The policy: any address is an answer; an IPv4 address refused to a SmtpRelay is
    /// refused in its IPv4-mapped form too.
    #[test]
    fn the_destination_policy_sees_through_mapped_addresses(v4 in any::<u32>(), v6 in any::<u128>()) {
        let p = DestinationPolicy::default();
        let ip4 = Ipv4Addr::from(v4);
        let direct = p.check(Scope::Namespaced, IpAddr::V4(ip4)).is_err();
        let mapped = p.check(Scope::Namespaced, IpAddr::V6(ip4.to_ipv6_mapped())).is_err();
        prop_assert!(!direct || mapped, "{} refused, its mapped form accepted", ip4);
        let _ = p.check(Scope::Cluster, IpAddr::V6(Ipv6Addr::from(v6)));
    }

    /// DNS record texts are whatever a zone publishes: judging them never panics
    /// (no DNS here: the pure judges only), and a DKIM record's shortened form stays
    /// short.
    #[test]
    fn hostile_dns_records_are_judged_never_panicking(
        record in prop_oneof![
            ".{0,300}",
            "v=DKIM1; k=(rsa|ed25519|é+); p=[A-Za-z0-9+/=é€ ]{0,400}",
            "v=DMARC1;( [a-z]{1,5}=[a-zé0-9:@.]{0,20};){0,8}",
            "v=spf1( [~?+-]?(all|ip4:[0-9./]{1,18}|include:[a-zé.]{1,30}|a|mx|exists:%\\{[a-z]\\}[a-z.]{0,20})){0,12}",
        ],
        codes in prop::collection::vec(any::<[u8; 4]>(), 0..4),
    ) {
        use smtp_relay_operator::deliverability::{dkim, dmarc, dnsbl, spf};
        let k = dkim::judge("s1", "s1._domainkey.example.test", &record);
        prop_assert!(k.record.as_ref().is_none_or(|r| r.chars().count() <= record.chars().count() + 8));
        let _ = dmarc::is_dmarc(&record);
        let _ = dmarc::judge("example.test", "_dmarc.example.test", &[&record]);
        let _ = spf::spf_records(std::slice::from_ref(&record));
        let _ = dkim::rsa_bits(record.as_bytes());
        let ips: Vec<IpAddr> = codes.iter().map(|c| IpAddr::V4(Ipv4Addr::from(*c))).collect();
        let _ = dnsbl::classify(&ips);
    }
}

/// Text values that must survive the loader unchanged: what a manifest says is what
/// validation sees (quoted strings stay strings, whatever they look like).
#[test]
fn quoted_strings_stay_strings() {
    for s in [
        "yes",
        "on",
        "1e3",
        "0x10",
        "~",
        "null",
        "2001-12-14",
        ".nan",
        "<<",
    ] {
        let text = format!("title: \"{s}\"\nother: '{s}'\n");
        let docs = smtp_relay_operator::manifest::documents(&text).expect("yaml");
        let mut want = Map::new();
        want.insert("title".into(), json!(s));
        want.insert("other".into(), json!(s));
        assert_eq!(docs[0].value, Value::Object(want), "{s}");
    }
}
