//! `provisioner completions <shell>` and `provisioner man`: shell completion scripts
//! and roff man pages generated from the clap definitions in [`crate::cmd::cli`], so
//! they never drift from the parser. deploy/build-deb.sh runs both against the binary
//! it packages and ships the output (bash-completion, zsh vendor-completions, fish
//! vendor_completions.d, man1).

use std::io::Write;
use std::path::Path;

use anyhow::Context;
use clap::CommandFactory;

use crate::cmd::cli::Cli;

/// The name every script completes and every page is titled with.
pub const BIN: &str = "provisioner";

/// Writes the completion script for `shell` to `out`.
pub fn completions(shell: clap_complete::Shell, out: &mut dyn Write) {
    let mut cmd = Cli::command();
    clap_complete::generate(shell, &mut cmd, BIN, out);
}

/// `provisioner man`: `provisioner.1` to stdout, or with `dir` one page per command
/// and subcommand (`provisioner.1`, `provisioner-images.1`, `provisioner-images-pull.1`
/// …) written there; returns the files written.
pub fn man(dir: Option<&Path>, out: &mut dyn Write) -> anyhow::Result<Vec<std::path::PathBuf>> {
    let cmd = Cli::command();
    match dir {
        None => {
            clap_mangen::Man::new(cmd).render(out)?;
            Ok(Vec::new())
        }
        Some(dir) => {
            std::fs::create_dir_all(dir).with_context(|| dir.display().to_string())?;
            clap_mangen::generate_to(cmd, dir).with_context(|| dir.display().to_string())?;
            let mut pages: Vec<_> = std::fs::read_dir(dir)
                .with_context(|| dir.display().to_string())?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "1"))
                .collect();
            pages.sort();
            Ok(pages)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn script(shell: clap_complete::Shell) -> String {
        let mut out = Vec::new();
        completions(shell, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn scripts_name_the_subcommands_and_their_flags() {
        let bash = script(clap_complete::Shell::Bash);
        assert!(bash.contains("complete -F _provisioner"), "{bash}");
        for word in ["serve", "doctor", "images", "--dry-run", "--unprivileged"] {
            assert!(bash.contains(word), "bash script lacks {word}");
        }
        let zsh = script(clap_complete::Shell::Zsh);
        assert!(zsh.starts_with("#compdef provisioner"), "{zsh}");
        assert!(zsh.contains("'--dry-run[") && zsh.contains("dhcp-snippet"));
        let fish = script(clap_complete::Shell::Fish);
        assert!(fish.contains("complete -c provisioner"), "{fish}");
        // Value enums complete to their values (`dhcp-snippet --for`).
        assert!(fish.contains("dnsmasq") && fish.contains("mikrotik"), "{fish}");
    }

    #[test]
    fn man_pages_cover_every_subcommand() {
        let mut page = Vec::new();
        man(None, &mut page).unwrap();
        let page = String::from_utf8(page).unwrap();
        assert!(page.contains(".TH provisioner 1"), "{page}");
        assert!(page.contains(".SH SUBCOMMANDS"), "{page}");
        for sub in ["serve(1)", "images(1)", "completions(1)", "man(1)"] {
            assert!(
                page.contains(&format!("provisioner\\-{sub}")),
                "no {sub}:\n{page}"
            );
        }
        let dir = tempfile::tempdir().unwrap();
        let pages = man(Some(dir.path()), &mut Vec::new()).unwrap();
        let names: Vec<String> = pages
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        for want in [
            "provisioner.1",
            "provisioner-serve.1",
            "provisioner-images.1",
            "provisioner-images-pull.1",
            "provisioner-completions.1",
        ] {
            assert!(names.iter().any(|n| n == want), "{want} not in {names:?}");
        }
    }
}
