//! The guides follow the lecture's slide, in both languages, and every
//! command and link in them holds.
//!
//! - The main guide (`docs/experimentos.md`, and its English twin
//!   `docs/experiments.md`) asks the slide's questions as its headings, in
//!   the slide's order, opens with a table that answers each of them and
//!   links to its section, and stays short enough to read: under 600 lines,
//!   the README under 250.
//! - Each English page has a Portuguese twin with the same sections (the
//!   same headings' levels, in the same order) and the same commands. The
//!   shell commands of a page are the lines of its ```sh blocks, in order:
//!   a `\` at the end of a line joins it to the next, a `#` that starts a
//!   word outside quotes starts a comment (so the comments may be in either
//!   language), and runs of spaces count as one.
//! - Every compose file, binary, example and script a command names exists,
//!   every relative link of every page leads to a file that exists (and to a
//!   heading of it, for a `#fragment`), and the README's test command is the
//!   one `.ci/run` runs.
//!
//! No process is started here: the commands themselves were run by hand
//! when the guides were written (the samples beside them are their output).

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

/// Each English page and its Portuguese twin.
const PAIRS: &[(&str, &str)] = &[
    ("docs/experiments.md", "docs/experimentos.md"),
    ("docs/running.md", "docs/rodando.md"),
    ("docs/resending.md", "docs/reenvio.md"),
    ("docs/live-page.md", "docs/pagina-ao-vivo.md"),
    ("docs/wire.md", "docs/na-rede.md"),
    ("docs/two-brokers.md", "docs/dois-brokers.md"),
    ("docs/beyond-one-machine.md", "docs/alem-de-uma-maquina.md"),
    ("docs/hostile-input.md", "docs/entradas-hostis.md"),
    ("docs/performance.md", "docs/desempenho.md"),
    ("docs/tests-and-layout.md", "docs/testes-e-organizacao.md"),
    ("docs/glossary.md", "docs/glossario.md"),
];

/// Every page: the README (English only: the front page) and the pairs.
fn pages() -> Vec<&'static str> {
    let mut pages = vec!["README.md"];
    pages.extend(PAIRS.iter().flat_map(|&(en, pt)| [en, pt]));
    pages
}

/// The slide's questions, in the slide's order, as the main guide's
/// headings: (Portuguese, English). The lecture's slide is in Portuguese:
/// "Request-reply" and `docker compose up`, the five "Alguns testes",
/// "Outras combinações de conexão" (the six pairs, then "Dealer: tipo
/// request, mas assíncrono; Router: tipo reply, mas assíncrono"), "Padrão
/// de balanceamento de carga", "Usando broker com docker", and the three
/// "Mais coisas para testar". "Rodízio contra balanceamento de carga" is the
/// guide's own experiment inside the load-balancing section.
const SLIDE: &[(&str, &str)] = &[
    (
        "## Request-reply: `docker compose up`",
        "## Request-reply: `docker compose up`",
    ),
    ("## Alguns testes", "## Some tests"),
    (
        "### E se inverter a ordem?",
        "### What if the order is reversed?",
    ),
    (
        "### E se o servidor cair e voltar?",
        "### What if the server dies and comes back?",
    ),
    (
        "### O que é o `b` antes da string?",
        "### What is the `b` before the string?",
    ),
    (
        "### E se aumentarmos a quantidade de réplicas do cliente?",
        "### What if we add client replicas?",
    ),
    (
        "### E se aumentarmos a quantidade de réplicas do servidor?",
        "### What if we add server replicas?",
    ),
    (
        "## Outras combinações de conexão",
        "## Other connection pairs",
    ),
    ("### REQ-REP", "### REQ-REP"),
    ("### DEALER-REP", "### DEALER-REP"),
    ("### REQ-ROUTER", "### REQ-ROUTER"),
    ("### DEALER-ROUTER", "### DEALER-ROUTER"),
    ("### DEALER-DEALER", "### DEALER-DEALER"),
    ("### ROUTER-ROUTER", "### ROUTER-ROUTER"),
    (
        "### DEALER: REQ assíncrono; ROUTER: REP assíncrono",
        "### DEALER: an asynchronous REQ; ROUTER: an asynchronous REP",
    ),
    (
        "## Padrão de balanceamento de carga",
        "## The load-balancing pattern",
    ),
    (
        "### Rodízio contra balanceamento de carga",
        "### Round robin versus load balancing",
    ),
    (
        "## Usando broker com docker",
        "## Using the broker with Docker",
    ),
    ("## Mais coisas para testar", "## More things to try"),
    (
        "### Por que os dois dependem do broker?",
        "### Why do both depend on the broker?",
    ),
    (
        "### E se aumentarmos a quantidade de réplicas do cliente? (com o broker)",
        "### What if we add client replicas? (with the broker)",
    ),
    (
        "### E se aumentarmos a quantidade de réplicas do servidor? (com o broker)",
        "### What if we add server replicas? (with the broker)",
    ),
];

