//! The plots: SVG drawn with `plotters` and wrapped in a `<figure>` ([`figure`]), the
//! percentile curves of the latency plot, and horizontal grouped bars ([`hbars`]).

use std::fmt::Write as _;

use hdrhistogram::Histogram;
use plotters::{
    coord::Shift,
    prelude::*,
    style::text_anchor::{HPos, Pos, VPos},
};

use super::{
    format::{axis_decimals, escape, finite_or_zero, num},
    HtmlError,
};
use crate::report::details::Percentiles;

/// What a drawing closure returns.
pub(super) type DrawResult = Result<(), DrawingAreaErrorKind<std::io::Error>>;

/// Colours: meshed red (the cost), baseline blue; bar series.
pub(super) const MESHED: RGBColor = RGBColor(0xc6, 0x28, 0x28);
pub(super) const BASELINE: RGBColor = RGBColor(0x15, 0x65, 0xc0);
pub(super) const P50: RGBColor = RGBColor(0x42, 0x8b, 0xca);
pub(super) const P99: RGBColor = RGBColor(0xef, 0x8a, 0x17);
pub(super) const CPU: RGBColor = RGBColor(0x2e, 0x7d, 0x32);
pub(super) const MEM: RGBColor = RGBColor(0x6a, 0x1b, 0x9a);
pub(super) const MEM_PEAK: RGBColor = RGBColor(0xb3, 0x9d, 0xdb);
pub(super) const FONT: &str = "sans-serif";

/// Draws one plot into an SVG string and wraps it in `<figure id=…>` with a caption, preceded
/// by an HTML legend when `legend` is not empty (bar charts: a legend inside the plot would
/// cover bars).
pub(super) fn figure(
    page: &mut String,
    id: &'static str,
    size: (u32, u32),
    caption: &str,
    legend: &[(&str, RGBColor)],
    draw: impl FnOnce(&DrawingArea<SVGBackend<'_>, Shift>) -> DrawResult,
) -> Result<(), HtmlError> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, size).into_drawing_area();
        let r = root
            .fill(&WHITE)
            .and_then(|()| draw(&root))
            .and_then(|()| root.present());
        r.map_err(|source| HtmlError::Plot { plot: id, source })?;
    }
    // Give the <svg> a class and an accessible name.
    let svg = svg.replacen(
        "<svg ",
        &format!(
            "<svg class=\"plot\" id=\"{id}-svg\" role=\"img\" aria-label=\"{}\" ",
            escape(caption)
        ),
        1,
    );
    let _ = writeln!(page, "<figure id=\"{id}\">");
    if !legend.is_empty() {
        page.push_str("<div class=\"legend\">");
        for (label, c) in legend {
            let _ = write!(
                page,
                "<span><span class=\"key\" style=\"background:#{:02x}{:02x}{:02x}\"></span>{}</span>",
                c.0,
                c.1,
                c.2,
                escape(label)
            );
        }
        page.push_str("</div>\n");
    }
    let _ = write!(
        page,
        "{svg}<figcaption>{}</figcaption>\n</figure>\n",
        escape(caption)
    );
    Ok(())
}

/// One curve of the percentile plot: `(x = 1/(1 − q), latency ms)`.
pub(super) struct Curve {
    pub(super) label: &'static str,
    pub(super) color: RGBColor,
    pub(super) points: Vec<(f64, f64)>,
    /// Drawn from a few percentiles: mark each point.
    pub(super) markers: bool,
}

/// Right end of the percentile axis: a power of ten that the sample count can resolve
/// (99 % … 99.9999 %).
pub(super) fn x_cap(samples: u64) -> f64 {
    let k = (samples.max(1) as f64).log10().ceil().clamp(2.0, 6.0);
    10f64.powf(k)
}

/// The curve of a histogram: HdrHistogram's percentile distribution (5 steps per halving of
/// 1 − q), the maximum at the right edge.
pub(super) fn histogram_curve(h: &Histogram<u64>, cap: f64) -> Vec<(f64, f64)> {
    let mut points = Vec::new();
    for v in h.iter_quantiles(5) {
        let q = v.quantile_iterated_to();
        let x = 1.0 / (1.0 - q);
        if !x.is_finite() || x >= cap {
            break;
        }
        points.push((x, h.highest_equivalent(v.value_iterated_to()) as f64 / 1e6));
    }
    points.push((cap, h.max() as f64 / 1e6));
    points
}

