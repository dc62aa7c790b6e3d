//! The docs tell the truth: every TOML block in README.md and docs/*.md
//! validates (a fragment with a default pool added), the configuration
//! reference names every key the parser reads, and every `sluice ctl`
//! command in the README's and docs' shell blocks parses.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use clap::Parser;

fn doc_files() -> Vec<(String, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = vec![root.join("README.md")];
    for entry in std::fs::read_dir(root.join("docs")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "md") {
            files.push(path);
        }
    }
    files
        .into_iter()
        .map(|p| (p.display().to_string(), std::fs::read_to_string(&p).unwrap()))
        .collect()
}

/// The fenced blocks of `lang` in `text`.
fn blocks(text: &str, lang: &str) -> Vec<String> {
    let open = format!("```{lang}");
    let mut out = Vec::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        match &mut current {
            None if line.trim() == open => current = Some(String::new()),
            Some(block) if line.trim() == "```" => {
                out.push(std::mem::take(block));
                current = None;
            }
            Some(block) => {
                block.push_str(line);
                block.push('\n');
            }
            None => {}
        }
    }
    out
}

#[test]
fn every_toml_example_in_the_docs_validates() {
    let mut checked = 0;
    for (file, text) in doc_files() {
        for block in blocks(&text, "toml") {
            let full = if block.contains("[pools.") {
                block.clone()
            } else {
                format!("{block}\n[pools.blue]\nversion = \"v1\"\nweight = 100\nbackends = [\"127.0.0.1:9001\"]\n")
            };
            if let Err(e) = sluice_config::Config::from_toml(&full) {
                panic!("{file}: a TOML example does not validate: {e}\n{block}");
            }
            checked += 1;
        }
    }
    assert!(checked >= 3, "only {checked} TOML examples found");
}

#[test]
fn the_configuration_reference_names_every_key() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let reference = std::fs::read_to_string(root.join("docs/configuration.md")).unwrap();
    let example = blocks(&reference, "toml").concat();
    let parser: String = [
        "parse.rs",
        "sections.rs",
        "pools.rs",
        "observe.rs",
        "policy.rs",
        "discovery.rs",
    ]
    .iter()
    .map(|f| std::fs::read_to_string(root.join("config/src").join(f)).unwrap())
    .collect();
    // String literals in the parser that are values, not keys.
    const VALUES: &[&str] = &[
        "http1",
        "http2",
        "h2c",
        "json",
        "slack",
        "viewer",
        "operator",
        "sluice",
        "hyper",
        "http",
        "grpc",
        "combined",
        "client_ip",
        "global",
        "_tcp",
        "_udp",
    ];
    let mut missing = Vec::new();
    for literal in parser.split('"').skip(1).step_by(2) {
        let is_key = !literal.is_empty() && literal.bytes().all(|b| b.is_ascii_lowercase() || b == b'_');
        if !is_key || VALUES.contains(&literal) {
            continue;
        }
        let named = example.contains(&format!("{literal} ="))
            || example.contains(&format!("# {literal} ="))
            || example.contains(&format!("[{literal}"))
            || example.contains(&format!(".{literal}]"))
            || example.contains(&format!(".{literal}."));
        if !named && !missing.contains(&literal) {
            missing.push(literal);
        }
    }
    assert!(missing.is_empty(), "docs/configuration.md does not show: {missing:?}");
}

/// `sluice ctl …` as the binary parses it.
#[derive(Parser)]
#[command(name = "sluice")]
enum Sluice {
    Ctl(sluice::ctl::CtlArgs),
}

/// The `sluice ctl` commands in shell code: continuations joined,
/// cut at comments, pipes and command substitutions.
fn ctl_commands(text: &str) -> Vec<String> {
    let mut commands = Vec::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let Some(start) = line.find("sluice ctl ") else {
            continue;
        };
        let mut command = line[start..].to_owned();
        while command.trim_end().ends_with('\\') {
            command = command.trim_end().trim_end_matches('\\').to_owned();
            command.push(' ');
            command.push_str(lines.next().unwrap_or_default().trim());
        }
        let end = command.find(['#', '|', ')', '`', ';']).unwrap_or(command.len());
        commands.push(command[..end].trim().to_owned());
    }
    commands
}

#[test]
fn every_ctl_command_in_the_docs_parses() {
    let mut checked = 0;
    for (file, text) in doc_files() {
        for command in ctl_commands(&blocks(&text, "sh").concat()) {
            let args: Vec<String> = command
                .split_whitespace()
                .map(|a| a.trim_matches(|c| c == '"' || c == '\'').to_owned())
                .collect();
            if let Err(e) = Sluice::try_parse_from(&args) {
                panic!("{file}: `{command}` does not parse:\n{e}");
            }
            checked += 1;
        }
    }
    assert!(checked >= 20, "only {checked} ctl commands found");
}
