//! A DSR backend for the end-to-end topology: an HTTP server that answers
//! every request with its own name (keep-alive honoured, so a held
//! connection shows which backend it stays on), and a sink that counts the
//! bytes of a stream until EOF and answers with the count.
//!
//! `xlb-backend NAME [--http PORT] [--sink PORT]` (defaults 80 and 9000),
//! listening on every address (IPv4 and IPv6), the VIPs on `lo` included.

use std::{
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::{TcpListener, TcpStream},
    thread,
};

fn main() {
    let mut args = std::env::args().skip(1);
    let name = args
        .next()
        .expect("usage: xlb-backend NAME [--http PORT] [--sink PORT]");
    let (mut http, mut sink) = (80u16, 9000u16);
    while let Some(a) = args.next() {
        let v = args
            .next()
            .and_then(|v| v.parse().ok())
            .expect("a port number");
        match a.as_str() {
            "--http" => http = v,
            "--sink" => sink = v,
            other => panic!("unknown argument {other}"),
        }
    }
    let h = TcpListener::bind(("::", http)).unwrap_or_else(|e| panic!("bind [::]:{http}: {e}"));
    let s = TcpListener::bind(("::", sink)).unwrap_or_else(|e| panic!("bind [::]:{sink}: {e}"));
    eprintln!("{name}: http on {http}, sink on {sink}");
    thread::spawn(move || serve(&s, count));
    let name: &'static str = Box::leak(name.into_boxed_str());
    serve(&h, move |c| answer(c, name));
}

fn serve(l: &TcpListener, handle: impl Fn(TcpStream) + Send + Copy + 'static) {
    for c in l.incoming().flatten() {
        thread::spawn(move || handle(c));
    }
}

/// HTTP/1.1 with keep-alive: one answer per request head, until the client
/// closes or asks to.
fn answer(c: TcpStream, name: &str) {
    let Ok(mut w) = c.try_clone() else { return };
    let mut r = BufReader::new(c);
    loop {
        let mut close = false;
        let mut line = String::new();
        let mut first = true;
        loop {
            line.clear();
            match r.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            if first && !line.starts_with("GET") && !line.starts_with("HEAD") {
                return;
            }
            first = false;
            if line.to_ascii_lowercase().starts_with("connection: close") {
                close = true;
            }
            if line == "\r\n" || line == "\n" {
                break;
            }
        }
        let body = format!("{name}\n");
        // One write: head and body in two would meet Nagle's algorithm
        // and the client's delayed ACK on a kept-alive connection, 40 ms
        // per request.
        let answer = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n{}\r\n{body}",
            body.len(),
            if close { "Connection: close\r\n" } else { "" }
        );
        if w.write_all(answer.as_bytes()).is_err() || close {
            return;
        }
    }
}

fn count(mut c: TcpStream) {
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0u64;
    loop {
        match c.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => total += n as u64,
            Err(_) => return,
        }
    }
    let _ = c.write_all(total.to_string().as_bytes());
}
