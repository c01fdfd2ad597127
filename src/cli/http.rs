//! A small HTTP/1.1 client for the commands that talk to a running Weir's API (`weir tap`,
//! `weir top`): `GET` only, plain TCP, bodies with a `Content-Length`, chunked, or read to
//! the end. Blocking: each command has one request in flight at a time.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

/// `host:port` of `--api`, without a scheme or path (`http://127.0.0.1:8686/` works too).
pub fn authority(api: &str) -> Result<String, String> {
    let a = api.trim();
    if let Some(rest) = a.strip_prefix("https://") {
        return Err(format!(
            "`https://{rest}`: this command speaks plain HTTP to the API only"
        ));
    }
    let a = a.strip_prefix("http://").unwrap_or(a);
    let a = a.split('/').next().unwrap_or(a);
    if a.is_empty() {
        return Err("empty API address".into());
    }
    Ok(if a.contains(':') {
        a.to_string()
    } else {
        format!("{a}:8686")
    })
}

/// A response being read: its status, then its body chunk by chunk.
pub struct Response {
    /// The HTTP status code.
    pub status: u16,
    reader: BufReader<TcpStream>,
    body: BodyKind,
}

enum BodyKind {
    Chunked { done: bool },
    Length(u64),
    ToEnd { done: bool },
}

/// The environment variable holding the API's bearer token, sent when set.
pub const TOKEN_VAR: &str = "WEIR_API_TOKEN";

/// Sends `GET path` to `authority` (`host:port`), with `$WEIR_API_TOKEN` as a bearer token
/// when it is set. `timeout` bounds the connection and each
/// read (`None`: reads may wait for ever, as a tap's stream does between events).
pub fn get(authority: &str, path: &str, timeout: Option<Duration>) -> Result<Response, String> {
    let addrs: Vec<_> = authority
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {authority}: {e}"))?
        .collect();
    let mut last = None;
    let mut stream = None;
    for a in &addrs {
        let r = match timeout {
            Some(t) => TcpStream::connect_timeout(a, t),
            None => TcpStream::connect(a),
        };
        match r {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last = Some(e),
        }
    }
    let mut stream = stream.ok_or_else(|| match last {
        Some(e) => format!("cannot connect to the API at {authority}: {e} (is `weir run` running with its API on?)"),
        None => format!("cannot resolve {authority}"),
    })?;
    stream
        .set_read_timeout(timeout)
        .map_err(|e| e.to_string())?;
    let _ = stream.set_nodelay(true);
    // The API's bearer token (`api.auth`), from the environment rather than an argument
    // that every user of the machine could read in the process list.
    let auth = std::env::var(TOKEN_VAR)
        .ok()
        .filter(|t| !t.is_empty())
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {authority}\r\nUser-Agent: weir/{}\r\nAccept: */*\r\n{auth}Connection: close\r\n\r\n",
        env!("CARGO_PKG_VERSION")
    )
    .map_err(|e| format!("cannot send the request to {authority}: {e}"))?;
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    read_line(&mut reader, &mut line)?;
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| format!("not an HTTP response from {authority}: {:?}", line.trim()))?;
    let mut chunked = false;
    let mut length = None;
    loop {
        line.clear();
        read_line(&mut reader, &mut line)?;
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            let (k, v) = (k.trim(), v.trim());
            if k.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked") {
                chunked = true;
            } else if k.eq_ignore_ascii_case("content-length") {
                length = v.parse::<u64>().ok();
            }
        }
    }
    let body = match (chunked, length) {
        (true, _) => BodyKind::Chunked { done: false },
        (false, Some(n)) => BodyKind::Length(n),
        (false, None) => BodyKind::ToEnd { done: false },
    };
    Ok(Response {
        status,
        reader,
        body,
    })
}

fn read_line(r: &mut BufReader<TcpStream>, line: &mut String) -> Result<(), String> {
    match r.read_line(line) {
        Ok(0) => Err("the API closed the connection".into()),
        Ok(_) => Ok(()),
        Err(e) => Err(format!("reading from the API: {e}")),
    }
}

impl Response {
    /// The next piece of the body, `None` at its end.
    pub fn next_chunk(&mut self) -> Result<Option<Vec<u8>>, String> {
        let err = |e: std::io::Error| format!("reading from the API: {e}");
        match &mut self.body {
            BodyKind::Chunked { done } => {
                if *done {
                    return Ok(None);
                }
                let mut line = String::new();
                read_line(&mut self.reader, &mut line)?;
                let size = line.trim().split(';').next().unwrap_or("");
                let size = usize::from_str_radix(size, 16)
                    .map_err(|_| format!("bad chunk size from the API: {:?}", line.trim()))?;
                if size == 0 {
                    *done = true;
                    return Ok(None);
                }
                let mut buf = vec![0; size];
                self.reader.read_exact(&mut buf).map_err(err)?;
                let mut crlf = [0u8; 2];
                self.reader.read_exact(&mut crlf).map_err(err)?;
                Ok(Some(buf))
            }
            BodyKind::Length(left) => {
                if *left == 0 {
                    return Ok(None);
                }
                let mut buf = vec![0; (*left).min(64 * 1024) as usize];
                let n = self.reader.read(&mut buf).map_err(err)?;
                if n == 0 {
                    return Err("the API closed the connection before the end".into());
                }
                buf.truncate(n);
                *left -= n as u64;
                Ok(Some(buf))
            }
            BodyKind::ToEnd { done } => {
                if *done {
                    return Ok(None);
                }
                let mut buf = vec![0; 64 * 1024];
                let n = self.reader.read(&mut buf).map_err(err)?;
                if n == 0 {
                    *done = true;
                    return Ok(None);
                }
                buf.truncate(n);
                Ok(Some(buf))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    impl Response {
        fn bytes(mut self) -> Result<Vec<u8>, String> {
            let mut out = Vec::new();
            while let Some(c) = self.next_chunk()? {
                out.extend_from_slice(&c);
            }
            Ok(out)
        }
    }

    #[test]
    fn authorities() {
        assert_eq!(authority("127.0.0.1:9000").unwrap(), "127.0.0.1:9000");
        assert_eq!(authority("http://h:1/x").unwrap(), "h:1");
        assert_eq!(authority("localhost").unwrap(), "localhost:8686");
        assert!(authority("https://h:1").is_err());
    }

    #[test]
    fn reads_chunked_and_sized_bodies() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let server = std::thread::spawn(move || {
            for reply in [
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nab\n\r\n2;x=y\r\ncd\r\n0\r\n\r\n",
                "HTTP/1.1 404 Not Found\r\nContent-Length: 5\r\n\r\nnope!",
            ] {
                let (mut s, _) = l.accept().unwrap();
                // The whole request head, however the client writes it, before answering
                // (closing earlier breaks the client's pipe).
                let mut req = Vec::new();
                let mut buf = [0u8; 1024];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    let n = s.read(&mut buf).unwrap();
                    assert!(n > 0, "the client closed before its request ended");
                    req.extend_from_slice(&buf[..n]);
                }
                s.write_all(reply.as_bytes()).unwrap();
            }
        });
        let r = get(&addr, "/a", Some(Duration::from_secs(5))).unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.bytes().unwrap(), b"ab\ncd");
        let r = get(&addr, "/b", Some(Duration::from_secs(5))).unwrap();
        assert_eq!(r.status, 404);
        assert_eq!(r.bytes().unwrap(), b"nope!");
        server.join().unwrap();
    }
}
