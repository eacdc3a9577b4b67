//! The W7 chart: pairs per second against the number of tasks, one line per subject, as a PNG.
//!
//! Text is drawn by plotters' `ab_glyph` backend from a TTF file read at run time (`--font`,
//! by default DejaVu Sans from Debian's `fonts-dejavu-core`, which `tools/dev.sh deps`
//! installs), so no system font lookup is involved.

use std::path::Path;

use anyhow::{Context, Result, anyhow};
use plotters::coord::ranged1d::SegmentValue;
use plotters::prelude::*;

use crate::w7::Sweep;
use crate::workloads::Throughput;

/// The font family name the chart asks for (registered from `--font`).
const FAMILY: &str = "sans-serif";

/// A colour per subject, in column order (black, blue, orange, green, ...).
const COLORS: [RGBColor; 5] = [
    RGBColor(0, 0, 0),
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
];

fn register_font(font: &Path) -> Result<()> {
    let bytes = std::fs::read(font).with_context(|| {
        format!(
            "reading the chart font {} (install fonts-dejavu-core, or pass --font FILE.ttf)",
            font.display()
        )
    })?;
    // plotters keeps the font for the life of the process.
    let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
    plotters::style::register_font(FAMILY, FontStyle::Normal, bytes)
        .map_err(|_| anyhow!("{} is not a usable TTF font", font.display()))
}

/// Draws `sweep` for `labels` (in legend order) into `path`.
pub fn draw(sweep: &Sweep, labels: &[&str], path: &Path, font: &Path, title: &str) -> Result<()> {
    register_font(font)?;
    let levels: Vec<usize> = sweep.keys().copied().collect();
    let rate = |level: usize, label: &str| sweep.get(&level)?.get(label).and_then(Throughput::rate);
    let top = levels
        .iter()
        .flat_map(|&l| labels.iter().filter_map(move |s| rate(l, s)))
        .fold(0.0, f64::max);
    if levels.is_empty() || top <= 0.0 {
        anyhow::bail!("W7 has no figures to draw");
    }
    let root = BitMapBackend::new(path, (960, 600)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, (FAMILY, 22))
        .margin(20)
        .x_label_area_size(55)
        .y_label_area_size(90)
        .build_cartesian_2d(
            (0..levels.len() as i32 - 1).into_segmented(),
            0.0..top * 1.15,
        )?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(levels.len())
        .x_label_formatter(&|v| match v {
            SegmentValue::CenterOf(i) | SegmentValue::Exact(i) => levels
                .get(*i as usize)
                .map(|n| n.to_string())
                .unwrap_or_default(),
            SegmentValue::Last => String::new(),
        })
        .y_label_formatter(&|y| format!("{y:.0}"))
        .x_desc("concurrent tasks (lock + unlock on distinct keys)")
        .y_desc("pairs per second")
        .label_style((FAMILY, 16))
        .axis_desc_style((FAMILY, 18))
        .draw()?;
    for (n, label) in labels.iter().enumerate() {
        let color = COLORS[n % COLORS.len()];
        let points: Vec<(SegmentValue<i32>, f64)> = levels
            .iter()
            .enumerate()
            .filter_map(|(i, &l)| Some((SegmentValue::CenterOf(i as i32), rate(l, label)?)))
            .collect();
        chart
            .draw_series(LineSeries::new(points.clone(), color.stroke_width(3)))?
            .label(*label)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 24, y)], color.stroke_width(3))
            });
        chart.draw_series(
            points
                .into_iter()
                .map(|p| Circle::new(p, 5, color.filled())),
        )?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .label_font((FAMILY, 16))
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()?;
    root.present()
        .with_context(|| format!("writing the chart to {}", path.display()))?;
    Ok(())
}