/// The slide's headings that are themselves questions (the others group
/// them): each has its row in the guide's opening table.
fn questions(language: usize) -> Vec<&'static str> {
    const GROUPS: &[&str] = &[
        "## Alguns testes",
        "## Outras combinações de conexão",
        "## Mais coisas para testar",
        "### Rodízio contra balanceamento de carga",
    ];
    SLIDE
        .iter()
        .filter(|(pt, _)| !GROUPS.contains(pt))
        .map(|pair| if language == 0 { pair.0 } else { pair.1 })
        .collect()
}

/// Longest the main guide and the README may grow, in lines.
const GUIDE_MAX_LINES: usize = 600;
const README_MAX_LINES: usize = 250;

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
fn every_file_binary_example_and_script_a_command_names_exists() {
    let mut missing = Vec::new();
    for page in pages() {
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
            if let Some(script) = command
                .split_whitespace()
                .find(|w| w.starts_with("scripts/"))
            {
                wanted.push(root().join(script));
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

/// The headings of a page ("## Title"), outside fenced code blocks.
fn headings(markdown: &str) -> Vec<String> {
    let mut fenced = false;
    markdown
        .lines()
        .filter_map(|line| {
            if line.trim_start().starts_with("```") {
                fenced = !fenced;
                return None;
            }
            (!fenced && line.starts_with('#')).then(|| line.trim_end().to_string())
        })
        .collect()
}

/// The anchor GitHub gives a heading: its text in lower case, spaces made
/// hyphens, every character but letters, digits, `-` and `_` dropped.
fn anchor(heading: &str) -> String {
    heading
        .trim_start_matches('#')
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

/// Every anchor of a page, a repeated one with GitHub's `-1`, `-2`, ...
fn anchors(markdown: &str) -> Vec<String> {
    let mut seen: HashMap<String, usize> = HashMap::new();
    headings(markdown)
        .iter()
        .map(|heading| {
            let base = anchor(heading);
            let repeats = seen.entry(base.clone()).or_insert(0);
            let anchor = match *repeats {
                0 => base,
                n => format!("{base}-{n}"),
            };
            *repeats += 1;
            anchor
        })
        .collect()
}

/// The targets of a page's links and images (`[text](target)`), outside
/// fenced code blocks.
fn link_targets(markdown: &str) -> Vec<String> {
    let mut targets = Vec::new();
    let mut fenced = false;
    for line in markdown.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced {
            continue;
        }
        let mut rest = line;
        while let Some(at) = rest.find("](") {
            rest = &rest[at + 2..];
            if let Some(end) = rest.find(')') {
                targets.push(rest[..end].to_string());
                rest = &rest[end..];
            }
        }
    }
    targets
}

/// What is wrong with the order of the slide's questions in a main guide
/// (`language`: 0 Portuguese, 1 English); empty if nothing.
fn slide_order_problems(markdown: &str, language: usize) -> Vec<String> {
    let headings = headings(markdown);
    let mut problems = Vec::new();
    let mut previous: Option<(usize, &str)> = None;
    for pair in SLIDE {
        let wanted = if language == 0 { pair.0 } else { pair.1 };
        let found: Vec<usize> = headings
            .iter()
            .enumerate()
            .filter(|(_, heading)| heading.as_str() == wanted)
            .map(|(at, _)| at)
            .collect();
        match found[..] {
            [] => problems.push(format!("no heading `{wanted}`")),
            [at] => {
                if let Some((before, name)) = previous {
                    if at < before {
                        problems.push(format!("`{wanted}` comes before `{name}`"));
                    }
                }
                previous = Some((at, wanted));
            }
            _ => problems.push(format!("`{wanted}` is there {} times", found.len())),
        }
    }
    problems
}

/// What is wrong with the table that opens a main guide: one row per
/// slide question, in the slide's order, its last cell linking to the
/// question's section.
fn opening_table_problems(markdown: &str, language: usize) -> Vec<String> {
    let first_section = if language == 0 {
        SLIDE[0].0
    } else {
        SLIDE[0].1
    };
    let Some(end) = markdown.find(&format!("\n{first_section}\n")) else {
        return vec![format!("no heading `{first_section}`")];
    };
    let links: Vec<String> = markdown[..end]
        .lines()
        .filter(|line| line.starts_with('|'))
        .skip(2) // the header and its rule
        .map(|row| {
            let last = row
                .trim_end_matches('|')
                .rsplit('|')
                .next()
                .unwrap_or_default();
            last.split("](#")
                .nth(1)
                .and_then(|fragment| fragment.split(')').next())
                .unwrap_or("(no link)")
                .to_string()
        })
        .collect();
    let wanted: Vec<String> = questions(language).iter().map(|q| anchor(q)).collect();
    if links == wanted {
        Vec::new()
    } else {
        vec![format!(
            "the opening table's sections, row by row:\n  {}\nwanted, in the slide's order:\n  {}",
            links.join("\n  "),
            wanted.join("\n  ")
        )]
    }
}

#[test]
fn the_main_guides_ask_the_slides_questions_in_the_slides_order() {
    for (language, page) in [(0, "docs/experimentos.md"), (1, "docs/experiments.md")] {
        let markdown = read(page);
        let mut problems = slide_order_problems(&markdown, language);
        problems.extend(opening_table_problems(&markdown, language));
        assert!(problems.is_empty(), "{page}:\n{}", problems.join("\n"));
    }
}

#[test]
fn the_order_checks_catch_a_guide_out_of_order() {
    let guide = read("docs/experimentos.md");
    // Two questions swapped: the server's fall before the reversed order.
    let swapped = guide
        .replace("### E se inverter a ordem?", "### PLACEHOLDER")
        .replace(
            "### E se o servidor cair e voltar?",
            "### E se inverter a ordem?",
        )
        .replace("### PLACEHOLDER", "### E se o servidor cair e voltar?");
    assert!(!slide_order_problems(&swapped, 0).is_empty());
    // A question gone, and a question twice.
    let gone = guide.replace("### DEALER-DEALER\n", "### DEALER e DEALER\n");
    assert!(!slide_order_problems(&gone, 0).is_empty());
    let twice = guide.replace("### DEALER-DEALER\n", "### REQ-REP\n");
    assert!(!slide_order_problems(&twice, 0).is_empty());
    // Two rows of the opening table swapped.
    let rows: Vec<&str> = guide
        .lines()
        .filter(|l| l.starts_with("| REQ-REP |") || l.starts_with("| DEALER-REP |"))
        .collect();
    assert_eq!(rows.len(), 2, "the table's REQ-REP and DEALER-REP rows");
    let table_swapped = guide
        .replacen(rows[0], "PLACEHOLDER", 1)
        .replacen(rows[1], rows[0], 1)
        .replacen("PLACEHOLDER", rows[1], 1);
    assert!(!opening_table_problems(&table_swapped, 0).is_empty());
    // The real guide passes both.
    assert!(slide_order_problems(&guide, 0).is_empty());
    assert!(opening_table_problems(&guide, 0).is_empty());
}

#[test]
fn the_main_guide_and_the_readme_stay_short() {
    for (page, max) in [
        ("docs/experimentos.md", GUIDE_MAX_LINES),
        ("docs/experiments.md", GUIDE_MAX_LINES),
        ("README.md", README_MAX_LINES),
    ] {
        let lines = read(page).lines().count();
        assert!(lines < max, "{page} has {lines} lines, {max} at most");
    }
}

#[test]
fn both_languages_have_the_same_sections() {
    let mut differences = Vec::new();
    for (english, portuguese) in PAIRS {
        let levels = |page: &str| -> Vec<usize> {
            headings(&read(page))
                .iter()
                .map(|heading| heading.chars().take_while(|&c| c == '#').count())
                .collect()
        };
        let (en, pt) = (levels(english), levels(portuguese));
        if en != pt {
            differences.push(format!(
                "{english} ({} headings) and {portuguese} ({} headings) differ: {en:?} / {pt:?}",
                en.len(),
                pt.len()
            ));
        }
    }
    assert!(differences.is_empty(), "{}", differences.join("\n"));
}

#[test]
fn every_relative_link_leads_to_a_page_and_a_heading_that_exist() {
    let mut broken = Vec::new();
    for page in pages() {
        let dir = root().join(page).parent().unwrap().to_path_buf();
        for target in link_targets(&read(page)) {
            if target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            let (file, fragment) = match target.split_once('#') {
                Some((file, fragment)) => (file, Some(fragment)),
                None => (target.as_str(), None),
            };
            let path = if file.is_empty() {
                root().join(page)
            } else {
                dir.join(file)
            };
            if !path.exists() {
                broken.push(format!("{page}: ({target}): no file {}", path.display()));
                continue;
            }
            if let Some(fragment) = fragment {
                let markdown = fs::read_to_string(&path).unwrap_or_default();
                if !anchors(&markdown).iter().any(|anchor| anchor == fragment) {
                    broken.push(format!(
                        "{page}: ({target}): no heading #{fragment} in {}",
                        path.display()
                    ));
                }
            }
        }
    }
    assert!(broken.is_empty(), "{}", broken.join("\n"));
}

#[test]
fn anchors_are_githubs() {
    assert_eq!(
        anchor("## Request-reply: `docker compose up`"),
        "request-reply-docker-compose-up"
    );
    assert_eq!(
        anchor("### E se aumentarmos a quantidade de réplicas do cliente? (com o broker)"),
        "e-se-aumentarmos-a-quantidade-de-réplicas-do-cliente-com-o-broker"
    );
    assert_eq!(
        anchor("## The course's compose file"),
        "the-courses-compose-file"
    );
    assert_eq!(
        anchors("# A\n## B\n```sh\n# not a heading\n```\n## B\n"),
        ["a", "b", "b-1"]
    );
}
