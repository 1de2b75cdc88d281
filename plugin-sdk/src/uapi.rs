//! The kernel's UAPI headers, read at test time: the independent source
//! plugin tests take command and attribute numbers from, so a plugin's own
//! tables (or spec) never check themselves. Native builds only.

/// The text of `linux/NAME`: from the kernel source scripts/setup.sh
/// extracts (`GENL_ORACLE_DIR`, default
/// /usr/local/share/genl-gateway/linux-source-6.12), else the installed
/// headers (linux-libc-dev), else one of /usr/src's kernel headers. A
/// missing header panics: tests must fail, not skip, without their oracle.
pub fn header(name: &str) -> String {
    let oracle = std::env::var("GENL_ORACLE_DIR")
        .unwrap_or_else(|_| "/usr/local/share/genl-gateway/linux-source-6.12".into());
    let mut candidates = vec![
        std::path::Path::new(&oracle)
            .join("include/uapi/linux")
            .join(name),
        std::path::PathBuf::from("/usr/include/linux").join(name),
    ];
    if let Ok(dir) = std::fs::read_dir("/usr/src") {
        for e in dir.flatten() {
            candidates.push(e.path().join("include/uapi/linux").join(name));
        }
    }
    candidates
        .iter()
        .find_map(|p| std::fs::read_to_string(p).ok())
        .unwrap_or_else(|| panic!("no linux/{name} in {candidates:?}: run scripts/setup.sh"))
}

/// A member's `= value`: decimal, `0x` hex or `1 << N`; `None` for an
/// expression (in UAPI headers, only the `*_MAX = __*_CNT - 1` ones).
fn number(v: &str) -> Option<i64> {
    let v = v.trim().trim_start_matches('(').trim_end_matches(')').trim();
    if let Some(shift) = v.strip_prefix("1 <<").or_else(|| v.strip_prefix("1<<")) {
        return shift.trim().parse::<u32>().ok().and_then(|s| 1i64.checked_shl(s));
    }
    match v.strip_prefix("0x") {
        Some(h) => i64::from_str_radix(h, 16).ok(),
        None => v.parse().ok(),
    }
}

/// The numbered members of every `enum { ... }` in C header text, in order
/// (a member whose value is an expression ends its enum's numbering).
pub fn enums(text: &str) -> Vec<Vec<(String, i64)>> {
    let mut clean = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("/*") {
        clean.push_str(&rest[..start]);
        rest = rest[start..]
            .find("*/")
            .map_or("", |end| &rest[start + end + 2..]);
    }
    clean.push_str(rest);
    let mut out = Vec::new();
    let mut rest = clean.as_str();
    while let Some(at) = rest.find("enum") {
        rest = &rest[at + 4..];
        let (Some(open), Some(close)) = (rest.find('{'), rest.find('}')) else {
            break;
        };
        if open > close || rest[..open].contains(';') {
            continue;
        }
        let mut members = Vec::new();
        let mut next = 0i64;
        for entry in rest[open + 1..close]
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
        {
            let (name, value) = match entry.split_once('=') {
                Some((n, v)) => match number(v) {
                    Some(v) => (n.trim(), v),
                    None => break,
                },
                None => (entry, next),
            };
            members.push((name.to_owned(), value));
            next = value + 1;
        }
        out.push(members);
        rest = &rest[close..];
    }
    out
}

/// Every member of every enum in `linux/HEADER`, in order.
pub fn members(header_name: &str) -> Vec<(String, i64)> {
    enums(&header(header_name)).into_iter().flatten().collect()
}

/// The value of enum member `member` in `linux/HEADER`; panics if absent.
pub fn value(header_name: &str, member: &str) -> i64 {
    members(header_name)
        .into_iter()
        .find(|(n, _)| n == member)
        .map(|(_, v)| v)
        .unwrap_or_else(|| panic!("{member} not in linux/{header_name}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_values_and_expressions() {
        let text = "/* x */ enum a { A_NONE, A_ONE, A_FIVE = 5, A_SIX, /* c */ __A_CNT, A_MAX = __A_CNT - 1 };\n\
                    struct s; enum b { B_BIT = (1 << 3), B_HEX = 0x10 };";
        assert_eq!(
            enums(text),
            vec![
                vec![
                    ("A_NONE".into(), 0),
                    ("A_ONE".into(), 1),
                    ("A_FIVE".into(), 5),
                    ("A_SIX".into(), 6),
                    ("__A_CNT".into(), 7)
                ],
                vec![("B_BIT".into(), 8), ("B_HEX".into(), 16)],
            ]
        );
    }
}
