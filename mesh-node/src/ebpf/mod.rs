//! The kernel programs (`mesh-ebpf`): loading, attaching, enrolling pods.
//!
//! [`MeshPrograms::load`] loads the embedded object and attaches, to the
//! node's cgroup2 directory:
//!
//! * `cgroup/connect4` + `cgroup/connect6` — a TCP `connect()` from an
//!   enrolled netns to a non-loopback address, by any process but mesh-node
//!   (recognised by its cgroup, [`MeshPrograms::exempt_cgroup`]), is
//!   rewritten to `127.0.0.1:15001` (IPv6 sockets: `::ffff:127.0.0.1:15001`)
//!   in the app's own netns; the original destination is kept on the socket.
//! * `sockops` — when the captured connection is established, moves the
//!   original destination from the app's socket to the one 15001 accepted
//!   (socket storage, freed with the socket), and (fast path on) puts
//!   loopback sockets in `FAST_SOCKS`.
//! * `cgroup/getsockopt` — answers `SO_ORIGINAL_DST` ([`original_dst`]) from
//!   the asking socket's own storage.
//! * `sk_msg` on `FAST_SOCKS` — same-node socket pairs skip the TCP stack.
//!
//! [`MeshPrograms::enrol`] attaches `sk_lookup` to a pod's netns (a new link
//! of the one loaded program) so connections to the pod IP land on its
//! 15006 (plaintext) or 15008 (HBONE) listener.
//!
//! Cgroup hooks fire by the cgroup of the process that *created* the socket:
//! mesh-node must live in a (child) cgroup below the one given to `load` so
//! that `getsockopt` is answered for its accepted sockets, and that cgroup
//! must be exempted ([`MeshPrograms::exempt_cgroup`]) so that its own
//! connections are not captured.

mod logger;
pub mod pins;
mod sockopt;

use std::fs::File;
use std::io;
use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use aya::maps::{Array, HashMap, MapData, MapError, SockHash};
use aya::programs::links::FdLink;
use aya::programs::{
    CgroupAttachMode, CgroupSockAddr, CgroupSockopt, ProgramError, SkLookup, SkMsg, SockOps,
};
use aya::{Ebpf, EbpfLoader};
use mesh_common::{
    map_names, program_names, ListenerKey, PodInfo, CONFIG_FAST_PATH, HBONE_PORT,
    INBOUND_PLAINTEXT_PORT,
};

pub use self::pins::PinDir;
pub use self::sockopt::original_dst;

/// The compiled kernel programs (built by build.rs from `mesh-ebpf`).
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/mesh-ebpf"));

