//! One PNG per scenario under bench/results/: a bar per system, the ratio against the
//! scenario's baseline written above each bar.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context, Result};
use plotters::prelude::*;

/// A scenario's chart: bars of one unit, compared against `baseline` (an index into `bars`).
pub struct Chart {
    pub file: String,
    pub title: String,
    pub unit: String,
    pub bars: Vec<(String, f64)>,
    pub baseline: usize,
}

const FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

fn register_font() -> Result<()> {
    static DONE: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    DONE.get_or_init(|| {
        let bytes = std::fs::read(FONT).map_err(|e| format!("{FONT}: {e} (apt install fonts-dejavu-core)"))?;
        let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
        plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).map_err(|_| format!("{FONT}: not a font"))
    })
    .clone()
    .map_err(|e| anyhow!(e))
}

pub fn draw(dir: &Path, stamp: &str, chart: &Chart) -> Result<PathBuf> {
    register_font()?;
    let path = dir.join(format!("{stamp}-{}.png", chart.file));
    let bars: Vec<(String, f64)> = chart.bars.iter().filter(|(_, v)| v.is_finite()).cloned().collect();
    if bars.is_empty() {
        return Err(anyhow!("{}: no numbers to plot", chart.title));
    }
    let base = chart.bars.get(chart.baseline).map(|b| b.1).unwrap_or(f64::NAN);
    let top = bars.iter().map(|b| b.1).fold(0.0, f64::max) * 1.3;
    {
        let root = BitMapBackend::new(&path, (200 + 170 * bars.len() as u32, 480)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
        let mut c = ChartBuilder::on(&root)
            .caption(&chart.title, ("sans-serif", 18))
            .margin(16)
            .x_label_area_size(10)
            .y_label_area_size(80)
            .build_cartesian_2d(0.0..bars.len() as f64, 0.0..top.max(1e-9))
            .map_err(|e| anyhow!("{e}"))?;
        c.configure_mesh()
            .disable_x_mesh()
            .x_labels(0)
            .y_desc(&chart.unit)
            .y_label_formatter(&|v| human(*v))
            .label_style(("sans-serif", 13))
            .draw()
            .map_err(|e| anyhow!("{e}"))?;
        let colors = [RGBColor(0x4c, 0x72, 0xb0), RGBColor(0xdd, 0x84, 0x52), RGBColor(0x55, 0xa8, 0x68), RGBColor(0xc4, 0x4e, 0x52), RGBColor(0x81, 0x72, 0xb3), RGBColor(0x93, 0x78, 0x60)];
        c.draw_series(bars.iter().enumerate().map(|(i, (_, v))| {
            Rectangle::new([(i as f64 + 0.12, 0.0), (i as f64 + 0.88, *v)], colors[i % colors.len()].filled())
        }))
        .map_err(|e| anyhow!("{e}"))?;
        let style = ("sans-serif", 13).into_font();
        for (i, (name, v)) in bars.iter().enumerate() {
            let ratio = if base.is_finite() && base > 0.0 { format!("{} ({:.2}x)", human(*v), v / base) } else { human(*v) };
            c.draw_series([
                Text::new(name.clone(), (i as f64 + 0.12, *v + top * 0.09), style.clone()),
                Text::new(ratio, (i as f64 + 0.12, *v + top * 0.045), style.clone()),
            ])
            .map_err(|e| anyhow!("{e}"))?;
        }
        root.present().map_err(|e| anyhow!("{e}")).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(path)
}

fn human(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.2}M", v / 1e6)
    } else if v >= 1e4 {
        format!("{:.0}k", v / 1e3)
    } else if v >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}
