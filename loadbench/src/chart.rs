//! The W7 chart: pairs per second against the number of tasks, one line per subject, as a PNG.
//!
//! Text is drawn by plotters' `ab_glyph` backend from a TTF file read at run time (`--font`,
//! by default DejaVu Sans from Debian's `fonts-dejavu-core`, which `tools/dev.sh deps`
//! installs), so no system font lookup is involved.

use std::path::Path;

use anyhow::{Context, Result, anyhow};
use plotters::coord::ranged1d::{SegmentValue, SegmentedCoord};
use plotters::coord::types::{RangedCoordf64, RangedCoordi32};
use plotters::prelude::*;

use crate::w7::Sweep;
use crate::workloads::Throughput;

/// The font family name the chart asks for (registered from `--font`).
const FAMILY: &str = "sans-serif";

/// A fixed colour per subject, so that charts of different runs read alike.
fn color_of(label: &str) -> RGBColor {
    match label {
        crate::OURS => RGBColor(0, 0, 0),
        crate::RSLOCK => RGBColor(31, 119, 180),
        crate::FLOOR => RGBColor(255, 127, 14),
        crate::CEILING => RGBColor(44, 160, 44),
        crate::BATCHED => RGBColor(148, 103, 189),
        crate::NO_FENCE => RGBColor(140, 86, 75),
        _ => RGBColor(214, 39, 40),
    }
}

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

/// The chart's coordinates: one segment per level of concurrency, pairs/s upwards.
type Chart<'a, 'b> = ChartContext<
    'a,
    BitMapBackend<'b>,
    Cartesian2d<SegmentedCoord<RangedCoordi32>, RangedCoordf64>,
>;

/// Draws `sweep` for `labels` (in legend order) into `path`.
pub fn draw(sweep: &Sweep, labels: &[&str], path: &Path, font: &Path, title: &str) -> Result<()> {
    register_font(font)?;
    let levels: Vec<usize> = sweep.keys().copied().collect();
    let lines: Vec<(&str, Vec<(i32, f64)>)> =
        labels.iter().map(|l| (*l, points(sweep, l))).collect();
    let top = lines
        .iter()
        .flat_map(|(_, p)| p.iter().map(|(_, y)| *y))
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
    axes(&mut chart, &levels)?;
    for (label, points) in lines {
        line(&mut chart, label, points, color_of(label))?;
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

/// (index of the level, pairs/s) for every level `label` has a figure at.
fn points(sweep: &Sweep, label: &str) -> Vec<(i32, f64)> {
    sweep
        .values()
        .enumerate()
        .filter_map(|(i, level)| Some((i as i32, level.get(label).and_then(Throughput::rate)?)))
        .collect()
}

/// Grid, tick labels (the task counts) and axis descriptions.
fn axes(chart: &mut Chart, levels: &[usize]) -> Result<()> {
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
    Ok(())
}

/// One subject: a line through its points, a dot on each, and its legend entry.
fn line(chart: &mut Chart, label: &str, points: Vec<(i32, f64)>, color: RGBColor) -> Result<()> {
    let at: Vec<(SegmentValue<i32>, f64)> = points
        .into_iter()
        .map(|(i, y)| (SegmentValue::CenterOf(i), y))
        .collect();
    chart
        .draw_series(LineSeries::new(at.clone(), color.stroke_width(3)))?
        .label(label)
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], color.stroke_width(3)));
    chart.draw_series(at.into_iter().map(|p| Circle::new(p, 5, color.filled())))?;
    Ok(())
}