/// Everything that can go wrong loading, attaching or updating the programs.
#[derive(Debug, thiserror::Error)]
pub enum EbpfError {
    #[error("loading the eBPF object: {0}")]
    Load(#[source] Box<aya::EbpfError>),
    #[error("program `{name}` is missing from the eBPF object")]
    MissingProgram { name: &'static str },
    #[error("map `{name}` is missing from the eBPF object")]
    MissingMap { name: &'static str },
    #[error("program `{name}`: {source}")]
    Program {
        name: &'static str,
        #[source]
        source: Box<ProgramError>,
    },
    #[error("map `{name}`: {source}")]
    Map {
        name: &'static str,
        #[source]
        source: Box<MapError>,
    },
    #[error("cgroup directory {path}: {source}")]
    Cgroup {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("netns {netns:#x} is already enrolled")]
    AlreadyEnrolled { netns: u64 },
    #[error(
        "pod IP {ip} already has listeners (another enrolled pod uses it; unenrol that one first)"
    )]
    PodIpInUse { ip: IpAddr },
    #[error("the enrolled pod belongs to a different MeshPrograms instance")]
    ForeignPod,
    #[error("link of `{name}`: {source}")]
    Link {
        name: &'static str,
        #[source]
        source: Box<aya::programs::links::LinkError>,
    },
    #[error("pin {path}: {source}")]
    Pin {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl EbpfError {
    fn program(name: &'static str) -> impl FnOnce(ProgramError) -> EbpfError {
        move |e| EbpfError::Program {
            name,
            source: Box::new(e),
        }
    }

    fn pin(path: &Path) -> impl FnOnce(io::Error) -> EbpfError + '_ {
        move |source| EbpfError::Pin {
            path: path.to_path_buf(),
            source,
        }
    }

    fn map(name: &'static str) -> impl FnOnce(MapError) -> EbpfError {
        move |e| EbpfError::Map {
            name,
            source: Box::new(e),
        }
    }
}

/// What [`MeshPrograms::enrol`] needs to know about a pod.
pub struct PodEnrolment<'a> {
    /// The pod's network namespace.
    pub netns: &'a crate::inpod::PodNetns,
    /// The pod's IP (unique on the node; keys its listeners).
    pub pod_ip: IpAddr,
    /// The pod's 15006 listener (inside the pod's netns).
    pub inbound_plaintext: &'a std::net::TcpListener,
    /// The pod's 15008 listener (inside the pod's netns).
    pub hbone: &'a std::net::TcpListener,
}

/// A pod enrolled with [`MeshPrograms::enrol`].
///
/// Give it back to [`MeshPrograms::unenrol`] to stop capturing. Dropping it
/// does **not** unenrol the pod (the handle cannot reach the maps): the pod
/// stays captured until `MeshPrograms` itself is dropped, and a warning is
/// logged.
#[must_use = "an enrolled pod stays captured until passed to MeshPrograms::unenrol"]
#[derive(Debug)]
pub struct EnrolledPod {
    owner: u64,
    netns_cookie: u64,
    pod_ip: IpAddr,
    /// What exists in the kernel for this pod (teardown removes exactly that).
    link: Option<aya::programs::sk_lookup::SkLookupLinkId>,
    /// The pinned sk_lookup link (pinned programs), instead of `link`.
    pinned_link: Option<PathBuf>,
    listeners: Vec<ListenerKey>,
    in_enrolled: bool,
}

impl EnrolledPod {
    /// The netns cookie the pod is enrolled under.
    pub fn netns_cookie(&self) -> u64 {
        self.netns_cookie
    }

    /// The pod IP its listeners are keyed by.
    pub fn pod_ip(&self) -> IpAddr {
        self.pod_ip
    }
}

impl Drop for EnrolledPod {
    fn drop(&mut self) {
        // Pinned: staying captured past mesh-node is the point (fail closed).
        if self.pinned_link.is_none()
            && (self.link.is_some() || self.in_enrolled || !self.listeners.is_empty())
        {
            tracing::warn!(
                netns = format_args!("{:#x}", self.netns_cookie),
                pod_ip = %self.pod_ip,
                "EnrolledPod dropped without unenrol; the pod stays captured until MeshPrograms is dropped"
            );
        }
    }
}

/// A pod captured without listeners (see `MeshPrograms::held`).
#[derive(Debug)]
struct HeldPod {
    /// Left by the previous run, not yet adopted (else held by this run).
    previous_run: bool,
    /// Its sk_lookup link when unpinned (pinned: `pods/<cookie>`).
    link: Option<aya::programs::sk_lookup::SkLookupLinkId>,
}

/// The loaded and attached kernel programs. Unpinned ([`MeshPrograms::load`]),
/// dropping it detaches every program (cgroup links, sk_msg, every pod's
/// sk_lookup link) and frees the maps. Pinned ([`MeshPrograms::load_pinned`]),
/// capture and steering stay in place after it (see [`pins`]).
pub struct MeshPrograms {
    // Field order is drop order: stop the log reader, then the programs
    // (links detach), then the maps.
    _logger: Option<logger::LogForwarder>,
    ebpf: Ebpf,
    enrolled: HashMap<MapData, u64, PodInfo>,
    listeners: SockHash<MapData, ListenerKey>,
    config: Array<MapData, u32>,
    own_cgroup: Array<MapData, u64>,
    pins: Option<PinDir>,
    /// Pods captured with no listener to take their connections (so they
    /// are refused): left enrolled by the previous run (pinned mode), or held
    /// after a failed enrolment. `enrol` adopts them.
    held: std::collections::BTreeMap<u64, HeldPod>,
    id: u64,
}

impl std::fmt::Debug for MeshPrograms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MeshPrograms")
            .field("id", &self.id)
            .finish()
    }
}

