//! From fitted ground curves back to what the rest of the system consumes: TuSimple-style
//! image columns at fixed rows, and the car's pose in its lane.

use super::fit::Poly;
use super::warp::RowLine;

/// Column where `poly` crosses the image row whose ground line is `row` in a frame `width`
/// pixels wide, with the ground distance there; None where it crosses outside the frame.
pub(crate) fn cross_row(poly: &Poly, row: &RowLine, width: u32) -> Option<(f32, f64)> {
    let (px, py) = row.p;
    let (dx, dy) = row.d;
    // poly.x(py + t·dy) = px + t·dx  ⇔  A t² + B t + C = 0.
    let qa = poly.a * dy * dy;
    let qb = poly.slope(py) * dy - dx;
    let qc = poly.x(py) - px;
    if qb.abs() < 1e-12 {
        return None;
    }
    let linear = -qc / qb;
    let t = if qa.abs() < 1e-12 {
        linear
    } else {
        let disc = qb * qb - 4.0 * qa * qc;
        if disc < 0.0 {
            return None;
        }
        let s = disc.sqrt();
        let (t1, t2) = ((-qb + s) / (2.0 * qa), (-qb - s) / (2.0 * qa));
        // The root the straight-line approximation points at is the one in view.
        if (t1 - linear).abs() < (t2 - linear).abs() {
            t1
        } else {
            t2
        }
    };
    (0.0..=1.0).contains(&t).then(|| ((t * (f64::from(width) - 1.0)) as f32, py + t * dy))
}

/// The car in its lane, from the lane's centre curve in ground coordinates.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct LanePose {
    /// m, + = car left of the centre.
    pub(crate) offset: f64,
    /// rad, + = car pointing left of the lane.
    pub(crate) heading: f64,
    /// 1/m, + = lane turning left.
    pub(crate) curvature: f64,
}

/// The pose relative to `centre`, the lane's middle as x(y) with the car at the origin
/// looking along +y and +x to its right.
pub(crate) fn lane_pose(centre: &Poly) -> LanePose {
    let slope = centre.slope(0.0);
    let heading = slope.atan();
    // The centre is `c` to the right along the car's lateral axis; across the lane (normal to
    // it) that is c·cos(heading). A lane to the right means the car is left of it.
    let offset = centre.c * heading.cos();
    // A lane bending left has x falling ever faster ahead: a < 0 means positive curvature.
    let curvature = -2.0 * centre.a / (1.0 + slope * slope).powf(1.5);
    // The car points along +y; a lane running to the right (slope > 0) means the car points
    // left of it.
    LanePose { offset, heading, curvature }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs() {
        // Lane centre 0.5 m to the right, running to the right, bending left.
        let p = lane_pose(&Poly { a: -0.01, b: 0.1, c: 0.5 });
        assert!(p.offset > 0.49 && p.offset < 0.5, "{p:?}");
        assert!((p.heading - 0.1f64.atan()).abs() < 1e-12);
        assert!(p.curvature > 0.0);
    }

    #[test]
    fn crossing_a_horizontal_row() {
        // A row seeing y = 10 m from x = -5 m to x = 5 m on a 101 px wide frame.
        let row = RowLine { p: (-5.0, 10.0), d: (10.0, 0.0) };
        let (u, y) = cross_row(&Poly { a: 0.01, b: 0.0, c: 0.0 }, &row, 101).expect("in view");
        assert!((u - 60.0).abs() < 1e-4 && y == 10.0, "{u}");
        assert!(cross_row(&Poly { a: 0.0, b: 0.0, c: 6.0 }, &row, 101).is_none());
    }
}
