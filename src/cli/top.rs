//! `weir top`: a live terminal dashboard of a running Weir's components, from its API's
//! `/api/graph` (over HTTP, or over NATS with `--nats`; polled every `--interval`, on a thread of its own so keys stay responsive).
//! Rates are computed here from the counters' differences between two polls.
//!
//! Keys: `q`, Esc or Ctrl-C quit; `s`/`S` (or →/←) change the sort column; `r` reverses it;
//! ↑/↓ move the selection.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::{Cell, Paragraph, Row, Table, TableState};
use ratatui::Frame;
use serde_json::Value;

use super::api_client::{Api, NatsArgs};

/// One poll of `/api/graph`.
struct Snapshot {
    at: Instant,
    components: Vec<Counters>,
}

/// A component's counters at one poll.
#[derive(Clone, Default)]
struct Counters {
    id: String,
    kind: String,
    type_name: String,
    received_events: u64,
    sent_events: u64,
    received_bytes: u64,
    sent_bytes: u64,
    errors: u64,
    discarded: u64,
    buffer: Option<(u64, u64)>,
    latency: Option<(u64, f64)>,
    /// The API's own sampled rates (used until two polls give ours).
    api_rates: (f64, f64),
}

/// What a row shows.
#[derive(Clone, Default)]
struct Shown {
    c: Counters,
    events_in: f64,
    events_out: f64,
    bytes_in: Option<f64>,
    bytes_out: Option<f64>,
    /// Mean seconds per batch over the last period.
    latency: Option<f64>,
}

const COLUMNS: [&str; 11] = [
    "ID",
    "KIND",
    "TYPE",
    "EVENTS IN/s",
    "EVENTS OUT/s",
    "BYTES IN/s",
    "BYTES OUT/s",
    "ERRORS",
    "DISCARDED",
    "BUFFER",
    "LATENCY",
];

