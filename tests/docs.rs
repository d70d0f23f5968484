//! The guides in English and in Portuguese teach the same experiments with
//! the same commands.
//!
//! Each English page has a Portuguese twin. The shell commands of a page are
//! the lines of its ```sh blocks, in order: a `\` at the end of a line joins
//! it to the next, a `#` that starts a word outside quotes starts a comment
//! (so the comments may be in either language), and runs of spaces count as
//! one. The two pages of a pair must list the same commands, in the same
//! order. Besides, every compose file, binary and example a command names
//! must exist, and the README's test command must be the one `.ci/run` runs.
//!
//! No process is started here: the commands themselves were run by hand
//! when the guides were written (the samples beside them are their output).

use std::fs;
use std::path::{Path, PathBuf};

/// Each English page and its Portuguese twin.
const PAIRS: &[(&str, &str)] = &[
    ("README.md", "docs/experimentos.md"),
    ("docs/beyond-one-machine.md", "docs/alem-de-uma-maquina.md"),
];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(page: &str) -> String {
    fs::read_to_string(root().join(page)).unwrap_or_else(|e| panic!("reading {page}: {e}"))
}

/// The shell commands of a Markdown page: its ```sh blocks, line by line,
/// with comments removed, continuation lines joined and blanks normalised.
fn commands(markdown: &str) -> Vec<String> {
    let mut commands = Vec::new();
    let mut in_sh = false;
    let mut pending = String::new();
    for line in markdown.lines() {
        let trimmed = line.trim();
        if !in_sh {
            in_sh = trimmed == "```sh";
            continue;
        }
        if trimmed == "```" {
            in_sh = false;
            assert!(
                pending.is_empty(),
                "a ```sh block ends on a `\\`: {pending}"
            );
            continue;
        }
        let code = without_comment(line);
        let (code, continued) = match code.trim_end().strip_suffix('\\') {
            Some(head) => (head.to_string(), true),
            None => (code, false),
        };
        pending.push(' ');
        pending.push_str(&code);
        if !continued {
            let command = pending.split_whitespace().collect::<Vec<_>>().join(" ");
            if !command.is_empty() {
                commands.push(command);
            }
            pending.clear();
        }
    }
    assert!(!in_sh, "a ```sh block is never closed");
    commands
}

/// A shell line up to its comment: a `#` at the start of a word, outside
/// single and double quotes (`'tcp://*:5555'` and `$#` are no comments).
fn without_comment(line: &str) -> String {
    let mut quote: Option<char> = None;
    let mut previous = ' ';
    for (at, c) in line.char_indices() {
        match quote {
            Some(open) if c == open => quote = None,
            Some(_) => {}
            None if c == '\'' || c == '"' => quote = Some(c),
            None if c == '#' && previous.is_whitespace() => return line[..at].to_string(),
            None => {}
        }
        previous = c;
    }
    line.to_string()
}

#[test]
fn comments_and_blanks_are_not_part_of_a_command() {
    let page = "text\n```sh\n  cargo run --bin broker   # o broker\n\
                docker compose -f a.yml \\\n   up -d    # two lines\n\
                echo '#not a comment' \"# nor this\"\n\n# a comment line\n```\n\
                ```text\nnot a command\n```\n";
    assert_eq!(
        commands(page),
        [
            "cargo run --bin broker",
            "docker compose -f a.yml up -d",
            "echo '#not a comment' \"# nor this\"",
        ]
    );
}

#[test]
fn both_languages_list_the_same_commands() {
    let mut differences = Vec::new();
    for (english, portuguese) in PAIRS {
        let en = commands(&read(english));
        let pt = commands(&read(portuguese));
        assert!(!en.is_empty(), "{english} has no ```sh block");
        if en == pt {
            continue;
        }
        let first = en.iter().zip(&pt).position(|(a, b)| a != b);
        let at = first.unwrap_or(en.len().min(pt.len()));
        differences.push(format!(
            "{english} ({} commands) and {portuguese} ({} commands) differ at command {}:\n  \
             {english}: {}\n  {portuguese}: {}",
            en.len(),
            pt.len(),
            at + 1,
            en.get(at).map_or("(none)", String::as_str),
            pt.get(at).map_or("(none)", String::as_str),
        ));
    }
    assert!(differences.is_empty(), "{}", differences.join("\n"));
}

/// The word after `flag` in a command, each time it appears.
fn after<'a>(command: &'a str, flag: &str) -> Vec<&'a str> {
    let words: Vec<&str> = command.split_whitespace().collect();
    words
        .windows(2)
        .filter(|pair| pair[0] == flag)
        .map(|pair| pair[1])
        .collect()
}

#[test]
fn every_file_binary_and_example_a_command_names_exists() {
    let mut missing = Vec::new();
    for page in PAIRS.iter().flat_map(|(en, pt)| [en, pt]) {
        for command in commands(&read(page)) {
            let mut wanted: Vec<PathBuf> = Vec::new();
            if command.contains("docker compose") || command.contains("docker stack") {
                // `-f` also follows logs (`logs -f client`): only files count.
                let files = after(&command, "-f")
                    .into_iter()
                    .chain(after(&command, "-c"));
                for file in files.filter(|word| word.ends_with(".yml") || word.ends_with(".yaml")) {
                    wanted.push(root().join(file));
                }
            }
            if command.contains("cargo ") {
                for bin in after(&command, "--bin") {
                    wanted.push(root().join("src/bin").join(format!("{bin}.rs")));
                }
                for example in after(&command, "--example") {
                    wanted.push(root().join("examples").join(format!("{example}.rs")));
                }
                for config in after(&command, "--config") {
                    wanted.push(root().join(config));
                }
            }
            for path in wanted {
                if !Path::new(&path).exists() {
                    missing.push(format!("{page}: `{command}` names {}", path.display()));
                }
            }
        }
    }
    assert!(missing.is_empty(), "{}", missing.join("\n"));
}

#[test]
fn the_readme_opens_with_the_exercise_and_the_tests_and_ci_runs_the_same_tests() {
    let readme = commands(&read("README.md"));
    assert_eq!(
        readme.get(..2),
        Some(
            &[
                "docker compose -f docker-compose.reqrep.yml up".to_string(),
                "cargo test".to_string()
            ][..]
        ),
        "the README's first two commands"
    );
    let ci = read(".ci/run");
    assert!(
        ci.lines().any(|line| line.trim() == readme[1]),
        ".ci/run never runs `{}` on a line of its own",
        readme[1]
    );
}