impl MeshPrograms {
    /// Load the embedded object, attach connect4/6, sockops, getsockopt to the
    /// cgroup2 dir `cgroup` (mesh-node passes the node's cgroup), attach
    /// sk_msg to the sockhash. Nothing outlives the returned value.
    pub fn load(cgroup: &Path) -> Result<Self, EbpfError> {
        Self::load_with(cgroup, None)
    }

    /// As [`load`](Self::load), with the maps and the capturing links pinned
    /// in `pins`: reused from a previous run, and left in place after this
    /// one, so that capture fails closed while no mesh-node runs. Pods the
    /// previous run left enrolled are adopted by [`enrol`](Self::enrol) or
    /// released by [`release_leftovers`](Self::release_leftovers).
    pub fn load_pinned(cgroup: &Path, pins: PinDir) -> Result<Self, EbpfError> {
        Self::load_with(cgroup, Some(pins))
    }

    fn load_with(cgroup: &Path, pins: Option<PinDir>) -> Result<Self, EbpfError> {
        let cgroup_dir = File::open(cgroup).map_err(|source| EbpfError::Cgroup {
            path: cgroup.to_path_buf(),
            source,
        })?;
        let level = logger::kernel_log_level();
        let mut loader = EbpfLoader::new();
        loader.override_global("AYA_LOG_LEVEL", &level, false);
        if let Some(pins) = &pins {
            for name in map_names::ALL {
                loader.map_pin_path(name, pins.map(name));
            }
        }
        let mut ebpf = loader
            .load(OBJECT)
            .map_err(|e| EbpfError::Load(Box::new(e)))?;

        let log = logger::LogForwarder::start(&mut ebpf);

        let enrolled = take_map(&mut ebpf, map_names::ENROLLED)?;
        let enrolled: HashMap<MapData, u64, PodInfo> =
            HashMap::try_from(enrolled).map_err(EbpfError::map(map_names::ENROLLED))?;
        let listeners = take_map(&mut ebpf, map_names::LISTENERS)?;
        let listeners: SockHash<MapData, ListenerKey> =
            SockHash::try_from(listeners).map_err(EbpfError::map(map_names::LISTENERS))?;
        let config = take_map(&mut ebpf, map_names::CONFIG)?;
        let config: Array<MapData, u32> =
            Array::try_from(config).map_err(EbpfError::map(map_names::CONFIG))?;
        let own_cgroup = take_map(&mut ebpf, map_names::OWN_CGROUP)?;
        let own_cgroup: Array<MapData, u64> =
            Array::try_from(own_cgroup).map_err(EbpfError::map(map_names::OWN_CGROUP))?;
        let fast = take_map(&mut ebpf, map_names::FAST_SOCKS)?;
        let fast: SockHash<MapData, mesh_common::SockPairKey> =
            SockHash::try_from(fast).map_err(EbpfError::map(map_names::FAST_SOCKS))?;

        // aya attaches with bpf_link (kernel >= 5.7), which always coexists
        // with other programs in the cgroup tree; link_create refuses the
        // BPF_F_ALLOW_MULTI flag, so the mode must be `Single` (flags 0).
        // Pinned, the capturing links replace the previous run's (getsockopt
        // and sk_msg only serve a live mesh-node and are not pinned).
        for name in [program_names::CONNECT4, program_names::CONNECT6] {
            let prog: &mut CgroupSockAddr = program(&mut ebpf, name)?;
            prog.load().map_err(EbpfError::program(name))?;
            let id = prog
                .attach(&cgroup_dir, CgroupAttachMode::Single)
                .map_err(EbpfError::program(name))?;
            if let Some(pins) = &pins {
                let link = prog.take_link(id).map_err(EbpfError::program(name))?;
                pin_link(pins, name, link)?;
            }
        }
        let name = program_names::SOCKOPS;
        let prog: &mut SockOps = program(&mut ebpf, name)?;
        prog.load().map_err(EbpfError::program(name))?;
        let id = prog
            .attach(&cgroup_dir, CgroupAttachMode::Single)
            .map_err(EbpfError::program(name))?;
        if let Some(pins) = &pins {
            let link = prog.take_link(id).map_err(EbpfError::program(name))?;
            pin_link(pins, name, link)?;
        }

        let name = program_names::GETSOCKOPT;
        let prog: &mut CgroupSockopt = program(&mut ebpf, name)?;
        prog.load().map_err(EbpfError::program(name))?;
        prog.attach(&cgroup_dir, CgroupAttachMode::Single)
            .map_err(EbpfError::program(name))?;

        let name = program_names::SK_MSG;
        let prog: &mut SkMsg = program(&mut ebpf, name)?;
        prog.load().map_err(EbpfError::program(name))?;
        prog.attach(fast.fd()).map_err(EbpfError::program(name))?;
        // The attachment holds the map; our handle may go.
        drop(fast);

        // Loaded once; every enrolled pod gets its own link to it.
        let name = program_names::SK_LOOKUP;
        let prog: &mut SkLookup = program(&mut ebpf, name)?;
        prog.load().map_err(EbpfError::program(name))?;

        static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let id = NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let held: std::collections::BTreeMap<u64, HeldPod> = if pins.is_some() {
            enrolled
                .keys()
                .filter_map(Result::ok)
                .map(|cookie| {
                    let pod = HeldPod {
                        previous_run: true,
                        link: None,
                    };
                    (cookie, pod)
                })
                .collect()
        } else {
            Default::default()
        };
        tracing::info!(
            cgroup = %cgroup.display(),
            pinned = ?pins.as_ref().map(|p| p.root().display().to_string()),
            still_enrolled = held.len(),
            "eBPF programs attached"
        );
        Ok(MeshPrograms {
            _logger: log,
            ebpf,
            enrolled,
            listeners,
            config,
            own_cgroup,
            pins,
            held,
            id,
        })
    }

