//! Tests of the command line: where the listen address comes from, and that every command the
//! documentation shows is one the parser accepts.

use std::path::Path;

use super::*;

#[test]
fn listen_address_sources_and_errors() {
    let addr = |s: &str| s.parse::<SocketAddr>().unwrap();
    assert_eq!(listen_address(None, None, None), Ok(addr("127.0.0.1:3000")));
    assert_eq!(
        listen_address(Some("[::1]:1"), Some("0.0.0.0:2"), Some("0.0.0.0:3")),
        Ok(addr("[::1]:1"))
    );
    assert_eq!(
        listen_address(None, Some("0.0.0.0:2"), Some("bad")),
        Ok(addr("0.0.0.0:2"))
    );
    assert_eq!(
        listen_address(None, None, Some("0.0.0.0:3")),
        Ok(addr("0.0.0.0:3"))
    );
    let err = listen_address(None, None, Some("localhost:3000")).unwrap_err();
    assert!(
        err.starts_with("environment variable `BIND_ADDRESS`: must be `ip:port`")
            && err.contains("\"localhost:3000\""),
        "{err}"
    );
    let err = listen_address(Some("3000"), None, None).unwrap_err();
    assert!(
        err.starts_with("option `--bind`: must be `ip:port`"),
        "{err}"
    );
}

/// Splits a shell command line into words, honouring '…' and "…" quoting (enough for the
/// documented commands, which use no escapes). Stops at a comment, `&`, `|`, `;` or a
/// redirection: what follows is not the command's arguments.
fn shell_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut quote = None;
    for c in line.chars() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => word.push(c),
            None if c == '\'' || c == '"' => {
                quote = Some(c);
                in_word = true;
            }
            None if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            None if !in_word && matches!(c, '#' | '&' | '|' | ';' | '>' | '<') => break,
            None => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(word);
    }
    // A command substitution's output is unknown here; the only one documented prints a pid
    // (`pgrep`), so a number stands in for it.
    for w in &mut words {
        if w.starts_with("$(") && w.ends_with(')') {
            *w = "1".to_string();
        }
    }
    words
}

fn is_env_assignment(word: &str) -> bool {
    word.split_once('=').is_some_and(|(name, _)| {
        !name.is_empty() && name.bytes().all(|b| b.is_ascii_uppercase() || b == b'_')
    })
}

/// The binary as the docs name it: `berry`, a path to it, or `$B` (set to one).
fn is_berry(word: &str) -> bool {
    word == "berry" || word.ends_with("/berry") || word == "$B"
}

/// The arguments after the binary, if `words` (leading `VAR=value`s allowed) runs Berry:
/// directly, or through `cargo run … -- args`.
fn berry_args(words: &[String]) -> Option<Vec<String>> {
    let start = words.iter().position(|w| !is_env_assignment(w))?;
    let words = &words[start..];
    if is_berry(words.first()?) {
        return Some(words[1..].to_vec());
    }
    if words.len() > 1 && words[0] == "cargo" && words[1] == "run" {
        let sep = words.iter().position(|w| w == "--")?;
        return Some(words[sep + 1..].to_vec());
    }
    None
}

/// Commands in a Markdown file: lines of shell code blocks, and inline spans such as
/// `berry serve --workers 2`. Output blocks (no shell language tag) are not commands.
fn markdown_commands(text: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let mut fence: Option<bool> = None;
    for line in text.lines() {
        if let Some(tag) = line.trim_start().strip_prefix("```") {
            fence = match fence {
                Some(_) => None,
                None => Some(matches!(tag.trim(), "sh" | "bash" | "shell" | "console")),
            };
            continue;
        }
        match fence {
            Some(true) => out.extend(berry_args(&shell_words(line))),
            Some(false) => {}
            None => {
                for (i, span) in line.split('`').enumerate() {
                    if i % 2 == 1 && span.starts_with("berry ") {
                        out.extend(berry_args(&shell_words(span)));
                    }
                }
            }
        }
    }
    out
}