/// The curve through the percentiles we have (no histogram): min at 0 %; the max at
/// q = 1 − 1/count (HdrHistogram's last point) when the sample count is known, else not drawn
/// (its percentile is unknown; the summary table has it).
pub(super) fn percentile_points(p: &Percentiles, cap: f64, count: Option<u64>) -> Vec<(f64, f64)> {
    let mut points = vec![(1.0, p.min)];
    for (name, q) in Percentiles::QUANTILES {
        let x = 1.0 / (1.0 - q);
        // 1/(1 − 0.99) is not exactly 100 in floating point.
        if x <= cap * (1.0 + 1e-9) {
            points.push((x.min(cap), p.get(name).unwrap_or(f64::NAN)));
        }
    }
    points.retain(|(_, y)| y.is_finite());
    if let Some(n) = count.filter(|&n| n > 1) {
        let x = (n as f64).min(cap);
        if points.last().is_none_or(|&(last, _)| x > last) && p.max.is_finite() {
            points.push((x, p.max));
        }
    }
    points
}

/// One series of a horizontal bar chart: one value per row.
pub(super) struct Bars {
    pub(super) label: &'static str,
    pub(super) color: RGBColor,
    pub(super) values: Vec<f64>,
}

/// Horizontal grouped bars: one row per name (top to bottom), one bar per series in each row,
/// the value written at the end of each bar.
pub(super) fn hbars(
    area: &DrawingArea<SVGBackend<'_>, Shift>,
    title: &str,
    x_desc: &str,
    rows: &[String],
    series: &[Bars],
    value_text: fn(f64) -> String,
) -> DrawResult {
    let n = rows.len().max(1) as f64;
    let max = series
        .iter()
        .flat_map(|s| s.values.iter().copied().map(finite_or_zero))
        .fold(0.0f64, f64::max);
    // Room for the value text at the end of the longest bar.
    let x_max = if max > 0.0 { max * 1.22 } else { 1.0 };
    let longest = rows.iter().map(|r| r.chars().count()).max().unwrap_or(4);
    let label_area = (longest as u32 * 9 + 16).clamp(90, 360);
    // Row i (from the top) is centred on y = n − 1 − i; the range is padded by half a row so
    // that the axis' own key points (step 1 for n + 1 labels) fall on the row centres.
    let mut builder = ChartBuilder::on(area);
    builder
        .margin(12)
        .margin_right(24)
        .x_label_area_size(50)
        .y_label_area_size(label_area);
    if !title.is_empty() {
        builder.caption(title, (FONT, 20));
    }
    let mut chart = builder.build_cartesian_2d(0f64..x_max, -0.5f64..n - 0.5)?;
    let names = rows.to_vec();
    chart
        .configure_mesh()
        .disable_y_mesh()
        .x_desc(x_desc)
        .y_labels(rows.len() + 1)
        .y_label_formatter(&|y| {
            let i = n - 1.0 - y.round();
            if (y - y.round()).abs() < 0.01 && i >= 0.0 {
                names.get(i as usize).cloned().unwrap_or_default()
            } else {
                String::new()
            }
        })
        .x_labels(6)
        .x_label_formatter(&|x| num(*x, axis_decimals(x_max)))
        .label_style((FONT, 17))
        .axis_desc_style((FONT, 18))
        .light_line_style(TRANSPARENT)
        .bold_line_style(RGBColor(0xdd, 0xdd, 0xdd))
        .draw()?;
    let k = series.len().max(1) as f64;
    // Each row: 80 % of its height for bars, split among the series.
    let band = 0.8 / k;
    for (j, s) in series.iter().enumerate() {
        let color = s.color;
        let rects = s.values.iter().enumerate().map(move |(i, &v)| {
            let top = n - 1.0 - i as f64 + 0.4 - j as f64 * band;
            Rectangle::new(
                [(0.0, top), (finite_or_zero(v), top - band * 0.92)],
                color.filled(),
            )
        });
        chart.draw_series(rects)?;
        let text_style = TextStyle::from((FONT, 16).into_font())
            .color(&BLACK)
            .pos(Pos::new(HPos::Left, VPos::Center));
        let texts = s.values.iter().enumerate().map(move |(i, &v)| {
            let mid = n - 1.0 - i as f64 + 0.4 - (j as f64 + 0.46) * band;
            Text::new(
                value_text(v),
                (finite_or_zero(v) + x_max * 0.008, mid),
                text_style.clone(),
            )
        });
        chart.draw_series(texts)?;
    }
    Ok(())
}

/// The HTML legend of some bar series.
pub(super) fn legend(series: &[Bars]) -> Vec<(&str, RGBColor)> {
    series.iter().map(|s| (s.label, s.color)).collect()
}
