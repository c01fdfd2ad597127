//! `remote_write_encode`: how fast the `prometheus_remote_write` sink turns samples into a
//! request body (expansion into `TimeSeries`, protobuf encoding, snappy compression), on one
//! core, next to a baseline measured in the same run: serialising the same samples as JSON
//! lines with serde_json.
//!
//! Usage: `remote_write_encode [SERIES] [ROUNDS]` (defaults 10000 and 200). Each round
//! encodes one sample of each of SERIES series (a name and three labels, as a typical
//! `http_requests_total{code,method,instance}`).

use std::collections::BTreeMap;
use std::hint::black_box;
use std::io::Write;
use std::time::Instant;

use weir_sinks::prometheus::common::{SeriesKey, Stored};
use weir_sinks::prometheus::proto;
use weir_sinks::prometheus::remote_write::build_request;

/// One sample as a JSON line (borrowing, as a sink serialising events would).
#[derive(serde::Serialize)]
struct Line<'a> {
    name: &'a str,
    tags: &'a BTreeMap<String, String>,
    value: f64,
    timestamp: i64,
}

fn series(n: usize) -> Vec<SeriesKey> {
    (0..n)
        .map(|i| SeriesKey {
            name: format!("http_requests_{}_total", i % 50),
            tags: BTreeMap::from([
                ("code".to_string(), ["200", "404", "500"][i % 3].to_string()),
                ("method".to_string(), ["GET", "POST"][i % 2].to_string()),
                ("instance".to_string(), format!("host-{}", i / 150)),
            ]),
        })
        .collect()
}

fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let rounds: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(200);
    let keys = series(n);
    let ts0 = 1_700_000_000_000i64;

    // Remote write: build the request from the pending values, encode, compress.
    let mut scratch = Vec::new();
    let mut rw_bytes = 0usize;
    let start = Instant::now();
    for r in 0..rounds {
        let pending = keys.iter().enumerate().map(|(i, k)| {
            (
                k.clone(),
                vec![(ts0 + r as i64, Stored::Counter((i + r) as f64))],
            )
        });
        let req = build_request(pending, &[]);
        let body = proto::encode(&req, &mut scratch).expect("snappy");
        rw_bytes += body.len();
        black_box(body);
    }
    let rw = start.elapsed();

    // Baseline: the same samples as JSON lines.
    let mut out = Vec::new();
    let mut json_bytes = 0usize;
    let start = Instant::now();
    for r in 0..rounds {
        out.clear();
        for (i, k) in keys.iter().enumerate() {
            let line = Line {
                name: &k.name,
                tags: &k.tags,
                value: (i + r) as f64,
                timestamp: ts0 + r as i64,
            };
            serde_json::to_writer(&mut out, &line).expect("json");
            out.push(b'\n');
        }
        json_bytes += out.len();
        black_box(&out);
    }
    let js = start.elapsed();

    let samples = (n * rounds) as f64;
    let rw_rate = samples / rw.as_secs_f64();
    let js_rate = samples / js.as_secs_f64();
    let mut so = std::io::stdout().lock();
    let _ = writeln!(so, "series: {n}, rounds: {rounds}, samples: {}", n * rounds);
    let _ = writeln!(
        so,
        "| case | samples/s | bytes per sample | vs JSON |\n|---|---:|---:|---:|"
    );
    let _ = writeln!(
        so,
        "| remote write: expand + protobuf + snappy | {:.0} | {:.1} | {:.2}x |",
        rw_rate,
        rw_bytes as f64 / samples,
        rw_rate / js_rate
    );
    let _ = writeln!(
        so,
        "| baseline: serde_json lines | {:.0} | {:.1} | 1.00x |",
        js_rate,
        json_bytes as f64 / samples
    );
}