fn parse(v: &Value) -> Vec<Counters> {
    let u = |c: &Value, k: &str| c.get(k).and_then(Value::as_u64).unwrap_or(0);
    let f = |c: &Value, k: &str| c.get(k).and_then(Value::as_f64).unwrap_or(0.0);
    let s = |c: &Value, k: &str| c.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    v.get("components")
        .and_then(Value::as_array)
        .map(|cs| {
            cs.iter()
                .map(|c| Counters {
                    id: s(c, "id"),
                    kind: s(c, "kind"),
                    type_name: s(c, "type"),
                    received_events: u(c, "received_events"),
                    sent_events: u(c, "sent_events"),
                    received_bytes: u(c, "received_bytes"),
                    sent_bytes: u(c, "sent_bytes"),
                    // An older API without `errors_total`: the sum of `errors` by kind.
                    errors: c
                        .get("errors_total")
                        .and_then(Value::as_u64)
                        .unwrap_or_else(|| {
                            c.get("errors")
                                .and_then(Value::as_object)
                                .map(|m| m.values().filter_map(Value::as_u64).sum())
                                .unwrap_or(0)
                        }),
                    discarded: u(c, "discarded_events"),
                    buffer: c
                        .get("buffer")
                        .filter(|b| !b.is_null())
                        .map(|b| (u(b, "events"), u(b, "max_events"))),
                    latency: c
                        .get("latency")
                        .filter(|l| !l.is_null())
                        .map(|l| (u(l, "batches"), f(l, "sum_secs"))),
                    api_rates: (f(c, "received_events_per_sec"), f(c, "sent_events_per_sec")),
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Rows from the latest poll and the one before (rates over the time between them).
fn rows(prev: Option<&Snapshot>, now: &Snapshot) -> Vec<Shown> {
    let before: HashMap<&str, &Counters> = prev
        .map(|p| p.components.iter().map(|c| (c.id.as_str(), c)).collect())
        .unwrap_or_default();
    let secs = prev.map(|p| now.at.duration_since(p.at).as_secs_f64());
    now.components
        .iter()
        .map(|c| {
            let rate = |a: u64, b: u64, s: f64| a.saturating_sub(b) as f64 / s;
            match (before.get(c.id.as_str()), secs.filter(|s| *s > 0.0)) {
                (Some(p), Some(s)) => Shown {
                    c: c.clone(),
                    events_in: rate(c.received_events, p.received_events, s),
                    events_out: rate(c.sent_events, p.sent_events, s),
                    bytes_in: Some(rate(c.received_bytes, p.received_bytes, s)),
                    bytes_out: Some(rate(c.sent_bytes, p.sent_bytes, s)),
                    latency: match (c.latency, p.latency) {
                        (Some((n, sum)), Some((pn, psum))) if n > pn => {
                            Some((sum - psum).max(0.0) / (n - pn) as f64)
                        }
                        _ => None,
                    },
                },
                _ => Shown {
                    c: c.clone(),
                    events_in: c.api_rates.0,
                    events_out: c.api_rates.1,
                    bytes_in: None,
                    bytes_out: None,
                    latency: None,
                },
            }
        })
        .collect()
}

/// `1234.5` as `1.2k`; small rates keep one decimal; zero is `0`.
fn human(v: f64) -> String {
    if v == 0.0 {
        return "0".into();
    }
    let (v, unit) = if v >= 1e9 {
        (v / 1e9, "G")
    } else if v >= 1e6 {
        (v / 1e6, "M")
    } else if v >= 1e3 {
        (v / 1e3, "k")
    } else {
        (v, "")
    };
    if v >= 100.0 {
        format!("{v:.0}{unit}")
    } else {
        format!("{v:.1}{unit}")
    }
}

fn human_bytes(v: Option<f64>) -> String {
    match v {
        None => "-".into(),
        Some(0.0) => "0".into(),
        Some(v) if v >= 1024.0 * 1024.0 => format!("{:.1} MiB", v / (1024.0 * 1024.0)),
        Some(v) if v >= 1024.0 => format!("{:.1} KiB", v / 1024.0),
        Some(v) => format!("{v:.0} B"),
    }
}

fn human_secs(v: Option<f64>) -> String {
    match v {
        None => "-".into(),
        Some(s) if s >= 1.0 => format!("{s:.2} s"),
        Some(s) if s >= 1e-3 => format!("{:.1} ms", s * 1e3),
        Some(s) => format!("{:.0} µs", s * 1e6),
    }
}

fn cells(r: &Shown) -> [String; 11] {
    [
        r.c.id.clone(),
        r.c.kind.clone(),
        r.c.type_name.clone(),
        human(r.events_in),
        human(r.events_out),
        human_bytes(r.bytes_in),
        human_bytes(r.bytes_out),
        r.c.errors.to_string(),
        r.c.discarded.to_string(),
        match r.c.buffer {
            Some((e, max)) if max > 0 => {
                format!("{e}/{max} {:.0}%", e as f64 * 100.0 / max as f64)
            }
            _ => "-".into(),
        },
        human_secs(r.latency),
    ]
}

fn sort(rows: &mut [Shown], column: usize, reverse: bool) {
    fn num(r: &Shown, column: usize) -> f64 {
        match column {
            3 => r.events_in,
            4 => r.events_out,
            5 => r.bytes_in.unwrap_or(-1.0),
            6 => r.bytes_out.unwrap_or(-1.0),
            7 => r.c.errors as f64,
            8 => r.c.discarded as f64,
            9 => r.c.buffer.map_or(-1.0, |(e, m)| e as f64 / m.max(1) as f64),
            _ => r.latency.unwrap_or(-1.0),
        }
    }
    let kind_order = |k: &str| match k {
        "source" => 0,
        "transform" => 1,
        _ => 2,
    };
    rows.sort_by(|a, b| {
        let o = match column {
            0 => a.c.id.cmp(&b.c.id),
            1 => kind_order(&a.c.kind)
                .cmp(&kind_order(&b.c.kind))
                .then(a.c.id.cmp(&b.c.id)),
            2 => a.c.type_name.cmp(&b.c.type_name).then(a.c.id.cmp(&b.c.id)),
            // Numbers: largest first.
            c => num(b, c).total_cmp(&num(a, c)).then(a.c.id.cmp(&b.c.id)),
        };
        if reverse {
            o.reverse()
        } else {
            o
        }
    });
}

struct App {
    api: String,
    rows: Vec<Shown>,
    column: usize,
    reverse: bool,
    table: TableState,
    status: Option<String>,
    updated: Option<Instant>,
    uptime: Option<u64>,
}

impl App {
    fn draw(&mut self, f: &mut Frame) {
        let [head, body, foot] = Layout::vertical([
            Constraint::Length(1),
            Constraint::Min(1),
            Constraint::Length(1),
        ])
        .areas(f.area());
        let sorted_by = format!(
            "{} {}",
            COLUMNS[self.column],
            if self.reverse { "(reversed)" } else { "" }
        );
        f.render_widget(
            Paragraph::new(Line::from(format!(
                "weir top  {}  {} components  sorted by {}",
                self.api,
                self.rows.len(),
                sorted_by.trim_end()
            )))
            .style(Style::default().add_modifier(Modifier::BOLD)),
            head,
        );
        let header = Row::new(COLUMNS.iter().enumerate().map(|(i, c)| {
            let cell = Cell::from(*c);
            if i == self.column {
                cell.style(Style::default().add_modifier(Modifier::UNDERLINED))
            } else {
                cell
            }
        }))
        .style(Style::default().add_modifier(Modifier::BOLD | Modifier::REVERSED));
        // The id column as wide as the longest id (the rest of the row stays left).
        let id_width = self
            .rows
            .iter()
            .map(|r| r.c.id.chars().count())
            .max()
            .unwrap_or(0)
            .clamp(4, 48) as u16;
        let widths = [
            Constraint::Length(id_width),
            Constraint::Length(9),
            Constraint::Length(16),
            Constraint::Length(11),
            Constraint::Length(12),
            Constraint::Length(11),
            Constraint::Length(11),
            Constraint::Length(7),
            Constraint::Length(9),
            Constraint::Length(16),
            Constraint::Length(9),
        ];
        let table = Table::new(self.rows.iter().map(|r| Row::new(cells(r))), widths)
            .header(header)
            .column_spacing(1)
            .row_highlight_style(Style::default().add_modifier(Modifier::REVERSED));
        f.render_stateful_widget(table, body, &mut self.table);
        let age = self
            .updated
            .map(|t| format!("updated {:.0}s ago", t.elapsed().as_secs_f64()))
            .unwrap_or_else(|| "waiting for the API".into());
        let uptime = self
            .uptime
            .map(|u| format!("  weir up {u}s"))
            .unwrap_or_default();
        let text = match &self.status {
            Some(e) => format!("{e}  ({age})  q quit"),
            None => format!("q quit  s/S sort  r reverse  ↑/↓ select  {age}{uptime}"),
        };
        f.render_widget(Paragraph::new(Line::from(text)), foot);
    }
}

/// What the polling thread sends.
enum Poll {
    Graph(Snapshot),
    Health(Option<u64>),
    Failed(String),
}

fn poller(api: Api, interval: Duration, tx: mpsc::Sender<Poll>) {
    let timeout = Some(Duration::from_secs(2).max(interval));
    loop {
        let started = Instant::now();
        let got = api.get("/api/graph", timeout).and_then(|r| {
            if r.status() != 200 {
                return Err(format!("/api/graph answered {}", r.status()));
            }
            let body = r.bytes()?;
            serde_json::from_slice::<Value>(&body).map_err(|e| format!("/api/graph: {e}"))
        });
        let msg = match got {
            Ok(v) => Poll::Graph(Snapshot {
                at: Instant::now(),
                components: parse(&v),
            }),
            Err(e) => Poll::Failed(e),
        };
        if tx.send(msg).is_err() {
            return;
        }
        // `/health` for the uptime (both 200 and 503 carry it).
        let uptime = api
            .get("/health", timeout)
            .and_then(|r| r.bytes())
            .ok()
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
            .and_then(|v| v.get("uptime_secs").and_then(Value::as_u64));
        if tx.send(Poll::Health(uptime)).is_err() {
            return;
        }
        std::thread::sleep(interval.saturating_sub(started.elapsed()));
    }
}

pub fn top(api: &str, nats: Option<&NatsArgs>, interval: Duration) -> u8 {
    let api = match Api::new(api, nats) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {e}");
            return crate::exit::FAILED;
        }
    };
    if !std::io::stdout().is_terminal() {
        eprintln!("error: weir top draws on a terminal; standard output is not one");
        return crate::exit::FAILED;
    }
    let interval = interval.max(Duration::from_millis(100));
    let (tx, rx) = mpsc::channel();
    let described = api.describe();
    std::thread::spawn(move || poller(api, interval, tx));
    // Raw mode and the alternate screen; a panic hook that restores the terminal first.
    let mut terminal = match ratatui::try_init() {
        Ok(t) => t,
        Err(e) => {
            ratatui::restore();
            eprintln!("error: cannot set up the terminal: {e}");
            return crate::exit::FAILED;
        }
    };
    let mut app = App {
        api: described,
        rows: Vec::new(),
        column: 0,
        reverse: false,
        table: TableState::default(),
        status: None,
        updated: None,
        uptime: None,
    };
    let result = run(&mut terminal, &mut app, &rx);
    // The terminal shows its cursor again when dropped: before leaving the alternate screen,
    // so that leaving it is the last thing written.
    drop(terminal);
    let restored = ratatui::try_restore();
    match (result, restored) {
        (Ok(()), Ok(())) => crate::exit::OK,
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("error: {e}");
            crate::exit::FAILED
        }
    }
}

fn run(
    terminal: &mut ratatui::DefaultTerminal,
    app: &mut App,
    rx: &mpsc::Receiver<Poll>,
) -> std::io::Result<()> {
    // Kept in the order of the API (the graph's order) and re-sorted on every change.
    let mut last: Option<Snapshot> = None;
    let mut dirty = true;
    loop {
        while let Ok(p) = rx.try_recv() {
            match p {
                Poll::Graph(s) => {
                    app.rows = rows(last.as_ref(), &s);
                    sort(&mut app.rows, app.column, app.reverse);
                    last = Some(s);
                    app.status = None;
                    app.updated = Some(Instant::now());
                }
                Poll::Health(u) => app.uptime = u,
                Poll::Failed(e) => app.status = Some(e),
            }
            dirty = true;
        }
        if dirty {
            if app.table.selected().is_none() && !app.rows.is_empty() {
                app.table.select(Some(0));
            }
            terminal.draw(|f| app.draw(f))?;
            dirty = false;
        }
        if !event::poll(Duration::from_millis(100))? {
            continue;
        }
        match event::read()? {
            Event::Key(k) if k.kind != KeyEventKind::Release => {
                let n = COLUMNS.len();
                match k.code {
                    KeyCode::Char('q') | KeyCode::Esc => return Ok(()),
                    KeyCode::Char('c') if k.modifiers.contains(KeyModifiers::CONTROL) => {
                        return Ok(())
                    }
                    KeyCode::Char('s') | KeyCode::Right | KeyCode::Tab => {
                        app.column = (app.column + 1) % n
                    }
                    KeyCode::Char('S') | KeyCode::Left | KeyCode::BackTab => {
                        app.column = (app.column + n - 1) % n
                    }
                    KeyCode::Char('r') => app.reverse = !app.reverse,
                    KeyCode::Down | KeyCode::Char('j') => app.table.select_next(),
                    KeyCode::Up | KeyCode::Char('k') => app.table.select_previous(),
                    _ => continue,
                }
                sort(&mut app.rows, app.column, app.reverse);
                dirty = true;
            }
            Event::Resize(..) => dirty = true,
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(at: Instant, received: u64, bytes: u64, lat: (u64, f64)) -> Snapshot {
        Snapshot {
            at,
            components: vec![Counters {
                id: "a".into(),
                received_events: received,
                received_bytes: bytes,
                latency: Some(lat),
                api_rates: (7.0, 8.0),
                ..Default::default()
            }],
        }
    }

    #[test]
    fn rates_from_two_polls() {
        let t = Instant::now();
        let first = rows(None, &snap(t, 100, 1000, (1, 0.5)));
        assert_eq!((first[0].events_in, first[0].events_out), (7.0, 8.0));
        assert!(first[0].bytes_in.is_none());
        let prev = snap(t, 100, 1000, (1, 0.5));
        let now = snap(t + Duration::from_secs(2), 300, 5096, (5, 0.9));
        let r = rows(Some(&prev), &now);
        assert_eq!(r[0].events_in, 100.0);
        assert_eq!(r[0].bytes_in, Some(2048.0));
        assert!((r[0].latency.unwrap() - 0.1).abs() < 1e-9);
        assert_eq!(human(0.0), "0");
        assert_eq!(human(0.25), "0.2");
        assert_eq!(human(1234.0), "1.2k");
        assert_eq!(human_bytes(Some(2048.0)), "2.0 KiB");
        assert_eq!(human_secs(Some(0.0001)), "100 µs");
    }

    #[test]
    fn parses_the_graph() {
        let v: Value = serde_json::from_str(
            r#"{"components":[{"id":"s","kind":"sink","type":"file","received_events":5,"sent_events":4,
            "errors":{"io":2,"encode":1},"discarded_events":1,"buffer":{"events":3,"max_events":10},
            "latency":null,"received_events_per_sec":1.5,"sent_events_per_sec":2.5}],"edges":[]}"#,
        )
        .unwrap();
        let c = &parse(&v)[0];
        assert_eq!(
            (c.id.as_str(), c.kind.as_str(), c.type_name.as_str()),
            ("s", "sink", "file")
        );
        assert_eq!((c.errors, c.discarded, c.buffer), (3, 1, Some((3, 10))));
        assert!(c.latency.is_none());
        let r = rows(
            None,
            &Snapshot {
                at: Instant::now(),
                components: vec![c.clone()],
            },
        );
        assert_eq!(cells(&r[0])[9], "3/10 30%");
    }
}
