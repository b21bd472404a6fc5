//! A scripted SMTP server on 127.0.0.1 for faults: tarpit, 421 greeting, reset in
//! the middle of DATA, and a server that echoes AUTH data back (to prove redaction).

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::thread;

#[derive(Clone, Copy, Debug)]
pub enum Fault {
    /// Accept the connection and never say anything.
    Tarpit,
    /// Greet with 421 and close.
    Busy421,
    /// Behave until DATA, then drop the connection after the 354.
    ResetMidData,
    /// Offer AUTH PLAIN and reject it, echoing the client's AUTH line in the reply.
    EchoAuth,
}

/// Start a server with `fault`; returns its port. Runs until the process exits.
pub fn start(fault: Fault) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            thread::spawn(move || serve(conn, fault));
        }
    });
    port
}

fn serve(mut conn: TcpStream, fault: Fault) {
    match fault {
        Fault::Tarpit => {
            thread::sleep(std::time::Duration::from_secs(120));
            return;
        }
        Fault::Busy421 => {
            let _ = conn.write_all(b"421 4.3.2 fault.test too busy, try later\r\n");
            return;
        }
        _ => {}
    }
    let _ = conn.write_all(b"220 fault.test ESMTP scripted\r\n");
    let Ok(read_half) = conn.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(read_half);
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let cmd = line.trim_end().to_string();
        let upper = cmd.to_ascii_uppercase();
        let reply: String = if upper.starts_with("EHLO") {
            "250-fault.test\r\n250-AUTH PLAIN LOGIN\r\n250 8BITMIME\r\n".into()
        } else if upper.starts_with("AUTH") {
            match fault {
                Fault::EchoAuth => format!("535 5.7.8 rejected: you sent {cmd}\r\n"),
                _ => "235 2.7.0 ok\r\n".into(),
            }
        } else if upper.starts_with("MAIL") || upper.starts_with("RCPT") {
            "250 2.1.0 ok\r\n".into()
        } else if upper.starts_with("DATA") {
            let _ = conn.write_all(b"354 go ahead\r\n");
            if let Fault::ResetMidData = fault {
                // Read a little of the message, then vanish.
                let mut buf = String::new();
                let _ = reader.read_line(&mut buf);
                let _ = conn.shutdown(std::net::Shutdown::Both);
                return;
            }
            continue;
        } else if upper.starts_with("QUIT") {
            let _ = conn.write_all(b"221 bye\r\n");
            return;
        } else {
            "250 ok\r\n".into()
        };
        if conn.write_all(reply.as_bytes()).is_err() {
            return;
        }
    }
}

/// What the well-behaved scripted server saw.
#[derive(Debug, Default)]
pub struct Seen {
    /// TCP sessions accepted.
    pub sessions: std::sync::atomic::AtomicUsize,
    /// Recipients of the messages it accepted, in order.
    pub delivered: std::sync::Mutex<Vec<String>>,
}

/// A well-behaved server (plain, AUTH PLAIN/LOGIN accepted, one transaction after
/// another, RSET) that refuses recipients containing "refuse" with 550 and drops
/// the connection in the DATA of recipients containing "reset".
pub fn start_counting() -> (u16, std::sync::Arc<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let seen = std::sync::Arc::new(Seen::default());
    let shared = std::sync::Arc::clone(&seen);
    thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            shared
                .sessions
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let seen = std::sync::Arc::clone(&shared);
            thread::spawn(move || serve_counting(conn, &seen));
        }
    });
    (port, seen)
}

fn serve_counting(mut conn: TcpStream, seen: &Seen) {
    let _ = conn.write_all(b"220 counting.test ESMTP scripted\r\n");
    let Ok(read_half) = conn.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(read_half);
    let mut rcpt = String::new();
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let upper = line.trim_end().to_ascii_uppercase();
        let reply = if upper.starts_with("EHLO") {
            "250-counting.test\r\n250-AUTH PLAIN LOGIN\r\n250 8BITMIME\r\n"
        } else if upper.starts_with("AUTH") {
            "235 2.7.0 ok\r\n"
        } else if upper.starts_with("MAIL") {
            rcpt.clear();
            "250 2.1.0 ok\r\n"
        } else if upper.starts_with("RCPT") {
            if upper.contains("REFUSE") {
                "550 5.1.1 no such user here\r\n"
            } else {
                rcpt = line.trim_end().to_string();
                "250 2.1.5 ok\r\n"
            }
        } else if upper.starts_with("DATA") {
            let _ = conn.write_all(b"354 go ahead\r\n");
            if rcpt.to_ascii_uppercase().contains("RESET") {
                let _ = conn.shutdown(std::net::Shutdown::Both);
                return;
            }
            // The message, up to the lone dot.
            loop {
                line.clear();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    return;
                }
                if line == ".\r\n" || line == ".\n" {
                    break;
                }
            }
            if let Ok(mut d) = seen.delivered.lock() {
                d.push(rcpt.clone());
            }
            "250 2.0.0 queued\r\n"
        } else if upper.starts_with("QUIT") {
            let _ = conn.write_all(b"221 bye\r\n");
            return;
        } else {
            "250 2.0.0 ok\r\n"
        };
        if conn.write_all(reply.as_bytes()).is_err() {
            return;
        }
    }
}
