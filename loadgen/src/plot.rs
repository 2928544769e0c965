//! The live phase over time as a PNG: requests answered and attendance committed per second
//! above, latencies (log scale) below.

use std::path::Path;

use anyhow::{Context as _, anyhow};
use plotters::prelude::*;

use crate::results::Second;

/// Where Debian's fonts-dejavu-core puts the font (plotters draws text with a TrueType font).
const FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

pub fn draw(seconds: &[Second], path: &Path) -> anyhow::Result<()> {
    register_font()?;
    let root = BitMapBackend::new(path, (1400, 900)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
    let (upper, lower) = root.split_vertically(430);
    let end = seconds.len().max(1) as f64;

    let peak = seconds.iter().map(|s| s.answered.max(s.commits)).max().unwrap_or(1).max(1) as f64;
    let mut throughput = ChartBuilder::on(&upper)
        .caption("Live phase: per second", ("sans-serif", 24))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..end, 0f64..peak * 1.15)
        .map_err(|e| anyhow!("{e}"))?;
    throughput
        .configure_mesh()
        .x_desc("seconds since the start")
        .y_desc("per second")
        .draw()
        .map_err(|e| anyhow!("{e}"))?;
    let per_second = |count: fn(&Second) -> u64| -> Vec<(f64, f64)> {
        seconds.iter().enumerate().map(|(t, s)| (t as f64, count(s) as f64)).collect()
    };
    draw_lines(
        &mut throughput,
        vec![
            (per_second(|s| s.answered), BLUE, "requests answered 2xx"),
            (per_second(|s| s.commits), RED, "webhooks committed"),
        ],
    )?;

    let quantile_ms = |pick: &dyn Fn(&Second) -> &hdrhistogram::Histogram<u64>, q: f64| -> Vec<(f64, f64)> {
        seconds
            .iter()
            .enumerate()
            .filter(|(_, s)| !pick(s).is_empty())
            .map(|(t, s)| (t as f64, (pick(s).value_at_quantile(q) as f64 / 1000.0).max(0.01)))
            .collect()
    };
    let lines = [
        (quantile_ms(&|s| &s.gateway_us, 0.5), GREEN, "gateway p50"),
        (quantile_ms(&|s| &s.gateway_us, 0.99), BLUE, "gateway p99"),
        (quantile_ms(&|s| &s.end_to_end_us, 0.5), MAGENTA, "200 → committed p50"),
        (quantile_ms(&|s| &s.end_to_end_us, 0.99), RED, "200 → committed p99"),
    ];
    let highest = lines.iter().flat_map(|(v, _, _)| v.iter().map(|p| p.1)).fold(1.0, f64::max);
    let mut latency = ChartBuilder::on(&lower)
        .caption("Latency per second (ms, log scale)", ("sans-serif", 24))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..end, (0.05f64..highest * 2.0).log_scale())
        .map_err(|e| anyhow!("{e}"))?;
    latency.configure_mesh().x_desc("seconds since the start").y_desc("ms").draw().map_err(|e| anyhow!("{e}"))?;
    draw_lines(&mut latency, lines.into())?;
    root.present().map_err(|e| anyhow!("{e}"))?;
    Ok(())
}

/// A line to draw: its points, colour and label.
type Line<'l> = (Vec<(f64, f64)>, RGBColor, &'l str);

/// Draws each line, and the legend.
fn draw_lines<'a, Y>(
    chart: &mut ChartContext<'a, BitMapBackend<'a>, Cartesian2d<plotters::coord::types::RangedCoordf64, Y>>,
    lines: Vec<Line<'_>>,
) -> anyhow::Result<()>
where
    Y: Ranged<ValueType = f64>,
{
    for (points, color, label) in lines {
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))
            .map_err(|e| anyhow!("{e}"))?
            .label(label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperRight)
        .draw()
        .map_err(|e| anyhow!("{e}"))?;
    Ok(())
}

fn register_font() -> anyhow::Result<()> {
    static REGISTERED: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    REGISTERED
        .get_or_init(|| {
            let bytes = std::fs::read(FONT).map_err(|e| format!("{FONT}: {e} (install Debian's fonts-dejavu-core)"))?;
            // plotters keeps fonts for the process's lifetime.
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
                .map_err(|_| format!("{FONT} is not a font"))
        })
        .clone()
        .map_err(|e| anyhow!(e))
        .context("the plot's font")
}
