//! The weekly trend chart attached to an HR case: a line chart of the decision's [`TrendChart`] drawn
//! into an RGB buffer with an embedded font (no system fonts are read) and encoded as PNG.

use std::sync::OnceLock;

use plotters::coord::ranged1d::SegmentValue;
use plotters::prelude::*;
use plotters::style::{FontStyle, register_font};
use relay_core::route::TrendChart;

/// The attachment's file name on the record.
pub const CHART_FILE: &str = "productivity-trend.png";
/// The attachment's content type.
pub const CHART_CONTENT_TYPE: &str = "image/png";
/// Width and height of the image in pixels.
pub const CHART_SIZE: (u32, u32) = (720, 400);

/// DejaVu Sans (licence in `assets/DejaVuSans.LICENSE`).
static FONT: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");
const FAMILY: &str = "sans-serif";

#[derive(Debug, thiserror::Error)]
pub enum ChartError {
    #[error("the chart has no values")]
    Empty,
    #[error("the embedded font could not be loaded")]
    Font,
    #[error("drawing the chart failed: {0}")]
    Draw(String),
    #[error("encoding the chart as PNG failed: {0}")]
    Encode(#[from] png::EncodingError),
}

fn font_registered() -> Result<(), ChartError> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED.get_or_init(|| register_font(FAMILY, FontStyle::Normal, FONT).is_ok());
    if ok { Ok(()) } else { Err(ChartError::Font) }
}

/// The x axis label of week `i` (0 = oldest) out of `n`.
fn week_label(i: usize, n: usize) -> String {
    if i + 1 == n {
        format!("Week {} (latest)", i + 1)
    } else {
        format!("Week {}", i + 1)
    }
}

/// Render `chart` as a PNG: one point per week, oldest first, each labelled with its value.
pub fn render_png(chart: &TrendChart) -> Result<Vec<u8>, ChartError> {
    if chart.weekly.is_empty() || chart.weekly.iter().any(|v| !v.is_finite()) {
        return Err(ChartError::Empty);
    }
    font_registered()?;
    let (w, h) = CHART_SIZE;
    let n = chart.weekly.len();
    let max = chart.weekly.iter().copied().fold(0.0_f64, f64::max);
    let top = if max <= 0.0 { 1.0 } else { (max * 1.25).ceil() };
    let mut rgb = vec![0_u8; (w * h * 3) as usize];
    draw(chart, n, top, &mut rgb).map_err(|e| ChartError::Draw(e.to_string()))?;

    let mut out = Vec::new();
    let mut encoder = png::Encoder::new(&mut out, w, h);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    // fdeflate: a chart is mostly flat colour, which it compresses about as well as the default zlib level
    // at a fraction of the CPU (the default level was 30 % of `relay serve`'s CPU at 2,000 alerts/s).
    encoder.set_compression(png::Compression::Fast);
    let mut writer = encoder.write_header()?;
    writer.write_image_data(&rgb)?;
    writer.finish()?;
    Ok(out)
}

fn draw(chart: &TrendChart, n: usize, top: f64, rgb: &mut [u8]) -> Result<(), Box<dyn std::error::Error>> {
    let root = BitMapBackend::with_buffer(rgb, CHART_SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let line = RGBColor(31, 119, 180);
    let mut c = ChartBuilder::on(&root)
        .caption(&chart.title, (FAMILY, 22))
        .margin(18)
        .x_label_area_size(36)
        .y_label_area_size(52)
        // A usize range is inclusive in plotters: one segment per week.
        .build_cartesian_2d((0..n - 1).into_segmented(), 0.0..top)?;
    c.configure_mesh()
        .disable_x_mesh()
        .x_labels(n)
        .x_label_formatter(&|v| match v {
            SegmentValue::CenterOf(i) => week_label(*i, n),
            _ => String::new(),
        })
        .y_desc("Hours per day")
        .y_label_formatter(&|v| format!("{v:.1}"))
        .label_style((FAMILY, 15))
        .axis_desc_style((FAMILY, 15))
        .y_labels(8)
        .light_line_style(WHITE)
        .bold_line_style(RGBColor(225, 225, 225))
        .draw()?;
    let points: Vec<(SegmentValue<usize>, f64)> = chart
        .weekly
        .iter()
        .enumerate()
        .map(|(i, v)| (SegmentValue::CenterOf(i), *v))
        .collect();
    c.draw_series(LineSeries::new(points.clone(), line.stroke_width(3)))?;
    c.draw_series(points.iter().map(|p| Circle::new(p.clone(), 5, line.filled())))?;
    c.draw_series(points.iter().map(|(x, v)| {
        EmptyElement::at((x.clone(), *v))
            + Text::new(format!("{v:.1}"), (-12, -26), (FAMILY, 16).into_font().color(&BLACK))
    }))?;
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seed() -> TrendChart {
        TrendChart {
            title: "Non-work activity, last 3 weeks (hours per day)".into(),
            weekly: vec![3.9, 4.3, 4.4],
        }
    }

    #[test]
    fn the_chart_is_a_png_of_the_configured_size_that_decodes() {
        let bytes = render_png(&seed()).unwrap();
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
        // IHDR is the first chunk: length 13, then width and height big-endian.
        assert_eq!(&bytes[12..16], b"IHDR");
        let w = u32::from_be_bytes(bytes[16..20].try_into().unwrap());
        let h = u32::from_be_bytes(bytes[20..24].try_into().unwrap());
        assert_eq!((w, h), CHART_SIZE);
        let mut reader = png::Decoder::new(std::io::Cursor::new(&bytes)).read_info().unwrap();
        let mut pixels = vec![0; reader.output_buffer_size().unwrap()];
        let info = reader.next_frame(&mut pixels).unwrap();
        assert_eq!((info.width, info.height), CHART_SIZE);
        // Something was drawn: not every pixel is the white background.
        assert!(pixels.iter().any(|b| *b < 128));
    }

    #[test]
    fn a_chart_without_values_is_an_error_not_an_empty_image() {
        let mut c = seed();
        c.weekly.clear();
        assert!(matches!(render_png(&c), Err(ChartError::Empty)));
        c.weekly = vec![1.0, f64::NAN];
        assert!(matches!(render_png(&c), Err(ChartError::Empty)));
    }

    #[test]
    fn all_zero_weeks_still_render() {
        let mut c = seed();
        c.weekly = vec![0.0, 0.0, 0.0];
        assert!(render_png(&c).unwrap().starts_with(b"\x89PNG"));
    }

    /// Writes the sample chart shown in the documentation: `RELAY_WRITE_CHART_SAMPLE=path cargo test ...`.
    #[test]
    fn write_the_documentation_sample_when_asked() {
        let bytes = render_png(&seed()).unwrap();
        if let Ok(path) = std::env::var("RELAY_WRITE_CHART_SAMPLE") {
            std::fs::write(path, &bytes).unwrap();
        }
        assert!(bytes.len() > 1000);
    }
}
