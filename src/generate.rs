//! `netfold generate man|completions`: the man pages (clap_mangen) and shell completions
//! (clap_complete) written from the same clap definition the binary parses with, so what the
//! Debian package ships cannot drift from the CLI. A hidden subcommand rather than a build
//! script: the pages come from the binary being packaged, and `cargo deb` picks them up from a
//! plain directory (`scripts/package`).

use std::path::Path;

use anyhow::Context;
use clap::CommandFactory;

use crate::cli::{Cli, GenerateCommand};

pub fn run(what: GenerateCommand) -> anyhow::Result<()> {
    match what {
        GenerateCommand::Man { dir } => man(&dir),
        GenerateCommand::Completions { shell, dir } => completions(shell, &dir),
    }
}

fn man(dir: &Path) -> anyhow::Result<()> {
    create(dir)?;
    clap_mangen::generate_to(Cli::command(), dir).with_context(|| format!("writing man pages into {}", dir.display()))
}

fn completions(shell: clap_complete::Shell, dir: &Path) -> anyhow::Result<()> {
    create(dir)?;
    let path = clap_complete::generate_to(shell, &mut Cli::command(), "netfold", dir)
        .with_context(|| format!("writing {shell} completions into {}", dir.display()))?;
    println!("{}", path.display());
    Ok(())
}

fn create(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_a_page_per_visible_command_and_no_page_for_generate() {
        let dir = tempfile::tempdir().unwrap();
        man(dir.path()).unwrap();
        for page in ["netfold.1", "netfold-run.1", "netfold-config-check.1", "netfold-why.1"] {
            let text = std::fs::read_to_string(dir.path().join(page)).unwrap_or_else(|e| panic!("{page}: {e}"));
            assert!(text.contains(".TH"), "{page} is not a man page:\n{text}");
        }
        assert!(!dir.path().join("netfold-generate.1").exists(), "the packaging helper has no page");
    }

    #[test]
    fn completions_name_the_subcommands_for_each_shell() {
        let dir = tempfile::tempdir().unwrap();
        for (shell, file) in [
            (clap_complete::Shell::Bash, "netfold.bash"),
            (clap_complete::Shell::Zsh, "_netfold"),
            (clap_complete::Shell::Fish, "netfold.fish"),
        ] {
            completions(shell, dir.path()).unwrap();
            let text = std::fs::read_to_string(dir.path().join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
            assert!(text.contains("verify") && text.contains("accept-loss"), "{file}:\n{text}");
        }
    }
}
