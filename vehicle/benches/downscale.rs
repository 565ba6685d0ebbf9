//! The video tiers' box downscale on a simulator frame (800x600, sensor noise and all), per
//! rung of the default ladder: the shipped one next to the one before issue 28 (a division per
//! channel per output pixel). Prints µs per frame; never fails on them.
//!
//! `cargo bench -p ads-vehicle --bench downscale`

use ads_sim::{SimConfig, Simulator};
use ads_vehicle::config::LinkSection;
use ads_vehicle::video::jpeg::Ladder;
use ads_vehicle::video::picture::{downscale_bgr, SourceImage};
use std::hint::black_box;
use std::time::Instant;

/// The downscale as it was before issue 28.
fn downscale_before(src: SourceImage<'_>, width: u32, height: u32, out: &mut Vec<u8>) {
    let (sw, sh, stride) = (src.width as usize, src.height as usize, src.stride as usize);
    let (w, h) = (width as usize, height as usize);
    let spans = |dst: usize, full: usize| -> Vec<(usize, usize)> {
        (0..dst).map(|i| (i * full / dst, ((i + 1) * full / dst).max(i * full / dst + 1).min(full))).collect()
    };
    let (cols, rows) = (spans(w, sw), spans(h, sh));
    out.clear();
    out.resize(w * h * 3, 0);
    let mut acc = vec![0u32; w * 3];
    for (y, &(y0, y1)) in rows.iter().enumerate() {
        acc.iter_mut().for_each(|a| *a = 0);
        for sy in y0..y1 {
            let row = &src.pixels[sy * stride..sy * stride + sw * 3];
            for (x, &(x0, x1)) in cols.iter().enumerate() {
                let (mut b, mut g, mut r) = (0u32, 0u32, 0u32);
                for px in row[x0 * 3..x1 * 3].chunks_exact(3) {
                    b += u32::from(px[0]);
                    g += u32::from(px[1]);
                    r += u32::from(px[2]);
                }
                acc[x * 3] += b;
                acc[x * 3 + 1] += g;
                acc[x * 3 + 2] += r;
            }
        }
        let line = &mut out[y * w * 3..(y + 1) * w * 3];
        for (x, &(x0, x1)) in cols.iter().enumerate() {
            let n = ((x1 - x0) * (y1 - y0)) as u32;
            for c in 0..3 {
                line[x * 3 + c] = ((acc[x * 3 + c] + n / 2) / n) as u8;
            }
        }
    }
}

fn median_us(mut f: impl FnMut(), runs: usize) -> f64 {
    let mut times: Vec<f64> = (0..runs)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64() * 1e6
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[runs / 2]
}

fn main() {
    let (w, h) = (800u32, 600u32);
    let sim = Simulator::new(SimConfig { width: w, height: h, ..SimConfig::default() });
    let mut frame = vec![0u8; (w * h * 3) as usize];
    sim.render(7, &mut frame, (w * 3) as usize);
    let image = SourceImage { pixels: &frame, width: w, height: h, stride: w * 3 };
    let ladder = Ladder::new(&LinkSection::default(), w, h);
    let mut out = Vec::new();
    println!("{:>6} {:>9} {:>12} {:>12} {:>7}", "scale", "size", "before µs", "now µs", "ratio");
    let mut seen = Vec::new();
    for i in 0..ladder.len() {
        let (tw, th) = ladder.size_of(i);
        if tw == w || seen.contains(&(tw, th)) {
            continue;
        }
        seen.push((tw, th));
        let before = median_us(|| downscale_before(black_box(image), tw, th, &mut out), 201);
        let now = median_us(|| downscale_bgr(black_box(image), tw, th, &mut out), 201);
        println!(
            "{:>6} {:>9} {:>12.0} {:>12.0} {:>6.1}x",
            ladder.tier(i).scale,
            format!("{tw}x{th}"),
            before,
            now,
            before / now
        );
    }
}
