//! SVG plots of the ablation (plotters): per task, the dev split's pass
//! rate (with 95% Wilson intervals as error bars) and raw reward over
//! steps, one line per run (and seed).

use std::path::Path;

use cgpo_suites::ablation::Summary;
use plotters::prelude::*;

/// The report's palette, so a run has the same colour in both.
const COLORS: [RGBColor; 10] = cgpo::report::chart::PALETTE;

/// A plotted point: step, value, and the value's 95% interval.
type Point = (f64, f64, f64, f64);

/// Writes `<task>-pass_rate.svg` and `<task>-reward.svg` for every task;
/// returns how many files it wrote.
pub fn write_all(summary: &Summary, dir: &Path) -> Result<usize, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut tasks: Vec<String> = Vec::new();
    for r in &summary.runs {
        for t in r.tasks.keys() {
            if !tasks.contains(t) {
                tasks.push(t.clone());
            }
        }
    }
    let mut names: Vec<&str> = Vec::new();
    for r in &summary.runs {
        if !names.contains(&r.name.as_str()) {
            names.push(&r.name);
        }
    }
    let mut written = 0;
    for task in &tasks {
        for (metric, label) in [
            ("pass_rate", "dev pass rate (95% CI)"),
            ("reward", "dev raw reward"),
        ] {
            let path = dir.join(format!("{task}-{metric}.svg"));
            plot(summary, task, metric, label, &names, &path)
                .map_err(|e| format!("{}: {e}", path.display()))?;
            written += 1;
        }
    }
    Ok(written)
}

fn plot(
    summary: &Summary,
    task: &str,
    metric: &str,
    label: &str,
    names: &[&str],
    path: &Path,
) -> Result<(), Box<dyn std::error::Error>> {
    let series: Vec<(usize, Vec<Point>)> = summary
        .runs
        .iter()
        .map(|r| {
            let color = names.iter().position(|n| *n == r.name).unwrap_or(0);
            let points = r
                .curve
                .iter()
                .filter_map(|(step, points)| {
                    let p = points.get(task)?;
                    let (y, lo, hi) = if metric == "pass_rate" {
                        (p.eval_pass_rate, p.pass_ci95[0], p.pass_ci95[1])
                    } else {
                        (p.eval_reward, p.eval_reward, p.eval_reward)
                    };
                    Some((*step as f64, y, lo, hi))
                })
                .collect();
            (color, points)
        })
        .collect();
    let all = series.iter().flat_map(|(_, p)| p.iter());
    let (mut x1, mut y0, mut y1) = (1.0f64, f64::INFINITY, f64::NEG_INFINITY);
    for &(x, y, _, _) in all {
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    if metric == "pass_rate" {
        (y0, y1) = (0.0, 1.0);
    } else if !y0.is_finite() || y1 - y0 < 1e-6 {
        (y0, y1) = (y0.min(0.0) - 1.0, y1.max(0.0) + 1.0);
    }
    let root = SVGBackend::new(path, (720, 420)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(format!("{task}: {label}"), ("sans-serif", 20))
        .margin(10)
        .x_label_area_size(35)
        .y_label_area_size(50)
        .build_cartesian_2d(0.0..x1, y0..y1)?;
    chart.configure_mesh().x_desc("step").y_desc(label).draw()?;
    let mut labelled = Vec::new();
    for (color, points) in series {
        let style = COLORS[color % COLORS.len()];
        if metric == "pass_rate" {
            chart.draw_series(points.iter().map(|&(x, _, lo, hi)| {
                PathElement::new(vec![(x, lo), (x, hi)], style.mix(0.5).stroke_width(1))
            }))?;
        }
        let line = chart.draw_series(LineSeries::new(
            points.iter().map(|&(x, y, _, _)| (x, y)),
            style.stroke_width(2),
        ))?;
        if !labelled.contains(&color) {
            labelled.push(color);
            line.label(names[color])
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], style));
        }
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperLeft)
        .draw()?;
    root.present()?;
    Ok(())
}
