//! `scripts/bench.sh --check`: each hop's p50 and p99 against the figures recorded in
//! docs/benchmarks.md, failing a hop more than `FACTOR` times its record. Run by hand and in
//! the soak, never as a timed test: a loaded machine fails it honestly.

use std::fmt::Write as _;

/// How much slower than its record a hop may be before the check fails.
pub const FACTOR: f64 = 1.5;

/// The line above the table the check reads in docs/benchmarks.md.
pub const MARKER: &str = "<!-- bench.sh --check reads the table below -->";

/// One recorded hop: its name as the benchmark prints it, p50 and p99 in ms.
#[derive(Debug, Clone, PartialEq)]
pub struct Recorded {
    pub hop: String,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

/// One hop's verdict.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub hop: String,
    pub recorded: (f64, f64),
    /// None: the run did not measure it (e.g. no browser).
    pub measured: Option<(f64, f64)>,
    pub ok: bool,
}

/// The table after `MARKER`: `| hop | p50 ms | p99 ms |` rows (a header and a `|---|` line
/// first), up to the first line that is not a table row.
pub fn recorded(markdown: &str) -> Result<Vec<Recorded>, String> {
    let mut lines = markdown.lines().skip_while(|l| l.trim() != MARKER).skip(1);
    if lines.clone().next().is_none() {
        return Err(format!("no line {MARKER:?} in the recorded figures"));
    }
    let rows: Vec<&str> = lines
        .by_ref()
        .skip_while(|l| l.trim().is_empty())
        .take_while(|l| l.trim_start().starts_with('|'))
        .collect();
    let mut out = Vec::new();
    // Header and separator first.
    for row in rows.iter().skip(2) {
        let cells: Vec<&str> =
            row.trim().trim_matches('|').split('|').map(|c| c.trim().trim_matches('*')).collect();
        let [hop, p50, p99] = cells[..] else {
            return Err(format!("a recorded row is not `| hop | p50 ms | p99 ms |`: {row}"));
        };
        let number = |s: &str| s.parse::<f64>().map_err(|_| format!("not a number of ms: {s:?} in {row}"));
        out.push(Recorded { hop: hop.to_string(), p50_ms: number(p50)?, p99_ms: number(p99)? });
    }
    if out.is_empty() {
        return Err("the recorded table has no rows".into());
    }
    Ok(out)
}

/// Each recorded hop against what was measured (name, p50 ms, p99 ms).
pub fn compare(recorded: &[Recorded], measured: &[(String, f64, f64)], factor: f64) -> Vec<Verdict> {
    recorded
        .iter()
        .map(|r| {
            let m = measured.iter().find(|(name, ..)| *name == r.hop).map(|&(_, p50, p99)| (p50, p99));
            let ok = m.is_none_or(|(p50, p99)| p50 <= factor * r.p50_ms && p99 <= factor * r.p99_ms);
            Verdict { hop: r.hop.clone(), recorded: (r.p50_ms, r.p99_ms), measured: m, ok }
        })
        .collect()
}

/// The verdicts as a table for people.
pub fn table(verdicts: &[Verdict], factor: f64) -> String {
    let mut out = format!("\ncheck against docs/benchmarks.md (fails above {factor}x the record):\n");
    for v in verdicts {
        let measured = v.measured.map_or("not measured".to_string(), |(a, b)| format!("{a:.2} / {b:.2} ms"));
        let _ = writeln!(
            out,
            "  [{}] {:<40} recorded {:.2} / {:.2} ms, now {measured}",
            if v.ok { "ok" } else { "SLOW" },
            v.hop,
            v.recorded.0,
            v.recorded.1
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "# Benchmarks\n\n| other | table |\n|---|---|\n| x | 1 |\n\n<!-- bench.sh --check reads the table below -->\n\n| hop | p50 ms | p99 ms |\n|---|---|---|\n| capture → detection reads (shm) | 2.50 | 4.00 |\n| **capture → browser (end to end)** | **13.0** | **25.0** |\n\nText after.\n";

    #[test]
    fn reads_the_marked_table_only() {
        let rows = recorded(DOC).unwrap();
        assert_eq!(
            rows,
            vec![
                Recorded { hop: "capture → detection reads (shm)".into(), p50_ms: 2.5, p99_ms: 4.0 },
                Recorded { hop: "capture → browser (end to end)".into(), p50_ms: 13.0, p99_ms: 25.0 },
            ]
        );
        assert!(recorded("no marker here").is_err());
        assert!(recorded(&DOC.replace("| 2.50 |", "| fast |")).is_err());
    }

    #[test]
    fn a_hop_over_one_and_a_half_times_its_record_fails() {
        let rows = recorded(DOC).unwrap();
        let measured = |p50: f64, p99: f64| vec![("capture → detection reads (shm)".to_string(), p50, p99)];
        // At the limit: fine; the unmeasured browser hop is not a failure.
        let v = compare(&rows, &measured(3.75, 6.0), FACTOR);
        assert!(v.iter().all(|v| v.ok), "{v:?}");
        assert_eq!(v[1].measured, None);
        // Either percentile over the limit fails.
        assert!(!compare(&rows, &measured(3.76, 1.0), FACTOR)[0].ok);
        assert!(!compare(&rows, &measured(1.0, 6.1), FACTOR)[0].ok);
        assert!(table(&compare(&rows, &measured(9.0, 9.0), FACTOR), FACTOR).contains("[SLOW]"));
    }
}
