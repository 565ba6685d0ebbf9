//! Shaping the loopback of the namespace this process runs in: htb classes per viewer address,
//! u32 filters on the vehicle's source ports, so only the vehicle's traffic is shaped (what a
//! WiFi link from the car does); the viewers' credits and actions travel unshaped.

use anyhow::Context as _;
use std::process::Command;

pub(super) fn run(args: &[&str]) -> anyhow::Result<()> {
    let out =
        Command::new(args[0]).args(&args[1..]).output().with_context(|| format!("running {}", args[0]))?;
    anyhow::ensure!(
        out.status.success(),
        "{} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

/// The shaped loopback: one htb class per viewer address (127.0.0.1, 127.0.0.2, ...).
#[derive(Debug)]
pub struct Shaper {
    classes: usize,
}

/// Burst of each class: two packets at the MTU set here (a WiFi link saves up nothing).
const BURST: &str = "3000";

impl Shaper {
    /// Brings `lo` up at a WiFi MTU and shapes the vehicle's `ports` towards each of
    /// `rates_kbps.len()` viewer addresses. Needs root in a network namespace of its own.
    pub fn new(ports: &[u16], rates_kbps: &[u32]) -> anyhow::Result<Self> {
        run(&["ip", "link", "set", "lo", "up"])?;
        run(&["ip", "link", "set", "lo", "mtu", "1500"])?;
        // Packets as a radio sends them: without this, loopback hands htb 64 KB super-packets
        // that pass in one go and make every frame look instantaneous.
        run(&["ip", "link", "set", "dev", "lo", "gso_max_size", "1500", "gso_max_segs", "1"])?;
        // Whatever is left from an earlier run in this namespace.
        let _ = run(&["tc", "qdisc", "del", "dev", "lo", "root"]);
        run(&[
            "tc", "qdisc", "add", "dev", "lo", "root", "handle", "1:", "htb", "default", "99", "r2q", "1000",
        ])?;
        run(&[
            "tc", "class", "add", "dev", "lo", "parent", "1:", "classid", "1:99", "htb", "rate", "10gbit",
        ])?;
        for (i, &rate) in rates_kbps.iter().enumerate() {
            let class = format!("1:{}", 10 + i);
            let rate = format!("{rate}kbit");
            run(&[
                "tc", "class", "add", "dev", "lo", "parent", "1:", "classid", &class, "htb", "rate", &rate,
            ])?;
            run(&[
                "tc", "class", "change", "dev", "lo", "parent", "1:", "classid", &class, "htb", "rate",
                &rate, "burst", BURST, "cburst", BURST,
            ])?;
            let src = format!("127.0.0.{}/32", i + 1);
            for port in ports {
                let port = port.to_string();
                run(&[
                    "tc", "filter", "add", "dev", "lo", "parent", "1:", "protocol", "ip", "prio", "1", "u32",
                    "match", "ip", "src", &src, "match", "ip", "sport", &port, "0xffff", "flowid", &class,
                ])?;
            }
        }
        Ok(Self { classes: rates_kbps.len() })
    }

    /// Changes the rate towards viewer address `index` (the step in the middle of a run).
    pub fn set_rate(&self, index: usize, kbps: u32) -> anyhow::Result<()> {
        anyhow::ensure!(index < self.classes, "no class {index}");
        let (class, rate) = (format!("1:{}", 10 + index), format!("{kbps}kbit"));
        run(&[
            "tc", "class", "change", "dev", "lo", "parent", "1:", "classid", &class, "htb", "rate", &rate,
            "burst", BURST, "cburst", BURST,
        ])
    }
}

impl Drop for Shaper {
    fn drop(&mut self) {
        let _ = run(&["tc", "qdisc", "del", "dev", "lo", "root"]);
    }
}
