//! The request path as RBAC sees it.

/// The path as Istio's default normalization (`BASE`) presents it to
/// RBAC: backslashes as `/`, percent-encoded unreserved characters decoded, dot
/// segments removed. Without it `/public/../admin` would slip past a DENY
/// on `/admin*`.
pub fn normalized_path(path: &str) -> String {
    let mut decoded = String::with_capacity(path.len());
    let mut rest = path;
    while let Some(c) = rest.chars().next() {
        let escape = rest
            .get(1..3)
            .filter(|h| c == '%' && h.bytes().all(|b| b.is_ascii_hexdigit()));
        if let Some(hex) = escape {
            match u8::from_str_radix(hex, 16) {
                Ok(v) if v.is_ascii_alphanumeric() || b"-._~".contains(&v) => {
                    decoded.push(v as char)
                }
                _ => {
                    decoded.push('%');
                    decoded.push_str(&hex.to_ascii_uppercase());
                }
            }
            rest = &rest[3..];
            continue;
        }
        decoded.push(if c == '\\' { '/' } else { c });
        rest = &rest[c.len_utf8()..];
    }
    if !decoded.starts_with('/') {
        return decoded;
    }
    let mut out: Vec<&str> = Vec::new();
    let segments: Vec<&str> = decoded.split('/').skip(1).collect();
    let last = segments.len().saturating_sub(1);
    for (n, seg) in segments.iter().enumerate() {
        match *seg {
            "." => {}
            ".." => {
                out.pop();
            }
            s => out.push(s),
        }
        // `/a/..` and `/a/.` end in a directory.
        if n == last && (*seg == "." || *seg == "..") {
            out.push("");
        }
    }
    format!("/{}", out.join("/"))
}
