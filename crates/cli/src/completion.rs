//! `slipway completion bash|zsh|fish`: shell completion scripts generated from the same clap definition as the
//! commands, so they never fall behind.

use clap_complete::Shell;

#[derive(clap::Args)]
#[command(after_help = "Install:
  bash:  slipway completion bash > /etc/bash_completion.d/slipway
  zsh:   slipway completion zsh > \"${fpath[1]}/_slipway\"
  fish:  slipway completion fish > ~/.config/fish/completions/slipway.fish")]
pub struct Args {
    /// The shell to complete for.
    #[arg(value_enum)]
    shell: CompletionShell,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum CompletionShell {
    Bash,
    Zsh,
    Fish,
}

pub fn run(args: Args, mut command: clap::Command) -> anyhow::Result<()> {
    let shell = match args.shell {
        CompletionShell::Bash => Shell::Bash,
        CompletionShell::Zsh => Shell::Zsh,
        CompletionShell::Fish => Shell::Fish,
    };
    // Completions are for the `slipway` command; kubectl completes its plugins itself.
    clap_complete::generate(shell, &mut command, "slipway", &mut std::io::stdout());
    Ok(())
}
