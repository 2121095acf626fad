//! Traffic mirroring (`mirror` + `mirrorPercentage`, `mirrors`, Gateway
//! API `RequestMirror`): a copy of the request goes, fire-and-forget, to
//! another destination; the caller only ever sees the primary's answer.
//! As Envoy does, the copy's authority gets a `-shadow` suffix on its host.

use http::uri::Authority;
use rand::Rng;

use crate::destination::DestinationRef;

#[derive(Clone, Debug, PartialEq)]
pub struct MirrorPolicy {
    pub destination: DestinationRef,
    /// 0–100.
    pub percent: f64,
}

impl MirrorPolicy {
    /// Whether this request is mirrored.
    pub fn sample(&self, rng: &mut impl Rng) -> bool {
        self.percent >= 100.0 || (self.percent > 0.0 && rng.gen::<f64>() * 100.0 < self.percent)
    }
}

/// `host[:port]` → `host-shadow[:port]`.
pub fn shadow_authority(authority: &str) -> String {
    match authority.parse::<Authority>() {
        Ok(a) => match a.port_u16() {
            Some(p) => format!("{}-shadow:{p}", a.host()),
            None => format!("{}-shadow", a.host()),
        },
        Err(_) => format!("{authority}-shadow"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shadow_host() {
        assert_eq!(shadow_authority("reviews"), "reviews-shadow");
        assert_eq!(shadow_authority("reviews:9080"), "reviews-shadow:9080");
        let never = MirrorPolicy {
            destination: DestinationRef::host("x"),
            percent: 0.0,
        };
        let always = MirrorPolicy {
            destination: DestinationRef::host("x"),
            percent: 100.0,
        };
        let mut rng = rand::thread_rng();
        assert!((0..100).all(|_| !never.sample(&mut rng) && always.sample(&mut rng)));
    }
}
