//! Where the vehicle and the measuring viewers run, and how the link between them is shaped.
//!
//! - [`Topology::Loopback`]: everything in one namespace, the vehicle's traffic shaped on `lo`
//!   with one htb class per viewer address (several viewers on different links at once; the
//!   viewers' credits and actions unshaped).
//! - [`Topology::Veth`]: a "car" namespace and this ("laptop") namespace joined by a veth pair,
//!   each end shaped by one `tbf` — one FIFO per direction, as a WiFi station's queue is, so the
//!   video, the state and the acks share a queue, and the uplink (credits, actions) is shaped
//!   too. The link can be taken down and brought back (an outage).

use super::shaping::{run, Shaper};
use anyhow::Context as _;
use std::path::Path;

/// The car's and the laptop's addresses on the veth pair; rogue clients take further laptop
/// addresses from [`ROGUE_BASE`] on.
pub const CAR_ADDRESS: &str = "10.200.0.1";
pub const LAPTOP_ADDRESS: &str = "10.200.0.2";
const PREFIX: &str = "/24";
/// Rogue clients connect from 10.200.0.ROGUE_BASE + i, each an address of its own (as other
/// machines on the car's WiFi would).
pub const ROGUE_BASE: u8 = 10;
pub const ROGUE_ADDRESSES: u8 = 40;

/// A queue as deep as a WiFi station's: up to this long a wait at the shaped rate before tbf
/// drops (what lets a stream that does not pace itself push the state behind it).
const TBF_LATENCY: &str = "400ms";

#[derive(Debug)]
pub enum Topology {
    Loopback(Shaper),
    Veth(Veth),
}

impl Topology {
    /// The host a viewer with this index connects to.
    pub fn vehicle_host(&self, viewer: usize) -> String {
        match self {
            Self::Loopback(_) => format!("127.0.0.{}", viewer + 1),
            Self::Veth(_) => CAR_ADDRESS.into(),
        }
    }

    /// The host actions go to.
    pub fn actions_host(&self) -> String {
        match self {
            Self::Loopback(_) => "127.0.0.1".into(),
            Self::Veth(_) => CAR_ADDRESS.into(),
        }
    }

    /// The source address of rogue client `i` (`None`: any; on loopback they share one).
    pub fn rogue_source(&self, i: usize) -> Option<String> {
        match self {
            Self::Loopback(_) => None,
            Self::Veth(_) => {
                Some(format!("10.200.0.{}", usize::from(ROGUE_BASE) + i % usize::from(ROGUE_ADDRESSES)))
            }
        }
    }

    /// Sets the link of viewer `index` (on veth there is one link, both directions).
    pub fn set_rate(&self, index: usize, kbps: u32) -> anyhow::Result<()> {
        match self {
            Self::Loopback(shaper) => shaper.set_rate(index, kbps),
            Self::Veth(veth) => veth.set_rate(kbps),
        }
    }

    /// Takes the link down (`false`) or brings it back.
    pub fn set_up(&self, up: bool) -> anyhow::Result<()> {
        match self {
            Self::Loopback(_) => anyhow::bail!("an outage needs --topology veth"),
            Self::Veth(veth) => veth.set_up(up),
        }
    }

    /// The command line that starts `program` where the vehicle runs.
    pub fn vehicle_command(&self, program: &Path, args: &[String]) -> (std::path::PathBuf, Vec<String>) {
        match self {
            Self::Loopback(_) => (program.to_path_buf(), args.to_vec()),
            Self::Veth(veth) => {
                let mut all = vec!["netns".to_string(), "exec".into(), veth.car_netns.clone()];
                all.push(program.display().to_string());
                all.extend_from_slice(args);
                ("ip".into(), all)
            }
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Self::Loopback(_) => "loopback, htb per viewer address, downlink only".into(),
            Self::Veth(_) => {
                format!("veth between two namespaces, one tbf per direction (latency {TBF_LATENCY})")
            }
        }
    }
}

/// The veth pair: `laptop_dev` here, `car_dev` in the car's namespace.
#[derive(Debug)]
pub struct Veth {
    car_netns: String,
    car_dev: String,
    laptop_dev: String,
}

fn in_car(netns: &str, args: &[&str]) -> anyhow::Result<()> {
    let mut all = vec!["ip", "netns", "exec", netns];
    all.extend_from_slice(args);
    run(&all)
}