/// Commands in a TOML file's comments: `VAR=value berry …` or `berry <subcommand> …`, anywhere
/// in a comment (such as "Start with:  CONFIG_PATH=x.toml berry serve").
fn toml_commands(text: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for line in text.lines() {
        let Some((_, comment)) = line.split_once('#') else {
            continue;
        };
        let words = shell_words(&comment.replace('#', " "));
        for (i, w) in words.iter().enumerate() {
            let after_env = i > 0 && is_env_assignment(&words[i - 1]);
            let first_env = (0..i)
                .rev()
                .take_while(|&j| is_env_assignment(&words[j]))
                .last();
            if is_berry(w) && after_env {
                out.extend(berry_args(&words[first_env.unwrap_or(i)..]));
            }
        }
    }
    out
}

fn files_with(dir: &Path, ext: &str) -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == ext))
        .collect();
    files.sort();
    files
}

#[test]
fn shell_words_and_berry_args() {
    let words = shell_words(
        r#"CONFIG_PATH=c.toml $B loadtest --target-pid "$(pgrep -f 'berry serve')" --rate 2 # x"#,
    );
    assert_eq!(
        berry_args(&words),
        Some(
            ["loadtest", "--target-pid", "1", "--rate", "2"]
                .map(String::from)
                .to_vec()
        )
    );
    let words = shell_words("cargo run --release -- demo     # prints curl lines");
    assert_eq!(berry_args(&words), Some(vec!["demo".to_string()]));
    assert_eq!(berry_args(&shell_words("cargo run --example x")), None);
    assert_eq!(
        berry_args(&shell_words("$B mock --bind 1 &")).map(|a| a.len()),
        Some(3)
    );
    let found = toml_commands("# Start with:  CONFIG_PATH=config/x.toml berry\nkey = 1\n");
    assert_eq!(found, vec![Vec::<String>::new()]);
}

/// Every Berry command in README.md, docs/, loadtest/README.md and the config/ examples'
/// comments must parse: a missing subcommand or a renamed flag in the docs fails here.
#[test]
fn documented_commands_parse() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = vec![root.join("README.md"), root.join("loadtest/README.md")];
    files.extend(files_with(&root.join("docs"), "md"));
    files.extend(files_with(&root.join("config"), "toml"));
    let mut checked = 0;
    for file in &files {
        let text = std::fs::read_to_string(file).expect("readable doc");
        let commands = if file.extension().is_some_and(|x| x == "md") {
            markdown_commands(&text)
        } else {
            toml_commands(&text)
        };
        for args in commands {
            let argv = std::iter::once("berry".to_string()).chain(args.iter().cloned());
            if let Err(e) = Cli::try_parse_from(argv) {
                assert!(
                    e.kind() == clap::error::ErrorKind::DisplayHelp,
                    "{}: `berry {}` does not parse:\n{e}",
                    file.display(),
                    args.join(" ")
                );
            }
            checked += 1;
        }
    }
    // Guards the scanner itself: the docs show a few dozen commands.
    assert!(checked >= 20, "only {checked} documented commands found");
}

/// `berry <subcommand> --help` must say what each option does.
#[test]
fn every_option_has_help() {
    use clap::CommandFactory;
    let cli = Cli::command();
    let mut seen = 0;
    for sub in cli.get_subcommands() {
        for arg in sub.get_arguments() {
            let id = arg.get_id().as_str();
            // clap's own `--help`/`--version` carry their text.
            if id == "help" || id == "version" {
                continue;
            }
            assert!(
                arg.get_help()
                    .is_some_and(|h| !h.to_string().trim().is_empty()),
                "`berry {} --{id}` has no help text",
                sub.get_name()
            );
            seen += 1;
        }
    }
    assert!(seen > 20, "only {seen} options seen");
}

#[test]
fn summary_counts_in_singular_and_plural() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let minimal = config::load_file(&root.join("config/minimal.toml")).unwrap();
    assert_eq!(summary(&minimal), "1 provider, 1 model, 1 user");
    let example = config::load_file(&root.join("config/berry.example.toml")).unwrap();
    assert_eq!(summary(&example), "3 providers, 3 models, 2 users");
}

/// The image must leave logging to the config: `RUST_LOG` wins over `log_level`, so setting it
/// in the Dockerfile would silently ignore an operator's `log_level`.
#[test]
fn dockerfile_does_not_override_log_level() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(root.join("Dockerfile")).expect("Dockerfile");
    let settings: Vec<&str> = text
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .collect();
    assert!(
        settings.iter().any(|l| l.contains("BIND_ADDRESS=")),
        "the scan sees the ENV lines"
    );
    assert!(!settings.iter().any(|l| l.contains("RUST_LOG")));
}
