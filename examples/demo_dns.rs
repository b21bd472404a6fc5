//! The demo's DNS server: serves examples/demo/dns/zone.txt (or the file given) on
//! 127.0.0.1 with hickory-server, prints `demo-dns: 127.0.0.1:PORT`, and runs until
//! its standard input closes. The same server the tests use (tests/support/dns.rs).

#[path = "../tests/support/dns.rs"]
mod dns;

#[tokio::main]
async fn main() {
    let path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "examples/demo/dns/zone.txt".into());
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("demo-dns: {path}: {e}");
            std::process::exit(2);
        }
    };
    let server = dns::DnsServer::start_zone_text(&text).await;
    println!("demo-dns: {}", server.addr);
    // Until the demo script closes our standard input.
    let _ = tokio::task::spawn_blocking(|| {
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut Vec::new())
    })
    .await;
}
