//! The series cache: the metric series of the last few label sets of one
//! caller, so that recording a request on a keep-alive connection is a
//! few atomic adds instead of hashing its labels into each family.

use std::sync::{Arc, Mutex};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::Histogram;

use crate::discovery::WorkloadInfo;

/// The four series of one label set, resolved: recording into them is a
/// few atomic adds, where `Family::get_or_create` hashes ~20 labels per
/// family and building the labels allocates.
#[derive(Clone)]
pub(super) struct Series {
    pub(super) requests: Counter,
    pub(super) duration: Histogram,
    pub(super) request_bytes: Histogram,
    pub(super) response_bytes: Histogram,
}

/// What decides a request's labels besides its caller (the
/// [`SourceInfo`] that holds the cache), and which registry they are in.
pub(super) struct SeriesKey {
    pub(super) telemetry: usize,
    pub(super) destination_workload: Option<Arc<WorkloadInfo>>,
    pub(super) destination_service: Option<String>,
    pub(super) destination_app: Option<String>,
    pub(super) destination_version: Option<String>,
    pub(super) grpc: bool,
    pub(super) grpc_status: Option<String>,
    pub(super) code: u16,
    pub(super) flag: Option<&'static str>,
    pub(super) delayed: bool,
}

/// [`SeriesKey`] borrowed from one request, compared without allocating.
pub(super) struct SeriesKeyRef<'a> {
    pub(super) telemetry: usize,
    pub(super) destination_workload: Option<&'a Arc<WorkloadInfo>>,
    pub(super) destination_service: Option<&'a str>,
    pub(super) destination_app: Option<&'a str>,
    pub(super) destination_version: Option<&'a str>,
    pub(super) grpc: bool,
    pub(super) grpc_status: Option<&'a str>,
    pub(super) code: u16,
    pub(super) flag: Option<&'static str>,
    pub(super) delayed: bool,
}

impl SeriesKeyRef<'_> {
    pub(super) fn matches(&self, k: &SeriesKey) -> bool {
        let same_workload = match (self.destination_workload, &k.destination_workload) {
            (None, None) => true,
            (Some(a), Some(b)) => Arc::ptr_eq(a, b) || **a == **b,
            _ => false,
        };
        self.telemetry == k.telemetry
            && self.code == k.code
            && self.grpc == k.grpc
            && self.flag == k.flag
            && self.delayed == k.delayed
            && same_workload
            && self.destination_service == k.destination_service.as_deref()
            && self.destination_app == k.destination_app.as_deref()
            && self.destination_version == k.destination_version.as_deref()
            && self.grpc_status == k.grpc_status.as_deref()
    }

    pub(super) fn to_owned(&self) -> SeriesKey {
        SeriesKey {
            telemetry: self.telemetry,
            destination_workload: self.destination_workload.cloned(),
            destination_service: self.destination_service.map(str::to_string),
            destination_app: self.destination_app.map(str::to_string),
            destination_version: self.destination_version.map(str::to_string),
            grpc: self.grpc,
            grpc_status: self.grpc_status.map(str::to_string),
            code: self.code,
            flag: self.flag,
            delayed: self.delayed,
        }
    }
}

/// The last few label sets of one caller (one downstream connection): a
/// keep-alive connection's requests mostly share theirs.
#[derive(Default)]
pub(super) struct SeriesCache(Mutex<Vec<(SeriesKey, Series)>>);

const SERIES_CACHED: usize = 4;

impl SeriesCache {
    pub(super) fn get(&self, k: &SeriesKeyRef<'_>) -> Option<Series> {
        let v = self.0.lock().unwrap_or_else(|e| e.into_inner());
        v.iter()
            .find(|(key, _)| k.matches(key))
            .map(|(_, s)| s.clone())
    }

    pub(super) fn put(&self, k: SeriesKey, s: Series) {
        let mut v = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if v.len() >= SERIES_CACHED {
            v.remove(0);
        }
        v.push((k, s));
    }
}

impl Clone for SeriesCache {
    /// A copy starts empty (a copy may change its labels, see
    /// [`SourceInfo::with_principal`]).
    fn clone(&self) -> Self {
        SeriesCache::default()
    }
}

impl std::fmt::Debug for SeriesCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SeriesCache")
    }
}
