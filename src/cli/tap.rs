//! `weir tap`: prints the events leaving (or entering) components of a running Weir, from its
//! API's `/api/tap` stream (over HTTP, or over NATS with `--nats`), as JSON lines or logfmt.

use std::io::Write;

use serde_json::Value;

use super::api_client::{Api, NatsArgs};

/// What `weir tap` was asked.
pub struct Args {
    /// `--api`: the running Weir's API address.
    pub api: String,
    /// `--nats`: reach it over NATS instead.
    pub nats: Option<NatsArgs>,
    /// Globs: the outputs of these components (or `id.output`).
    pub outputs_of: Vec<String>,
    /// Globs: the inputs of these components.
    pub inputs_of: Vec<String>,
    /// One event in this many.
    pub sample_rate: Option<u64>,
    /// Exit after this many events.
    pub limit: Option<u64>,
    /// Print logfmt instead of JSON.
    pub logfmt: bool,
}

/// Percent-encodes a query value (everything but unreserved characters).
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The request path for `args`.
fn path(args: &Args) -> String {
    let mut q = Vec::new();
    for g in &args.outputs_of {
        q.push(format!("outputs_of={}", encode(g)));
    }
    for g in &args.inputs_of {
        q.push(format!("inputs_of={}", encode(g)));
    }
    if let Some(n) = args.sample_rate {
        q.push(format!("sample={n}"));
    }
    if let Some(n) = args.limit {
        q.push(format!("limit={n}"));
    }
    if q.is_empty() {
        "/api/tap".into()
    } else {
        format!("/api/tap?{}", q.join("&"))
    }
}

pub fn tap(args: &Args) -> u8 {
    match run(args) {
        Ok(()) => crate::exit::OK,
        Err(e) => {
            eprintln!("error: {e}");
            crate::exit::FAILED
        }
    }
}

fn run(args: &Args) -> Result<(), String> {
    if args.sample_rate == Some(0) || args.limit == Some(0) {
        return Err("--sample-rate and --limit must be above 0".into());
    }
    let api = Api::new(&args.api, args.nats.as_ref())?;
    let mut resp = api.get(&path(args), None)?;
    if resp.status() != 200 {
        let status = resp.status();
        let body = resp.bytes().unwrap_or_default();
        let text = String::from_utf8_lossy(&body);
        let message = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string))
            .unwrap_or_else(|| text.trim().to_string());
        return Err(format!("the API answered {status}: {message}"));
    }
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut pending: Vec<u8> = Vec::new();
    let mut printed = 0u64;
    while let Some(chunk) = resp.next_chunk()? {
        pending.extend_from_slice(&chunk);
        let Some(end) = pending.iter().rposition(|b| *b == b'\n') else {
            continue;
        };
        let complete: Vec<u8> = pending.drain(..=end).collect();
        for line in complete.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            let is_event = !line.starts_with(b"{\"dropped\"");
            let written = if args.logfmt {
                match serde_json::from_slice::<Value>(line) {
                    Ok(v) => writeln!(out, "{}", to_logfmt(&v)),
                    Err(_) => continue,
                }
            } else {
                out.write_all(line).and_then(|_| out.write_all(b"\n"))
            };
            // Standard output closed (`| head`): done.
            if written.is_err() {
                return Ok(());
            }
            if is_event {
                printed += 1;
                if args.limit.is_some_and(|l| printed >= l) {
                    let _ = out.flush();
                    return Ok(());
                }
            }
        }
        if out.flush().is_err() {
            return Ok(());
        }
    }
    let _ = out.flush();
    Ok(())
}

/// One tap line as logfmt: `component=… output=…` then the event's fields, nested keys
/// joined with dots (`{"dropped": N}` becomes `dropped=N`).
pub fn to_logfmt(line: &Value) -> String {
    let mut parts = Vec::new();
    match line {
        Value::Object(m) if m.contains_key("event") => {
            if let Some(c) = m.get("component") {
                flatten("component", c, &mut parts);
            }
            if let Some(o) = m.get("output").filter(|o| !o.is_null()) {
                flatten("output", o, &mut parts);
            }
            if let Some(e) = m.get("event") {
                flatten("", e, &mut parts);
            }
        }
        other => flatten("", other, &mut parts),
    }
    parts.join(" ")
}

fn flatten(prefix: &str, v: &Value, out: &mut Vec<String>) {
    let key = |k: &str| {
        if prefix.is_empty() {
            k.to_string()
        } else {
            format!("{prefix}.{k}")
        }
    };
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                flatten(&key(k), v, out);
            }
        }
        Value::Array(a) => {
            for (i, v) in a.iter().enumerate() {
                flatten(&key(&i.to_string()), v, out);
            }
        }
        Value::String(s) => out.push(format!("{}={}", quote(prefix), quote(s))),
        Value::Null => out.push(format!("{}=", quote(prefix))),
        other => out.push(format!("{}={other}", quote(prefix))),
    }
}

/// A logfmt value: bare when it can be, else double-quoted with `\` escapes.
fn quote(s: &str) -> String {
    let bare = !s.is_empty()
        && s.chars()
            .all(|c| !c.is_whitespace() && !c.is_control() && c != '"' && c != '=' && c != '\\');
    if bare {
        s.to_string()
    } else {
        let mut q = String::with_capacity(s.len() + 2);
        q.push('"');
        for c in s.chars() {
            match c {
                '"' => q.push_str("\\\""),
                '\\' => q.push_str("\\\\"),
                '\n' => q.push_str("\\n"),
                '\r' => q.push_str("\\r"),
                '\t' => q.push_str("\\t"),
                c => q.push(c),
            }
        }
        q.push('"');
        q
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logfmt_lines() {
        let v: Value = serde_json::from_str(
            r#"{"component":"router","output":"errors","event":{"l":[1,true],"msg":"a b","n":null,"status":503,"tags":{"k":"v"}}}"#,
        )
        .unwrap();
        assert_eq!(
            to_logfmt(&v),
            r#"component=router output=errors l.0=1 l.1=true msg="a b" n= status=503 tags.k=v"#
        );
        let v: Value =
            serde_json::from_str(r#"{"component":"parse","output":null,"event":{}}"#).unwrap();
        assert_eq!(to_logfmt(&v), "component=parse");
        assert_eq!(to_logfmt(&serde_json::json!({"dropped": 7})), "dropped=7");
    }

    #[test]
    fn request_path() {
        let a = Args {
            api: String::new(),
            nats: None,
            outputs_of: vec!["router*".into()],
            inputs_of: vec!["a b".into()],
            sample_rate: Some(2),
            limit: Some(5),
            logfmt: false,
        };
        assert_eq!(
            path(&a),
            "/api/tap?outputs_of=router%2A&inputs_of=a%20b&sample=2&limit=5"
        );
    }
}
