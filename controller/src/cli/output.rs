//! Output for people (aligned tables, human sizes and ages) and for scripts (JSON).

use jiff::Timestamp;

/// `-o table` (default) or `-o json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Json,
}

/// A plain text table: a header row and aligned columns.
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(header: &[&str]) -> Table {
        Table {
            header: header.iter().map(|s| s.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn render(&self) -> String {
        let cols = self.header.len();
        let mut width = vec![0usize; cols];
        for row in std::iter::once(&self.header).chain(&self.rows) {
            for (i, cell) in row.iter().enumerate().take(cols) {
                width[i] = width[i].max(cell.chars().count());
            }
        }
        let mut out = String::new();
        for row in std::iter::once(&self.header).chain(&self.rows) {
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate().take(cols) {
                line.push_str(cell);
                if i + 1 < cols {
                    line.push_str(&" ".repeat(width[i] - cell.chars().count() + 2));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }

    pub fn print(&self) {
        print!("{}", self.render());
    }
}

/// Prints a value as pretty JSON.
pub fn print_json<T: serde::Serialize>(value: &T) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).expect("views serialize to JSON")
    );
}

/// Bytes in binary units: `512 B`, `1.5 KiB`, `15.6 GiB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// How long ago a time was: `12s ago`, `5m ago`, `3h ago`, `2d ago`; `-` for none.
pub fn ago(t: Option<Timestamp>) -> String {
    match t {
        None => "-".into(),
        Some(t) => {
            let secs = Timestamp::now().duration_since(t).as_secs();
            if secs < 0 {
                return format!("in {}", span(-secs));
            }
            format!("{} ago", span(secs))
        }
    }
}

/// A compact span of seconds: `45s`, `12m`, `3h`, `2d`.
pub fn span(secs: i64) -> String {
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

/// A timestamp for people: `2026-11-24 23:18:04Z`.
pub fn when(t: Timestamp) -> String {
    t.strftime("%Y-%m-%d %H:%M:%SZ").to_string()
}

/// `k=v,k2=v2` or `-`.
pub fn labels(map: &std::collections::BTreeMap<String, String>) -> String {
    if map.is_empty() {
        "-".into()
    } else {
        map.iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align() {
        let mut t = Table::new(&["ID", "STATE"]);
        t.row(vec!["h-1".into(), "Ready".into()]);
        t.row(vec!["h-22222".into(), "Unreachable".into()]);
        assert_eq!(
            t.render(),
            "ID       STATE\nh-1      Ready\nh-22222  Unreachable\n"
        );
    }

    #[test]
    fn sizes_and_spans() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(3 * 1024 * 1024 * 1024 / 2), "1.5 GiB");
        assert_eq!(span(59), "59s");
        assert_eq!(span(3600), "60m");
        assert_eq!(span(3 * 86_400), "3d");
    }
}
