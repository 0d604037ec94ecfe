//! The results as Markdown: a header naming the machine, versions and date, then one table per scenario where
//! each figure stands beside its baseline as a ratio, with the server's CPU and memory and the generator's CPU
//! (a figure taken while the generator was above 80 % of its core is marked ⚠: the generator may have been the
//! limit, not the server).

use std::fmt::Write;
use std::process::Command;

use crate::scenarios::Measured;

/// One figure of one target.
pub struct Row {
    pub target: String,
    pub figure: String,
    pub value: f64,
    pub unit: &'static str,
    /// The baseline's value of the same figure and its name.
    pub baseline: Option<(f64, String)>,
    pub measured: Option<Measured>,
    pub note: String,
}

/// Figures where smaller is better read their ratio as "times the baseline" all the same.
#[derive(Default)]
pub struct Report {
    pub sections: Vec<(String, Vec<Row>)>,
    /// Sections with a table of their own (title, Markdown), printed after the others.
    pub tables: Vec<(String, String)>,
    /// Lines printed under a section's title (the machine's state through its scenario), by title.
    pub notes: Vec<(String, Vec<String>)>,
}

/// Where the report stood before a scenario ran (see [`Report::annotate_since`]).
#[derive(Clone, Copy, Debug)]
pub struct Mark {
    sections: usize,
    tables: usize,
}

fn fmt_value(v: f64, unit: &str) -> String {
    match unit {
        "ms" => format!("{v:.2} ms"),
        "B" => {
            if v >= 1024.0 * 1024.0 {
                format!("{:.1} MiB", v / 1024.0 / 1024.0)
            } else {
                format!("{:.1} KiB", v / 1024.0)
            }
        }
        "s" => format!("{v:.2} s"),
        "" => format!("{v:.0}"),
        other => format!("{v:.0} {other}"),
    }
}

impl Report {
    pub fn section(&mut self, title: &str, rows: Vec<Row>) {
        self.sections.push((title.to_string(), rows));
    }

    /// A section whose Markdown (a table of its own) is given whole.
    pub fn table(&mut self, title: &str, markdown: String) {
        self.tables.push((title.to_string(), markdown));
    }

    pub fn mark(&self) -> Mark {
        Mark { sections: self.sections.len(), tables: self.tables.len() }
    }

    /// `lines` under the title of every section added since `mark` (one scenario's).
    pub fn annotate_since(&mut self, mark: Mark, lines: &[String]) {
        let titles: Vec<String> = self.sections[mark.sections.min(self.sections.len())..]
            .iter()
            .map(|(t, _)| t.clone())
            .chain(self.tables[mark.tables.min(self.tables.len())..].iter().map(|(t, _)| t.clone()))
            .collect();
        for title in titles {
            self.notes.push((title, lines.to_vec()));
        }
    }

    /// The notes of a section as a Markdown list (empty when it has none).
    fn notes_of(&self, title: &str) -> String {
        let mut out = String::new();
        for (_, lines) in self.notes.iter().filter(|(t, _)| t == title) {
            for line in lines {
                let _ = writeln!(out, "- {line}");
            }
        }
        if !out.is_empty() {
            out.push('\n');
        }
        out
    }

    pub fn markdown(&self, header: &str) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "{header}");
        for (title, rows) in &self.sections {
            let _ = writeln!(out, "\n### {title}\n");
            out.push_str(&self.notes_of(title));
            let _ = writeln!(
                out,
                "| target | figure | value | vs baseline | server CPU | server RSS | generator CPU | note |"
            );
            let _ = writeln!(out, "|---|---|---|---|---|---|---|---|");
            for r in rows {
                let ratio = match &r.baseline {
                    Some((b, name)) if *b > 0.0 => format!("{:.2}× {name}", r.value / b),
                    Some((_, name)) => format!("– ({name}: 0)"),
                    None => String::new(),
                };
                let (cpu, rss, generator) = match &r.measured {
                    Some(m) => (
                        format!("{:.0} %", m.server_cpu),
                        fmt_value(m.server_rss as f64, "B"),
                        format!("{:.0} %{}", m.generator_cpu, if m.generator_bound() { " ⚠" } else { "" }),
                    ),
                    None => Default::default(),
                };
                let _ = writeln!(
                    out,
                    "| {} | {} | {} | {ratio} | {cpu} | {rss} | {generator} | {} |",
                    r.target,
                    r.figure,
                    fmt_value(r.value, r.unit),
                    r.note
                );
            }
        }
        for (title, markdown) in &self.tables {
            let _ = write!(out, "\n### {title}\n\n{}{markdown}", self.notes_of(title));
        }
        out
    }
}

fn output(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

/// Machine, versions and date.
pub fn header(command: &str, pinned: bool, shared_note: Option<&str>) -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find_map(|l| l.strip_prefix("model name").map(|v| v.trim_start_matches([' ', '\t', ':']).to_string()))
        })
        .unwrap_or_default();
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| m.lines().next().map(|l| l.split_whitespace().nth(1).unwrap_or("0").to_string()))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map(|kb| format!("{:.1} GiB", kb / 1024.0 / 1024.0))
        .unwrap_or_default();
    let mut out = String::new();
    let _ = writeln!(out, "## Run of {}", output("date", &["-u", "+%Y-%m-%d %H:%M UTC"]));
    if let Some(note) = shared_note {
        let _ = writeln!(out, "\n**{note}**");
    }
    let _ = writeln!(out);
    let _ = writeln!(out, "- command: `{command}`");
    let _ =
        writeln!(out, "- machine: {cpu}, {} cores, {mem} RAM, Linux {}", crate::sys::cores(), output("uname", &["-r"]));
    let _ = writeln!(
        out,
        "- pinning: {}",
        if pinned { "server on core 0 (taskset), generator on core 1 (sched_setaffinity)" } else { "none (one core)" }
    );
    let _ = writeln!(
        out,
        "- versions: Parley {} ({}), {}, node {}, SQLite {} (rusqlite baseline)",
        env!("CARGO_PKG_VERSION"),
        output("git", &["rev-parse", "--short", "HEAD"]),
        output("rustc", &["--version"]),
        output("node", &["--version"]),
        rusqlite::version()
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notes_go_under_the_sections_of_their_scenario_only() {
        let mut report = Report::default();
        report.section("b. Chat", Vec::new());
        let mark = report.mark();
        report.section("c. Delivery", Vec::new());
        report.table("g. Nodes", "| a |\n|---|\n".to_string());
        report.annotate_since(mark, &["machine at start: load 0.10".to_string()]);
        let md = report.markdown("## Run");
        assert!(md.contains("### b. Chat\n\n| target"), "{md}");
        assert!(md.contains("### c. Delivery\n\n- machine at start: load 0.10\n\n| target"), "{md}");
        assert!(md.contains("### g. Nodes\n\n- machine at start: load 0.10\n\n| a |"), "{md}");
    }
}