    /// Pods a previous run left enrolled that this one has not adopted.
    pub fn leftovers(&self) -> usize {
        self.held.values().filter(|h| h.previous_run).count()
    }

    /// Stops capturing the pods a previous run left enrolled and this run
    /// did not adopt (they left the node or the mesh while no mesh-node
    /// ran). Call after the first reconcile.
    pub fn release_leftovers(&mut self) -> Result<usize, EbpfError> {
        let gone: Vec<u64> = self
            .held
            .iter()
            .filter(|(_, h)| h.previous_run)
            .map(|(c, _)| *c)
            .collect();
        let mut first = None;
        for cookie in &gone {
            if let Err(e) = self.release(*cookie) {
                first.get_or_insert(e);
            }
            tracing::info!(
                netns = format_args!("{cookie:#x}"),
                "released a pod the previous run left enrolled"
            );
        }
        first.map_or(Ok(gone.len()), Err)
    }

    /// Fails a pod closed after its enrolment failed (a port in use, a map
    /// full): its connections are captured and steered with no listener to
    /// take them, so they are refused, never unmeshed. A later
    /// [`enrol`](Self::enrol) adopts it; [`release`](Self::release) lets it go.
    pub fn hold(
        &mut self,
        netns: &crate::inpod::PodNetns,
        pod_ip: IpAddr,
    ) -> Result<(), EbpfError> {
        let cookie = netns.cookie();
        let previous_run = match self.held.get(&cookie) {
            // Held by this run already.
            Some(h) if !h.previous_run => return Ok(()),
            Some(_) => true,
            None if self.enrolled.get(&cookie, 0).is_ok() => {
                return Err(EbpfError::AlreadyEnrolled { netns: cookie });
            }
            None => false,
        };
        self.attach_held(netns, pod_ip.to_canonical(), previous_run)?;
        // A leftover that failed to enrol is this run's to hold now.
        if let Some(h) = self.held.get_mut(&cookie) {
            h.previous_run = false;
        }
        tracing::warn!(netns = format_args!("{cookie:#x}"), %pod_ip, "pod held: its connections are refused until it enrols");
        Ok(())
    }

