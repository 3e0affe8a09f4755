//! The drill report as text: the tier × fault matrix, what each fault recorded, one line per gap.
use std::collections::BTreeMap;

use crate::drill::{Cell, CellStatus, DrillReport, Fault, MAX_LISTED_REQUESTS, TierRow};

/// The report as text: the matrix, what each fault recorded, and one line per gap.
pub fn render(report: &DrillReport) -> String {
    let mut out = format!(
        "tierhost drill: cascade \"{}\" ({}), {} request{} from {}\n",
        report.cascade,
        report.config.display(),
        report.requests,
        if report.requests == 1 { "" } else { "s" },
        report.samples
    );
    out.push_str(&format!(
        "each cell: one tier broken on purpose, every request answered within {} ms + {} ms grace, \
         the broken tier's trail entry naming the right reason\n",
        report.budget_ms, report.grace_ms
    ));
    out.push_str(
        "off in the drill (so every request that gets that far calls the broken tier): \
         breakers, hedging, the prediction cache, configured chaos, the audit file",
    );
    if report.removed.is_empty() {
        out.push_str("; none configured\n\n");
    } else {
        out.push_str(&format!("; removed: {}\n\n", report.removed.join(", ")));
    }

    let mut header = vec!["tier".to_string(), "reached".to_string()];
    header.extend(Fault::ALL.iter().map(|f| f.name().to_string()));
    let mut rows = vec![header];
    for row in &report.tiers {
        let mut line = vec![row.tier.clone(), reached(row, report.requests)];
        line.extend(row.cells.iter().map(Cell::mark));
        rows.push(line);
    }
    out.push_str(&aligned(&rows, ""));

    out.push_str("\nrecorded by the broken tier (requests that reached it):\n");
    let recorded: Vec<Vec<String>> = Fault::ALL
        .iter()
        .enumerate()
        .map(|(i, fault)| {
            let mut totals: BTreeMap<&str, usize> = BTreeMap::new();
            let mut slowest = 0;
            for cell in report.tiers.iter().filter_map(|row| row.cells.get(i)) {
                for (kind, n) in &cell.seen {
                    if kind != "not-reached" {
                        *totals.entry(kind).or_insert(0) += n;
                    }
                }
                slowest = slowest.max(cell.max_elapsed_us);
            }
            let seen: Vec<String> = totals.iter().map(|(k, n)| format!("{k} x{n}")).collect();
            vec![
                fault.name().to_string(),
                format!("expect {}", fault.expected().join("|")),
                format!(
                    "seen {}",
                    if seen.is_empty() {
                        "-".to_string()
                    } else {
                        seen.join(", ")
                    }
                ),
                format!("slowest request {:.1} ms", slowest as f64 / 1e3),
            ]
        })
        .collect();
    out.push_str(&aligned(&recorded, "  "));

    let cells = report.tiers.len() * Fault::ALL.len();
    if report.gaps == 0 {
        out.push_str(&format!("\nall {cells} cells ✓\n"));
        return out;
    }
    out.push_str(&format!("\ngaps: {} of {cells} cells\n", report.gaps));
    for row in &report.tiers {
        let untested: Vec<&Cell> = row
            .cells
            .iter()
            .filter(|c| c.status == CellStatus::Untested)
            .collect();
        if let Some(first) = untested.first() {
            let names: Vec<&str> = untested.iter().map(|c| c.fault.name()).collect();
            out.push_str(&format!(
                "  ✗ {} × {}: untested: no request called the tier ({} served by an earlier \
                 tier, {} turned away by its gates); add samples that fall through to it\n",
                row.tier,
                names.join(", "),
                first.not_reached,
                first.gated
            ));
        }
        for cell in row.cells.iter().filter(|c| c.status == CellStatus::Gap) {
            let mut listed: Vec<String> = cell
                .problems
                .iter()
                .map(|p| format!("{}: {}", p.request_id, p.problem))
                .collect();
            let unlisted = cell.failed.saturating_sub(MAX_LISTED_REQUESTS);
            if unlisted > 0 {
                listed.push(format!("and {unlisted} more failed requests"));
            }
            out.push_str(&format!(
                "  ✗ {} × {}: {} of {} requests failed: {}\n",
                row.tier,
                cell.fault.name(),
                cell.failed,
                cell.requests,
                listed.join("; ")
            ));
        }
    }
    out
}

/// Requests that reached a tier (the same in every cell of its row, since the tiers before
/// it are healthy; shown as a range if timing made them differ).
fn reached(row: &TierRow, requests: usize) -> String {
    let counts: Vec<usize> = row
        .cells
        .iter()
        .map(|c| c.requests - c.not_reached)
        .collect();
    let (lo, hi) = (
        counts.iter().copied().min().unwrap_or(0),
        counts.iter().copied().max().unwrap_or(0),
    );
    if lo == hi {
        format!("{lo}/{requests}")
    } else {
        format!("{lo}-{hi}/{requests}")
    }
}

/// `rows` as text columns, each as wide as its widest cell, two spaces apart, every line
/// after `indent` and without trailing spaces.
fn aligned(rows: &[Vec<String>], indent: &str) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|i| {
            let width = |row: &Vec<String>| row.get(i).map_or(0, |c| c.chars().count());
            rows.iter().map(width).max().unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(indent);
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}
