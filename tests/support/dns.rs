//! A real authoritative DNS server on loopback for the deliverability tests:
//! hickory-server's in-memory zone handler behind its UDP and TCP listeners, wrapped
//! to count the queries per (name, type) and to stop answering names on demand.

#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hickory_server::proto::op::{Header, HeaderCounts, MessageType, Metadata};
use hickory_server::proto::rr::rdata::{A, AAAA, MX, SOA, TXT};
use hickory_server::proto::rr::{LowerName, Name, RData, Record};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::store::in_memory::InMemoryZoneHandler;
use hickory_server::zone_handler::{AxfrPolicy, Catalog, ZoneHandler, ZoneType};

/// The one zone every test name lives in.
pub const ZONE: &str = "test.";
/// Negative answers are cached this long (the SOA minimum).
pub const NEGATIVE_TTL: u32 = 30;

struct Handler {
    catalog: Catalog,
    counts: Arc<Mutex<HashMap<(String, String), usize>>>,
    silent: Arc<Mutex<HashSet<String>>>,
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: hickory_server::net::runtime::Time>(
        &self,
        request: &Request,
        response_handle: R,
    ) -> ResponseInfo {
        let mut silent = false;
        if let Ok(info) = request.request_info() {
            let name = info
                .query
                .name()
                .to_string()
                .trim_end_matches('.')
                .to_ascii_lowercase();
            let kind = info.query.original().query_type().to_string();
            silent = self
                .silent
                .lock()
                .expect("lock")
                .iter()
                .any(|s| name == *s || name.ends_with(&format!(".{s}")));
            *self
                .counts
                .lock()
                .expect("lock")
                .entry((name, kind))
                .or_default() += 1;
        }
        if silent {
            // No answer at all: the client times out (a temporary failure).
            let mut metadata = Metadata::new(
                0,
                MessageType::Response,
                hickory_server::proto::op::OpCode::Query,
            );
            metadata.response_code = hickory_server::proto::op::ResponseCode::ServFail;
            return ResponseInfo::from(Header {
                metadata,
                counts: HeaderCounts::default(),
            });
        }
        self.catalog
            .handle_request::<R, T>(request, response_handle)
            .await
    }
}

/// The running server.
pub struct DnsServer {
    pub addr: SocketAddr,
    zone: Arc<InMemoryZoneHandler>,
    counts: Arc<Mutex<HashMap<(String, String), usize>>>,
    silent: Arc<Mutex<HashSet<String>>>,
    serial: Mutex<u32>,
    _task: tokio::task::JoinHandle<()>,
}

fn name(n: &str) -> Name {
    let fq = if n.ends_with('.') {
        n.to_string()
    } else {
        format!("{n}.")
    };
    Name::from_str(&fq).expect("test DNS name")
}

/// A record as "NAME TTL TYPE DATA" (TYPE: A, AAAA, MX "PREF HOST", TXT "text").
pub fn record(line: &str) -> Record {
    let mut parts = line.splitn(4, ' ');
    let (owner, ttl, kind, data) = (
        parts.next().expect("name"),
        parts.next().expect("ttl").parse::<u32>().expect("ttl"),
        parts.next().expect("type"),
        parts.next().unwrap_or(""),
    );
    let rdata = match kind {
        "A" => RData::A(A(data.parse().expect("ipv4"))),
        "AAAA" => RData::AAAA(AAAA(data.parse().expect("ipv6"))),
        "MX" => {
            let (pref, host) = data.split_once(' ').expect("MX PREF HOST");
            RData::MX(MX::new(pref.parse().expect("pref"), name(host)))
        }
        // TXT strings longer than 255 bytes are split as zone files do.
        "TXT" => RData::TXT(TXT::new(
            data.as_bytes()
                .chunks(255)
                .map(|c| String::from_utf8_lossy(c).into_owned())
                .collect(),
        )),
        other => panic!("record type {other} not supported here"),
    };
    Record::from_rdata(name(owner), ttl, rdata)
}

