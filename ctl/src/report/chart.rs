//! The charts of a report, as inline SVG drawn by `plotters`: bars with 95% error bars, and
//! heat maps. Text in the SVG (titles, labels) is escaped by plotters' SVG backend.
//!
//! Every bar is filled with [`BAR_FILL`] and nothing else is, so a reader (or a test) can count
//! a chart's bars; every heat-map cell is a filled rectangle of a colour other than white.

use plotters::coord::ranged1d::SegmentValue;
use plotters::prelude::*;

use super::ReportError;

/// The fill of every bar, as the SVG writes it.
pub const BAR_FILL: &str = "#3366CC";
const BAR: RGBColor = RGBColor(0x33, 0x66, 0xCC);
const ERROR: RGBColor = RGBColor(0x22, 0x22, 0x22);

/// One bar: its label, its released value, and the half-width of its 95% interval (0 = none).
#[derive(Debug, Clone)]
pub(crate) struct Bar {
    pub(crate) label: String,
    pub(crate) value: f64,
    pub(crate) err95: f64,
}

/// `chart`'s drawing error as a report error.
fn drawing<E: std::fmt::Debug>(chart: &str) -> impl Fn(E) -> ReportError + '_ {
    move |e| ReportError::Chart {
        chart: chart.to_owned(),
        detail: format!("{e:?}"),
    }
}

/// A bar chart titled `title` with `y_desc` on its vertical axis: one bar per entry of
/// `bars`, each with its 95% error bar. Non-finite values are drawn as 0.
pub(crate) fn bars(title: &str, y_desc: &str, bars: &[Bar]) -> Result<String, ReportError> {
    let err = drawing(title);
    let finite = |v: f64| if v.is_finite() { v } else { 0.0 };
    let lo = bars
        .iter()
        .map(|b| finite(b.value) - finite(b.err95))
        .fold(0.0f64, f64::min);
    let hi = bars
        .iter()
        .map(|b| finite(b.value) + finite(b.err95))
        .fold(0.0f64, f64::max);
    let pad = ((hi - lo) * 0.08).max(1e-9);
    let (lo, hi) = (if lo < 0.0 { lo - pad } else { 0.0 }, hi + pad);
    let width = (160 + 90 * bars.len() as u32).clamp(420, 960);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (width, 340)).into_drawing_area();
        root.fill(&WHITE).map_err(&err)?;
        let n = bars.len().max(1);
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d((0..n).into_segmented(), lo..hi)
            .map_err(&err)?;
        let label = |x: &SegmentValue<usize>| match x {
            SegmentValue::CenterOf(i) => bars.get(*i).map(|b| b.label.clone()).unwrap_or_default(),
            _ => String::new(),
        };
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(n)
            .x_label_formatter(&label)
            .y_desc(y_desc)
            .draw()
            .map_err(&err)?;
        chart
            .draw_series(bars.iter().enumerate().map(|(i, b)| {
                let mut r = Rectangle::new(
                    [
                        (SegmentValue::Exact(i), 0.0),
                        (SegmentValue::Exact(i + 1), finite(b.value)),
                    ],
                    BAR.filled(),
                );
                r.set_margin(0, 0, 14, 14);
                r
            }))
            .map_err(&err)?;
        chart
            .draw_series(
                bars.iter()
                    .enumerate()
                    .filter(|(_, b)| b.err95 > 0.0)
                    .map(|(i, b)| {
                        let v = finite(b.value);
                        let e = finite(b.err95);
                        ErrorBar::new_vertical(
                            SegmentValue::CenterOf(i),
                            v - e,
                            v,
                            v + e,
                            ERROR.stroke_width(2),
                            12,
                        )
                    }),
            )
            .map_err(&err)?;
        root.present().map_err(&err)?;
    }
    Ok(svg)
}