    /// Captures and steers a pod with no listeners (a new sk_lookup link,
    /// replacing any it had, and its `ENROLLED` entry) and records it held.
    fn attach_held(
        &mut self,
        netns: &crate::inpod::PodNetns,
        pod_ip: IpAddr,
        previous_run: bool,
    ) -> Result<(), EbpfError> {
        let cookie = netns.cookie();
        let name = program_names::SK_LOOKUP;
        let prog: &mut SkLookup = program(&mut self.ebpf, name)?;
        let link = prog
            .attach(netns.file())
            .map_err(EbpfError::program(name))?;
        let link = match &self.pins {
            Some(pins) => {
                let link = prog.take_link(link).map_err(EbpfError::program(name))?;
                let dest = pins.pod(cookie);
                pins::pin_replacing(FdLink::from(link), &dest).map_err(EbpfError::pin(&dest))?;
                None
            }
            None => Some(link),
        };
        if let Some(old) = self
            .held
            .insert(cookie, HeldPod { previous_run, link })
            .and_then(|h| h.link)
        {
            if let Ok(prog) = program::<SkLookup>(&mut self.ebpf, name) {
                let _ = prog.detach(old);
            }
        }
        self.enrolled
            .insert(cookie, PodInfo::new(pod_ip), BPF_ANY)
            .map_err(EbpfError::map(map_names::ENROLLED))
    }

    /// Whether the pod with this netns cookie is held (captured, refused).
    pub fn is_held(&self, netns_cookie: u64) -> bool {
        self.held.contains_key(&netns_cookie)
    }

