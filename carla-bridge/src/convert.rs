//! Between CARLA's conventions and ads': pixels, pose and controls.

/// CARLA's `sensor.camera.rgb` delivers BGRA, 8 bits per channel, rows packed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConvertError {
    #[error("a {width}x{height} BGRA image needs {needed} bytes, got {got}")]
    ShortSource { width: u32, height: u32, needed: usize, got: usize },
    #[error("the image is {got_w}x{got_h} but the frames ring is {want_w}x{want_h}")]
    SizeMismatch { got_w: u32, got_h: u32, want_w: u32, want_h: u32 },
    #[error("destination of {got} bytes (stride {stride}) is too small for {height} rows")]
    ShortDestination { got: usize, stride: usize, height: u32 },
}

/// Drops the alpha channel: BGRA (packed) into BGR rows of `dst_stride` bytes. The sidecar
/// asks CARLA for images of the ring's size, so there is nothing to resize.
pub fn bgra_to_bgr(
    src: &[u8],
    width: u32,
    height: u32,
    dst: &mut [u8],
    dst_stride: usize,
) -> Result<(), ConvertError> {
    let (w, h) = (width as usize, height as usize);
    let needed = w * h * 4;
    if src.len() < needed {
        return Err(ConvertError::ShortSource { width, height, needed, got: src.len() });
    }
    if dst_stride < w * 3 || dst.len() < dst_stride * h.saturating_sub(1) + w * 3 {
        return Err(ConvertError::ShortDestination { got: dst.len(), stride: dst_stride, height });
    }
    for (src_row, dst_row) in src.chunks_exact(w * 4).take(h).zip(dst.chunks_mut(dst_stride)) {
        for (s, d) in src_row.chunks_exact(4).zip(dst_row[..w * 3].chunks_exact_mut(3)) {
            d.copy_from_slice(&s[..3]);
        }
    }
    Ok(())
}

/// `carla.VehicleControl`'s fields: steer in -1..=1 with + = right, as a share of the wheels'
/// largest angle; throttle and brake 0..=1.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CarlaControl {
    pub steer: f64,
    pub throttle: f64,
    pub brake: f64,
}

/// ads' controls (front-wheel angle in radians, + = left) as CARLA's. `max_steer_rad` is the
/// car's largest front-wheel angle (the sidecar reads it from the vehicle's physics).
pub fn to_carla_control(steering_rad: f64, throttle: f64, brake: f64, max_steer_rad: f64) -> CarlaControl {
    let clean = |v: f64| if v.is_finite() { v } else { 0.0 };
    let steer = if max_steer_rad > 0.0 { -clean(steering_rad) / max_steer_rad } else { 0.0 };
    CarlaControl {
        steer: steer.clamp(-1.0, 1.0),
        throttle: clean(throttle).clamp(0.0, 1.0),
        // A NaN brake must not release the car: treat it as full braking.
        brake: if brake.is_finite() { brake.clamp(0.0, 1.0) } else { 1.0 },
    }
}

/// CARLA's pose (Unreal: left-handed, y right, yaw clockwise in degrees) in ads' frame
/// (right-handed, y left, yaw counter-clockwise in radians): `(x, y, yaw)`.
pub fn carla_to_ads_pose(x_m: f64, y_m: f64, yaw_deg: f64) -> (f64, f64, f64) {
    (x_m, -y_m, -yaw_deg.to_radians())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bgra_loses_only_alpha_and_respects_the_stride() {
        let src: Vec<u8> = (0..2 * 2 * 4).map(|i| i as u8).collect();
        let mut dst = vec![0xAA; 2 * 8];
        bgra_to_bgr(&src, 2, 2, &mut dst, 8).unwrap();
        assert_eq!(&dst[..6], &[0, 1, 2, 4, 5, 6]);
        assert_eq!(&dst[6..8], &[0xAA, 0xAA], "padding untouched");
        assert_eq!(&dst[8..14], &[8, 9, 10, 12, 13, 14]);
        let err = bgra_to_bgr(&src[..15], 2, 2, &mut dst, 8).unwrap_err();
        assert!(matches!(err, ConvertError::ShortSource { needed: 16, got: 15, .. }));
        assert!(bgra_to_bgr(&src, 2, 2, &mut dst[..10], 8).is_err());
    }

    #[test]
    fn left_is_negative_steer_and_values_are_clamped() {
        let max = 70f64.to_radians();
        let c = to_carla_control(0.35, 0.5, 0.0, max);
        assert!(c.steer < 0.0 && (c.steer + 0.35 / max).abs() < 1e-12, "{c:?}");
        assert_eq!(
            to_carla_control(-5.0, 2.0, -1.0, max),
            CarlaControl { steer: 1.0, throttle: 1.0, brake: 0.0 }
        );
        let nan = to_carla_control(f64::NAN, f64::NAN, f64::NAN, max);
        assert_eq!(nan, CarlaControl { steer: 0.0, throttle: 0.0, brake: 1.0 });
    }

    #[test]
    fn carla_pose_is_mirrored_into_ads_frame() {
        let (x, y, yaw) = carla_to_ads_pose(10.0, 2.0, 90.0);
        assert_eq!((x, y), (10.0, -2.0));
        assert!((yaw + std::f64::consts::FRAC_PI_2).abs() < 1e-12);
    }
}