/// A heat map titled `title`: `rows` × `cols` cells, `values[r * cols.len() + c]` each, the
/// darker the larger (negative noisy values as 0); each cell is labelled with its value.
pub(crate) fn heat(
    title: &str,
    rows: (&str, &[String]),
    cols: (&str, &[String]),
    values: &[f64],
) -> Result<String, ReportError> {
    let err = drawing(title);
    let (row_desc, row_labels) = rows;
    let (col_desc, col_labels) = cols;
    let (nr, nc) = (row_labels.len().max(1), col_labels.len().max(1));
    let max = values
        .iter()
        .copied()
        .filter(|v| v.is_finite())
        .fold(0.0f64, f64::max);
    let mut svg = String::new();
    {
        let width = (140 + 80 * nc as u32).clamp(360, 900);
        let height = (110 + 44 * nr as u32).clamp(240, 700);
        let root = SVGBackend::with_string(&mut svg, (width, height)).into_drawing_area();
        root.fill(&WHITE).map_err(&err)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 16))
            .margin(10)
            .x_label_area_size(40)
            .y_label_area_size(80)
            .build_cartesian_2d((0..nc).into_segmented(), (0..nr).into_segmented())
            .map_err(&err)?;
        let col_label = |x: &SegmentValue<usize>| match x {
            SegmentValue::CenterOf(i) => col_labels.get(*i).cloned().unwrap_or_default(),
            _ => String::new(),
        };
        let row_label = |y: &SegmentValue<usize>| match y {
            SegmentValue::CenterOf(i) => row_labels.get(*i).cloned().unwrap_or_default(),
            _ => String::new(),
        };
        chart
            .configure_mesh()
            .disable_mesh()
            .x_labels(nc)
            .y_labels(nr)
            .x_label_formatter(&col_label)
            .y_label_formatter(&row_label)
            .x_desc(col_desc)
            .y_desc(row_desc)
            .draw()
            .map_err(&err)?;
        let shade = |v: f64| {
            let t = if max > 0.0 && v.is_finite() {
                (v.max(0.0) / max).min(1.0)
            } else {
                0.0
            };
            // From a pale blue (never white) to a dark blue.
            let mix = |a: f64, b: f64| (a + (b - a) * t).round() as u8;
            RGBColor(mix(236.0, 16.0), mix(242.0, 60.0), mix(250.0, 130.0))
        };
        let cells = (0..nr).flat_map(|r| (0..nc).map(move |c| (r, c)));
        chart
            .draw_series(cells.clone().map(|(r, c)| {
                let v = values.get(r * nc + c).copied().unwrap_or(0.0);
                Rectangle::new(
                    [
                        (SegmentValue::Exact(c), SegmentValue::Exact(r)),
                        (SegmentValue::Exact(c + 1), SegmentValue::Exact(r + 1)),
                    ],
                    shade(v).filled(),
                )
            }))
            .map_err(&err)?;
        chart
            .draw_series(cells.map(|(r, c)| {
                let v = values.get(r * nc + c).copied().unwrap_or(0.0);
                let light = max > 0.0 && v / max > 0.55;
                let color = if light { WHITE } else { BLACK };
                Text::new(
                    format!("{:.0}", if v.is_finite() { v } else { 0.0 }),
                    (SegmentValue::CenterOf(c), SegmentValue::CenterOf(r)),
                    ("sans-serif", 13).into_font().color(&color),
                )
            }))
            .map_err(&err)?;
        root.present().map_err(&err)?;
    }
    Ok(svg)
}

/// How many bars an SVG from [`bars`] has.
#[cfg(test)]
pub(crate) fn count_bars(svg: &str) -> usize {
    svg.matches(&format!("fill=\"{BAR_FILL}\"")).count()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn bar(label: &str, value: f64, err95: f64) -> Bar {
        Bar {
            label: label.into(),
            value,
            err95,
        }
    }

    #[test]
    fn one_rectangle_per_bar_and_labels_escaped() {
        let svg = bars(
            "Spend <by> region",
            "EUR",
            &[
                bar("north", 10.0, 2.0),
                bar("<script>alert(1)</script>", -3.0, 1.0),
                bar("x", 0.0, 0.0),
            ],
        )
        .unwrap();
        assert_eq!(count_bars(&svg), 3, "{svg}");
        assert!(!svg.contains("<script"), "{svg}");
        assert!(svg.contains("&lt;script&gt;"), "{svg}");
        assert!(!svg.contains("<by>"), "{svg}");
    }

    #[test]
    fn heat_map_has_one_cell_per_value() {
        let r = ["0-30".to_string(), "31+".to_string()];
        let c = ["1".to_string(), "2-5".to_string(), "6+".to_string()];
        let svg = heat(
            "M: low",
            ("recency", &r),
            ("frequency", &c),
            &[1.0, 2.0, 3.0, 0.0, -2.0, 9.0],
        )
        .unwrap();
        let cells = svg
            .split("<rect")
            .skip(1)
            .filter(|r| {
                !r.split('>')
                    .next()
                    .unwrap_or("")
                    .contains("fill=\"#FFFFFF\"")
            })
            .count();
        assert_eq!(cells, 6, "{svg}");
        assert_eq!(count_bars(&svg), 0);
    }
}
