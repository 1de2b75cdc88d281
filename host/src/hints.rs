//! "Did you mean": family names are case-sensitive in the kernel (`IOAM6`,
//! `TASKSTATS`, `SEG6` beside `netdev`), so a near miss gets the right
//! spelling named instead of a bare "unknown".

/// The candidate that `name` most likely meant: equal ignoring ASCII case
/// and `-`/`_`, and not `name` itself.
pub fn did_you_mean<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let norm = |s: &str| s.to_ascii_lowercase().replace('-', "_");
    let wanted = norm(name);
    candidates.into_iter().find(|c| *c != name && norm(c) == wanted)
}

/// `; did you mean 'X'?`, or nothing.
pub fn suffix(hint: Option<&str>) -> String {
    hint.map(|h| format!("; did you mean '{h}'?")).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn case_and_separator_insensitive_but_never_itself() {
        let names = ["IOAM6", "tcp_metrics", "netdev"];
        assert_eq!(did_you_mean("ioam6", names), Some("IOAM6"));
        assert_eq!(did_you_mean("tcp-metrics", names), Some("tcp_metrics"));
        assert_eq!(did_you_mean("IOAM6", names), None);
        assert_eq!(did_you_mean("wireguard", names), None);
    }
}
