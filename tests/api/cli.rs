//! The `gateway` command line: every command's help says what it does and what it reads.

use std::process::Command;

/// `gateway <args>` (no database, no configuration needed for help).
fn help(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_gateway"))
        .args(args)
        .env_clear()
        .output()
        .unwrap();
    assert!(out.status.success(), "gateway {args:?}: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

/// The names listed under the help's `Environment` heading.
fn environment_section(text: &str) -> Vec<String> {
    text.lines()
        .skip_while(|l| !l.starts_with("Environment"))
        .skip(1)
        .map_while(|l| l.strip_prefix("  "))
        .map(|l| l.split_whitespace().next().unwrap().to_string())
        .collect()
}

#[test]
fn gateway_help_and_serve_help_list_every_variable_the_gateway_reads() {
    let all: Vec<String> = gateway::config::VARIABLES
        .iter()
        .map(|v| v.name.to_string())
        .collect();
    for args in [&["--help"][..], &["-h"], &["serve", "--help"]] {
        let text = help(args);
        assert_eq!(environment_section(&text), all, "gateway {args:?}:\n{text}");
    }
    let top = help(&["--help"]);
    for command in ["serve", "migrate", "admin"] {
        assert!(
            top.lines().any(|l| l.trim_start().starts_with(command)),
            "{command} is listed:\n{top}"
        );
    }
    let serve = help(&["serve", "--help"]);
    assert!(serve.contains("Serves the HTTP API"), "{serve}");
    assert!(serve.contains("DATA_DIR/postgres"), "{serve}");
}

#[test]
fn every_subcommand_help_says_what_it_does_and_what_it_reads() {
    let database = ["DATABASE_URL", "DATA_DIR", "PG_BIN_DIR", "GATEWAY_ENV"];
    for (args, does, reads) in [
        (
            &["migrate", "--help"][..],
            "Applies pending migrations",
            &[][..],
        ),
        (&["admin", "--help"], "Manages admin users", &[]),
        (
            &["admin", "create", "--help"],
            "Create an admin",
            &["ADMIN_PASSWORD"],
        ),
    ] {
        let text = help(args);
        assert!(text.contains(does), "gateway {args:?}:\n{text}");
        let listed = environment_section(&text);
        for name in database.iter().chain(reads) {
            assert!(
                listed.iter().any(|l| l == name),
                "gateway {args:?} lists {name}:\n{text}"
            );
        }
    }
}