    /// Lets a held pod go (it left the node or the mesh): its traffic is no
    /// longer captured. Not for enrolled pods (use `unenrol`).
    pub fn release(&mut self, netns_cookie: u64) -> Result<(), EbpfError> {
        let Some(held) = self.held.remove(&netns_cookie) else {
            return Ok(());
        };
        let mut first = None;
        if let Err(e) = ignore_missing(self.enrolled.remove(&netns_cookie), map_names::ENROLLED) {
            first.get_or_insert(e);
        }
        if let Some(pins) = &self.pins {
            let path = pins.pod(netns_cookie);
            if let Err(e) = pins::unpin(&path) {
                first.get_or_insert(EbpfError::Pin { path, source: e });
            }
        }
        if let Some(link) = held.link {
            let name = program_names::SK_LOOKUP;
            if let Err(e) = program::<SkLookup>(&mut self.ebpf, name)
                .and_then(|prog| prog.detach(link).map_err(EbpfError::program(name)))
            {
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }

    /// Exempts the processes of the cgroup2 directory `cgroup` (mesh-node's
    /// own) from capture. Their connections are the proxy's; nothing a pod
    /// sets on its sockets has this effect.
    pub fn exempt_cgroup(&mut self, cgroup: &Path) -> Result<(), EbpfError> {
        use std::os::unix::fs::MetadataExt;
        // On cgroup2 a directory's inode number is the cgroup id the kernel
        // programs see (bpf_get_current_cgroup_id).
        let id = std::fs::metadata(cgroup)
            .map_err(|source| EbpfError::Cgroup {
                path: cgroup.to_path_buf(),
                source,
            })?
            .ino();
        self.own_cgroup
            .set(0, id, 0)
            .map_err(EbpfError::map(map_names::OWN_CGROUP))
    }

    /// Enrol a pod: `ENROLLED[netns cookie] = info`; attach the sk_lookup
    /// program to the pod netns (a new link, same loaded program); put its
    /// listeners into `LISTENERS` keyed by pod IP. On error nothing of the
    /// pod is left behind.
    pub fn enrol(&mut self, pod: PodEnrolment<'_>) -> Result<EnrolledPod, EbpfError> {
        let netns_cookie = pod.netns.cookie();
        let pod_ip = pod.pod_ip.to_canonical();
        // A held pod (left by the previous run, or after a failed enrolment)
        // is adopted: it stays captured throughout, and its entries and link
        // are replaced in place.
        let adopted = self.held.remove(&netns_cookie);
        let adopting = adopted.is_some();
        if !adopting && self.enrolled.get(&netns_cookie, 0).is_ok() {
            return Err(EbpfError::AlreadyEnrolled {
                netns: netns_cookie,
            });
        }
        let adopting_same_ip = adopting
            && self
                .enrolled
                .get(&netns_cookie, 0)
                .is_ok_and(|info| info == PodInfo::new(pod_ip));
        let mut handle = EnrolledPod {
            owner: self.id,
            netns_cookie,
            pod_ip,
            link: None,
            pinned_link: None,
            listeners: Vec::with_capacity(2),
            in_enrolled: false,
        };

        let res = (|| {
            let [plain_key, hbone_key] = listener_keys(pod_ip);
            for (key, sock) in [
                (plain_key, pod.inbound_plaintext.as_raw_fd()),
                (hbone_key, pod.hbone.as_raw_fd()),
            ] {
                // NOEXIST: never take over another pod's listeners; but an
                // adopted pod's are its own (a mesh-node still draining holds
                // them during a hand-over), and new connections go to ours.
                let flags = if adopting_same_ip {
                    BPF_ANY
                } else {
                    BPF_NOEXIST
                };
                match self.listeners.insert(key, sock, flags) {
                    Ok(()) => handle.listeners.push(key),
                    Err(e) if is_errno(&e, libc::EEXIST) => {
                        return Err(EbpfError::PodIpInUse { ip: pod_ip });
                    }
                    Err(e) => return Err(EbpfError::map(map_names::LISTENERS)(e)),
                }
            }
            let name = program_names::SK_LOOKUP;
            let prog: &mut SkLookup = program(&mut self.ebpf, name)?;
            let link = prog
                .attach(pod.netns.file())
                .map_err(EbpfError::program(name))?;
            match &self.pins {
                Some(pins) => {
                    let link = prog.take_link(link).map_err(EbpfError::program(name))?;
                    let dest = pins.pod(netns_cookie);
                    pins::pin_replacing(FdLink::from(link), &dest)
                        .map_err(EbpfError::pin(&dest))?;
                    handle.pinned_link = Some(dest);
                }
                None => handle.link = Some(link),
            }
            // Last: capture starts only once inbound steering is in place.
            let flags = if adopting { BPF_ANY } else { BPF_NOEXIST };
            match self
                .enrolled
                .insert(netns_cookie, PodInfo::new(pod_ip), flags)
            {
                Ok(()) => {
                    handle.in_enrolled = true;
                    Ok(())
                }
                Err(e) if is_errno(&e, libc::EEXIST) => Err(EbpfError::AlreadyEnrolled {
                    netns: netns_cookie,
                }),
                Err(e) => Err(EbpfError::map(map_names::ENROLLED)(e)),
            }
        })();
        if let Err(e) = res {
            let _ = self.teardown(&mut handle);
            if let Some(held) = adopted {
                // Still failing: it stays held (captured, refused). The
                // teardown may have removed the link it had: attach anew.
                let previous_run = held.previous_run;
                self.held.insert(netns_cookie, held);
                if let Err(e) = self.attach_held(pod.netns, pod_ip, previous_run) {
                    tracing::error!(error = %e, "re-holding a pod whose enrolment failed");
                }
            }
            return Err(e);
        }
        if let Some(HeldPod {
            link: Some(old), ..
        }) = adopted
        {
            // The new link is in place; the held one goes.
            let name = program_names::SK_LOOKUP;
            if let Err(e) = program::<SkLookup>(&mut self.ebpf, name)
                .and_then(|prog| prog.detach(old).map_err(EbpfError::program(name)))
            {
                tracing::warn!(error = %e, "detaching a held pod's sk_lookup link");
            }
        }
        tracing::info!(
            netns = format_args!("{netns_cookie:#x}"),
            %pod_ip,
            "pod enrolled"
        );
        Ok(handle)
    }

    /// Stop capturing a pod: remove its map entries and detach its sk_lookup link.
    pub fn unenrol(&mut self, mut pod: EnrolledPod) -> Result<(), EbpfError> {
        if pod.owner != self.id {
            // Let the handle's Drop warn; it is not ours to tear down.
            return Err(EbpfError::ForeignPod);
        }
        self.teardown(&mut pod)?;
        tracing::info!(
            netns = format_args!("{:#x}", pod.netns_cookie),
            pod_ip = %pod.pod_ip,
            "pod unenrolled"
        );
        Ok(())
    }

    /// Turn the same-node fast path (sockops + sk_msg) on or off. Affects
    /// connections established afterwards.
    pub fn set_fast_path(&mut self, on: bool) -> Result<(), EbpfError> {
        self.config
            .set(CONFIG_FAST_PATH, u32::from(on), 0)
            .map_err(EbpfError::map(map_names::CONFIG))
    }

    /// Undoes whatever of an enrolment exists; reports the first error but
    /// tries every step.
    fn teardown(&mut self, pod: &mut EnrolledPod) -> Result<(), EbpfError> {
        let mut first: Option<EbpfError> = None;
        let mut note = |r: Result<(), EbpfError>| {
            if let Err(e) = r {
                first.get_or_insert(e);
            }
        };
        if std::mem::take(&mut pod.in_enrolled) {
            note(ignore_missing(
                self.enrolled.remove(&pod.netns_cookie),
                map_names::ENROLLED,
            ));
        }
        if let Some(path) = pod.pinned_link.take() {
            note(pins::unpin(&path).map_err(|source| EbpfError::Pin { path, source }));
        }
        if let Some(link) = pod.link.take() {
            let name = program_names::SK_LOOKUP;
            note(
                program::<SkLookup>(&mut self.ebpf, name)
                    .and_then(|prog| prog.detach(link).map_err(EbpfError::program(name))),
            );
        }
        for key in std::mem::take(&mut pod.listeners) {
            note(ignore_missing(
                self.listeners.remove(&key),
                map_names::LISTENERS,
            ));
        }
        first.map_or(Ok(()), Err)
    }
}

fn listener_keys(pod_ip: IpAddr) -> [ListenerKey; 2] {
    [
        ListenerKey::new(pod_ip, INBOUND_PLAINTEXT_PORT),
        ListenerKey::new(pod_ip, HBONE_PORT),
    ]
}

/// `BPF_ANY` map update flag.
const BPF_ANY: u64 = 0;
/// `BPF_NOEXIST` map update flag.
const BPF_NOEXIST: u64 = 1;

fn is_errno(e: &MapError, errno: i32) -> bool {
    matches!(e, MapError::SyscallError(s) if s.io_error.raw_os_error() == Some(errno))
}

/// Removing a key that is not there is not an error during teardown (a
/// socket leaves the sockhash by itself when it closes).
fn ignore_missing(r: Result<(), MapError>, name: &'static str) -> Result<(), EbpfError> {
    match r {
        Ok(()) | Err(MapError::KeyNotFound) => Ok(()),
        Err(e) if is_errno(&e, libc::ENOENT) => Ok(()),
        Err(e) => Err(EbpfError::map(name)(e)),
    }
}

/// Pins a cgroup link under its program's name, replacing the previous run's.
fn pin_link<L>(pins: &PinDir, name: &'static str, link: L) -> Result<(), EbpfError>
where
    FdLink: TryFrom<L, Error = aya::programs::links::LinkError>,
{
    let link = FdLink::try_from(link).map_err(|source| EbpfError::Link {
        name,
        source: Box::new(source),
    })?;
    let dest = pins.link(name);
    pins::pin_replacing(link, &dest).map_err(EbpfError::pin(&dest))
}

fn take_map(ebpf: &mut Ebpf, name: &'static str) -> Result<aya::maps::Map, EbpfError> {
    ebpf.take_map(name).ok_or(EbpfError::MissingMap { name })
}

fn program<'a, T>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut T, EbpfError>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = ProgramError>,
{
    let prog = ebpf
        .program_mut(name)
        .ok_or(EbpfError::MissingProgram { name })?;
    prog.try_into().map_err(EbpfError::program(name))
}