impl DnsServer {
    /// Serve `records` (see [`record`]) on 127.0.0.1, UDP and TCP on one port.
    pub async fn start(records: &[&str]) -> DnsServer {
        let origin = name(ZONE);
        let mut zone =
            InMemoryZoneHandler::<hickory_server::net::runtime::TokioRuntimeProvider>::empty(
                origin.clone(),
                ZoneType::Primary,
                AxfrPolicy::Deny,
            );
        let soa = SOA::new(
            name("ns.test"),
            name("hostmaster.test"),
            1,
            3600,
            600,
            86400,
            NEGATIVE_TTL,
        );
        assert!(zone.upsert_mut(Record::from_rdata(origin.clone(), 3600, RData::SOA(soa)), 1));
        for line in records {
            assert!(zone.upsert_mut(record(line), 1), "{line}");
        }
        let zone = Arc::new(zone);
        let mut catalog = Catalog::new();
        catalog.upsert(
            LowerName::from(origin),
            vec![Arc::clone(&zone) as Arc<dyn ZoneHandler>],
        );
        let counts = Arc::new(Mutex::new(HashMap::new()));
        let silent = Arc::new(Mutex::new(HashSet::new()));
        let (udp, tcp, addr) = bind_udp_and_tcp().await;
        let mut server = hickory_server::Server::new(Handler {
            catalog,
            counts: Arc::clone(&counts),
            silent: Arc::clone(&silent),
        });
        server.register_socket(udp);
        server.register_listener(tcp, Duration::from_secs(5), 4096);
        let task = tokio::spawn(async move {
            let _ = server.block_until_done().await;
        });
        DnsServer {
            addr,
            zone,
            counts,
            silent,
            serial: Mutex::new(1),
            _task: task,
        }
    }

    /// Serve a zone written as text: one [`record`] per line, `#` comments, records
    /// sharing a name and type gathered into one set.
    pub async fn start_zone_text(text: &str) -> DnsServer {
        let lines: Vec<&str> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .collect();
        let server = DnsServer::start(&[]).await;
        for line in lines {
            server.zone_add(line).await;
        }
        server
    }

    /// Add or replace records (same name and type replaced as a whole set).
    pub async fn set(&self, lines: &[&str]) {
        let serial = {
            let mut s = self.serial.lock().expect("lock");
            *s += 1;
            *s
        };
        let new: Vec<Record> = lines.iter().map(|l| record(l)).collect();
        {
            let mut records = self.zone.records_mut().await;
            for r in &new {
                records.retain(|k, _| {
                    !(k.name == LowerName::from(r.name.clone()) && k.record_type == r.record_type())
                });
            }
        }
        for r in new {
            self.zone.upsert(r, serial).await;
        }
    }

    /// Add one record to the set of its name and type.
    pub async fn zone_add(&self, line: &str) {
        let serial = {
            let mut s = self.serial.lock().expect("lock");
            *s += 1;
            *s
        };
        self.zone.upsert(record(line), serial).await;
    }

    /// Stop answering `name` and every name under it (queries time out).
    pub fn silence(&self, name: &str) {
        self.silent
            .lock()
            .expect("lock")
            .insert(name.to_ascii_lowercase());
    }

    pub fn unsilence(&self, name: &str) {
        self.silent
            .lock()
            .expect("lock")
            .remove(&name.to_ascii_lowercase());
    }

    /// Queries received for `name` of type `kind` ("TXT", "A", "MX", ...).
    pub fn queries(&self, name: &str, kind: &str) -> usize {
        self.counts
            .lock()
            .expect("lock")
            .get(&(name.to_ascii_lowercase(), kind.to_string()))
            .copied()
            .unwrap_or(0)
    }

    /// Every query so far, by (name, type).
    pub fn all_queries(&self) -> BTreeMap<(String, String), usize> {
        self.counts
            .lock()
            .expect("lock")
            .clone()
            .into_iter()
            .collect()
    }

    pub fn reset_counts(&self) {
        self.counts.lock().expect("lock").clear();
    }
}

/// A UDP socket and a TCP listener on one loopback port. The kernel picks a free UDP
/// port; the same TCP port may be in use by another process (ports are per protocol),
/// so on `AddrInUse` it tries another pair.
async fn bind_udp_and_tcp() -> (
    tokio::net::UdpSocket,
    tokio::net::TcpListener,
    std::net::SocketAddr,
) {
    let mut last = None;
    for _ in 0..50 {
        let udp = tokio::net::UdpSocket::bind("127.0.0.1:0")
            .await
            .expect("udp");
        let addr = udp.local_addr().expect("addr");
        match tokio::net::TcpListener::bind(addr).await {
            Ok(tcp) => return (udp, tcp, addr),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => last = Some(e),
            Err(e) => panic!("tcp on {addr}: {e}"),
        }
    }
    panic!("no loopback port free for both UDP and TCP after 50 tries: {last:?}")
}
