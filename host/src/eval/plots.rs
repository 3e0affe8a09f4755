//! SVG plots of an eval report: the primary's accuracy vs coverage as its `min_confidence`
//! varies, and which tier served each scenario's requests.
use std::path::Path;

use plotters::prelude::*;

use crate::cascade::SAFE_DEFAULT;
use crate::eval::{EvalError, RunReport};

/// The plot error for the SVG at `path`.
fn err<E: std::fmt::Display>(path: &Path) -> impl Fn(E) -> EvalError + Copy + '_ {
    move |e| EvalError::Plot {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

const PALETTE: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(127, 127, 127),
];

/// Accuracy (y) against coverage (x) for each threshold of `curve` = (threshold, coverage, accuracy).
pub fn accuracy_vs_coverage(
    path: &Path,
    tier: &str,
    curve: &[(f64, f64, Option<f64>)],
) -> Result<(), EvalError> {
    let err = err(path);
    let points: Vec<(f64, f64)> = curve
        .iter()
        .filter_map(|(_, c, a)| a.map(|a| (*c, a)))
        .collect();
    if points.is_empty() {
        return Ok(());
    }
    let lo = points.iter().map(|p| p.1).fold(1.0, f64::min);
    let root = SVGBackend::new(path, (720, 440)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("{tier}: accuracy vs coverage as min_confidence varies"),
            ("sans-serif", 20),
        )
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(55)
        .build_cartesian_2d(0f64..1.0, (lo - 0.02).max(0.0)..1.0)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("coverage (share of requests the tier keeps)")
        .y_desc("accuracy on kept requests")
        .draw()
        .map_err(err)?;
    chart
        .draw_series(LineSeries::new(points.clone(), PALETTE[0].stroke_width(2)))
        .map_err(err)?;
    chart
        .draw_series(curve.iter().filter_map(|(t, c, a)| {
            a.map(|a| {
                EmptyElement::at((*c, a))
                    + Circle::new((0, 0), 4, PALETTE[0].filled())
                    + Text::new(format!("{t:.2}"), (6, -14), ("sans-serif", 12))
            })
        }))
        .map_err(err)?;
    root.present().map_err(err)
}

/// One horizontal bar per run: the share of requests each tier served (abstentions last).
pub fn tier_mix(path: &Path, runs: &[RunReport], tiers: &[String]) -> Result<(), EvalError> {
    let err = err(path);
    if runs.is_empty() {
        return Ok(());
    }
    let mut columns: Vec<String> = tiers.to_vec();
    columns.push(SAFE_DEFAULT.into());
    let names: Vec<String> = runs.iter().map(|r| r.name.clone()).collect();
    let height = 80 + 34 * runs.len() as u32;
    let root = SVGBackend::new(path, (820, height)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let mut chart = ChartBuilder::on(&root)
        .caption("who served the requests, per run", ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(35)
        .y_label_area_size(150)
        .build_cartesian_2d(0f64..1.0, 0f64..runs.len() as f64)
        .map_err(err)?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_labels(runs.len() * 2 + 1)
        .y_label_formatter(&|y| {
            let i = (*y - 0.5).round();
            if (y - 0.5 - i).abs() < 1e-6 && i >= 0.0 {
                names.get(i as usize).cloned().unwrap_or_default()
            } else {
                String::new()
            }
        })
        .x_desc("share of requests")
        .draw()
        .map_err(err)?;
    for (c, column) in columns.iter().enumerate() {
        let color = PALETTE[c.min(PALETTE.len() - 1)];
        let bars: Vec<Rectangle<(f64, f64)>> = runs
            .iter()
            .enumerate()
            .map(|(i, run)| {
                let before: f64 = columns[..c]
                    .iter()
                    .filter_map(|t| run.served_by.get(t))
                    .map(|q| q.share)
                    .sum();
                let share = run.served_by.get(column).map_or(0.0, |q| q.share);
                Rectangle::new(
                    [(before, i as f64 + 0.15), (before + share, i as f64 + 0.85)],
                    color.filled(),
                )
            })
            .collect();
        chart
            .draw_series(bars)
            .map_err(err)?
            .label(column.clone())
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], color.filled()));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(SeriesLabelPosition::LowerRight)
        .draw()
        .map_err(err)?;
    root.present().map_err(err)
}
