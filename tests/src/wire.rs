//! What crossed the wire: a tcpdump capture on the link between the nodes,
//! read back (classic pcap, Ethernet) into TCP payloads per direction.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::testbed::Testbed;
use crate::wait::within;

/// One TCP segment's payload.
#[derive(Clone, Debug)]
pub struct Segment {
    pub src: SocketAddrV4,
    pub dst: SocketAddrV4,
    pub payload: Vec<u8>,
}

/// A running tcpdump on the wire bridge.
pub struct Capture {
    index: usize,
    pub file: PathBuf,
}

impl Capture {
    /// Starts capturing TCP on the first node's link to the wire (a bridge
    /// port: the bridge device itself only sees frames addressed to it);
    /// waits until tcpdump listens.
    pub fn start(tb: &Testbed, file: &Path) -> Result<Capture> {
        let mut cmd = Command::new("tcpdump");
        cmd.args(["-i", "n1", "--immediate-mode", "-U", "-s", "0", "-w"])
            .arg(file)
            .arg("tcp");
        let index = tb
            .spawn("tcpdump", cmd, Some(&tb.wire_netns), None)
            .context("starting tcpdump (apt-get install tcpdump; cargo xtask setup does)")?;
        tb.with_proc(index, |p| {
            p.wait_for_line("listening on", Duration::from_secs(10))
        })??;
        Ok(Capture {
            index,
            file: file.to_path_buf(),
        })
    }

    /// Stops tcpdump (flushing the file) and parses what it captured.
    pub fn finish(self, tb: &Testbed) -> Result<Vec<Segment>> {
        // Let the last segments reach tcpdump before it is told to stop.
        std::thread::sleep(Duration::from_millis(200));
        tb.with_proc(self.index, |p| {
            p.signal(libc::SIGINT);
            p.wait_timeout(Duration::from_secs(5))
        })?;
        within(Duration::from_secs(2), || self.file.exists());
        if let Some(keep) = std::env::var_os("AMBIT_KEEP_PCAP") {
            let _ = std::fs::copy(&self.file, keep);
        }
        parse_pcap(&std::fs::read(&self.file).context("reading the capture")?)
    }
}

fn u16be(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

/// Parses a classic little-endian pcap of Ethernet frames into TCP/IPv4 payloads.
pub fn parse_pcap(data: &[u8]) -> Result<Vec<Segment>> {
    if data.len() < 24 || data[0..4] != [0xd4, 0xc3, 0xb2, 0xa1] {
        bail!("not a little-endian pcap file ({} bytes)", data.len());
    }
    let mut out = Vec::new();
    let mut at = 24;
    while at + 16 <= data.len() {
        let incl =
            u32::from_le_bytes([data[at + 8], data[at + 9], data[at + 10], data[at + 11]]) as usize;
        let frame = data
            .get(at + 16..at + 16 + incl)
            .context("truncated pcap record")?;
        at += 16 + incl;
        // Ethernet: 14 bytes, ethertype 0x0800 = IPv4.
        if u16be(frame, 12) != Some(0x0800) {
            continue;
        }
        let ip = &frame[14..];
        let Some(&vihl) = ip.first() else { continue };
        let ihl = ((vihl & 0x0f) as usize) * 4;
        if ip.get(9) != Some(&6) || ip.len() < ihl + 20 {
            continue;
        }
        let total = u16be(ip, 2).unwrap_or(0) as usize;
        let src_ip = Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]);
        let dst_ip = Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]);
        let tcp = &ip[ihl..total.min(ip.len())];
        let (Some(sport), Some(dport)) = (u16be(tcp, 0), u16be(tcp, 2)) else {
            continue;
        };
        let doff = ((tcp.get(12).copied().unwrap_or(0) >> 4) as usize) * 4;
        let payload = tcp.get(doff..).unwrap_or(&[]).to_vec();
        if !payload.is_empty() {
            out.push(Segment {
                src: SocketAddrV4::new(src_ip, sport),
                dst: SocketAddrV4::new(dst_ip, dport),
                payload,
            });
        }
    }
    Ok(out)
}

/// True if some segment to `port` starts a TLS handshake (record type 22)
/// carrying a ClientHello (handshake type 1).
pub fn has_tls_client_hello(segments: &[Segment], port: u16) -> bool {
    segments.iter().any(|s| {
        s.dst.port() == port
            && s.payload.len() > 5
            && s.payload[0] == 0x16
            && s.payload[1] == 0x03
            && s.payload[5] == 0x01
    })
}

/// True if `needle` appears in any payload (also across two consecutive
/// segments of the same direction).
pub fn contains_plaintext(segments: &[Segment], needle: &[u8]) -> bool {
    let find = |hay: &[u8]| hay.windows(needle.len()).any(|w| w == needle);
    segments.iter().any(|s| find(&s.payload))
        || segments.windows(2).any(|w| {
            w[0].src == w[1].src && w[0].dst == w[1].dst && {
                let mut joined = w[0].payload.clone();
                joined.extend_from_slice(&w[1].payload);
                find(&joined)
            }
        })
}
