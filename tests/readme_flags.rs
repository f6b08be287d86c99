//! The README's flag table and `mcp-proxy --help` name the same flags: a
//! flag added without a row, or a row left behind by a removed flag, fails.

use std::collections::BTreeSet;
use std::process::Command;

/// Flags named in the first column of the table under `## Flags`.
fn readme_flags() -> BTreeSet<String> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    let section = readme
        .split("\n## Flags\n")
        .nth(1)
        .expect("a '## Flags' section")
        .split("\n## ")
        .next()
        .unwrap();
    let mut flags = BTreeSet::new();
    for row in section.lines().filter(|l| l.starts_with("| `--")) {
        let first = row.split('|').nth(1).unwrap();
        for part in first.split('`').skip(1).step_by(2) {
            let flag = part.split_whitespace().next().unwrap();
            assert!(flag.starts_with("--"), "odd flag cell {first:?}");
            flags.insert(flag.to_string());
        }
    }
    flags
}

/// Flags `mcp-proxy --help` lists (without `--help` itself).
fn help_flags() -> BTreeSet<String> {
    let out = Command::new(env!("CARGO_BIN_EXE_mcp-proxy"))
        .arg("--help")
        .output()
        .expect("run mcp-proxy --help");
    let text = String::from_utf8_lossy(&out.stdout);
    text.split("\nOptions:\n")
        .nth(1)
        .expect("an Options section in --help")
        .lines()
        .filter_map(|l| l.strip_prefix("  --"))
        .map(|l| format!("--{}", l.split([' ', ',']).next().unwrap()))
        .filter(|f| f != "--help")
        .collect()
}

#[test]
fn readme_flag_table_matches_help() {
    let readme = readme_flags();
    let help = help_flags();
    assert!(help.len() > 20, "parsed --help: {help:?}");
    let missing: Vec<_> = help.difference(&readme).collect();
    let stale: Vec<_> = readme.difference(&help).collect();
    assert!(
        missing.is_empty() && stale.is_empty(),
        "README flag table out of date: missing rows for {missing:?}, rows for unknown flags {stale:?}"
    );
}
