//! Header operations (`headers.request` / `headers.response` of a
//! VirtualService, Gateway API header modifier filters), compiled once.

use http::header::{HeaderMap, HeaderName, HeaderValue};
use mesh_api::networking::HeaderOperations;

/// `set` replaces, `add` appends, `remove` deletes; applied in the order
/// remove, set, add (so a set header can also be added to).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HeaderOps {
    pub set: Vec<(HeaderName, HeaderValue)>,
    pub add: Vec<(HeaderName, HeaderValue)>,
    pub remove: Vec<HeaderName>,
}

/// A header name or value that cannot be put on the wire.
#[derive(Debug, thiserror::Error)]
#[error("header {name:?}: {why}")]
pub struct BadHeader {
    pub name: String,
    pub why: &'static str,
}

fn pair(name: &str, value: &str) -> Result<(HeaderName, HeaderValue), BadHeader> {
    let n = HeaderName::from_bytes(name.as_bytes()).map_err(|_| BadHeader {
        name: name.into(),
        why: "not a valid header name",
    })?;
    let v = HeaderValue::from_str(value).map_err(|_| BadHeader {
        name: name.into(),
        why: "not a valid header value",
    })?;
    Ok((n, v))
}

impl HeaderOps {
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.add.is_empty() && self.remove.is_empty()
    }

    /// From Istio's `HeaderOperations`.
    pub fn from_istio(ops: &HeaderOperations) -> Result<Self, BadHeader> {
        let mut out = HeaderOps::default();
        for (k, v) in &ops.set {
            out.set.push(pair(k, v)?);
        }
        for (k, v) in &ops.add {
            out.add.push(pair(k, v)?);
        }
        for k in &ops.remove {
            out.remove.push(pair(k, "")?.0);
        }
        Ok(out)
    }

    /// From lists of `(name, value)` and names (Gateway API modifiers).
    pub fn from_lists(
        set: &[(String, String)],
        add: &[(String, String)],
        remove: &[String],
    ) -> Result<Self, BadHeader> {
        let mut out = HeaderOps::default();
        for (k, v) in set {
            out.set.push(pair(k, v)?);
        }
        for (k, v) in add {
            out.add.push(pair(k, v)?);
        }
        for k in remove {
            out.remove.push(pair(k, "")?.0);
        }
        Ok(out)
    }

    /// This, then `other` (both lists kept).
    pub fn merged(&self, other: &HeaderOps) -> HeaderOps {
        let mut m = self.clone();
        m.set.extend(other.set.iter().cloned());
        m.add.extend(other.add.iter().cloned());
        m.remove.extend(other.remove.iter().cloned());
        m
    }

    pub fn apply(&self, h: &mut HeaderMap) {
        for n in &self.remove {
            h.remove(n);
        }
        for (n, v) in &self.set {
            h.insert(n.clone(), v.clone());
        }
        for (n, v) in &self.add {
            h.append(n.clone(), v.clone());
        }
    }
}

/// Request and response operations together.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HeaderRules {
    pub request: HeaderOps,
    pub response: HeaderOps,
}

impl HeaderRules {
    pub fn from_istio(h: Option<&mesh_api::networking::Headers>) -> Result<Self, BadHeader> {
        let Some(h) = h else {
            return Ok(Self::default());
        };
        Ok(HeaderRules {
            request: h
                .request
                .as_ref()
                .map(HeaderOps::from_istio)
                .transpose()?
                .unwrap_or_default(),
            response: h
                .response
                .as_ref()
                .map(HeaderOps::from_istio)
                .transpose()?
                .unwrap_or_default(),
        })
    }

    pub fn merged(&self, other: &HeaderRules) -> HeaderRules {
        HeaderRules {
            request: self.request.merged(&other.request),
            response: self.response.merged(&other.response),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remove_then_set_then_add() {
        let ops = HeaderOps::from_lists(
            &[("x-a".into(), "1".into())],
            &[("x-a".into(), "2".into()), ("x-b".into(), "3".into())],
            &["x-gone".into()],
        )
        .expect("valid");
        let mut h = HeaderMap::new();
        h.insert("x-a", HeaderValue::from_static("0"));
        h.insert("x-gone", HeaderValue::from_static("bye"));
        ops.apply(&mut h);
        let a: Vec<_> = h.get_all("x-a").iter().collect();
        assert_eq!(a, vec!["1", "2"]);
        assert_eq!(h.get("x-b").map(|v| v.as_bytes()), Some(&b"3"[..]));
        assert!(h.get("x-gone").is_none());
    }

    #[test]
    fn bad_header_name_is_refused() {
        assert!(HeaderOps::from_lists(&[("bad name".into(), "v".into())], &[], &[]).is_err());
    }
}
