fn main() {
    println!("{}", ads_detection::opencv_version());
}