/// tbf's bucket: at least two full packets, and at least what the rate sends in 4 ms (tbf
/// needs the bucket to exceed rate / HZ).
fn burst_bytes(kbps: u32) -> u32 {
    (kbps * 1000 / 8 / 250).max(3028)
}

impl Veth {
    /// Makes the pair between `car_netns` (an existing namespace holding only `lo`, made by
    /// scripts/bench-link.sh) and this namespace, with addresses, at `kbps` both ways.
    pub fn new(car_netns: &str, kbps: u32) -> anyhow::Result<Self> {
        anyhow::ensure!(
            car_netns.starts_with("ads-") && car_netns.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'),
            "--car-netns {car_netns:?}: a namespace made for this benchmark (ads-…)"
        );
        let suffix = std::process::id() % 100_000;
        let veth = Self {
            car_netns: car_netns.into(),
            car_dev: format!("adsc{suffix}"),
            laptop_dev: format!("adsl{suffix}"),
        };
        run(&["ip", "link", "set", "lo", "up"])?;
        run(&[
            "ip",
            "link",
            "add",
            &veth.laptop_dev,
            "type",
            "veth",
            "peer",
            "name",
            &veth.car_dev,
            "netns",
            car_netns,
        ])
        .context("making the veth pair")?;
        // Packets as a radio sends them: no 64 KB super-packets that pass a shaper at once.
        run(&["ip", "link", "set", "dev", &veth.laptop_dev, "gso_max_size", "1500", "gso_max_segs", "1"])?;
        in_car(
            car_netns,
            &["ip", "link", "set", "dev", &veth.car_dev, "gso_max_size", "1500", "gso_max_segs", "1"],
        )?;
        run(&["ip", "addr", "add", &format!("{LAPTOP_ADDRESS}{PREFIX}"), "dev", &veth.laptop_dev])?;
        for i in 0..ROGUE_ADDRESSES {
            let address = format!("10.200.0.{}{PREFIX}", ROGUE_BASE + i);
            run(&["ip", "addr", "add", &address, "dev", &veth.laptop_dev])?;
        }
        in_car(car_netns, &["ip", "link", "set", "lo", "up"])?;
        in_car(car_netns, &["ip", "addr", "add", &format!("{CAR_ADDRESS}{PREFIX}"), "dev", &veth.car_dev])?;
        run(&["ip", "link", "set", &veth.laptop_dev, "up"])?;
        in_car(car_netns, &["ip", "link", "set", &veth.car_dev, "up"])?;
        veth.set_rate(kbps)?;
        Ok(veth)
    }

    fn tbf(kbps: u32) -> Vec<String> {
        let s = |x: &str| x.to_string();
        vec![
            s("root"),
            s("tbf"),
            s("rate"),
            format!("{kbps}kbit"),
            s("burst"),
            burst_bytes(kbps).to_string(),
            s("latency"),
            s(TBF_LATENCY),
        ]
    }

    /// Both directions at `kbps` (a WiFi link is about as slow both ways).
    pub fn set_rate(&self, kbps: u32) -> anyhow::Result<()> {
        let tbf = Self::tbf(kbps);
        let tbf: Vec<&str> = tbf.iter().map(String::as_str).collect();
        let mut here = vec!["tc", "qdisc", "replace", "dev", &self.laptop_dev];
        here.extend_from_slice(&tbf);
        run(&here)?;
        let mut there = vec!["tc", "qdisc", "replace", "dev", &self.car_dev];
        there.extend_from_slice(&tbf);
        in_car(&self.car_netns, &there)
    }

    /// Down: the laptop's end goes down and the car's loses its carrier; TCP connections
    /// stay (no reset), their packets are lost until the link is back, as out of WiFi range.
    pub fn set_up(&self, up: bool) -> anyhow::Result<()> {
        let state = if up { "up" } else { "down" };
        run(&["ip", "link", "set", &self.laptop_dev, state])
    }
}

impl Drop for Veth {
    fn drop(&mut self) {
        // Deleting one end deletes the pair.
        let _ = run(&["ip", "link", "del", &self.laptop_dev]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bucket_holds_two_packets_or_four_milliseconds() {
        assert_eq!(burst_bytes(1_000), 3028);
        assert_eq!(burst_bytes(20_000), 10_000);
    }
}
