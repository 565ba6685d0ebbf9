//! Pictures for people: the detected lines (and the truth, when there is one) drawn over the
//! frame with OpenCV, saved as PNG.

use std::path::Path;

use ads_protocol::LaneDetection;
use anyhow::Context as _;
use opencv::core::{Mat, Point, Scalar, Vec3b, Vector};
use opencv::imgcodecs;
use opencv::imgproc::{self, FONT_HERSHEY_SIMPLEX, LINE_AA};
use opencv::prelude::*;

/// BGR colours.
const LEFT: (f64, f64, f64) = (0.0, 255.0, 0.0);
const RIGHT: (f64, f64, f64) = (255.0, 160.0, 0.0);
const TRUTH: (f64, f64, f64) = (255.0, 255.0, 255.0);

/// Draws `det` (left green, right blue, truth white and thin) on a copy of the packed BGR
/// frame and writes it to `path`.
pub(crate) fn save(
    path: &Path,
    pixels: &[u8],
    width: u32,
    height: u32,
    det: &LaneDetection,
    truth: Option<&[Vec<Option<f32>>]>,
    inset: Option<&Mat>,
) -> anyhow::Result<()> {
    let n = width as usize * height as usize * 3;
    let mut img =
        Mat::new_rows_cols_with_bytes::<Vec3b>(height as i32, width as i32, &pixels[..n])?.try_clone()?;
    draw(&mut img, det, truth)?;
    if let Some(mask) = inset {
        paste_inset(&mut img, mask)?;
    }
    write_png(path, &img)
}

/// Copies a one-channel bird's-eye mask into the top-right corner: full size where the frame
/// has room for it, else half.
pub(crate) fn paste_inset(img: &mut Mat, mask: &Mat) -> opencv::Result<()> {
    let full = img.cols() >= 3 * mask.cols() && img.rows() >= 2 * mask.rows();
    let (w, h) = if full { (mask.cols(), mask.rows()) } else { (mask.cols() / 2, mask.rows() / 2) };
    if w == 0 || h == 0 || w > img.cols() || h + 40 > img.rows() {
        return Ok(());
    }
    let mut small = Mat::default();
    imgproc::resize(mask, &mut small, opencv::core::Size::new(w, h), 0.0, 0.0, imgproc::INTER_AREA)?;
    let mut bgr = Mat::default();
    imgproc::cvt_color_def(&small, &mut bgr, imgproc::COLOR_GRAY2BGR)?;
    let mut roi = Mat::roi_mut(img, opencv::core::Rect::new(img.cols() - w, 40, w, h))?;
    bgr.copy_to(&mut roi)
}

/// Draws the detection (and truth) onto `img` in place.
pub(crate) fn draw(
    img: &mut Mat,
    det: &LaneDetection,
    truth: Option<&[Vec<Option<f32>>]>,
) -> opencv::Result<()> {
    for lane in truth.unwrap_or_default() {
        polyline(img, lane, &det.h_samples, TRUTH, 1)?;
    }
    polyline(img, &det.left, &det.h_samples, LEFT, 3)?;
    polyline(img, &det.right, &det.h_samples, RIGHT, 3)?;
    let radius = det.curvature_radius_m.map_or("straight".to_string(), |r| format!("R {r:.0} m"));
    let text = format!(
        "offset {:+.2} m  heading {:+.3} rad  {radius}  conf {:.2}/{:.2}",
        det.lateral_offset_m, det.heading_error_rad, det.left_confidence, det.right_confidence
    );
    imgproc::put_text(
        img,
        &text,
        Point::new(10, 30),
        FONT_HERSHEY_SIMPLEX,
        0.7,
        Scalar::all(0.0),
        4,
        LINE_AA,
        false,
    )?;
    imgproc::put_text(
        img,
        &text,
        Point::new(10, 30),
        FONT_HERSHEY_SIMPLEX,
        0.7,
        Scalar::all(255.0),
        1,
        LINE_AA,
        false,
    )
}

fn polyline(
    img: &mut Mat,
    xs: &[Option<f32>],
    rows: &[u32],
    (b, g, r): (f64, f64, f64),
    thickness: i32,
) -> opencv::Result<()> {
    // Consecutive present points only: a gap in the samples is a gap in the drawing.
    let mut run: Vector<Point> = Vector::new();
    let flush = |run: &mut Vector<Point>, img: &mut Mat| -> opencv::Result<()> {
        if run.len() >= 2 {
            let mut pts: Vector<Vector<Point>> = Vector::new();
            pts.push(std::mem::take(run));
            imgproc::polylines(img, &pts, false, Scalar::new(b, g, r, 0.0), thickness, LINE_AA, 0)?;
        }
        run.clear();
        Ok(())
    };
    for (x, &y) in xs.iter().zip(rows) {
        match x {
            Some(x) => run.push(Point::new(x.round() as i32, y as i32)),
            None => flush(&mut run, img)?,
        }
    }
    flush(&mut run, img)
}

pub(crate) fn write_png(path: &Path, img: &Mat) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let name = path.to_str().context("overlay path is not UTF-8")?;
    anyhow::ensure!(imgcodecs::imwrite(name, img, &Vector::new())?, "OpenCV could not write {name}");
    Ok(())
}
