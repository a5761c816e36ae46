//! One line chart as an SVG string (plotters' SVG backend): series over
//! steps, runs overlaid, alarms as red vertical lines.

use plotters::prelude::*;

/// The categorical palette (Tableau 10), one colour per run.
pub const PALETTE: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

/// The colour of alarm markers.
pub const ALARM: RGBColor = RGBColor(220, 0, 0);

/// One line: its legend label (`None`: no legend entry, e.g. a second
/// seed of a labelled run), palette index and points.
pub struct Series {
    pub label: Option<String>,
    pub color: usize,
    pub points: Vec<(f64, f64)>,
    pub dashed: bool,
}

/// What to draw.
pub struct Chart<'a> {
    pub title: &'a str,
    pub y_label: &'a str,
    pub series: Vec<Series>,
    /// Steps with an alarm on this task.
    pub alarms: Vec<f64>,
    /// Fixed y range (rates); otherwise from the data.
    pub y_range: Option<(f64, f64)>,
}

pub const WIDTH: u32 = 440;
pub const HEIGHT: u32 = 260;

/// Renders `chart`; an empty chart (no points) says so in its caption.
pub fn render(chart: &Chart) -> Result<String, String> {
    let mut svg = String::new();
    draw(chart, &mut svg).map_err(|e| format!("chart `{}`: {e}", chart.title))?;
    Ok(svg)
}

fn draw(chart: &Chart, out: &mut String) -> Result<(), Box<dyn std::error::Error>> {
    let points = chart.series.iter().flat_map(|s| s.points.iter());
    let (mut x0, mut x1) = (f64::INFINITY, f64::NEG_INFINITY);
    let (mut y0, mut y1) = (f64::INFINITY, f64::NEG_INFINITY);
    for &(x, y) in points.filter(|(x, y)| x.is_finite() && y.is_finite()) {
        (x0, x1) = (x0.min(x), x1.max(x));
        (y0, y1) = (y0.min(y), y1.max(y));
    }
    for &a in &chart.alarms {
        (x0, x1) = (x0.min(a), x1.max(a));
    }
    if !x0.is_finite() {
        (x0, x1) = (0.0, 1.0);
    }
    if x1 - x0 < 1.0 {
        x1 = x0 + 1.0;
    }
    if let Some(r) = chart.y_range {
        (y0, y1) = r;
    } else if !y0.is_finite() {
        (y0, y1) = (0.0, 1.0);
    } else {
        let pad = ((y1 - y0) * 0.05).max(1e-3);
        (y0, y1) = (y0 - pad, y1 + pad);
    }
    let root = SVGBackend::with_string(out, (WIDTH, HEIGHT)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut c = ChartBuilder::on(&root)
        .caption(chart.title, ("sans-serif", 15))
        .margin(8)
        .x_label_area_size(28)
        .y_label_area_size(48)
        .build_cartesian_2d(x0..x1, y0..y1)?;
    c.configure_mesh()
        .x_desc("step")
        .y_desc(chart.y_label)
        .label_style(("sans-serif", 11))
        .x_label_formatter(&|x| format!("{x:.0}"))
        .light_line_style(WHITE.mix(0.0))
        .draw()?;
    for &a in &chart.alarms {
        c.draw_series(std::iter::once(PathElement::new(
            vec![(a, y0), (a, y1)],
            ALARM.mix(0.8).stroke_width(2),
        )))?;
    }
    let mut any_label = false;
    for s in &chart.series {
        let color = PALETTE[s.color % PALETTE.len()];
        let style = if s.dashed {
            color.mix(0.6).stroke_width(1)
        } else {
            color.stroke_width(2)
        };
        if s.points.len() == 1 {
            c.draw_series(s.points.iter().map(|&p| Circle::new(p, 3, color.filled())))?;
        }
        let line = c.draw_series(LineSeries::new(s.points.iter().copied(), style))?;
        if let Some(label) = &s.label {
            any_label = true;
            line.label(label.as_str()).legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 14, y)], color.stroke_width(2))
            });
        }
    }
    if any_label {
        c.configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.3))
            .label_font(("sans-serif", 10))
            .position(SeriesLabelPosition::UpperLeft)
            .draw()?;
    }
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_svg_with_lines_legend_and_alarm() {
        let svg = render(&Chart {
            title: "chat: pass rate",
            y_label: "rate",
            series: vec![Series {
                label: Some("cgpo-crpg".into()),
                color: 0,
                points: vec![(0.0, 0.2), (1.0, 0.4), (2.0, 0.5)],
                dashed: false,
            }],
            alarms: vec![1.0],
            y_range: Some((0.0, 1.0)),
        })
        .unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..80.min(svg.len())]);
        assert!(svg.contains("cgpo-crpg") && svg.contains("chat: pass rate"));
        assert!(
            svg.contains("#DC0000") || svg.contains("rgb(220,0,0)") || svg.contains("#dc0000"),
            "no alarm marker"
        );
        assert!(svg.contains("<polyline"), "no line");
    }
}
