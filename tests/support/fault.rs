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
